"""The CA's sans-I/O request reading (CertRequest forms, AD CS's ASN.1/signature codes, CertAttrib
lines) and policy (template choice, permissions, key limits and subjects); hostile text always ends
in RequestRefused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings, strategies as st

from onlineca import pki
from onlineca.config import TemplateConfig
from onlineca.errors import RequestRefused
from onlineca.policy import ca as p
from onlineca.proto.certsrv import hresults as hr, server

TEMPLATES = [
    TemplateConfig(name="CiscoRA"),
    TemplateConfig(name="Manual", manager_approval=True),
    TemplateConfig(name="BobOnly", enroll=["Bob"]),
    TemplateConfig(name="RSAOnly", allowed_key_types=["rsa"], min_rsa_bits=2048),
    TemplateConfig(name="Fixed", subject_from_request=False, min_ec_bits=384),
]


@pytest.fixture(scope="module")
def key():
    return pki.generate_key("ec", 256)


@pytest.fixture(scope="module")
def der(key):
    return pki.csr_der(pki.build_csr(key, "CN=SEP74A02FC0A675", sans=["sep.example.com"]))


def test_request_der_accepts_every_form_ad_cs_accepts(der):
    b64 = base64.b64encode(der).decode()
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    for text in (f"-----BEGIN CERTIFICATE REQUEST-----\n{lines}\n-----END CERTIFICATE REQUEST-----\n",
                 f"-----BEGIN CERTIFICATE REQUEST-----\r\n{lines.replace(chr(10), chr(13) + chr(10))}\r\n"
                 "-----END CERTIFICATE REQUEST-----\r\n",
                 f"-----BEGIN NEW CERTIFICATE REQUEST-----{b64}-----END NEW CERTIFICATE REQUEST-----",
                 b64, lines, b64.rstrip("=")):
        assert server.request_der(text) == der


@pytest.mark.parametrize("text", ["", "   ", "not base64 at all!", "-----BEGIN X-----\n-----END X-----"])
def test_request_der_refuses_non_base64_without_a_reqid(text):
    with pytest.raises(RequestRefused) as caught:
        server.request_der(text)
    assert caught.value.hresult == hr.E_INVALIDARG and not caught.value.stored


def test_load_request_codes(der):
    assert server.load_request(der).subject == pki.parse_name("CN=SEP74A02FC0A675")
    cases = {der[: len(der) // 2]: hr.CRYPT_E_ASN1_EOD, b"\x04\x02ab": hr.CRYPT_E_ASN1_BADTAG,
             der[:-1] + bytes([der[-1] ^ 1]): hr.NTE_BAD_SIGNATURE, b"\x30\x03\x02\x01\x00": hr.CRYPT_E_ASN1_BADTAG}
    for bad, code in cases.items():
        with pytest.raises(RequestRefused) as caught:
            server.load_request(bad)
        assert caught.value.hresult == code, bad
        assert hr.hresult_hex(code) in caught.value.disposition


def test_cert_attrib_lines():
    got = server.parse_cert_attrib("CertificateTemplate:CiscoRA\r\nSAN:dns=a&dns=b\ncertificatetemplate:Other\r\n\r\nnoise")
    assert got == {"certificatetemplate": "CiscoRA", "san": "dns=a&dns=b"}
    assert server.parse_cert_attrib("") == {}


def _decide(user, template, der, templates=TEMPLATES):
    return p.decide(templates, user, server.parse_cert_attrib(f"CertificateTemplate:{template}"), server.load_request(der))


def test_decisions(der):
    d = _decide("alice", "ciscora", der)  # template names compare case-insensitively
    assert d.template.name == "CiscoRA" and d.action == "issue"
    assert [str(s.value) for s in d.sans] == ["sep.example.com"]
    assert _decide("alice", "Manual", der).action == "pending"
    assert _decide("bob", "BobOnly", der).action == "issue"


@pytest.mark.parametrize("user,template,code", [
    ("alice", "BobOnly", hr.CERTSRV_E_TEMPLATE_DENIED), ("alice", "Nope", hr.CERTSRV_E_UNSUPPORTED_CERT_TYPE),
    ("alice", "", hr.CERTSRV_E_NO_CERT_TYPE), ("alice", "RSAOnly", hr.NTE_BAD_ALGID),
    ("alice", "Fixed", hr.CERTSRV_E_KEY_LENGTH),
])
def test_denials_carry_ad_cs_codes_and_wording(der, user, template, code):
    with pytest.raises(RequestRefused) as caught:
        _decide(user, template, der)
    assert caught.value.hresult == code
    assert caught.value.disposition.startswith(f"Denied by Policy Module  {hr.hresult_hex(code)}, ")
    assert caught.value.disposition.endswith("\r\n")


def test_subject_from_the_requester_when_the_template_says_so():
    key = pki.generate_key("ec", 384)
    der = pki.csr_der(pki.build_csr(key, "CN=ignored"))
    assert _decide("alice", "Fixed", der).subject == pki.parse_name("CN=alice")


def test_offered_templates_follow_enroll_lists():
    assert [t.name for t in p.offered_templates(TEMPLATES, "alice")] == ["CiscoRA", "Manual", "RSAOnly", "Fixed"]
    assert "BobOnly" in [t.name for t in p.offered_templates(TEMPLATES, "BOB")]


def test_hresults_fit_a_signed_32_bit_column():
    for code in (hr.CERTSRV_E_TEMPLATE_DENIED, hr.S_OK, hr.E_INVALIDARG):
        signed = hr.to_signed(code)
        assert -2 ** 31 <= signed < 2 ** 31 and hr.to_unsigned(signed) == code


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_request_or_a_refusal(text):
    try:
        server.load_request(server.request_der(text))
    except RequestRefused as exc:
        assert exc.hresult in (hr.E_INVALIDARG, hr.CRYPT_E_ASN1_BADTAG, hr.CRYPT_E_ASN1_EOD, hr.NTE_BAD_SIGNATURE)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_a_request_or_a_refusal(data):
    try:
        server.load_request(data)
    except RequestRefused:
        pass


# --- issue 11 item 2: templates restrict names, EKUs and requesters -------------------------------

def _lsc_and_web():
    from onlineca.config import TemplateConfig
    lsc = TemplateConfig(name="LSC", extended_key_usage=["client_auth"],
                         allowed_subjects=[r"CN=SEP[0-9A-F]{12}(,O=.*)?"], allowed_sans=[r"SEP[0-9A-F]{12}\.lab"])
    web = TemplateConfig(name="Web", extended_key_usage=["server_auth"], enroll=["webadmin"],
                         allowed_sans=[r"[a-z0-9-]+\.example\.com"])
    ad = TemplateConfig(name="FromAD", subject_from_request=False, sans_from_request=False)
    return [lsc, web, ad]


def test_template_name_patterns_the_requester_list_and_ad_built_names():
    from onlineca.errors import RequestRefused
    from onlineca.policy import ca as policy
    templates = _lsc_and_web()
    key = pki.generate_key("ec", 256)
    ok = policy.decide(templates, "capf", {"certificatetemplate": "LSC"},
                       pki.build_csr(key, "CN=SEP74A02FC0A675,O=Example", ["SEP74A02FC0A675.lab"]))
    assert ok.action == "issue" and list(ok.template.extended_key_usage) == ["client_auth"]
    for subject, sans in (("CN=victim-server,O=Example", []), ("CN=SEP74A02FC0A675", ["127.0.0.1"]),
                          ("CN=SEP74A02FC0A675", ["evil.example.com"])):
        with pytest.raises(RequestRefused) as exc:
            policy.decide(templates, "capf", {"certificatetemplate": "LSC"}, pki.build_csr(key, subject, sans))
        assert exc.value.hresult == 0x80094001 and "template LSC allows" in exc.value.disposition
    # The web template: server-auth only, and only to its named requesters.
    with pytest.raises(RequestRefused) as exc:
        policy.decide(templates, "alice", {"certificatetemplate": "Web"}, pki.build_csr(key, "CN=x", ["a.example.com"]))
    assert exc.value.hresult == 0x80094012
    web = policy.decide(templates, "webadmin", {"certificatetemplate": "Web"},
                        pki.build_csr(key, "CN=www", ["www.example.com"]))
    assert list(web.template.extended_key_usage) == ["server_auth"]
    assert [t.name for t in policy.offered_templates(templates, "alice")] == ["LSC", "FromAD"]
    # "Build from this Active Directory information": the request's names are not used.
    ad = policy.decide(templates, "alice", {"certificatetemplate": "FromAD"},
                       pki.build_csr(key, "CN=administrator", ["dc01.example.com"]))
    assert pki.name_to_slash(ad.subject) == "/CN=alice" and list(ad.sans) == []


def test_the_default_web_template_is_offered_to_nobody_until_requesters_are_named():
    from onlineca.config import Config
    from onlineca.policy import ca as policy
    templates = Config().ca.templates
    assert [t.name for t in policy.offered_templates(templates, "alice")] == ["CiscoRA"]


def test_a_template_pattern_that_is_not_a_regular_expression_is_a_config_error(tmp_path):
    from onlineca.config import load_config
    from onlineca.errors import ConfigError
    (tmp_path / "c.toml").write_text('[[ca.templates]]\nname = "T"\nallowed_subjects = ["CN=("]\n')
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "c.toml", {})
    assert "not a regular expression" in str(exc.value)
