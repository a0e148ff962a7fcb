"""How the public-flow vectors in this folder were made (run once, by hand; tests never run it).

Every frame of a public-flow session as the wire notes (../../../../shared/capf-wire-notes.md,
"Frame-level facts of the public flow") give it: the bytes are put together here by hand, with
``struct``, not by onlineca's encoder, so the vectors check the encoder instead of repeating it.
NAME.hex holds the frame with '#' comment lines; NAME.json the message ``message_fields`` decodes
(the one use of onlineca here).  The key and certificate were random when the script ran.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).parent
SID = 0x1A2B3C4D
NAMES = {1: "AUTH_REQUEST", 2: "AUTH_RESPONSE", 3: "KEY_GEN_REQUEST", 4: "KEY_GEN_RESPONSE", 9: "STORE_CERT_REQUEST",
         10: "STORE_CERT_RESPONSE", 11: "FETCH_CERT_REQUEST", 12: "FETCH_CERT_RESPONSE", 13: "DELETE_CERT_REQUEST",
         14: "DELETE_CERT_RESPONSE", 15: "END_SESSION", 17: "REQUEST_IN_PROGRESS"}
TAGS = {1: "REASON", 3: "CERTIFICATE_TYPE", 4: "CERTIFICATE", 7: "VERSION", 8: "AUTH_TYPE", 9: "PUBLIC_KEY",
        10: "KEY_SIZE", 11: "AUTH_PASSWORD", 13: "DEVICE_NAME", 17: "KEY_TYPE", 66: "CAPABILITIES"}


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">BH", tag, len(value)) + value


def frame(command: int, *elements: bytes) -> bytes:
    body = b"".join(elements)
    return struct.pack(">BBIH", 0x55, command, SID, len(body)) + body


def write(name: str, command: int, elements: list[bytes], note: str) -> None:
    wire = frame(command, *elements)
    lines = [f"# {name}: {NAMES[command]} ({command}): {note}",
             f"# header: protocol_id 55 | command {command:02x} | session_id {SID:08x} | length {len(wire) - 8:04x}",
             wire[:8].hex()]
    for el in elements:
        tag, length = struct.unpack(">BH", el[:3])
        lines.append(f"# element {TAGS.get(tag, tag)} ({tag}), {length} bytes")
        lines += [el[i:i + 32].hex() for i in range(0, len(el), 32)]
    (HERE / f"{name}.hex").write_text("\n".join(lines) + "\n")
    from onlineca.proto.devproto import messages as m  # only to write what the decoder makes of it
    (HERE / f"{name}.json").write_text(json.dumps(m.message_fields(m.from_bytes(wire)), indent=1) + "\n")


def main() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SEP74A02FC0A675")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x10C4F).not_valid_before(__import__("datetime").datetime(2026, 1, 1))
            .not_valid_after(__import__("datetime").datetime(2027, 1, 1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("SEP74A02FC0A675")]), False)
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    nested = tlv(1, b"\x00\x01" + der)  # {01}[L] 00 01 DER
    small_spki = small.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    vectors = [
        ("01_public_hello", 1, [tlv(7, b"\x03")], "CAPF's first message, VERSION 3 and nothing else"),
        ("01_public_server_hello_auth_type", 1, [tlv(7, b"\x03"), tlv(8, b"\x00")],
         "what a public server sends (we never add AUTH_TYPE: some clients refuse it)"),
        ("02_public_auth_response", 2, [tlv(7, b"\x02"), tlv(13, b"CSF123\x00"), tlv(1, b"\x01")],
         "the notes' frame: VERSION 2, NUL-terminated DEVICE_NAME, status 1"),
        ("02_public_auth_response_auth_string", 2,
         [tlv(7, b"\x02"), tlv(13, b"SEP74A02FC0A675\x00"), tlv(11, b"123456\x00"), tlv(1, b"\x01")],
         "an auth string, NUL-terminated the same way"),
        ("02_public_auth_response_null_password", 2,
         [tlv(7, b"\x03"), tlv(13, b"SEP74A02FC0A675\x00"), tlv(11, b"\x00"), tlv(1, b"\x01")],
         "a client that always sends AUTH_PASSWORD: just 00 in null-string mode; VERSION 3"),
        ("02_auth_response_capabilities", 2,
         [tlv(7, b"\x03"), tlv(13, b"SEP74A02FC0A675\x00"), tlv(66, b"\x00\x00\x00\x7f")],
         "an onlineca phone announcing every extension (CAPABILITIES 0x7f)"),
        ("03_public_key_gen_request", 3, [tlv(10, b"\x08\x00"), tlv(17, b"\x00")],
         "KEY_SIZE 2048 and KEY_TYPE RSA, as CAPF sends it"),
        ("03_public_key_gen_request_rsa1024", 3, [tlv(10, b"\x04\x00"), tlv(17, b"\x00")], "KEY_SIZE 1024, KEY_TYPE RSA"),
        ("03_public_key_gen_request_size_only", 3, [tlv(10, b"\x08\x00")],
         "the notes' minimal form, KEY_SIZE alone (accepted; CAPF adds KEY_TYPE)"),
        ("04_public_key_gen_response", 4, [tlv(9, spki)], "the phone's new public key, a plain SPKI (RSA 2048)"),
        ("04_public_key_gen_response_rsa1024", 4, [tlv(9, small_spki)], "an RSA 1024 SPKI"),
        ("09_public_store_cert_request", 9, [tlv(3, b"\x01"), tlv(4, nested)],
         "CERTIFICATE_TYPE LSC and the nested CERTIFICATE {01}[L] 00 01 DER"),
        ("10_public_store_cert_response", 10, [tlv(1, b"\x01")], "stored (OK)"),
        ("11_public_fetch_cert_request", 11, [], "fetch, no elements"),
        ("12_public_fetch_cert_response", 12, [tlv(1, b"\x01"), tlv(4, nested)], "the LSC, nested"),
        ("13_public_delete_cert_request", 13, [], "delete, no elements"),
        ("14_public_delete_cert_response", 14, [tlv(1, b"\x01")], "deleted (OK)"),
        ("15_public_end_session_ok", 15, [tlv(1, b"\x01")], "the end of a successful session"),
        ("15_public_end_session_declined", 15, [tlv(1, b"\x07")],
         "the decline: nothing pending, already issued, wrong auth string, any failure"),
        ("15_public_end_session_unknown_device", 15, [tlv(1, b"\x09")], "no such device"),
        ("17_public_request_in_progress", 17, [], "sent once by the phone before its KEY_GEN_RESPONSE"),
    ]
    for name_, command, elements, note in vectors:
        write(name_, command, elements, note)


if __name__ == "__main__":
    main()
