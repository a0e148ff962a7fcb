"""Log analysis: find every failure signature of the source document (and ours) in log text.

Reads our logs and the original products' logs alike: the CAPF trace (``HH:MM:SS.mmm |...``), the
RA's NGINX ``error.log`` with CiscoRA and libEST (``***EST [...]-->``) lines, IIS W3C access logs,
and our JSON logs.  Log text copied from tickets and documents often has several records run
together on one line, so each physical line is first cut into records at every record start.
Each record is matched against ``SIGNATURES`` (regex -> code, cause, fix); healthy start-up and
enrollment lines are recognised as healthy so that a good log raises no alarm.  No I/O except
reading the files asked for; analysis never changes a log.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from onlineca.diagnose.findings import Severity
from onlineca.errors import CODES, fix_for

# --- records ---------------------------------------------------------------------------------

# Where a record starts inside a line (several records are often run together on one line).
_RECORD_START = re.compile(
    r"(?=nginx: \["                                  # nginx start-up warnings
    r"|\*\*\*EST \["                                 # libEST lines
    r"|\b\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \["          # nginx error.log
    r"|\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d{1,3}\.\d"  # IIS W3C (date time s-ip)
    r"|\b\d\d:\d\d:\d\d\.\d{3} \|"                  # CAPF trace
    r"|EnrollmentService\.sh )"
)
# Record starts that carry a time (strptime is too slow for logs of millions of lines).
_NGINX_TIME = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[")
_IIS_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) \d")
_CAPF_TIME = re.compile(r"^(?:(\d{4})-(\d\d)-(\d\d) )?(\d\d):(\d\d):(\d\d)\.(\d{3}) \|")


def _when(groups: tuple[str | None, ...]) -> dt.datetime | None:
    """A naive datetime from (year, month, day, hour, minute, second[, millisecond]) digit groups."""
    try:
        parts = [int(g) if g is not None else 0 for g in groups]
        if len(parts) == 7:
            parts[6] *= 1000
        return dt.datetime(*parts)  # type: ignore[arg-type]
    except ValueError:
        return None


# The device name CAPF writes in each line of a session ("2:SEP74A02FC0A675:"), or in Select(...).
DEVICE = re.compile(r"(?:\d+:(?P<a>[A-Za-z][\w-]{2,63}):|Select\((?P<b>[\w-]{3,64})\)|my_lower\('(?P<c>[\w-]{3,64})'\))")
# An NGINX-style access line (the RA's access.log): client - user [time] "METHOD path HTTP/x" status bytes
_ACCESS = re.compile(r'^(?P<client>\S+) - (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) '
                     r'HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+)')
# An EST access line's own timestamp: [27/Feb/2019:16:53:28 -0500]
_ACCESS_TIME = re.compile(r"\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\]")


@dataclass(frozen=True)
class LogRecord:
    """One log record: where it is, what kind of log it came from, its time (as written) and text."""

    source: str
    line: int
    kind: str  # capf | nginx | est | iis | json | text
    text: str
    time: dt.datetime | None = None  # naive local (CAPF, nginx) or aware UTC (IIS, JSON, access)
    time_only: bool = False          # CAPF trace times carry no date
    device: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def _device(text: str) -> str | None:
    m = DEVICE.search(text)
    return (m.group("a") or m.group("b") or m.group("c")) if m else None


def _iis_fields(text: str, names: list[str]) -> dict[str, Any]:
    parts = text.split()
    if len(parts) < len(names):
        return {}
    got = dict(zip(names, parts[:len(names)], strict=True))
    for key in ("sc-status", "sc-substatus", "sc-win32-status", "time-taken", "s-port"):
        if key in got and got[key].isdigit():
            got[key] = int(got[key])
    return got


_DEFAULT_IIS_FIELDS = ["date", "time", "s-ip", "cs-method", "cs-uri-stem", "cs-uri-query", "s-port", "cs-username", "c-ip", "cs(User-Agent)", "cs(Referer)", "sc-status", "sc-substatus", "sc-win32-status", "time-taken"]


def _json_record(source: str, lineno: int, text: str) -> LogRecord | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or "message" not in obj:
        return None
    when = None
    ts = obj.get("ts")
    if isinstance(ts, str):
        try:
            when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            when = None
    message = str(obj.get("message", ""))
    return LogRecord(source, lineno, "json", message, when, device=obj.get("device") or _device(message),
                     fields=obj)


def records(text: str, source: str = "-") -> Iterator[LogRecord]:
    """Every record of a log's text, run-together lines cut apart, with times and device names."""
    iis_names = list(_DEFAULT_IIS_FIELDS)
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
        if line.startswith("#"):
            if line.startswith("#Fields:"):
                iis_names = line.split(":", 1)[1].split()
            continue
        for piece in _RECORD_START.split(line):
            piece = piece.strip()
            if not piece:
                continue
            rec = _record(source, lineno, piece, iis_names)
            if rec.time is None and last is not None and last.time is not None:
                # libEST lines carry no time: they happened when the record before them did.
                rec = replace(rec, time=last.time, time_only=last.time_only)
            last = rec
            yield rec


