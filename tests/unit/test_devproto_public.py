"""The public flow, byte for byte: the wire notes' frames (tests/vectors/devproto/*public*, put
together by hand, not by our encoder) are exactly what CAPF sends and what a public client sends;
CAPF never sends an extension to a phone that did not announce it; a public client refuses what
is outside the public flow; both CERTIFICATE forms and NUL-terminated strings are read; and the
device-protocol page's table of public numbers and extensions is the code's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from onlineca import pki
from onlineca.errors import ProtocolError
from onlineca.proto.devproto import messages as m
from onlineca.proto.devproto.codec import Element, Frame, encode_frame
from onlineca.proto.devproto.messages import Capability, Command, Reason, Tag
from onlineca.proto.devproto.session import CAPFSession, PhoneSession, State

VECTORS = Path(__file__).parents[1] / "vectors" / "devproto"
SID = 0x1A2B3C4D


def wire(name: str) -> bytes:
    text = (VECTORS / f"{name}.hex").read_text()
    return bytes.fromhex("".join(line for line in text.splitlines() if not line.startswith("#")))


def test_the_notes_literal_frames():
    """The fixed frames exactly as the notes write them (<sid> = 1a2b3c4d)."""
    sid = "1a2b3c4d"
    assert wire("01_public_hello") == bytes.fromhex(f"5501{sid}0004" "07000103")
    assert wire("02_public_auth_response") == bytes.fromhex(
        f"5502{sid}0012" "07000102" "0d0007" + b"CSF123\x00".hex() + "01000101")
    assert wire("03_public_key_gen_request_size_only") == bytes.fromhex(f"5503{sid}0005" "0a00020800")
    assert wire("03_public_key_gen_request") == bytes.fromhex(f"5503{sid}0009" "0a00020800" "11000100")
    assert wire("10_public_store_cert_response") == bytes.fromhex(f"550a{sid}0004" "01000101")
    assert wire("15_public_end_session_ok") == bytes.fromhex(f"550f{sid}0004" "01000101")
    assert wire("13_public_delete_cert_request") == bytes.fromhex(f"550d{sid}0000")
    assert wire("11_public_fetch_cert_request") == bytes.fromhex(f"550b{sid}0000")
    store = wire("09_public_store_cert_request")
    der = m.from_bytes(store).certificate.der
    # {03}[00 01] 01 {04}[L+3] {01}[L] 00 01 DER, L = 2 + len(DER)
    assert store[8:12] == bytes.fromhex("03000101")
    assert store[12] == 4 and int.from_bytes(store[13:15], "big") == len(der) + 5
    assert store[15] == 1 and int.from_bytes(store[16:18], "big") == len(der) + 2 and store[18:20] == b"\x00\x01"
    assert store[20:] == der


def test_capf_sends_exactly_the_public_frames_to_a_public_client():
    c = CAPFSession(session_id=SID)
    c.start()
    assert c.data_to_send() == wire("01_public_hello")
    [auth] = c.receive_data(wire("02_public_auth_response"))
    assert auth.device_name == "CSF123" and auth.status is Reason.OK and c.version == 2
    assert c.public and c.announced == m.NO_CAPABILITIES
    c.request_key_gen("rsa", 2048)
    assert c.data_to_send() == wire("03_public_key_gen_request")
    events = c.receive_data(wire("17_public_request_in_progress") + wire("04_public_key_gen_response"))
    assert [type(e) for e in events] == [m.RequestInProgress, m.KeyGenResponse] and c.state is State.KEY_RECEIVED
    der = m.from_bytes(wire("09_public_store_cert_request")).certificate.der
    c.store_certificate(der)  # right after the key: no signing step
    assert c.data_to_send() == wire("09_public_store_cert_request")
    c.receive_data(wire("10_public_store_cert_response"))
    c.end(Reason.OK)
    assert c.data_to_send() == wire("15_public_end_session_ok") and c.closed


@pytest.mark.parametrize(("reason", "vector"), [
    (Reason.OPERATION_REFUSED, "15_public_end_session_declined"),
    (Reason.NOTHING_PENDING, "15_public_end_session_declined"),
    (Reason.LOCKED_OUT, "15_public_end_session_declined"),
    (Reason.CA_UNAVAILABLE, "15_public_end_session_declined"),
    (Reason.DEVICE_UNKNOWN, "15_public_end_session_unknown_device"),
    (Reason.OK, "15_public_end_session_ok"),
])
def test_a_public_client_hears_1_7_or_9_and_no_reason_info(reason, vector):
    c = CAPFSession(session_id=SID)
    c.start()
    c.data_to_send()
    c.receive_data(wire("02_public_auth_response"))
    c.decline(reason, "the real cause goes to the log, not to this phone")
    assert c.data_to_send() == wire(vector)


def test_delete_and_fetch_go_with_no_elements():
    for request, vector in (("request_delete", "13_public_delete_cert_request"),
                            ("request_fetch", "11_public_fetch_cert_request")):
        c = CAPFSession(session_id=SID)
        c.start()
        c.receive_data(wire("02_public_auth_response"))
        c.data_to_send()
        getattr(c, request)()
        assert c.data_to_send() == wire(vector)


def test_a_public_client_sends_exactly_the_public_frames():
    p = PhoneSession(device_name="CSF123", max_version=2, capabilities=m.NO_CAPABILITIES)
    p.receive_data(wire("01_public_hello"))
    assert p.version == 2 and p.session_id == SID
    p.auth_response()
    assert p.data_to_send() == wire("02_public_auth_response")
    p.receive_data(wire("03_public_key_gen_request"))
    p.in_progress()
    spki = m.from_bytes(wire("04_public_key_gen_response")).public_key
    p.key_gen_response(spki)
    assert p.data_to_send() == wire("17_public_request_in_progress") + wire("04_public_key_gen_response")
    p.receive_data(wire("09_public_store_cert_request"))
    p.store_response()
    assert p.data_to_send() == wire("10_public_store_cert_response")
    p.receive_data(wire("15_public_end_session_ok"))
    assert p.closed and p.end_reason is Reason.OK
    q = PhoneSession(device_name="SEP74A02FC0A675", max_version=2, capabilities=m.NO_CAPABILITIES)
    q.receive_data(wire("01_public_hello"))
    q.auth_response(password="123456")
    assert q.data_to_send() == wire("02_public_auth_response_auth_string")


def _public_phone_at(state: State) -> PhoneSession:
    p = PhoneSession(device_name="SEP74A02FC0A675", max_version=2, capabilities=m.NO_CAPABILITIES)
    if state is State.START:
        return p
    p.receive_data(wire("01_public_hello"))
    p.auth_response()
    p.data_to_send()
    if state is State.KEY_RECEIVED:
        p.receive_data(wire("03_public_key_gen_request"))
        p.key_gen_response(m.from_bytes(wire("04_public_key_gen_response")).public_key)
    return p


@pytest.mark.parametrize(("state", "vector", "why"), [
    (State.START, "01_auth_request_v3", "AUTH_NONCE"),                          # a nonce in the hello
    (State.START, "01_public_server_hello_auth_type", "AUTH_TYPE"),           # anything but VERSION
    (State.AUTH_RECEIVED, "01_auth_request_rechallenge", "a second AUTH_REQUEST"),
    (State.AUTH_RECEIVED, "03_key_gen_request_ec_p384", "KEY_TYPE 01"),      # an EC key
    (State.AUTH_RECEIVED, "09_store_cert_request", "before its KEY_GEN_RESPONSE"),  # a redelivery
    (State.KEY_RECEIVED, "09_store_cert_request", "nested form"),            # the flat CERTIFICATE
    (State.KEY_RECEIVED, "22_sign_cert_request_v2", "SIGN_CERT_REQUEST"),     # the signing step
    (State.KEY_RECEIVED, "17_request_in_progress", "REQUEST_IN_PROGRESS"),    # a server keepalive
    (State.KEY_RECEIVED, "16_retry_later", "RETRY_LATER"),
    (State.KEY_RECEIVED, "03_public_key_gen_request", "a second KEY_GEN_REQUEST"),
    (State.AUTH_RECEIVED, "15_end_session_nothing_pending", "REASON 4d"),     # reason 77
    (State.AUTH_RECEIVED, "15_end_session_refused", "REASON_INFO"),
    (State.AUTH_RECEIVED, "18_status_enquiry", "STATUS_ENQUIRY"),
    (State.AUTH_RECEIVED, "13_delete_cert_request", "CERTIFICATE_TYPE in DELETE_CERT_REQUEST"),
])
def test_a_public_client_aborts_on_anything_outside_the_public_flow(state, vector, why):
    p = _public_phone_at(state)
    with pytest.raises(ProtocolError) as err:
        p.receive_data(wire(vector))
    assert err.value.code == "DEVPROTO_NOT_PUBLIC" and why in err.value.message, err.value.message


def test_capf_refuses_every_extension_the_phone_did_not_announce():
    def public_capf() -> CAPFSession:
        c = CAPFSession(session_id=SID)
        c.start()
        c.receive_data(wire("02_public_auth_response_null_password"))  # version 3: EC is a matter of announcing
        c.data_to_send()
        return c

    attempts = {
        "challenge": lambda c: c.challenge(m.AuthType.PASSWORD),
        "keepalive": lambda c: c.keepalive(),
        "retry later": lambda c: c.retry_later(60),
        "EC key": lambda c: c.request_key_gen("ec", 256),
        "reason 77": lambda c: c.end(Reason.NOTHING_PENDING),
        "reason info": lambda c: c.end(Reason.OPERATION_REFUSED, "why"),
        "redelivery": lambda c: c.store_certificate(m.from_bytes(wire("09_public_store_cert_request")).certificate.der),
    }
    for what, attempt in attempts.items():
        c = public_capf()
        with pytest.raises(ProtocolError) as err:
            attempt(c)
        assert err.value.code == "DEVPROTO_NOT_ANNOUNCED", what
        assert c.data_to_send() == b"" and c.state is State.AUTH_RECEIVED, what
    c = public_capf()
    c.request_key_gen("rsa", 2048)  # the phone's turn: CAPF could ask how it is doing, with KEEPALIVE
    with pytest.raises(ProtocolError) as err:
        c.status_enquiry()
    assert err.value.code == "DEVPROTO_NOT_ANNOUNCED"
    # The signing step and a second key request, after the key.
    for what, attempt in {"signing": lambda c: c.request_signature(b"\x30\x00"),
                          "second key": lambda c: c.request_key_gen("rsa", 2048)}.items():
        c = public_capf()
        c.request_key_gen("rsa", 2048)
        c.receive_data(wire("04_public_key_gen_response"))
        c.data_to_send()
        with pytest.raises(ProtocolError) as err:
            attempt(c)
        assert err.value.code == "DEVPROTO_NOT_ANNOUNCED", what


def test_each_capability_enables_its_extension_alone():
    def capf(announced: Capability) -> CAPFSession:
        c = CAPFSession(session_id=SID)
        c.start()
        c.receive_data(m.to_bytes(m.AuthResponse(session_id=SID, version=3, device_name="SEP74A02FC0A675",
                                                 capabilities=int(announced))))
        c.data_to_send()
        return c

    c = capf(Capability.KEEPALIVE)
    c.keepalive()
    with pytest.raises(ProtocolError):
        c.retry_later(60)
    c = capf(Capability.RETRY_LATER)
    c.retry_later(60, Reason.CA_UNAVAILABLE, "said to a phone without REASONS as 7, no info")
    said = m.from_bytes(c.data_to_send())
    assert said.reason is Reason.OPERATION_REFUSED and said.reason_info is None
    c = capf(Capability.EC)
    c.request_key_gen("ec", 384)
    c = capf(Capability.REASONS)
    c.decline(Reason.LOCKED_OUT, "locked out")
    assert m.from_bytes(c.data_to_send()).reason is Reason.LOCKED_OUT
    c = capf(Capability(0x80))  # a bit this side does not know: kept, and enables nothing
    assert c.announced == 0x80 and not c.public
    with pytest.raises(ProtocolError):
        c.keepalive()


def test_both_certificate_forms_are_read_and_the_nested_one_is_sent():
    flat = m.from_bytes(wire("09_store_cert_request"))
    nested = m.from_bytes(wire("09_public_store_cert_request"))
    assert not flat.certificate.nested and nested.certificate.nested
    assert m.to_bytes(flat) == wire("09_store_cert_request")  # each form encodes back as it came
    fresh = m.StoreCertRequest(session_id=SID, certificate=m.CertificateValue(m.CertificateType.LSC,
                                                                              nested.certificate.der))
    assert m.to_bytes(fresh) == wire("09_public_store_cert_request")
    assert fresh == nested  # the form is not part of the value
    der = nested.certificate.der
    for bad in (b"\x01\x00\x05\x00\x01" + der[:3],         # sub-element length does not fill the element
                b"\x02" + len(der).to_bytes(2, "big") + der,  # another sub-element tag
                b"\x01\x00\x00"):                           # an empty sub-element
        frame = Frame(9, SID, (Element(3, b"\x01"), Element(4, bad)))
        with pytest.raises(ProtocolError) as err:
            m.decode_message(frame)
        assert err.value.code == "DEVPROTO_BAD_ELEMENT"
    assert pki.common_name(m.from_bytes(wire("12_public_fetch_cert_response")).certificates[0].certificate().subject) \
        == "SEP74A02FC0A675"


def test_nul_terminated_strings():
    msg = m.from_bytes(wire("02_public_auth_response_null_password"))
    assert msg.device_name == "SEP74A02FC0A675" and isinstance(msg.device_name, m.CString)
    assert msg.auth_password == "" and msg.password is None  # a lone NUL is no auth string
    assert m.to_bytes(msg) == wire("02_public_auth_response_null_password")
    plain = m.from_bytes(wire("02_auth_response_password_v3"))
    assert not isinstance(plain.device_name, m.CString) and plain.password == "123456"
    for bad in (b"SEP\x00123", b"\x00", b"SEP1\x00\x00"):
        frame = Frame(2, SID, (Element(7, b"\x03"), Element(13, bad)))
        with pytest.raises(ProtocolError):
            m.decode_message(frame)
    assert encode_frame(m.encode_message(m.AuthResponse(version=2, device_name=m.CString("CSF123"),
                                                        status=Reason.OK))).endswith(b"CSF123\x00\x01\x00\x01\x01")


# ------------------------------------------------------------------ the page's table is the code's

def _doc_table() -> dict[tuple[str, str], tuple[str, str]]:
    """The table of docs/device-protocol.md "Public flow and extensions" (kind | number | name |
    direction | class | announcement): (kind, name) -> (class, announcement)."""
    doc = (Path(__file__).parents[2] / "docs" / "device-protocol.md").read_text()
    section = doc.split("## Public flow and extensions", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in ("command", "element", "reason"):
            # "- (a second one: CHALLENGE)": the number itself is public, its place is noted
            rows[(cells[0], cells[2].strip("`"))] = (cells[4], cells[5].split(" (")[0].strip("`"))
    return rows


def _expected(needs: Capability | None) -> tuple[str, str]:
    if needs is None:
        return "public", "-"
    return "onlineca extension", f"CAPABILITIES {needs.name}"


def test_the_public_and_extension_table_is_the_code_table():
    rows = _doc_table()
    for command, needs in m.COMMAND_NEEDS.items():
        assert rows[("command", command.name)] == _expected(needs), command
    for tag, needs in m.TAG_NEEDS.items():
        assert rows[("element", tag.name)] == _expected(needs), tag
    for reason in Reason:
        assert rows[("reason", reason.name)] == _expected(None if reason in m.PUBLIC_REASONS else Capability.REASONS)
    # Every command, element and reason of the protocol has its row.
    assert {n for k, n in rows if k == "command"} == {c.name for c in Command}
    assert {n for k, n in rows if k == "element"} == {t.name for t in Tag}
    assert {n for k, n in rows if k == "reason"} == {r.name for r in Reason}
    assert all(re.fullmatch(r"public|onlineca extension", cls) for cls, _ in rows.values())
