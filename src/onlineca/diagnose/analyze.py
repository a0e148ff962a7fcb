"""Log analysis: the failure signatures found in log records, correlated per request, and the
root causes they point at.

Records come from ``onlineca.logs.reader`` (every format we and the original products write); each
is matched against ``signatures``.  A signature whose meaning depends on what happened before
(``navigate_to_certsrv_page ... certrqxt.asp`` turns a refused EST request into a template typo)
looks only at the same request: the same NGINX connection (``*N``) and client, within a few
seconds, never at anything earlier in the file.  ``Analysis.causes()`` then reports one root
cause per fault, first, with its repeats counted (retries of one timeout are one cause, whatever
their milliseconds) and the lines that only follow from it (503s in the access log, CAPF's
``rv = 26``, ``Unable to retrieve CA Cert chain``) grouped under it with their counts; a
consequence nothing explains is reported as the cause it points at.  Analysis only reads.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onlineca.diagnose.findings import Severity
from onlineca.diagnose.signatures import SIGNATURES, Hit, Signature, _hit, iis_hits, json_hits, match, required_literal
from onlineca.logs.reader import log_files, read_log, records, unreadable_reason
from onlineca.logs.record import LogRecord

CONTEXT_WINDOW_S = 5.0      # a request's lines on the RA are seconds apart
CONTEXT_RECORDS = 20        # without times: how far back a request's own lines can be
CROSS_FILE_WINDOW_S = 300.0  # a consequence in another log (CAPF, access, IIS) of a cause this close
_WITH_CONTEXT = [s for s in SIGNATURES if s.context is not None]
_ERROR_LEVELS = frozenset({"error", "crit", "alert", "emerg", "critical", "fatal"})
_FATAL = re.compile(r"\[(?:error|crit|alert|emerg)\]|\[ERROR\]|\b(?:Traceback|FATAL)\b")
_RANK = {"error": 0, "warning": 1}
# Evidence that tells two causes of one code apart (a second CA host, another template).
_DISTINCT = ("host", "template", "cert", "user")


def _wall(t: dt.datetime | None) -> dt.datetime | None:
    """A time on this machine's wall clock, naive (NGINX and CAPF write local times)."""
    if t is None:
        return None
    return t.astimezone().replace(tzinfo=None) if t.tzinfo is not None else t