def _record(source: str, lineno: int, piece: str, iis_names: list[str]) -> LogRecord:
    m = _CAPF_TIME.match(piece)
    if m:
        day = m.group(1)
        groups = m.groups() if day else ("1900", "01", "01") + m.groups()[3:]
        return LogRecord(source, lineno, "capf", piece, _when(groups), time_only=day is None, device=_device(piece))
    m = _NGINX_TIME.match(piece)
    if m:
        return LogRecord(source, lineno, "nginx", piece, _when(m.groups()), device=_device(piece))
    m = _IIS_TIME.match(piece)
    if m:
        when = _when(m.groups())
        return LogRecord(source, lineno, "iis", piece, when.replace(tzinfo=dt.UTC) if when else None,
                         fields=_iis_fields(piece, iis_names))
    if piece.startswith("***EST"):
        m = _ACCESS_TIME.search(piece)
        when = dt.datetime.strptime(m.group(1), "%d/%b/%Y:%H:%M:%S %z") if m else None
        return LogRecord(source, lineno, "est", piece, when)
    m = _ACCESS.match(piece)
    if m:
        try:
            when = dt.datetime.strptime(m.group("time"), "%d/%b/%Y:%H:%M:%S %z")
        except ValueError:
            when = None
        fields = m.groupdict()
        fields["status"] = int(fields["status"])
        return LogRecord(source, lineno, "access", piece, when, fields=fields)
    if piece.startswith("nginx:") or piece.startswith("EnrollmentService.sh"):
        return LogRecord(source, lineno, "nginx", piece)
    return LogRecord(source, lineno, "text", piece, device=_device(piece))


