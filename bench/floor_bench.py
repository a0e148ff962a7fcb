"""The crypto floor of one enrollment on this machine: the servers' unavoidable CPU per device.

One enrollment costs the servers, at the very least, one RSA-2048 signature by the CA, three TLS 1.3
handshakes (device -> CAPF, CAPF -> RA, RA -> CA; only the server side's CPU is counted, over an EC
P-256 certificate as the lab's servers have) and three verifications of the CSR's signature (one per
tier).  Each operation is timed in CPU seconds (``time.process_time``) in this one thread; the floor
rate is ``cores / floor`` — what the servers would reach if they did nothing but crypto on every core.
Never a timing assertion anywhere: the number is the denominator of the end-to-end ratio that
``bench/run.py`` reports, measured in the same run as the numerator.

    python bench/floor_bench.py [--rounds 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from onlineca import pki


def _cpu_ms(fn: Any, rounds: int) -> float:
    """Mean CPU milliseconds of ``fn()`` over ``rounds`` calls (after one warm-up call)."""
    fn()
    t0 = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - t0) * 1000 / rounds


def _server_context(d: Path) -> ssl.SSLContext:
    ca_key = pki.generate_key("ec", 256)
    ca = pki.build_certificate(subject="CN=floor root", public_key=ca_key.public_key(), issuer_key=ca_key, is_ca=True)
    key = pki.generate_key("ec", 256)
    cert = pki.build_certificate(subject="CN=localhost", public_key=key.public_key(), issuer_key=ca_key,
                                 issuer_cert=ca, sans=["localhost"], extended_key_usage=["server_auth"])
    (d / "server.pem").write_bytes(pki.certs_pem([cert, ca]))
    (d / "server.key").write_bytes(pki.private_key_pem(key))
    (d / "root.pem").write_bytes(pki.certs_pem([ca]))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(d / "server.pem", d / "server.key")
    return server


def handshake_server_ms(rounds: int) -> float:
    """Server-side CPU milliseconds of one full TLS 1.3 handshake (memory BIOs, no network)."""
    with tempfile.TemporaryDirectory() as tmp:
        server_ctx = _server_context(Path(tmp))
        client_ctx = ssl.create_default_context(cafile=str(Path(tmp) / "root.pem"))
    server_cpu = 0.0

    def one() -> None:
        nonlocal server_cpu
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        done_c = done_s = False
        while not (done_c and done_s):
            if not done_c:
                try:
                    client.do_handshake()
                    done_c = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            if not done_s:
                t0 = time.process_time()
                try:
                    server.do_handshake()
                    done_s = True
                except ssl.SSLWantReadError:
                    pass
                server_cpu += time.process_time() - t0
            c_in.write(s_out.read())

    one()
    server_cpu = 0.0
    for _ in range(rounds):
        one()
    return server_cpu * 1000 / rounds


def measure(rounds: int = 200) -> dict[str, Any]:
    issuer_key = pki.generate_key("rsa", 2048)
    issuer = pki.build_certificate(subject="CN=floor issuing", public_key=issuer_key.public_key(),
                                   issuer_key=issuer_key, is_ca=True)
    device_key = pki.generate_key("rsa", 2048)
    csr = pki.build_csr(device_key, "CN=SEP000000000001")
    csr_der = pki.csr_der(csr)

    def sign() -> None:
        pki.build_certificate(subject="CN=SEP000000000001", public_key=device_key.public_key(),
                              issuer_key=issuer_key, issuer_cert=issuer)

    def verify() -> None:
        pki.parse_csr(csr_der, verify=True)

    sign_ms = _cpu_ms(sign, rounds)
    verify_ms = _cpu_ms(verify, rounds)
    hs_ms = handshake_server_ms(rounds)
    floor_ms = sign_ms + 3 * hs_ms + 3 * verify_ms
    cores = os.cpu_count() or 1
    return {"ca_signature_ms": round(sign_ms, 3), "tls13_handshake_server_ms": round(hs_ms, 3),
            "csr_verify_ms": round(verify_ms, 3), "floor_cpu_ms": round(floor_ms, 3), "cores": cores,
            "floor_per_second": round(cores * 1000 / floor_ms, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = measure(args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"crypto floor {result['floor_cpu_ms']} ms CPU per enrollment = {result['floor_per_second']}/s "
              f"on {result['cores']} cores (signature {result['ca_signature_ms']} ms, TLS 1.3 handshake "
              f"{result['tls13_handshake_server_ms']} ms x3, CSR verify {result['csr_verify_ms']} ms x3)")


if __name__ == "__main__":
    main()
