"""The one exception hierarchy of onlineca: every exception class is defined here.

Every error carries a stable ``code`` (the source document's EST and CAPF names where they
exist) and a ``hint``: one sentence that tells an administrator what to do.  Callers catch at
the level they care about::

    OnlineCAError
    ├── ConfigError            a configuration file or value is wrong
    ├── PKIError               keys, CSRs, certificates, PKCS#7, chains
    │   ├── ParseError         bytes that are not what they claim to be
    │   └── ChainError         a chain that does not validate against the trust store
    ├── StoreError             the database
    ├── ProtocolError          a peer sent something the protocol does not allow
    ├── CertsrvError           AD CS web enrollment (/certsrv)
    │   ├── CertsrvFailure     talking to a CA failed: curl's return code and words
    │   │   └── CADNSError, CAConnectError, CATLSError, CATimeoutError, CAAuthError,
    │   │       CATemplateError, CAChainError, CADeniedError, CAPendingError, CAHTTPError,
    │   │       CAPageError
    │   ├── CAError            our own CA cannot do what was asked
    │   └── RequestRefused     our CA refuses a submission (an HRESULT and disposition)
    ├── ESTError               EST failures
    │   └── ESTCodedError      with the libEST code (and number, see proto.libest)
    ├── CAPFError              device policy and session failures, with the CAPF status
    │   ├── PolicyError        a policy value is not allowed
    │   ├── DeviceNotFound, ProfileNotFound, InventoryConflict, CSVImportError
    │   ├── CAUnavailable      the RA or CA did not answer (the operation stays pending)
    │   ├── CARejected         the RA or CA refused, or returned an unusable LSC
    │   └── PhoneGone          the phone went away mid-session (PhoneSilent: it stopped answering)
    ├── PhoneError             the device simulator cannot do what was asked
    └── TraceError             a device timeline cannot be built

This module imports nothing of onlineca and does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal


class OnlineCAError(Exception):
    """Root of all onlineca errors.  ``hint`` is the code's fix sentence from ``CODES`` unless the
    raise site knows a sharper one (the exact command to run, the setting that is wrong)."""

    code: str = "ONLINECA_ERROR"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint: str = hint if hint is not None else fix_for(self.code)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(OnlineCAError):
    code = "CONFIG"


class PKIError(OnlineCAError):
    code = "PKI"


class ParseError(PKIError):
    """Input bytes could not be parsed (hostile or truncated input ends here, never elsewhere)."""

    code = "PARSE"


class ChainError(PKIError):
    code = "CHAIN"


class StoreError(OnlineCAError):
    code = "STORE"


class ProtocolError(OnlineCAError):
    code = "PROTOCOL"


class CertsrvError(OnlineCAError):
    code = "CERTSRV"


class ESTError(OnlineCAError):
    code = "EST_ERR_UNKNOWN"


class CAPFError(OnlineCAError):
    code = "CAPF"


# --------------------------------------------------------------------------------- certsrv


class CertsrvFailure(CertsrvError):
    """A failure talking to the CA, with the curl return code and message for the RA's logs."""

    code = "CERTSRV"
    curl_code: int = 0
    curl_message: str = ""

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None,
                 curl_code: int | None = None, curl_message: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, code=code, hint=hint)
        if curl_code is not None:
            self.curl_code = curl_code
        if curl_message is not None:
            self.curl_message = curl_message
        self.details: dict[str, Any] = dict(details or {})

    @property
    def reason(self) -> str:
        """``return code 60 (SSL certificate problem: ...)``, as the source document logs it; for a
        CA's answer (curl itself succeeded) the HRESULT and disposition message instead."""
        if self.curl_code:
            return f"return code {self.curl_code} ({self.curl_message})"
        return self.curl_message or self.message


class CADNSError(CertsrvFailure):
    code = "CA_DNS"
    curl_code = 6


class CAConnectError(CertsrvFailure):
    code = "CA_CONNECT"
    curl_code = 7


class CATLSError(CertsrvFailure):
    """The CA's web certificate failed verification; ``code`` says why (CA_TLS_*)."""

    code = "CA_TLS"
    curl_code = 35


class CATimeoutError(CertsrvFailure):
    code = "CA_TIMEOUT"
    curl_code = 28


class CAAuthError(CertsrvFailure):
    code = "CA_AUTH"
    curl_code = 22


class CATemplateError(CertsrvFailure):
    code = "CA_TEMPLATE"


class CAChainError(CertsrvFailure):
    code = "CA_CHAIN"


