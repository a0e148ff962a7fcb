"""How the device-protocol vectors in this folder were made (run once, by hand; tests never run it).

Each vector is NAME.hex (the frame, with '#' comment lines that break the bytes down as
docs/device-protocol.md describes them) and NAME.json (the decoded message as
``messages.message_fields`` gives it).  Keys, certificates and signatures were random when the
script ran; they are fixed now, which is the point: re-running it rewrites every vector.
"""

from __future__ import annotations

import json
from pathlib import Path

from onlineca import pki
from onlineca.pki import tbs
from onlineca.proto.devproto import messages as m
from onlineca.proto.devproto.codec import HEADER_SIZE, encode_frame

HERE = Path(__file__).parent
SID = 0x1A2B3C4D
NONCE = bytes(range(32))
NAME = "SEP74A02FC0A675"


def write(name: str, msg: m.Message) -> None:
    frame = m.encode_message(msg)
    wire = encode_frame(frame)
    lines = [f"# {name}: {msg.COMMAND.name} ({int(msg.COMMAND)})",
             f"# header: protocol_id 55 | command {wire[1]:02x} | session_id {wire[2:6].hex()} | length {wire[6:8].hex()}",
             wire[:HEADER_SIZE].hex()]
    for el in frame.elements:
        lines.append(f"# element {m.Tag(el.tag).name} ({el.tag}), {len(el.value)} bytes")
        enc = el.encode()
        lines += [enc[i:i + 32].hex() for i in range(0, len(enc), 32)]
    (HERE / f"{name}.hex").write_text("\n".join(lines) + "\n")
    (HERE / f"{name}.json").write_text(json.dumps(m.message_fields(msg), indent=1) + "\n")


def main() -> None:
    key = pki.generate_key("ec", 256)
    mic_key = pki.generate_key("ec", 256)
    lsc = pki.build_certificate(subject=f"CN={NAME}", public_key=key.public_key(), issuer_key=key)
    mic = pki.build_certificate(subject=f"CN={NAME},O=maker", public_key=mic_key.public_key(), issuer_key=mic_key)
    lsc_v = m.CertificateValue(m.CertificateType.LSC, pki.cert_der(lsc))
    mic_v = m.CertificateValue(m.CertificateType.MIC, pki.cert_der(mic))
    spki = pki.public_key_der(key)
    auth_sig = tbs.sign_data(key, m.auth_signed_payload(SID, NONCE, NAME), "sha256")
    info = tbs.csr_info_der(f"CN={NAME}", key)
    sig = tbs.sign_csr_info(key, info, "sha256")
    s = {"session_id": SID}
    vectors = {
        "01_auth_request_v3": m.AuthRequest(**s, version=3, nonce=NONCE),
        "01_auth_request_rechallenge": m.AuthRequest(**s, version=3, auth_type=m.AuthType.PASSWORD, nonce=NONCE),
        "01_auth_request_no_nonce": m.AuthRequest(**s, version=3),
        "02_auth_response_password_v3": m.AuthResponse(**s, version=3, device_name=NAME, auth_password="123456"),
        "02_auth_response_null_v2": m.AuthResponse(**s, version=2, device_name=NAME),
        "02_auth_response_lsc_v3": m.AuthResponse(**s, version=3, device_name=NAME, certificate=lsc_v,
                                                  signed_data_sha2=auth_sig, digest_type=m.DigestType.SHA256),
        "02_auth_response_mic_v2": m.AuthResponse(**s, version=2, device_name=NAME, certificate=mic_v,
                                                  signed_data=tbs.sign_data(mic_key, m.auth_signed_payload(SID, NONCE, NAME))),
        "03_key_gen_request_rsa_v2": m.KeyGenRequest(**s, key_size=2048),
        "03_key_gen_request_rsa_v3": m.KeyGenRequest(**s, key_type=m.KeyType.RSA, key_size=3072),
        "03_key_gen_request_ec_p384": m.KeyGenRequest(**s, key_type=m.KeyType.EC, ec_curve=m.ECCurve.P384),
        "04_key_gen_response": m.KeyGenResponse(**s, public_key=spki),
        "04_key_gen_response_failed": m.KeyGenResponse(**s, reason=m.Reason.KEY_GEN_FAILED,
                                                       reason_info="EC not supported by this model"),
        "09_store_cert_request": m.StoreCertRequest(**s, certificate=lsc_v),
        "10_store_cert_response": m.StoreCertResponse(**s, reason=m.Reason.OK),
        "11_fetch_cert_request_all": m.FetchCertRequest(**s),
        "11_fetch_cert_request_lsc": m.FetchCertRequest(**s, certificate_type=m.CertificateType.LSC),
        "12_fetch_cert_response": m.FetchCertResponse(**s, certificates=(lsc_v, mic_v)),
        "13_delete_cert_request": m.DeleteCertRequest(**s),
        "14_delete_cert_response": m.DeleteCertResponse(**s, reason=m.Reason.OK),
        "15_end_session_ok": m.EndSession(**s, reason=m.Reason.OK),
        "15_end_session_refused": m.EndSession(**s, reason=m.Reason.OPERATION_REFUSED,
                                               reason_info="Invalid Authentication String"),
        "15_end_session_nothing_pending": m.EndSession(**s, reason=m.Reason.NOTHING_PENDING,
                                                       reason_info="no operation pending"),
        "16_retry_later": m.RetryLater(**s, retry_delay=300, reason=m.Reason.CA_UNAVAILABLE,
                                       reason_info="CA Communication Failure"),
        "17_request_in_progress": m.RequestInProgress(**s),
        "18_status_enquiry": m.StatusEnquiry(**s),
        "19_status_response": m.StatusResponse(**s, reason=m.Reason.OK, reason_info="KEY_GEN_REQUESTED"),
        "20_abort_request": m.AbortRequest(**s, reason=m.Reason.ABORTED),
        "21_abort_response": m.AbortResponse(**s, reason=m.Reason.ABORTED),
        "22_sign_cert_request_v3": m.SignCertRequest(**s, tbs_data=info, digest_type=m.DigestType.SHA256),
        "22_sign_cert_request_v2": m.SignCertRequest(**s, tbs_data=info),
        "23_sign_cert_response_v3": m.SignCertResponse(**s, signed_data_sha2=sig),
        "23_sign_cert_response_v2": m.SignCertResponse(**s, signed_data=sig),
    }
    for old in HERE.glob("*.hex"):
        old.unlink()
    for old in HERE.glob("*.json"):
        old.unlink()
    for name, msg in vectors.items():
        write(name, msg)


if __name__ == "__main__":
    main()
