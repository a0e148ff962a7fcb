"""``onlineca logs trace DEVICE``: one timeline that follows a device through the CAPF log, the RA's
error.log and access log, and the CA's IIS log, as the source document advises (start from the CAPF
log for the time reference, then follow the device through the RA and CA logs).

Lines are tied to the device by request, never by a time window alone: the device's CAPF lines
give the ``X-Request-ID`` CAPF sent; the RA's lines with that id give the CA's ReqID and the
certificate's serial number; the CA's IIS lines with the id or the ReqID follow (the closure of
those keys).  The original products' logs carry no request id: there the device's subject, the
ReqID of ``certnew.cer`` (which ends the IIS requests of one enrollment from one client) and the
serial tie lines; an IIS enrollment that nothing ties is given to a device only when that device
alone was enrolling at the time.  Local-time logs (CAPF, error.log) are placed in UTC with the
given offset; dateless CAPF lines get the given day or their file's date (midnights the trace
crossed counted).  Read-only; nothing here changes a log.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onlineca.diagnose.analyze import analyze_records
from onlineca.errors import TraceError
from onlineca.logs.reader import read_log, records
from onlineca.logs.record import LogRecord

TIER = {"capf": "CAPF", "nginx": "RA", "est": "RA", "access": "RA", "iis": "CA", "json": "LOG", "text": "LOG"}
_REQ_ID = re.compile(r"(?i)(?:ReqID[= ]|\brequest (?:id )?|Request Id is )(\d+)\b")
_SERIAL = re.compile(r"(?i)\bserial(?: number)?[=: ]+(?:0x)?([0-9a-f]{6,40})\b")
_DEVICE_WORD = re.compile(r"\b(SEP[0-9A-F]{12}|CIPC\w+|ATA[0-9A-F]{12}|BAT[0-9A-F]{12})\b", re.IGNORECASE)
_REQUEST_LINE = ("iis", "access")


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
    request_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z") if self.time else None,
                "tier": self.tier, "source": self.source, "line": self.line, "text": self.text,
                "req_id": self.req_id, "request_id": self.request_id, "code": self.code or None,
                "cause": self.cause or None}


@dataclass
class Timeline:
    device: str
    events: list[Event] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    utc_offset: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"schema": "onlineca.logs-trace/1", "device": self.device, "utc_offset": self.utc_offset,
                "files": self.files, "req_ids": sorted({e.req_id for e in self.events if e.req_id is not None}),
                "request_ids": sorted({e.request_id for e in self.events if e.request_id}),
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
        t = dt.datetime.combine(day + dt.timedelta(days=rec.days_after_start), t.time())
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return t.astimezone(dt.UTC)


def req_id_of(rec: LogRecord) -> int | None:
    """The CA's request id a record names (certnew.cer?ReqID=N, "request N for ...")."""
    if rec.kind == "iis":
        m = re.search(r"(?i)ReqID=(\d+)", str(rec.fields.get("cs-uri-query", "")))
        return int(m.group(1)) if m else None
    m = _REQ_ID.search(rec.text)
    return int(m.group(1)) if m else None


def _keys(rec: LogRecord) -> set[str]:
    keys = {f"device:{d.lower()}" for d in _DEVICE_WORD.findall(rec.text)}
    if rec.device:
        keys.add(f"device:{rec.device.lower()}")
    if rec.request_id:
        keys.add(f"rid:{rec.request_id}")
    if (req_id := req_id_of(rec)) is not None:
        keys.add(f"reqid:{req_id}")
    if (serial := _SERIAL.search(rec.text)) is not None:
        keys.add(f"serial:{serial.group(1).lower()}")
    return keys