class CADeniedError(CertsrvFailure):
    code = "CA_DENIED"


class CAPendingError(CertsrvFailure):
    code = "CA_PENDING"


class CAHTTPError(CertsrvFailure):
    code = "CA_HTTP"
    curl_code = 22


class CAPageError(CertsrvFailure):
    """A page that is not what an AD CS page of that name contains."""

    code = "CA_PROTOCOL"
    curl_code = 0


class CAError(CertsrvError):
    code = "CA"


class RequestRefused(CertsrvError):
    """A submission the CA refuses; ``hresult`` and ``disposition`` are what the denied page shows."""

    code = "CA_DENIED"

    def __init__(self, hresult: int, disposition: str, *, stored: bool = True) -> None:
        super().__init__(disposition.strip())
        self.hresult = hresult
        self.disposition = disposition
        # False for submissions AD CS rejects before they become a request (no ReqID).
        self.stored = stored


# --------------------------------------------------------------------------------- EST

class ESTCodedError(ESTError):
    """An EST failure with its libEST name (``code``; ``proto.libest`` has its number).

    ``http_status`` is the HTTP status that carried it (if any) and ``retry_after`` the seconds a
    server asked to wait (202 or 503), so callers can decide what to do without parsing text.
    """

    def __init__(self, code: str, message: str, *, hint: str | None = None,
                 http_status: int | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, code=code, hint=hint)
        self.http_status = http_status
        self.retry_after = retry_after


# --------------------------------------------------------------------------------- CAPF


class PolicyError(CAPFError):
    """A policy value is not allowed; ``field`` names the setting so the message can point at it."""

    code = "CAPF_POLICY"

    def __init__(self, field_name: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field_name}: {message}", hint=hint)
        self.field = field_name


class DeviceNotFound(CAPFError):
    code = "CAPF_DEVICE_UNKNOWN"


class ProfileNotFound(CAPFError):
    code = "CAPF_PROFILE_UNKNOWN"


class InventoryConflict(CAPFError):
    code = "CAPF_CONFLICT"


class CSVImportError(CAPFError):
    """A bulk file had bad lines; ``errors`` lists ``(line number, message)``; nothing was imported."""

    code = "CAPF_CSV"

    def __init__(self, errors: Sequence[tuple[int, str]]) -> None:
        self.errors = list(errors)
        shown = "; ".join(f"line {n}: {m}" for n, m in self.errors[:20])
        more = f" (and {len(self.errors) - 20} more)" if len(self.errors) > 20 else ""
        super().__init__(f"{len(self.errors)} bad line(s): {shown}{more}")


class CAUnavailable(CAPFError):
    """The RA (or the CA behind it) did not answer, or asked to come back later."""

    code = "CAPF_CA_COMM_FAILURE"

    def __init__(self, message: str, *, est_code: str = "EST_ERR_UNKNOWN", retry_after: int | None = None) -> None:
        super().__init__(message)
        self.est_code = est_code
        self.retry_after = retry_after


class CARejected(CAPFError):
    """The RA refused the request, or what it returned is not a usable LSC for this device."""

    code = "CAPF_CA_REJECTED"

    def __init__(self, message: str, *, est_code: str = "EST_ERR_UNKNOWN") -> None:
        super().__init__(message)
        self.est_code = est_code


# --------------------------------------------------------------------------------- tools


class PhoneError(OnlineCAError):
    """The simulated phone refuses or cannot do what was asked (its REASON goes back to CAPF)."""

    code = "PHONE"


class TraceError(OnlineCAError):
    code = "TRACE"


class PhoneGone(CAPFError):
    """The phone closed the connection, aborted the session, or stopped answering: a session
    that ends so records "Phone Communication Failure" and leaves the operation pending."""

    code = "CAPF_PHONE_GONE"


class PhoneSilent(PhoneGone):
    """The phone sent nothing within CAPF's read timeout (it may still be making a key)."""

    code = "CAPF_PHONE_SILENT"


# --------------------------------------------------------------------------------- the codes

Hop = Literal["device", "capf", "ra", "ca", "local"]


@dataclass(frozen=True)
class Code:
    """One published code: where the problem is (``hop``) and the one sentence that says what to
    do (``fix``).  ``error`` is the exception class that carries it (None for codes only
    ``diagnose`` and ``logs analyze`` report)."""

    name: str
    hop: Hop
    fix: str
    error: type[OnlineCAError] | None = None


