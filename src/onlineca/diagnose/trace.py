"""``onlineca logs trace DEVICE``: one timeline that follows a device through the CAPF log, the RA's
error.log and access log, and the CA's IIS log, as the source document advises (start from the CAPF
log for the time reference, then follow the device through the RA and CA logs).

Records that name the device anchor the timeline; the RA and CA lines that do not name it (the
access log, IIS) are taken when they fall in an anchor's time window (with some slack for clocks
that differ between machines), and are tied by request where a ReqID links them.  Local-time logs
(CAPF, error.log) are placed in UTC with the given offset; CAPF trace lines without a date get the
given day or their file's date.  Read-only; nothing here changes a log.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onlineca.diagnose.analyze import LogRecord, analyze_records, read_log, records
from onlineca.errors import TraceError

TIER = {"capf": "CAPF", "nginx": "RA", "est": "RA", "access": "RA", "iis": "CA", "json": "LOG", "text": "LOG"}
_REQ_ID = re.compile(r"(?i)(?:ReqID=|request (?:id )?|Request Id is )(\d+)\b")


@dataclass(frozen=True)
class Event:
    time: dt.datetime | None  # UTC
    tier: str
    source: str
    line: int
    text: str
    req_id: int | None = None
    code: str = ""
    cause: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z") if self.time else None,
                "tier": self.tier, "source": self.source, "line": self.line, "text": self.text,
                "req_id": self.req_id, "code": self.code or None, "cause": self.cause or None}


@dataclass
class Timeline:
    device: str
    events: list[Event] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    utc_offset: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"schema": "onlineca.logs-trace/1", "device": self.device, "utc_offset": self.utc_offset,
                "files": self.files, "req_ids": sorted({e.req_id for e in self.events if e.req_id is not None}),
                "events": [e.as_dict() for e in self.events]}

    def to_text(self) -> str:
        if not self.events:
            return f"no record of {self.device} in {len(self.files)} file(s)"
        width = max(len(Path(e.source).name) + len(str(e.line)) + 1 for e in self.events)
        out = [f"{self.device}: {len(self.events)} record(s) in {len(self.files)} file(s), times in UTC"]
        for e in self.events:
            when = e.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if e.time else "?" * 23
            where = f"{Path(e.source).name}:{e.line}".ljust(width)
            text = e.text if len(e.text) <= 160 else e.text[:157] + "..."
            out.append(f"{when}  {e.tier:<4} {where}  {text}")
            if e.code:
                out.append(f"{'':23}  {'':4} {'':{width}}  ^ {e.code}: {e.cause}")
        return "\n".join(out)


def parse_offset(text: str | None) -> dt.tzinfo:
    """``-05:00`` / ``+0100`` / ``Z``; None means this machine's local time zone."""
    if not text:
        return dt.datetime.now().astimezone().tzinfo or dt.UTC
    if text.upper() in ("Z", "UTC"):
        return dt.UTC
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", text.strip())
    if not m:
        raise TraceError(f"bad UTC offset {text!r}", hint="Write it as -05:00, +01:00 or Z.")
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return dt.timezone(dt.timedelta(minutes=minutes if m.group(1) == "+" else -minutes))


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(c for c in p.rglob("*") if c.is_file() and not c.is_symlink()))
        elif p.is_file():
            out.append(p)
        else:
            raise TraceError(f"{p}: no such file or folder")
    return out


def _utc(rec: LogRecord, tz: dt.tzinfo, day: dt.date) -> dt.datetime | None:
    t = rec.time
    if t is None:
        return None
    if rec.time_only:
        t = dt.datetime.combine(day, t.time())
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return t.astimezone(dt.UTC)


def _req_id(rec: LogRecord) -> int | None:
    if rec.kind == "iis":
        query = str(rec.fields.get("cs-uri-query", ""))
        m = re.search(r"(?i)ReqID=(\d+)", query)
        return int(m.group(1)) if m else None
    m = _REQ_ID.search(rec.text)
    return int(m.group(1)) if m else None


