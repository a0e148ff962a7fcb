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
    │   └── CARejected         the RA or CA refused, or returned an unusable LSC
    ├── PhoneError             the device simulator cannot do what was asked
    └── TraceError             a device timeline cannot be built

This module imports nothing of onlineca and does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class OnlineCAError(Exception):
    """Root of all onlineca errors."""

    code: str = "ONLINECA_ERROR"
    hint: str = ""

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(OnlineCAError):
    code = "CONFIG"
    hint = "Fix the named key in the configuration file and run 'onlineca config check FILE'."


class PKIError(OnlineCAError):
    code = "PKI"


class ParseError(PKIError):
    """Input bytes could not be parsed (hostile or truncated input ends here, never elsewhere)."""

    code = "PARSE"


class ChainError(PKIError):
    code = "CHAIN"
    hint = "Add the missing issuer to the trust store, or check the certificate's validity dates."


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
    hint = "Check the CA host name in the configuration (a typo?) and the DNS servers of this machine."


class CAConnectError(CertsrvFailure):
    code = "CA_CONNECT"
    curl_code = 7
    hint = "Check that the CA web server runs and listens on that port, and that no firewall drops it."


class CATLSError(CertsrvFailure):
    """The CA's web certificate failed verification; ``code`` says why (CA_TLS_*)."""

    code = "CA_TLS"
    curl_code = 35
    hint = "Check the CA web server's TLS configuration."


class CATimeoutError(CertsrvFailure):
    code = "CA_TIMEOUT"
    curl_code = 28
    hint = ("The CA answered slower than the configured timeout: check the CA's load and network, "
            "or raise connect_timeout / login_timeout / enroll_timeout in [ra].")


class CAAuthError(CertsrvFailure):
    code = "CA_AUTH"
    curl_code = 22
    hint = "Check the CA user name and password (or client certificate) configured for the RA."


class CATemplateError(CertsrvFailure):
    code = "CA_TEMPLATE"
    hint = ("Use a certificate template that the CA offers to this user (see certrqxt.asp), "
            "spelled as its template name, not its display name.")


class CAChainError(CertsrvFailure):
    code = "CA_CHAIN"
    hint = "Check that the CA serves its chain on certnew.p7b and that its root is in the RA's trust store."


class CADeniedError(CertsrvFailure):
    code = "CA_DENIED"
    hint = "The CA refused the request: read its disposition message, and the CA's policy and template."


class CAPendingError(CertsrvFailure):
    code = "CA_PENDING"
    hint = "The request waits for a CA manager's approval; ask again later with its request ID."


class CAHTTPError(CertsrvFailure):
    code = "CA_HTTP"
    curl_code = 22
    hint = "The CA web server answered with an HTTP error: read the CA's IIS log for that request."


class CAPageError(CertsrvFailure):
    """A page that is not what an AD CS page of that name contains."""

    code = "CA_PROTOCOL"
    curl_code = 0
    hint = "The URL may not point at an AD CS /certsrv web enrollment service; check ca_url."


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

# What an administrator should do, for the codes a client meets in the field.
EST_HINTS: dict[str, str] = {
    "EST_ERR_AUTH_FAIL": "Check the EST user name and password (or the client certificate) the server expects.",
    "EST_ERR_AUTH_FAIL_TLSUID": "The CSR must carry the TLS channel binding (tls-unique) as its challengePassword.",
    "EST_ERR_SSL_READ": "The server closed or stalled the connection: read its log (error.log) for the cause.",
    "EST_ERR_SSL_CONNECT": "The TLS handshake failed: check TLS versions, the client certificate and the trust store.",
    "EST_ERR_IP_CONNECT": "Nothing answers at that address and port: check the URL and that the EST server runs.",
    "EST_ERR_FQDN_MISMATCH": "Use the host name that the server certificate names, or reissue the certificate.",
    "EST_ERR_CACERT_VERIFICATION": "Add the server's CA (root and intermediates) to the trust anchors (--cafile).",
    "EST_ERR_CA_ENROLL_RETRY": "The CA holds the request pending: retry later, or ask the CA manager to approve it.",
    "EST_ERR_BAD_CONTENT_TYPE": "The peer sent a content type EST does not allow: check that the URL is an EST server.",
    "EST_ERR_BAD_CONTENT_LEN": "The request is larger than the server accepts.",
    "EST_ERR_BAD_PKCS10": "Send a valid PKCS#10 request, signed by the key it carries.",
    "EST_ERR_HTTP_NOT_FOUND": "Check the URL and the CA label (/.well-known/est/<label>/...).",
    "EST_ERR_CA_ENROLL_FAIL": "The CA refused or failed the request: read the RA and CA logs.",
}


