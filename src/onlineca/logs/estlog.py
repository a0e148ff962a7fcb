"""libEST-style log lines, as the RA's NGINX error.log in the source document carries them: the
writer (``ESTLibFormatter``) and the parser (``parse``) side by side.

    ***EST [INFO][est_log_version:216]--> libest 2.2.0 (API level 4)
    ***EST [INFO][log_access:1298]--> 14.48.31.128 [27/Feb/2019:16:53:28 -0500] "POST /.well-known/est/simpleenroll HTTP/1.1" 401 0

The function comes from ``extra={"func": ...}`` (a libEST-like name, so the document's
troubleshooting method finds it) and falls back to the Python function; the number is the
Python source line.  libEST lines carry no time of their own, except the access line libEST
writes (``log_access``), whose client and time the parser reads.  Nothing here writes a file.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

from onlineca.logs.record import LogRecord

_LEVELS = {"DEBUG": "INFO", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "ERROR"}

START = r"\*\*\*EST \["


class ESTLibFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        func = getattr(record, "func", None) or record.funcName
        line = f"***EST [{_LEVELS.get(record.levelname, 'INFO')}][{func}:{record.lineno}]--> {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += " (" + self.formatException(record.exc_info).splitlines()[-1] + ")"
        return line


_LINE = re.compile(r"^\*\*\*EST \[(?P<level>\w+)\]\[(?P<func>[^:\]]*):?(?P<lineno>\d*)\]--> ?(?P<msg>.*)$")
# libEST's own access line: CLIENT [dd/Mon/yyyy:HH:MM:SS +hhmm] "METHOD PATH HTTP/x" STATUS BYTES
_ACCESS = re.compile(r'^(?P<client>\S+) \[(?P<time>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
                     r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3})')


def parse(piece: str, source: str, lineno: int) -> LogRecord | None:
    m = _LINE.match(piece)
    if m is None:
        return None
    fields: dict[str, object] = {"func": m.group("func")}
    a = _ACCESS.match(m.group("msg"))
    if a is None:
        return LogRecord(source, lineno, "est", piece, level=m.group("level"), fields=fields)
    try:
        when: dt.datetime | None = dt.datetime.strptime(a.group("time"), "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        when = None
    fields.update(method=a.group("method"), path=a.group("path"), status=int(a.group("status")))
    return LogRecord(source, lineno, "est", piece, when, level=m.group("level"), client=a.group("client"),
                     fields=fields)


__all__ = ["START", "ESTLibFormatter", "parse"]
