"""CAPF's online-CA enrollment end to end on 127.0.0.1: a phone over TLS on the device protocol,
CAPF, an EST server with a local signer as the RA.  The source document's log lines and files,
the key orders, policy violations, CAPF killed between issue and delivery, the RA down then back,
the bound on concurrent enrollments, and CAPF's own TLS certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import ssl
from pathlib import Path

import pytest
from capf_lab import CAPFLab, close_lab, make_lab

from onlineca import pki
from onlineca.capf.enroll import renewal_due
from onlineca.infra import files as fs
from onlineca.phone.client import Faults, PhoneAuth
from onlineca.phone.device import KeyPool, Phone
from onlineca.proto.devproto.messages import Command, Message, RequestInProgress
from onlineca.store import devices as inv


@pytest.fixture
async def lab(tmp_path: Path, lab_pki) -> CAPFLab:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}")
    yield lab
    await close_lab(lab)


async def test_null_string_rsa_enrollment_as_the_document_logs_it(lab: CAPFLab) -> None:
    name = "SEP74A02FC0A675"
    lab.add_device(name, operation="Install/Upgrade", auth_mode="By Null String", key_order="RSA Only",
                   rsa_key_size=2048)
    before = lab.backend.enrolls
    key, pool = pki.generate_key("rsa", 2048), KeyPool()
    pool.put(("rsa", 2048), key)  # the key the phone makes when asked: known here
    phone = Phone(name, key_pool=pool)
    result = await lab.session(phone)
    assert result.reason == "OK" and result.outcome == "installed"
    stored = phone.lsc
    assert stored is not None and pki.same_public_key(stored.public_key(), key)
    assert pki.common_name(stored.subject) == name
    assert {"digital_signature", "key_encipherment"} <= pki.key_usage_names(stored)
    assert lab.backend.enrolls == before + 1
    assert lab.backend.subjects[-1] == f"CN={name}"
    device = lab.device(name)
    assert lab.status(name) == "Upgrade Success"
    assert device.operation == "OPERATION_NONE"
    assert device.lsc_serial == format(stored.serial_number, "x")
    # The document's files: CSR removed after the phone confirmed, PKCS#7, PEM and DER kept.
    capf_dir = lab.data_dir / "capf"
    assert not (capf_dir / "csr" / f"{name}.csr").exists()
    for suffix in ("p7b", "pem", "der"):
        assert (capf_dir / "cert" / f"{name}.{suffix}").stat().st_size > 0
    assert pki.load_certificate((capf_dir / "cert" / f"{name}.der").read_bytes()) == stored
    assert (capf_dir / "cert" / f"{name}.pem").read_bytes() == pki.cert_pem(stored)
    text = lab.capf_log
    expected = [
        f"debug 2:{name}:CA Mode is OnlineCA, Initiating Automatic Certificate Enrollment",
        f"debug 2:{name}:Calling enrollCertUsingEST() csr_file={capf_dir / 'csr' / name}.csr",
        f"debug 2:{name}:Enrollment rv = 0 (EST_ERR_NONE) with pkcs7 length = ",
        f"debug 2:{name}:Signed Cert written to {capf_dir / 'cert'}/ location...",
        f"debug 2:{name}:Converting PKCS7 file to PEM format and PEM to DER",
        f"debug 2:{name}:Online Cert Signing successful",
        f"debug 2:{name}:CAPF CORE: Rcvd Event: CAPF_EV_CA_CERT_REP in State: CAPF_STATE_AWAIT_CA_CERT_RESP",
        f"debug 2:{name}:CAPF got device certificate",
        f"debug 2:{name}:Sending STORE_CERT_REQ msg",
        f"debug LSC is verified. removing CSR at {capf_dir / 'csr' / name}.csr",
        "CAPFDevice::MapCapf_OpStatusToDBLTypeCertificateStatus(OPERATION_UPGRADE, Suc =>DbStatus=CERT_STATUS_UPGRADE_SUCCESS",
        f"SetOperationStatus(Success:CAPF_OP_SUCCESS):0 sql query - (UPDATE Device SET tkCertificateOperation=1, "
        f"tkcertificatestatus='3' WHERE my_lower(name)=my_lower('{name}'))",
        f"debug 2:{name}:MsgType : CAPF_MSG_END_SESSION",
    ]
    position = 0
    for line in expected:
        found = text.find(line, position)
        assert found >= 0, f"missing or out of order: {line}"
        position = found
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} \| debug 2:" + name + r":Enrollment rv = 0 \(EST_ERR_NONE\) "
                     r"with pkcs7 length = \d+$", text, re.M)
    assert f"Select({name}) KeyOrder=KEYORDER_RSA_ONLY:1" in text


async def test_ec_only_and_ec_preferred_with_rsa_backup(lab: CAPFLab) -> None:
    lab.add_device("SEPEC0000001", operation="Install/Upgrade", key_order="EC Only", ec_key_size=256)
    phone = Phone("SEPEC0000001")
    result = await lab.session(phone)
    assert result.reason == "OK"
    assert pki.key_spec(phone.lsc.public_key()) == ("ec", 256)

    lab.add_device("SEPEC0000002", operation="Install/Upgrade", key_order="EC Preferred RSA Backup",
                   ec_key_size=384, rsa_key_size=2048)
    phone = Phone("SEPEC0000002")
    await lab.session(phone)
    assert pki.key_spec(phone.lsc.public_key()) == ("ec", 384)

    # The phone cannot make EC keys: CAPF falls back to RSA in the same session.
    lab.add_device("SEPEC0000003", operation="Install/Upgrade", key_order="EC Preferred RSA Backup",
                   rsa_key_size=2048)
    phone = Phone("SEPEC0000003")
    result = await lab.session(phone, faults=Faults(keygen="fail_ec"))
    assert result.reason == "OK"
    assert pki.key_spec(phone.lsc.public_key()) == ("rsa", 2048)
    assert result.received.count("KEY_GEN_REQUEST") == 2


async def test_ec_only_with_a_version_2_phone(lab: CAPFLab) -> None:
    lab.add_device("SEPV20000001", operation="Install/Upgrade", key_order="EC Only")
    result = await lab.session(Phone("SEPV20000001"), max_version=2)
    assert result.reason == "UNSUPPORTED"
    assert lab.status("SEPV20000001") == "Upgrade Failed: No Support for EC only in CAPF version 3"
    lab.add_device("SEPV20000002", operation="Install/Upgrade", key_order="EC Preferred RSA Backup",
                   rsa_key_size=2048)
    phone = Phone("SEPV20000002")
    result = await lab.session(phone, max_version=2)
    assert result.reason == "OK" and pki.key_spec(phone.lsc.public_key()) == ("rsa", 2048)


async def test_policy_violation_and_key_generation_failures(lab: CAPFLab) -> None:
    before = lab.backend.enrolls
    lab.add_device("SEPBADKEY001", operation="Install/Upgrade", key_order="EC Only", ec_key_size=256)
    result = await lab.session(Phone("SEPBADKEY001"), faults=Faults(keygen="wrong_key"))
    assert result.reason == "UNSUPPORTED"
    assert lab.status("SEPBADKEY001") == "Upgrade Failed: Key Generation Failed/Timeout"
    assert "policy violation: the phone returned a EC 384 key where EC 256 was asked" in lab.capf_log

    lab.add_device("SEPBADKEY002", operation="Install/Upgrade", key_order="EC Only")
    result = await lab.session(Phone("SEPBADKEY002"), faults=Faults(keygen="fail"))
    assert result.reason == "KEY_GEN_FAILED"
    assert result.received.count("KEY_GEN_REQUEST") == 3  # max_keygen_attempts
    assert lab.status("SEPBADKEY002") == "Upgrade Failed: Key Generation Failed/Timeout"
    assert lab.device("SEPBADKEY002").operation == "OPERATION_UPGRADE"  # the phone may try again
    assert lab.backend.enrolls == before


async def test_key_generation_timeout(tmp_path: Path, lab_pki) -> None:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}", max_keygen_seconds=0.3)
    try:
        lab.add_device("SEPSLOWKEY01", operation="Install/Upgrade", key_order="EC Only")
        result = await lab.session(Phone("SEPSLOWKEY01"), faults=Faults(stall_at=Command.KEY_GEN_REQUEST))
        assert result.reason == "KEY_GEN_TIMEOUT"
        assert lab.status("SEPSLOWKEY01") == "Upgrade Failed: Key Generation Failed/Timeout"
    finally:
        await close_lab(lab)


async def test_capf_killed_between_issue_and_delivery(tmp_path: Path, lab_pki, db_url: str) -> None:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, db_url)
    try:
        name = "SEPCRASH0001"
        lab.add_device(name, operation="Install/Upgrade", key_order="EC Only")
        phone = Phone(name)
        result = await lab.session(phone, faults=Faults(store="drop"))
        assert result.outcome == "comm_failure" and "dropped" in (result.error or "")
        issued = lab.backend.enrolls
        with lab.db.session() as s:
            pending = inv.undelivered_lsc(s, name)
            assert pending is not None
            serial = pending.serial
        assert lab.device(name).operation == "OPERATION_UPGRADE"
        assert lab.device(name).lsc_serial is None
        await lab.stop_capf()             # CAPF dies with the certificate issued but not delivered
        await lab.start_capf()
        result = await lab.session(phone)
        assert result.reason == "OK"
        assert format(phone.lsc.serial_number, "x") == serial
        assert "KEY_GEN_REQUEST" not in result.received  # the phone keeps the key it made the first time
        assert lab.backend.enrolls == issued             # no second CA request
        assert lab.status(name) == "Upgrade Success" and lab.device(name).lsc_serial == serial
        assert "delivering it without a new CA request" in lab.capf_log
    finally:
        await close_lab(lab)


async def test_ra_down_then_back(lab: CAPFLab) -> None:
    name = "SEPRADOWN001"
    lab.add_device(name, operation="Install/Upgrade", key_order="EC Only")
    await lab.stop_ra()
    result = await lab.session(Phone(name))
    assert result.received[-1] == "RETRY_LATER"
    assert result.retry_delay == 120 and result.reason == "CA_UNAVAILABLE"
    device = lab.device(name)
    assert lab.status(name) == "Upgrade Failed: CA Communication Failure"
    assert device.operation == "OPERATION_UPGRADE"
    text = lab.capf_log
    assert f"debug 2:{name}:Enrollment rv = 43 (EST_ERR_IP_CONNECT) with pkcs7 length = 0" in text
    assert "est_client_enroll_csr() Failed! Could not obtain new certificate. Aborting." in text
    assert "Online Cert Signing Failed" in text
    assert not any(True for _ in (lab.data_dir / "capf" / "cert").glob(f"{name}.*"))

    await lab.start_ra()  # same port
    result = await lab.session(Phone(name))
    assert result.reason == "OK"
    assert lab.status(name) == "Upgrade Success"


async def test_ca_refuses(lab: CAPFLab) -> None:
    lab.add_device("SEPREFUSED01", operation="Install/Upgrade", key_order="EC Only")
    lab.backend.deny = True
    result = await lab.session(Phone("SEPREFUSED01"))
    assert result.reason == "CA_REJECTED"
    assert lab.status("SEPREFUSED01") == "Upgrade Failed: CA Rejected Connection"
    assert "Enrollment rv = 22 (EST_ERR_AUTH_FAIL) with pkcs7 length = 0" in lab.capf_log


async def test_phone_refuses_to_store(lab: CAPFLab) -> None:
    lab.add_device("SEPNOSTORE01", operation="Install/Upgrade", key_order="EC Only")
    result = await lab.session(Phone("SEPNOSTORE01"), faults=Faults(store="refuse"))
    assert result.reason == "STORE_FAILED"
    assert lab.status("SEPNOSTORE01") == "Upgrade Failed: Phone Communication Failure"
    assert lab.device("SEPNOSTORE01").operation == "OPERATION_UPGRADE"


async def test_concurrent_enrollments_are_bounded(tmp_path: Path, lab_pki) -> None:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}", max_concurrent_enrollments=2,
                         keepalive_seconds=0.05)
    try:
        names = [f"SEPFLEET{i:04d}" for i in range(5)]
        for name in names:
            lab.add_device(name, operation="Install/Upgrade", key_order="EC Only")
        lab.backend.gate = asyncio.Event()
        keepalive_seen = {n: asyncio.Event() for n in names}

        def watch(name: str):  # type: ignore[no-untyped-def]
            def seen(msg: Message) -> None:
                if isinstance(msg, RequestInProgress):
                    keepalive_seen[name].set()
            return seen

        sessions = [asyncio.create_task(lab.session(Phone(n), on_message=watch(n))) for n in names]
        async with lab.backend.inflight_changed:
            await asyncio.wait_for(lab.backend.inflight_changed.wait_for(lambda: lab.backend.inflight == 2), 20)
        # Every phone hears CAPF's keepalive while the RA holds the first two.
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in keepalive_seen.values())), 20)
        lab.backend.gate.set()
        results = await asyncio.gather(*sessions)
        assert all(r.reason == "OK" for r in results)
        assert lab.backend.max_inflight == 2
        assert all(r.keepalives >= 1 for r in results)
    finally:
        await close_lab(lab)


async def test_capf_certificate_enrolled_at_first_start_and_renewed(lab: CAPFLab) -> None:
    paths = lab.capf.enroller.paths
    assert paths.capf_cert.exists()
    assert os.stat(paths.capf_key).st_mode & 0o777 == 0o600
    first = fs.load_cert_file(paths.capf_cert)[0]
    assert {"localhost", "127.0.0.1"} <= set(pki.san_names(first))

    async def served() -> object:
        ctx = ssl.create_default_context(cafile=str(lab.lab_pki.root_pem))
        _, writer = await asyncio.open_connection("127.0.0.1", lab.capf.port, ssl=ctx, server_hostname="127.0.0.1")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return pki.load_certificate(der)

    assert await served() == first
    await lab.capf.maintenance_once()  # not due: kept
    assert fs.load_cert_file(paths.capf_cert)[0] == first
    # A certificate past two thirds of its life is renewed through the RA, and served at once.
    key = pki.generate_key("ec", 256)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=2, hours=1)
    _, old = lab.lab_pki.issue("CN=CAPF-old", key=key, not_before=start, validity_days=3,
                               sans=["localhost", "127.0.0.1"], extended_key_usage=["server_auth"])
    assert renewal_due(old)
    fs.write_private_key(paths.capf_key, key)
    paths.capf_cert.write_bytes(pki.cert_pem(old))
    before = lab.backend.enrolls
    await lab.capf.maintenance_once()
    renewed = fs.load_cert_file(paths.capf_cert)[0]
    assert renewed != old and not renewal_due(renewed)
    assert lab.backend.enrolls == before + 1
    assert await served() == renewed


async def _kept_by_the_ra(lab: CAPFLab) -> None:
    """Until the RA has kept what the CA issued after CAPF had gone (a task of its own does it)."""
    from onlineca.est import backend as est_backend
    async with lab.backend.inflight_changed:
        await lab.backend.inflight_changed.wait_for(lambda: lab.backend.inflight == 0)
    while not est_backend._orphans:  # the finished call's done-callback schedules the keeping
        await asyncio.sleep(0)
    await asyncio.gather(*list(est_backend._orphans))


async def test_slow_ra_gets_the_phone_a_retry_later(tmp_path: Path, lab_pki) -> None:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}", enroll_timeout=0.5)
    try:
        name = "SEPSLOWRA001"
        lab.add_device(name, operation="Install/Upgrade", key_order="EC Only")
        lab.backend.gate = asyncio.Event()  # the RA takes the request and never answers
        phone = Phone(name)
        result = await lab.session(phone)
        assert result.received[-1] == "RETRY_LATER" and result.reason == "CA_UNAVAILABLE"
        assert lab.status(name) == "Upgrade Failed: CA Communication Failure"
        assert f"debug 2:{name}:Enrollment rv = 35 (EST_ERR_SSL_READ) with pkcs7 length = 0" in lab.capf_log
        enrolls = lab.backend.enrolls
        lab.backend.gate.set()
        await _kept_by_the_ra(lab)
        # The phone kept its key; the certificate the CA issued for the unanswered request
        # (kept by the RA) is collected and delivered, not a second one issued for a new key.
        result = await lab.session(phone)
        assert result.reason == "OK" and lab.status(name) == "Upgrade Success"
        assert "KEY_GEN_REQUEST" not in result.received and lab.backend.enrolls == enrolls
    finally:
        await close_lab(lab)


async def test_phones_that_sign_nothing_abort_or_present_an_unsigned_certificate(lab: CAPFLab) -> None:
    before = lab.backend.enrolls
    lab.add_device("SEPNOSIGN001", operation="Install/Upgrade", key_order="EC Only")
    result = await lab.session(Phone("SEPNOSIGN001"), faults=Faults(sign="refuse"))
    assert result.reason == "SIGN_FAILED"
    assert lab.status("SEPNOSIGN001") == "Upgrade Failed: Phone Communication Failure"

    lab.add_device("SEPABORT0001", operation="Install/Upgrade", key_order="EC Only")
    result = await lab.session(Phone("SEPABORT0001"), faults=Faults(abort_at=Command.KEY_GEN_REQUEST))
    assert result.outcome == "aborted" and result.received[-1] == "ABORT_RESPONSE"
    await lab.sessions_done()
    assert lab.status("SEPABORT0001") == "Upgrade Failed: Phone Communication Failure"
    assert lab.device("SEPABORT0001").operation == "OPERATION_UPGRADE"  # the phone may try again
    assert "SEPABORT0001:Phone Communication Failure: the phone aborted the session (reason 73)" in lab.capf_log

    name = "SEPUNSIGNED01"
    lab.add_device(name, operation="Install/Upgrade", key_order="EC Only",
                   auth_mode="By Existing Certificate (Precedence to MIC)")
    phone = Phone(name)
    lab.mic_ca.issue(phone)
    result = await lab.session(phone, PhoneAuth("mic"), faults=Faults(auth_signature="missing"))
    assert result.reason == "INVALID_CERTIFICATE" and lab.status(name) == "Upgrade Failed: Invalid MIC"
    assert "the MIC came without a signature over the challenge" in lab.capf_log
    assert lab.backend.enrolls == before  # none of them reached the RA
