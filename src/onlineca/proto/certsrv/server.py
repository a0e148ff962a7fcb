"""The CA's side of AD CS web enrollment, sans-I/O: the submitted request read (``CertRequest``,
``CertAttrib``), and the HTML of the pages answered, as strings.

A ``CertRequest`` arrives as PEM (LF or CRLF), headers glued to one-line base64, or bare base64:
``request_der`` strips any BEGIN/END lines and whitespace and decodes, ``load_request`` parses the
PKCS#10 and checks its self-signature; each refusal is a ``RequestRefused`` with the HRESULT AD CS
reports for what it finds.  Page structure, IDs and wording follow the pages of a Windows CA
(certsrv's ``locPageTitle``, ``lbCertTemplate``, ``locDispMsgLabel`` ...) because clients find
their values with regular expressions on exactly these strings (docs/ca.md lists them).  Every
value that came from a request or the configuration is HTML-escaped here.  No I/O, no secrets.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import Protocol

from cryptography import x509

from onlineca import pki
from onlineca.errors import ParseError, RequestRefused
from onlineca.proto.certsrv.hresults import (
    CRYPT_E_ASN1_BADTAG,
    CRYPT_E_ASN1_EOD,
    E_INVALIDARG,
    HRESULT_TEXT,
    NTE_BAD_SIGNATURE,
    TAKEN_UNDER_SUBMISSION,
    parse_failure,
)

# ---------------------------------------------------------------------------------------------
# The submission (certfnsh.asp Mode=newreq)

_ANY_PEM_LINE = re.compile(r"-----(?:BEGIN|END)[^-\r\n]*-----")


def request_der(text: str) -> bytes:
    """The DER of a ``CertRequest`` field: PEM (LF or CRLF), headers glued to one-line base64, or
    bare base64.  Raises RequestRefused with the code AD CS reports (not stored: no ReqID)."""
    body = "".join(_ANY_PEM_LINE.sub("", text).split())
    if not body:
        raise RequestRefused(E_INVALIDARG, parse_failure(E_INVALIDARG), stored=False)
    try:
        der = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise RequestRefused(E_INVALIDARG, parse_failure(E_INVALIDARG), stored=False) from None
    if not der:
        raise RequestRefused(E_INVALIDARG, parse_failure(E_INVALIDARG), stored=False)
    return der


def _asn1_truncated(der: bytes) -> bool:
    """True when the outer TLV announces more bytes than there are (a cut-off request)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return 2 + first > len(der)
    n = first & 0x7F
    if n == 0 or n > 4 or len(der) < 2 + n:
        return len(der) < 2 + n
    return 2 + n + int.from_bytes(der[2:2 + n], "big") > len(der)


def load_request(der: bytes) -> x509.CertificateSigningRequest:
    """A PKCS#10 request whose self-signature holds, or RequestRefused with AD CS's code."""
    try:
        csr = pki.parse_csr(der, verify=False)
    except ParseError:
        hr = CRYPT_E_ASN1_EOD if _asn1_truncated(der) else CRYPT_E_ASN1_BADTAG
        raise RequestRefused(hr, parse_failure(hr)) from None
    try:
        pki.verify_csr(csr)
    except ParseError:
        raise RequestRefused(NTE_BAD_SIGNATURE,
                             f"Error Verifying Request Signature or Signing Certificate  "
                             f"{HRESULT_TEXT[NTE_BAD_SIGNATURE]}") from None
    return csr


def parse_cert_attrib(text: str) -> dict[str, str]:
    """``CertAttrib``: ``Name:Value`` lines (CRLF or LF); names lower-cased (AD CS compares them
    case-insensitively).  The first value of a name wins, as AD CS takes the first
    CertificateTemplate line."""
    out: dict[str, str] = {}
    for line in re.split(r"\r\n|\n|\r", text or ""):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out.setdefault(name.strip().lower(), value.strip())
    return out


# ---------------------------------------------------------------------------------------------
# The pages


