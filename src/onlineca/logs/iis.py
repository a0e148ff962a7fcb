"""The CA's access log in IIS's W3C extended format, as the source document's CA log shows it.

``#Software``/``#Version``/``#Date``/``#Fields`` headers (written when the file is opened), then
one line a request in the field order of the document:
``date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent)
cs(Referer) sc-status sc-substatus sc-win32-status time-taken`` (UTC, time-taken in ms, spaces in
values as ``+``, ``-`` for empty).  ``format_line`` is pure; ``IISLog`` appends and flushes.
Never log a password, an Authorization header or a request body here.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

SOFTWARE = "Microsoft Internet Information Services 10.0"
FIELDS = ("date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
          "cs(Referer) sc-status sc-substatus sc-win32-status time-taken")

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
    ])


class IISLog:
    """Appends W3C lines to ``path`` (0640); headers once per opening, as IIS does at each start."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(self.path, "a", encoding="utf-8", newline="\r\n")  # noqa: SIM115
        try:
            os.chmod(self.path, 0o640)
        except OSError:
            pass
        self._file.write("\n".join(header_lines(dt.datetime.now(dt.UTC))) + "\n")
        self._file.flush()

    def write(self, entry: IISEntry) -> None:
        self._file.write(format_line(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


__all__ = [
    "FIELDS",
    "SOFTWARE",
    "WIN32_CONTINUE_NEEDED",
    "WIN32_LOGON_FAILURE",
    "WIN32_NO_CREDENTIALS",
    "IISEntry",
    "IISLog",
    "format_line",
    "header_lines",
]
