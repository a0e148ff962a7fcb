"""Files: atomic 0600 writes, private keys, certificate files and trust stores.

Every file onlineca writes goes through ``write_file`` (or ``write_secret_file``): written to a
temporary file in the same folder with mode 0600, flushed to disk, then renamed over the target,
so a reader never sees half a file and a secret is never briefly world-readable.  Folders are
created 0700.  Reading a certificate file accepts PEM bundles, DER and PKCS#7 (.p7b).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from onlineca.errors import ParseError, PKIError

if TYPE_CHECKING:  # imported where used: a command that only writes files never loads cryptography
    from cryptography import x509

    from onlineca import pki

TRUST_SUFFIXES = (".pem", ".crt", ".cer", ".der", ".p7b")


PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """Every file and folder this process creates from now on is its owner's only
    (0600, 0700), whatever API creates it (SQLite's database and -wal/-shm files, logs, exports):
    every server and command sets it first."""
    os.umask(PRIVATE_UMASK)


def ensure_dir(path: str | os.PathLike[str], mode: int = 0o700) -> Path:
    """``path`` as a folder (created with ``mode``, parents too, when missing)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=mode)
    return p


def write_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, sync: bool = True,
               make_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` (0600 unless said otherwise);
    ``make_dir=False``: the caller made the folder already (one system call fewer)."""
    path = Path(path)
    if make_dir:
        ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode != 0o600:  # mkstemp creates the file 0600 already
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_secret_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a secret (a key, a users file) atomically, mode 0600."""
    write_file(path, data, mode=0o600)


def write_private_key(path: str | os.PathLike[str], key: pki.PrivateKey, passphrase: bytes | None = None) -> None:
    """The key as PKCS#8 PEM, 0600; encrypted with ``passphrase`` when one is given."""
    from onlineca import pki

    write_secret_file(path, pki.private_key_pem(key, passphrase))


def read_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> pki.PrivateKey:
    """A private key file; an encrypted one needs ``passphrase`` (an unencrypted one ignores it)."""
    from onlineca import pki

    path = Path(path).absolute()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PKIError(f"cannot read private key {path}: {exc.strerror}",
                       hint="Check the path and that this user may read it.") from None
    try:
        return pki.load_private_key(data, passphrase)
    except ParseError as exc:
        if exc.code == "KEY_PASSPHRASE":
            raise PKIError(f"{path}: {exc.message}", code="KEY_PASSPHRASE") from None
        raise ParseError(f"{path}: {exc.message}", code=exc.code) from None


def is_encrypted_key_file(path: str | os.PathLike[str]) -> bool:
    from onlineca import pki

    try:
        return pki.is_encrypted_key(Path(path).read_bytes())
    except OSError:
        return False


def load_cert_file(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Certificates from a PEM bundle, a DER file, or a PKCS#7 (.p7b) file."""
    from onlineca import pki

    data = Path(path).read_bytes()  # OSError for a missing file: callers name the setting in their message
    try:
        return pki.load_certificates(data)
    except ParseError:
        try:
            return pki.parse_pkcs7(data)
        except ParseError:
            raise ParseError(f"{path}: no certificate found (PEM, DER or PKCS#7 expected)") from None


def load_trust_store(*paths: str | os.PathLike[str]) -> pki.TrustStore:
    """A trust store from files or folders (every *.pem, *.crt, *.cer, *.der, *.p7b inside);
    empty paths are skipped."""
    from onlineca import pki

    store = pki.TrustStore()
    for p in paths:
        if not p:
            continue
        path = Path(p)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.suffix.lower() in TRUST_SUFFIXES:
                    store.add_all(load_cert_file(child))
        else:
            store.add_all(load_cert_file(path))
    return store


class SerialWriter:
    """File work of many callers on one thread, in the order it was queued, one hand-over per batch.

    ``asyncio.to_thread`` per write hands the interpreter to a pool thread and back for every
    file, which on a busy server costs more CPU than the write itself.  Here the jobs queued while
    the thread is busy run together when it is free, in order (so a file's removal queued after its
    write happens after it), and only a caller that waits (``run``) is told back on its loop.  A job
    that must not fail loudly catches its own errors: those of a job nobody waits for are dropped.
    The idle thread ends with the writer (no ``close``: a caller that still holds it may queue more).
    """

    def __init__(self, name: str = "file-writer") -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._waiting: list[tuple[Callable[[], object], asyncio.Future[object] | None]] = []
        self._draining = False

    def queue(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the thread after everything queued before it; nobody waits for it."""
        self._put(job, None)

    async def run(self, job: Callable[[], object]) -> object:
        """Run ``job`` after everything queued before it, and wait for its result."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._put(job, future)
        return await future

    async def flush(self) -> None:
        """Wait until everything queued so far has run."""
        await self.run(lambda: None)

    def _put(self, job: Callable[[], object], future: asyncio.Future[object] | None) -> None:
        with self._lock:
            self._waiting.append((job, future))
            if self._draining:
                return
            self._draining = True
        self._thread.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._waiting = self._waiting, []
                if not batch:
                    self._draining = False
                    return
            for job, future in batch:
                try:
                    result, error = job(), None
                except Exception as exc:  # handed to the waiting caller, if any
                    result, error = None, exc
                if future is not None:
                    _settle(future, result, error)


def _settle(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    def done() -> None:
        if future.done():  # cancelled meanwhile: nobody waits any more
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    try:
        future.get_loop().call_soon_threadsafe(done)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


__all__ = [
    "PRIVATE_UMASK",
    "SerialWriter",
    "ensure_dir",
    "is_encrypted_key_file",
    "load_cert_file",
    "load_trust_store",
    "private_umask",
    "read_private_key",
    "write_file",
    "write_private_key",
    "write_secret_file",
]
