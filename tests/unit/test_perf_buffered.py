"""Buffered server logs lose no line on a clean stop, and the CA's just-issued
certificate cache answers once, only its requester, and never after its time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from onlineca import logs
from onlineca.ca.web import IssuedCache


@pytest.fixture
def buffered() -> Iterator[None]:
    logs.set_buffered(True)
    try:
        yield
    finally:
        logs.set_buffered(False)


def test_buffered_log_keeps_every_line_on_a_clean_stop(tmp_path: Path, buffered: None) -> None:
    path = tmp_path / "capf.log"
    detach = logs.attach_log("onlineca.perftest", path)
    log = logging.getLogger("onlineca.perftest")
    try:
        for i in range(5000):
            log.info("line %d password=hunter2", i)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed %s", "here")
    finally:
        detach()
    text = path.read_text()
    lines = [ln for ln in text.splitlines() if "perftest: line " in ln]
    assert [int(ln.split(" line ")[1].split()[0]) for ln in lines] == list(range(5000))
    assert "hunter2" not in text  # still redacted
    assert "failed here" in text and "ValueError: boom" in text  # the traceback as unbuffered


def test_buffered_json_lines_keep_their_fields(tmp_path: Path, buffered: None) -> None:
    path = tmp_path / "ca.log"
    detach = logs.attach_log("onlineca.perftest2", path, fmt="json")
    logging.getLogger("onlineca.perftest2").info("issued %s", "SEP1", extra={"req_id": 7})
    detach()
    obj = logs.parse_json_line(path.read_text().splitlines()[0])
    assert obj is not None and obj["message"] == "issued SEP1" and obj["req_id"] == 7


def test_unbuffered_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "ra.log"
    detach = logs.attach_log("onlineca.perftest3", path)
    try:
        logging.getLogger("onlineca.perftest3").info("now")
        assert "now" in path.read_text()  # written and flushed by the call itself
    finally:
        detach()


def test_issued_cache_answers_once_and_only_its_requester() -> None:
    cache = IssuedCache()
    cache.put(12, "CiscoRA", b"der")
    assert cache.take(12, "someone") is None
    assert cache.take(12, "ciscora") == b"der"
    assert cache.take(12, "ciscora") is None  # the second download reads the database
    expired = IssuedCache(ttl=0)
    expired.put(1, "a", b"x")
    assert expired.take(1, "a") is None


def test_issued_cache_is_bounded() -> None:
    cache = IssuedCache(size=3)
    for i in range(10):
        cache.put(i, "a", bytes([i]))
    assert [cache.take(i, "a") for i in range(10)] == [None] * 7 + [b"\x07", b"\x08", b"\x09"]


def test_a_csr_signature_is_verified_once_per_process_and_a_bad_one_never_passes() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from onlineca import pki
    from onlineca.errors import ParseError
    from onlineca.pki import csr as csr_module

    key = pki.generate_key("ec", 256)
    good = pki.build_csr(key, "CN=SEP000000000777")
    pki.verify_csr(good)
    assert len(csr_module._VERIFIED) >= 1
    pki.verify_csr(pki.parse_csr(pki.csr_der(good)))  # the same request again: from the cache
    # The same to-be-signed bytes with another signature are checked, and refused.
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    bad = x509.load_der_x509_csr(bytes(der))
    try:
        pki.verify_csr(bad)
    except ParseError:
        pass
    else:
        raise AssertionError("a broken signature passed")


def test_a_worker_allows_its_share_of_an_in_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from onlineca.infra import workers

    assert workers.share(5) == 5  # on its own: the whole limit
    monkeypatch.setenv(workers.WORKER_ENV, "1")
    monkeypatch.setenv(workers.COUNT_ENV, "2")
    assert (workers.share(5), workers.share(20), workers.share(1)) == (2, 10, 1)


def test_capf_workers_share_the_enrollments_in_flight_towards_the_ra(monkeypatch: pytest.MonkeyPatch,
                                                                      lab_pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from onlineca.capf.enroll import OnlineCAEnroller
    from onlineca.config import CAPFConfig
    from onlineca.infra import workers

    cfg = CAPFConfig(ra_url="https://127.0.0.1:1/.well-known/est", ra_trust_store=str(lab_pki.root_pem),
                     max_concurrent_enrollments=16)
    assert OnlineCAEnroller(cfg, tmp_path / "one").semaphore._value == 16
    monkeypatch.setenv(workers.WORKER_ENV, "0")
    monkeypatch.setenv(workers.COUNT_ENV, "2")
    assert OnlineCAEnroller(cfg, tmp_path / "two").semaphore._value == 8
