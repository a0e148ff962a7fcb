"""The CA's request policy, sans-I/O: read a certfnsh.asp submission, pick the template, decide.

Bytes and strings in (the ``CertRequest`` text, the ``CertAttrib`` lines, the requester's name),
a typed ``Decision`` out: issue, hold for a certificate manager, or deny with the HRESULT and the
disposition message that AD CS would show.  The codes are AD CS's own (certsrv.h, winerror.h) so
that clients and administrators read the same numbers as from a Windows CA.  This module never
signs, never touches the database and never does I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from onlineca import pki
from onlineca.config import TemplateConfig
from onlineca.errors import ParseError, RequestRefused

# HRESULTs (certsrv.h / winerror.h) and the text AD CS prints after them.
S_OK = 0x00000000
E_INVALIDARG = 0x80070057
E_ACCESSDENIED = 0x80070005
CRYPT_E_NOT_FOUND = 0x80092004
CRYPT_E_ASN1_EOD = 0x80093102
CRYPT_E_ASN1_BADTAG = 0x8009310B
NTE_BAD_SIGNATURE = 0x80090006
NTE_BAD_ALGID = 0x80090008
CERTSRV_E_TEMPLATE_DENIED = 0x80094012
CERTSRV_E_ADMIN_DENIED_REQUEST = 0x80094014
CERTSRV_E_UNSUPPORTED_CERT_TYPE = 0x80094800
CERTSRV_E_NO_CERT_TYPE = 0x80094801
CERTSRV_E_KEY_LENGTH = 0x80094811

HRESULT_TEXT = {
    S_OK: "The operation completed successfully. 0x0 (WIN32: 0)",
    E_INVALIDARG: "The parameter is incorrect. 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)",
    E_ACCESSDENIED: "Access is denied. 0x80070005 (WIN32: 5 ERROR_ACCESS_DENIED)",
    CRYPT_E_NOT_FOUND: "Cannot find object or property. 0x80092004 (-2146885628 CRYPT_E_NOT_FOUND)",
    CRYPT_E_ASN1_EOD: "ASN1 unexpected end of data. 0x80093102 (ASN: 258 CRYPT_E_ASN1_EOD)",
    CRYPT_E_ASN1_BADTAG: "ASN1 bad tag value met. 0x8009310b (ASN: 267 CRYPT_E_ASN1_BADTAG)",
    NTE_BAD_SIGNATURE: "Invalid Signature. 0x80090006 (-2146893818 NTE_BAD_SIGNATURE)",
    NTE_BAD_ALGID: "Invalid algorithm specified. 0x80090008 (-2146893816 NTE_BAD_ALGID)",
    CERTSRV_E_ADMIN_DENIED_REQUEST: ("The request was denied by a certificate manager or CA administrator. "
                                     "0x80094014 (-2146877420 CERTSRV_E_ADMIN_DENIED_REQUEST)"),
}

TAKEN_UNDER_SUBMISSION = "Taken Under Submission"
ISSUED_MESSAGE = "Issued"


def hresult_hex(hr: int) -> str:
    return f"0x{hr & 0xFFFFFFFF:08x}"


def to_signed(hr: int) -> int:
    """An HRESULT as Windows stores it (a signed 32-bit LONG), so it fits an INTEGER column."""
    hr &= 0xFFFFFFFF
    return hr - 0x100000000 if hr >= 0x80000000 else hr


def to_unsigned(hr: int) -> int:
    return hr & 0xFFFFFFFF


def policy_denial(hr: int, text: str) -> str:
    """AD CS's policy-module denial: two spaces after "Module", a line break before the quote."""
    return f"Denied by Policy Module  {hresult_hex(hr)}, {text}\r\n"


def parse_failure(hr: int) -> str:
    return f"Error Parsing Request  {HRESULT_TEXT[hr]}"


# ---------------------------------------------------------------------------------------------
# The submission


_ANY_PEM_LINE = re.compile(r"-----(?:BEGIN|END)[^-\r\n]*-----")


