"""Issue 11 item 2: identities pinned beyond the trust store.

Every tier trusts one root, so a certificate a user got from that root for another purpose (a
device's, client-auth only) must not pass as the CA's or the RA's web certificate: the RA pins
the CA (serverAuth always; ``ca_expected_name``, ``ca_fingerprint``), CAPF's EST client pins the
RA (``[capf] ra_expected_name``, ``ra_fingerprint``) and refuses an RA certificate without
serverAuth."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from tests.integration.ra_lab import PASSWORD, USER, ca_lab, run_ca, run_ra  # noqa: F401  (fixture)

from onlineca import pki
from onlineca.errors import CAUnavailable, ESTCodedError
from onlineca.est.client import ESTClient
from onlineca.infra import files as fs


def _cert(lab, name: str, ekus: list[str]):
    key = pki.generate_key("ec", 256)
    issuing = pki.load_certificate(lab.files.issuing_cert.read_bytes())
    cert = pki.build_certificate(subject=f"CN={name}", public_key=key.public_key(),
                                 issuer_key=fs.read_private_key(lab.files.issuing_key), issuer_cert=issuing,
                                 sans=["localhost", "127.0.0.1"], extended_key_usage=ekus)
    path = lab.dir / f"pin-{name}.pem"
    path.write_bytes(pki.certs_pem([cert, issuing]))
    fs.write_private_key(lab.dir / f"pin-{name}.key", key)
    return cert, (path, lab.dir / f"pin-{name}.key")


async def test_the_ra_refuses_a_ca_certificate_for_another_purpose_name_or_fingerprint(ca_lab, tmp_path):
    # A certificate from the same root without serverAuth: client-auth only (OpenSSL's purpose
    # check) or no extendedKeyUsage at all (the pin).
    for name, ekus, reason in (("alice-device", ["client_auth"], "CA_TLS_UNTRUSTED"),
                               ("alice-any", [], "CA_TLS_PIN")):
        _lsc, lsc_files = _cert(ca_lab, name, ekus)
        ca = await run_ca(ca_lab, tmp_path / f"ca-{name}", tls=lsc_files)
        try:
            ra = await run_ra(ca_lab, tmp_path / f"ra-{name}", ca.url)
            try:
                await ra.state.wait_until(lambda s: s.reason.startswith(("CA_TLS_PIN", "CA_TLS_UNTRUSTED")))
                assert ra.state.reason.startswith(reason) and not ra.state.ready, ra.state.reason
            finally:
                await ra.close()
        finally:
            await ca.close()
    web, web_files = _cert(ca_lab, "ca.lab", ["server_auth"])
    ca = await run_ca(ca_lab, tmp_path / "ca2", tls=web_files)
    try:
        for pin, ready in (({"ca_expected_name": "ca.lab"}, True), ({"ca_expected_name": "other.lab"}, False),
                           ({"ca_fingerprint": pki.fingerprint(web)}, True), ({"ca_fingerprint": "00" * 32}, False)):
            ra = await run_ra(ca_lab, tmp_path / f"ra-{len(pin)}-{ready}", ca.url, ra=pin)
            try:
                await ra.state.wait_until(lambda s: s.ready or s.reason.startswith("CA_TLS_PIN"))
                assert ra.state.ready is ready, (pin, ra.state.reason)
            finally:
                await ra.close()
    finally:
        await ca.close()


async def test_capf_refuses_an_ra_certificate_without_server_auth_or_with_another_name(ca_lab, tmp_path):
    from tests.integration.ra_lab import local_ra

    from onlineca.capf.enroll import OnlineCAEnroller
    kw = local_ra(ca_lab, tmp_path)
    _c, device_files = _cert(ca_lab, "not-an-ra", [])
    cfg = ca_lab.config(ra={**kw["ra"], "ca_url": "https://127.0.0.1:1/certsrv"}, est=kw["est"],
                        log_dir=tmp_path / "logs")
    from onlineca.ra.app import start_ra
    ra = await start_ra(cfg, tmp_path / "logs", host="127.0.0.1", port=0, tls_cert=device_files[0],
                        tls_key=device_files[1])
    try:
        async with ESTClient(ra.base, cafile=ca_lab.root_pem) as est:
            with pytest.raises(ESTCodedError) as exc:
                await est.cacerts()
        assert exc.value.code == "EST_ERR_CACERT_VERIFICATION" and "serverAuth" in exc.value.message
    finally:
        await ra.close()
    ra = await start_ra(cfg, tmp_path / "logs", host="127.0.0.1", port=0, tls_cert=ca_lab.ra_cert,
                        tls_key=ca_lab.ra_key)
    try:
        capf = cfg.capf.model_copy(update={"ra_url": ra.url, "ra_trust_store": str(ca_lab.root_pem), "ra_user": USER,
                                           "ra_password": SecretStr(PASSWORD), "ra_expected_name": "ra.other"})
        enroller = OnlineCAEnroller(capf, tmp_path / "capf")
        try:
            with pytest.raises(CAUnavailable) as refused:
                await enroller.setup()
            assert "does not name 'ra.other'" in refused.value.message
        finally:
            await enroller.close()
        good = capf.model_copy(update={"ra_expected_name": "ra.lab",
                                       "ra_fingerprint": pki.fingerprint(fs.load_cert_file(ca_lab.ra_cert)[0])})
        enroller = OnlineCAEnroller(good, tmp_path / "capf")
        try:
            await enroller.setup()
        finally:
            await enroller.close()
    finally:
        await ra.close()
