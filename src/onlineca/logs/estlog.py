"""libEST-style log lines, as the RA's NGINX error.log in the source document carries them:

    ***EST [INFO][est_log_version:216]--> libest 2.2.0 (API level 4)

The function comes from ``extra={"func": ...}`` (a libEST-like name, so the document's
troubleshooting method finds it) and falls back to the Python function; the number is the
Python source line.  This module only formats records; it writes nothing and adds no handler.
"""

from __future__ import annotations

import logging

_LEVELS = {"DEBUG": "INFO", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "ERROR"}


class ESTLibFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        func = getattr(record, "func", None) or record.funcName
        line = f"***EST [{_LEVELS.get(record.levelname, 'INFO')}][{func}:{record.lineno}]--> {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += " (" + self.formatException(record.exc_info).splitlines()[-1] + ")"
        return line


__all__ = ["ESTLibFormatter"]
