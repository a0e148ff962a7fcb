"""One log record, whichever format it came from: what every parser in ``onlineca.logs`` returns
and what ``diagnose`` matches signatures against and correlates.

A record knows where it is (file, line), its kind of log, its text, its time as the log wrote it,
and the keys that tie it to others: the device CAPF names, NGINX's connection number (``*N``),
the client address, and the request id.  Only values; nothing here reads or writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# CAPF trace lines carry no date: their times are placed on this day, plus one per midnight the
# parser saw the trace cross (see ``capf_trace.DayRollover``).
NO_DATE = dt.date(1900, 1, 1)


@dataclass(frozen=True)
class LogRecord:
    """``kind``: capf | nginx | est | iis | access | json | text.  ``time`` is naive local time
    (CAPF, NGINX error.log) or aware (IIS in UTC, access lines and JSON with their offset)."""

    source: str
    line: int
    kind: str
    text: str
    time: dt.datetime | None = None
    time_only: bool = False
    device: str | None = None
    level: str = ""
    conn: str | None = None
    client: str | None = None
    request_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def days_after_start(self) -> int:
        """For a dateless CAPF time: how many midnights the trace crossed before this line."""
        return (self.time.date() - NO_DATE).days if self.time is not None and self.time_only else 0


__all__ = ["NO_DATE", "LogRecord"]
