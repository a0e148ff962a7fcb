"""The session state machines: every flow (install/upgrade, redelivery, EC then RSA backup,
delete, fetch, RETRY_LATER, keepalives, STATUS_ENQUIRY, ABORT, END_SESSION), every invalid
transition for both sides in every state, versions 2 and 3, and the online-CA signing design
driven through the protocol with real keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from onlineca import pki
from onlineca.errors import ParseError, ProtocolError
from onlineca.pki import tbs
from onlineca.proto.devproto import messages as m
from onlineca.proto.devproto.messages import Command, Reason
from onlineca.proto.devproto.session import (
    PHONE_TURN_STATES,
    TRANSITIONS,
    TURN,
    CAPFSession,
    PhoneSession,
    Role,
    State,
)

SID = 0x1A2B3C4D
NAME = "SEP74A02FC0A675"
VECTORS = Path(__file__).parents[1] / "vectors" / "devproto"


def read_hex(name: str) -> bytes:
    text = (VECTORS / f"{name}.hex").read_text()
    return bytes.fromhex("".join(line for line in text.splitlines() if not line.startswith("#")))


# One v3 message per command, from the vectors (all carry session id SID).
V3_VECTORS = {
    Command.AUTH_REQUEST: "01_auth_request_no_nonce", Command.AUTH_RESPONSE: "02_auth_response_password_v3",
    Command.KEY_GEN_REQUEST: "03_key_gen_request_ec_p384", Command.KEY_GEN_RESPONSE: "04_key_gen_response",
    Command.STORE_CERT_REQUEST: "09_store_cert_request", Command.STORE_CERT_RESPONSE: "10_store_cert_response",
    Command.FETCH_CERT_REQUEST: "11_fetch_cert_request_all", Command.FETCH_CERT_RESPONSE: "12_fetch_cert_response",
    Command.DELETE_CERT_REQUEST: "13_delete_cert_request", Command.DELETE_CERT_RESPONSE: "14_delete_cert_response",
    Command.END_SESSION: "15_end_session_ok", Command.RETRY_LATER: "16_retry_later",
    Command.REQUEST_IN_PROGRESS: "17_request_in_progress", Command.STATUS_ENQUIRY: "18_status_enquiry",
    Command.STATUS_RESPONSE: "19_status_response", Command.ABORT_REQUEST: "20_abort_request",
    Command.ABORT_RESPONSE: "21_abort_response", Command.SIGN_CERT_REQUEST: "22_sign_cert_request_v3",
    Command.SIGN_CERT_RESPONSE: "23_sign_cert_response_v3",
}
WIRE = {cmd: read_hex(name) for cmd, name in V3_VECTORS.items()}
MSG = {cmd: m.from_bytes(wire) for cmd, wire in WIRE.items()}
CERT_DER = MSG[Command.STORE_CERT_REQUEST].certificate.der
SPKI = MSG[Command.KEY_GEN_RESPONSE].public_key
INFO = MSG[Command.SIGN_CERT_REQUEST].tbs_data
SIG = MSG[Command.SIGN_CERT_RESPONSE].signature


@pytest.fixture(scope="module")
def rsa_key():
    return pki.generate_key("rsa", 2048)


def pair(capf_version: int = 3, phone_version: int = 3) -> tuple[CAPFSession, PhoneSession]:
    return CAPFSession(session_id=SID, version=capf_version), PhoneSession(device_name=NAME, max_version=phone_version)


def pump(src, dst) -> list[m.Message]:
    return dst.receive_data(src.data_to_send())


def same_state(c, p, state):
    assert c.state is p.state is state


# ------------------------------------------------------------------ scripted conversations

def _auth(c, p):
    c.start()
    pump(c, p)
    p.auth_response(password="123456")
    pump(p, c)


INSTALL = [
    lambda c, p: (c.start(), pump(c, p)),
    lambda c, p: (p.auth_response(password="123456"), pump(p, c)),
    lambda c, p: (c.request_key_gen("ec", 256), pump(c, p)),
    lambda c, p: (p.key_gen_response(SPKI), pump(p, c)),
    lambda c, p: (c.request_signature(INFO, "sha256"), pump(c, p)),
    lambda c, p: (p.sign_response(SIG), pump(p, c)),
    lambda c, p: (c.store_certificate(CERT_DER), pump(c, p)),
    lambda c, p: (p.store_response(), pump(p, c)),
    lambda c, p: (c.end(), pump(c, p)),
]
DELETE = INSTALL[:2] + [lambda c, p: (c.request_delete(), pump(c, p)),
                        lambda c, p: (p.delete_response(), pump(p, c))]
FETCH = INSTALL[:2] + [lambda c, p: (c.request_fetch(), pump(c, p))]


def at(state: State) -> tuple[CAPFSession, PhoneSession]:
    """A CAPF and a phone session that both reached ``state``."""
    for script in (INSTALL, DELETE, FETCH):
        c, p = pair()
        if c.state is state:
            return c, p
        for step in script:
            step(c, p)
            if c.state is state:
                assert p.state is state
                return c, p
    raise AssertionError(f"no script reaches {state}")


OPEN_STATES = [s for s in State if s not in (State.ABORTING, State.CLOSED)]


def test_the_table_names_every_state_and_turn():
    assert set(TURN) == set(State)
    for (state, sender, _), nxt in TRANSITIONS.items():
        assert TURN[state] is sender, (state, sender)
        assert nxt in State
    for state in OPEN_STATES:
        at(state)  # every state is reachable


# ------------------------------------------------------------------ every transition, both sides


def allowed(state: State, sender: Role, cmd: Command, judge: Role) -> bool:
    """The documented rules (docs/device-protocol.md, session.ANY_STATE_RULES), written out again."""
    return in_order(state, sender, cmd, judge) and announced(state, sender, cmd, judge)


def in_order(state: State, sender: Role, cmd: Command, judge: Role) -> bool:
    if cmd is Command.END_SESSION:
        return sender is Role.CAPF
    if cmd is Command.ABORT_REQUEST:
        return True
    if cmd in (Command.ABORT_RESPONSE, Command.STATUS_RESPONSE):
        return False  # no abort and no enquiry outstanding in these snapshots
    if cmd is Command.STATUS_ENQUIRY and sender is Role.CAPF:
        return state in PHONE_TURN_STATES or judge is Role.PHONE
    return (state, sender, cmd) in TRANSITIONS


def announced(state: State, sender: Role, cmd: Command, judge: Role) -> bool:
    """CAPF's own machine sends no extension before the phone's AUTH_RESPONSE announced it (the
    phones of these snapshots announce every extension); the phone checks no announcement."""
    before_auth = state in (State.START, State.AUTH_REQUESTED)
    return not (sender is judge is Role.CAPF and before_auth and m.capabilities_needed(MSG[cmd]))


@pytest.mark.parametrize("state", OPEN_STATES, ids=lambda s: s.value)
def test_every_command_in_every_state(state):
    checked = 0
    for cmd in m.MESSAGE_TYPES:
        for sender in Role:
            c, p = at(state)
            me, peer = (c, p) if sender is Role.CAPF else (p, c)
            # The sender's own machine refuses to send what is not allowed...
            if allowed(state, sender, cmd, sender):
                me.send(MSG[cmd])
            else:
                with pytest.raises(ProtocolError) as err:
                    me.send(MSG[cmd])
                expected = ("DEVPROTO_NOT_ANNOUNCED" if in_order(state, sender, cmd, sender)
                            else "DEVPROTO_INVALID_TRANSITION")
                assert err.value.code == expected, err.value
                assert me.state is state and me.data_to_send() == b""
            # ...and the receiver refuses it on the wire, leaving its state unchanged.
            if allowed(state, sender, cmd, peer.role):
                peer.receive_data(WIRE[cmd])
            else:
                with pytest.raises(ProtocolError) as err:
                    peer.receive_data(WIRE[cmd])
                assert err.value.code == "DEVPROTO_INVALID_TRANSITION", err.value
                assert peer.state is state
                peer_end = c if peer is c else None
                if peer_end is not None:  # CAPF can always end after a peer's error
                    peer_end.decline(Reason.PROTOCOL_ERROR)
                    assert peer_end.closed
            checked += 1
    assert checked == 2 * len(m.MESSAGE_TYPES)


def test_closed_session_sends_nothing_and_ignores_what_arrives():
    c, p = at(State.STORE_CONFIRMED)
    c.end()
    pump(c, p)
    same_state(c, p, State.CLOSED)
    for session in (c, p):
        with pytest.raises(ProtocolError) as err:
            session.send(m.RequestInProgress())
        assert err.value.code == "DEVPROTO_SESSION_CLOSED"
    assert c.receive_data(WIRE[Command.STORE_CERT_RESPONSE]) == []
    assert p.receive_data(b"garbage after the end") == []


# ------------------------------------------------------------------ flows with real keys


def test_install_v3_ec_with_online_ca_signing():
    c, p = pair()
    assert c.our_turn and not p.our_turn
    c.start()
    [req] = pump(c, p)
    # The hello is VERSION alone; the phone announces what it understands.
    assert isinstance(req, m.AuthRequest) and req.version == 3 and req.nonce is None and req.auth_type is None
    assert p.session_id == SID
    p.auth_response(password="123456")
    [resp] = pump(p, c)
    assert resp.auth_password == "123456" and c.device_name == NAME and c.version == 3
    assert c.announced == m.ALL_CAPABILITIES and not c.public
    c.request_key_gen("ec", 384)
    [kg] = pump(c, p)
    device_key = pki.generate_key(*kg.key_spec)  # on the phone; never leaves it
    p.in_progress()
    p.key_gen_response(pki.public_key_der(device_key))
    events = pump(p, c)
    assert [type(e) for e in events] == [m.RequestInProgress, m.KeyGenResponse]
    public_key = pki.load_public_key(c.public_key)
    info = tbs.csr_info_der(f"CN={c.device_name},O=lab", public_key, sans=[f"{NAME.lower()}.lab"])
    c.request_signature(info, "sha384")
    [sr] = pump(c, p)
    assert sr.digest_type is m.DigestType.SHA384
    # The phone checks it signs a request for its own key, then signs it.
    assert pki.same_public_key(tbs.csr_info_public_key(sr.tbs_data), device_key)
    p.sign_response(tbs.sign_csr_info(device_key, sr.tbs_data, sr.effective_digest.hash_name))
    pump(p, c)
    assert c.state is State.SIGNATURE_RECEIVED and c.our_turn
    csr = tbs.assemble_csr(c.sign_request.tbs_data, c.signature, public_key, c.sign_request.effective_digest.hash_name)
    assert pki.common_name(csr.subject) == NAME and csr.is_signature_valid
    c.keepalive()  # while the RA enrolls
    assert isinstance(pump(c, p)[0], m.RequestInProgress)
    c.store_certificate(CERT_DER)
    [store] = pump(c, p)
    assert store.certificate.cert_type is m.CertificateType.LSC
    p.store_response(Reason.OK)
    [ok] = pump(p, c)
    assert ok.reason is Reason.OK
    same_state(c, p, State.STORE_CONFIRMED)
    c.end(Reason.OK)
    [end] = pump(c, p)
    assert end.reason is Reason.OK and p.end_reason is Reason.OK
    same_state(c, p, State.CLOSED)


def test_install_with_a_version_2_phone(rsa_key):
    c, p = pair(capf_version=3, phone_version=2)
    c.start()
    pump(c, p)
    assert p.version == 2
    p.auth_response()  # By Null String
    [resp] = pump(p, c)
    assert resp.version == 2 and c.version == 2 and resp.auth_password is None
    for bad in (lambda: c.request_key_gen("ec", 256), lambda: c.request_signature(INFO, "sha384")):
        with pytest.raises(ProtocolError) as err:
            bad()
        assert err.value.code == "DEVPROTO_VERSION"
        assert c.state is State.AUTH_RECEIVED and c.data_to_send() == b""
    c.request_key_gen("rsa", 2048)
    [kg] = pump(c, p)
    assert kg.key_type is m.KeyType.RSA and kg.key_spec == ("rsa", 2048)  # KEY_TYPE always (public clients need it)
    p.key_gen_response(pki.public_key_der(rsa_key))
    pump(p, c)
    info = tbs.csr_info_der(f"CN={NAME}", pki.load_public_key(c.public_key))
    c.request_signature(info)
    [sr] = pump(c, p)
    assert sr.digest_type is None and sr.effective_digest is m.DigestType.SHA256
    p.sign_response(tbs.sign_csr_info(rsa_key, sr.tbs_data, "sha256"))
    [resp] = pump(p, c)
    assert resp.signed_data is not None and resp.signed_data_sha2 is None
    assert tbs.assemble_csr(info, c.signature, rsa_key.public_key(), "sha256").is_signature_valid


def test_version_3_elements_from_a_version_2_phone_are_refused():
    c, p = pair()
    c.start()
    pump(c, p)
    # A phone that announces 2 but signs with SIGNED_DATA_SHA2 contradicts itself.
    bad = m.to_bytes(m.AuthResponse(session_id=SID, version=2, device_name=NAME,
                                    certificate=MSG[Command.STORE_CERT_REQUEST].certificate,
                                    signed_data_sha2=b"sig", digest_type=m.DigestType.SHA256))
    with pytest.raises(ProtocolError) as err:
        c.receive_data(bad)
    assert err.value.code == "DEVPROTO_VERSION" and c.state is State.AUTH_REQUESTED


@pytest.mark.parametrize("version", [1, 4])
def test_capf_refuses_a_phone_version_it_did_not_offer(version):
    c, p = pair()
    c.start()
    pump(c, p)
    with pytest.raises(ProtocolError) as err:
        c.receive_data(m.to_bytes(m.AuthResponse(session_id=SID, version=version, device_name=NAME)))
    assert err.value.code == "DEVPROTO_VERSION" and c.state is State.AUTH_REQUESTED
    c.decline(Reason.UNSUPPORTED)  # nothing announced: the phone hears the public decline
    assert c.closed and m.from_bytes(c.data_to_send()).reason is Reason.OPERATION_REFUSED


def test_version_2_capf_and_old_capf_offers():
    c, p = pair(capf_version=2, phone_version=3)
    c.start()
    [req] = pump(c, p)
    assert req.version == 2 and p.version == 2
    p2 = PhoneSession(device_name=NAME)
    with pytest.raises(ProtocolError) as err:
        p2.receive_data(m.to_bytes(m.AuthRequest(session_id=SID, version=1)))
    assert err.value.code == "DEVPROTO_VERSION"
    with pytest.raises(ValueError):
        CAPFSession(version=4)
    with pytest.raises(ValueError):
        PhoneSession(device_name=NAME, max_version=1)


def test_auth_by_existing_certificate_and_no_replay():
    lsc_key = pki.generate_key("ec", 256)
    lsc = pki.build_certificate(subject=f"CN={NAME}", public_key=lsc_key.public_key(), issuer_key=lsc_key)
    cert_value = m.CertificateValue(m.CertificateType.LSC, pki.cert_der(lsc))

    def session(session_id):
        c, p = CAPFSession(session_id=session_id), PhoneSession(device_name=NAME)
        c.start()
        pump(c, p)
        p.auth_response(certificate=cert_value)  # no nonce yet: the certificate, unsigned
        pump(p, c)
        c.challenge(m.AuthType.EXISTING_CERT_LSC_FIRST)
        [req] = pump(c, p)
        assert req.auth_type is m.AuthType.EXISTING_CERT_LSC_FIRST and len(req.nonce) == 32
        return c, p

    c, p = session(1)
    signature = tbs.sign_data(lsc_key, p.auth_payload(), "sha256")
    p.auth_response(certificate=cert_value, signature=signature)
    [resp] = pump(p, c)
    assert resp.signed_data_sha2 == signature and resp.digest_type is m.DigestType.SHA256
    tbs.verify_data_signature(resp.certificate.certificate().public_key(), c.auth_payload(), resp.signature,
                              resp.digest_type.hash_name)
    # The same AUTH_RESPONSE replayed into another session (new id and nonce) does not verify.
    c2, _ = session(2)
    c2.receive_data(m.to_bytes(m.AuthResponse(**{**resp.__dict__, "session_id": 2})))
    with pytest.raises(ParseError):
        tbs.verify_data_signature(lsc.public_key(), c2.auth_payload(), resp.signature, "sha256")


def test_no_nonce_means_no_certificate_auth():
    p = PhoneSession(device_name=NAME)
    p.receive_data(m.to_bytes(m.AuthRequest(session_id=SID)))
    with pytest.raises(ProtocolError):
        p.auth_payload()
    c = CAPFSession()
    with pytest.raises(ProtocolError):
        c.auth_payload()


def test_rechallenge_for_another_auth_type_once():
    c, p = pair()
    c.start()
    pump(c, p)
    assert c.nonce is None
    p.auth_response()  # the phone tried the null string; this device needs its auth string
    pump(p, c)
    c.challenge(m.AuthType.PASSWORD)
    [again] = pump(c, p)
    assert again.auth_type is m.AuthType.PASSWORD and again.nonce is not None and p.nonce == again.nonce
    p.auth_response(password="654321")
    [resp] = pump(p, c)
    assert resp.auth_password == "654321"
    with pytest.raises(ProtocolError) as err:
        c.challenge(m.AuthType.PASSWORD)
    assert err.value.code == "DEVPROTO_TOO_MANY_REQUESTS"
    c.end(Reason.OPERATION_REFUSED, "Invalid Authentication String")
    [end] = pump(c, p)
    assert end.reason_info == "Invalid Authentication String" and p.closed


def test_ec_preferred_rsa_backup_and_key_gen_limit(rsa_key):
    c, p = at(State.AUTH_RECEIVED)
    c.request_key_gen("ec", 521)
    pump(c, p)
    p.key_gen_failed(Reason.KEY_GEN_FAILED, "EC not supported")
    [failed] = pump(p, c)
    assert failed.reason is Reason.KEY_GEN_FAILED and c.public_key is None and c.state is State.KEY_RECEIVED
    c.request_key_gen("rsa", 2048)
    [kg] = pump(c, p)
    assert kg.key_type is m.KeyType.RSA and kg.key_size == 2048
    p.key_gen_failed(Reason.KEY_GEN_TIMEOUT)
    pump(p, c)
    c.request_key_gen("rsa", 2048)
    pump(c, p)
    p.key_gen_response(pki.public_key_der(rsa_key))
    pump(p, c)
    with pytest.raises(ProtocolError) as err:
        c.request_key_gen("rsa", 2048)
    assert err.value.code == "DEVPROTO_TOO_MANY_REQUESTS"
    with pytest.raises(ProtocolError):
        c.request_key_gen("ec", 192)
    with pytest.raises(ValueError):
        c.request_key_gen("dsa", 2048)


def test_redelivery_of_a_stored_certificate_needs_no_key_generation():
    c, p = at(State.AUTH_RECEIVED)
    c.store_certificate(CERT_DER)
    [store] = pump(c, p)
    assert store.certificate.der == CERT_DER
    p.store_response(Reason.OK)
    pump(p, c)
    c.end()
    pump(c, p)
    same_state(c, p, State.CLOSED)


def test_phone_cannot_store_reports_failure():
    c, p = at(State.STORE_REQUESTED)
    p.store_response(Reason.STORE_FAILED, "flash full")
    [resp] = pump(p, c)
    assert resp.reason is Reason.STORE_FAILED and c.state is State.STORE_CONFIRMED


def test_delete_flow():
    c, p = at(State.AUTH_RECEIVED)
    c.request_delete()
    [req] = pump(c, p)
    assert req.certificate_type is None  # no element: the public form (absent means the LSC)
    p.delete_response(Reason.NO_CERTIFICATE)
    [resp] = pump(p, c)
    assert resp.reason is Reason.NO_CERTIFICATE and c.state is State.OPERATION_DONE
    c.end(Reason.OK)
    pump(c, p)
    same_state(c, p, State.CLOSED)


def test_fetch_flow():
    c, p = at(State.AUTH_RECEIVED)
    c.request_fetch()
    pump(c, p)
    certs = MSG[Command.FETCH_CERT_RESPONSE].certificates
    p.fetch_response(certs)
    [resp] = pump(p, c)
    assert [v.cert_type for v in resp.certificates] == [m.CertificateType.LSC, m.CertificateType.MIC]
    c.end()
    pump(c, p)
    assert p.closed


@pytest.mark.parametrize("state", [State.AUTH_RECEIVED, State.KEY_RECEIVED, State.SIGNATURE_RECEIVED])
def test_retry_later_ends_the_session(state):
    c, p = at(state)
    c.retry_later(600, info="CA Communication Failure")
    [rl] = pump(c, p)
    assert rl.retry_delay == 600
    same_state(c, p, State.CLOSED)
    assert p.retry_delay == 600 and p.end_reason is Reason.CA_UNAVAILABLE


@pytest.mark.parametrize("state", [State.START, State.AUTH_REQUESTED, State.KEY_GEN_REQUESTED,
                                   State.SIGN_REQUESTED, State.STORE_REQUESTED])
def test_retry_later_is_refused_where_capf_must_wait_or_has_not_authenticated(state):
    c, _ = at(state)
    with pytest.raises(ProtocolError):
        c.retry_later(60)


def test_keepalives_both_ways():
    c, p = at(State.KEY_GEN_REQUESTED)
    for _ in range(5):
        p.in_progress()
    assert len(pump(p, c)) == 5 and c.state is State.KEY_GEN_REQUESTED
    c, p = at(State.SIGN_REQUESTED)
    p.in_progress()
    pump(p, c)
    c, p = at(State.SIGNATURE_RECEIVED)
    for _ in range(3):
        c.keepalive()
    assert [type(e) for e in pump(c, p)] == [m.RequestInProgress] * 3 and p.state is State.SIGNATURE_RECEIVED
    with pytest.raises(ProtocolError):
        p.in_progress()  # the phone has nothing in progress here


def test_status_enquiry_is_answered_automatically():
    c, p = at(State.KEY_GEN_REQUESTED)
    c.status_enquiry()
    with pytest.raises(ProtocolError):
        c.status_enquiry()  # one outstanding at a time
    [enq] = pump(c, p)
    assert isinstance(enq, m.StatusEnquiry)
    [status] = pump(p, c)
    assert status.reason is Reason.OK and status.reason_info == "KEY_GEN_REQUESTED"
    assert not c.status_enquiry_pending and c.state is State.KEY_GEN_REQUESTED
    c.status_enquiry()  # a new one is fine again
    pump(c, p)
    pump(p, c)


def test_status_enquiry_crossing_the_phone_s_answer():
    c, p = at(State.KEY_GEN_REQUESTED)
    c.status_enquiry()
    p.key_gen_response(SPKI)  # sent before the phone sees the enquiry
    pump(p, c)
    assert c.state is State.KEY_RECEIVED and c.status_enquiry_pending
    pump(c, p)  # the phone answers although it already moved on
    [status] = pump(p, c)
    assert isinstance(status, m.StatusResponse) and not c.status_enquiry_pending
    c.request_signature(INFO)
    assert isinstance(pump(c, p)[0], m.SignCertRequest)


def test_unsolicited_status_response_is_refused():
    c, _ = at(State.KEY_GEN_REQUESTED)
    with pytest.raises(ProtocolError):
        c.receive_data(WIRE[Command.STATUS_RESPONSE])


@pytest.mark.parametrize("aborter", [Role.CAPF, Role.PHONE])
def test_abort_from_either_side(aborter):
    c, p = at(State.KEY_GEN_REQUESTED)
    me, peer = (c, p) if aborter is Role.CAPF else (p, c)
    me.abort(Reason.ABORTED, "user cancelled")
    assert me.state is State.ABORTING
    with pytest.raises(ProtocolError):
        me.send(m.RequestInProgress())  # nothing but waiting for ABORT_RESPONSE (or CAPF's END_SESSION)
    [req] = pump(me, peer)
    assert req.reason_info == "user cancelled" and peer.closed and peer.aborted_by is aborter
    [resp] = pump(peer, me)
    assert isinstance(resp, m.AbortResponse) and me.closed and me.end_reason is Reason.ABORTED


def test_crossed_aborts_and_messages_crossing_an_abort():
    c, p = at(State.KEY_GEN_REQUESTED)
    c.abort()
    p.abort()
    to_phone, to_capf = c.data_to_send(), p.data_to_send()
    p.receive_data(to_phone)
    c.receive_data(to_capf)
    same_state(c, p, State.CLOSED)
    assert c.data_to_send() == b"" and p.data_to_send() == b""
    # The phone's KEY_GEN_RESPONSE crosses CAPF's ABORT_REQUEST: ignored, then the abort completes.
    c, p = at(State.KEY_GEN_REQUESTED)
    c.abort()
    p.key_gen_response(SPKI)
    pump(p, c)
    assert c.state is State.ABORTING and c.public_key is None
    pump(c, p)
    pump(p, c)
    same_state(c, p, State.CLOSED)


def test_capf_may_end_while_aborting():
    c, _p = at(State.SIGN_REQUESTED)
    c.abort()
    c.end(Reason.ABORTED)
    assert c.closed


def test_session_id_is_enforced():
    c, p = at(State.KEY_GEN_REQUESTED)
    other = m.to_bytes(m.KeyGenResponse(session_id=SID + 1, public_key=SPKI))
    with pytest.raises(ProtocolError) as err:
        c.receive_data(other)
    assert err.value.code == "DEVPROTO_SESSION_ID"
    with pytest.raises(ProtocolError):
        p.receive_data(m.to_bytes(m.EndSession(session_id=7)))
    # Whatever id the application writes, a session sends its own.
    p.send(m.KeyGenResponse(session_id=99, public_key=SPKI))
    assert m.from_bytes(p.data_to_send()).session_id == SID


def test_random_session_ids_and_nonces():
    a, b = CAPFSession(), CAPFSession()
    assert a.session_id != b.session_id and 0 < a.session_id <= 0xFFFFFFFF
    (a, _), (b, _) = at(State.AUTH_RECEIVED), at(State.AUTH_RECEIVED)
    a.challenge()
    b.challenge()
    assert a.nonce != b.nonce and len(a.nonce) == 32


def test_garbage_from_the_peer_and_partial_frames():
    c, p = at(State.AUTH_REQUESTED)
    p.auth_response(password="1234")
    wire = p.data_to_send()
    assert c.receive_data(wire[:5]) == [] and c.state is State.AUTH_REQUESTED
    assert len(c.receive_data(wire[5:])) == 1
    with pytest.raises(ProtocolError) as err:
        c.receive_data(b"\x16\x03\x01\x00\x10junkjunkjunk")
    assert err.value.code == "DEVPROTO_BAD_PROTOCOL_ID"
    c.end(Reason.PROTOCOL_ERROR)
    assert c.closed and m.from_bytes(c.data_to_send()).reason is Reason.PROTOCOL_ERROR


def test_unsupported_commands_are_refused_by_the_session():
    c, _ = at(State.KEY_RECEIVED)
    with pytest.raises(ProtocolError) as err:
        c.receive_data(bytes.fromhex("55051a2b3c4d0000"))  # ENCRYPT_RESPONSE
    assert err.value.code == "DEVPROTO_UNSUPPORTED_COMMAND"


def test_own_mistakes_say_so():
    c, _ = at(State.START)
    with pytest.raises(ProtocolError) as err:
        c.store_certificate(CERT_DER)
    assert "bug" in err.value.hint


def test_the_spec_table_is_the_code_table():
    doc = (Path(__file__).parents[2] / "docs" / "device-protocol.md").read_text()
    section = doc.split("## State machine", 1)[1].split("Rules for every open state", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in State.__members__:
            rows.add((State[cells[0]], Role.CAPF if cells[1] == "CAPF" else Role.PHONE, Command[cells[2]],
                      State[cells[3]]))
    assert rows == {(s, r, c, n) for (s, r, c), n in TRANSITIONS.items()}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(Role)), st.sampled_from(list(m.MESSAGE_TYPES)),
                          st.integers(1, 40)), max_size=25))
def test_any_sequence_only_raises_protocol_error(moves):
    """Random conversations: each side either accepts a message or raises ProtocolError, and after
    a refusal CAPF can always end the session."""
    c, p = pair()
    for sender, cmd, split in moves:
        receiver = p if sender is Role.CAPF else c
        wire = WIRE[cmd]
        try:
            for i in range(0, len(wire), split):
                receiver.receive_data(wire[i:i + split])
        except ProtocolError:
            if receiver is c and not c.closed:
                c.decline(Reason.PROTOCOL_ERROR)
                assert c.closed
            break
        receiver.data_to_send()