def _iis_enrollments(placed: list[tuple[LogRecord, dt.datetime | None, set[str]]], gap_s: float) -> None:
    """Original IIS logs carry no request id: the requests of one client seconds apart, up to its
    certnew.cer?ReqID=N, are one enrollment and share that ReqID."""
    open_runs: dict[tuple[str, str], list[int]] = {}
    for i, (rec, t, keys) in enumerate(placed):
        if rec.kind != "iis" or rec.request_id or t is None:
            continue
        run_key = (rec.source, rec.client or "")
        run = open_runs.setdefault(run_key, [])
        if run and (t - placed[run[-1]][1]).total_seconds() > gap_s:  # type: ignore[operator]
            run.clear()
        run.append(i)
        reqids = {k for k in keys if k.startswith("reqid:")}
        if reqids:
            for j in run:
                placed[j][2].update(reqids)
            run.clear()


def _enrolling(placed: list[tuple[LogRecord, dt.datetime | None, set[str]]], slack: dt.timedelta
               ) -> dict[str, list[tuple[dt.datetime, dt.datetime]]]:
    """Each device's enrollment spans (CAPF's call to the RA until its answer), widened by ``slack``."""
    started: dict[str, dt.datetime] = {}
    spans: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    for rec, t, _keys in placed:
        if rec.kind != "capf" or t is None or not rec.device:
            continue
        name = rec.device.lower()
        if "Calling enrollCertUsingEST()" in rec.text:
            started[name] = t
        elif "Enrollment rv" in rec.text and name in started:
            spans.setdefault(name, []).append((started.pop(name) - slack, t + slack))
    for name, t in started.items():  # an enrollment whose answer is not in the logs
        spans.setdefault(name, []).append((t - slack, t + slack))
    return spans


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
    placed: list[tuple[LogRecord, dt.datetime | None, set[str]]] = []
    for path in _files(list(paths)):
        try:
            text = read_log(path)
            mtime_day = dt.datetime.fromtimestamp(path.stat().st_mtime, tz).date()
        except OSError:
            continue
        timeline.files.append(str(path))
        recs = list(records(text, str(path)))
        # The file was last written on its last line's day: its first line is that many midnights earlier.
        first_day = the_day or mtime_day - dt.timedelta(days=max((r.days_after_start for r in recs), default=0))
        placed.extend((r, _utc(r, tz, first_day), _keys(r)) for r in recs)
    _iis_enrollments(placed, slack_s)
    me = f"device:{device.lower()}"
    wanted = {me}
    chosen: set[int] = set()
    while True:  # the closure of the device's keys: request ids, then ReqIDs and serials
        grew = False
        for i, (rec, t, keys) in enumerate(placed):
            if i in chosen or not keys & wanted or (t is None and rec.kind == "text"):
                continue
            if any(k.startswith("device:") and k != me for k in keys) and me not in keys:
                continue  # another device's line that shares a key (a reused connection) is not ours
            chosen.add(i)
            new = {k for k in keys if not k.startswith("device:")} - wanted
            wanted |= new
            grew = grew or bool(new)
        if not grew:
            break
    spans = _enrolling(placed, dt.timedelta(seconds=slack_s))
    mine = spans.get(device.lower(), [])
    others = [s for name, ss in spans.items() if name != device.lower() for s in ss]
    for i, (rec, t, keys) in enumerate(placed):
        # A request line nothing ties to any device: ours only if we alone were enrolling then.
        if (i in chosen or t is None or rec.kind not in _REQUEST_LINE or any(k.startswith("device:") for k in keys)
                or not any(a <= t <= b for a, b in mine) or any(a <= t <= b for a, b in others)):
            continue
        chosen.add(i)
    picked = [(placed[i][0], placed[i][1]) for i in sorted(chosen)]
    causes: dict[int, Any] = {}
    for h in analyze_records(r for r, _ in picked):
        if h.severity in ("error", "warning") and h.record is not None:
            causes.setdefault(id(h.record), h)
    for rec, t in picked:
        hit = causes.get(id(rec))
        timeline.events.append(Event(t, TIER.get(rec.kind, "LOG"), rec.source, rec.line, rec.text, req_id_of(rec),
                                     hit.code if hit else "", hit.cause if hit else "", rec.request_id))
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    timeline.events.sort(key=lambda e: (e.time or epoch, e.tier != "CAPF"))
    return timeline


__all__ = ["Event", "Timeline", "TraceError", "build_timeline", "parse_offset", "req_id_of"]
