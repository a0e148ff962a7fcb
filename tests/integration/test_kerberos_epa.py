"""Issue 12 item 9: Kerberos (Negotiate) and NTLM with channel binding (Extended Protection).

Against a real MIT KDC the test starts on 127.0.0.1 (``krb5_lab``): our CA accepts Negotiate
with Kerberos (the keytab of HTTP/localhost), the certsrv client logs in with a password or with
a ticket from kinit, and the RA enrolls through it.  ``[ca] require_epa``: an NTLM login bound
to the CA's TLS certificate (RFC 5929 tls-server-end-point) is accepted, one without the binding
is refused with 401 and IIS's ``401 1 2148074306`` (SEC_E_BAD_BINDINGS)."""

from __future__ import annotations

import pytest
from tests.integration.krb5_lab import REALM, USER, USER_PASSWORD, kdc  # noqa: F401  (fixture)
from tests.integration.ra_lab import ca_lab, est_csr, iis_requests, raw_enroll, run_ra  # noqa: F401

from onlineca.ca.users import add_user
from onlineca.ca.web import start_ca
from onlineca.certsrv.client import CertsrvClient
from onlineca.errors import CAAuthError

NTLM_USER, NTLM_PASSWORD = "bob", "bob-Ntlm-Passw0rd"


async def _ca(lab, tmp_path, **ca):
    users = tmp_path / "ca-users"
    add_user(users, NTLM_USER, NTLM_PASSWORD, ntlm_domain="ONLINECA")
    cfg = lab.config()
    cfg = cfg.model_copy(update={"ca": cfg.ca.model_copy(update={"users_file": str(users), **ca})})
    return await start_ca(cfg, lab.data_dir, tmp_path / "ca-logs", host="127.0.0.1", port=0)


def _url(ca) -> str:
    return f"https://localhost:{ca.port}/certsrv"  # the name of the service principal HTTP/localhost


async def test_kerberos_login_with_a_password_and_with_a_ticket(ca_lab, kdc, tmp_path):
    ca = await _ca(ca_lab, tmp_path, kerberos_auth=True, keytab=str(kdc.keytab), kerberos_realm=REALM,
                   basic_auth=False)
    try:
        async with CertsrvClient(_url(ca), auth="kerberos", username=f"{USER}@{REALM}", password=USER_PASSWORD,
                                 trust=ca_lab.root_pem) as c:
            await c.login()
            assert "CiscoRA" in [t.name for t in await c.templates()]
        kdc.kinit()
        async with CertsrvClient(_url(ca), auth="kerberos", trust=ca_lab.root_pem) as c:  # the ticket cache
            await c.login()
        async with CertsrvClient(_url(ca), auth="kerberos", username=f"{USER}@{REALM}", password="wrong",
                                 trust=ca_lab.root_pem) as c:
            with pytest.raises(CAAuthError):
                await c.login()
        lines = iis_requests(tmp_path / "ca-logs")
        assert any(f"ONLINECA\\{USER} " in ln and " 200 0 0 " in ln for ln in lines)
        assert any(" 401 1 2148074254 " in ln for ln in lines)  # the first, anonymous ask
    finally:
        await ca.close()


async def test_the_ra_enrolls_at_a_kerberos_ca(ca_lab, kdc, tmp_path):
    ca = await _ca(ca_lab, tmp_path, kerberos_auth=True, keytab=str(kdc.keytab), kerberos_realm=REALM,
                   require_epa=True)
    ra = await run_ra(ca_lab, tmp_path / "ra-logs", _url(ca),
                      ra={"ca_auth": "kerberos", "ca_user": f"{USER}@{REALM}", "ca_password": USER_PASSWORD,
                          "client_auth": "users"},
                      est={"users_file": str(_est_users(tmp_path))})
    try:
        await ra.wait_ready()
        status, _h, _b = await raw_enroll(ra, est_csr("CN=SEP-KERBEROS")[1], user="capf", password="capf-Passw0rd",
                                          cafile=ca_lab.root_pem)
        assert status == 200
        assert ca.engine.list(disposition=None, limit=100000)[-1].requester == USER
    finally:
        await ra.close()
        await ca.close()


def _est_users(d):
    from onlineca.infra.users import hash_password
    path = d / "est-users"
    path.write_text(f"capf:{hash_password('capf-Passw0rd', n=2 ** 10)}\n")
    return path


async def test_extended_protection_accepts_a_bound_ntlm_login_and_refuses_an_unbound_one(ca_lab, tmp_path):
    ca = await _ca(ca_lab, tmp_path, ntlm_auth=True, require_epa=True, basic_auth=False)
    try:
        async with CertsrvClient(_url(ca), auth="ntlm", username=f"ONLINECA\\{NTLM_USER}", password=NTLM_PASSWORD,
                                 trust=ca_lab.root_pem) as c:
            await c.login()  # bound to the CA's certificate: accepted
            assert await c.templates()
        async with CertsrvClient(_url(ca), auth="ntlm", username=f"ONLINECA\\{NTLM_USER}", password=NTLM_PASSWORD,
                                 trust=ca_lab.root_pem, channel_binding=False) as c:
            with pytest.raises(CAAuthError):
                await c.login()
        lines = iis_requests(tmp_path / "ca-logs")
        assert any(" 401 1 2148074306 " in ln for ln in lines), lines  # SEC_E_BAD_BINDINGS, as IIS logs it
        assert "Extended Protection refused a login" in (tmp_path / "ca-logs" / "ca.log").read_text()
    finally:
        await ca.close()
    # Without require_epa the same unbound login is accepted (as IIS with EPA off).
    ca = await _ca(ca_lab, tmp_path, ntlm_auth=True, basic_auth=False)
    try:
        async with CertsrvClient(_url(ca), auth="ntlm", username=f"ONLINECA\\{NTLM_USER}", password=NTLM_PASSWORD,
                                 trust=ca_lab.root_pem, channel_binding=False) as c:
            await c.login()
    finally:
        await ca.close()
