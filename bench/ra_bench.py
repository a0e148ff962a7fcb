"""RA enrollments per second through the certsrv connector (at our CA) and the local connector,
and CA requests per enrollment counted on the CA's IIS log.

Three real processes started with the CLI: ``onlineca ca serve`` (RSA-2048 issuing key), and two
``onlineca ra serve`` (connector certsrv, connector local; EST users-file auth).  The load
generator (our ESTClient, keep-alive, EC P-256 CSRs made before the clock starts) runs in this
process.  On a 2-core machine all processes share the cores, so the numbers are a floor.

    python bench/ra_bench.py [--requests 300] [--concurrency 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from _load import enroll_all, percentile_ms
from _tiers import free_port, start_server, wait_ready
from onlineca import pki

USER, PASSWORD = "bench", "bench-Passw0rd"
CA_USER, CA_PASSWORD = "ciscora", "bench-CA-Passw0rd"


def _iis_lines(path: Path) -> int:
    return sum(1 for ln in path.read_text().splitlines() if ln and not ln.startswith("#")) if path.exists() else 0


async def _load(base: str, cafile: Path, n: int, concurrency: int) -> dict[str, float]:
    from onlineca.est.client import ESTClient
    csrs = [pki.build_csr(pki.generate_key("ec", 256), f"CN=SEP{i:012X},O=bench") for i in range(n + concurrency)]
    async with ESTClient(base, cafile=cafile, user=USER, password=PASSWORD) as est:
        for csr in csrs[n:]:  # warm-up: connections open, credentials cached
            await est.simpleenroll(csr)
        latencies, elapsed = await enroll_all(est, csrs[:n], concurrency)
    return {"enrollments": n, "seconds": round(elapsed, 3), "per_second": round(n / elapsed, 1),
            "p50_ms": percentile_ms(latencies, 0.5), "p95_ms": percentile_ms(latencies, 0.95)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from onlineca.ca.engine import init_ca
    from onlineca.ca.users import add_user
    from onlineca.config import load_config
    from onlineca.infra.users import hash_password

    d = Path(tempfile.mkdtemp(prefix="ra-bench-"))
    data, logs = d / "data", d / "logs"
    ca_port, ra_port, local_port = free_port(), free_port(), free_port()
    ca_dir = data / "ca"
    (d / "est-users").write_text(f"{USER}:{hash_password(PASSWORD)}\n")
    common = f'data_dir = "{data}"\nlog_dir = "{logs}"\n[ca]\nusers_file = "{d / "ca-users"}"\n'
    ra = (f'[ra]\nca_url = "https://127.0.0.1:{ca_port}/certsrv"\nca_user = "{CA_USER}"\n'
          f'trust_store = "{ca_dir / "root.pem"}"\ntls_cert = "{ca_dir / "web.pem"}"\ntls_key = "{ca_dir / "web.key"}"\n'
          f'client_auth = "users"\nlocal_key = "{ca_dir / "issuing.key"}"\nlocal_cert = "{ca_dir / "chain.pem"}"\n'
          f'[est]\nusers_file = "{d / "est-users"}"\n')
    (d / "certsrv.toml").write_text(common + ra)
    # The local-signer RA is a second RA: it needs a data folder of its own (one server per data
    # folder and role); its signer's key and chain are named by absolute path.
    (d / "local.toml").write_text(common.replace(str(logs), str(d / "logs-local")).replace(
        f'data_dir = "{data}"', f'data_dir = "{d / "data-local"}"') + ra.replace(
        "[ra]\n", '[ra]\nconnector = "local"\n'))
    init_ca(load_config(d / "certsrv.toml", environ={}), data)
    add_user(d / "ca-users", CA_USER, CA_PASSWORD)

    env = {**os.environ, "ONLINECA_RA_CA_PASSWORD": CA_PASSWORD}
    servers = [
        start_server("ca", ["--config", str(d / "certsrv.toml")], ["--port", str(ca_port)], env, d / "ca.err"),
        start_server("ra", ["--config", str(d / "certsrv.toml")], ["--port", str(ra_port)], env, d / "ra.err"),
        start_server("ra", ["--config", str(d / "local.toml")], ["--port", str(local_port)], env, d / "local.err"),
    ]
    root = ca_dir / "root.pem"
    results: dict[str, object] = {"requests": args.requests, "concurrency": args.concurrency}
    try:
        wait_ready(f"https://127.0.0.1:{ra_port}/readyz", root, servers[1])
        wait_ready(f"https://127.0.0.1:{local_port}/readyz", root, servers[2])
        iis = logs / "ca-iis.log"
        for name, port in (("certsrv", ra_port), ("local", local_port)):
            before = _iis_lines(iis)
            got = asyncio.run(_load(f"https://127.0.0.1:{port}", root, args.requests, args.concurrency))
            if name == "certsrv":
                # Warm-up enrollments are counted too: they are enrollments after start-up.
                got["ca_requests_per_enrollment"] = round(
                    (_iis_lines(iis) - before) / (args.requests + args.concurrency), 2)
            results[name] = got
    finally:
        for server in servers:
            server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name in ("certsrv", "local"):
            r = results[name]
            assert isinstance(r, dict)
            extra = f", {r['ca_requests_per_enrollment']} CA requests/enrollment" if "ca_requests_per_enrollment" in r else ""
            print(f"{name:8s} {r['per_second']:7.1f} enrollments/s  p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms{extra}")


if __name__ == "__main__":
    main()