def _table(*rows: tuple[str, type[OnlineCAError] | None, Hop, str]) -> dict[str, Code]:
    table: dict[str, Code] = {}
    for name, error, hop, fix in rows:
        if name in table:
            raise RuntimeError(f"errors.CODES: {name} is listed twice")
        table[name] = Code(name, hop, fix, error)
    return table


# Every code onlineca raises, logs or reports, with its one fix sentence.  Codes never change
# once published (runbooks and monitoring match on them); the sentences may get better.
CODES: dict[str, Code] = _table(
    # -- this machine: configuration, files, database, the command itself
    ("ONLINECA_ERROR", OnlineCAError, "local", ""),
    ("CONFIG", ConfigError, "local", "Fix the named key in the configuration file and run 'onlineca config check FILE'."),
    ("STORE", StoreError, "local", "Check [database] url, that the database runs, and that this user may use it."),
    ("CLOCK_SKEW", None, "local", "Synchronise this machine and the CA with NTP; certificate dates fail when clocks disagree."),
    ("UNKNOWN_ERROR", None, "local", "An error line no signature knows: read it and the lines around it."),
    ("TRACE", TraceError, "local", "Give the log files or folder that hold the device's sessions (CAPF, RA and CA logs)."),
    # -- certificates and keys (any hop: the message names the certificate)
    ("PKI", PKIError, "local", "Check the key or certificate named in the message."),
    ("PARSE", ParseError, "local", "Give a PEM or DER file of the expected kind (key, CSR, certificate or PKCS#7)."),
    ("CHAIN", ChainError, "local", "Add the missing issuer to the trust store, or check the certificate's validity dates."),
    ("UNTRUSTED_ISSUER", ChainError, "local", "Use a certificate issued by a CA whose root is in the trust store."),
    ("SELF_SIGNED", ChainError, "local", "Use a certificate issued by a CA whose root is in the trust store, not a self-signed one."),
    ("NOT_YET_VALID", ChainError, "local", "Check the clock (NTP) on both machines, or wait until the certificate is valid."),
    ("EXPIRED", ChainError, "local", "Renew the certificate, or check the clock (NTP)."),
    ("NOT_A_CA", ChainError, "local", "The issuer named is not a CA certificate: put the real issuing CA in the trust store."),
    ("PATH_LENGTH", ChainError, "local", "The chain has more CA levels than its CA certificates allow: reissue the sub-CA."),
    ("CHAIN_TOO_LONG", ChainError, "local", "The chain is longer than 8 certificates: check the trust store for a loop."),
    ("BAD_SIGNATURE", ParseError, "device", "The device signed other data or with another key: start a new session."),
    ("KEY_MISMATCH", ParseError, "local", "The key does not belong to the certificate or request it was given with."),
    ("KEY_TYPE", PKIError, "local", "Use an RSA or EC (P-256, P-384, P-521) key."),
    ("KEY_SIZE", PKIError, "local", "Use an allowed key size: RSA 512-4096 bits in steps the policy allows, EC 256/384/521."),
    ("KEY_UNSUPPORTED", PhoneError, "device", "Ask the device for a key type and size it supports."),
    ("NAME", PKIError, "local", "Write the name as comma-separated ATTRIBUTE=value pairs, for example CN=SEP74A02FC0A675,O=Example."),
    ("DIGEST", PKIError, "local", "Use sha256, sha384 or sha512."),
    ("CSR_EXTENSION", PKIError, "local", "Give each extension of the request once."),
    # -- the device protocol (the phone <-> CAPF hop)
    ("PROTOCOL", ProtocolError, "device", "The peer broke the device protocol: capture the session and compare it with docs/device-protocol.md."),
    ("DEVPROTO_BAD_PROTOCOL_ID", ProtocolError, "device", "The peer does not speak the CAPF device protocol on this port (protocol id 0x55)."),
    ("DEVPROTO_TRUNCATED", ProtocolError, "device", "The peer closed or broke a frame midway: check the network path and the peer's log."),
    ("DEVPROTO_FRAME_TOO_LONG", ProtocolError, "device", "The peer sent a frame over the size limit: check that it is a CAPF client."),
    ("DEVPROTO_ELEMENT_TOO_LONG", ProtocolError, "device", "The peer sent an element over the size limit: check that it is a CAPF client."),
    ("DEVPROTO_TOO_MANY_ELEMENTS", ProtocolError, "device", "The peer sent more elements than a message may hold: check that it is a CAPF client."),
    ("DEVPROTO_ELEMENT_OVERRUN", ProtocolError, "device", "An element runs past its frame: the peer's encoder is broken."),
    ("DEVPROTO_TRAILING_BYTES", ProtocolError, "device", "The peer sent bytes after the last element of a frame: its encoder is broken."),
    ("DEVPROTO_ENCODE", ProtocolError, "capf", "A value does not fit its element: report this as a defect of onlineca."),
    ("DEVPROTO_DECODER_FAILED", ProtocolError, "device", "An earlier frame was broken, so the session cannot go on: start a new one."),
    ("DEVPROTO_BAD_ELEMENT", ProtocolError, "device", "The peer sent an element value the protocol does not allow: capture the session."),
    ("DEVPROTO_MISSING_ELEMENT", ProtocolError, "device", "The peer left out an element the message needs: capture the session."),
    ("DEVPROTO_DUPLICATE_ELEMENT", ProtocolError, "device", "The peer repeated an element that may appear once: capture the session."),
    ("DEVPROTO_UNSUPPORTED_COMMAND", ProtocolError, "device", "The peer sent a command this side does not know: check both protocol versions."),
    ("DEVPROTO_VERSION", ProtocolError, "device", "The peer speaks a protocol version this side does not (2 and 3 are supported)."),
    ("DEVPROTO_INVALID_TRANSITION", ProtocolError, "device", "The peer sent a message out of order: capture the session and compare it with docs/device-protocol.md."),
    ("DEVPROTO_SESSION_ID", ProtocolError, "device", "The peer used another session id than the server gave it."),
    ("DEVPROTO_SESSION_CLOSED", ProtocolError, "device", "The session had ended: start a new one."),
    ("DEVPROTO_TOO_MANY_REQUESTS", ProtocolError, "device", "The device failed the same request too often: check it (key generation, storage)."),
    # -- the simulated phone
    ("PHONE", PhoneError, "device", "Check the phone folder and what CAPF asked for (onlineca phone show)."),
    ("SIGN_FAILED", PhoneError, "device", "The phone could not sign the request info: start a new session so it makes a new key."),
    ("STORE_FAILED", PhoneError, "device", "The certificate is not for the phone's new key: start a new session."),
    ("NO_CERTIFICATE", PhoneError, "device", "The phone holds no such certificate: install a MIC (phone mic-ca issue) or enroll an LSC first."),
    ("MIC", PhoneError, "device", "Issue the MIC for this phone's own MIC key (onlineca phone mic-ca issue)."),
    # -- CAPF
    ("CAPF", CAPFError, "capf", "Read CAPF's log (capf.log) for the device named in the message."),
    ("CAPF_POLICY", PolicyError, "capf", "Correct the named setting and try again."),
    ("CAPF_DEVICE_UNKNOWN", DeviceNotFound, "capf", "Check the name with 'onlineca capf devices list', or add it with 'onlineca capf devices add'."),
    ("CAPF_PROFILE_UNKNOWN", ProfileNotFound, "capf", "List profiles with 'onlineca capf profiles list'."),
    ("CAPF_CONFLICT", InventoryConflict, "capf", "Another change got there first: look at the device again and repeat the change."),
    ("CAPF_CSV", CSVImportError, "capf", "Fix the named lines and import the whole file again; nothing was imported."),
    ("CAPF_PHONE_GONE", PhoneGone, "device", "The phone retries by itself; if it keeps failing, check the network between phone and CAPF."),
    ("CAPF_PHONE_SILENT", PhoneSilent, "device", "Raise [capf] read_timeout or max_keygen_seconds for phones that make large keys slowly."),
    ("CAPF_CA_COMM_FAILURE", CAUnavailable, "ra", "Check the RA ('onlineca ra serve', its /readyz) and the CA; the phone retries by itself."),
    ("CAPF_CA_REJECTED", CARejected, "ra", "Read the RA's error.log for this device; check CAPF's RA credentials and the CA template."),
    ("CAPF_CERT_EXPIRING", None, "capf", "Renew CAPF's certificate before it expires (devices stop trusting CAPF)."),
    ("CAPF_CERT_EXPIRED", None, "capf", "Renew CAPF's certificate now: devices cannot open a session with it."),
    ("CAPF_CERT_UNREADABLE", None, "capf", "Point the CAPF certificate path at a PEM or DER certificate file."),
    # -- the RA, as CAPF (its EST client) sees it
    ("RA_DNS", None, "ra", "Check the RA host name in [capf] ra_url and this machine's DNS servers."),
    ("RA_CONNECT", None, "ra", "Start the RA ('onlineca ra serve'), check its port in [capf] ra_url, open the firewall."),
    ("RA_TLS", None, "ra", "Check the RA's TLS certificate and key (TLS 1.2 or later)."),
    ("RA_TLS_UNTRUSTED", None, "ra", "Put the RA certificate's issuer in [capf] ra_trust_store."),
    ("RA_TLS_SELF_SIGNED", None, "ra", "Give the RA a certificate issued by a CA in [capf] ra_trust_store."),
    ("RA_TLS_NAME_MISMATCH", None, "ra", "Use a name the RA certificate holds in [capf] ra_url, or reissue it."),
    ("RA_TLS_NOT_YET_VALID", None, "ra", "Fix the clocks (NTP) of CAPF and RA."),
    ("RA_TLS_EXPIRED", None, "ra", "Renew the RA's TLS certificate."),
    ("RA_TIMEOUT", None, "ra", "The RA did not answer in time: read its error.log; check its load and the CA behind it."),
    ("RA_EST_AUTH", None, "ra", "Correct [capf] ra_user / ra_password to what the RA accepts (with the passthrough connector, the CA account)."),
    ("RA_NOT_READY", None, "ra", "Read the RA's error.log: its start-up checks against the CA failed for the reason it gives; fix that and it retries by itself."),
    ("RA_CACERTS", None, "ra", "The RA serves no valid CA chain on /cacerts: read its error.log for the CA chain retrieval."),
    ("RA_NO_ANSWER", None, "ra", "The error is on the RA side: read the RA's error.log at the same time for the cause."),
    ("RA_EST_ERROR", None, "ra", "Read the RA's error.log at the same time for the cause."),
    ("RA_EST_HTTP_WRITE", None, "ra", "Known defect CSCvf83629 of the original RA: the CA answered too late; check the CA's latency."),
    # -- EST (libEST's names; the number is in proto.libest)
    ("EST_ERR_UNKNOWN", ESTCodedError, "ra", "Read the EST server's log (the RA's error.log) for the cause."),
    ("EST_ERR_NONE", ESTCodedError, "ra", ""),
    ("EST_ERR_AUTH_FAIL", ESTCodedError, "ra", "The EST client must authenticate as the server expects: check its user name and password, or its client certificate."),
    ("EST_ERR_AUTH_FAIL_TLSUID", ESTCodedError, "ra", "The CSR must carry the TLS channel binding (tls-unique) as its challengePassword."),
    ("EST_ERR_SSL_READ", ESTCodedError, "ra", "The server closed or stalled the connection: read its log (error.log) for the cause."),
    ("EST_ERR_SSL_CONNECT", ESTCodedError, "ra", "The TLS handshake failed: check TLS versions, the client certificate and the trust store."),
    ("EST_ERR_IP_CONNECT", ESTCodedError, "ra", "Nothing answers at that address and port: check the URL and that the EST server runs."),
    ("EST_ERR_IP_GETADDR", ESTCodedError, "ra", "Check the EST server's host name in the URL and this machine's DNS servers."),
    ("EST_ERR_FQDN_MISMATCH", ESTCodedError, "ra", "Use the host name that the server certificate names, or reissue the certificate."),
    ("EST_ERR_CACERT_VERIFICATION", ESTCodedError, "ra", "Add the server's CA (root and intermediates) to the trust anchors (--cafile)."),
    ("EST_ERR_LOAD_CACERTS", ESTCodedError, "ra", "The server's /cacerts answer holds no usable CA certificate: read its log."),
    ("EST_ERR_LOAD_TRUST_CERTS", ESTCodedError, "local", "Give the server's CA with --cafile, or use --insecure-bootstrap and check its fingerprint."),
    ("EST_ERR_CLIENT_INVALID_KEY", ESTCodedError, "local", "Give a PEM certificate and its matching unencrypted private key."),
    ("EST_ERR_CA_ENROLL_RETRY", ESTCodedError, "ca", "The CA holds the request or is not reachable: retry after Retry-After, or ask the CA manager to approve it."),
    ("EST_ERR_CA_ENROLL_FAIL", ESTCodedError, "ca", "The CA or the RA refused the request: read the reason in the RA's and the CA's logs."),
    ("EST_ERR_BAD_CONTENT_TYPE", ESTCodedError, "ra", "The peer sent a content type EST does not allow: check that the URL is an EST server."),
    ("EST_ERR_BAD_CONTENT_LEN", ESTCodedError, "ra", "The request is larger than the server accepts."),
    ("EST_ERR_BUF_EXCEEDS_MAX_LEN", ESTCodedError, "ra", "The request is larger than the server accepts ([est] max_body_bytes)."),
    ("EST_ERR_BAD_PKCS10", ESTCodedError, "ra", "Send a valid PKCS#10 request, signed by the key it carries."),
    ("EST_ERR_NO_CSR", ESTCodedError, "ra", "Send a PKCS#10 request in the body, base64-encoded."),
    ("EST_ERR_BAD_BASE64", ESTCodedError, "ra", "Send the body base64-encoded, as RFC 7030 requires."),
    ("EST_ERR_BAD_ASN1_HEX", ESTCodedError, "ra", "The DER inside the body is malformed: check the peer's encoder."),
    ("EST_ERR_BAD_X509", ESTCodedError, "ra", "The peer sent certificates that do not parse: check its CA chain."),
    ("EST_ERR_BAD_KEY", ESTCodedError, "ra", "The key in the request is not allowed: use RSA 2048+ or EC P-256/384/521."),
    ("EST_ERR_X509_CN", ESTCodedError, "ra", "Re-enroll with the same subject and subjectAltName as the certificate being renewed."),
    ("EST_ERR_HTTP_NOT_FOUND", ESTCodedError, "ra", "Check the URL and the CA label (/.well-known/est/<label>/...)."),
    ("EST_ERR_HTTP_INVALID_PATH_SEGMENT", ESTCodedError, "ra", "Use a CA label the server knows ([est] labels)."),
    ("EST_ERR_HTTP_BAD_REQ", ESTCodedError, "ra", "The server refused the request as malformed or not allowed: read its reason."),
    ("EST_ERR_HTTP_UNSUPPORTED", ESTCodedError, "ra", "The server does not offer this EST operation (for example serverkeygen)."),
    ("EST_ERR_HTTP_LOCKED", ESTCodedError, "ra", "The server refuses this client for now: read its log."),
    ("EST_ERR_HTTP_WRITE", ESTCodedError, "ra", "The server could not send its answer in time: check the CA's latency behind it."),
    ("EST_ERR_WRONG_METHOD", ESTCodedError, "ra", "Use the HTTP method RFC 7030 gives for this operation (GET cacerts/csrattrs, POST the others)."),
    ("EST_ERR_INVALID_RETRY_VALUE", ESTCodedError, "ra", "The server sent a Retry-After that is not seconds or an HTTP date."),
    ("EST_ERR_MULTIPART_PARSE", ESTCodedError, "ra", "The serverkeygen answer is not the multipart/mixed RFC 7030 describes."),
    ("EST_ERR_ENC_PRIV_KEY_CMS", ESTCodedError, "ra", "Encrypted server-generated keys are not supported: ask for an unencrypted PKCS#8 key."),
    ("EST_ERR_ZERO_LENGTH_BUF", ESTCodedError, "ra", "The server answered with an empty body: read its log."),
    # -- AD CS web enrollment: the RA -> CA hop (curl's codes in the RA's log)
    ("CERTSRV", CertsrvFailure, "ca", "Read the RA's error.log and the CA's IIS log for this request."),
    ("CA", CAError, "ca", "Run 'onlineca ca init' for a new CA, or check the CA folder named in the message."),
    ("CA_DNS", CADNSError, "ca", "Check the CA host name in ca_url (a typo?) and this machine's DNS servers."),
    ("CA_CONNECT", CAConnectError, "ca", "Start the CA web server, check its port in ca_url, and open the firewall between RA and CA."),
    ("CA_TLS", CATLSError, "ca", "Check the CA web server's TLS configuration (TLS 1.2 or later, a certificate and key)."),
    ("CA_TLS_UNTRUSTED", CATLSError, "ca", "Add the named issuer (and its root) to the RA's trust store."),
    ("CA_TLS_SELF_SIGNED", CATLSError, "ca", "Give the CA web server a certificate issued by a CA; a self-signed web certificate is not supported even in the trust store."),
    ("CA_TLS_NAME_MISMATCH", CATLSError, "ca", "Put a name the certificate holds in ca_url, or reissue the web certificate with the URL's host in its subjectAltName."),
    ("CA_TLS_NOT_YET_VALID", CATLSError, "ca", "Compare the clocks of the RA and the CA (NTP): if they agree, the web certificate was issued with a future start date and must be reissued."),
    ("CA_TLS_EXPIRED", CATLSError, "ca", "Renew the CA web server's certificate (or fix this machine's clock if it runs ahead)."),
    ("CA_TIMEOUT", CATimeoutError, "ca", "Find why the CA is slow (load, network, AD), or raise [ra] connect_timeout / login_timeout / enroll_timeout."),
    ("CA_AUTH", CAAuthError, "ca", "Correct ca_user / ca_password (or the client certificate) of [ra], as the CA knows the account."),
    ("CA_TEMPLATE", CATemplateError, "ca", "Set [ra] template to a template the CA offers to this user (its name, not its display name)."),
    ("CA_CHAIN", CAChainError, "ca", "Make the CA serve its chain on certnew.p7b and put its root in the RA's trust store."),
    ("CA_DENIED", CADeniedError, "ca", "Read the CA's disposition message and the template's policy."),
    ("CA_PENDING", CAPendingError, "ca", "The request waits for a CA manager's approval; ask again later with its request ID."),
    ("CA_HTTP", CAHTTPError, "ca", "Read the CA's IIS log for that request: the web server answered with an HTTP error."),
    ("CA_PROTOCOL", CAPageError, "ca", "Point ca_url at an AD CS /certsrv web enrollment service."),
    # -- branch ra: the CA's identity pinned beyond the trust store
    ("CA_TLS_PIN", CATLSError, "ca", "Check [ra] ca_expected_name / ca_fingerprint against the CA web server's certificate, which must also carry serverAuth: a certificate from the same root for another purpose is refused."),
)


