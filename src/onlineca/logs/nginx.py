"""The RA's ``error.log`` format, as the source document's NGINX/CiscoRA log shows it: the writer
(``NginxErrorFormatter``) and the parser (``parse``) side by side.

    2019/03/05 12:31:21 [info] 31067#0: login_to_certsrv_ca: Secure connection to MS CertServ ...
    2019/02/27 16:53:28 [info] 3187#0: *2 navigate_to_certsrv_page: ... while SSL EST handshaking,
        client: 14.48.31.128, server: 0.0.0.0:8084
    nginx: [warn] login_to_certsrv_ca: URL used: https://lab-dc.michamen.com:443/certsrv

The function name comes from ``extra={"func": ...}`` (the document's names, so its method works
on our logs).  A record may carry ``fix``, one sentence written after ``-- fix:``.  A line
written while a request is served gets NGINX's request context: ``*N`` (the connection number,
one per TCP connection as NGINX counts them) before the function, and ``, client: ..., server:
..., request: "...", request_id: "..."`` after the message.  The formatter writes nothing by
itself; the parser reads what NGINX (any version: ``pid#0`` or ``pid#tid``) and our RA write.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import re
import time
import weakref

from onlineca.logs.record import LogRecord
from onlineca.proto.request_id import CURRENT, clean_request_id

_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "crit"}

# Where an error.log record starts inside a line (the document runs several together).
START = r"\b\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[|nginx: \[|EnrollmentService\.sh "


class ConnectionNumbers:
    """NGINX's ``*N``: one number per TCP connection, counted from 1; the requests of one
    kept-alive connection share it.  Keyed weakly, so a closed connection takes its entry away."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._numbers: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()

    def of(self, transport: object | None) -> int:
        if transport is None:
            return next(self._next)
        number = self._numbers.get(transport)
        if number is None:
            number = self._numbers[transport] = next(self._next)
        return number


class NginxErrorFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        func = getattr(record, "func", None) or record.funcName
        ctx = CURRENT.get()
        conn = f"*{ctx.connection} " if ctx is not None and ctx.connection else ""
        line = f"{stamp} [{_LEVELS.get(record.levelname, 'info')}] {self._pid}#0: {conn}{func}: {record.getMessage()}"
        if ctx is not None:
            line += (f", client: {ctx.client or '-'}, server: {ctx.server or '-'}, "
                     f'request: "{ctx.request_line}", request_id: "{ctx.request_id}"')
        fix = getattr(record, "fix", None)
        if fix:
            line += f" -- fix: {fix}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += " (" + self.formatException(record.exc_info).splitlines()[-1] + ")"
        return line


# --- the parser ------------------------------------------------------------------------------

_LINE = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[(?P<level>\w+)\] (?P<pid>\d+)#(?P<tid>\d+): "
                   r"(?:\*(?P<conn>\d+) )?(?P<msg>.*)$")
_STARTUP = re.compile(r"^nginx: \[(?P<level>\w+)\] (?P<msg>.*)$")
_FUNC = re.compile(r"^(?P<func>[A-Za-z_]\w*): ")
# NGINX's request context after the message: ", client: ADDR, server: NAME, request: "...", ..."
_CLIENT = re.compile(r", client: (?P<client>[^,\s]+)(?:, server: (?P<server>[^,]*))?"
                     r'(?:, request: "(?P<request>[^"]*)")?')
_REQUEST_ID = re.compile(r'\brequest_id[=:] ?"?(?P<rid>[A-Za-z0-9._:-]{1,64})')


def _when(m: re.Match[str]) -> dt.datetime | None:
    try:
        y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
        return dt.datetime(y, mo, d, h, mi, s)
    except ValueError:
        return None


def parse(piece: str, source: str, lineno: int) -> LogRecord | None:
    """An error.log record (timed NGINX line, start-up ``nginx: [...]`` line, or the CiscoRA
    start-up script's line), or None when ``piece`` is none of these."""
    m = _LINE.match(piece)
    if m is not None:
        msg = m.group("msg")
        fields: dict[str, object] = {"pid": m.group("pid")}
        f = _FUNC.match(msg)
        if f:
            fields["func"] = f.group("func")
        ctx = _CLIENT.search(msg)
        if ctx:
            fields.update({k: v for k, v in ctx.groupdict().items() if v})
        rid = _REQUEST_ID.search(msg)
        return LogRecord(source, lineno, "nginx", piece, _when(m), level=m.group("level"),
                         conn=m.group("conn"), client=ctx.group("client") if ctx else None,
                         request_id=clean_request_id(rid.group("rid")) if rid else None, fields=fields)
    m = _STARTUP.match(piece)
    if m is not None:
        f = _FUNC.match(m.group("msg"))
        return LogRecord(source, lineno, "nginx", piece, level=m.group("level"),
                         fields={"func": f.group("func")} if f else {})
    if piece.startswith("EnrollmentService.sh"):
        return LogRecord(source, lineno, "nginx", piece, level="info")
    return None


__all__ = ["START", "ConnectionNumbers", "NginxErrorFormatter", "parse"]
