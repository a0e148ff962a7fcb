"""What a long-running server needs from the operating system: one server per data dir and role
(a lock file), and systemd's readiness protocol (``sd_notify``).

``ServerLock`` holds ``fcntl.flock`` on ``<data>/<role>.lock`` for the life of the process and
writes its PID and start time into the file, so a second server of the same role on the same data
dir fails at once naming the first (``AlreadyRunning``); the kernel releases the lock when the
process ends, however it ends, so a stale file never blocks a restart.  ``notify`` sends
``READY=1``, ``STOPPING=1`` or ``STATUS=...`` to ``$NOTIFY_SOCKET`` (a datagram socket, path or
abstract) as ``Type=notify`` units expect, and does nothing outside systemd.  Nothing here prints.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO

from onlineca.errors import AlreadyRunning, ConfigError


class ServerLock:
    """The lock of one server role on one data dir (see the module docstring)."""

    def __init__(self, data_dir: str | os.PathLike[str], role: str) -> None:
        self.path = Path(data_dir).absolute() / f"{role}.lock"
        self.role = role
        self._file: IO[str] | None = None

    def acquire(self) -> ServerLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        f = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f.read().strip()
            f.close()
            try:
                info = json.loads(holder)
                who = f"PID {info['pid']}, started {info['started']}"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise AlreadyRunning(f"a {self.role} server already runs on {self.path.parent} ({who}; lock {self.path})") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "role": self.role,
                            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}) + "\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            try:
                self._file.seek(0)
                self._file.truncate()  # the file stays (others may be waiting on it); its holder goes
            except OSError:
                pass
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> ServerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd's notification socket; False when there is
    none (not under systemd) or it cannot be reached (a notification must never stop a server)."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError:
        return False



def cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    """The error a server that cannot bind ``host:port`` raises (the port it tried, never None)."""
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                       hint="Choose another --port or stop what uses it.")


__all__ = ["ServerLock", "cannot_listen", "notify"]
