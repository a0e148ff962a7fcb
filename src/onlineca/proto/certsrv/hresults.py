"""AD CS's HRESULTs: the codes, the texts a Windows CA prints after them, and their formatting.

One table for both sides of ``/certsrv``: our CA writes these codes into its pages and database,
the certsrv client reads them back from a CA's pages (ours or a real AD CS).  The numbers are
certsrv.h's and winerror.h's, so administrators read the same codes as from a Windows CA.  The
disposition texts (``Denied by Policy Module  0x80094800, ...``) are worded as AD CS words them,
because clients find the HRESULT in them with regular expressions.  Values only: no I/O.
"""

from __future__ import annotations

import re

S_OK = 0x00000000
E_ACCESSDENIED = 0x80070005
E_INVALIDARG = 0x80070057
NTE_BAD_SIGNATURE = 0x80090006
NTE_BAD_ALGID = 0x80090008
CRYPT_E_NOT_FOUND = 0x80092004
CRYPT_E_ASN1_EOD = 0x80093102
CRYPT_E_ASN1_BADTAG = 0x8009310B
CERTSRV_E_PROPERTY_EMPTY = 0x80094004         # no such request
CERTSRV_E_TEMPLATE_DENIED = 0x80094012        # the user may not enroll for this template
CERTSRV_E_ADMIN_DENIED_REQUEST = 0x80094014   # a certificate manager denied the request
CERTSRV_E_UNSUPPORTED_CERT_TYPE = 0x80094800  # template unknown to, or not enabled on, the CA
CERTSRV_E_NO_CERT_TYPE = 0x80094801           # the request names no template
CERTSRV_E_KEY_LENGTH = 0x80094811             # the key is shorter than the template allows
CERTSRV_E_BAD_REQUESTSUBJECT = 0x80094001     # the subject (or a subjectAltName) the template does not allow

# Denials that mean "this template, for this user": the RA's configuration, not the request.
TEMPLATE_HRESULTS = frozenset({CERTSRV_E_UNSUPPORTED_CERT_TYPE, CERTSRV_E_NO_CERT_TYPE,
                               CERTSRV_E_TEMPLATE_DENIED})
# The request could not even be read: AD CS records it with the disposition "Error", not "Denied".
PARSE_HRESULTS = frozenset({CRYPT_E_ASN1_BADTAG, CRYPT_E_ASN1_EOD, NTE_BAD_SIGNATURE})

# What AD CS prints after a code (certutil -error's wording).
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

# Disposition messages of requests that were not denied.
TAKEN_UNDER_SUBMISSION = "Taken Under Submission"
ISSUED_MESSAGE = "Issued"


def hresult_hex(hr: int | None) -> str:
    """``0x80094800`` (always eight digits, as AD CS prints it); empty for no code."""
    return "" if hr is None else f"0x{hr & 0xFFFFFFFF:08x}"


def to_signed(hr: int) -> int:
    """An HRESULT as Windows stores it (a signed 32-bit LONG), so it fits an INTEGER column."""
    hr &= 0xFFFFFFFF
    return hr - 0x100000000 if hr >= 0x80000000 else hr


def to_unsigned(hr: int) -> int:
    return hr & 0xFFFFFFFF


def result_text(hr: int) -> str:
    """The "Result" line of AD CS's error page: the code's text, or the code in both forms."""
    return HRESULT_TEXT.get(hr) or f"{hresult_hex(hr)} ({to_signed(hr)})"


def policy_denial(hr: int, text: str) -> str:
    """AD CS's policy-module denial: two spaces after "Module", a line break before the quote."""
    return f"Denied by Policy Module  {hresult_hex(hr)}, {text}\r\n"


def parse_failure(hr: int) -> str:
    """The disposition of a request that does not parse (``Error Parsing Request  <text>``)."""
    return f"Error Parsing Request  {HRESULT_TEXT[hr]}"


_HRESULT = re.compile(r"0x([0-9a-fA-F]{8})")


def parse_hresult(text: str) -> int | None:
    """The first ``0x........`` code in a disposition message or result line, if any."""
    m = _HRESULT.search(text)
    return int(m.group(1), 16) if m else None
