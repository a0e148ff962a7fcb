"""The RA's ``access.log``, NGINX's access-log format: the writer (``format_line``) and the parser
(``parse``) side by side.

    127.0.0.1 - ciscora [05/Mar/2019:12:31:21 +0000] "POST /.well-known/est/simpleenroll HTTP/1.1" 200 1963 "-" "onlineca-est/0.1.0" 0.412 request_id=3f2a...

That is NGINX's ``combined`` format, then ``$request_time`` and ``request_id=$request_id`` as an
NGINX ``log_format`` that traces requests adds them.  The parser reads both that and the bare
``combined`` lines of another NGINX.  The user is the name sent (even when refused), never a
password; nothing here writes a file.
"""

from __future__ import annotations

import datetime as dt
import re

from onlineca.logs.record import LogRecord
from onlineca.proto.request_id import clean_request_id


def format_line(*, client: str, user: str, when: dt.datetime, method: str, path: str, version: str, status: int,
                length: int, agent: str, seconds: float, request_id: str | None) -> str:
    agent = agent.replace('"', "'")[:200] or "-"
    line = (f'{client or "-"} - {user or "-"} [{when:%d/%b/%Y:%H:%M:%S %z}] "{method} {path[:200]} HTTP/{version}" '
            f'{status} {length} "-" "{agent}" {seconds:.3f}')
    rid = clean_request_id(request_id)
    return line + (f" request_id={rid}" if rid else "")


_LINE = re.compile(r'^(?P<client>\S+) - (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) '
                   r'HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+|-)(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?'
                   r'(?P<rest>.*)$')
_REQUEST_ID = re.compile(r'\brequest_id[=:] ?"?(?P<rid>[A-Za-z0-9._:-]{1,64})')


def parse(piece: str, source: str, lineno: int) -> LogRecord | None:
    m = _LINE.match(piece)
    if m is None:
        return None
    try:
        when: dt.datetime | None = dt.datetime.strptime(m.group("time"), "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        when = None
    fields: dict[str, object] = {k: v for k, v in m.groupdict().items() if v is not None and k != "rest"}
    fields["status"] = int(m.group("status"))
    rid = _REQUEST_ID.search(m.group("rest") or "")
    return LogRecord(source, lineno, "access", piece, when, client=m.group("client"),
                     request_id=clean_request_id(rid.group("rid")) if rid else None, fields=fields)


__all__ = ["format_line", "parse"]
