"""Logging: one log file per component in the log dir, as text or JSON, never with a secret.

``setup_component_log("ca", log_dir, fmt="text")`` returns the ``onlineca.ca`` logger writing
``<log_dir>/ca.log``.  Components that must write the source document's formats (the RA's
``error.log``, the CA's IIS W3C log, the CAPF trace) add their own handlers with their own
formatters (see the modules beside this one: one module per format, its writer and its parser side
by side; ``reader.records()`` reads them all); the JSON format is the same for all of them.
Every handler here carries ``RedactFilter`` and redacts the finished line (tracebacks and custom
formats included), masking anything that looks like a password, an Authorization header or a
private key before it is written.

Where the lines go is the process's log target (``set_target``, from ``[logging] target`` or
``--log-target``): ``file`` (the default) writes each component's file and reopens it when
logrotate moved it away (the inode changed) or on ``reopen_log_files()`` (the servers call it on
SIGHUP); ``journald`` writes plain lines on stderr with an sd-daemon priority prefix and no
timestamp of ours (journald adds its own); ``stdout`` writes each component's own format on
stdout (containers).
With ``set_buffered(True)`` (``[logging] buffered``) the servers' file logs
(``attach_log``) are written by a background thread: the logging call only appends the record to a
deque (no write, no flush, no lock on the event loop); every ``FLUSH_SECONDS`` the thread writes
what has arrived and flushes once, and ``detach()`` (a clean stop) and process exit drain
it completely, so no line is lost on a clean stop.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol


def _mask_value(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}***{quote}"


_SECRET_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # Private keys first (their base64 could hold anything): unencrypted PKCS#8, encrypted
    # PKCS#8, and the traditional RSA/EC/DSA forms; a key cut off before its END line too.
    (re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S),
     "[private key redacted]"),
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*", re.S), "[private key redacted]"),
    # Authorization / Proxy-Authorization headers in any rendering (header line, dict repr, JSON):
    # keep the scheme, mask the credentials.
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)((?:basic|ntlm|negotiate|bearer|digest)\s+)?"
                r"[^\s\"',;]+"),
     r"\1\2***"),
    # password=..., "password": "...", ca_password: '...', auth_string=..., secret=...
    (re.compile(r"(?i)((?:pass(?:word|wd|phrase)?|secret|auth_string|authpassword)[\"']?\s*[:=]\s*)"
                r"(\"[^\"]*\"|'[^']*'|[^\s\"',;&]+)"),
     _mask_value),
]


# Every pattern above needs one of these words (case aside): a line without any is returned as
# it is, without running the regular expressions (most lines; a busy server writes many).
_SECRET_WORDS = ("private key", "authorization", "pass", "secret", "auth_string")


def redact(text: str) -> str:
    """Mask secrets in a log message."""
    low = text.lower()
    if not any(word in low for word in _SECRET_WORDS):
        return text
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactFilter(logging.Filter):
    """Masks secrets in the message itself, so that every handler the record reaches sees it clean."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # bad %-args: logging reports those itself
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object a line: ts, level, component, message and any ``extra`` fields (all redacted)."""

    _skip = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": record.name.removeprefix("onlineca."),
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip and not key.startswith("_"):
                if not isinstance(value, (int, float, bool, type(None))):
                    value = redact(str(value))
                    if _SECRET_KEY.search(key):
                        value = "***"
                obj[key] = value
        if record.exc_info:
            obj["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(obj, ensure_ascii=False)


_SECRET_KEY = re.compile(r"(?i)pass|secret|auth_string|authorization|private_key")


def parse_json_line(text: str) -> dict[str, object] | None:
    """A ``--log-format json`` line back as its object (None when the line is not one of ours)."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "message" in obj else None


# --------------------------------------------------------------------------- where lines go

LogTarget = Literal["file", "journald", "stdout"]
_target: LogTarget = "file"


def set_target(target: str) -> None:
    """Where the handlers made from now on write (see the module docstring); a server command
    sets it once, before it starts its server."""
    global _target
    if target not in ("file", "journald", "stdout"):
        raise ValueError(f"unknown log target {target!r}")
    _target = target  # type: ignore[assignment]


def get_target() -> LogTarget:
    return _target


class Reopenable(Protocol):
    def reopen(self) -> None: ...


# Every log file open in this process, so SIGHUP can reopen them all (weak: a detached handler goes).
_open_files: weakref.WeakSet[Reopenable] = weakref.WeakSet()
_open_lock = threading.Lock()


def track(log_file: Reopenable) -> None:
    with _open_lock:
        _open_files.add(log_file)


def reopen_log_files() -> int:
    """Close and reopen every log file of this process (after logrotate, or on SIGHUP); returns how
    many.  Lines written meanwhile are not lost: each handler reopens under its own lock."""
    with _open_lock:
        targets = list(_open_files)
    for log_file in targets:
        log_file.reopen()
    return len(targets)


class RedactingFileHandler(logging.handlers.WatchedFileHandler):
    """A file handler whose every written line goes through ``redact``: tracebacks and custom
    formats (IIS, error.log) included, not only the message.  It is a ``WatchedFileHandler``: when
    logrotate renames the file away, the next line goes to a new file at the same path."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # JSON lines are redacted field by field (a regex over the JSON could break its quoting).
        return text if isinstance(self.formatter, JSONFormatter) else redact(text)

    # Buffered mode: the queue's thread writes many lines, then flushes once (``flush_now``), and
    # looks for a rotated file once per batch (``reopenIfNeeded`` is a stat() per line otherwise).
    defer_flush = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.defer_flush:
            self.reopenIfNeeded()
        logging.FileHandler.emit(self, record)

    def flush(self) -> None:
        if not self.defer_flush:
            super().flush()

    def flush_now(self) -> None:
        super().flush()

    def close(self) -> None:
        self.flush_now()
        super().close()

    def reopen(self) -> None:
        """Close the file and open the path again (SIGHUP)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.flush()
                self.stream.close()
            self.stream = self._open()
            self._statstream()
        finally:
            self.release()


