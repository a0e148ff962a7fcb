"""EST (RFC 7030, with RFC 8951's clarifications) messages, built and parsed without any I/O.

Bytes and header values go in, typed values come out (or bytes and headers go out); every way a
message can be wrong ends in one ``onlineca.errors.ParseError`` whose ``code`` is the libEST name
(``EST_ERR_BAD_PKCS10``, ``EST_ERR_BAD_CONTENT_TYPE``, ``EST_ERR_MULTIPART_PARSE`` ...).  The
server, the client, the CLI and the fuzz tests all use these functions; this module must never
open a socket, read a file, or log.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from onlineca import pki
from onlineca.errors import ParseError
from onlineca.pki import der
from onlineca.pki.csr import csr_der_from_text

WELL_KNOWN = "/.well-known/est"
OPERATIONS = ("cacerts", "simpleenroll", "simplereenroll", "serverkeygen", "csrattrs", "fullcmc")

CT_PKCS10 = "application/pkcs10"
CT_PKCS7 = "application/pkcs7-mime"
CT_PKCS7_CERTS = "application/pkcs7-mime; smime-type=certs-only"
CT_CSRATTRS = "application/csrattrs"
CT_PKCS8 = "application/pkcs8"
CT_MULTIPART = "multipart/mixed"

# Bigger than any sane EST message; parsers refuse more before decoding anything.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# RFC 7030 3.2.2: the CA label is one path segment; we accept the URI "unreserved" characters.
_LABEL_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


# --------------------------------------------------------------------------- small values

@dataclass(frozen=True)
class ESTPath:
    """Where a request goes: an optional CA label and the operation."""

    label: str | None
    operation: str

    def url_path(self) -> str:
        mid = f"/{self.label}" if self.label else ""
        return f"{WELL_KNOWN}{mid}/{self.operation}"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer as values: status, headers, body (the server writes it, the tests read it)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


@dataclass(frozen=True)
class CsrAttribute:
    """An ``Attribute`` of a CsrAttrs: its type OID and each value as DER."""

    type: str
    values: tuple[bytes, ...]


@dataclass(frozen=True)
class CsrAttrs:
    """RFC 7030 4.5.2 ``CsrAttrs``: OIDs the client should use and attributes it should include."""

    items: tuple[str | CsrAttribute, ...] = field(default_factory=tuple)

    @property
    def oids(self) -> list[str]:
        return [i for i in self.items if isinstance(i, str)]

    @property
    def attributes(self) -> list[CsrAttribute]:
        return [i for i in self.items if isinstance(i, CsrAttribute)]


@dataclass(frozen=True)
class ServerKeygenResult:
    """The two parts of a /serverkeygen answer: the PKCS#8 private key (DER) and the certificates."""

    private_key_der: bytes
    certificates: list[x509.Certificate]


# --------------------------------------------------------------------------- headers and paths

