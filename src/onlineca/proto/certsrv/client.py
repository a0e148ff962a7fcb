"""AD CS web enrollment (``/certsrv``), sans-I/O: the URLs and form bodies a client sends, and
typed values read from every page the CA answers with.

What a page must contain is what existing AD CS clients rely on (the ``certsrv`` package's regular
expressions, browsers' template lists): the issued link ``certnew.cer?ReqID=N&``, ``Certificate
Pending`` with ``Your Request Id is N.``, ``The disposition message is "..."``, the certnew.cer
error page's ``Disposition message:`` value, ``var nRenewals=N;`` and the content types of
downloads.  Failures are ``CertsrvFailure`` subclasses carrying a stable code, a hint, and the
curl return code and message that the source document's logs print for the same cause.
This module never does I/O, never logs and never sees a password.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from cryptography import x509

from onlineca import pki
from onlineca.errors import (
    CAAuthError,
    CAChainError,
    CAConnectError,
    CADeniedError,
    CADNSError,
    CAHTTPError,
    CAPageError,
    CATemplateError,
    CATimeoutError,
    CATLSError,
    CertsrvFailure,
    ParseError,
    fix_for,
)
from onlineca.proto.certsrv.hresults import TEMPLATE_HRESULTS, hresult_hex, parse_hresult
from onlineca.proto.results import Denied, EnrollResult, Issued, Pending

# AD CS chooses content types and page scripts from the User-Agent; a browser's gets the pages
# every client was written against.
BROWSER_USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Trident/7.0; rv:11.0) like Gecko"

CERT_CONTENT_TYPES = frozenset({
    "application/pkix-cert", "application/x-x509-user-cert", "application/x-x509-ca-cert",
})
PKCS7_CONTENT_TYPES = frozenset({"application/x-pkcs7-certificates", "application/pkcs7-mime"})
MAX_PAGE_BYTES = 1024 * 1024

# ---------------------------------------------------------------------------------------------
# Result types (Issued, Pending and Denied are proto.results'; HRESULTs are proto.certsrv.hresults')


@dataclass(frozen=True)
class Template:
    """A certificate template offered on certrqxt.asp: its (real) name and display name."""

    name: str
    display_name: str = ""
    kind: str = "E"  # E: enterprise (directory) template, O: offline template


@dataclass(frozen=True)
class IssuedPage:
    """certfnsh.asp said "Certificate Issued"; the certificate is fetched on certnew.cer."""

    req_id: int


Disposition = IssuedPage | Pending | Denied


def denial_error(denied: Denied) -> CertsrvFailure:
    """The failure to raise for a CA's denial: CA_TEMPLATE for template HRESULTs, else CA_DENIED."""
    who = f"request {denied.req_id}" if denied.req_id is not None else "the request"
    text = f"the CA denied {who}: {denied.message}"
    code = hresult_hex(denied.hresult)
    details = {"req_id": denied.req_id, "hresult": code, "disposition": denied.message}
    said = f"HRESULT {code} ({denied.message})" if denied.hresult is not None else denied.message
    if denied.hresult in TEMPLATE_HRESULTS:
        return CATemplateError(text, curl_message=said, details=details)
    return CADeniedError(text, curl_message=said, details=details)


# ---------------------------------------------------------------------------------------------
# URLs and forms


