"""What the tiers already know, read by ``diagnose``: the RA's ``/metrics`` (CA failures by kind and
when the last one happened, EST answers by result, how long its CA calls take), the RA's recent
``error.log`` lines, and CAPF's recent enrollment outcomes (the audit trail in its database).

diagnose's own checks are read-only and enroll nothing, so a fault that only hits enrollments (a
CA that stalls on certfnsh.asp, an RA slower than CAPF's timeout) passes them; the tiers saw it
happen.  A failure of the last ``RECENT_S`` seconds is an error when nothing succeeded since, a
warning when something did.  Everything here only reads (metrics over HTTPS with CAPF's trust
store, a log file's tail, the database in a read-only query) and never holds a secret.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from onlineca.config import Config
from onlineca.diagnose.analyze import analyze_texts
from onlineca.diagnose.findings import Finding, Severity, est_failure_code, finding
from onlineca.errors import CODES, StoreError

RECENT_S = 3600.0
ERROR_LOG_TAIL = 512 * 1024
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_ENROLL = ("simpleenroll", "simplereenroll", "serverkeygen")
Sample = tuple[str, dict[str, str], float]


def parse_prometheus(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition (comments and bad lines skipped)."""
    out: list[Sample] = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        out.append((m.group("name"), dict(_LABEL.findall(m.group("labels") or "")), value))
    return out


