"""Issue 12 item 12: not ready is not pending.

A not-ready RA answers 503 + Retry-After with its reason; our EST client reports that reason
("the RA is not ready: CA_TLS_UNTRUSTED ...") rather than "still pending, ask the CA manager",
with the RA's fix, and so does CAPF; each retry wait is printed as it happens ("retrying in 2 s
(1/2)"); connection refused fails at once when no retries are asked for."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import SecretStr
from tests.conftest import free_port
from tests.integration.ra_lab import PASSWORD, USER, ca_lab, est_csr, run_ca, run_ra  # noqa: F401

from onlineca.errors import CAUnavailable, ESTCodedError, fix_for
from onlineca.est.client import ESTClient


async def _untrusted_ra(ca_lab, tmp_path, lab_pki):
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    ra = await run_ra(ca_lab, tmp_path / "ra-logs", ca.url, ra={"trust_store": str(lab_pki.root_pem)})
    await ra.state.wait_until(lambda s: s.reason.startswith("CA_TLS_UNTRUSTED"))
    return ca, ra


async def test_the_est_client_says_the_ra_is_not_ready_and_why(ca_lab, lab_pki, tmp_path):
    ca, ra = await _untrusted_ra(ca_lab, tmp_path, lab_pki)
    said: list[str] = []
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:  # the waits are counted, not slept
        waits.append(seconds)

    try:
        async with ESTClient(ra.base, cafile=ca_lab.root_pem, user=USER, password=PASSWORD, max_retries=2,
                             sleep=no_wait, on_retry=said.append) as est:
            with pytest.raises(ESTCodedError) as exc:
                await est.simpleenroll(est_csr()[1])
        err = exc.value
        assert err.http_status == 503 and err.code == "EST_ERR_CA_ENROLL_RETRY"
        assert "the RA is not ready: CA_TLS_UNTRUSTED" in err.message and "pending" not in err.message
        assert err.hint == fix_for("RA_NOT_READY") and "approve" not in str(err)
        assert waits == [2.0, 2.0]
        assert [s.split("; ")[-1] for s in said] == ["retrying in 2 s (1/2)", "retrying in 2 s (2/2)"]
        assert all("the RA is not ready: CA_TLS_UNTRUSTED" in s for s in said)
    finally:
        await ra.close()
        await ca.close()


async def test_capf_reports_the_ras_reason(ca_lab, lab_pki, tmp_path):
    from onlineca.capf.enroll import OnlineCAEnroller
    from onlineca.logs.capf_trace import SessionTrace
    ca, ra = await _untrusted_ra(ca_lab, tmp_path, lab_pki)
    try:
        cfg = ca_lab.config().capf.model_copy(update={"ra_url": ra.url, "ra_trust_store": str(ca_lab.root_pem),
                                                      "ra_user": USER, "ra_password": SecretStr(PASSWORD)})
        enroller = OnlineCAEnroller(cfg, tmp_path / "capf-data")
        try:
            with pytest.raises(CAUnavailable) as exc:
                await enroller.enroll_device("SEPNOTREADY0001", est_csr("CN=SEPNOTREADY0001")[1],
                                             SessionTrace("SEPNOTREADY0001"))
        finally:
            await enroller.close()
        assert exc.value.message.startswith("the RA is not ready: CA_TLS_UNTRUSTED")
        assert exc.value.retry_after == 2
    finally:
        await ra.close()
        await ca.close()


async def test_connection_refused_fails_at_once_without_retries_and_is_retried_with_them(lab_pki):
    url = f"https://127.0.0.1:{free_port()}"
    started = time.monotonic()
    async with ESTClient(url, cafile=lab_pki.root_pem, max_retries=3, connect_timeout=30) as est:
        with pytest.raises(ESTCodedError) as exc:
            await est.cacerts()
    assert exc.value.code == "EST_ERR_IP_CONNECT" and time.monotonic() - started < 10
    said: list[str] = []

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    async with ESTClient(url, cafile=lab_pki.root_pem, max_retries=0, connect_retries=2, sleep=no_wait,
                         on_retry=said.append) as est:
        with pytest.raises(ESTCodedError):
            await est.cacerts()
    assert [s.split("; ")[-1] for s in said] == ["retrying in 1 s (1/2)", "retrying in 2 s (2/2)"]


def test_the_cli_prints_each_retry_when_retries_are_asked_for(tmp_path, lab_pki):
    import os
    import subprocess
    import sys
    url = f"https://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = [sys.executable, "-m", "onlineca", "est", "cacerts", "--server", url, "--cafile", str(lab_pki.root_pem)]
    quick = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert quick.returncode == 1 and "retrying" not in quick.stderr  # nothing asked: at once
    asked = subprocess.run([*run, "--retries", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert asked.returncode == 1
    assert "cannot connect" in asked.stderr and "retrying in 1 s (1/1)" in asked.stderr