class ESTCodedError(ESTError):
    """An EST failure with its libEST name (``code``; ``proto.libest`` has its number).

    ``http_status`` is the HTTP status that carried it (if any) and ``retry_after`` the seconds a
    server asked to wait (202 or 503), so callers can decide what to do without parsing text.
    """

    def __init__(self, code: str, message: str, *, hint: str | None = None,
                 http_status: int | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, code=code, hint=hint if hint is not None else EST_HINTS.get(code, ""))
        self.http_status = http_status
        self.retry_after = retry_after


# --------------------------------------------------------------------------------- CAPF


class PolicyError(CAPFError):
    """A policy value is not allowed; ``field`` names the setting so the message can point at it."""

    code = "CAPF_POLICY"
    hint = "Correct the named setting and try again."

    def __init__(self, field_name: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field_name}: {message}", hint=hint)
        self.field = field_name


class DeviceNotFound(CAPFError):
    code = "CAPF_DEVICE_UNKNOWN"
    hint = "Check the name with 'onlineca capf devices list', or add it with 'onlineca capf devices add'."


class ProfileNotFound(CAPFError):
    code = "CAPF_PROFILE_UNKNOWN"
    hint = "List profiles with 'onlineca capf profiles list'."


class InventoryConflict(CAPFError):
    code = "CAPF_CONFLICT"


class CSVImportError(CAPFError):
    """A bulk file had bad lines; ``errors`` lists ``(line number, message)``; nothing was imported."""

    code = "CAPF_CSV"
    hint = "Fix the named lines and import the whole file again; nothing was imported."

    def __init__(self, errors: Sequence[tuple[int, str]]) -> None:
        self.errors = list(errors)
        shown = "; ".join(f"line {n}: {m}" for n, m in self.errors[:20])
        more = f" (and {len(self.errors) - 20} more)" if len(self.errors) > 20 else ""
        super().__init__(f"{len(self.errors)} bad line(s): {shown}{more}")


class CAUnavailable(CAPFError):
    """The RA (or the CA behind it) did not answer, or asked to come back later."""

    code = "CAPF_CA_COMM_FAILURE"
    hint = "Check the RA (onlineca ra serve, its /readyz) and the CA; the phone retries by itself."

    def __init__(self, message: str, *, est_code: str = "EST_ERR_UNKNOWN", retry_after: int | None = None) -> None:
        super().__init__(message)
        self.est_code = est_code
        self.retry_after = retry_after


class CARejected(CAPFError):
    """The RA refused the request, or what it returned is not a usable LSC for this device."""

    code = "CAPF_CA_REJECTED"
    hint = "Read the RA's error.log for this device; check CAPF's RA credentials and the CA template."

    def __init__(self, message: str, *, est_code: str = "EST_ERR_UNKNOWN") -> None:
        super().__init__(message)
        self.est_code = est_code


# --------------------------------------------------------------------------------- tools


class PhoneError(OnlineCAError):
    """The simulated phone refuses or cannot do what was asked (its REASON goes back to CAPF)."""

    code = "PHONE"


class TraceError(OnlineCAError):
    code = "TRACE"


# --------------------------------------------------------------------------------- branch capf
# The CAPF session server's own exceptions (they were defined in capf/server.py).


class PhoneGone(CAPFError):
    """The phone closed the connection, aborted the session, or stopped answering: a session
    that ends so records "Phone Communication Failure" and leaves the operation pending."""

    code = "CAPF_PHONE_GONE"
    hint = "The phone retries by itself; if it keeps failing, check the network between phone and CAPF."


class PhoneSilent(PhoneGone):
    """The phone sent nothing within CAPF's read timeout (it may still be making a key)."""

    code = "CAPF_PHONE_SILENT"
    hint = "Raise [capf] read_timeout or max_keygen_seconds for phones that make large keys slowly."