class OfferedTemplate(Protocol):
    """A template as certrqxt.asp lists it (``config.TemplateConfig`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def display_name(self) -> str: ...


TITLE = "Microsoft Active Directory Certificate Services"


def _page(ca_name: str, body: str, script: str = "") -> str:
    return (
        "<HTML>\r\n<Head>\r\n"
        '\t<Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">\r\n'
        f"\t<Title>{TITLE}</Title>\r\n{script}</Head>\r\n"
        "<Body BgColor=#FFFFFF>\r\n"
        '<Table Border=0 CellSpacing=0 CellPadding=4 Width=100% BgColor=#008080>\r\n'
        f'<TR><TD><Font Color=#FFFFFF><LocID ID=locMSCertSrv><Font Face="Arial" Size=-1><B><I>{TITLE}</I></B>'
        f"</Font></LocID> -- <Font Face=\"Arial\" Size=-1><B>{escape(ca_name)}</B></Font></Font></TD>\r\n"
        '<TD ID=locHomeAlign Align=Right><A Href="/certsrv"><Font Color=#FFFFFF><LocID ID=locHomeLink>'
        "Home</LocID></Font></A></TD></TR>\r\n</Table>\r\n"
        f"{body}\r\n</Body>\r\n</HTML>\r\n"
    )


def home(ca_name: str) -> str:
    return _page(ca_name, (
        "<P ID=locPageTitle> <Font Face=\"Arial\" Size=+1><B> Welcome </B></Font>\r\n"
        "<P ID=locWelcome>Use this Web site to request a certificate for your Web browser, e-mail client, "
        "or other program. By using a certificate, you can verify your identity to people you communicate "
        "with over the Web, sign and encrypt messages, and, depending upon the type of certificate you "
        "request, perform other security tasks.\r\n"
        "<P ID=locTaskHead><B>Select a task:</B>\r\n<Blockquote>\r\n"
        "<LocID ID=locRequestLink><A Href=\"certrqus.asp\">Request a certificate</A></LocID><BR>\r\n"
        "<LocID ID=locCheckLink><A Href=\"certckpn.asp\">View the status of a pending certificate request</A>"
        "</LocID><BR>\r\n"
        "<LocID ID=locDownloadLink><A Href=\"certcarc.asp\">Download a CA certificate, certificate chain, or CRL"
        "</A></LocID>\r\n</Blockquote>"))


def _template_option(t: OfferedTemplate) -> str:
    # AD CS: "E;<name>;<KeySpec>;<flags>...;<display name>"; clients take field 1 as the name.
    display = t.display_name or t.name
    value = f"E;{t.name};1;0;0;16;1;0;;;;;;{display}"
    return f'\t\t\t<Option Value="{escape(value)}">{escape(display)}</Option>\r\n'


def certrqxt(ca_name: str, offered: Sequence[OfferedTemplate]) -> str:
    options = "".join(_template_option(t) for t in offered) or (
        '\t\t\t<Option Value="X">(No templates found!)</Option>\r\n')
    return _page(ca_name, (
        "<P ID=locPageTitle> <Font Face=\"Arial\" Size=+1><B> Submit a Certificate Request or Renewal Request"
        " </B></Font>\r\n"
        "<P ID=locInfo> To submit a saved request to the CA, paste a base-64-encoded CMC or PKCS #10 "
        "certificate request or PKCS #7 renewal request generated by an external source (such as a Web "
        "server) in the Saved Request box.\r\n"
        "<Form Name=SubmittedData Action=\"certfnsh.asp\" Method=Post>\r\n"
        "<Table Border=0 CellSpacing=0 CellPadding=0>\r\n"
        "<TR><TD ID=locSavedReqLabel><B>Saved Request:</B></TD>\r\n"
        "<TD><TextArea Name=CertRequest ID=locTaRequest Rows=10 Cols=60 Wrap=Off></TextArea></TD></TR>\r\n"
        "<TR><TD ID=locCertTemplateLabel><B>Certificate Template:</B></TD>\r\n"
        "<TD><Select Name=lbCertTemplate ID=lbCertTemplateID>\r\n"
        f"{options}\t\t</Select></TD></TR>\r\n"
        "<TR><TD ID=locAttribLabel><B>Additional Attributes:</B></TD>\r\n"
        "<TD><TextArea Name=CertAttrib ID=locTaAttrib Rows=2 Cols=30 Wrap=Off></TextArea></TD></TR>\r\n"
        "</Table>\r\n"
        "<Input Type=Hidden Name=Mode Value=\"newreq\">\r\n"
        "<Input Type=Hidden Name=FriendlyType Value=\"\">\r\n"
        "<Input Type=Hidden Name=TargetStoreFlags Value=\"0\">\r\n"
        "<Input Type=Hidden Name=SaveCert Value=\"yes\">\r\n"
        "<Input Type=Submit ID=locBtnSubmit Value=\"Submit &gt;\">\r\n"
        "</Form>"))


def issued(ca_name: str, req_id: int, browser: bool) -> str:
    # The script line is what AD CS sends browsers; some clients read the ReqID from it.
    script = (
        "<Script Language=\"JavaScript\">\r\n"
        "\tfunction getEncoding() { return document.UIForm.rbEncoding[0].checked ? \"Enc=bin\" : \"Enc=b64\"; }\r\n"
        "\tfunction handleGetCert() {\r\n"
        f"\t\tlocation=\"certnew.cer?ReqID={req_id}&\"+getEncoding();\r\n"
        "\t}\r\n"
        "\tfunction handleGetChain() {\r\n"
        f"\t\tlocation=\"certnew.p7b?ReqID={req_id}&\"+getEncoding();\r\n"
        "\t}\r\n</Script>\r\n") if browser else ""
    return _page(ca_name, (
        "<P ID=locPageTitle> <Font Face=\"Arial\" Size=+1><B> Certificate Issued </B></Font>\r\n"
        "<P ID=locInstallCert> The certificate you requested was issued to you.\r\n"
        "<Form Name=UIForm>\r\n"
        "<Input Type=Radio Name=rbEncoding ID=rbDerEnc> DER encoded or "
        "<Input Type=Radio Name=rbEncoding ID=rbB64Enc Checked> Base 64 encoded\r\n</Form>\r\n"
        f"<P><A Href=\"certnew.cer?ReqID={req_id}&amp;Enc=b64\"><LocID ID=locDownloadCert1>Download certificate"
        "</LocID></A><BR>\r\n"
        f"<A Href=\"certnew.p7b?ReqID={req_id}&amp;Enc=b64\"><LocID ID=locDownloadCert2>Download certificate chain"
        "</LocID></A>"), script)


def pending(ca_name: str, req_id: int) -> str:
    return _page(ca_name, (
        "<P ID=locPageTitle> <Font Face=\"Arial\" Size=+1><B> Certificate Pending </B></Font>\r\n"
        "<P ID=locInfoReqIDAndWait> Your certificate request has been received. However, you must wait for "
        "an administrator to issue the certificate you requested.\r\n"
        f"<P ID=locReqID> Your Request Id is {req_id}.\r\n"
        f"<P ID=locDispMsg>The disposition message is \"{TAKEN_UNDER_SUBMISSION}\".\r\n"
        "<P ID=locPlsRtrn> Please return to this web site in a day or two to retrieve your certificate.\r\n"
        "<P ID=locNote><Font Size=-1><I> Note: You must return with this web browser within 10 days to "
        "retrieve your certificate</I></Font>"))


def denied(ca_name: str, req_id: int | None, message: str) -> str:
    req = f"<P ID=locReqID> Your Request Id is {req_id}.\r\n" if req_id is not None else ""
    # The message keeps its own line break inside the quotes, as AD CS prints it.
    return _page(ca_name, (
        "<P ID=locPageTitle> <Font Face=\"Arial\" Size=+1><B> Certificate Request Denied </B></Font>\r\n"
        "<P ID=locDenied> Your certificate request was denied.\r\n"
        f"{req}"
        "<P ID=locContactAdmin> Contact your administrator for further information.\r\n"
        f"<P ID=locDispMsg>The disposition message is \"{escape(message)}\".\r\n"))


def _dl_entry(label_id: str, label: str, value: str) -> str:
    # Clients read the value on the line after the label, indented by two tabs.
    return (f"\t<DT ID={label_id}><Font Size=-1><B>{label}:</B></Font></DT><DD>\r\n"
            f"\t\t{escape(value, quote=False)}\r\n\t</DD>\r\n")


DISPOSITION_CODES = {"pending": "5 - Taken Under Submission", "denied": "2 - Denied",
                     "failed": "2 - Error", "": "2 - (unknown)"}


def error(ca_name: str, disposition: str, message: str, result: str) -> str:
    """certnew.cer's (certrser.asp's) error page: Disposition, Disposition message, Result."""
    line = " ".join(message.split())
    return _page(ca_name, (
        "<P ID=locPageTitle> <Font Face=\"Arial\" Size=+1><B> Error </B></Font>\r\n"
        "<P ID=locErrorMsg> An unexpected error has occurred:\r\n<DL><DD>\r\n"
        + _dl_entry("locDispLabel", "Disposition", DISPOSITION_CODES.get(disposition, DISPOSITION_CODES[""]))
        + _dl_entry("locDispMsgLabel", "Disposition message", line or "(none)")
        + _dl_entry("locResultLabel", "Result", result)
        + "</DL>"))


def certcarc(ca_name: str, renewals: int = 0) -> str:
    script = ("<Script Language=\"JavaScript\">\r\n"
              f"\tvar nRenewals={renewals};\r\n"
              f"\tvar sCAName=\"{escape(ca_name)}\";\r\n"
              "</Script>\r\n")
    return _page(ca_name, (
        "<P ID=locPageTitle> <Font Face=\"Arial\" Size=+1><B> Download a CA Certificate, Certificate Chain, "
        "or CRL </B></Font>\r\n"
        "<P ID=locInfo> To trust certificates issued from this certification authority, install this CA "
        "certificate.\r\n"
        "<P><A Href=\"certnew.cer?ReqID=CACert&amp;Renewal=0&amp;Enc=b64\">Download CA certificate</A><BR>\r\n"
        "<A Href=\"certnew.p7b?ReqID=CACert&amp;Renewal=0&amp;Enc=b64\">Download CA certificate chain</A>"),
        script)


def certckpn(ca_name: str, pending_requests: Iterable[tuple[int, dt.datetime | None]]) -> str:
    rows = "".join(
        f"<TR><TD><A Href=\"#\" OnClick=\"CheckPending2('{req_id}', '0', 'yes');return false;\">"
        f"Saved-Request Certificate ({at.strftime('%m/%d/%Y %I:%M:%S %p') if at else ''})</A></TD></TR>\r\n"
        for req_id, at in pending_requests)
    if not rows:
        inner = "<P ID=locNoPend> You have no pending certificate requests.\r\n"
    else:
        inner = ("<P ID=locSelectCert> Select the certificate request you want to view:\r\n"
                 f"<Table>\r\n{rows}</Table>\r\n")
    return _page(ca_name, (
        "<P ID=locPageTitle> <Font Face=\"Arial\" Size=+1><B> View the Status of a Pending Certificate Request"
        " </B></Font>\r\n" + inner +
        "<Form Name=SubmittedData Action=\"certfnsh.asp\" Method=Post>\r\n"
        "<Input Type=Hidden Name=Mode Value=\"chkpnd\">\r\n<Input Type=Hidden Name=ReqID Value=\"\">\r\n"
        "<Input Type=Hidden Name=TargetStoreFlags Value=\"0\">\r\n<Input Type=Hidden Name=SaveCert Value=\"yes\">"
        "\r\n</Form>"))


def unauthorized() -> str:
    """IIS's 401.1 page (Access is denied due to invalid credentials)."""
    return ("<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" "
            "\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\r\n"
            "<html xmlns=\"http://www.w3.org/1999/xhtml\">\r\n<head>\r\n"
            "<title>401 - Unauthorized: Access is denied due to invalid credentials.</title>\r\n</head>\r\n"
            "<body>\r\n<div id=\"header\"><h1>Server Error</h1></div>\r\n<div id=\"content\">\r\n"
            " <div class=\"content-container\"><fieldset>\r\n"
            "  <h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>\r\n"
            "  <h3>You do not have permission to view this directory or page using the credentials that you "
            "supplied.</h3>\r\n </fieldset></div>\r\n</div>\r\n</body>\r\n</html>\r\n")


def http_error(status: int, reason: str, detail: str) -> str:
    """IIS's error page for other statuses (404, 405, 413)."""
    return ("<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" "
            "\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\r\n"
            f"<html xmlns=\"http://www.w3.org/1999/xhtml\">\r\n<head>\r\n<title>{status} - {escape(reason)}</title>\r\n"
            f"</head>\r\n<body>\r\n<div id=\"header\"><h1>Server Error</h1></div>\r\n"
            f"<div id=\"content\">\r\n <div class=\"content-container\"><fieldset>\r\n"
            f"  <h2>{status} - {escape(reason)}</h2>\r\n  <h3>{escape(detail)}</h3>\r\n"
            " </fieldset></div>\r\n</div>\r\n</body>\r\n</html>\r\n")
