"""The CAPF trace log, ``<log_dir>/capf.log``, in the source document's format.

Every line is ``HH:MM:SS.mmm | text``; a session's lines read ``debug 2:SEP74A02FC0A675:message``
so that the document's troubleshooting method (find the phone's name, follow its lines) works on
ours, and ``onlineca logs analyze`` recognises them.  ``SessionTrace`` is the per-session adapter
that puts the device name (or, before the phone named itself, its address in brackets) on each
line and adds ``device``/``session_id`` fields for ``--log-format json``.  The words ``debug 2``
are part of the document's text, not our logging level: trace lines are written at INFO.
The parser (``parse`` with a ``DayRollover`` per file) reads these lines back, ours and the
original product's: the time (the trace has no date: a time far before the previous one means the
trace crossed midnight, so a wait across midnight is never negative), the device, and the
``X-Request-ID`` CAPF sent to the RA for the device's enrollment.
Nothing here may log an auth string, a password or a private key (the handlers redact as well).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from onlineca.logs import attach_log
from onlineca.logs.record import NO_DATE, LogRecord
from onlineca.proto.request_id import REQUEST_ID_HEADER, clean_request_id

TRACE_LOGGER = "onlineca.capf"
TRACE_FILE = "capf.log"
TRACE_LEVEL = "2"  # the document's "debug 2:" (CAPF trace level "Detailed")

log = logging.getLogger(TRACE_LOGGER + ".trace")


class CAPFTraceFormatter(logging.Formatter):
    """``14:05:04.628 | debug 2:SEP74A02FC0A675:message`` (local time, as the product writes it)."""

    _second: int | None = None
    _hms = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # a busy CAPF writes many lines a second: one strftime each
            self._second, self._hms = second, time.strftime("%H:%M:%S", time.localtime(second))
        stamp = f"{self._hms}.{int(record.msecs):03d}"
        text = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return f"{stamp} | {text}"


def attach_capf_trace(log_dir: str | Path, fmt: str = "text", level: str = "info") -> Callable[[], None]:
    """Write every ``onlineca.capf`` record to ``<log_dir>/capf.log``; returns the detach function."""
    return attach_log(TRACE_LOGGER, Path(log_dir) / TRACE_FILE, fmt, level, CAPFTraceFormatter())


class SessionTrace:
    """The trace lines of one device session."""

    def __init__(self, peer: str, session_id: int | None = None) -> None:
        self.peer = peer
        self.device: str | None = None
        self.session_id = session_id

    @property
    def who(self) -> str:
        return self.device or f"[{self.peer}]"

    def _extra(self) -> dict[str, object]:
        extra: dict[str, object] = {"device": self.device or "", "peer": self.peer}
        if self.session_id is not None:
            extra["session_id"] = f"{self.session_id:#010x}"
        return extra

    def debug(self, message: str) -> None:
        """``debug 2:DEVICE:message`` - the ordinary session line."""
        log.info("debug %s:%s:%s", TRACE_LEVEL, self.who, message, extra=self._extra())

    def error(self, message: str) -> None:
        """A failure line, same shape (the product writes failures at its debug level too)."""
        log.warning("debug %s:%s:%s", TRACE_LEVEL, self.who, message, extra=self._extra())

    def plain(self, message: str) -> None:
        """A line the document writes without the session prefix (``debug LSC is verified...``,
        ``CAPFDevice::Map...``, ``Select(DEVICE) ...``); the caller names the device in it."""
        log.info("%s", message, extra=self._extra())


def request_id_line(request_id: str) -> str:
    """The trace line that names the request id of a device's EST enrollment."""
    return f"EST simpleenroll {REQUEST_ID_HEADER}: {request_id}"


# --- the parser ------------------------------------------------------------------------------

# A trace record starts at its time (``14:05:04.628 |``), or at a date and time where a trace was
# exported with dates; a time right after a date is not a second start.
START = r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \||(?<!\d{4}-\d\d-\d\d )\b\d\d:\d\d:\d\d\.\d{3} \|"
_LINE = re.compile(r"^(?:(\d{4})-(\d\d)-(\d\d) )?(\d\d):(\d\d):(\d\d)\.(\d{3}) \|")
# The device name CAPF writes in each line of a session ("2:SEP74A02FC0A675:"), or in Select(...).
DEVICE = re.compile(r"(?:\d+:(?P<a>[A-Za-z][\w-]{2,63}):|Select\((?P<b>[\w-]{3,64})\)|my_lower\('(?P<c>[\w-]{3,64})'\))")
_REQUEST_ID = re.compile(r"X-Request-ID[:=] ?(?P<rid>[A-Za-z0-9._:-]{1,64})", re.IGNORECASE)
_HALF_DAY = 12 * 3600


def device_in(text: str) -> str | None:
    m = DEVICE.search(text)
    return (m.group("a") or m.group("b") or m.group("c")) if m else None


class DayRollover:
    """Places the dateless times of one trace file, in file order: a time more than twelve hours
    before the one before it is on the next day (the trace crossed midnight); a time more than
    twelve hours after it is a late line of the day before.  Lines a few seconds out of order (two
    threads writing) stay on their day."""

    def __init__(self) -> None:
        self.days = 0
        self._last: int | None = None

    def place(self, hms: dt.time) -> dt.datetime:
        seconds = hms.hour * 3600 + hms.minute * 60 + hms.second
        day = self.days
        if self._last is not None and seconds < self._last - _HALF_DAY:
            self.days += 1
            day = self.days
        elif self._last is not None and seconds > self._last + _HALF_DAY and day > 0:
            return dt.datetime.combine(NO_DATE + dt.timedelta(days=day - 1), hms)
        self._last = seconds
        return dt.datetime.combine(NO_DATE + dt.timedelta(days=day), hms)


def parse(piece: str, source: str, lineno: int, days: DayRollover) -> LogRecord | None:
    """A CAPF trace record, or None when ``piece`` does not start with a trace time."""
    m = _LINE.match(piece)
    if m is None:
        return None
    g = [int(x) if x is not None else None for x in m.groups()]
    try:
        hms = dt.time(g[3] or 0, g[4] or 0, g[5] or 0, (g[6] or 0) * 1000)
        when = (dt.datetime.combine(dt.date(g[0], g[1] or 1, g[2] or 1), hms) if g[0] is not None
                else days.place(hms))
    except ValueError:
        return LogRecord(source, lineno, "capf", piece, device=device_in(piece))
    rid = _REQUEST_ID.search(piece)
    return LogRecord(source, lineno, "capf", piece, when, time_only=g[0] is None, device=device_in(piece),
                     request_id=clean_request_id(rid.group("rid")) if rid else None)


__all__ = ["DEVICE", "START", "TRACE_FILE", "CAPFTraceFormatter", "DayRollover", "SessionTrace", "attach_capf_trace",
           "device_in", "parse", "request_id_line"]
