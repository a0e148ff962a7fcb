"""The CAPF trace log, ``<log_dir>/capf.log``, in the source document's format.

Every line is ``HH:MM:SS.mmm | text``; a session's lines read ``debug 2:SEP74A02FC0A675:message``
so that the document's troubleshooting method (find the phone's name, follow its lines) works on
ours, and ``onlineca logs analyze`` recognises them.  ``SessionTrace`` is the per-session adapter
that puts the device name (or, before the phone named itself, its address in brackets) on each
line and adds ``device``/``session_id`` fields for ``--log-format json``; it has one method per
event of a session (``operation_succeeded``, ``keygen_request``, ...), so the wording of each line
lives here and the session server says only what happened.  The words ``debug 2`` are part of the
document's text, not our logging level: trace lines are written at INFO.

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
from typing import Any

from cryptography import x509

from onlineca import pki
from onlineca.logs import attach_log
from onlineca.logs.record import NO_DATE, LogRecord
from onlineca.policy.capf import AuthMode, EffectivePolicy, Operation, as_utc, success_status
from onlineca.policy.capf_session import Ending, Outcome
from onlineca.proto.request_id import REQUEST_ID_HEADER, clean_request_id

TRACE_LOGGER = "onlineca.capf"
TRACE_FILE = "capf.log"
TRACE_LEVEL = "2"  # the document's "debug 2:" (CAPF trace level "Detailed")

log = logging.getLogger(TRACE_LOGGER + ".trace")
_server_log = logging.getLogger(TRACE_LOGGER + ".server")


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

    # ------------------------------------------------------------------ the session's events

    def received(self, command: str, state: str) -> None:
        self.debug(f"CAPF CORE: Rcvd Event: CAPF_EV_{command} in State: CAPF_STATE_{state}")

    def identified(self, device: str, version: int | None, announced: int = 0) -> None:
        """The phone named itself (and said which extensions it understands): every later line
        carries its name."""
        self.device = device
        flow = f"extensions 0x{announced:02x} announced" if announced else "public flow (no extension announced)"
        self.debug(f"AUTH_RESPONSE from {device}, protocol version {version}, {flow}")

    def certificate_unproven(self, kind: str) -> None:
        self.debug(f"the phone presented its {kind} but announced no challenge: its signature cannot be "
                   "checked, the certificate proves nothing")

    def challenging(self, auth_type: str) -> None:
        self.debug(f"Sending AUTH_REQ msg again with a nonce (AUTH_TYPE {auth_type})")

    def renewal_on_connect(self, installed: Any) -> None:
        serial = getattr(installed, "serial", "?")
        self.debug(f"the LSC (serial {serial}) is past its renewal point and the phone asked again: "
                   "issuing a new one in this session")

    def lsc_discarded(self, serial: str, why: str) -> None:
        self.debug(f"LSC serial {serial}, issued earlier and never installed, is discarded: {why}")

    def signing_locally(self, ca: str) -> None:
        self.debug(f"CA Mode is CAPF: signing the LSC with CAPF's own CA {ca}")

    def device_unknown(self) -> None:
        self.error("device is not in the CAPF database and no profile enrolls it automatically")

    def device_busy(self) -> None:
        self.error("another CAPF session (of this node or another) is working on this device: RETRY_LATER")

    def policy(self, policy: EffectivePolicy) -> None:
        """The ``Select(DEVICE) ...`` lines: what the database says the session must do."""
        for line in policy.log_lines():
            self.plain(line)

    def not_started(self, outcome: Outcome, locked_until: dt.datetime | None) -> None:
        """Why the operation did not even start (a deadline passed is logged as a failure)."""
        if outcome.ending is Ending.NOTHING_PENDING:
            self.debug("no certificate operation is pending for this device"
                       + (f" ({outcome.detail})" if outcome.detail.startswith("already issued") else ""))
        elif outcome.ending is Ending.LOCKED_OUT and locked_until is not None:
            self.error(f"device is locked out after repeated wrong authentication strings until "
                       f"{as_utc(locked_until):%Y-%m-%d %H:%M:%S} UTC")

    def auth_not_needed(self, mode: AuthMode) -> None:
        self.debug(f"Authentication Mode={mode.log}: no credential needed")

    def auth_asking_again(self, mode: AuthMode, asked: str) -> None:
        self.debug(f"AUTH_RESPONSE lacks the credential of {mode.log}: asking again ({asked})")

    def auth_string_verified(self) -> None:
        self.debug(f"Authentication Mode={AuthMode.BY_STR.log}: authentication string verified")

    def auth_attempts_used(self) -> None:
        """No attempt left (locked out, or another session used the last one)."""
        self.error("device is locked out after repeated wrong authentication strings: not compared")

    def auth_string_wrong(self, failures: int, delay: float) -> None:
        self.error(f"Authentication Mode={AuthMode.BY_STR.log}: wrong authentication string "
                   f"({failures} in a row); answering in {delay:g} s")

    def lsc_not_recorded(self, serial: str, why: str) -> None:
        self.error(f"the phone's LSC serial {serial} is not the one CAPF recorded: {why}")

    def certificate_accepted(self, mode: AuthMode, kind: str) -> None:
        self.debug(f"Authentication Mode={mode.log}: the phone's {kind} is valid")

    def keygen_request(self, key: tuple[str, int], attempt: int, max_attempts: int) -> None:
        self.debug(f"Sending KEY_GEN_REQ msg ({key[0].upper()} {key[1]}, attempt {attempt} of {max_attempts})")

    def keygen_refused(self, key: tuple[str, int], reason: Any, info: str | None) -> None:
        self.error(f"the phone could not make the {key[0].upper()} {key[1]} key: reason {reason}"
                   + (f" ({info})" if info else ""))

    def public_key_received(self, length: int) -> None:
        self.debug(f"pubKey length: {length}")

    def sign_request(self) -> None:
        self.debug("Sending SIGN_CERT_REQ msg (the phone signs the certificate request with its new key)")

    def ca_certificate_received(self) -> None:
        self.debug("CAPF CORE: Rcvd Event: CAPF_EV_CA_CERT_REP in State: CAPF_STATE_AWAIT_CA_CERT_RESP")
        self.debug("CAPF got device certificate")

    def lsc_kept_for_next_session(self) -> None:
        self.debug("LSC stored in the database; it is delivered at the device's next session")

    def redelivering(self, serial: str) -> None:
        self.debug(f"LSC serial {serial} was issued earlier and never confirmed: delivering it "
                   "without a new CA request")

    def sending(self, label: str) -> None:
        self.debug(f"Sending {label} msg")

    def csr_removed(self, csr_file: Path) -> None:
        self.plain(f"debug LSC is verified. removing CSR at {csr_file}")

    def fetched_certificate(self, kind: str, cert: x509.Certificate) -> None:
        self.debug(f"{kind}: subject {pki.name_to_slash(cert.subject)} issuer {pki.name_to_slash(cert.issuer)} "
                   f"serial {cert.serial_number:x} valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")

    def fetched_unparseable(self, kind: str, why: str) -> None:
        self.error(f"{kind}: does not parse: {why}")

    def operation_succeeded(self, device: str, op: Operation) -> None:
        """The document's two lines for an operation's success, with its SQL as the product logs it."""
        st = success_status(op)
        self.plain(f"CAPFDevice::MapCapf_OpStatusToDBLTypeCertificateStatus({op.ident}, Suc =>DbStatus={st.ident}")
        self.plain(f"SetOperationStatus(Success:CAPF_OP_SUCCESS):0 sql query - (UPDATE Device SET "
                   f"tkCertificateOperation={Operation.NONE.code}, tkcertificatestatus='{st.code}' "
                   f"WHERE my_lower(name)=my_lower('{device}'))")

    def operation_failed(self, op: Operation, outcome: Outcome) -> None:
        status = outcome.status.display if outcome.status is not None else "-"
        self.error(f"{op.ident} failed: {status}: {outcome.detail}")

    def retry_later(self, seconds: int) -> None:
        self.debug(f"Sending RETRY_LATER msg (retry in {seconds} s)")

    def end_session(self) -> None:
        self.debug("MsgType : CAPF_MSG_END_SESSION")

    def session_timed_out(self, seconds: float) -> None:
        self.error(f"session timed out after {seconds:g} s")

    def protocol_error(self, message: str, code: str) -> None:
        self.error(f"protocol error from the phone: {message} ({code})")

    def phone_gone(self, detail: str) -> None:
        self.error(f"Phone Communication Failure: {detail}")

    def cancelled(self) -> None:
        self.error("session cancelled: CAPF is stopping")

    def internal_error(self, exc: BaseException) -> None:
        """A bug of ours: the traceback for the developers, one line in the trace."""
        _server_log.error("unexpected error in a CAPF session with %s", self.who, exc_info=exc)
        self.error(f"internal error: {type(exc).__name__}: {exc}")


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
