"""CPU-bound work spread over every core: the salted scrypt hashes of many auth strings at once.

A bulk import of devices with auth strings pays one scrypt (``policy.capf.AUTH_STRING_SCRYPT``,
~40-50 ms of CPU) per string; one process at a time would leave the other cores idle.  The
workers are *spawned* (never forked: the caller may hold threads and database connections); each
imports this module once (and with it the ``store`` package).  This module never weakens the hash, never returns or logs a string
in clear, and never keeps one after the call.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from onlineca.errors import OnlineCAError
from onlineca.policy.capf import hash_auth_string

# Fewer strings than this are hashed in the calling process (starting the workers costs more).
POOL_MIN = 16


def hash_one(value: str) -> str | None:
    """The stored form of ``value`` with a fresh 16-byte salt, or None when it is not a valid
    auth string (the caller's own check then reports why, with its line)."""
    try:
        return hash_auth_string(value, secrets.token_bytes(16))
    except OnlineCAError:
        return None


class AuthStringHasher:
    """Hashes lists of auth strings on every core; a pool is started on first need, and ended by
    ``close`` (or the ``with`` block)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def hash_all(self, values: Sequence[str]) -> list[str | None]:
        if len(values) < POOL_MIN or self.workers < 2:
            return [hash_one(v) for v in values]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        chunk = max(1, len(values) // (self.workers * 4))
        return list(self._pool.map(hash_one, values, chunksize=chunk))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> AuthStringHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
