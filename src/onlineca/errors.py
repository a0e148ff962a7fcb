"""The one exception hierarchy of onlineca.

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
    ├── CertsrvError           AD CS web enrollment (/certsrv) failures, with the HRESULT
    ├── ESTError               EST failures, with the libEST code and number
    └── CAPFError              device policy and session failures, with the CAPF status
"""

from __future__ import annotations


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