def _seconds_apart(a: LogRecord, b: LogRecord) -> float | None:
    ta, tb = _wall(a.time), _wall(b.time)
    if ta is None or tb is None:
        return None
    if a.time_only or b.time_only:  # a dateless CAPF time: compare the times of day
        d = abs((ta - ta.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
                - (tb - tb.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds())
        return min(d, 86400 - d)
    return abs((ta - tb).total_seconds())


def same_request(a: LogRecord, b: LogRecord, distance: int) -> bool:
    """Whether two records of one log are about the same request, as far as the log can tell."""
    if a.source != b.source:
        return False
    if a.request_id and b.request_id:
        return a.request_id == b.request_id
    if (a.conn and b.conn and a.conn != b.conn) or (a.client and b.client and a.client != b.client):
        return False
    apart = _seconds_apart(a, b)
    return apart <= CONTEXT_WINDOW_S if apart is not None else distance <= CONTEXT_RECORDS


def _is_error_line(rec: LogRecord) -> bool:
    return rec.level.lower() in _ERROR_LEVELS or (not rec.level and bool(_FATAL.search(rec.text)))


def analyze_records(recs: Iterable[LogRecord]) -> list[Hit]:
    """Every signature hit in these records (of one or many files, in file order)."""
    hits: list[Hit] = []
    marks: dict[tuple[str, str], list[tuple[int, LogRecord]]] = {}  # (signature, file) -> context records
    enroll_started: dict[tuple[str, str | None], dt.datetime] = {}
    last_problem: dict[str, Hit] = {}
    for n, rec in enumerate(recs):
        if rec.kind == "iis":
            hits.extend(iis_hits(rec))
            continue
        if rec.kind == "json" and (coded := json_hits(rec)):
            hits.extend(coded)
            continue
        if rec.kind == "capf" and rec.time is not None and "Calling enrollCertUsingEST()" in rec.text:
            enroll_started[(rec.source, rec.device)] = rec.time
        for sig in _WITH_CONTEXT:
            if sig.context is not None and sig.context.search(rec.text):
                seen = marks.setdefault((sig.name, rec.source), [])
                seen[:] = [*seen[-50:], (n, rec)]
        hit = None
        for sig in SIGNATURES:
            if sig.needle not in rec.text:
                continue
            in_context = sig.context is not None and sig.pattern.search(rec.text) is not None and any(
                same_request(mark, rec, n - i) for i, mark in marks.get((sig.name, rec.source), ()))
            hit = match(sig, rec, in_context)
            if hit is not None:
                break
        if hit is None:
            if _is_error_line(rec):
                hits.append(_hit(rec, "UNKNOWN_ERROR", "warning", "An error line that no known signature explains.",
                                 "", "unknown_error"))
            continue
        started = enroll_started.pop((rec.source, rec.device), None) if "Enrollment rv" in rec.text else None
        if started is not None and rec.time is not None:
            waited = round(max(0.0, (rec.time - started).total_seconds()), 3)
            extra = f" CAPF waited {waited:g} s for the answer." if hit.severity == "error" else ""
            hit = Hit(**{**hit.__dict__, "cause": hit.cause + extra, "evidence": {**hit.evidence, "waited_s": waited}})
        if _enrich(hit, last_problem):
            continue
        if hit.severity in ("error", "warning"):
            last_problem[rec.source] = hit
        hits.append(hit)
    return hits


_ENRICHING = frozenset(s.name for s in SIGNATURES if s.enriches)


def _enrich(hit: Hit, last_problem: dict[str, Hit]) -> bool:
    """A line that only adds context (``URL used: ...``) to the failure before it in its file."""
    if hit.signature not in _ENRICHING:
        return False
    before = last_problem.get(hit.source)
    if before is not None:
        for key, value in hit.evidence.items():
            before.evidence.setdefault(key, value)
    return True


_EPOCH = dt.datetime(1970, 1, 1)


def _marks(rec: LogRecord | None) -> tuple[float | None, float | None]:
    """(seconds on the wall clock, seconds into the day) of a record, to compare with others."""
    wall = _wall(rec.time) if rec is not None else None
    if wall is None or rec is None:
        return None, None
    tod = wall.hour * 3600 + wall.minute * 60 + wall.second + wall.microsecond / 1e6
    return (None if rec.time_only else (wall - _EPOCH).total_seconds()), tod


def _near(sorted_values: list[float], value: float, window: float, wrap: bool = False) -> bool:
    i = bisect.bisect_left(sorted_values, value)
    candidates = sorted_values[max(0, i - 1):i + 1]
    if wrap and sorted_values:  # times of day: 23:59 is near 00:01
        candidates += [sorted_values[0] + 86400, sorted_values[-1] - 86400]
    return any(abs(c - value) <= window for c in candidates)


@dataclass
class Cause:
    """One root cause: its first hit, how often it recurred, and the consequences it explains."""

    first: Hit
    hits: list[Hit] = field(default_factory=list)
    consequences: list[Hit] = field(default_factory=list)
    _rids: set[str] = field(default_factory=set, repr=False)
    _lines: dict[str, tuple[list[int], list[float | None]]] = field(default_factory=dict, repr=False)
    _walls: list[float] = field(default_factory=list, repr=False)    # dated hits
    _tods: list[float] = field(default_factory=list, repr=False)     # every timed hit
    _dateless: list[float] = field(default_factory=list, repr=False)  # dateless (CAPF) hits

    code = property(lambda self: self.first.code)
    severity = property(lambda self: self.first.severity)
    cause = property(lambda self: self.first.cause)
    fix = property(lambda self: self.first.fix)
    evidence = property(lambda self: self.first.evidence)
    source = property(lambda self: self.first.source)
    line = property(lambda self: self.first.line)
    time = property(lambda self: self.first.time)
    device = property(lambda self: self.first.device)
    signature = property(lambda self: self.first.signature)
    excerpt = property(lambda self: self.first.excerpt)
    secondary = property(lambda self: False)  # a consequence nothing explains is reported as a cause

    def add(self, h: Hit) -> None:
        self.hits.append(h)
        rec = h.record
        if rec is None:
            return
        if rec.request_id:
            self._rids.add(rec.request_id)
        wall, tod = _marks(rec)
        lines, times = self._lines.setdefault(rec.source, ([], []))
        lines.append(rec.line)  # hits come in file order
        times.append(wall if wall is not None else tod)
        if wall is not None:
            bisect.insort(self._walls, wall)
        if tod is not None:
            bisect.insort(self._tods, tod)
            if wall is None:
                bisect.insort(self._dateless, tod)

    def explains(self, h: Hit) -> bool:
        """Whether a consequence line follows from this cause: the same request, the cause before
        it in the same log, or the cause minutes from it in another log."""
        rec = h.record
        if rec is None:
            return False
        if rec.request_id and rec.request_id in self._rids:
            return True
        wall, tod = _marks(rec)
        lines, times = self._lines.get(rec.source, ([], []))
        i = bisect.bisect_right(lines, rec.line)
        if i:  # the cause's last line before this one in the same log
            t, mine = times[i - 1], (wall if wall is not None else tod)
            if t is None or mine is None or abs(mine - t) <= CROSS_FILE_WINDOW_S:
                return True
        if wall is not None:
            return _near(self._walls, wall, CROSS_FILE_WINDOW_S) or (
                tod is not None and _near(self._dateless, tod, CROSS_FILE_WINDOW_S, wrap=True))
        return tod is not None and _near(self._tods, tod, CROSS_FILE_WINDOW_S, wrap=True)

    def consequence_counts(self) -> list[tuple[str, str, int]]:
        counts: dict[tuple[str, str], int] = {}
        for h in self.consequences:
            counts[(h.code, h.signature)] = counts.get((h.code, h.signature), 0) + 1
        return [(code, sig, n) for (code, sig), n in counts.items()]

    def as_dict(self) -> dict[str, Any]:
        return {**self.first.as_dict(), "secondary": False, "count": len(self.hits),
                "last_time": self.hits[-1].time, "signatures": sorted({h.signature for h in self.hits}),
                "consequences": [{"code": c, "signature": s, "count": n} for c, s, n in self.consequence_counts()]}


def _key(h: Hit) -> tuple[str, ...]:
    return (h.code, *(str(h.evidence.get(k, "")) for k in _DISTINCT))


def group_causes(problems: list[Hit]) -> list[Cause]:
    """Root causes (repeats counted), each with the consequence lines it explains; most important first."""
    groups: dict[tuple[str, ...], Cause] = {}
    for h in problems:
        if not h.secondary:
            groups.setdefault(_key(h), Cause(h)).add(h)
    for h in (h for h in problems if h.secondary):
        roots = list(groups.values())
        owner = next((c for c in reversed(roots) if c.explains(h)), None)
        if owner is None and len(roots) == 1:
            owner = roots[0]
        if owner is None:
            owner = groups.setdefault(_key(h), Cause(h))
            if owner.first is h:
                owner.add(h)
                continue
        owner.consequences.append(h)
    order = list(groups.values())
    return sorted(order, key=lambda c: (_RANK.get(c.severity, 2), -len(c.consequences), order.index(c)))


@dataclass
class Analysis:
    """All hits of the files read, and the causes they point at."""

    hits: list[Hit] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    _causes: list[Cause] | None = field(default=None, repr=False)

    @property
    def problems(self) -> list[Hit]:
        return [h for h in self.hits if h.severity in ("error", "warning")]

    def causes(self) -> list[Cause]:
        if self._causes is None:
            self._causes = group_causes(self.problems)
        return self._causes

    @property
    def ok(self) -> bool:
        return not any(h.severity == "error" for h in self.hits)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": "onlineca.logs-analyze/1",
            "ok": self.ok,
            "files": self.files,
            "unreadable": self.unreadable,
            "causes": [c.as_dict() for c in self.causes()],
            "hits": [h.as_dict() for h in self.hits if h.severity != "ok"],
            "healthy_records": sum(h.severity == "ok" for h in self.hits),
        }

    def to_text(self) -> str:
        lines = []
        for c in self.causes():
            where = f"{c.source}:{c.line}" + (f" {c.time}" if c.time else "") + (f" {c.device}" if c.device else "")
            times = f"  (x{len(c.hits)}, last {c.hits[-1].time or '?'})" if len(c.hits) > 1 else ""
            lines.append(f"{c.severity.upper():<7} {c.code}  {where}{times}")
            lines.append(f"    cause: {c.cause}")
            lines.append(f"    fix:   {c.fix}")
            lines.append(f"    line:  {c.excerpt}")
            if c.consequences:
                lines.append(f"    then:  {len(c.consequences)} consequence line(s): "
                             + "; ".join(f"{code} ({sig}) x{n}" for code, sig, n in c.consequence_counts()))
        for path, why in self.unreadable.items():
            lines.append(f"ERROR   cannot read {path}: {why}")
        healthy = sum(h.severity == "ok" for h in self.hits)
        verdict = "no failure signature found" if not self.causes() else f"{len(self.causes())} cause(s) found"
        lines.append(f"logs analyze: {verdict} in {len(self.files)} file(s); {healthy} healthy record(s) recognised")
        return "\n".join(lines)


def analyze_text(text: str, source: str = "-") -> list[Hit]:
    return analyze_records(records(text, source))


def analyze_texts(texts: Iterable[tuple[str, str]]) -> Analysis:
    """(source, text) pairs analysed together, so that causes and consequences meet across logs."""
    result = Analysis()
    recs: list[LogRecord] = []
    for source, text in texts:
        result.files.append(source)
        recs.extend(records(text, source))
    result.hits = analyze_records(recs)
    return result


def analyze_paths(paths: Iterable[str | Path]) -> Analysis:
    """Read each file (folders: every file below) and find its signatures; unreadable files are named."""
    texts: list[tuple[str, str]] = []
    unreadable: dict[str, str] = {}
    for path in log_files(paths):
        try:
            texts.append((str(path), read_log(path)))
        except OSError as exc:
            unreadable[str(path)] = unreadable_reason(exc)
    result = analyze_texts(texts)
    result.unreadable = unreadable
    return result


__all__ = ["SIGNATURES", "Analysis", "Cause", "Hit", "LogRecord", "Severity", "Signature", "analyze_paths",
           "analyze_records", "analyze_text", "analyze_texts", "group_causes", "read_log", "records",
           "required_literal", "same_request", "unreadable_reason"]
