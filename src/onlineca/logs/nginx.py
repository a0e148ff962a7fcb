"""The RA's ``error.log`` format, as the source document's NGINX/CiscoRA log shows it.

    2019/03/05 12:31:21 [info] 31067#0: login_to_certsrv_ca: Secure connection to MS CertServ ...

The function name comes from ``extra={"func": "login_to_certsrv_ca"}`` (the source document's
names, so its troubleshooting method works on our logs) and falls back to the Python function.
A record may also carry ``fix``: one plain sentence telling the administrator what to do, which
is written on the same line after ``-- fix:``.  This module only formats; it writes nothing.
"""

from __future__ import annotations

import logging
import os
import time

_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "crit"}


class NginxErrorFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        func = getattr(record, "func", None) or record.funcName
        line = f"{stamp} [{_LEVELS.get(record.levelname, 'info')}] {self._pid}#0: {func}: {record.getMessage()}"
        fix = getattr(record, "fix", None)
        if fix:
            line += f" -- fix: {fix}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += " (" + self.formatException(record.exc_info).splitlines()[-1] + ")"
        return line