def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``'application/pkcs7-mime; smime-type=certs-only'`` to ``('application/pkcs7-mime', {...})``."""
    if value is None:
        return "", {}
    if len(value) > 1024:
        raise ParseError("Content-Type header too long", code="EST_ERR_BAD_CONTENT_TYPE")
    parts = value.split(";")
    mime = parts[0].strip().lower()
    params: dict[str, str] = {}
    for part in parts[1:]:
        name, sep, val = part.partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        params[name.strip().lower()] = val
    return mime, params


def parse_est_path(path: str) -> ESTPath:
    """``/.well-known/est[/<label>]/<operation>`` to an ESTPath; ParseError for anything else."""
    if not path.startswith(WELL_KNOWN + "/"):
        raise ParseError(f"not an EST path: {path[:80]!r}", code="EST_ERR_HTTP_NOT_FOUND")
    rest = path[len(WELL_KNOWN) + 1:].rstrip("/").split("/")
    if len(rest) == 1:
        label, op = None, rest[0]
    elif len(rest) == 2:
        label, op = rest
        # RFC 7030 3.2.2: a label may not be an operation name (it would be ambiguous).
        if not _LABEL_RE.match(label) or label in OPERATIONS:
            raise ParseError(f"invalid CA label {label[:80]!r}", code="EST_ERR_HTTP_INVALID_PATH_SEGMENT")
    else:
        raise ParseError(f"too many path segments in {path[:80]!r}", code="EST_ERR_HTTP_INVALID_PATH_SEGMENT")
    if op not in OPERATIONS:
        raise ParseError(f"unknown EST operation {op[:40]!r}", code="EST_ERR_HTTP_NOT_FOUND")
    return ESTPath(label, op)


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> int:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        raise ParseError("missing Retry-After header", code="EST_ERR_INVALID_RETRY_VALUE")
    text = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", text):  # ASCII only: str.isdigit() accepts '²'
        return int(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise ParseError(f"invalid Retry-After value {text[:40]!r}", code="EST_ERR_INVALID_RETRY_VALUE") from None
    if when is None:
        raise ParseError(f"invalid Retry-After value {text[:40]!r}", code="EST_ERR_INVALID_RETRY_VALUE")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0, int((when - now).total_seconds()))


# --------------------------------------------------------------------------- base64 bodies

def decode_base64_body(body: bytes, code: str = "EST_ERR_BAD_BASE64") -> bytes:
    """Base64 as RFC 8951 asks: always base64 whatever Content-Transfer-Encoding says; any
    whitespace or line breaks (LF or CRLF) tolerated, and NUL bytes or whitespace after it."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise ParseError(f"message too large ({len(body)} bytes)", code="EST_ERR_BUF_EXCEEDS_MAX_LEN")
    # Trailing NUL bytes are tolerated as other clients do: libEST's example server ends its
    # /csrattrs answer with the C string's terminator.
    compact = b"".join(bytes(body).rstrip(b"\x00 \t\r\n").split())
    if not compact:
        raise ParseError("empty message body", code="EST_ERR_ZERO_LENGTH_BUF")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError("message body is not valid base64", code=code) from None


def encode_base64_body(der: bytes, line_length: int = 64) -> bytes:
    raw = base64.b64encode(der)
    return b"\r\n".join(raw[i:i + line_length] for i in range(0, len(raw), line_length)) + b"\r\n"


# --------------------------------------------------------------------------- PKCS#10 requests

def encode_pkcs10(csr: x509.CertificateSigningRequest) -> tuple[dict[str, str], bytes]:
    """Headers and body of a simpleenroll/simplereenroll/serverkeygen request."""
    return {"Content-Type": CT_PKCS10, "Content-Transfer-Encoding": "base64"}, encode_base64_body(pki.csr_der(csr))


def read_pkcs10(body: bytes, content_type: str | None, *,
                verify: bool = True) -> tuple[x509.CertificateSigningRequest, bytes]:
    """The verified PKCS#10 of an enrollment request body, and its DER as sent.

    Content-Type must be ``application/pkcs10``.  The body is base64 (with or without the
    Content-Transfer-Encoding header, line breaks and whitespace tolerated, RFC 8951); a PEM
    wrapper is tolerated too, since ``openssl req`` output is often sent as is.  The request's
    self-signature must verify (``verify=False``: the caller checks another signature, e.g. a
    vouched request's, ``pki.vouch``).
    """
    mime, _ = parse_content_type(content_type)
    if mime != CT_PKCS10:
        raise ParseError(f"enrollment requests must be {CT_PKCS10}, not {mime[:60] or 'no content type'!r}",
                         code="EST_ERR_BAD_CONTENT_TYPE")
    if not body.strip():
        raise ParseError("empty certificate request", code="EST_ERR_NO_CSR")
    try:
        der = csr_der_from_text(bytes(body))
        return pki.parse_csr(der, verify=verify), der
    except ParseError as exc:
        raise ParseError(f"bad PKCS#10 request: {exc.message}", code="EST_ERR_BAD_PKCS10") from None


