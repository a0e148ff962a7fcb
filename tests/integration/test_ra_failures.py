"""Each failure of the source document, reproduced for real against the RA and our CA, asserted on
the RA's error.log (the document's wording, with a fix on the same line) and on its EST answer
(503 + Retry-After while not ready); none crashes the RA, and each clears when its cause is fixed
(the RA's retry loop turns /readyz green): an untrusted, self-signed, wrongly named, not yet
valid or expired CA web certificate; a host that does not resolve; a wrong CA password; a
mistyped template; a CA slower than the timeout at login, at the chain and at enrollment; a CA
that goes down after start-up and comes back."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from tests.conftest import free_port
from tests.integration.ra_lab import (  # noqa: F401  (fixtures)
    TEMPLATES,
    HoldingProxy,
    attempts_at_least,
    ca_lab,
    error_log,
    est_csr,
    get,
    raw_enroll,
    run_ca,
    run_ra,
)

from onlineca.ca.users import add_user

NOW = dt.datetime.now(dt.UTC)
STARTUP_FAILED = ("retrieve_cacerts: Unable to execute login to certsrv with curl",
                  "ra_certsrv_ca_plugin_postconf: Unable to retrieve CA Cert chain from CA")


async def assert_not_ready(ca_lab, r) -> None:
    """While not ready: EST answers 503 + Retry-After, /readyz 503, /healthz 200."""
    status, headers, body = await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
    assert status == 503 and headers["Retry-After"] == "2", body
    status, headers, _ = await get(r.base + "/readyz", ca_lab.root_pem)
    assert status == 503 and headers["Retry-After"] == "2"
    status, _h, _b = await get(r.base + "/healthz", ca_lab.root_pem)
    assert status == 200


async def assert_clears(ca_lab, r) -> None:
    await r.wait_ready()
    status, _h, _b = await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
    assert status == 200


def login_failure(text: str, reason: str) -> None:
    assert re.search(r"\[error\] \d+#0: login_to_certsrv_ca: Curl call for MS CA login failed with "
                     + re.escape(reason) + r" -- fix: \S", text), text[-3000:]
    assert re.search(r"login_to_certsrv_ca: URL used: https://\S+/certsrv", text)
    for line in STARTUP_FAILED:
        assert line in text


TLS_CASES = {
    # name: (web certificate arguments, curl reason)
    "untrusted root": ({"issuer": "lab"}, "return code 60 (SSL certificate problem: unable to get local issuer certificate)"),
    "self-signed": ({"self_signed": True}, "return code 60 (SSL certificate problem: self-signed certificate)"),
    "wrong name": ({"sans": ()}, "return code 51 (SSL: certificate subject name 'lab-dc' does not match target host "
                                 "name '127.0.0.1')"),
    "not yet valid": ({"not_before": NOW + dt.timedelta(days=2)},
                      "return code 60 (SSL certificate problem: certificate is not yet valid)"),
    "expired": ({"not_before": NOW - dt.timedelta(days=30), "validity_days": 1},
                "return code 60 (SSL certificate problem: certificate has expired)"),
}


@pytest.mark.parametrize("case", list(TLS_CASES))
async def test_bad_ca_web_certificate(ca_lab, lab_pki, tmp_path, case):
    kw, reason = TLS_CASES[case]
    if kw.get("issuer") == "lab":  # a root the RA's trust store does not hold
        bad = (lab_pki.server_cert_pem, lab_pki.server_key_pem)
    else:
        bad = ca_lab.web_cert("lab-dc", **kw)
    port = free_port()
    ca = await run_ca(ca_lab, tmp_path / "ca-logs", port=port, tls=bad)
    logs = tmp_path / "ra-logs"
    r = await run_ra(ca_lab, logs, ca.url)
    try:
        await attempts_at_least(r, 2)
        text = error_log(logs)
        login_failure(text, reason)
        assert re.search(r"\[warn\] \d+#0: ra_startup: RA not ready after attempt 1 \(CA_TLS\w*: .*\); next attempt "
                         r"in 0.1 s -- fix: ", text)
        await assert_not_ready(ca_lab, r)
        # Fixed: the CA gets a good web certificate (restarted on the same port).
        await ca.close()
        ca = await run_ca(ca_lab, tmp_path / "ca-logs", port=port)
        await assert_clears(ca_lab, r)
    finally:
        await r.close()
        await ca.close()


async def test_host_that_does_not_resolve(ca_lab, tmp_path):
    logs = tmp_path / "ra-logs"
    r = await run_ra(ca_lab, logs, "https://lab-dcc.invalid:8443/certsrv")
    try:
        await attempts_at_least(r, 2)
        login_failure(error_log(logs), "return code 6 (Could not resolve: lab-dcc.invalid (Domain name not found))")
        await assert_not_ready(ca_lab, r)
        assert "DNS servers" in error_log(logs)
    finally:
        await r.close()


async def test_wrong_ca_password_then_fixed_on_the_ca(ca_lab, tmp_path):
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    logs = tmp_path / "ra-logs"
    # Many refusals allowed here (the lockout has its own test in test_ra_reload_and_lockout.py).
    r = await run_ra(ca_lab, logs, ca.url, ra={"ca_user": "ciscora2", "ca_password": "typo-Passw0rd",
                                              "max_login_failures": 1000})
    try:
        await attempts_at_least(r, 2)
        login_failure(error_log(logs), "return code 22 (The requested URL returned error: 401)")
        assert "typo-Passw0rd" not in error_log(logs)
        await assert_not_ready(ca_lab, r)
        add_user(ca_lab.dir / "ca-users", "ciscora2", "typo-Passw0rd")  # the CA re-reads its users file
        await r.wait_ready()
    finally:
        await r.close()
        await ca.close()


async def test_mistyped_template_names_the_offered_and_nearest(ca_lab, tmp_path):
    port = free_port()
    ca = await run_ca(ca_lab, tmp_path / "ca-logs", port=port)
    logs = tmp_path / "ra-logs"
    r = await run_ra(ca_lab, logs, ca.url, ra={"template": "CiscoRAA"})
    try:
        await attempts_at_least(r, 2)
        text = error_log(logs)
        assert "login_to_certsrv_ca: Secure connection to MS CertServ completed successfully" in text
        assert re.search(r"\[error\] \d+#0: check_certsrv_template: certificate template 'CiscoRAA' is not offered to "
                         r"this user on certrqxt.asp; offered: CiscoRA, Approval, RSAOnly -- fix: Did you mean "
                         r"'CiscoRA'\?", text)
        await assert_not_ready(ca_lab, r)
        # Fixed on the CA side: it now offers a template of that name.
        await ca.close()
        ca = await run_ca(ca_lab, tmp_path / "ca-logs", port=port,
                          templates=[*TEMPLATES, {"name": "CiscoRAA"}])
        await assert_clears(ca_lab, r)
    finally:
        await r.close()
        await ca.close()


@pytest.mark.parametrize("path,func,reason", [
    ("/certsrv/", "login_to_certsrv_ca: Curl call for MS CA login failed with", "login_timeout = 2 s"),
    ("/certsrv/certnew.p7b", "retrieve_cacerts: Curl request failed with", "enroll_timeout = 2 s"),
])
async def test_ca_slower_than_the_timeout_at_start_up(ca_lab, tmp_path, path, func, reason):
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    proxy = HoldingProxy(ca.url, ca_lab.root_pem, (ca_lab.files.web_cert, ca_lab.files.web_key))
    proxy.hold.add(path)
    url = await proxy.start()
    logs = tmp_path / "ra-logs"
    r = await run_ra(ca_lab, logs, url)
    try:
        await attempts_at_least(r, 1)
        text = error_log(logs)
        assert re.search(re.escape(func) + r" return code 28 \(Operation timed out after \d{4,} milliseconds with 0 "
                         r"bytes received\) -- fix: .*login_timeout", text), text[-2000:]
        assert "ra_certsrv_ca_plugin_postconf: Unable to retrieve CA Cert chain from CA" in text
        assert re.search(re.escape(path) + r"\S* \(" + re.escape(reason) + r" fired\)", text)
        await assert_not_ready(ca_lab, r)
        proxy.release.set()  # the CA is fast again
        await assert_clears(ca_lab, r)
    finally:
        await r.close()
        await proxy.close()
        await ca.close()


async def test_ca_slower_than_the_timeout_at_enrollment(ca_lab, tmp_path):
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    proxy = HoldingProxy(ca.url, ca_lab.root_pem, (ca_lab.files.web_cert, ca_lab.files.web_key))
    url = await proxy.start()
    logs = tmp_path / "ra-logs"
    r = await run_ra(ca_lab, logs, url)
    try:
        await r.wait_ready()
        proxy.hold.add("/certsrv/certfnsh.asp")
        status, headers, _ = await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
        assert status == 503 and headers["Retry-After"] == "2"
        text = error_log(logs)
        assert re.search(r"\[error\] \d+#0: \*\d+ ra_certsrv_ca_plugin_enroll: Curl request failed with return code 28 "
                         r"\(Operation timed out after \d{4,} milliseconds with 0 bytes received\) \(hop RA -> CA "
                         + re.escape(url) + r"/certfnsh.asp, enroll_timeout = 2 s fired; enrollment of .*\), client: "
                         r'.*request_id: "\w+" -- fix: ',
                         text), text[-2000:]
        assert "Enrollment failed with rc=26 (EST_ERR_CA_ENROLL_RETRY)" in text
        assert r.state.ready  # a slow CA is not an unreachable one
        proxy.release.set()
        status, _h, _b = await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
        assert status == 200
    finally:
        await r.close()
        await proxy.close()
        await ca.close()


async def test_ca_goes_down_after_start_up_and_comes_back(ca_lab, tmp_path):
    port = free_port()
    ca = await run_ca(ca_lab, tmp_path / "ca-logs", port=port)
    logs = tmp_path / "ra-logs"
    r = await run_ra(ca_lab, logs, ca.url)
    try:
        await r.wait_ready()
        status, _h, _b = await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
        assert status == 200  # the client's credentials are now checked (and cached)
        await ca.close()
        status, headers, _ = await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
        assert status == 503 and headers["Retry-After"] == "2"
        text = error_log(logs)
        assert re.search(r"ra_certsrv_ca_plugin_enroll: Curl request failed with return code (7|52|56) \(.*\) "
                         rf"\(hop RA -> CA https://127.0.0.1:{port}/certsrv.*\).* -- fix: ", text), text[-2000:]
        await attempts_at_least(r, 2)  # the start-up checks run again (and fail while it is down)
        await assert_not_ready(ca_lab, r)
        ca = await run_ca(ca_lab, tmp_path / "ca-logs", port=port)
        await assert_clears(ca_lab, r)
        assert r.state.attempts >= 3
    finally:
        await r.close()
        await ca.close()