def certsrv_base(url: str) -> str:
    """The ``https://host[:port]/certsrv`` base of a configured CA URL, without trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ParseError(f"not an http(s) URL: {url!r}", hint="Set ca_url to https://HOST[:PORT]/certsrv.")
    path = parts.path.rstrip("/")
    for page in ("/certrqxt.asp", "/certfnsh.asp", "/certnew.cer", "/certnew.p7b", "/certcarc.asp"):
        if path.lower().endswith(page):
            path = path[: -len(page)]
    if not path:
        path = "/certsrv"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def page_url(base: str, page: str, query: Mapping[str, str | int] | None = None) -> str:
    url = f"{base}/{page}"
    if query:
        # AD CS clients send these parameters literally, e.g. ReqID=CACert&Renewal=0&Enc=bin.
        url += "?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items())
    return url


def login_url(base: str) -> str:
    # The trailing slash avoids the 301 that /certsrv answers once authenticated.
    return base + "/"


def certnew_cer_url(base: str, req_id: int | str, enc: str = "bin", renewal: int | None = None) -> str:
    _check_enc(enc)
    query: dict[str, str | int] = {"ReqID": _req_id(req_id)}
    if renewal is not None:
        query["Renewal"] = int(renewal)
    query["Enc"] = enc
    return page_url(base, "certnew.cer", query)


def certnew_p7b_url(base: str, renewal: int = 0, enc: str = "bin") -> str:
    _check_enc(enc)
    return page_url(base, "certnew.p7b", {"ReqID": "CACert", "Renewal": int(renewal), "Enc": enc})


def _check_enc(enc: str) -> None:
    if enc not in ("bin", "b64"):
        raise ValueError(f"Enc must be 'bin' or 'b64', not {enc!r}")


def _req_id(req_id: int | str) -> str:
    if req_id == "CACert":
        return "CACert"
    if isinstance(req_id, bool) or not str(req_id).isdigit():
        raise ValueError(f"ReqID must be a number or 'CACert', not {req_id!r}")
    return str(int(req_id))


def _check_attribute(text: str, what: str) -> str:
    # A CR or LF would start a new attribute line: a template name could smuggle attributes.
    if not text or any(c in text for c in "\r\n\x00"):
        raise ValueError(f"{what} must be non-empty and on one line: {text!r}")
    return text


def newreq_form(csr_pem: str | bytes, template: str,
                attributes: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """The certfnsh.asp form of a new request: the PEM CSR, the template and extra attributes."""
    if isinstance(csr_pem, bytes):
        csr_pem = csr_pem.decode("ascii")
    lines = [f"CertificateTemplate:{_check_attribute(template, 'template')}"]
    pairs = attributes.items() if isinstance(attributes, Mapping) else attributes
    for name, value in pairs:
        if ":" in name:
            raise ValueError(f"attribute name must not contain ':': {name!r}")
        lines.append(f"{_check_attribute(name, 'attribute name')}:{_check_attribute(value, 'attribute value')}")
    return {
        "Mode": "newreq",
        "CertRequest": csr_pem,
        "CertAttrib": "\r\n".join(lines) + "\r\n",
        "FriendlyType": "Saved-Request Certificate",
        "TargetStoreFlags": "0",
        "SaveCert": "yes",
    }


def chkpnd_form(req_id: int) -> dict[str, str]:
    """The certfnsh.asp form that asks again about a pending request."""
    return {"Mode": "chkpnd", "ReqID": _req_id(req_id), "TargetStoreFlags": "0", "SaveCert": "yes"}


# ---------------------------------------------------------------------------------------------
# Pages


def decode_page(body: bytes) -> str:
    if len(body) > MAX_PAGE_BYTES:
        raise CAPageError(f"page too large ({len(body)} bytes)")
    return body.decode("utf-8", errors="replace")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _clean(text: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text)).split())


_OPTION = re.compile(r"<option\b[^>]*?\bvalue\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))[^>]*>(.*?)(?=</option|<option|</select|$)",
                     re.IGNORECASE | re.DOTALL)
_TEMPLATE_SELECT = re.compile(r"<select\b[^>]*\bname\s*=\s*[\"']?lbCertTemplate\b[^>]*>(.*?)</select",
                              re.IGNORECASE | re.DOTALL)


def parse_templates(page: str) -> list[Template]:
    """The templates offered on certrqxt.asp (the lbCertTemplate list).

    Each option's value is ``E;RealName;KeySpec;...;DisplayName`` (E enterprise, O offline);
    ``X`` marks AD CS's "(No templates found!)" or error line.  A bare value is the name itself.
    """
    m = _TEMPLATE_SELECT.search(page)
    if m is None:
        if "certrqxt" not in page.lower() and "certfnsh.asp" not in page.lower():
            raise CAPageError("certrqxt.asp: no certificate template list on the page")
        return []  # a standalone CA has no template list
    out: list[Template] = []
    for opt in _OPTION.finditer(m.group(1)):
        value = html.unescape(next(v for v in opt.groups()[:3] if v is not None)).strip()
        label = _clean(opt.group(4))
        if not value or value == "X":
            continue
        fields = value.split(";")
        if len(fields) >= 2 and fields[0] in ("E", "O"):
            name, kind = fields[1], fields[0]
            display = fields[-1] if len(fields) > 2 and fields[-1] else label
        else:
            name, kind, display = value, "E", label
        if name and all(t.name != name for t in out):
            out.append(Template(name=name, display_name=display or name, kind=kind))
    return out


def template_error(wanted: str, offered: Iterable[Template]) -> CATemplateError | None:
    """None when ``wanted`` is offered; otherwise CA_TEMPLATE naming what is offered and the nearest."""
    offered = list(offered)
    names = [t.name for t in offered]
    if wanted.lower() in (n.lower() for n in names):  # AD CS compares template names case-insensitively
        return None
    by_display = [t.name for t in offered if t.display_name == wanted]
    nearest = by_display[:1] or difflib.get_close_matches(wanted, names, n=1, cutoff=0.6)
    message = f"certificate template {wanted!r} is not offered to this user on certrqxt.asp"
    message += f"; offered: {', '.join(names)}" if names else "; no template is offered"
    hint = fix_for("CA_TEMPLATE")
    if nearest:
        hint = f"Did you mean {nearest[0]!r}? " + hint
    return CATemplateError(message, hint=hint, details={"template": wanted, "offered": names,
                                                        "nearest": nearest[0] if nearest else None})


_ISSUED = re.compile(r"certnew\.cer\?ReqID=(\d+)&")
_PENDING_ID = re.compile(r"Your Request Id is (\d+)\.")
_DISPOSITION = re.compile(r"The disposition message is \"([^\"]+)")
_REQ_ID_ANY = re.compile(r"Request Id is (\d+)", re.IGNORECASE)


def parse_certfnsh(page: str) -> Disposition:
    """The answer to a certfnsh.asp POST (new request or chkpnd): issued, pending or denied."""
    m = _ISSUED.search(page)
    if m:
        return IssuedPage(int(m.group(1)))
    if "Certificate Pending" in page:
        p = _PENDING_ID.search(page)
        if p is None:
            raise CAPageError("certfnsh.asp: 'Certificate Pending' without 'Your Request Id is N.'")
        d = _DISPOSITION.search(page)
        return Pending(int(p.group(1)), _clean(d.group(1)) if d else "")
    d = _DISPOSITION.search(page)
    if d:
        message = _clean(d.group(1))
        r = _REQ_ID_ANY.search(page)
        return Denied(message, req_id=int(r.group(1)) if r else None, hresult=parse_hresult(message))
    raise CAPageError("certfnsh.asp: neither an issued link, 'Certificate Pending' nor a disposition message")


_ERR_DISPOSITION = re.compile(r"Disposition message:[^\t]+\t\t([^\r\n]+)")
_ERR_LABEL = re.compile(r"<B>\s*{label}:\s*</B>.*?<DD>(.*?)(?:</DD>|<DT)", re.IGNORECASE | re.DOTALL)


def _labelled(page: str, label: str) -> str:
    m = re.compile(_ERR_LABEL.pattern.replace("{label}", re.escape(label)), _ERR_LABEL.flags).search(page)
    return _clean(m.group(1)) if m else ""


def parse_error_page(page: str, req_id: int | None = None) -> Pending | Denied:
    """certnew.cer's (certrser.asp's) error page: pending when "Taken Under Submission", else denied."""
    m = _ERR_DISPOSITION.search(page)
    message = _clean(m.group(1)) if m else _labelled(page, "Disposition message")
    result = _labelled(page, "Result")
    text = message or result or _clean(page)[:200]
    if not (m or message or result):
        raise CAPageError("certnew.cer: neither a certificate nor an AD CS error page")
    if "under submission" in f"{message} {result}".lower() and req_id is not None:
        return Pending(req_id, message or result)
    return Denied(text, req_id=req_id, hresult=parse_hresult(result) or parse_hresult(message))


def _looks_like_certificate(body: bytes) -> bool:
    head = body.lstrip()[:40]
    return head.startswith(b"-----BEGIN CERTIFICATE-----") or head[:1] == b"\x30"


def parse_certnew_cer(content_type: str | None, body: bytes, req_id: int | None = None) -> EnrollResult:
    """A certnew.cer answer: Issued (the certificate's DER as sent, or decoded from PEM; parsed
    once here, and kept), or what its error page says.

    A certificate content type means a certificate; with a non-browser User-Agent AD CS serves the
    same bytes as text/html, so an HTML type whose body is a certificate is accepted as well.
    """
    mt = media_type(content_type)
    if mt in CERT_CONTENT_TYPES or (mt in ("text/html", "text/plain", "") and _looks_like_certificate(body)):
        try:
            issued = Issued(pki.cert_der_from_text(body), req_id=req_id)
            issued.certificate  # noqa: B018  (parsed once: the answer must be a certificate)
        except ParseError as exc:
            raise CAPageError(f"certnew.cer: the certificate does not parse: {exc.message}") from None
        return issued
    return parse_error_page(decode_page(body), req_id)


def parse_certnew_p7b(content_type: str | None, body: bytes) -> list[x509.Certificate]:
    """The CA chain from certnew.p7b (DER, or base64 in CERTIFICATE markers), leaf first."""
    mt = media_type(content_type)
    if mt not in PKCS7_CONTENT_TYPES and not (mt in ("text/html", "text/plain", "") and
                                              (body[:1] == b"\x30" or body.lstrip().startswith(b"-----BEGIN"))):
        message = parse_error_page(decode_page(body)).message if b"Disposition" in body else (
            f"certnew.p7b answered {mt or 'no content type'}, not application/x-pkcs7-certificates")
        raise CAChainError(f"cannot retrieve the CA chain: {message}")
    try:
        certs = pki.parse_pkcs7(body)
    except ParseError as exc:
        raise CAChainError(f"certnew.p7b: {exc.message}") from None
    return pki.order_chain(certs)


_RENEWALS = re.compile(r"var nRenewals=(\d+);")


def parse_certcarc(page: str) -> int:
    """The number of CA certificate renewals, from certcarc.asp (``var nRenewals=N;``)."""
    m = _RENEWALS.search(page)
    if m is None:
        raise CAPageError("certcarc.asp: no 'var nRenewals=N;'")
    return int(m.group(1))


_PENDING_ENTRY = re.compile(
    r"CheckPending2\(\s*'(\d+)'|name\s*=\s*[\"']?ReqID[\"']?\s+value\s*=\s*[\"']?(\d+)", re.IGNORECASE)


def parse_certckpn(page: str) -> list[int]:
    """The request IDs listed on certckpn.asp ("View the Status of a Pending Certificate Request")."""
    ids: list[int] = []
    for m in _PENDING_ENTRY.finditer(page):
        n = int(m.group(1) or m.group(2))
        if n not in ids:
            ids.append(n)
    if not ids and "pending" not in page.lower():
        raise CAPageError("certckpn.asp: not a pending-requests page")
    return ids


# ---------------------------------------------------------------------------------------------
# HTTP answers, authentication headers, and transport failures worded as curl words them


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read whole."""

    status: int
    content_type: str
    www_authenticate: list[str]
    body: bytes


