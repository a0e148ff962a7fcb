"""The CA's access log in IIS's W3C extended format: the writer (``IISLog``, ``format_line``) and
the parser (``IISFields``) side by side.

Written: ``#Software``/``#Version``/``#Date``/``#Fields`` headers when the file is opened, then one
line a request: ``date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip
cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken`` (IIS's default
fields, in the source document's order) and ``X-Request-ID``, a custom field as IIS 8.5+ logs a
request header (UTC, time-taken in ms, spaces in values as ``+``, ``-`` for empty).

Read: the ``#Fields:`` directive names the fields of the lines after it, in any order, with any
extra fields (``s-sitename``, ``s-computername``, ``cs-host``, ``sc-bytes``...) and IPv4 or IPv6
addresses; without a directive (a snippet pasted from a ticket) the default fields are assumed.
Never log a password, an Authorization header or a request body here.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from onlineca.logs.record import LogRecord
from onlineca.proto.request_id import clean_request_id

SOFTWARE = "Microsoft Internet Information Services 10.0"
DEFAULT_FIELDS = ("date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
                  "cs(Referer) sc-status sc-substatus sc-win32-status time-taken")
REQUEST_ID_FIELD = "X-Request-ID"
FIELDS = f"{DEFAULT_FIELDS} {REQUEST_ID_FIELD}"

# sc-win32-status of IIS's 401s: no credentials sent (SEC_E_NO_CREDENTIALS as unsigned), a failed
# logon (ERROR_LOGON_FAILURE), and the challenge leg of NTLM (SEC_I_CONTINUE_NEEDED).
WIN32_NO_CREDENTIALS = 2148074254
WIN32_LOGON_FAILURE = 1326
WIN32_CONTINUE_NEEDED = 590610


@dataclass(frozen=True)
class IISEntry:
    when: dt.datetime
    s_ip: str
    method: str
    uri_stem: str
    uri_query: str
    s_port: int
    username: str
    c_ip: str
    user_agent: str
    referer: str
    status: int
    substatus: int = 0
    win32_status: int = 0
    time_taken_ms: int = 0
    request_id: str = ""


def _field(value: str | None, limit: int = 2048) -> str:
    """W3C fields are space-separated: spaces become '+', controls are dropped, empty is '-'."""
    if not value:
        return "-"
    clean = "".join(ch for ch in value[:limit] if ch.isprintable()).replace(" ", "+")
    return clean or "-"


def header_lines(when: dt.datetime) -> list[str]:
    return [f"#Software: {SOFTWARE}", "#Version: 1.0", f"#Date: {when:%Y-%m-%d %H:%M:%S}", f"#Fields: {FIELDS}"]


def format_line(e: IISEntry) -> str:
    return " ".join([
        f"{e.when:%Y-%m-%d}", f"{e.when:%H:%M:%S}", _field(e.s_ip), _field(e.method), _field(e.uri_stem),
        _field(e.uri_query), str(e.s_port), _field(e.username), _field(e.c_ip), _field(e.user_agent, 512),
        _field(e.referer, 1024), str(e.status), str(e.substatus), str(e.win32_status), str(e.time_taken_ms),
        _field(clean_request_id(e.request_id)),
    ])


class IISLog:
    """Appends W3C lines to ``path`` (0600); headers once per opening, as IIS does at each start
    and each new file.  Like the other log files it follows the process's log target (a stream
    instead of the file), reopens itself when logrotate moved the file away (its inode changed),
    and on ``logs.reopen_log_files()`` (SIGHUP)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from onlineca.logs import get_target, track

        self.path = Path(path)
        self._lock = threading.Lock()
        self._stream_target = get_target() != "file"
        self._file: TextIO | None = None
        self._inode: tuple[int, int] | None = None
        if self._stream_target:
            return
        self._open()
        track(self)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._file = open(self.path, "a", encoding="utf-8", newline="\r\n")  # noqa: SIM115
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass
        st = os.fstat(self._file.fileno())
        self._inode = (st.st_dev, st.st_ino)
        self._file.write("\n".join(header_lines(dt.datetime.now(dt.UTC))) + "\n")
        self._file.flush()

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._inode

    def reopen(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._open()

    def write(self, entry: IISEntry) -> None:
        line = format_line(entry) + "\n"
        if self._stream_target:
            (sys.stdout if _stream_is_stdout() else sys.stderr).write(line)
            return
        with self._lock:
            if self._file is None:
                return
            if self._moved():  # logrotate renamed it: a new file, with its headers
                self._file.close()
                self._open()
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _stream_is_stdout() -> bool:
    from onlineca.logs import get_target

    return get_target() == "stdout"


# --- the parser ------------------------------------------------------------------------------

# A W3C line of the default fields: date, time, then the server's IPv4 or IPv6 address and a method.
START = (r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
         r"(?:%\w+)?) [A-Z]{3,10} /")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
_TIME = re.compile(r"^\d\d:\d\d:\d\d(?:\.\d+)?$")
_INTS = frozenset({"sc-status", "sc-substatus", "sc-win32-status", "time-taken", "s-port", "sc-bytes", "cs-bytes"})
# How a request id header may be named as a custom field (IIS writes the name the admin chose).
_REQUEST_ID_NAMES = frozenset({"x-request-id", "cs(x-request-id)", "request-id", "x-requestid", "requestid"})


class IISFields:
    """The field names in force in one file: the default until a ``#Fields:`` directive says otherwise."""

    def __init__(self) -> None:
        self.names: list[str] = DEFAULT_FIELDS.lower().split()
        self.declared = False

    def directive(self, line: str) -> bool:
        """Take a ``#...`` header line; True if it was one (``#Fields:`` changes the names)."""
        if not line.startswith("#"):
            return False
        if line[1:].lower().startswith("fields:"):
            self.names = line.split(":", 1)[1].lower().split()
            self.declared = True
        return True

    def split(self, line: str) -> list[list[str]] | None:
        """The records of a data line under a ``#Fields:`` directive (several when a pasted line
        runs records together), or None when the line does not fit the declared fields."""
        tokens = line.split()
        n = len(self.names)
        if not self.declared or n == 0 or len(tokens) < n:
            return None
        chunks = [tokens[i:i + n] for i in range(0, len(tokens) - len(tokens) % n, n)]
        if len(tokens) % n or not all(self._fits(c) for c in chunks):
            return [tokens] if self._fits(tokens) else None
        return chunks

    def _fits(self, tokens: list[str]) -> bool:
        values = dict(zip(self.names, tokens, strict=False))
        return (("date" not in values or bool(_DATE.match(values["date"])))
                and ("time" not in values or bool(_TIME.match(values["time"])))
                and str(values.get("sc-status", "200")).isdigit())

    def record(self, tokens: list[str], source: str, lineno: int, text: str | None = None) -> LogRecord:
        values: dict[str, Any] = dict(zip(self.names, tokens, strict=False))
        for key in _INTS & values.keys():
            if str(values[key]).isdigit():
                values[key] = int(values[key])
        when = None
        if "date" in values and "time" in values:
            try:
                when = dt.datetime.fromisoformat(f"{values['date']}T{values['time']}").replace(tzinfo=dt.UTC)
            except ValueError:
                when = None
        rid = next((values[k] for k in values if k in _REQUEST_ID_NAMES), None)
        client = values.get("c-ip")
        return LogRecord(source, lineno, "iis", text if text is not None else " ".join(tokens), when,
                         client=client if client not in (None, "-") else None,
                         request_id=clean_request_id(rid) if rid not in (None, "-") else None, fields=values)


__all__ = [
    "DEFAULT_FIELDS",
    "FIELDS",
    "REQUEST_ID_FIELD",
    "SOFTWARE",
    "START",
    "WIN32_CONTINUE_NEEDED",
    "WIN32_LOGON_FAILURE",
    "WIN32_NO_CREDENTIALS",
    "IISEntry",
    "IISFields",
    "IISLog",
    "format_line",
    "header_lines",
]
