"""EST (RFC 7030): sans-I/O messages, the signing-backend interface, an aiohttp server and client.

Import from here: ``ESTClient``, ``start_est_server``, ``LocalSigner``, ``ESTCodedError``...
Nothing here holds state or does I/O at import time.
"""

from onlineca.est.backend import (
    BasicCredentials, Denied, EnrollBackend, EnrollRequest, EnrollResult, Issued, LocalSigner, Pending,
)
from onlineca.est.client import ESTClient, EnrollResponse, bootstrap_cacerts, client_ssl_context
from onlineca.est.codes import EST_ERRORS, ESTCodedError, enrollment_rv_line, est_number, rv_text
from onlineca.est.messages import CsrAttribute, CsrAttrs, ServerKeygenResult
from onlineca.est.server import (
    ESTServerSettings, RunningESTServer, UsersFile, hash_password, make_est_app, server_ssl_context,
    start_est_server,
)

__all__ = [
    "BasicCredentials", "Denied", "EnrollBackend", "EnrollRequest", "EnrollResult", "Issued", "LocalSigner",
    "Pending", "ESTClient", "EnrollResponse", "bootstrap_cacerts", "client_ssl_context", "EST_ERRORS",
    "ESTCodedError", "enrollment_rv_line", "est_number", "rv_text", "CsrAttribute", "CsrAttrs",
    "ServerKeygenResult", "ESTServerSettings", "RunningESTServer", "UsersFile", "hash_password",
    "make_est_app", "server_ssl_context", "start_est_server",
]
