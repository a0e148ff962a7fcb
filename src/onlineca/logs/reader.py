"""Every log format onlineca reads, through one door: ``records(text)`` cuts a log into
``LogRecord``s with their times, devices and correlation keys, whatever the format.

Log text copied from tickets and documents often has several records run together on one line,
so each physical line is cut at every place a record of a known format starts (each format's
module says where: ``START``), then each piece goes to its format's parser: the CAPF trace, the
NGINX error.log with its libEST lines, the IIS W3C log (``#Fields:`` honoured), the NGINX access
log and our JSON lines.  A libEST line has no time nor connection: it happened in the request the
NGINX record before it in the same second was about.  Reading is all this module does.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from onlineca.logs import access, capf_trace, estlog, iis, nginx, parse_json_line
from onlineca.logs.record import LogRecord

_RECORD_START = re.compile("(?=" + "|".join((nginx.START, estlog.START, iis.START, capf_trace.START)) + ")")
MAX_FILE_BYTES = 256 * 1024 * 1024


def _json_record(source: str, lineno: int, text: str) -> LogRecord | None:
    obj = parse_json_line(text)
    if obj is None:
        return None
    when = None
    ts = obj.get("ts")
    if isinstance(ts, str):
        try:
            when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            when = None
    message = str(obj.get("message", ""))
    device = obj.get("device")
    rid = obj.get("request_id")
    return LogRecord(source, lineno, "json", message, when, device=device if isinstance(device, str) and device
                     else capf_trace.device_in(message), level=str(obj.get("level", "")),
                     request_id=rid if isinstance(rid, str) else None, fields=obj)


def _piece(source: str, lineno: int, piece: str, fields: iis.IISFields, days: capf_trace.DayRollover) -> LogRecord:
    rec = (capf_trace.parse(piece, source, lineno, days) or nginx.parse(piece, source, lineno)
           or estlog.parse(piece, source, lineno))
    if rec is not None:
        return rec
    if re.match(iis.START, piece):
        return fields.record(piece.split(), source, lineno, piece)
    return access.parse(piece, source, lineno) or LogRecord(source, lineno, "text", piece,
                                                            device=capf_trace.device_in(piece))


def _inherit(rec: LogRecord, last: LogRecord | None) -> LogRecord:
    """A record without a time happened when the one before it did; a libEST line after an NGINX
    record (or another libEST line) belongs to the same request."""
    if last is None or last.time is None or rec.time is not None:
        return rec
    # (A request id is never inherited: lines of concurrent requests interleave, and a wrong id
    # would tie two devices together in a trace.)
    same_request = rec.kind == "est" and last.kind in ("nginx", "est")
    return replace(rec, time=last.time, time_only=last.time_only,
                   conn=rec.conn or (last.conn if same_request else None),
                   client=rec.client or (last.client if same_request else None))


def records(text: str, source: str = "-") -> Iterator[LogRecord]:
    """Every record of a log's text, run-together lines cut apart, with times and keys."""
    fields = iis.IISFields()
    days = capf_trace.DayRollover()
    last: LogRecord | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        if line.startswith("{"):
            rec = _json_record(source, lineno, line)
            if rec is not None:
                yield rec
                continue
        if fields.directive(line):
            continue
        chunks = fields.split(line)
        if chunks is not None:
            for tokens in chunks:
                last = fields.record(tokens, source, lineno, line if len(chunks) == 1 else None)
                yield last
            continue
        for piece in _RECORD_START.split(line):
            piece = piece.strip()
            if piece:
                last = _inherit(_piece(source, lineno, piece, fields, days), last)
                yield last


def log_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The files named, and every file below the folders named (symbolic links not followed)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            yield from sorted(c for c in path.rglob("*") if c.is_file() and not c.is_symlink())
        else:
            yield path


def read_log(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """A log file's text (bad bytes replaced); OSError (with the reason) when unreadable or too large."""
    if path.stat().st_size > limit:
        raise OSError(f"larger than {limit} bytes: read it by hand")
    return path.read_bytes().decode("utf-8", errors="replace")


def unreadable_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


__all__ = ["MAX_FILE_BYTES", "log_files", "read_log", "records", "unreadable_reason"]
