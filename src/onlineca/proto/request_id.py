"""The request id that ties one enrollment together across CAPF, the RA and the CA, and the mark
diagnose puts on its read-only probes.

CAPF sends ``X-Request-ID`` with each EST request; the RA keeps it (or makes one, as NGINX's
``$request_id`` does: 16 random bytes in hex), writes it on its access and error.log lines about
that request and forwards it on the /certsrv requests it makes for it; our CA writes it in its IIS
log as a custom field (IIS 8.5+ logs request headers that way).  ``X-Onlineca-Probe`` marks a
request diagnose sends to look, not to enroll: the RA logs it as a probe, never as an error.
``CURRENT`` carries the request being served to the log formatters and the certsrv client of the
same task.  Pure: no I/O, nothing here logs; a value from the wire is used only once it is clean.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = "X-Request-ID"
PROBE_HEADER = "X-Onlineca-Probe"
PROBE_USER_AGENT = "onlineca-diagnose"

# What a request id may hold: enough for UUIDs, NGINX's hex ids and dotted vendor ids, and
# nothing that could break a log line (spaces, quotes, control characters).
_CLEAN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_request_id() -> str:
    """A fresh id: 16 random bytes in hex, as NGINX's ``$request_id``."""
    return secrets.token_hex(16)


def clean_request_id(value: str | None) -> str | None:
    """``value`` when it is a usable id, else None (a peer's header is never logged as sent)."""
    if value is None:
        return None
    value = value.strip()
    return value if _CLEAN.fullmatch(value) else None


@dataclass(frozen=True)
class RequestContext:
    """The request a server is serving: what NGINX writes after an error.log line about it
    (``*N`` connection number, client, server, request line) and its request id."""

    request_id: str
    connection: int = 0
    client: str = ""
    server: str = ""
    request_line: str = ""
    probe: bool = False


CURRENT: ContextVar[RequestContext | None] = ContextVar("onlineca_request", default=None)


def current_request_id() -> str | None:
    ctx = CURRENT.get()
    return ctx.request_id if ctx is not None else None


__all__ = ["CURRENT", "PROBE_HEADER", "PROBE_USER_AGENT", "REQUEST_ID_HEADER", "RequestContext",
           "clean_request_id", "current_request_id", "new_request_id"]
