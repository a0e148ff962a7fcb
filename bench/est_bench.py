"""Enrollments per second of the EST server with the local signer.

The server (RSA-2048 issuing key, EC P-256 TLS key, HTTP Basic auth) runs in its own process; the
load generator (our ESTClient) runs in this one with EC P-256 client keys and CSRs made before the
clock starts.  Two modes: a new TLS connection per request, and keep-alive.  On a 2-core machine
both processes share the cores, so the numbers are a floor for the server alone.

    python bench/est_bench.py [--requests 400] [--concurrency 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

from _load import enroll_all, percentile_ms
from onlineca import pki
from onlineca.infra import files

USER, PASSWORD = "bench", "bench-Passw0rd"


def _make_pki(d: Path) -> None:
    root_key = pki.generate_key("rsa", 2048)
    root = pki.build_certificate(subject="CN=Bench Root", public_key=root_key.public_key(), issuer_key=root_key,
                                 is_ca=True, validity_days=30)
    issuing_key = pki.generate_key("rsa", 2048)
    issuing = pki.build_certificate(subject="CN=Bench Issuing CA", public_key=issuing_key.public_key(),
                                    issuer_key=root_key, issuer_cert=root, is_ca=True, path_length=0)
    tls_key = pki.generate_key("ec", 256)
    tls = pki.build_certificate(subject="CN=localhost", public_key=tls_key.public_key(), issuer_key=issuing_key,
                                issuer_cert=issuing, sans=["127.0.0.1", "localhost"],
                                extended_key_usage=["server_auth"])
    (d / "root.pem").write_bytes(pki.cert_pem(root))
    (d / "issuing.pem").write_bytes(pki.certs_pem([issuing, root]))
    files.write_private_key(d / "issuing.key", issuing_key)
    (d / "tls.pem").write_bytes(pki.certs_pem([tls, issuing]))
    files.write_private_key(d / "tls.key", tls_key)


def _serve(d: str, ready: mp.Queue[int], stop: mp.Event) -> None:  # type: ignore[type-arg]
    from onlineca.est.backend import LocalSigner
    from onlineca.est.server import ESTServerSettings, start_est_server
    from onlineca.infra.users import UsersFile

    async def main() -> None:
        signer = LocalSigner.from_files(f"{d}/issuing.pem", f"{d}/issuing.key")
        srv = await start_est_server(signer, cert_file=f"{d}/tls.pem", key_file=f"{d}/tls.key",
                                     settings=ESTServerSettings(password_check=UsersFile.from_plain({USER: PASSWORD})))
        ready.put(srv.port)
        while not stop.is_set():
            await asyncio.sleep(0.2)  # polling a cross-process event; not synchronisation of a test
        await srv.close()

    asyncio.run(main())


async def _load(url: str, cafile: Path, csrs: list, concurrency: int, keepalive: bool) -> dict:
    from onlineca.est.client import ESTClient

    async with ESTClient(url, cafile=cafile, user=USER, password=PASSWORD, keepalive=keepalive) as est:
        await est.simpleenroll(csrs[0])  # warm-up: the password check (scrypt) runs once per user
        latencies, elapsed = await enroll_all(est, csrs, concurrency)
    return {"mode": "keep-alive" if keepalive else "new TLS connection per request",
            "requests": len(latencies), "concurrency": concurrency, "seconds": round(elapsed, 3),
            "enrollments_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": percentile_ms(latencies, 0.5), "p95_ms": percentile_ms(latencies, 0.95)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _make_pki(d)
        keys = [pki.generate_key("ec", 256) for _ in range(args.requests)]
        csrs = [pki.build_csr(k, f"CN=SEP{i:012X},O=bench") for i, k in enumerate(keys)]
        ctx = mp.get_context("spawn")
        ready, stop = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=_serve, args=(str(d), ready, stop), daemon=True)
        proc.start()
        try:
            port = ready.get(timeout=60)
            url = f"https://127.0.0.1:{port}"
            results = [asyncio.run(_load(url, d / "root.pem", csrs, args.concurrency, keepalive))
                       for keepalive in (False, True)]
        finally:
            stop.set()
            proc.join(10)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("EST server, local signer (RSA-2048 issuing key), EC P-256 client keys, HTTP Basic auth")
        for r in results:
            print(f"  {r['mode']:<32} {r['enrollments_per_s']:>7} enrollments/s  "
                  f"p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  ({r['requests']} requests, "
                  f"concurrency {r['concurrency']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
