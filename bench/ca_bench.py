"""Certificates per second that ``ca serve`` issues through certfnsh.asp + certnew.cer.

The CA (``ca init`` defaults: RSA-2048 issuing key, EC P-256 web key, SQLite, Basic auth, IIS log)
runs in its own process; this one drives it with aiohttp over keep-alive TLS connections, each
certificate being a POST certfnsh.asp (Mode=newreq, PEM CSR, CertificateTemplate:CiscoRA) and a GET
certnew.cer?ReqID=N&Enc=b64.  The EC P-256 CSRs are made before the clock starts.  On a 2-core
machine the client and the server share the cores, so the number is a floor for the server alone.

    python bench/ca_bench.py [--certs 400] [--concurrency 8] [--key-type rsa|ec] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import re
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from onlineca import pki

USER, PASSWORD = "bench", "bench-Passw0rd"
ISSUED = re.compile(r"certnew\.cer\?ReqID=(\d+)&")


def _serve(d: str, key_type: str, ready: mp.Queue[int], stop: mp.Event) -> None:  # type: ignore[type-arg]
    from onlineca.ca.engine import init_ca, users_path
    from onlineca.ca.users import add_user
    from onlineca.ca.web import start_ca
    from onlineca.config import Config

    config = Config(data_dir=d, log_dir=f"{d}/logs")
    init_ca(config, d, key_type=key_type)
    add_user(users_path(config, d), USER, PASSWORD)

    async def main() -> None:
        ca = await start_ca(config, d, f"{d}/logs", port=0)
        ready.put(ca.port)
        while not stop.is_set():
            await asyncio.sleep(0.2)  # polling a cross-process event; not synchronisation of a test
        await ca.close()

    asyncio.run(main())


async def _drive(port: int, root: Path, csrs: list[str], concurrency: int) -> list[float]:
    ctx = ssl.create_default_context(cafile=str(root))
    base = f"https://127.0.0.1:{port}/certsrv"
    latencies: list[float] = []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for c in csrs:
        queue.put_nowait(c)
    connector = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    headers = {"User-Agent": "Mozilla/5.0 ca_bench", "Authorization": f"Basic {basic}"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        async def worker() -> None:
            while not queue.empty():
                csr = queue.get_nowait()
                start = time.perf_counter()
                async with session.post(f"{base}/certfnsh.asp", data={
                        "Mode": "newreq", "CertRequest": csr, "CertAttrib": "CertificateTemplate:CiscoRA\r\n",
                        "FriendlyType": "Saved-Request Certificate", "TargetStoreFlags": "0",
                        "SaveCert": "yes"}) as r:
                    m = ISSUED.search(await r.text())
                    if m is None:
                        raise RuntimeError("certfnsh.asp did not issue")
                async with session.get(f"{base}/certnew.cer", params={"ReqID": m.group(1), "Enc": "b64"}) as r:
                    body = await r.read()
                    if r.status != 200 or not body.startswith(b"-----BEGIN CERTIFICATE-----"):
                        raise RuntimeError(f"certnew.cer answered {r.status}")
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--certs", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--key-type", choices=["rsa", "ec"], default="rsa", help="the CA's keys")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    keys = [pki.generate_key("ec", 256) for _ in range(16)]
    csrs = [pki.csr_pem(pki.build_csr(keys[i % 16], f"CN=SEP{i:012X}")).decode() for i in range(args.certs + 8)]
    with tempfile.TemporaryDirectory() as d:
        ctx = mp.get_context("spawn")
        ready: mp.Queue[int] = ctx.Queue()
        stop = ctx.Event()
        proc = ctx.Process(target=_serve, args=(d, args.key_type, ready, stop), daemon=True)
        proc.start()
        port = ready.get(timeout=120)
        root = Path(d) / "ca" / "root.pem"
        asyncio.run(_drive(port, root, csrs[:8], min(8, args.concurrency)))  # warm-up
        start = time.perf_counter()
        lat = asyncio.run(_drive(port, root, csrs[8:], args.concurrency))
        elapsed = time.perf_counter() - start
        stop.set()
        proc.join(30)
    result = {"certs": len(lat), "concurrency": args.concurrency, "ca_key_type": args.key_type,
              "seconds": round(elapsed, 3), "certs_per_second": round(len(lat) / elapsed, 1),
              "p50_ms": round(statistics.median(lat) * 1000, 1),
              "p95_ms": round(sorted(lat)[int(len(lat) * 0.95) - 1] * 1000, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['certs_per_second']} certificates/s through certfnsh.asp + certnew.cer "
              f"({result['certs']} certs, concurrency {result['concurrency']}, CA key {args.key_type}, "
              f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms)")


if __name__ == "__main__":
    main()
