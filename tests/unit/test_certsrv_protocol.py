"""certsrv.protocol on page vectors: the strings AD CS pages carry and that clients match on
(certnew.cer?ReqID=N&, "Certificate Pending", "Your Request Id is N.", 'The disposition message is "',
the certnew.cer error page's tab-indented values, var nRenewals=N;, the lbCertTemplate list)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings, strategies as st

from onlineca import pki
from onlineca.errors import (
    CAAuthError,
    CAChainError,
    CAConnectError,
    CADeniedError,
    CADNSError,
    CAHTTPError,
    CAPageError,
    CAPendingError,
    CATemplateError,
    CATimeoutError,
    CATLSError,
    CertsrvError,
    CertsrvFailure,
    ParseError,
    fix_for,
)
from onlineca.proto.certsrv import client as p
from onlineca.proto.certsrv.hresults import hresult_hex

BASE = "https://lab-dc.example.com/certsrv"


@pytest.fixture(scope="module")
def chain():
    root_key = pki.generate_key("ec", 256)
    root = pki.build_certificate(subject="CN=Vector Root,O=t", public_key=root_key.public_key(),
                                 issuer_key=root_key, is_ca=True)
    ca_key = pki.generate_key("ec", 256)
    ca = pki.build_certificate(subject="CN=Vector Issuing,O=t", public_key=ca_key.public_key(),
                               issuer_key=root_key, issuer_cert=root, is_ca=True)
    leaf_key = pki.generate_key("ec", 256)
    leaf = pki.build_certificate(subject="CN=SEP74A02FC0A675", public_key=leaf_key.public_key(),
                                 issuer_key=ca_key, issuer_cert=ca)
    return root, ca, leaf


# --- URLs and forms ------------------------------------------------------------------------

@pytest.mark.parametrize("given_url", [
    "https://lab-dc.example.com/certsrv", "https://lab-dc.example.com/certsrv/",
    "https://lab-dc.example.com", "https://lab-dc.example.com/certsrv/certfnsh.asp",
])
def test_base_url_is_normalised(given_url):
    assert p.certsrv_base(given_url) == BASE


def test_base_keeps_port_and_rejects_non_http():
    assert p.certsrv_base("https://10.0.0.5:8443/certsrv") == "https://10.0.0.5:8443/certsrv"
    with pytest.raises(ParseError):
        p.certsrv_base("ftp://host/certsrv")
    with pytest.raises(ParseError):
        p.certsrv_base("lab-dc.example.com")


def test_download_urls_are_what_the_document_logs():
    assert p.certnew_p7b_url(BASE, 0, "bin") == BASE + "/certnew.p7b?ReqID=CACert&Renewal=0&Enc=bin"
    assert p.certnew_cer_url(BASE, 10, "b64") == BASE + "/certnew.cer?ReqID=10&Enc=b64"
    assert p.certnew_cer_url(BASE, "CACert", "bin", 2) == BASE + "/certnew.cer?ReqID=CACert&Renewal=2&Enc=bin"
    assert p.login_url(BASE) == BASE + "/"
    for bad in ("10&Enc=b64", "-1", True):
        with pytest.raises(ValueError):
            p.certnew_cer_url(BASE, bad)
    with pytest.raises(ValueError):
        p.certnew_p7b_url(BASE, 0, "der")


def test_newreq_form_carries_template_and_attributes_on_crlf_lines():
    form = p.newreq_form(b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
                         "CiscoRA", {"SAN": "dns=phone.example.com"})
    assert form["Mode"] == "newreq"
    assert form["CertRequest"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert form["CertAttrib"] == "CertificateTemplate:CiscoRA\r\nSAN:dns=phone.example.com\r\n"
    assert form["FriendlyType"] == "Saved-Request Certificate"
    assert (form["TargetStoreFlags"], form["SaveCert"]) == ("0", "yes")


@pytest.mark.parametrize("template,attrs", [
    ("CiscoRA\r\nCertificateTemplate:SubCA", {}), ("", {}), ("CiscoRA", {"SAN": "a\nb"}),
    ("CiscoRA", {"a:b": "c"}),
])
def test_newreq_form_refuses_attribute_injection(template, attrs):
    with pytest.raises(ValueError):
        p.newreq_form("csr", template, attrs)


def test_chkpnd_form():
    assert p.chkpnd_form(17) == {"Mode": "chkpnd", "ReqID": "17", "TargetStoreFlags": "0", "SaveCert": "yes"}


# --- certrqxt.asp ----------------------------------------------------------------------------

CERTRQXT = """<HTML><Head><Title>Microsoft Active Directory Certificate Services</Title></Head><Body>
<Form Name=UIForm Action="certlynx.asp" Method=Post>
<TD><Select Name=lbCertTemplate ID=lbCertTemplateID>
\t\t\t<Option Value="E;CiscoRA;1;0;0;16;1;0;Microsoft RSA SChannel Cryptographic Provider;;;;;Cisco RA">Cisco RA</Option>
\t\t\t<Option Value="E;WebServer;1;0;0;16;1;0;;1.3.6.1.4.1.311.21.8.1;100;1;4;Web Server">Web Server</Option>
\t\t\t<Option Value="O;Legacy&amp;Old;1;0;0;0;0;0;;;;;Legacy &amp; Old">Legacy &amp; Old</Option>
\t\t</Select></TD>
<Form Name=SubmittedData Action="certfnsh.asp" Method=Post></Form></Body></HTML>"""


def test_templates_are_read_from_the_lbcerttemplate_list():
    got = p.parse_templates(CERTRQXT)
    assert [t.name for t in got] == ["CiscoRA", "WebServer", "Legacy&Old"]
    assert got[0].display_name == "Cisco RA" and got[0].kind == "E"
    assert got[2].kind == "O" and got[2].display_name == "Legacy & Old"


def test_no_templates_found_line_is_an_empty_list():
    page = ('<Select Name=lbCertTemplate ID=lbCertTemplateID>\n'
            '<Option Value="X">(No templates found!)</Option>\n</Select>')
    assert p.parse_templates(page) == []


def test_bare_option_values_are_names():
    page = "<select name='lbCertTemplate'><option value='CiscoRA'>Cisco RA<option value=User>User</select>"
    assert [(t.name, t.display_name) for t in p.parse_templates(page)] == [("CiscoRA", "Cisco RA"), ("User", "User")]


def test_a_page_without_template_list_is_not_certrqxt():
    with pytest.raises(CAPageError):
        p.parse_templates("<html><body>Welcome to nginx!</body></html>")


def test_template_error_names_offered_and_nearest():
    offered = p.parse_templates(CERTRQXT)
    assert p.template_error("CiscoRA", offered) is None
    err = p.template_error("CsicoRA", offered)
    assert isinstance(err, CATemplateError) and err.code == "CA_TEMPLATE"
    assert "CiscoRA, WebServer" in err.message and "'CiscoRA'" in err.hint
    assert p.template_error("Cisco RA", offered).details["nearest"] == "CiscoRA"  # display name typed
    assert p.template_error("Nothing", []).details["offered"] == []


# --- certfnsh.asp ----------------------------------------------------------------------------

ISSUED = """<HTML><Body><P ID=locPageTitle> <B> Certificate Issued </B>
<P ID=locInstallCert>The certificate you requested was issued to you.
<A Href="certnew.cer?ReqID=10&amp;Enc=b64">Download certificate</A>
<Script>function handleGetCert() { location="certnew.cer?ReqID=10&"+getEncoding(); }</Script>
</Body></HTML>"""

PENDING = """<HTML><Body><P ID=locPageTitle> <B> Certificate Pending </B>
<P ID=locInfoReqIDAndWait> Your certificate request has been received. However, you must wait for
an administrator to issue the certificate you requested.
Your Request Id is 42.
<P>The disposition message is "Taken Under Submission".</Body></HTML>"""

DENIED = ('<HTML><Body><P ID=locPageTitle> <B> Certificate Request Denied </B>\r\n'
          '<P ID=locDenied> Your certificate request was denied.\r\n'
          '<P>Your Request Id is 43.\r\n'
          '<P>The disposition message is "Denied by Policy Module  0x80094800, The request was for a '
          'certificate template that is not supported by the Active Directory Certificate Services policy: '
          'CsicoRA.\r\n".\r\n</Body></HTML>')

NO_TEMPLATE = ('<P ID=locPageTitle> <B> Certificate Request Denied </B>\r\n'
               '<P>The disposition message is "Denied by Policy Module  0x80094801, The request contains no '
               'certificate template information.\r\n".')

FAILED = ('<P ID=locPageTitle> <B> Certificate Request Denied </B><P>Your Request Id is 44.\r\n'
          '<P>The disposition message is "Error Parsing Request  ASN1 bad tag value met. 0x8009310b (ASN: 267)".')


def test_issued_page_gives_the_request_id():
    assert p.parse_certfnsh(ISSUED) == p.IssuedPage(10)


def test_pending_page_gives_the_request_id():
    got = p.parse_certfnsh(PENDING)
    assert got == p.Pending(42, "Taken Under Submission")


def test_denied_page_gives_hresult_and_message():
    got = p.parse_certfnsh(DENIED)
    assert isinstance(got, p.Denied)
    assert got.req_id == 43 and got.hresult == 0x80094800 and hresult_hex(got.hresult) == "0x80094800"
    assert got.message.startswith("Denied by Policy Module 0x80094800, The request was for a certificate template")
    err = p.denial_error(got)
    assert isinstance(err, CATemplateError) and err.details["hresult"] == "0x80094800"
    assert err.reason.startswith("HRESULT 0x80094800 (Denied by Policy Module 0x80094800, The request was for")


def test_denied_without_template_and_failed_parse():
    assert p.denial_error(p.parse_certfnsh(NO_TEMPLATE)).code == "CA_TEMPLATE"
    failed = p.parse_certfnsh(FAILED)
    assert (failed.req_id, failed.hresult) == (44, 0x8009310B)
    err = p.denial_error(failed)
    assert err.code == "CA_DENIED" and "ASN1 bad tag" in err.message


@pytest.mark.parametrize("page", [
    "", "<html>Service Unavailable</html>", "Certificate Pending but no id",
    "certnew.cer?ReqID=abc&Enc=b64",
])
def test_unexpected_certfnsh_pages_are_page_errors(page):
    with pytest.raises(CAPageError):
        p.parse_certfnsh(page)


# --- certnew.cer -----------------------------------------------------------------------------

ERROR_PAGE = ("<HTML><Body><P ID=locPageTitle> <B> Error </B>\r\n<DL><DD>\r\n"
              "\t<DT ID=locDispLabel><Font Size=-1><B>Disposition:</B></Font></DT><DD>\r\n\t\t2 - (unknown)\r\n\t</DD>\r\n"
              "\t<DT ID=locDispMsgLabel><Font Size=-1><B>Disposition message:</B></Font></DT><DD>\r\n"
              "\t\tDenied by Policy Module\r\n\t</DD>\r\n"
              "\t<DT ID=locResultLabel><Font Size=-1><B>Result:</B></Font></DT><DD>\r\n"
              "\t\tThe request was denied by a certificate manager or CA administrator. 0x80094014 (-2146877420)\r\n"
              "\t</DD>\r\n</DL></Body></HTML>")

PENDING_ERROR_PAGE = ERROR_PAGE.replace("Denied by Policy Module", "Taken Under Submission").replace(
    "The request was denied by a certificate manager or CA administrator. 0x80094014 (-2146877420)",
    "The operation completed successfully. 0x0 (WIN32: 0)")


@pytest.mark.parametrize("ctype", ["application/pkix-cert", "application/x-x509-user-cert",
                                   "application/x-x509-ca-cert; charset=binary"])
def test_certnew_cer_der_by_content_type(chain, ctype):
    leaf = chain[2]
    got = p.parse_certnew_cer(ctype, pki.cert_der(leaf), 10)
    assert got == p.Issued(pki.cert_der(leaf), req_id=10) and got.certificate == leaf


def test_certnew_cer_pem_served_as_html_to_non_browsers(chain):
    got = p.parse_certnew_cer("text/html", pki.cert_pem(chain[2]))
    assert got.cert_der == pki.cert_der(chain[2]) and got.certificate == chain[2]


def test_certnew_cer_error_page_is_denied_with_message_and_hresult():
    got = p.parse_certnew_cer("text/html; charset=utf-8", ERROR_PAGE.encode(), 43)
    assert got == p.Denied("Denied by Policy Module", req_id=43, hresult=0x80094014)


def test_certnew_cer_taken_under_submission_is_pending():
    assert p.parse_certnew_cer("text/html", PENDING_ERROR_PAGE.encode(), 42) == p.Pending(42, "Taken Under Submission")


def test_certnew_cer_garbage_is_a_page_error():
    with pytest.raises(CAPageError):
        p.parse_certnew_cer("text/html", b"<html>hello</html>", 1)
    with pytest.raises(CAPageError):
        p.parse_certnew_cer("application/pkix-cert", b"\x30\x03\x02\x01\x00", 1)


# --- certnew.p7b, certcarc.asp, certckpn.asp -------------------------------------------------

def test_p7b_bin_and_b64_are_ordered_ca_first(chain):
    root, ca, _leaf = chain
    der = pki.pkcs7_der([root, ca])
    assert p.parse_certnew_p7b("application/x-pkcs7-certificates", der) == [ca, root]
    b64 = (b"-----BEGIN CERTIFICATE-----\r\n" + base64.encodebytes(der).replace(b"\n", b"\r\n")
           + b"-----END CERTIFICATE-----\r\n")
    assert p.parse_certnew_p7b("application/x-pkcs7-certificates", b64) == [ca, root]


def test_p7b_errors_are_chain_errors():
    with pytest.raises(CAChainError, match="not application/x-pkcs7-certificates"):
        p.parse_certnew_p7b("text/html", b"<html>login</html>")
    with pytest.raises(CAChainError, match="Denied by Policy Module"):
        p.parse_certnew_p7b("text/html", ERROR_PAGE.encode())
    with pytest.raises(CAChainError):
        p.parse_certnew_p7b("application/x-pkcs7-certificates", b"\x30\x00")


def test_certcarc_renewals():
    assert p.parse_certcarc("<Script>\n\tvar nRenewals=3;\n\tvar sCAName='x';</Script>") == 3
    with pytest.raises(CAPageError):
        p.parse_certcarc("<html></html>")


CERTCKPN = """<P ID=locPageTitle> <B> View the Status of a Pending Certificate Request </B>
<P ID=locSelectCert> Select the certificate request you want to view:
<Table><TR><TD><A Href="#" OnClick="CheckPending2('42', '0', 'yes');return false;">Saved-Request Certificate (1/1/2026)</A></TD></TR>
<TR><TD><A Href="#" OnClick="CheckPending2('45', '0', 'yes');return false;">Saved-Request Certificate (1/2/2026)</A></TD></TR></Table>
<DD><Form Name=SubmittedData Action="certfnsh.asp" Method=Post><Input Type=Hidden Name=ReqID Value="42"></Form>"""


def test_certckpn_lists_pending_request_ids():
    assert p.parse_certckpn(CERTCKPN) == [42, 45]
    assert p.parse_certckpn("<P ID=locNoPend> You have no pending certificate requests.\n</P>") == []
    with pytest.raises(CAPageError):
        p.parse_certckpn("<html>nothing</html>")


# --- failures worded as curl words them ------------------------------------------------------

def test_http_status_errors():
    err = p.http_status_error(401, BASE + "/")
    assert isinstance(err, CAAuthError) and err.code == "CA_AUTH"
    assert err.reason == "return code 22 (The requested URL returned error: 401)"
    err = p.http_status_error(500, BASE + "/certfnsh.asp", "Internal Server Error")
    assert err.code == "CA_HTTP" and "/certsrv/certfnsh.asp" in err.message


def test_401_hint_names_the_schemes_the_ca_offers():
    err = p.http_status_error(401, BASE + "/", offered=["Negotiate", "NTLM"], auth="basic")
    assert "(it offers Negotiate, NTLM)" in err.hint
    assert p.http_status_error(401, BASE + "/", offered=['Basic realm="x"'], auth="basic").hint == fix_for("CA_AUTH")


def test_ntlm_header_helpers():
    assert p.offers_ntlm(["Negotiate", "NTLM"]) and not p.offers_ntlm(['Basic realm="NTLM"'])
    assert p.ntlm_header(b"\x01\x02") == "NTLM AQI="
    assert p.ntlm_challenge(["Negotiate", "NTLM AQI="]) == b"\x01\x02"
    assert p.ntlm_challenge(["NTLM"]) is None and p.ntlm_challenge(["NTLM !!notbase64"]) is None


def test_dns_connect_and_timeout_wording():
    assert p.dns_error("lab-dcc.example.invalid").reason == \
        "return code 6 (Could not resolve: lab-dcc.example.invalid (Domain name not found))"
    assert p.connect_error("127.0.0.1", 9, 0).reason == \
        "return code 7 (Failed to connect to 127.0.0.1 port 9 after 0 ms: Connection refused)"
    err = p.timeout_error("login", BASE + "/", 10.0, 9998, 0)
    assert err.reason == "return code 28 (Operation timed out after 10000 milliseconds with 0 bytes received)"
    assert err.details["phase"] == "login" and err.code == "CA_TIMEOUT"
    assert p.timeout_error("connect", BASE, 2.5, 2600, 0).curl_message == "Connection timed out after 2600 milliseconds"


@pytest.mark.parametrize("verify_code,message,code", [
    (20, "unable to get local issuer certificate", "CA_TLS_UNTRUSTED"),
    (18, "self-signed certificate", "CA_TLS_SELF_SIGNED"),
    (19, "self-signed certificate in certificate chain", "CA_TLS_UNTRUSTED"),
    (9, "certificate is not yet valid", "CA_TLS_NOT_YET_VALID"),
    (10, "certificate has expired", "CA_TLS_EXPIRED"),
])
def test_tls_verify_codes(verify_code, message, code):
    err = p.tls_error("lab-dc.example.com", verify_code, message)
    assert err.code == code and err.curl_code == 60
    assert err.reason == f"return code 60 (SSL certificate problem: {message})"


def test_name_mismatch_names_the_certificate_names():
    peer = p.PeerCertificate(subject="/CN=lab-dc", issuer="/CN=Lab CA", common_name="lab-dc")
    err = p.tls_error("lab-dc.example.com", 62, "Hostname mismatch", peer)
    assert err.code == "CA_TLS_NAME_MISMATCH"
    assert err.reason == ("return code 51 (SSL: certificate subject name 'lab-dc' does not match "
                          "target host name 'lab-dc.example.com')")
    with_san = p.PeerCertificate(subject="/CN=x", issuer="/CN=y", common_name="x", names=["x", "10.0.0.1"])
    err = p.tls_error("lab-dc.example.com", 62, "Hostname mismatch", with_san)
    assert "no alternative certificate subject name matches target host name 'lab-dc.example.com'" in err.reason
    assert "x, 10.0.0.1" in err.message


def test_every_failure_is_a_certsrv_error_with_a_hint():
    for cls in (CADNSError, CAConnectError, CATLSError, CATimeoutError, CAAuthError,
                CATemplateError, CAChainError, CADeniedError, CAPendingError, CAHTTPError, CAPageError):
        err = cls("x")
        assert isinstance(err, CertsrvError) and err.code.startswith("CA_") and err.hint


# --- hostile input: a parse error or a value, never anything else ----------------------------

_PARSERS = [p.parse_templates, p.parse_certfnsh, p.parse_certcarc, p.parse_certckpn,
            lambda s: p.parse_error_page(s, 1)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list('<>"\';=&\t\r\n ReqIDcertnew.?0123456789xX') +
                                     ["Certificate Pending", "Your Request Id is ", "The disposition message is \"",
                                          "Disposition message:", "<Option Value=\"", "lbCertTemplate",
                                          "var nRenewals=", "CheckPending2('", "certnew.cer?ReqID=", "<B>Result:</B><DD>"]),
                max_size=60).map("".join))
def test_parsers_only_raise_certsrv_failures(text):
    for parse in _PARSERS:
        try:
            parse(text)
        except CertsrvFailure:
            pass


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["text/html", "application/pkix-cert", "application/x-pkcs7-certificates", ""]),
       st.binary(max_size=200))
def test_download_parsers_only_raise_certsrv_failures(ctype, body):
    for parse in (lambda: p.parse_certnew_cer(ctype, body, 1), lambda: p.parse_certnew_p7b(ctype, body)):
        try:
            parse()
        except CertsrvFailure:
            pass