# --- signatures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """``pattern`` found in a record means ``code``: ``cause`` and ``fix`` are formatted with the
    pattern's named groups.  A ``secondary`` signature is a consequence of another (the summary
    names it only when nothing else explains it).  When ``context`` matched earlier in the same
    file, the record means ``context_code`` / ``context_cause`` instead."""

    name: str
    code: str
    severity: Severity
    pattern: re.Pattern[str]
    cause: str
    fix: str = ""
    kinds: frozenset[str] = frozenset()
    secondary: bool = False
    context: re.Pattern[str] | None = None
    context_code: str = ""
    context_cause: str = ""
    context_fix: str = ""
    needle: str = ""  # a literal the pattern cannot match without (a fast pre-check)


def required_literal(pattern: str) -> str:
    """The longest literal run a regex needs, outside any group or alternation ("" if none).

    Most records match no signature; a substring test per signature turns them away quickly.
    """
    runs, run, depth, i = [], "", 0, 0
    top_alternation = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt.isalnum():  # a class (\d, \s, \b...): not literal
                runs.append(run) if depth == 0 else None
                run = ""
            elif depth == 0:
                run += nxt
            i += 2
            continue
        if ch in "([":
            if depth == 0:
                runs.append(run)
                run = ""
            depth += 1
            if ch == "[":  # a character class ends at its first unescaped ]
                j = i + 1
                while j < len(pattern) and pattern[j] != "]":
                    j += 2 if pattern[j] == "\\" else 1
                depth -= 1
                i = j + 1
                continue
        elif ch == ")":
            depth -= 1
        elif ch in "?*{" and depth == 0:
            run = run[:-1]  # the character before a quantifier is optional
            runs.append(run)
            run = ""
        elif ch in ".^$+|" and depth == 0:
            top_alternation = top_alternation or ch == "|"
            runs.append(run)
            run = ""
        elif depth == 0:
            run += ch
        i += 1
    runs.append(run)
    return "" if top_alternation else max(runs, key=len)


def _sig(name: str, code: str, severity: Severity, pattern: str, cause: str, fix: str = "", *,
         kinds: Iterable[str] = (), secondary: bool = False, context: str | None = None,
         context_code: str = "", context_cause: str = "", context_fix: str = "") -> Signature:
    return Signature(name, code, severity, re.compile(pattern), cause, fix, frozenset(kinds), secondary,
                     re.compile(context) if context else None, context_code, context_cause, context_fix,
                     required_literal(pattern))


_UNTRUSTED_CAUSE = (
    "The RA does not trust the CA web server's certificate: its root or intermediate CA is not in the "
    "RA's trust store. The source document shows this same line when the CA web server uses a "
    "self-signed certificate, which is not supported even when uploaded to the trust store.")
_UNTRUSTED_FIX = ("Add the web certificate's issuing CA and root to the RA's trust store; if the web "
                  "certificate is self-signed, replace it with one issued by a CA. "
                  "'onlineca diagnose' names the missing issuer.")

SIGNATURES: list[Signature] = [
    # -- the RA's client towards the CA (curl return codes, as the RA's error.log words them) --
    _sig("curl_untrusted", "CA_TLS_UNTRUSTED", "error",
         r"return code 60 \(SSL certificate problem: (?P<why>unable to get local issuer certificate|unable to "
         r"verify the first certificate|self[- ]signed certificate in certificate chain)\)",
         _UNTRUSTED_CAUSE, _UNTRUSTED_FIX),
    _sig("curl_self_signed", "CA_TLS_SELF_SIGNED", "error",
         r"return code 60 \(SSL certificate problem: self[- ]signed certificate\)",
         "The CA web server presents a self-signed certificate, which is not supported (even in the trust store)."),
    _sig("curl_not_yet_valid", "CA_TLS_NOT_YET_VALID", "error",
         r"return code 60 \(SSL certificate problem: certificate is not yet valid\)",
         "The CA web server's certificate is not valid yet by the RA's clock: a clock is wrong (NTP broken) "
         "on the RA or the CA, or the certificate was just issued with a future start date."),
    _sig("curl_expired", "CA_TLS_EXPIRED", "error",
         r"return code 60 \(SSL certificate problem: certificate has expired\)",
         "The CA web server's certificate has expired by the RA's clock (or the RA's clock runs ahead)."),
    _sig("curl_name_mismatch", "CA_TLS_NAME_MISMATCH", "error",
         r"return code 51 \(SSL: certificate subject name '(?P<cert>[^']*)' does not match target host name "
         r"'(?P<host>[^']*)'\)",
         "The CA web server's certificate is for '{cert}' but the RA's URL names '{host}': the name in the "
         "URL must be one the certificate holds.",
         "Put '{cert}' (as the certificate holds it, usually the FQDN) in the CA URL, or reissue the web "
         "certificate with '{host}' in its subjectAltName."),
    _sig("curl_no_alt_name", "CA_TLS_NAME_MISMATCH", "error",
         r"return code (?:51|60) \(SSL: no alternative certificate subject name matches target host name "
         r"'(?P<host>[^']*)'\)",
         "None of the names in the CA web server's certificate is '{host}', the host in the RA's URL."),
    _sig("curl_dns", "CA_DNS", "error",
         r"return code 6 \(Could not resolve(?: host)?:? (?P<host>[^\s()]+)",
         "The RA cannot resolve the CA host name '{host}' from its configuration (a typo, or DNS).",
         "Correct the CA host name in the service parameters ([ra] ca_url) - was '{host}' meant? - "
         "and check the RA's DNS servers."),
    _sig("curl_connect", "CA_CONNECT", "error",
         r"return code 7 \((?P<why>(?:Failed to connect|Couldn't connect)[^)]*)",
         "The RA cannot open a TCP connection to the CA: {why}."),
    _sig("curl_login_timeout", "CA_TIMEOUT", "error",
         r"login_to_certsrv_ca: Curl call for MS CA login failed with return code 28 \(Operation timed out after "
         r"(?P<ms>\d+) milliseconds",
         "The CA did not answer the RA's initial /certsrv authentication within {ms} ms (the RA's timeout, "
         "10 s by default).",
         "Find why the CA web server or its domain controller is slow, or raise [ra] login_timeout "
         "(the original RA's timeout is fixed: CSCvo58656)."),
    _sig("curl_request_timeout", "CA_TIMEOUT", "error",
         r"(?P<func>\w+): Curl request failed with return code 28 \(Operation timed out after (?P<ms>\d+) milliseconds",
         "The RA authenticated to the CA, then the CA did not answer {func}'s request within {ms} ms.",
         "Find why the CA is slow to answer (load, certnew.p7b / certfnsh.asp), or raise [ra] enroll_timeout "
         "(the original RA's timeout is fixed: CSCvo58656)."),
    _sig("curl_timeout", "CA_TIMEOUT", "error",
         r"return code 28 \((?P<why>(?:Operation|Connection) timed out[^)]*)\)",
         "The CA did not answer within the RA's timeout: {why}."),
    _sig("curl_auth", "CA_AUTH", "error",
         r"return code 22 \(The requested URL returned error: (?P<status>401|403)\)",
         "The CA refused the RA's credentials (HTTP {status})."),
    _sig("curl_http", "CA_HTTP", "error",
         r"return code 22 \(The requested URL returned error: (?P<status>[45]\d\d)\)",
         "The CA's web server answered HTTP {status}."),
    _sig("curl_tls", "CA_TLS", "error", r"return code 35 \((?P<why>[^)]*)\)",
         "The TLS handshake with the CA failed: {why}."),
    _sig("hresult_template", "CA_TEMPLATE", "error",
         r"(?P<hr>0x8009480[01]|0x80094012)",
         "The CA refused the request's certificate template (HRESULT {hr}): the template name is mistyped, "
         "not enabled on the CA, or not offered to the RA's account."),
    _sig("chain_login_failed", "CA_CHAIN", "error",
         r"retrieve_cacerts: Unable to execute login to certsrv with curl",
         "The RA could not log in to the CA to fetch the CA chain at start-up.", secondary=True),
    _sig("chain_not_retrieved", "CA_CHAIN", "error",
         r"ra_certsrv_ca_plugin_postconf: Unable to retrieve CA Cert chain from CA",
         "The RA has no CA chain: it could not retrieve certnew.p7b from the CA at start-up, so it cannot "
         "serve EST.", secondary=True),
    # -- our RA's own words for what the original logs differently --
    _sig("ra_template", "CA_TEMPLATE", "error",
         r"certificate template '(?P<template>[^']*)' is not offered to this user on certrqxt\.asp",
         "The CA does not offer the configured certificate template '{template}' to the RA's account "
         "(a typo, or a template not enabled for it)."),
    _sig("ra_chain_invalid", "CA_CHAIN", "error", r"CA chain validation failed: (?P<why>.*?)(?: -- fix:|$)",
         "The CA chain from certnew.p7b does not validate against the RA's trust store: {why}."),
    _sig("ra_client_refused", "RA_EST_AUTH", "error",
         r"the CA refused the EST client's credentials for user (?P<user>\S+)",
         "The RA passes CAPF's credentials through to the CA, and the CA refused them for user {user}."),
    _sig("ra_denied", "CA_DENIED", "error", r"the CA denied request (?P<req_id>\S+) for (?P<subject>\S+): (?P<why>.*?)(?: -- fix:|$)",
         "The CA denied request {req_id} for {subject}: {why}"),
    _sig("ra_not_ready", "RA_NOT_READY", "warning", r"RA not ready after attempt (?P<attempt>\d+) \((?P<why>[^;]*)\)",
         "The RA's start-up checks against the CA failed ({why}); it answers EST with 503 until they pass.",
         secondary=True),
    # -- the RA's EST server (libEST lines) --
    _sig("est_auth_failed", "RA_EST_AUTH", "error",
         r"HTTP authentication failed\. Auth type=(?P<type>\d+)",
         "The RA refused CAPF's EST request: the credentials CAPF sent were not accepted.",
         context=r"navigate_to_certsrv_page\b.*certrqxt\.asp",
         context_code="CA_TEMPLATE",
         context_cause="The RA logged in to the CA and opened certrqxt.asp, then refused the EST request: "
                       "a name in the service parameters is mistyped, most often the certificate template "
                       "(not among those certrqxt.asp offers).",
         context_fix="Correct the template name in the service parameters ([ra] template) to one the CA "
                     "offers; 'onlineca diagnose' lists the offered templates and the nearest name."),
    _sig("est_rc_auth", "RA_EST_AUTH", "error", r"(?:rc|rv|code)[=:] ?22 \(EST_ERR_AUTH_FAIL\)",
         "The RA's EST server answered EST_ERR_AUTH_FAIL (401).", secondary=True),
    _sig("est_401", "RA_EST_AUTH", "error", r"\[Error 401: Unauthorized",
         "The RA's EST server answered 401 Unauthorized.", secondary=True),
    _sig("est_access_401", "RA_EST_AUTH", "error",
         r"\"(?P<method>POST|GET) (?P<path>/\.well-known/est/\S+) HTTP/1\.[01]\" 401",
         "The RA answered {method} {path} with 401.", secondary=True),
    _sig("access_503", "RA_NOT_READY", "warning",
         r"\"(?P<method>POST|GET) (?P<path>/\.well-known/est/\S+) HTTP/1\.[01]\" 503",
         "The RA answered {method} {path} with 503: not ready yet, or the CA is unreachable or slow."),
    _sig("est_http_write", "RA_EST_HTTP_WRITE", "warning", r"EST_ERR_HTTP_WRITE",
         "The EST server could not write its answer (EST_ERR_HTTP_WRITE; known defect CSCvf83629: the CA "
         "answered after the client gave up)."),
    _sig("ssl_shutdown", "RA_EST_ERROR", "info", r"SSL_shutdown failed",
         "The EST server's TLS close after a refused request: a consequence, not a cause.", secondary=True),
    # -- CAPF's EST client --
    _sig("capf_ssl_read", "RA_NO_ANSWER", "error",
         r"Enrollment rv = 35 \(EST_ERR_SSL_READ\) with pkcs7 length = 0",
         "CAPF's enrollment at the RA got no answer (EST_ERR_SSL_READ): the error is on the RA side, or "
         "the RA waited on a CA slower than CAPF's timeout."),
    _sig("capf_rv", "RA_EST_ERROR", "error",
         r"Enrollment rv = (?P<rv>[1-9]\d*) \((?P<name>EST_ERR_\w+)\) with pkcs7 length = 0",
         "CAPF's enrollment at the RA failed with {name} ({rv})."),
    _sig("capf_enroll_failed", "RA_NO_ANSWER", "error",
         r"est_client_enroll_csr\(\) Failed! Could not obtain new certificate",
         "CAPF could not obtain the device's certificate from the RA.", secondary=True),
    _sig("capf_signing_failed", "RA_NO_ANSWER", "error", r"Online Cert Signing Failed",
         "CAPF's online certificate signing failed for this device.", secondary=True),
    # -- healthy lines (recognised so that a good log raises no alarm) --
    _sig("ok_ca_login", "OK_CA_LOGIN", "ok",
         r"login_to_certsrv_ca: Secure connection to MS CertServ completed successfully",
         "The RA logged in to the CA."),
    _sig("ok_ca_page", "OK_CA_PAGE", "ok",
         r"(?:navigate_to_certsrv_page|retrieve_cacerts): Secure connection to MS CertServ completed successfully",
         "The RA reached a CA page."),
    _sig("ok_chain", "OK_CA_CHAIN", "ok", r"CA Cert chain retrieved from CA", "The RA has the CA chain."),
    _sig("ok_ra_started", "OK_RA_STARTED", "ok", r"nginx server PID value = \d+", "The RA started."),
    _sig("ok_trust_store", "OK_TRUST_STORE", "ok", r"Adding cert to store \(", "A trust anchor was loaded."),
    _sig("ok_startup_chain_unset", "OK_RA_STARTING", "ok",
         r"CA (?:Chain|Cert response) requested but this value has not yet been set",
         "Normal at RA start-up, before the chain is retrieved."),
    _sig("ok_enrolled", "OK_ENROLLED", "ok", r"Enrollment rv = 0 \(EST_ERR_NONE\)", "The enrollment succeeded."),
    _sig("ok_signing", "OK_ENROLLED", "ok", r"Online Cert Signing successful", "CAPF got the device's certificate."),
    _sig("ok_est_client", "OK_CAPF_EST_CLIENT", "ok",
         r"est_client_set_auth\(\) Successful|EST set server details success", "CAPF's EST client is set up."),
    _sig("ok_capf_onlineca", "OK_CAPF_ONLINE_CA", "ok",
         r"Certificate Generation Method=OnlineCA|Online CA (?:hostname|Port|Template)",
         "CAPF uses the online CA with these parameters."),
    _sig("ok_db_success", "OK_ENROLLED", "ok", r"CERT_STATUS_UPGRADE_SUCCESS", "The device's certificate is installed."),
]

_WITH_CONTEXT = [s for s in SIGNATURES if s.context is not None]
_LOGGED_FIX = re.compile(r" -- fix: (.+)$")
_UNKNOWN_ERROR = re.compile(r"\[(?:error|crit|alert|emerg)\]|\[ERROR\]|\b(?:Traceback|FATAL)\b")
# IIS: the unauthenticated first request of a login is answered 401 with this win32 status.
_IIS_CHALLENGE_WIN32 = 2148074254
_IIS_SLOW_MS = 10000


@dataclass(frozen=True)
class Hit:
    """A signature found: where, when, what it means and what to do."""

    code: str
    severity: Severity
    cause: str
    fix: str
    source: str
    line: int
    signature: str
    excerpt: str
    time: str = ""
    device: str | None = None
    secondary: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    record: LogRecord | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "record"}


def _fmt(template: str, groups: dict[str, str | None]) -> str:
    try:
        return template.format(**{k: (v or "") for k, v in groups.items()})
    except (KeyError, IndexError):
        return template


def _excerpt(text: str, m: re.Match[str] | None, width: int = 240) -> str:
    if len(text) <= width or m is None:
        return text[:width]
    start = max(0, m.start() - 60)
    return ("..." if start else "") + text[start:start + width] + "..."


def _hit(rec: LogRecord, code: str, severity: Severity, cause: str, fix: str, signature: str,
         m: re.Match[str] | None = None, secondary: bool = False, **evidence: Any) -> Hit:
    return Hit(code=code, severity=severity, cause=cause, fix=fix or fix_for(code),
               source=rec.source, line=rec.line, signature=signature, excerpt=_excerpt(rec.text, m),
               time=rec.time.isoformat(sep=" ") if rec.time and not rec.time_only else
               (rec.time.strftime("%H:%M:%S.%f")[:-3] if rec.time else ""),
               device=rec.device, secondary=secondary,
               evidence={k: v for k, v in evidence.items() if v not in (None, "")}, record=rec)


def _iis_hits(rec: LogRecord) -> list[Hit]:
    f = rec.fields
    status, win32, taken = f.get("sc-status"), f.get("sc-win32-status"), f.get("time-taken")
    if not isinstance(status, int):
        return []
    where = f"{f.get('cs-method', '')} {f.get('cs-uri-stem', '')}"
    ev = dict(status=status, url=f.get("cs-uri-stem"), user=f.get("cs-username"), client=f.get("c-ip"),
              time_taken_ms=taken)
    hits = []
    if status == 401 and win32 != _IIS_CHALLENGE_WIN32:
        hits.append(_hit(rec, "CA_AUTH", "error",
                         f"The CA refused the credentials of {f.get('cs-username', '-')} on {where} (HTTP 401, "
                         f"win32 status {win32}).", "", "iis_logon_failure", **ev))
    elif status == 403:
        hits.append(_hit(rec, "CA_AUTH", "error", f"The CA forbade {where} to {f.get('cs-username', '-')} (HTTP 403).",
                         "", "iis_forbidden", **ev))
    elif status >= 500:
        hits.append(_hit(rec, "CA_HTTP", "error", f"The CA's web server failed {where} (HTTP {status}).", "",
                         "iis_server_error", **ev))
    elif status >= 400 and status != 401:
        hits.append(_hit(rec, "CA_HTTP", "warning", f"The CA answered {where} with HTTP {status}.", "",
                         "iis_client_error", **ev))
    if isinstance(taken, int) and taken >= _IIS_SLOW_MS:
        hits.append(_hit(rec, "CA_TIMEOUT", "warning",
                         f"The CA took {taken} ms to answer {where}: longer than the RA's default 10 s timeout.",
                         "", "iis_slow", **ev))
    if not hits:
        hits.append(_hit(rec, "OK_IIS", "ok", f"The CA answered {where} with HTTP {status}.", "", "iis_ok", **ev))
    return hits


def _json_hits(rec: LogRecord) -> list[Hit]:
    """Our own JSON logs carry the code of a coded failure; the message is matched too."""
    code = rec.fields.get("code")
    if isinstance(code, str) and code in CODES:
        level = str(rec.fields.get("level", "error"))
        severity: Severity = "error" if level in ("error", "critical") else "warning" if level == "warning" else "info"
        fix = rec.fields.get("fix") or rec.fields.get("hint") or ""
        return [_hit(rec, code, severity, rec.text, str(fix), "json_code")]
    return []


def analyze_records(recs: Iterable[LogRecord]) -> list[Hit]:
    """Every signature hit in these records (of one file: context applies within it)."""
    hits: list[Hit] = []
    seen_context: set[str] = set()
    enroll_started: dict[str | None, dt.datetime] = {}
    for rec in recs:
        if rec.kind == "iis":
            hits.extend(_iis_hits(rec))
            continue
        if rec.kind == "json":
            coded = _json_hits(rec)
            if coded:
                hits.extend(coded)
                continue
        if rec.kind == "capf" and rec.time is not None and "Calling enrollCertUsingEST()" in rec.text:
            enroll_started[rec.device] = rec.time
        for sig in _WITH_CONTEXT:
            if sig.context is not None and sig.context.search(rec.text):
                seen_context.add(sig.name)
        matched = False
        for sig in SIGNATURES:
            if (sig.kinds and rec.kind not in sig.kinds) or sig.needle not in rec.text:
                continue
            m = sig.pattern.search(rec.text)
            if not m:
                continue
            groups = m.groupdict()
            code, cause, fix = sig.code, sig.cause, sig.fix
            if sig.context is not None and sig.name in seen_context:
                code, cause, fix = sig.context_code, sig.context_cause, sig.context_fix
            evidence: dict[str, Any] = {k: v for k, v in groups.items() if v}
            logged_fix = _LOGGED_FIX.search(rec.text) or None
            if logged_fix and sig.severity != "ok" and code == sig.code:
                fix = logged_fix.group(1).strip()  # our RA wrote the sharper fix itself (nearest template...)
            started = enroll_started.get(rec.device)
            if rec.kind == "capf" and started is not None and "Enrollment rv" in rec.text and rec.time:
                evidence["waited_s"] = round((rec.time - started).total_seconds(), 3)
                if sig.severity == "error":
                    cause += f" CAPF waited {evidence['waited_s']:g} s for the answer."
            hits.append(_hit(rec, code, sig.severity, _fmt(cause, groups), _fmt(fix, groups), sig.name, m,
                             sig.secondary, **evidence))
            matched = True
            break  # the first (most specific) signature names the record
        if not matched and _UNKNOWN_ERROR.search(rec.text):
            hits.append(_hit(rec, "UNKNOWN_ERROR", "warning", "An error line that no known signature explains.",
                             "", "unknown_error"))
    return hits


@dataclass
class Analysis:
    """All hits of the files read, and the causes they point at."""

    hits: list[Hit] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def problems(self) -> list[Hit]:
        return [h for h in self.hits if h.severity in ("error", "warning")]

    def causes(self) -> list[Hit]:
        """One hit per distinct (code, cause), primaries first; consequences only when nothing explains them."""
        primaries = [h for h in self.problems if not h.secondary]
        explained = {h.source for h in primaries}
        chosen = primaries + [h for h in self.problems if h.secondary and h.source not in explained]
        out: dict[tuple[str, str], Hit] = {}
        for h in chosen:
            out.setdefault((h.code, h.cause), h)
        return list(out.values())

    @property
    def ok(self) -> bool:
        return not any(h.severity == "error" for h in self.hits)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": "onlineca.logs-analyze/1",
            "ok": self.ok,
            "files": self.files,
            "unreadable": self.unreadable,
            "causes": [h.as_dict() for h in self.causes()],
            "hits": [h.as_dict() for h in self.hits if h.severity != "ok"],
            "healthy_records": sum(h.severity == "ok" for h in self.hits),
        }

    def to_text(self) -> str:
        lines = []
        for h in self.causes():
            where = f"{h.source}:{h.line}" + (f" {h.time}" if h.time else "") + (f" {h.device}" if h.device else "")
            lines.append(f"{h.severity.upper():<7} {h.code}  {where}")
            lines.append(f"    cause: {h.cause}")
            lines.append(f"    fix:   {h.fix}")
            lines.append(f"    line:  {h.excerpt}")
            related = [o for o in self.problems if o.source == h.source and o is not h and o.secondary]
            if related and not h.secondary:
                lines.append(f"    then:  {len(related)} consequence line(s): "
                             + "; ".join(sorted({o.signature for o in related})))
        for path, why in self.unreadable.items():
            lines.append(f"ERROR   cannot read {path}: {why}")
        healthy = sum(h.severity == "ok" for h in self.hits)
        verdict = "no failure signature found" if not self.causes() else f"{len(self.causes())} cause(s) found"
        lines.append(f"logs analyze: {verdict} in {len(self.files)} file(s); {healthy} healthy record(s) recognised")
        return "\n".join(lines)


MAX_FILE_BYTES = 256 * 1024 * 1024


def _log_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for p in paths:
        path = Path(p)
        if path.is_dir():
            yield from sorted(c for c in path.rglob("*") if c.is_file())
        else:
            yield path


def read_log(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """A log file's text (bad bytes replaced); OSError (with the reason) when unreadable or too large."""
    if path.stat().st_size > limit:
        raise OSError(f"larger than {limit} bytes: read it by hand")
    return path.read_bytes().decode("utf-8", errors="replace")


def unreadable_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def analyze_text(text: str, source: str = "-") -> list[Hit]:
    return analyze_records(records(text, source))


def analyze_paths(paths: Iterable[str | Path]) -> Analysis:
    """Read each file (folders: every file below) and find its signatures; unreadable files are named."""
    result = Analysis()
    for path in _log_files(paths):
        try:
            text = read_log(path)
        except OSError as exc:
            result.unreadable[str(path)] = unreadable_reason(exc)
            continue
        result.files.append(str(path))
        result.hits.extend(analyze_text(text, str(path)))
    return result


__all__ = [
    "SIGNATURES",
    "Analysis",
    "Hit",
    "LogRecord",
    "Signature",
    "analyze_paths",
    "analyze_records",
    "analyze_text",
    "read_log",
    "records",
]