def _ago(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h"


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def metrics_findings(samples: list[Sample], cfg: Config, now: dt.datetime) -> list[Finding]:
    """CA failures the RA met lately, and enrollments slower than CAPF waits for."""
    now_s = now.timestamp()
    last_error = {lb.get("kind", ""): v for n, lb, v in samples if n == "onlineca_ra_ca_last_error_timestamp_seconds"}
    counts = {lb.get("kind", ""): v for n, lb, v in samples if n == "onlineca_ra_ca_errors_total"}
    last_ok = max((v for n, lb, v in samples if n == "onlineca_ra_last_result_timestamp_seconds"
                   and lb.get("operation") in _ENROLL and lb.get("result") in ("issued", "pending")), default=0.0)
    found = []
    for kind, when in sorted(last_error.items(), key=lambda kv: -kv[1]):
        if now_s - when > RECENT_S:
            continue
        since = when >= last_ok
        found.append(finding(
            kind if kind in CODES else "CERTSRV",
            f"the RA's calls to the CA failed with {kind} {int(counts.get(kind, 1))} time(s), the last {_ago(now_s - when)} "
            f"ago{'' if since else ' (enrollments succeeded since)'}: a fault diagnose's read-only checks do not "
            "meet, as it enrolls nothing", severity="error" if since else "warning", hop="ca", source="ra /metrics",
            count=int(counts.get(kind, 1)), last_error=_stamp(when)))
    timeout = cfg.capf.enroll_timeout
    buckets = sorted((float(lb["le"]), v) for n, lb, v in samples
                     if n == "onlineca_ra_ca_latency_seconds_bucket" and lb.get("operation") == "enroll"
                     and lb.get("le") not in (None, "+Inf"))
    total = next((v for n, lb, v in samples if n == "onlineca_ra_ca_latency_seconds_count"
                  and lb.get("operation") == "enroll"), 0.0)
    within = next((v for le, v in buckets if le >= timeout), total)
    if total - within > 0:
        found.append(finding(
            "RA_TIMEOUT", f"{int(total - within)} of the RA's {int(total)} enrollment(s) at the CA took longer than "
            f"CAPF waits ([capf] enroll_timeout = {timeout:g} s): CAPF gave up before the RA answered",
            severity="warning", source="ra /metrics", slower_than_capf=int(total - within), capf_timeout_s=timeout,
            fix=f"Raise [capf] enroll_timeout above the RA's worst case ({_ra_worst(cfg):g} s), or find why the CA "
                "is slow on certfnsh.asp."))
    return found


def _ra_worst(cfg: Config) -> float:
    ra = cfg.ra
    return ra.connect_timeout + ra.login_timeout + 2 * ra.enroll_timeout


def error_log_findings(path: Path, now: dt.datetime) -> list[Finding]:
    """The causes ``logs analyze`` finds in the RA error.log lines of the last ``RECENT_S`` seconds."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            start = fh.seek(max(0, size - ERROR_LOG_TAIL))
            lines = fh.read().decode("utf-8", "replace").splitlines()[1 if start else 0:]
    except OSError:
        return []
    local_now = now.astimezone().replace(tzinfo=None)
    recent = "\n".join(line for line in lines if _recent(line, local_now))
    found = []
    for cause in analyze_texts([(str(path), recent)]).causes():
        if cause.severity != "error" or cause.code not in CODES:
            continue
        found.append(finding(cause.code, f"the RA's error.log: {cause.cause}", hop=CODES[cause.code].hop,
                             fix=cause.fix, source="ra error.log", count=len(cause.hits), line=cause.excerpt[:300],
                             last_seen=cause.hits[-1].time))
    return found


_NGINX_TIME = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) ")


def _recent(line: str, local_now: dt.datetime) -> bool:
    m = _NGINX_TIME.match(line)
    if m is None:
        return False
    try:
        y, mo, d, h, mi, s = (int(g) for g in m.groups())
        when = dt.datetime(y, mo, d, h, mi, s)
    except ValueError:
        return False
    return (local_now - when).total_seconds() <= RECENT_S


_EST_CODE = re.compile(r"\((EST_ERR_\w+)\)")


def capf_outcome_findings(cfg: Config, now: dt.datetime) -> list[Finding]:
    """CAPF's enrollment outcomes of the last ``RECENT_S`` seconds, from its database's audit trail."""
    from sqlalchemy import select
    from sqlalchemy.engine import make_url

    from onlineca.store.capf_models import DeviceEvent
    from onlineca.store.db import Database
    url = cfg.database_url
    try:
        path = make_url(url).database if url.startswith("sqlite") else None
        if url.startswith("sqlite") and not (path and Path(path).is_file()):
            return []  # no CAPF database here (and opening it would create one)
        db = Database(url)
    except (StoreError, ValueError):
        return []
    try:
        with db.session() as s:
            rows = list(s.execute(select(DeviceEvent.device_name, DeviceEvent.at, DeviceEvent.detail)
                                  .where(DeviceEvent.at >= now - dt.timedelta(seconds=RECENT_S),
                                         DeviceEvent.detail.like("CERT_STATUS_%"))
                                  .order_by(DeviceEvent.at)))
    except Exception:  # no CAPF tables there, or the database is down: nothing to read
        return []
    finally:
        db.dispose()
    return outcome_findings([(str(name), at, str(detail)) for name, at, detail in rows], cfg)


def outcome_findings(rows: list[tuple[str, Any, str]], cfg: Config) -> list[Finding]:
    """Findings from (device, time, status detail) rows in time order."""
    failures: dict[str, list[tuple[str, str]]] = {}
    last_success = -1
    for i, (device, _at, detail) in enumerate(rows):
        if "_SUCCESS" in detail.split(":", 1)[0]:
            last_success = i
            continue
        if "_FAILED" not in detail.split(":", 1)[0]:
            continue
        code = _outcome_code(detail)
        failures.setdefault(code, []).append((device, detail))
    found = []
    failed_last = bool(rows) and last_success < len(rows) - 1
    for code, items in failures.items():
        severity: Severity = "error" if failed_last else "warning"
        devices = sorted({d for d, _ in items})
        extra: dict[str, Any] = {}
        message = (f"CAPF recorded {len(items)} failed enrollment(s) of {len(devices)} device(s) with {code} in the "
                   f"last {_ago(RECENT_S)}")
        if code == "RA_TIMEOUT":
            message += f": the RA did not answer within [capf] enroll_timeout ({cfg.capf.enroll_timeout:g} s)"
            extra["fix"] = (f"Raise [capf] enroll_timeout above the RA's worst case ({_ra_worst(cfg):g} s), or find "
                            "why the RA and the CA behind it are slow (its error.log, /metrics).")
        elif code == "CLOCK_SKEW":
            message += ": the CA issued certificates valid only from the future (its clock is ahead)"
            extra["fix"] = "Synchronise the CA's clock (NTP); CAPF refuses an LSC that is not valid yet."
        found.append(finding(code, message, severity=severity, hop=CODES[code].hop if code in CODES else "capf",
                             source="capf outcomes", failures=len(items), devices=devices[:10],
                             last_detail=items[-1][1][:300], **extra))
    return found


def _outcome_code(detail: str) -> str:
    if "not valid yet" in detail:
        return "CLOCK_SKEW"
    m = _EST_CODE.search(detail)
    return est_failure_code(m.group(1), detail) if m else "CAPF"


def merge(findings: list[Finding]) -> list[Finding]:
    """One finding per (code, hop): what the tiers saw of a fault joins what diagnose found itself
    (whose words lead), or what another source saw of it; the first place either stood is kept."""
    order: list[tuple[str, str]] = []
    lead: dict[tuple[str, str], Finding] = {}
    for f in sorted(findings, key=lambda f: "source" in f.evidence):  # diagnose's own findings first
        key = (f.code, f.hop)
        if key not in lead:
            lead[key] = f
            continue
        first = lead[key]
        sources = {str(s) for s in (first.evidence.get("source", "diagnose"), f.evidence.get("source", "diagnose"))}
        evidence = {**f.evidence, **first.evidence, "seen_by": sorted(sources | set(first.evidence.get("seen_by", [])))}
        if "source" not in first.evidence:
            evidence.pop("source", None)
        severity = "error" if "error" in (first.severity, f.severity) else first.severity
        lead[key] = Finding(first.code, severity, first.hop, first.message, first.fix, evidence)
    for f in findings:
        if (f.code, f.hop) not in order:
            order.append((f.code, f.hop))
    return [lead[key] for key in order]


__all__ = ["RECENT_S", "capf_outcome_findings", "error_log_findings", "merge", "metrics_findings",
           "outcome_findings", "parse_prometheus"]
