"""Files: atomic 0600 writes, private keys, certificate files and trust stores.

Every file onlineca writes goes through ``write_file`` (or ``write_secret_file``): written to a
temporary file in the same folder with mode 0600, flushed to disk, then renamed over the target,
so a reader never sees half a file and a secret is never briefly world-readable.  Folders are
created 0700.  Reading a certificate file accepts PEM bundles, DER and PKCS#7 (.p7b).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography import x509

from onlineca import pki
from onlineca.errors import ParseError, PKIError

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


def write_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` (0600 unless said otherwise)."""
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
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
    write_secret_file(path, pki.private_key_pem(key, passphrase))


def read_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> pki.PrivateKey:
    """A private key file; an encrypted one needs ``passphrase`` (an unencrypted one ignores it)."""
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
    try:
        return pki.is_encrypted_key(Path(path).read_bytes())
    except OSError:
        return False


def load_cert_file(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Certificates from a PEM bundle, a DER file, or a PKCS#7 (.p7b) file."""
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


__all__ = [
    "PRIVATE_UMASK",
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