def parse_pkcs10(body: bytes, content_type: str | None) -> x509.CertificateSigningRequest:
    """The verified PKCS#10 of an enrollment request body (see ``read_pkcs10``)."""
    return read_pkcs10(body, content_type)[0]


# --------------------------------------------------------------------------- certs-only PKCS#7

def certs_only_reply(certs: Sequence[x509.Certificate | bytes]) -> Reply:
    """200 with a base64 certs-only PKCS#7 of the certificates (objects, or DER sent as it is)."""
    body = encode_base64_body(pki.pkcs7_der(certs))
    return Reply(200, (("Content-Type", CT_PKCS7_CERTS), ("Content-Transfer-Encoding", "base64")), body)


def _check_pkcs7_type(content_type: str | None) -> None:
    mime, params = parse_content_type(content_type)
    if mime != CT_PKCS7:
        raise ParseError(f"expected {CT_PKCS7_CERTS}, got {mime[:60] or 'no content type'!r}",
                         code="EST_ERR_BAD_CONTENT_TYPE")
    smime = params.get("smime-type", "certs-only").lower()
    if smime != "certs-only":
        raise ParseError(f"expected smime-type=certs-only, got {smime[:40]!r}", code="EST_ERR_BAD_CONTENT_TYPE")


def parse_certs_only(body: bytes, content_type: str | None) -> list[x509.Certificate]:
    """The certificates of a cacerts/simpleenroll answer (base64 certs-only PKCS#7)."""
    _check_pkcs7_type(content_type)
    der = decode_base64_body(body)
    try:
        return pki.parse_pkcs7(der)
    except ParseError as exc:
        raise ParseError(f"bad certs-only PKCS#7: {exc.message}", code="EST_ERR_BAD_X509") from None


# --------------------------------------------------------------------------- DER for CsrAttrs

_der = der.tlv


def der_oid(dotted: str) -> bytes:
    """The DER of an OBJECT IDENTIFIER (e.g. to put an OID as an attribute value)."""
    try:
        return der.oid(dotted)
    except ValueError as exc:
        raise ParseError(str(exc), code="EST_ERR_BAD_ASN1_HEX") from None


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int, int]:
    """(tag, content, start, end) of the element at ``pos``; ParseError if it does not fit."""
    bad = "EST_ERR_BAD_ASN1_HEX"
    if pos + 2 > len(data):
        raise ParseError("truncated DER element", code=bad)
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ParseError("high-tag-number DER tags are not used by CsrAttrs", code=bad)
    first = data[pos + 1]
    i = pos + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise ParseError("indefinite or oversized DER length", code=bad)
        if i + n > len(data):
            raise ParseError("truncated DER length", code=bad)
        length = int.from_bytes(data[i:i + n], "big")
        i += n
    if i + length > len(data):
        raise ParseError("DER element longer than its container", code=bad)
    return tag, data[i:i + length], pos, i + length


def _decode_oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise ParseError("malformed OBJECT IDENTIFIER", code="EST_ERR_BAD_ASN1_HEX")
    arcs: list[int] = []
    value = 0
    for b in content:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else ([1, first - 40] if first < 80 else [2, first - 80])
    return ".".join(str(a) for a in head + arcs[1:])


def encode_csrattrs(attrs: CsrAttrs) -> bytes:
    """The DER of a CsrAttrs sequence."""
    parts = []
    for item in attrs.items:
        if isinstance(item, str):
            parts.append(der_oid(item))
        else:
            if not item.values:
                raise ValueError("an Attribute needs at least one value")
            parts.append(_der(0x30, der_oid(item.type) + _der(0x31, b"".join(item.values))))
    return _der(0x30, b"".join(parts))