def build_timeline(device: str, paths: Iterable[Path], *, day: str | None = None, utc_offset: str | None = None,
                   slack_s: float = 5.0) -> Timeline:
    """The device's timeline across the logs under ``paths``."""
    if not re.fullmatch(r"[\w.:-]{1,64}", device):
        raise TraceError(f"bad device name {device!r}", hint="Give the device name as CAPF logs it, e.g. SEP74A02FC0A675.")
    tz = parse_offset(utc_offset)
    try:
        the_day = dt.date.fromisoformat(day) if day else None
    except ValueError:
        raise TraceError(f"bad date {day!r}", hint="Write it as YYYY-MM-DD.") from None
    timeline = Timeline(device, utc_offset=str(tz))
    placed: list[tuple[LogRecord, dt.datetime | None]] = []
    for path in _files(list(paths)):
        try:
            text = read_log(path)
            mtime_day = dt.datetime.fromtimestamp(path.stat().st_mtime, tz).date()
        except OSError:
            continue
        timeline.files.append(str(path))
        for rec in records(text, str(path)):
            placed.append((rec, _utc(rec, tz, the_day or mtime_day)))
    needle = device.lower()
    anchors = [(r, t) for r, t in placed if needle in r.text.lower() or (r.device or "").lower() == needle]
    # Requests the device's own records name (RA: "request 12 for CN=SEP..."): their CA lines belong too.
    req_ids = {i for r, _ in anchors if (i := _req_id(r)) is not None}
    windows = sorted(t for _, t in anchors if t is not None)
    spans: list[tuple[dt.datetime, dt.datetime]] = []
    slack = dt.timedelta(seconds=slack_s)
    for t in windows:  # merge anchor times into spans, each widened by the slack
        if spans and t - slack <= spans[-1][1]:
            spans[-1] = (spans[-1][0], t + slack)
        else:
            spans.append((t - slack, t + slack))
    chosen: list[tuple[LogRecord, dt.datetime | None]] = []
    for rec, t in placed:
        mine = needle in rec.text.lower() or (rec.device or "").lower() == needle
        by_request = rec.kind in ("iis", "nginx", "est", "access") and _req_id(rec) in req_ids
        rid = _req_id(rec)
        in_window = (rec.kind in ("iis", "access", "nginx", "est") and t is not None
                     and any(a <= t <= b for a, b in spans) and not _other_device(rec, needle)
                     and (rid is None or not req_ids or rid in req_ids))  # another request's lines stay out
        if mine or by_request or in_window:
            chosen.append((rec, t))
    causes: dict[int, Any] = {}
    for source in dict.fromkeys(r.source for r, _ in chosen):  # per file: a signature's context is its file
        for h in analyze_records(r for r, _ in chosen if r.source == source):
            if h.severity in ("error", "warning") and h.record is not None:
                causes.setdefault(id(h.record), h)
    for rec, t in chosen:
        hit = causes.get(id(rec))
        timeline.events.append(Event(t, TIER.get(rec.kind, "LOG"), rec.source, rec.line, rec.text, _req_id(rec),
                                     hit.code if hit else "", hit.cause if hit else ""))
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    timeline.events.sort(key=lambda e: (e.time or epoch, e.tier != "CAPF"))
    return timeline


_DEVICE_WORD = re.compile(r"\b(SEP[0-9A-F]{12}|CIPC\w+|ATA[0-9A-F]{12})\b", re.IGNORECASE)


def _other_device(rec: LogRecord, needle: str) -> bool:
    """A record that names another device belongs to that device's timeline, not this one's."""
    names = {m.lower() for m in _DEVICE_WORD.findall(rec.text)}
    if rec.device:
        names.add(rec.device.lower())
    return bool(names) and needle not in names


__all__ = ["Event", "Timeline", "TraceError", "build_timeline", "parse_offset"]