# -- diag branch: diagnose's CAPF hop (CAPF's own port, as a phone reaches it) and an RA that runs
#    with another configuration than diagnose reads.
CODES.update(_table(
    ("CAPF_CONNECT", None, "capf", "Start CAPF ('onlineca capf serve'), check [capf] host and port, and open port 3804 to the phones."),
    ("CAPF_TLS", None, "capf", "Check CAPF's TLS certificate and key ([capf] tls_cert and tls_key, or <data dir>/capf/capf.pem)."),
    ("CAPF_CERT_UNTRUSTED", None, "capf", "Give CAPF a certificate issued by the CA its phones trust (remove capf.pem and restart CAPF to enroll one through the RA)."),
    ("CAPF_CERT_NOT_YET_VALID", None, "capf", "Fix the clocks (NTP) of CAPF and the CA, or wait until CAPF's certificate becomes valid."),
    ("CAPF_RA_MISMATCH", None, "capf", "Restart CAPF so it reads [capf] ra_url, or correct ra_url to the RA CAPF should use."),
    ("RA_CONFIG_DRIFT", None, "ra", "Restart or reload the RA so it runs with this configuration and trust store, and compare its clock with the CA's (NTP)."),
))


def fix_for(code: str) -> str:
    """The one fix sentence of ``code`` ("" for a code not in ``CODES``)."""
    entry = CODES.get(code)
    return entry.fix if entry is not None else ""