def request_der(text: str) -> bytes:
    """The DER of a ``CertRequest`` field: PEM (LF or CRLF), headers glued to one-line base64, or
    bare base64.  Raises RequestRefused with the ASN.1 code AD CS reports for what it finds."""
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
    """``CertAttrib``: ``Name:Value`` lines (CRLF or LF); names compared case-insensitively.

    The first value of a name wins, as AD CS takes the first CertificateTemplate line.
    """
    out: dict[str, str] = {}
    for line in re.split(r"\r\n|\n|\r", text or ""):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out.setdefault(name.strip().lower(), value.strip())
    return out


# ---------------------------------------------------------------------------------------------
# The decision


@dataclass(frozen=True)
class Decision:
    """What to do with a well-formed request: ``issue`` or ``pending`` (deny raises)."""

    template: TemplateConfig
    action: str  # "issue" | "pending"
    subject: x509.Name
    sans: Sequence[x509.GeneralName] = field(default_factory=tuple)


def may_enroll(template: TemplateConfig, user: str) -> bool:
    allowed = {u.lower() for u in template.enroll}
    return "*" in allowed or user.lower() in allowed


def offered_templates(templates: Sequence[TemplateConfig], user: str) -> list[TemplateConfig]:
    """The templates this user may enroll for, as certrqxt.asp lists them."""
    return [t for t in templates if may_enroll(t, user)]


def find_template(templates: Sequence[TemplateConfig], name: str) -> TemplateConfig | None:
    wanted = name.strip().lower()
    for t in templates:
        if t.name.lower() == wanted:
            return t
    return None


def decide(templates: Sequence[TemplateConfig], user: str, attributes: dict[str, str],
           csr: x509.CertificateSigningRequest) -> Decision:
    """Apply the template named in ``attributes`` to ``csr`` for ``user``; deny with RequestRefused."""
    name = attributes.get("certificatetemplate", "")
    if not name:
        raise RequestRefused(CERTSRV_E_NO_CERT_TYPE, policy_denial(
            CERTSRV_E_NO_CERT_TYPE, "The request contains no certificate template information."))
    template = find_template(templates, name)
    if template is None:
        raise RequestRefused(CERTSRV_E_UNSUPPORTED_CERT_TYPE, policy_denial(
            CERTSRV_E_UNSUPPORTED_CERT_TYPE, "The request was for a certificate template that is not "
            f"supported by the Active Directory Certificate Services policy: {name}."))
    if not may_enroll(template, user):
        raise RequestRefused(CERTSRV_E_TEMPLATE_DENIED, policy_denial(
            CERTSRV_E_TEMPLATE_DENIED, "The permissions on the certificate template do not allow the "
            "current user to enroll for this type of certificate."))
    try:
        key_type, bits = pki.key_spec(csr.public_key())  # type: ignore[arg-type]
    except Exception:
        key_type, bits = "", 0
    if key_type not in template.allowed_key_types:
        raise RequestRefused(NTE_BAD_ALGID, policy_denial(
            NTE_BAD_ALGID, f"The template {template.name} does not allow {key_type or 'this'} keys "
            f"(allowed: {', '.join(template.allowed_key_types)})."))
    minimum = template.min_rsa_bits if key_type == "rsa" else template.min_ec_bits
    if bits < minimum:
        raise RequestRefused(CERTSRV_E_KEY_LENGTH, policy_denial(
            CERTSRV_E_KEY_LENGTH, "The public key does not meet the minimum size required by the "
            f"specified certificate template ({key_type.upper()} {bits} < {minimum} bits)."))
    subject = csr.subject if template.subject_from_request else pki.parse_name(f"CN={user}")
    sans_ext = pki.csr_sans(csr)
    sans = tuple(sans_ext) if sans_ext is not None else ()
    if not subject.rdns and not sans:
        raise RequestRefused(E_INVALIDARG, policy_denial(
            E_INVALIDARG, "The request has neither a subject name nor a subject alternative name."))
    return Decision(template, "pending" if template.manager_approval else "issue", subject, sans)
