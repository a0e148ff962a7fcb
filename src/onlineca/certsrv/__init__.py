"""AD CS web enrollment (``/certsrv``): the sans-I/O page protocol and an async client.

``protocol`` builds the requests and reads the pages (no I/O); ``client`` is the aiohttp client
the RA uses to enroll at a real AD CS or at our own CA.  Nothing here logs a credential.
"""

from onlineca.certsrv.client import CertsrvClient, make_ssl_context
from onlineca.certsrv.protocol import (
    BROWSER_USER_AGENT, CAAuthError, CAChainError, CAConnectError, CADeniedError, CADNSError, CAHTTPError,
    CAPageError, CAPendingError, CATemplateError, CATimeoutError, CATLSError, CertsrvFailure, Denied,
    Issued, IssuedPage, Pending, Template,
)

__all__ = [
    "CertsrvClient", "make_ssl_context", "BROWSER_USER_AGENT", "CAAuthError", "CAChainError",
    "CAConnectError", "CADeniedError", "CADNSError", "CAHTTPError", "CAPageError", "CAPendingError",
    "CATemplateError", "CATimeoutError", "CATLSError", "CertsrvFailure", "Denied", "Issued",
    "IssuedPage", "Pending", "Template",
]
