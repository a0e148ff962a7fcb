"""Errors as RFC 9457 problem details (``application/problem+json``), carrying onlineca's codes.

Every ``OnlineCAError`` keeps its code (``errors.CODES``), its message as ``detail`` and its fix
sentence as ``hint``; only the HTTP status is chosen here, by the error's class.  A request the
API's models refuse is ``ADMIN_VALIDATION`` (422) with every field named; an unknown route
``ADMIN_NOT_FOUND`` (404).  Anything unexpected is logged and answered 500 without its details.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from onlineca.errors import (
    CODES,
    AccountConflict,
    AuthenticationRequired,
    CAError,
    CAPFError,
    CertsrvError,
    ConfigError,
    CSVImportError,
    DeviceNotFound,
    ESTError,
    InventoryConflict,
    LoginThrottled,
    NotFound,
    OnlineCAError,
    PermissionDenied,
    ProfileNotFound,
    StoreError,
    TraceError,
)

PROBLEM_JSON = "application/problem+json"

# Most specific first.
_STATUS: tuple[tuple[type[OnlineCAError], int], ...] = (
    (AuthenticationRequired, 401),
    (PermissionDenied, 403),
    (LoginThrottled, 429),
    (NotFound, 404),
    (DeviceNotFound, 404),
    (ProfileNotFound, 404),
    (AccountConflict, 409),
    (InventoryConflict, 409),
    (CSVImportError, 422),
    (CAPFError, 422),
    (ConfigError, 422),
    (TraceError, 422),
    (CAError, 409),
    (StoreError, 503),
    (CertsrvError, 502),
    (ESTError, 502),
)
_CODE_STATUS = {"ADMIN_UNSUPPORTED": 409, "ADMIN_VALIDATION": 422, "ADMIN_CSRF": 403, "CA_REVOKE_UNKNOWN": 404}

TITLES = {400: "Bad request", 401: "Authentication required", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Request too large", 422: "Unprocessable request",
          429: "Too many attempts", 500: "Internal error", 501: "Not supported", 502: "Upstream failure",
          503: "Unavailable", 504: "Timed out"}


def status_for(exc: OnlineCAError) -> int:
    if exc.code in _CODE_STATUS:
        return _CODE_STATUS[exc.code]
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def problem(status: int, code: str, detail: str, *, hint: str | None = None, instance: str | None = None,
            errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    known = CODES.get(code)
    body: dict[str, Any] = {
        "type": f"urn:onlineca:problem:{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "hint": hint if hint is not None else (known.fix if known else ""),
        "hop": known.hop if known else "local",
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return body


def from_error(exc: OnlineCAError, instance: str | None = None) -> dict[str, Any]:
    errors = None
    if isinstance(exc, CSVImportError):
        errors = [{"line": n, "message": m} for n, m in exc.errors]
    elif hasattr(exc, "field"):
        errors = [{"field": exc.field, "message": exc.message}]
    return problem(status_for(exc), exc.code, exc.message, hint=exc.hint, instance=instance, errors=errors)


def response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, default=str), status_code=int(body["status"]), media_type=PROBLEM_JSON,
                    headers=headers)


__all__ = ["PROBLEM_JSON", "TITLES", "from_error", "problem", "response", "status_for"]
