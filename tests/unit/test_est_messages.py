"""The sans-I/O EST messages: round trips, RFC 7030 / RFC 8951 tolerance, and fuzzing (random and
mutated input must end in our ParseError, nothing else)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from onlineca import pki
from onlineca.errors import ESTCodedError, ParseError
from onlineca.proto import est as m
from onlineca.proto.libest import EST_ERRORS, enrollment_rv_line, est_number, rv_text

KEY = pki.generate_key("ec", 256)
CSR = pki.build_csr(KEY, "CN=SEP74A02FC0A675,O=lab", ["sep.lab"])
CA_KEY = pki.generate_key("ec", 256)
CA = pki.build_certificate(subject="CN=unit CA", public_key=CA_KEY.public_key(), issuer_key=CA_KEY, is_ca=True)
LEAF = pki.build_certificate(subject="CN=leaf", public_key=KEY.public_key(), issuer_key=CA_KEY, issuer_cert=CA)
# RFC 7030 4.5.2's example: challengePassword, an EC key on P-384, extensionRequest, ecdsa-with-SHA384.
ATTRS = m.CsrAttrs(("1.2.840.113549.1.9.7",
                    m.CsrAttribute("1.2.840.10045.2.1", (m.der_oid("1.3.132.0.34"),)),
                    m.CsrAttribute("1.2.840.113549.1.9.14", (m.der_oid("1.3.6.1.1.1.1.22"),)),
                    "1.2.840.10045.4.3.3"))
RFC7030_CSRATTRS_B64 = b"MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw=="


def _codes_ok(exc: ParseError) -> None:
    assert exc.code.startswith("EST_ERR_") and exc.code in EST_ERRORS, exc.code


# ------------------------------------------------------------------ codes


def test_libest_numbers_match_the_source_document():
    assert est_number("EST_ERR_AUTH_FAIL") == 22 and est_number("EST_ERR_SSL_READ") == 35
    assert est_number("EST_ERR_CA_ENROLL_RETRY") == 26 and est_number("EST_ERR_FQDN_MISMATCH") == 53
    assert est_number("EST_ERR_CACERT_VERIFICATION") == 60 and est_number("EST_ERR_BAD_CONTENT_TYPE") == 19
    assert est_number("EST_ERR_SSL_CONNECT") == 38 and est_number("EST_ERR_IP_CONNECT") == 43
    assert est_number("no such thing") == 94
    assert enrollment_rv_line("EST_ERR_SSL_READ", 0) == "Enrollment rv = 35 (EST_ERR_SSL_READ) with pkcs7 length = 0"
    assert enrollment_rv_line("EST_ERR_NONE", 1963) == "Enrollment rv = 0 (EST_ERR_NONE) with pkcs7 length = 1963"
    err = ESTCodedError("EST_ERR_AUTH_FAIL", "x", http_status=401)
    assert est_number(err.code) == 22 and rv_text(err.code) == "22 (EST_ERR_AUTH_FAIL)" and err.hint


# ------------------------------------------------------------------ PKCS#10


def test_pkcs10_round_trip_and_rfc8951_tolerance():
    headers, body = m.encode_pkcs10(CSR)
    assert headers == {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"}
    assert m.parse_pkcs10(body, headers["Content-Type"]).subject == CSR.subject
    compact = b"".join(body.split())
    for variant in (compact, body.replace(b"\r\n", b"\n"), b"  " + compact[:10] + b"\n \t" + compact[10:] + b"\n",
                    pki.csr_pem(CSR)):
        assert m.parse_pkcs10(variant, "application/pkcs10; charset=x").subject == CSR.subject


def test_pkcs10_errors_are_clear():
    with pytest.raises(ParseError) as ei:
        m.parse_pkcs10(b"abc", "text/plain")
    assert ei.value.code == "EST_ERR_BAD_CONTENT_TYPE"
    with pytest.raises(ParseError) as ei:
        m.parse_pkcs10(b"", m.CT_PKCS10)
    assert ei.value.code == "EST_ERR_NO_CSR"
    with pytest.raises(ParseError) as ei:
        m.parse_pkcs10(b"!!notbase64!!", m.CT_PKCS10)
    assert ei.value.code == "EST_ERR_BAD_PKCS10"
    # A request whose signature does not verify: flip a bit inside the signature.
    der = bytearray(pki.csr_der(CSR))
    der[-5] ^= 0x01
    with pytest.raises(ParseError) as ei:
        m.parse_pkcs10(base64.b64encode(bytes(der)), m.CT_PKCS10)
    assert ei.value.code == "EST_ERR_BAD_PKCS10"


# ------------------------------------------------------------------ certs-only, csrattrs, multipart


def test_certs_only_round_trip():
    reply = m.certs_only_reply([LEAF, CA])
    assert reply.header("Content-Type") == "application/pkcs7-mime; smime-type=certs-only"
    assert set(m.parse_certs_only(reply.body, reply.header("Content-Type"))) == {LEAF, CA}
    assert m.parse_certs_only(reply.body, "application/pkcs7-mime") == m.parse_certs_only(reply.body, m.CT_PKCS7_CERTS)
    with pytest.raises(ParseError) as ei:
        m.parse_certs_only(reply.body, "application/pkcs7-mime; smime-type=server-generated-key")
    assert ei.value.code == "EST_ERR_BAD_CONTENT_TYPE"


def test_csrattrs_matches_the_rfc7030_example():
    assert m.encode_csrattrs(ATTRS) == base64.b64decode(RFC7030_CSRATTRS_B64)
    assert m.decode_csrattrs(base64.b64decode(RFC7030_CSRATTRS_B64)) == ATTRS
    reply = m.csrattrs_reply(ATTRS)
    assert m.parse_csrattrs(reply.body, reply.header("Content-Type")) == ATTRS
    assert ATTRS.oids == ["1.2.840.113549.1.9.7", "1.2.840.10045.4.3.3"] and len(ATTRS.attributes) == 2
    assert m.csrattrs_reply(m.CsrAttrs()).status == 204


def test_serverkeygen_round_trip_and_lf_only_lines():
    reply = m.serverkeygen_reply(pki.private_key_der(KEY), [LEAF], boundary="est")
    ct = reply.header("Content-Type")
    assert ct == "multipart/mixed; boundary=est"
    res = m.parse_serverkeygen(reply.body, ct)
    assert pki.same_public_key(pki.load_private_key(res.private_key_der), KEY) and res.certificates == [LEAF]
    res2 = m.parse_serverkeygen(reply.body.replace(b"\r\n", b"\n"), 'multipart/mixed; boundary="est"')
    assert res2.certificates == [LEAF]
    with pytest.raises(ParseError) as ei:
        m.parse_serverkeygen(reply.body.split(b"--est\r\nContent-Type: application/pkcs7")[0] + b"--est--", ct)
    assert ei.value.code == "EST_ERR_MULTIPART_PARSE"


def test_retry_after_forms():
    assert m.parse_retry_after("120") == 120
    now = dt.datetime(2019, 3, 5, 12, 0, tzinfo=dt.UTC)
    assert m.parse_retry_after("Tue, 05 Mar 2019 12:01:00 GMT", now) == 60
    assert m.parse_retry_after("Tue, 05 Mar 2019 11:00:00 GMT", now) == 0
    for bad in ("", "soon", "-5", "1e3"):
        with pytest.raises(ParseError) as ei:
            m.parse_retry_after(bad)
        assert ei.value.code == "EST_ERR_INVALID_RETRY_VALUE"
    reply = m.retry_reply(30)
    assert reply.status == 202 and reply.header("Retry-After") == "30"
    assert m.retry_reply(5, 503).status == 503


def test_paths_and_labels():
    assert m.parse_est_path("/.well-known/est/cacerts") == m.ESTPath(None, "cacerts")
    assert m.parse_est_path("/.well-known/est/lsc/simpleenroll") == m.ESTPath("lsc", "simpleenroll")
    assert m.ESTPath("lsc", "csrattrs").url_path() == "/.well-known/est/lsc/csrattrs"
    for bad, code in (("/.well-known/est/nope", "EST_ERR_HTTP_NOT_FOUND"),
                      ("/.well-known/est/a/b/cacerts", "EST_ERR_HTTP_INVALID_PATH_SEGMENT"),
                      ("/.well-known/est/a%20b/cacerts", "EST_ERR_HTTP_INVALID_PATH_SEGMENT"),
                      ("/.well-known/est/simpleenroll/cacerts", "EST_ERR_HTTP_INVALID_PATH_SEGMENT"),
                      ("/other", "EST_ERR_HTTP_NOT_FOUND")):
        with pytest.raises(ParseError) as ei:
            m.parse_est_path(bad)
        assert ei.value.code == code


def test_tls_unique_check():
    binding = bytes(range(12))
    good = pki.build_csr(KEY, "CN=x", challenge_password=m.tls_unique_challenge(binding))
    m.check_tls_unique(good, binding)
    for csr, b in ((good, bytes(12)), (good, None), (CSR, binding)):
        with pytest.raises(ParseError) as ei:
            m.check_tls_unique(csr, b)
        assert ei.value.code == "EST_ERR_AUTH_FAIL_TLSUID"


def test_error_text_is_printable_and_bounded():
    assert m.error_text(b"\x00\x1b[31mboom\r\nline2" + b"x" * 5000).startswith("??[31mboom line2")
    assert len(m.error_text(b"y" * 5000)) == 300


# ------------------------------------------------------------------ fuzzing

_VALID = {
    "pkcs10": (m.encode_pkcs10(CSR)[1], lambda b: m.parse_pkcs10(b, m.CT_PKCS10)),
    "certs": (m.certs_only_reply([LEAF, CA]).body, lambda b: m.parse_certs_only(b, m.CT_PKCS7_CERTS)),
    "csrattrs_b64": (m.csrattrs_reply(ATTRS).body, lambda b: m.parse_csrattrs(b, m.CT_CSRATTRS)),
    "csrattrs_der": (m.encode_csrattrs(ATTRS), m.decode_csrattrs),
    "serverkeygen": (m.serverkeygen_reply(pki.private_key_der(KEY), [LEAF], "est").body,
                     lambda b: m.parse_serverkeygen(b, "multipart/mixed; boundary=est")),
    "base64": (m.encode_base64_body(b"\x30\x03\x02\x01\x05"), m.decode_base64_body),
    "path": (b"/.well-known/est/lsc/simpleenroll", lambda b: m.parse_est_path(b.decode("latin-1"))),
    "retry": (b"120", lambda b: m.parse_retry_after(b.decode("latin-1"))),
    "content_type": (b"application/pkcs7-mime; smime-type=certs-only",
                     lambda b: m.parse_content_type(b.decode("latin-1"))),
}


def _must_only_parse_error(parse, data: bytes) -> None:
    try:
        parse(data)
    except ParseError as exc:
        _codes_ok(exc)


@st.composite
def _mutated(draw, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i:i + draw(st.integers(1, 64))]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(_VALID))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parsers_only_raise_parse_error(name, data):
    valid, parse = _VALID[name]
    parse(valid)  # the unmutated message parses
    blob = data.draw(st.one_of(st.binary(max_size=600), _mutated(valid)))
    _must_only_parse_error(parse, blob)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.from_regex(r"[0-2]\.(0|[1-9][0-9]?)(\.(0|[1-9][0-9]{0,5})){0,5}", fullmatch=True)), max_size=6))
def test_csrattrs_oid_round_trip(oids):
    oids = [o for o in oids if not (o.startswith(("0.", "1.")) and int(o.split(".")[1]) >= 40)]
    attrs = m.CsrAttrs(tuple(oids))
    assert m.decode_csrattrs(m.encode_csrattrs(attrs)) == attrs


def test_csrattrs_with_a_trailing_nul_as_libests_example_server_sends_it():
    """Issue 12 item 5: libEST's example /csrattrs answer is its C string, terminator included."""
    body = b"MCYGBysGAQEBARYGCSqGSIb3DQEJAQYFK4EEACIGCWCGSAFlAwQCAg==\x00"
    attrs = m.parse_csrattrs(body, "application/csrattrs")
    assert "1.2.840.113549.1.9.1" in attrs.oids and "1.3.132.0.34" in attrs.oids
    assert m.parse_csrattrs(body[:-1] + b" \r\n\x00\x00", "application/csrattrs") == attrs
    with pytest.raises(ParseError):  # a NUL inside the base64 is still an error
        m.parse_csrattrs(body[:10] + b"\x00" + body[10:], "application/csrattrs")