def decode_csrattrs(der: bytes) -> CsrAttrs:
    """A CsrAttrs from its DER; ParseError (EST_ERR_BAD_ASN1_HEX) for anything malformed."""
    tag, content, _, end = _read_tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise ParseError("CsrAttrs must be one DER SEQUENCE", code="EST_ERR_BAD_ASN1_HEX")
    items: list[str | CsrAttribute] = []
    pos = 0
    while pos < len(content):
        tag, inner, _, pos = _read_tlv(content, pos)
        if tag == 0x06:
            items.append(_decode_oid(inner))
        elif tag == 0x30:
            ttag, tcontent, _, tend = _read_tlv(inner, 0)
            if ttag != 0x06:
                raise ParseError("Attribute type must be an OID", code="EST_ERR_BAD_ASN1_HEX")
            stag, scontent, _, send = _read_tlv(inner, tend)
            if stag != 0x31 or send != len(inner):
                raise ParseError("Attribute values must be one SET", code="EST_ERR_BAD_ASN1_HEX")
            values = []
            vpos = 0
            while vpos < len(scontent):
                _, _, start, vpos = _read_tlv(scontent, vpos)
                values.append(bytes(scontent[start:vpos]))
            if not values:
                raise ParseError("Attribute with no value", code="EST_ERR_BAD_ASN1_HEX")
            items.append(CsrAttribute(_decode_oid(tcontent), tuple(values)))
        else:
            raise ParseError(f"unexpected DER tag 0x{tag:02x} in CsrAttrs", code="EST_ERR_BAD_ASN1_HEX")
    return CsrAttrs(tuple(items))


def csrattrs_reply(attrs: CsrAttrs) -> Reply:
    """200 with the base64 CsrAttrs, or 204 when there is nothing to ask for (RFC 7030 4.5.2)."""
    if not attrs.items:
        return Reply(204)
    return Reply(200, (("Content-Type", CT_CSRATTRS), ("Content-Transfer-Encoding", "base64")),
                 encode_base64_body(encode_csrattrs(attrs)))


def parse_csrattrs(body: bytes, content_type: str | None) -> CsrAttrs:
    mime, _ = parse_content_type(content_type)
    if mime != CT_CSRATTRS:
        raise ParseError(f"expected {CT_CSRATTRS}, got {mime[:60] or 'no content type'!r}",
                         code="EST_ERR_BAD_CONTENT_TYPE")
    return decode_csrattrs(decode_base64_body(body))


# --------------------------------------------------------------------------- serverkeygen multipart