# sd-daemon(3) priority prefixes: journald reads "<N>" at the start of a line as its priority.
_SD_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournaldFormatter(logging.Formatter):
    """``<6>onlineca.ca: message``: the component and the message, with no timestamp (journald
    stamps each line itself); JSON lines when the format is json."""

    def __init__(self, json_lines: bool = False) -> None:
        super().__init__("%(name)s: %(message)s")
        self._json = JSONFormatter() if json_lines else None

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in _SD_PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        text = self._json.format(record) if self._json else redact(super().format(record))
        # one journal entry per line: a traceback's continuation lines keep the priority too
        return "\n".join(f"<{_SD_PRIORITY[level]}>{line}" for line in text.splitlines() or [""])


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr or stdout, looked up at each line (the command-line test runner swaps them)."""

    def __init__(self, which: str) -> None:
        super().__init__()
        self._which = which

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if self._which == "stderr" else sys.stdout
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if isinstance(self.formatter, (JSONFormatter, JournaldFormatter)) else redact(text)


TEXT_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def make_handler(path: Path, fmt: str = "text", formatter: logging.Formatter | None = None) -> logging.Handler:
    """A handler for the log at ``path`` with redaction: the file (created 0600 with its folder,
    0700: issue 11, every file 0600), or, under the journald and stdout targets, the stream instead."""
    if _target != "file":
        stream = _StreamHandler("stderr" if _target == "journald" else "stdout")
        if _target == "journald":
            stream.setFormatter(JournaldFormatter(json_lines=fmt == "json"))
        else:
            stream.setFormatter(JSONFormatter() if fmt == "json" else formatter or logging.Formatter(TEXT_FORMAT))
        stream.addFilter(RedactFilter())
        return stream
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:  # create it 0600 rather than with the umask's mode, then tighten an older file
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        os.chmod(path, 0o600)
    except OSError:
        pass
    handler = RedactingFileHandler(path, encoding="utf-8", delay=False)
    track(handler)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(formatter or logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactFilter())
    return handler


_buffered = False
FLUSH_SECONDS = 0.5


def set_buffered(on: bool) -> None:
    """Whether ``attach_log`` handlers made from now on write through a queue (module docstring)."""
    global _buffered
    _buffered = bool(on)


class _QueueHandler(logging.Handler):
    """Appends the record, its message merged (its arguments may change after the call) but its
    exception kept (so the file's own formatter renders it as unbuffered lines are), to a deque:
    no lock and no thread woken per line, which is what costs on a busy event loop."""

    def __init__(self, pending: collections.deque[logging.LogRecord]) -> None:
        super().__init__()
        self.pending = pending

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: deque.append is atomic
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None  # same getMessage() for every handler
        except Exception:  # bad %-args: let the file handler report it as logging does
            pass
        self.pending.append(record)


class _Writer:
    """The thread that writes one file handler's queued records every ``FLUSH_SECONDS`` and flushes
    once per batch; ``stop()`` writes what is left."""

    def __init__(self, handler: logging.Handler) -> None:
        self.pending: collections.deque[logging.LogRecord] = collections.deque()
        self.handler = handler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onlineca-log-writer", daemon=True)
        self._thread.start()
        _writers.add(self)

    def _drain(self) -> None:
        wrote = False
        if self.pending and isinstance(self.handler, RedactingFileHandler):
            self.handler.acquire()
            try:  # once for the batch: logrotate may have renamed the file away
                self.handler.reopenIfNeeded()
            finally:
                self.handler.release()
        while True:
            try:
                record = self.pending.popleft()
            except IndexError:
                break
            self.handler.handle(record)
            wrote = True
        if wrote:
            if isinstance(self.handler, RedactingFileHandler):
                self.handler.flush_now()
            else:
                self.handler.flush()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self._drain()
        self._drain()

    def stop(self) -> None:
        """Write every line queued so far, then end the thread (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._drain()  # anything appended while the thread was ending
        _writers.discard(self)


_writers: weakref.WeakSet[_Writer] = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    for writer in list(_writers):
        writer.stop()


def attach_log(logger_name: str, path: Path | str, fmt: str = "text", level: str = "info",
               formatter: logging.Formatter | None = None) -> Callable[[], None]:
    """Attach a redacting file handler to ``logger_name`` for the life of a server.

    Returns the function that removes and closes exactly that handler (servers call it when they
    stop, so a process that starts many servers, like the tests or the demo, does not pile up
    handlers on one logger).
    """
    logger = logging.getLogger(logger_name)
    handler = make_handler(Path(path), fmt, formatter)
    writer: _Writer | None = None
    if _buffered and isinstance(handler, RedactingFileHandler):
        handler.defer_flush = True
        writer = _Writer(handler)
        logger.addHandler(_QueueHandler(writer.pending))
    else:
        logger.addHandler(handler)
    added = logger.handlers[-1]
    if logger.level == logging.NOTSET or logger.level > logging.getLevelName(level.upper()):
        logger.setLevel(level.upper())

    def detach() -> None:
        logger.removeHandler(added)
        if writer is not None:
            writer.stop()
        handler.close()

    return detach


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