# --------------------------------------------------------------------------------- admin
# Branch admin: the administration console and REST API (issue 16).  Each code's HTTP status is
# the console's choice (onlineca.admin.problems), not part of the code.


class AdminError(OnlineCAError):
    """The administration console and API: accounts, sessions, tokens, permissions."""

    code = "ADMIN"


class AuthenticationRequired(AdminError):
    """No valid session, token or client certificate (or a wrong password)."""

    code = "ADMIN_AUTH"


class PermissionDenied(AdminError):
    """The caller's role does not allow this (also: a missing or wrong CSRF token)."""

    code = "ADMIN_FORBIDDEN"


class LoginThrottled(AdminError):
    """Too many failed logins for this account or address; ``retry_after`` is in seconds."""

    code = "ADMIN_THROTTLED"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(AdminError):
    """No such account, token, CA request or audit entry."""

    code = "ADMIN_NOT_FOUND"


class AccountConflict(AdminError):
    """The account or token exists already, or the change would leave no administrator."""

    code = "ADMIN_CONFLICT"


CODES.update(_table(
    ("ADMIN", AdminError, "local", "Read the console's log (admin.log) for the request named in the message."),
    ("ADMIN_AUTH", AuthenticationRequired, "local", "Log in again, or give a valid API token (Authorization: Bearer ...) that has not expired."),
    ("ADMIN_FORBIDDEN", PermissionDenied, "local", "Ask an administrator for a role that allows this change, or act on your own account only."),
    ("ADMIN_CSRF", PermissionDenied, "local", "Reload the page and submit the form again (its CSRF token was missing or stale)."),
    ("ADMIN_THROTTLED", LoginThrottled, "local", "Wait for the time given in Retry-After before the next login attempt."),
    ("ADMIN_NOT_FOUND", NotFound, "local", "Check the name or number in the address; list what exists first."),
    ("ADMIN_CONFLICT", AccountConflict, "local", "Choose another name, or keep at least one enabled administrator."),
    ("ADMIN_VALIDATION", AdminError, "local", "Correct the named field of the request as the OpenAPI document at /api/openapi.json describes it."),
    ("ADMIN_UNSUPPORTED", AdminError, "local", "This CA cannot do that: use the CA's own console (revocation needs a CA that publishes a CRL)."),
))