def serverkeygen_reply(private_key_der: bytes, certs: Sequence[x509.Certificate | bytes],
                       boundary: str | None = None) -> Reply:
    """RFC 7030 4.4.2: multipart/mixed, the PKCS#8 key first, then the certs-only PKCS#7."""
    boundary = boundary or "est-" + secrets.token_hex(12)
    key_part = (f"--{boundary}\r\nContent-Type: {CT_PKCS8}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                ).encode() + encode_base64_body(private_key_der)
    cert_part = (f"--{boundary}\r\nContent-Type: {CT_PKCS7_CERTS}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                 ).encode() + encode_base64_body(pki.pkcs7_der(certs))
    body = key_part + cert_part + f"--{boundary}--\r\n".encode()
    return Reply(200, (("Content-Type", f"{CT_MULTIPART}; boundary={boundary}"),), body)


def _split_part(part: bytes) -> tuple[dict[str, str], bytes]:
    part = part.lstrip(b"\r\n") if part.startswith((b"\r\n", b"\n")) else part
    sep = re.search(rb"\r?\n\r?\n", part)
    if sep is None:
        raise ParseError("multipart part without a header/body separator", code="EST_ERR_MULTIPART_PARSE")
    headers: dict[str, str] = {}
    for line in part[:sep.start()].splitlines():
        name, colon, value = line.partition(b":")
        if not colon:
            raise ParseError("malformed header line in a multipart part", code="EST_ERR_MULTIPART_PARSE")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers, part[sep.end():]


def parse_serverkeygen(body: bytes, content_type: str | None) -> ServerKeygenResult:
    """The key (PKCS#8 DER) and certificates of a /serverkeygen answer."""
    mime, params = parse_content_type(content_type)
    if mime != CT_MULTIPART:
        raise ParseError(f"expected {CT_MULTIPART}, got {mime[:60] or 'no content type'!r}",
                         code="EST_ERR_BAD_CONTENT_TYPE")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise ParseError("multipart/mixed without a usable boundary", code="EST_ERR_MULTIPART_PARSE")
    delim = b"--" + boundary.encode("latin-1", "replace")
    chunks = body.split(delim)
    if len(chunks) < 3:
        raise ParseError("multipart body has fewer than two parts", code="EST_ERR_MULTIPART_PARSE")
    key_der: bytes | None = None
    certs: list[x509.Certificate] | None = None
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        headers, content = _split_part(chunk)
        ptype, pparams = parse_content_type(headers.get("content-type"))
        if ptype == CT_PKCS8:
            key_der = decode_base64_body(content, code="EST_ERR_BAD_KEY")
        elif ptype == CT_PKCS7 and pparams.get("smime-type", "certs-only").lower() == "certs-only":
            certs = parse_certs_only(content, headers.get("content-type"))
        elif ptype == CT_PKCS7:
            raise ParseError("encrypted server-generated keys (CMS) are not supported",
                             code="EST_ERR_ENC_PRIV_KEY_CMS")
        else:
            raise ParseError(f"unexpected part {ptype[:60]!r} in a serverkeygen answer",
                             code="EST_ERR_MULTIPART_PARSE")
    if key_der is None or certs is None:
        raise ParseError("serverkeygen answer lacks the key or the certificate part", code="EST_ERR_MULTIPART_PARSE")
    try:
        pki.load_private_key(key_der)
    except ParseError as exc:
        raise ParseError(f"server-generated key is not PKCS#8: {exc.message}", code="EST_ERR_BAD_KEY") from None
    return ServerKeygenResult(key_der, certs)


# --------------------------------------------------------------------------- retries and errors

def retry_reply(seconds: int, status: int = 202, message: str = "") -> Reply:
    """202 (request accepted, not yet issued) or 503 (busy), each with Retry-After (RFC 7030 4.2.3)."""
    text = message or ("The request is pending; retry after the indicated delay." if status == 202
                       else "The server is busy; retry after the indicated delay.")
    return Reply(status, (("Retry-After", str(max(1, int(seconds)))), ("Content-Type", "text/plain; charset=utf-8")),
                 text.encode() + b"\n")


def error_reply(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    """A plain-text error answer (RFC 7030 4.2.3: human-readable text is allowed)."""
    return Reply(status, (("Content-Type", "text/plain; charset=utf-8"), *headers), message.encode() + b"\n")


def error_text(body: bytes, limit: int = 300) -> str:
    """A printable one-line excerpt of an error body, safe to show and log."""
    text = body[:limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


# --------------------------------------------------------------------------- tls-unique PoP

def tls_unique_challenge(binding: bytes) -> str:
    """RFC 7030 3.5: the challengePassword a client puts in its CSR: base64 of tls-unique."""
    return base64.b64encode(binding).decode()


def check_tls_unique(csr: x509.CertificateSigningRequest, binding: bytes | None) -> None:
    """ParseError (EST_ERR_AUTH_FAIL_TLSUID) unless the CSR's challengePassword is this TLS
    session's tls-unique value.  Compared in constant time."""
    if not binding:
        raise ParseError("proof of possession needs tls-unique, which this TLS session does not have "
                         "(TLS 1.3 has none: see docs/est.md)", code="EST_ERR_AUTH_FAIL_TLSUID")
    got = pki.csr_challenge_password(csr)
    if got is None:
        raise ParseError("the CSR has no challengePassword carrying tls-unique", code="EST_ERR_AUTH_FAIL_TLSUID")
    want = tls_unique_challenge(binding).encode()
    if not hmac.compare_digest(bytes(got).strip(), want):
        raise ParseError("the CSR's challengePassword does not match this TLS session's tls-unique",
                         code="EST_ERR_AUTH_FAIL_TLSUID")