def offers_ntlm(www_authenticate: Iterable[str]) -> bool:
    return any(v.strip().split(" ", 1)[0].lower() == "ntlm" for v in www_authenticate)


def ntlm_header(token: bytes, scheme: str = "NTLM") -> str:
    return f"{scheme} " + base64.b64encode(token).decode("ascii")


def ntlm_challenge(www_authenticate: Iterable[str], scheme: str = "NTLM") -> bytes | None:
    """The server's token from ``WWW-Authenticate: NTLM <base64>`` (or ``Negotiate <base64>``), if any."""
    for value in www_authenticate:
        got, _, token = value.strip().partition(" ")
        if got.lower() == scheme.lower() and token.strip():
            try:
                return base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
    return None


def offers(www_authenticate: Iterable[str], scheme: str) -> bool:
    return any(v.strip().split(" ", 1)[0].lower() == scheme.lower() for v in www_authenticate)


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 ``tls-server-end-point`` channel binding data of a server certificate: its hash
    with the certificate's signature hash (SHA-256 for MD5 and SHA-1), prefixed as GSS-API wants
    it (``tls-server-end-point:``), what Windows sends for Extended Protection (EPA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_der_x509_certificate(cert_der)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return b"tls-server-end-point:" + digest.finalize()


def http_status_error(status: int, url: str, reason: str = "", *, offered: Iterable[str] = (),
                      auth: str = "") -> CertsrvFailure:
    """The failure for a non-2xx answer (401/403 are credentials, like ``curl --fail``'s 22).

    ``offered`` are the WWW-Authenticate values of a 401: when the CA does not offer the scheme we
    use, the hint says which to configure instead of blaming the password.
    """
    curl_message = f"The requested URL returned error: {status}"
    where = urlsplit(url).path
    if status in (401, 403):
        schemes = [v.strip().split(" ", 1)[0] for v in offered if v.strip()]
        hint = None
        if status == 401 and schemes and auth in ("basic", "ntlm") and \
                auth not in [s.lower() for s in schemes]:
            hint = (f"The CA does not offer {auth} authentication on /certsrv (it offers "
                    f"{', '.join(schemes)}): set ca_auth accordingly, or enable {auth} on the CA.")
        return CAAuthError(f"the CA refused the credentials: HTTP {status} on {where}", hint=hint,
                           curl_message=curl_message,
                           details={"status": status, "url": url, "offered": schemes})
    return CAHTTPError(f"the CA answered HTTP {status} {reason} on {where}".replace("  ", " "),
                       curl_message=curl_message, details={"status": status, "url": url})


def dns_error(host: str) -> CADNSError:
    return CADNSError(f"cannot resolve the CA host name {host!r}",
                      curl_message=f"Could not resolve: {host} (Domain name not found)", details={"host": host})


def connect_error(host: str, port: int, elapsed_ms: int, why: str = "Connection refused") -> CAConnectError:
    return CAConnectError(f"cannot connect to the CA at {host} port {port}: {why}",
                          curl_message=f"Failed to connect to {host} port {port} after {elapsed_ms} ms: {why}",
                          details={"host": host, "port": port})


def timeout_error(phase: str, url: str, timeout: float, elapsed_ms: int, received: int) -> CATimeoutError:
    ms = max(elapsed_ms, int(timeout * 1000))
    if phase == "connect":
        curl_message = f"Connection timed out after {ms} milliseconds"
    else:
        curl_message = f"Operation timed out after {ms} milliseconds with {received} bytes received"
    return CATimeoutError(f"the CA did not answer within the {phase} timeout ({timeout:g} s) on {urlsplit(url).path}",
                          curl_message=curl_message,
                          details={"phase": phase, "timeout": timeout, "elapsed_ms": elapsed_ms, "url": url})


@dataclass(frozen=True)
class PeerCertificate:
    """What the CA's web certificate says, read without verification after a TLS failure."""

    subject: str
    issuer: str
    common_name: str
    names: list[str] = field(default_factory=list)
    not_before: str = ""
    not_after: str = ""
    self_signed: bool = False

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        cert = pki.load_certificate(der)
        return cls(subject=pki.name_to_slash(cert.subject), issuer=pki.name_to_slash(cert.issuer),
                   common_name=pki.common_name(cert.subject), names=pki.san_names(cert),
                   not_before=f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
                   not_after=f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
                   self_signed=pki.is_self_signed(cert))


# OpenSSL verify codes (x509_vfy.h) and what each means for the CA's web certificate.
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN = 19
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64

_TLS_CODES: dict[int, tuple[str, str]] = {
    X509_V_ERR_CERT_NOT_YET_VALID: (
        "CA_TLS_NOT_YET_VALID",
        "Compare the clocks (NTP) of this machine and of the CA: if they agree, the CA's web certificate was "
        "issued with a future start date and must be reissued."),
    X509_V_ERR_CERT_HAS_EXPIRED: (
        "CA_TLS_EXPIRED",
        "Renew the CA's web server certificate, or check the clock (NTP) of this machine."),
    X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: (
        "CA_TLS_SELF_SIGNED",
        "Give the CA web server a certificate issued by a CA (a self-signed web certificate is not "
        "supported); put that CA's root in the RA's trust store."),
    X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: (
        "CA_TLS_UNTRUSTED",
        "Add the root of the CA web server's chain to the RA's trust store."),
    X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: (
        "CA_TLS_UNTRUSTED",
        "Add the issuer of the CA web server's certificate (and its root) to the RA's trust store."),
    X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: (
        "CA_TLS_UNTRUSTED",
        "Add the issuer of the CA web server's certificate (and its root) to the RA's trust store."),
}


def tls_error(host: str, verify_code: int | None, verify_message: str,
              peer: PeerCertificate | None = None) -> CATLSError:
    """The CA_TLS_* failure for an OpenSSL verification result, worded as curl (OpenSSL) words it."""
    details: dict[str, Any] = {"host": host, "verify_code": verify_code, "verify_message": verify_message}
    if peer is not None:
        details.update(subject=peer.subject, issuer=peer.issuer, names=peer.names,
                       not_before=peer.not_before, not_after=peer.not_after)
    if verify_code in (X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH):
        cn = peer.common_name if peer else ""
        if peer is not None and peer.names:
            curl_message = f"SSL: no alternative certificate subject name matches target host name '{host}'"
        else:
            curl_message = f"SSL: certificate subject name '{cn}' does not match target host name '{host}'"
        held = ", ".join(peer.names or [cn]) if peer else "(unknown)"
        return CATLSError(f"the CA's web certificate is for {held}, not for {host!r} (the host in ca_url)",
                          code="CA_TLS_NAME_MISMATCH", curl_code=51, curl_message=curl_message,
                          hint="Use the host name the certificate holds in ca_url (often the FQDN), or give "
                               "the CA web server a certificate with this name in its subjectAltName.",
                          details=details)
    code, hint = _TLS_CODES.get(verify_code or -1, ("CA_TLS_UNTRUSTED", fix_for("CA_TLS_UNTRUSTED")))
    message = f"the CA's web certificate failed verification: {verify_message}"
    if peer is not None:
        message += f" (subject {peer.subject}, issuer {peer.issuer}"
        if code == "CA_TLS_NOT_YET_VALID":
            message += f", valid from {peer.not_before}"
        elif code == "CA_TLS_EXPIRED":
            message += f", expired {peer.not_after}"
        message += ")"
    return CATLSError(message, code=code, curl_code=60,
                      curl_message=f"SSL certificate problem: {verify_message}", hint=hint, details=details)


def tls_handshake_error(host: str, why: str) -> CATLSError:
    return CATLSError(f"TLS handshake with the CA at {host} failed: {why}", code="CA_TLS",
                      curl_code=35, curl_message=f"OpenSSL SSL_connect: {why}", details={"host": host})
