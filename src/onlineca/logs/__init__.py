"""Logging: one log file per component in the log dir, as text or JSON, never with a secret.

``setup_component_log("ca", log_dir, fmt="text")`` returns the ``onlineca.ca`` logger writing
``<log_dir>/ca.log``.  Components that must write the source document's formats (the RA's
``error.log``, the CA's IIS W3C log, the CAPF trace) add their own handlers with their own
formatters (see the modules beside this one); the JSON format is the same for all of them.
Every handler here carries ``RedactFilter``, which masks anything that looks like a password,
an Authorization header or a private key before a record is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

_SECRET_PATTERNS = [
    # Authorization: Basic/NTLM/Negotiate/Bearer <token>
    (re.compile(r"(?i)(authorization\s*[:=]\s*)(basic|ntlm|negotiate|bearer|digest)\s+[^\s,;\"']+"),
     r"\1\2 ***"),
    # password=..., "password": "...", auth_string=...
    (re.compile(r"(?i)((?:pass(?:word|wd)?|secret|auth_string|authpassword)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
     r"\1***"),
    (re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S),
     r"[private key redacted]"),
]


def redact(text: str) -> str:
    """Mask secrets in a log message."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object a line: ts, level, component, message and any ``extra`` fields."""

    _skip = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": record.name.removeprefix("onlineca."),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip and not key.startswith("_"):
                obj[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def make_handler(path: Path, fmt: str = "text", formatter: logging.Formatter | None = None) -> logging.Handler:
    """A file handler at ``path`` (created 0640 with its folder) with redaction."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=False)
    try:
        os.chmod(path, 0o640)
    except OSError:
        pass
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(formatter or logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactFilter())
    return handler


def setup_component_log(component: str, log_dir: Path | str, fmt: str = "text",
                        level: str = "info", formatter: logging.Formatter | None = None,
                        filename: str | None = None) -> logging.Logger:
    """Attach ``<log_dir>/<component>.log`` to the ``onlineca.<component>`` logger (idempotent)."""
    logger = logging.getLogger(f"onlineca.{component}")
    path = Path(log_dir) / (filename or f"{component}.log")
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve():
            return logger
    logger.addHandler(make_handler(path, fmt, formatter))
    logger.setLevel(level.upper())
    return logger
