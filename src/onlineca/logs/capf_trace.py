"""The CAPF trace log, ``<log_dir>/capf.log``, in the source document's format.

Every line is ``HH:MM:SS.mmm | text``; a session's lines read ``debug 2:SEP74A02FC0A675:message``
so that the document's troubleshooting method (find the phone's name, follow its lines) works on
ours, and ``onlineca logs analyze`` recognises them.  ``SessionTrace`` is the per-session adapter
that puts the device name (or, before the phone named itself, its address in brackets) on each
line and adds ``device``/``session_id`` fields for ``--log-format json``.  The words ``debug 2``
are part of the document's text, not our logging level: trace lines are written at INFO.
Nothing here may log an auth string, a password or a private key (the handlers redact as well).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from onlineca.logs import attach_log

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


__all__ = ["TRACE_FILE", "CAPFTraceFormatter", "SessionTrace", "attach_capf_trace"]
