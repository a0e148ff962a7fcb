"""Device-protocol messages: the byte-level vectors (one or more per command), round trips,
element rules, the version-2/3 differences, and the signed payload of certificate auth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onlineca import pki
from onlineca.errors import ParseError, ProtocolError
from onlineca.pki import tbs
from onlineca.proto.devproto import messages as m
from onlineca.proto.devproto.codec import Element, Frame, encode_frame

VECTORS = Path(__file__).parents[1] / "vectors" / "devproto"
VECTOR_NAMES = sorted(p.stem for p in VECTORS.glob("*.hex"))
SID = 0x1A2B3C4D


def read_hex(name: str) -> bytes:
    text = (VECTORS / f"{name}.hex").read_text()
    return bytes.fromhex("".join(line for line in text.splitlines() if not line.startswith("#")))


def vector(name: str) -> m.Message:
    return m.from_bytes(read_hex(name))


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_decodes_to_the_expected_form_and_encodes_back(name):
    wire = read_hex(name)
    assert wire[0] == 0x55 and int.from_bytes(wire[2:6], "big") == SID
    assert int.from_bytes(wire[6:8], "big") == len(wire) - 8
    msg = m.from_bytes(wire)
    assert m.message_fields(msg) == json.loads((VECTORS / f"{name}.json").read_text())
    assert m.to_bytes(msg) == wire
    assert int(msg.COMMAND) == wire[1] == int(name[:2])


def test_every_command_we_use_has_a_vector():
    covered = {vector(n).COMMAND for n in VECTOR_NAMES}
    assert covered == set(m.MESSAGE_TYPES)
    assert set(m.Command) == set(m.MESSAGE_TYPES) | m.UNSUPPORTED_COMMANDS


def test_a_hand_read_vector():
    # KEY_GEN_REQUEST, EC P-384: KEY_TYPE (17) = 1, EC_CURVE (18) = 1.
    assert read_hex("03_key_gen_request_ec_p384") == bytes.fromhex("55031a2b3c4d0008" "11000101" "12000101")
    msg = vector("03_key_gen_request_ec_p384")
    assert msg.key_spec == ("ec", 384)
    assert vector("03_key_gen_request_rsa_v2").key_spec == ("rsa", 2048)


def test_certificate_element_has_the_two_byte_prefix():
    wire = read_hex("09_store_cert_request")
    cert = vector("09_store_cert_request").certificate
    assert wire[8:12] == bytes([3, 0, 1, 1])  # CERTIFICATE_TYPE = LSC
    assert wire[12] == 4 and wire[15:17] == b"\x00\x01" and wire[17:] == cert.der
    assert pki.common_name(cert.certificate().subject) == "SEP74A02FC0A675"


def test_decoded_certificates_and_keys_keep_what_the_decoder_parsed():
    """The decoder parses a CERTIFICATE and a PUBLIC_KEY to check them; it keeps the objects, so
    the server and the phone never parse the same bytes a second time."""
    value = vector("09_store_cert_request").certificate
    assert value.parsed is not None and value.certificate() is value.parsed
    assert value == m.CertificateValue(value.cert_type, value.der)  # the cache is not part of the value
    spki = vector("04_key_gen_response").public_key
    assert isinstance(spki, m.PublicKeyDER) and spki == bytes(spki)
    assert pki.public_key_der(spki.key) == spki
    made = m.CertificateValue(value.cert_type, value.der)  # built, not decoded: parsed at first use
    assert made.parsed is None and made.certificate() == value.parsed and made.parsed is not None


def test_lsc_auth_vector_signature_verifies_over_the_documented_payload():
    msg = vector("02_auth_response_lsc_v3")
    payload = m.auth_signed_payload(SID, bytes(range(32)), msg.device_name)
    key = msg.certificate.certificate().public_key()
    tbs.verify_data_signature(key, payload, msg.signature, msg.effective_digest.hash_name)
    assert vector("02_auth_response_mic_v2").effective_digest is m.DigestType.SHA256
    # Another session, nonce or device name: the same signature no longer verifies (no replay).
    for other in (m.auth_signed_payload(SID + 1, bytes(range(32)), msg.device_name),
                  m.auth_signed_payload(SID, bytes(32), msg.device_name),
                  m.auth_signed_payload(SID, bytes(range(32)), "SEP000000000000")):
        with pytest.raises(ParseError, match="does not verify"):
            tbs.verify_data_signature(key, other, msg.signature, "sha256")


def test_sign_vector_assembles_a_valid_csr():
    req, resp = vector("22_sign_cert_request_v3"), vector("23_sign_cert_response_v3")
    spki = vector("04_key_gen_response").public_key
    csr = tbs.assemble_csr(req.tbs_data, resp.signature, pki.load_public_key(spki), req.effective_digest.hash_name)
    assert csr.is_signature_valid


def _frame(command, *elements):
    return Frame(int(command), SID, tuple(Element(int(t), v) for t, v in elements))


def _error(frame) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        m.decode_message(frame)
    return err.value


@pytest.mark.parametrize("command", [5, 6, 7, 8, 0, 24, 255])
def test_commands_we_do_not_use_are_refused(command):
    assert _error(Frame(command, SID)).code == m.E_UNSUPPORTED_COMMAND


def test_unknown_and_foreign_elements_are_ignored():
    frame = _frame(m.Command.END_SESSION, (1, b"\x01"), (99, b"whatever"), (m.Tag.DEVICE_NAME, b"\xff\xff"))
    assert m.decode_message(frame) == m.EndSession(session_id=SID, reason=m.Reason.OK)


def test_unknown_reason_number_is_kept():
    assert m.decode_message(_frame(m.Command.END_SESSION, (1, b"\x05"))).reason == 5


@pytest.mark.parametrize("frame,code", [
    (_frame(m.Command.END_SESSION), m.E_MISSING_ELEMENT),
    (_frame(m.Command.END_SESSION, (1, b"\x01"), (1, b"\x01")), m.E_DUPLICATE_ELEMENT),
    (_frame(m.Command.END_SESSION, (1, b"\x00\x01")), m.E_BAD_ELEMENT),
    (_frame(m.Command.END_SESSION, (1, b"\x01"), (2, b"\xff\xfe")), m.E_BAD_ELEMENT),
    (_frame(m.Command.END_SESSION, (1, b"\x01"), (2, b"line\x00break")), m.E_BAD_ELEMENT),
    (_frame(m.Command.AUTH_RESPONSE, (7, b"\x03")), m.E_MISSING_ELEMENT),
    (_frame(m.Command.AUTH_RESPONSE, (7, b"\x03"), (13, b"SEP 1")), m.E_BAD_ELEMENT),
    (_frame(m.Command.AUTH_RESPONSE, (7, b"\x03"), (13, b"x" * 65)), m.E_BAD_ELEMENT),
    (_frame(m.Command.AUTH_RESPONSE, (7, b"\x03"), (13, b"SEP1"), (20, b"sig")), m.E_MISSING_ELEMENT),
    (_frame(m.Command.AUTH_RESPONSE, (7, b"\x03"), (13, b"SEP1"), (11, "é".encode())), m.E_BAD_ELEMENT),
    (_frame(m.Command.AUTH_REQUEST, (7, b"\x03"), (8, b"\x09")), m.E_BAD_ELEMENT),
    (_frame(m.Command.AUTH_REQUEST, (7, b"\x03"), (64, b"short")), m.E_BAD_ELEMENT),
    (_frame(m.Command.KEY_GEN_REQUEST, (17, b"\x01")), m.E_MISSING_ELEMENT),
    (_frame(m.Command.KEY_GEN_REQUEST, (17, b"\x00")), m.E_MISSING_ELEMENT),
    (_frame(m.Command.KEY_GEN_REQUEST, (17, b"\x02"), (10, b"\x08\x00")), m.E_BAD_ELEMENT),
    (_frame(m.Command.KEY_GEN_REQUEST, (17, b"\x01"), (18, b"\x03")), m.E_BAD_ELEMENT),
    (_frame(m.Command.KEY_GEN_REQUEST, (10, b"\x08\x00"), (18, b"\x00")), m.E_BAD_ELEMENT),
    (_frame(m.Command.KEY_GEN_RESPONSE), m.E_MISSING_ELEMENT),
    (_frame(m.Command.KEY_GEN_RESPONSE, (9, b"\x30\x03\x02\x01\x00")), m.E_BAD_ELEMENT),
    (_frame(m.Command.KEY_GEN_RESPONSE, (9, b"not der")), m.E_BAD_ELEMENT),
    (_frame(m.Command.STORE_CERT_REQUEST, (3, b"\x01"), (4, b"\x01\x01\x30")), m.E_BAD_ELEMENT),
    (_frame(m.Command.STORE_CERT_REQUEST, (3, b"\x01"), (4, b"\x00\x07\x30\x00")), m.E_BAD_ELEMENT),
    (_frame(m.Command.STORE_CERT_REQUEST, (3, b"\x01"), (4, b"\x00\x01\x30\x00")), m.E_BAD_ELEMENT),
    (_frame(m.Command.SIGN_CERT_REQUEST, (65, b"\x04\x00")), m.E_BAD_ELEMENT),
    (_frame(m.Command.SIGN_CERT_REQUEST, (65, b"\x30\x00"), (19, b"\x00")), m.E_BAD_ELEMENT),  # SHA-1: never
    (_frame(m.Command.SIGN_CERT_RESPONSE), m.E_MISSING_ELEMENT),
    (_frame(m.Command.SIGN_CERT_RESPONSE, (6, b"a"), (20, b"b")), m.E_BAD_ELEMENT),
    (_frame(m.Command.RETRY_LATER, (12, b"\x00\x01")), m.E_BAD_ELEMENT),
])
def test_bad_elements(frame, code):
    err = _error(frame)
    assert err.code == code, err


def test_store_request_types_must_agree():
    lsc = vector("09_store_cert_request").certificate
    with pytest.raises(ProtocolError):
        m.StoreCertRequest(certificate_type=m.CertificateType.MIC, certificate=lsc)


def test_encode_refuses_bad_values():
    with pytest.raises(ProtocolError):
        m.to_bytes(m.RetryLater(retry_delay=-1))
    with pytest.raises(ProtocolError):
        m.to_bytes(m.AuthResponse(version=3, device_name="has space"))
    with pytest.raises(ProtocolError):
        m.to_bytes(m.EndSession(reason_info="x" * 2000))


def test_failure_responses_need_no_payload():
    assert m.from_bytes(read_hex("04_key_gen_response_failed")).public_key is None
    failed = m.from_bytes(m.to_bytes(m.SignCertResponse(reason=m.Reason.SIGN_FAILED)))
    assert failed.signature is None


# ------------------------------------------------------------------ versions


@pytest.mark.parametrize("name", ["02_auth_response_null_v2", "02_auth_response_mic_v2", "03_key_gen_request_rsa_v2",
                                  "22_sign_cert_request_v2", "23_sign_cert_response_v2", "03_key_gen_request_rsa_v3"])
def test_version_2_messages(name):
    m.check_version(vector(name), 2)


@pytest.mark.parametrize("name", ["03_key_gen_request_ec_p384", "02_auth_response_lsc_v3", "22_sign_cert_request_v3",
                                  "23_sign_cert_response_v3"])
def test_version_3_only_messages_are_refused_in_version_2(name):
    m.check_version(vector(name), 3)
    with pytest.raises(ProtocolError) as err:
        m.check_version(vector(name), 2)
    assert err.value.code == m.E_VERSION


@pytest.mark.parametrize("name", ["22_sign_cert_request_v2", "23_sign_cert_response_v2", "02_auth_response_mic_v2"])
def test_version_2_forms_are_refused_in_version_3(name):
    with pytest.raises(ProtocolError) as err:
        m.check_version(vector(name), 3)
    assert err.value.code == m.E_VERSION


@pytest.mark.parametrize("version", [0, 1, 4, 255])
def test_unknown_versions(version):
    with pytest.raises(ProtocolError):
        m.check_version(vector("15_end_session_ok"), version)


def test_enum_helpers():
    assert m.ECCurve.from_bits(521) is m.ECCurve.P521 and m.ECCurve.P384.bits == 384
    assert m.DigestType.from_hash_name("sha384") is m.DigestType.SHA384
    assert m.DigestType.SHA512.hash_name == "sha512"


def test_frame_level_bytes_match_message_level():
    msg = m.EndSession(session_id=7, reason=m.Reason.DEADLINE_PASSED, reason_info="late")
    assert m.to_bytes(msg) == encode_frame(Frame(15, 7, (Element(1, bytes([68])), Element(2, b"late"))))