# -- capf10 branch: the public device flow, its negotiated extensions, and LSCs for phones that
#    cannot sign (a key CAPF vouches for at the RA, or CAPF's own CA): docs/device-protocol.md, docs/capf.md.
CODES.update(_table(
    ("DEVPROTO_NOT_ANNOUNCED", ProtocolError, "capf", "CAPF tried an extension the phone did not announce: report this as a defect of onlineca."),
    ("DEVPROTO_NOT_PUBLIC", ProtocolError, "capf", "CAPF sent a public-flow client something outside the public flow: report this as a defect of onlineca."),
    ("VOUCHED_REQUEST", ParseError, "ra", "Send a vouched request only as an authorised RA agent: the TLS client certificate that signed it, listed in [ra] vouch_agents."),
    ("CAPF_CA", CAPFError, "capf", "Create CAPF's own CA with 'onlineca capf ca init' (or restart CAPF), or check <data dir>/capf/ca."),
))


# -- Revocation (our CA's CRLs, OCSP and revoke endpoint; CAPF's revocation queue) and
#    CAPF's alert notifications: docs/ca.md "Revocation", docs/operations.md "Monitoring".
CODES.update(_table(
    ("REVOCATION_REASON", PKIError, "local", "Give one of RFC 5280's reasons: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn, aACompromise."),
    ("REVOCATION_SERIAL", PKIError, "local", "Give the certificate's serial number in hexadecimal, as 'onlineca ca requests show' prints it."),
    ("OCSP_MALFORMED", ParseError, "local", "Send one DER OCSPRequest (RFC 6960) by POST with Content-Type application/ocsp-request, or base64 in the path of a GET."),
    ("CA_REVOKE_UNKNOWN", CAError, "ca", "Check the serial or ReqID with 'onlineca ca requests list': this CA revokes only certificates it issued."),
    ("CA_REVOKE_FORBIDDEN", CAError, "ca", "Revoke with the account that requested the certificate and is listed in [ca] revokers, or run 'onlineca ca revoke' on the CA."),
    ("CA_REVOKE_BAD_REQUEST", CAError, "ca", "POST serial (hex) or req_id, and optionally reason, to /certsrv/onlineca/revoke."),
    ("CA_CRL", CAError, "ca", "Check the CA's database: another process keeps publishing CRLs; run 'onlineca ca crl --publish' once it is quiet."),
    ("CAPF_REVOKE", CAPFError, "capf", "Check [capf] ca_revoke_url, its account (in the CA's [ca] revokers) and trust store; 'onlineca capf revocations list' shows what waits."),
    ("ALERT_DELIVERY", ConfigError, "local", "Check the [alerts] target named in the message (webhook URL, SMTP relay, command); 'onlineca capf alerts test' sends a test notification."),
))


__all__ = [
    "CODES", "Code", "Hop", "fix_for",
    *sorted(name for name, value in list(globals().items())
            if isinstance(value, type) and issubclass(value, OnlineCAError)),
]


# --------------------------------------------------------------------------------- ops
# Branch ops (issue 15): running as a service, keys at rest, backups.


class AlreadyRunning(OnlineCAError):
    """Another server of the same role runs on this data dir (it holds ``<data>/<role>.lock``)."""

    code = "ALREADY_RUNNING"


class BackupError(OnlineCAError):
    """A backup cannot be made, verified or restored."""

    code = "BACKUP"


CODES.update(_table(
    ("ALREADY_RUNNING", AlreadyRunning, "local", "Stop the server named in the message, or give this one another --data-dir."),
    ("KEY_PASSPHRASE", PKIError, "local", "Set the key's passphrase: [ca] or [capf] key_passphrase_file, or $ONLINECA_CA_KEY_PASSPHRASE / $ONLINECA_CAPF_KEY_PASSPHRASE."),
    ("BACKUP", BackupError, "local", "Read the message: it names the file or member that is missing or does not match the manifest."),
    ("BACKUP_DIGEST", BackupError, "local", "The backup is damaged or was changed: restore from another copy."),
))
