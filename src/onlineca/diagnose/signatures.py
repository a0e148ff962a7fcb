"""The failure signatures of ``logs analyze``: what a log record means, and what to do about it.

A ``Signature`` is a regular expression over one record's text with a code, a cause and a fix; a
few meanings need more than a pattern and are functions: curl's return codes (the RA's client
towards the CA: the return code decides the code, curl's or OpenSSL's wording only refines it, so
every curl and OpenSSL version's words for one cause give one code), CAPF's ``Enrollment rv = N``
(libEST's code, mapped as ``diagnose`` maps its own EST probe), the IIS status fields, and our
JSON lines that carry their code.  Healthy lines are recognised too, so that a good log raises no
alarm.  Pure matching: no I/O, no state; correlating records is ``analyze``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from onlineca.diagnose.findings import Severity, est_failure_code
from onlineca.errors import CODES, fix_for
from onlineca.logs.iis import WIN32_CONTINUE_NEEDED, WIN32_NO_CREDENTIALS
from onlineca.logs.record import LogRecord
from onlineca.proto.request_id import PROBE_USER_AGENT

# (code, severity, cause, fix, secondary) decided from a match's named groups
Meaning = tuple[str, Severity, str, str, bool]


@dataclass(frozen=True)
class Signature:
    """``pattern`` found in a record means ``code``: ``cause`` and ``fix`` are formatted with the
    pattern's named groups, or ``decide`` computes the meaning from them.  A ``secondary``
    signature is a consequence of another cause.  When ``context`` matched a record of the same
    request shortly before (same connection and client, a few seconds), the record means
    ``context_code`` instead.  ``needle`` is a literal the pattern cannot match without."""

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
    needle: str = ""
    decide: Callable[[dict[str, str]], Meaning] | None = None
    enriches: bool = False  # context for the cause before it (its evidence), not a finding itself


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
                if depth == 0:
                    runs.append(run)
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


def _sig(name: str, code: str, severity: Severity, pattern: str, cause: str = "", fix: str = "", *,
         kinds: Iterable[str] = (), secondary: bool = False, context: str | None = None, context_code: str = "",
         context_cause: str = "", context_fix: str = "", decide: Callable[[dict[str, str]], Meaning] | None = None,
         enriches: bool = False) -> Signature:
    return Signature(name, code, severity, re.compile(pattern), cause, fix, frozenset(kinds), secondary,
                     re.compile(context) if context else None, context_code, context_cause, context_fix,
                     required_literal(pattern), decide, enriches)


# --- curl: the return code first, the wording second ------------------------------------------

_UNTRUSTED_CAUSE = (
    "The RA does not trust the CA web server's certificate: its root or intermediate CA is not in the "
    "RA's trust store. The original RA logs this same line for a self-signed CA web certificate, which "
    "is refused even when it is in the trust store.")
_UNTRUSTED_FIX = ("Add the web certificate's issuing CA and root to the RA's trust store; if the web "
                  "certificate is self-signed, replace it with one issued by a CA. "
                  "'onlineca diagnose' names the missing issuer.")
_PHASE_SETTING = {"login": "login_timeout", "connect": "connect_timeout", "tls": "connect_timeout"}
# Which request a function of the RA's log was making (the original's names and ours).
_FUNC_PHASE = {"login_to_certsrv_ca": "login", "ra_certsrv_auth_curl_data_cb": "login"}

# curl's return codes that name a cause by themselves (libcurl-errors(3)); the wording refines.
CURL_CODES: dict[int, tuple[str, str]] = {
    6: ("CA_DNS", "The RA cannot resolve the CA host name{host_part} from its configuration (a typo, or DNS): {why}."),
    7: ("CA_CONNECT", "The RA cannot open a TCP connection to the CA: {why}."),
    22: ("CA_HTTP", "The CA's web server answered the RA with an HTTP error: {why}."),
    28: ("CA_TIMEOUT", "The CA did not answer the RA within its timeout: {why}."),
    35: ("CA_TLS", "The TLS handshake between the RA and the CA failed: {why}."),
    51: ("CA_TLS_NAME_MISMATCH", "The CA web server's certificate failed the RA's verification: {why}."),
    52: ("CA_CONNECT", "The CA closed the connection without answering the RA: {why}."),
    55: ("CA_CONNECT", "The RA could not send its request to the CA: {why}."),
    56: ("CA_CONNECT", "The connection to the CA broke while the RA waited for its answer: {why}."),
    58: ("CA_AUTH", "The RA's client certificate for the CA cannot be used: {why}."),
    60: ("CA_TLS_UNTRUSTED", _UNTRUSTED_CAUSE),
    77: ("CONFIG", "The RA cannot read its trust store for the CA: {why}."),
}
# (curl codes, wording, code, cause): TLS verification wordings of OpenSSL 1.x/3.x, NSS and curl itself.
CURL_WORDINGS: list[tuple[frozenset[int], re.Pattern[str], str, str]] = [
    (frozenset({35, 51, 60}), re.compile(r"(?i)not yet valid"), "CA_TLS_NOT_YET_VALID",
     "The CA web server's certificate is not valid yet by the RA's clock: a clock is wrong (RA or CA), or the "
     "certificate was issued with a start date in the future."),
    (frozenset({35, 51, 60}), re.compile(r"(?i)has expired|certificate expired|expired certificate"),
     "CA_TLS_EXPIRED", "The CA web server's certificate has expired by the RA's clock."),
    (frozenset({35, 51, 60}), re.compile(r"(?i)self[- ]signed certificate(?! in)"), "CA_TLS_SELF_SIGNED",
     "The CA web server presents a self-signed certificate, which the RA refuses even when it is in its "
     "trust store (as the original RA does)."),
    (frozenset({35, 51, 60}), re.compile(
        r"(?i)does not match target host|no alternative certificate subject name|hostname mismatch|"
        r"ip address mismatch|domain name does not match"),
     "CA_TLS_NAME_MISMATCH", "The CA web server's certificate does not hold the host name of the RA's URL: {why}."),
    (frozenset({35, 51, 60}), re.compile(
        r"(?i)unable to get (?:local )?issuer|unable to verify the first|self[- ]signed certificate in|"
        r"issuer is not recognized|cannot be authenticated with|certificate chain was issued by an authority"),
     "CA_TLS_UNTRUSTED", _UNTRUSTED_CAUSE),
    (frozenset({28}), re.compile(r"(?i)resolving timed out"), "CA_DNS",
     "The RA's DNS server did not resolve the CA host name within the timeout: {why}."),
    (frozenset({28}), re.compile(r"(?i)connection timed out|connection time-out|SSL connection timeout"), "CA_TIMEOUT",
     "The RA could not complete its connection to the CA within its connect timeout (a firewall that drops, "
     "a host that is down, or a TLS handshake left unanswered): {why}."),
    (frozenset({22}), re.compile(r"returned error: 40[13]\b"), "CA_AUTH",
     "The CA refused the RA's credentials: {why}."),
    (frozenset({7}), re.compile(r"(?i)timed out"), "CA_CONNECT",
     "The RA's connection to the CA timed out: a firewall drops the packets, or the CA host is down: {why}."),
]
_HOST = re.compile(r"(?:Could not resolve|Couldn't resolve)(?: host(?: name)?)?:? '?(?!name\b)(?P<host>[^\s'()]+)")
_NAMES = re.compile(r"subject name '(?P<cert>[^']*)' does not match target host name '(?P<host>[^']*)'"
                    r"|target host name '(?P<host2>[^']*)'")
_MS = re.compile(r"after (?P<ms>\d+) (?:milliseconds|ms)")
_URL_IN_HOP = re.compile(r"hop RA -> CA (?P<url>\S+?)[,;)]")


def curl_meaning(rc: int, why: str, func: str = "", text: str = "") -> tuple[str, str, str, dict[str, str]]:
    """(code, cause, fix, evidence) of a curl failure: its return code, then its wording."""
    code, cause = CURL_CODES.get(rc, ("CERTSRV", "The RA's request to the CA failed with curl return code {rc}: {why}."))
    for codes, wording, refined, refined_cause in CURL_WORDINGS:
        if rc in codes and wording.search(why):
            code, cause = refined, refined_cause
            break
    ev: dict[str, str] = {"curl_code": str(rc), "reason": why}
    if func:
        ev["func"] = func
    if (h := _HOST.search(why)) is not None and code == "CA_DNS":
        ev["host"] = h.group("host")
    if (n := _NAMES.search(why)) is not None:
        ev.update({k: v for k, v in {"cert": n.group("cert"), "host": n.group("host") or n.group("host2")}.items() if v})
    if (ms := _MS.search(why)) is not None:
        ev["ms"] = ms.group("ms")
    if (url := _URL_IN_HOP.search(text)) is not None:
        ev["url"] = url.group("url")
    fix = ""
    if code == "CA_TIMEOUT":
        phase = ("connect" if "onnect" in why and "Operation" not in why else
                 _FUNC_PHASE.get(func, "login" if "MS CA login" in text else "enroll"))
        ev["phase"] = phase
        fix = (f"Find why the CA (or its domain controller) is slow to answer, or raise [ra] "
               f"{_PHASE_SETTING.get(phase, 'enroll_timeout')} (the original RA's 10 s is fixed: CSCvo58656).")
    elif code == "CA_DNS" and "host" in ev:
        fix = (f"Correct the CA host name in the service parameters ([ra] ca_url) - was '{ev['host']}' meant? - "
               "and check the RA's DNS servers.")
    elif code == "CA_TLS_NAME_MISMATCH" and "cert" in ev:
        fix = (f"Put '{ev['cert']}' (as the certificate holds it, usually the FQDN) in the CA URL, or reissue the web "
               f"certificate with '{ev.get('host', 'the URL host')}' in its subjectAltName.")
    elif code == "CA_TLS_UNTRUSTED":
        fix = _UNTRUSTED_FIX
    host_part = f" '{ev['host']}'" if "host" in ev else ""
    return code, _fmt(cause, {"why": why, "rc": str(rc), "host_part": host_part}), fix, ev


def _fmt(template: str, groups: dict[str, str | None]) -> str:
    try:
        return template.format(**{k: (v or "") for k, v in groups.items()})
    except (KeyError, IndexError):
        return template


# --- CAPF's EST client: libEST's code, as diagnose maps it ---------------------------------------

# Failures the RA never saw (CAPF could not reach or trust it) are causes in CAPF's log; the others
# are what CAPF saw of a cause the RA's or the CA's log names (consequences, unless nothing does).
_CAPF_SIDE = frozenset({"RA_DNS", "RA_CONNECT", "RA_TLS", "RA_TLS_UNTRUSTED", "RA_TLS_NAME_MISMATCH",
                        "RA_TLS_SELF_SIGNED", "RA_TLS_NOT_YET_VALID", "RA_TLS_EXPIRED", "CONFIG"})
_CAPF_CAUSES = {
    "RA_NO_ANSWER": "CAPF's enrollment at the RA got no answer ({name}): the error is on the RA side, or the RA "
                    "waited on a CA slower than CAPF's timeout.",
    "RA_DNS": "CAPF cannot resolve the RA's host name ({name}): the RA never saw the request.",
    "RA_CONNECT": "CAPF cannot connect to the RA ({name}): the RA is down or its port is closed; it never saw "
                  "the request.",
    "RA_TLS_UNTRUSTED": "CAPF does not trust the RA's TLS certificate ({name}): the RA never saw the request.",
    "RA_TLS_NAME_MISMATCH": "The RA's TLS certificate does not hold the host name in CAPF's RA URL ({name}).",
    "RA_TLS": "The TLS handshake between CAPF and the RA failed ({name}): the RA never saw the request.",
    "RA_EST_AUTH": "The RA refused CAPF's EST credentials ({name}).",
    "CAPF_CA_COMM_FAILURE": "The RA answered CAPF that the CA is unavailable or not ready ({name}): the cause is "
                            "in the RA's error.log.",
    "CAPF_CA_REJECTED": "The RA or the CA refused CAPF's request ({name}).",
}


def capf_rv_meaning(groups: dict[str, str]) -> Meaning:
    name = groups.get("name") or "EST_ERR_UNKNOWN"
    code = "RA_NO_ANSWER" if name == "EST_ERR_SSL_READ" else est_failure_code(name)
    cause = _CAPF_CAUSES.get(code, "CAPF's enrollment at the RA failed with {name} ({rv}).")
    fix = "" if code == "RA_NO_ANSWER" else fix_for(code)
    return code, "error", _fmt(cause, {"name": name, "rv": groups.get("rv")}), fix, code not in _CAPF_SIDE


def _ra_rc_meaning(groups: dict[str, str]) -> Meaning:
    name = groups.get("name", "")
    if name == "EST_ERR_AUTH_FAIL":
        return "RA_EST_AUTH", "error", "The RA's EST server answered EST_ERR_AUTH_FAIL (401).", "", True
    if name == "EST_ERR_BAD_PKCS10":
        return ("RA_EST_ERROR", "warning", "An EST client sent the RA a request it cannot read (EST_ERR_BAD_PKCS10).",
                "Check that EST client's CSR (a diagnose probe is marked and never logged so).", False)
    return ("RA_EST_ERROR", "error", f"The RA answered an enrollment with {name}: a consequence of the cause "
            "before it in its error.log.", "", True)


SIGNATURES: list[Signature] = [
    _sig("curl_return_code", "CERTSRV", "error",
         r"return code (?P<rc>\d+) \((?P<why>[^()]*(?:\([^()]*\)[^()]*)*)\)"),
    # -- our RA's own words for what the original logs differently --
    _sig("ra_template", "CA_TEMPLATE", "error",
         r"certificate template '(?P<template>[^']*)' is not offered to this user on certrqxt\.asp",
         "The CA does not offer the configured certificate template '{template}' to the RA's account "
         "(a typo, or a template not enabled for it)."),
    _sig("hresult_template", "CA_TEMPLATE", "error", r"(?P<hr>0x8009480[01]|0x80094012)",
         "The CA refused the request's certificate template (HRESULT {hr}): the template name is mistyped, "
         "not enabled on the CA, or not offered to the RA's account."),
    _sig("chain_login_failed", "CA_CHAIN", "error", r"retrieve_cacerts: Unable to execute login to certsrv with curl",
         "The RA could not log in to the CA to fetch the CA chain at start-up.", secondary=True),
    _sig("chain_not_retrieved", "CA_CHAIN", "error",
         r"ra_certsrv_ca_plugin_postconf: Unable to retrieve CA Cert chain from CA",
         "The RA has no CA chain: it could not retrieve certnew.p7b from the CA at start-up, so it cannot "
         "serve EST.", secondary=True),
    _sig("ra_chain_invalid", "CA_CHAIN", "error", r"CA chain validation failed: (?P<why>.*?)(?: -- fix:|$)",
         "The CA chain from certnew.p7b does not validate against the RA's trust store: {why}."),
    _sig("ra_client_refused", "RA_EST_AUTH", "error", r"the CA refused the EST client's credentials for user (?P<user>\S+)",
         "The RA passes CAPF's credentials through to the CA, and the CA refused them for user {user}."),
    _sig("ra_denied", "CA_DENIED", "error", r"the CA denied request (?P<req_id>\S+) for (?P<subject>\S+): (?P<why>.*?)(?: -- fix:|$)",
         "The CA denied request {req_id} for {subject}: {why}"),
    _sig("ra_not_ready", "RA_NOT_READY", "warning", r"RA not ready after attempt (?P<attempt>\d+) \((?P<why>[^;]*)\)",
         "The RA's start-up checks against the CA failed ({why}); it answers EST with 503 until they pass.",
         secondary=True),
    _sig("url_used", "OK_CONTEXT", "info", r"URL used: (?P<url>\S+)", "The URL of the failed request before it.",
         enriches=True),
    _sig("probe", "OK_PROBE", "ok", r"diagnose probe|\"" + PROBE_USER_AGENT, "A read-only probe of onlineca diagnose."),
    # -- the RA's EST server (libEST lines and ours) --
    _sig("est_auth_failed", "RA_EST_AUTH", "error", r"HTTP authentication failed\. Auth type=(?P<type>\d+)",
         "The RA refused CAPF's EST request: the credentials CAPF sent were not accepted.",
         context=r"navigate_to_certsrv_page\b.*certrqxt\.asp", context_code="CA_TEMPLATE",
         context_cause="The RA logged in to the CA and opened certrqxt.asp for this request, then refused it: a "
                       "name in the service parameters is mistyped, most often the certificate template (not "
                       "among those certrqxt.asp offers).",
         context_fix="Correct the template name in the service parameters ([ra] template) to one the CA "
                     "offers; 'onlineca diagnose' lists the offered templates and the nearest name."),
    _sig("est_rc", "RA_EST_ERROR", "error", r"(?:rc|rv|code)[=:] ?(?P<rc>\d+) \((?P<name>EST_ERR_\w+)\)",
         decide=_ra_rc_meaning),
    _sig("est_401", "RA_EST_AUTH", "error", r"\[Error 401: Unauthorized",
         "The RA's EST server answered 401 Unauthorized.", secondary=True),
    _sig("est_access_401", "RA_EST_AUTH", "error",
         r"\"(?P<method>POST|GET) (?P<path>/\.well-known/est/\S+) HTTP/1\.[01]\" 401",
         "The RA answered {method} {path} with 401.", secondary=True),
    _sig("access_503", "RA_NOT_READY", "warning",
         r"\"(?P<method>POST|GET) (?P<path>/\.well-known/est/\S+) HTTP/1\.[01]\" 503",
         "The RA answered {method} {path} with 503: not ready yet, or the CA is unreachable or slow.",
         secondary=True),
    _sig("est_http_write", "RA_EST_HTTP_WRITE", "warning", r"EST_ERR_HTTP_WRITE",
         "The EST server could not write its answer (EST_ERR_HTTP_WRITE; known defect CSCvf83629: the CA "
         "answered after the client gave up)."),
    _sig("ssl_shutdown", "RA_EST_ERROR", "info", r"SSL_shutdown failed",
         "The EST server's TLS close after a refused request: a consequence, not a cause.", secondary=True),
    # -- CAPF's EST client --
    _sig("capf_rv", "RA_EST_ERROR", "error",
         r"Enrollment rv = (?P<rv>[1-9]\d*) \((?P<name>EST_ERR_\w+)\) with pkcs7 length = 0", decide=capf_rv_meaning),
    _sig("capf_enroll_failed", "RA_NO_ANSWER", "error", r"est_client_enroll_csr\(\) Failed! Could not obtain new certificate",
         "CAPF could not obtain the device's certificate from the RA.", secondary=True),
    _sig("capf_signing_failed", "RA_NO_ANSWER", "error", r"Online Cert Signing Failed",
         "CAPF's online certificate signing failed for this device.", secondary=True),
    # -- healthy lines (recognised so that a good log raises no alarm) --
    _sig("ok_ca_login", "OK_CA_LOGIN", "ok", r"login_to_certsrv_ca: Secure connection to MS CertServ completed successfully",
         "The RA logged in to the CA."),
    _sig("ok_ca_page", "OK_CA_PAGE", "ok",
         r"(?:navigate_to_certsrv_page|retrieve_cacerts): Secure connection to MS CertServ completed successfully",
         "The RA reached a CA page."),
    _sig("ok_chain", "OK_CA_CHAIN", "ok", r"CA Cert chain retrieved from CA", "The RA has the CA chain."),
    _sig("ok_ra_started", "OK_RA_STARTED", "ok", r"nginx server PID value = \d+", "The RA started."),
    _sig("ok_trust_store", "OK_TRUST_STORE", "ok", r"Adding cert to store \(", "A trust anchor was loaded."),
    _sig("ok_startup_chain_unset", "OK_RA_STARTING", "ok", r"CA (?:Chain|Cert response) requested but this value has not yet been set",
         "Normal at RA start-up, before the chain is retrieved."),
    _sig("ok_enrolled", "OK_ENROLLED", "ok", r"Enrollment rv = 0 \(EST_ERR_NONE\)", "The enrollment succeeded."),
    _sig("ok_signing", "OK_ENROLLED", "ok", r"Online Cert Signing successful", "CAPF got the device's certificate."),
    _sig("ok_est_client", "OK_CAPF_EST_CLIENT", "ok", r"est_client_set_auth\(\) Successful|EST set server details success",
         "CAPF's EST client is set up."),
    _sig("ok_capf_onlineca", "OK_CAPF_ONLINE_CA", "ok", r"Certificate Generation Method=OnlineCA|Online CA (?:hostname|Port|Template)",
         "CAPF uses the online CA with these parameters."),
    _sig("ok_db_success", "OK_ENROLLED", "ok", r"CERT_STATUS_UPGRADE_SUCCESS", "The device's certificate is installed."),
]


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


def _excerpt(text: str, m: re.Match[str] | None, width: int = 240) -> str:
    if len(text) <= width or m is None:
        return text[:width]
    start = max(0, m.start() - 60)
    return ("..." if start else "") + text[start:start + width] + "..."


def _hit(rec: LogRecord, code: str, severity: Severity, cause: str, fix: str, signature: str,
         m: re.Match[str] | None = None, secondary: bool = False, **evidence: Any) -> Hit:
    when = ""
    if rec.time is not None:
        when = rec.time.strftime("%H:%M:%S.%f")[:-3] if rec.time_only else rec.time.isoformat(sep=" ")
    return Hit(code=code, severity=severity, cause=cause, fix=fix or fix_for(code), source=rec.source, line=rec.line,
               signature=signature, excerpt=_excerpt(rec.text, m), time=when, device=rec.device, secondary=secondary,
               evidence={k: v for k, v in evidence.items() if v not in (None, "")}, record=rec)


_LOGGED_FIX = re.compile(r" -- fix: (.+)$")
# IIS: a request answered this slowly would have tripped the original RA's fixed 10 s timeout.
IIS_SLOW_MS = 10000


def match(sig: Signature, rec: LogRecord, in_context: bool) -> Hit | None:
    """The hit of ``sig`` on ``rec`` (``in_context``: its context matched the same request)."""
    if (sig.kinds and rec.kind not in sig.kinds) or sig.needle not in rec.text:
        return None
    m = sig.pattern.search(rec.text)
    if m is None:
        return None
    groups = {k: v for k, v in m.groupdict().items() if v is not None}
    code, severity, secondary = sig.code, sig.severity, sig.secondary
    cause, fix = _fmt(sig.cause, dict(groups)), _fmt(sig.fix, dict(groups))
    evidence: dict[str, Any] = dict(groups)
    if sig.name == "curl_return_code":
        code, cause, fix, evidence = curl_meaning(int(groups["rc"]), groups["why"], str(rec.fields.get("func", "")),
                                                  rec.text)
    elif sig.decide is not None:
        code, severity, cause, fix, secondary = sig.decide(groups)
    elif in_context and sig.context is not None:
        code, cause, fix = sig.context_code, sig.context_cause, sig.context_fix
    logged = _LOGGED_FIX.search(rec.text)
    if logged and severity != "ok" and code in (sig.code, "CA_TEMPLATE", "CA_CHAIN") and not in_context:
        fix = logged.group(1).strip()  # our RA wrote the sharper fix itself (nearest template...)
    return _hit(rec, code, severity, cause, fix, sig.name, m, secondary, **evidence)


def iis_hits(rec: LogRecord) -> list[Hit]:
    f = rec.fields
    status, win32, taken = f.get("sc-status"), f.get("sc-win32-status"), f.get("time-taken")
    if not isinstance(status, int):
        return []
    where = f"{f.get('cs-method', '')} {f.get('cs-uri-stem', '')}"
    user = f.get("cs-username", "-")
    ev = dict(status=status, url=f.get("cs-uri-stem"), user=user, client=f.get("c-ip"), time_taken_ms=taken,
              server=f.get("s-computername") or f.get("s-ip"))
    hits = []
    # The legs of a logon are 401s too: no credentials sent yet, NTLM's challenge, and the anonymous
    # first request to a site with Windows authentication only (401.2, win32 5).
    challenge = win32 in (WIN32_NO_CREDENTIALS, WIN32_CONTINUE_NEEDED) or (f.get("sc-substatus") == 2 and win32 == 5)
    if status == 401 and not challenge:
        hits.append(_hit(rec, "CA_AUTH", "error", f"The CA refused the credentials of {user} on {where} (HTTP 401, "
                         f"win32 status {win32}).", "", "iis_logon_failure", **ev))
    elif status == 403:
        hits.append(_hit(rec, "CA_AUTH", "error", f"The CA forbade {where} to {user} (HTTP 403).", "",
                         "iis_forbidden", **ev))
    elif status >= 500:
        hits.append(_hit(rec, "CA_HTTP", "error", f"The CA's web server failed {where} (HTTP {status}).", "",
                         "iis_server_error", **ev))
    elif status >= 400 and status != 401:
        hits.append(_hit(rec, "CA_HTTP", "warning", f"The CA answered {where} with HTTP {status}.", "",
                         "iis_client_error", **ev))
    if isinstance(taken, int) and taken >= IIS_SLOW_MS:
        hits.append(_hit(rec, "CA_TIMEOUT", "warning",
                         f"The CA took {taken} ms to answer {where}: longer than the RA's default 10 s timeout.",
                         "", "iis_slow", **ev))
    if not hits:
        hits.append(_hit(rec, "OK_IIS", "ok", f"The CA answered {where} with HTTP {status}.", "", "iis_ok", **ev))
    return hits


def json_hits(rec: LogRecord) -> list[Hit]:
    """Our own JSON logs carry the code of a coded failure; the message is matched too."""
    code = rec.fields.get("code")
    if isinstance(code, str) and code in CODES:
        level = str(rec.fields.get("level", "error"))
        severity: Severity = "error" if level in ("error", "critical") else "warning" if level == "warning" else "info"
        fix = rec.fields.get("fix") or rec.fields.get("hint") or ""
        return [_hit(rec, code, severity, rec.text, str(fix), "json_code")]
    return []


__all__ = ["CURL_CODES", "CURL_WORDINGS", "IIS_SLOW_MS", "SIGNATURES", "Hit", "Signature", "capf_rv_meaning",
           "curl_meaning", "iis_hits", "json_hits", "match", "required_literal"]
