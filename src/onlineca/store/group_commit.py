"""Database work off the event loop: one transaction per call, SQLite's writes grouped on one thread.

``Transactions.run(fn, *args)`` runs ``fn(session, *args)`` in a transaction of its own, off the
event loop, and hands back its result once that transaction is committed.  On PostgreSQL each call
takes a worker thread and a pooled connection, so sessions write in parallel.  SQLite has one
writer: there every call queues on one thread (``GroupCommit``) instead of meeting the others in
SQLite's busy handler, which sleeps up to 100 ms a time, and the calls waiting together share one
transaction and one commit.  A caller is told "done" strictly after the commit that holds its work,
never before, and never about work that was rolled back.  Nothing here decides anything about
devices; it only places transactions.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session

from onlineca.store.db import Database

P = ParamSpec("P")
T = TypeVar("T")

Work = Callable[[Session], Any]


class GroupCommit:
    """SQLite work of many callers on one thread, in one transaction per batch.

    Whatever work is waiting when the thread is free runs in one transaction with one commit (a
    busy CAPF has several sessions' steps waiting); each caller gets its result only after that
    commit.  If any step of a batch fails, the batch is rolled back and each step runs again in a
    transaction of its own, so one caller's failure never touches another's work; each of those
    callers too hears back only once its own transaction has committed (or failed).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="db-group-commit")
        self._lock = threading.Lock()
        self._waiting: list[tuple[Work, asyncio.Future[Any]]] = []
        self._draining = False

    def run(self, work: Work) -> asyncio.Future[Any]:
        """Queue ``work``; the future resolves on the caller's loop after the commit that holds it."""
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiting.append((work, future))
            if not self._draining:
                self._draining = True
                self._thread.submit(self._drain)
        return future

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._waiting = self._waiting, []
                if not batch:
                    self._draining = False
                    return
            if len(batch) == 1:
                self._alone(*batch[0])
                continue
            try:
                with self.db.session() as s:
                    results = [work(s) for work, _f in batch]
            except Exception:
                for work, future in batch:
                    self._alone(work, future)
                continue
            for (_w, future), result in zip(batch, results, strict=True):
                _settle(future, result, None)

    def _alone(self, work: Work, future: asyncio.Future[Any]) -> None:
        """``work`` in a transaction of its own; its caller hears back after the commit (the
        ``with`` block has ended), so "done" never overtakes the write it stands for."""
        try:
            with self.db.session() as s:
                result = work(s)
        except Exception as exc:
            _settle(future, None, exc)
        else:
            _settle(future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Hand a result to the waiting coroutine on its own loop (a cancelled one no longer waits)."""
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


class Transactions:
    """Each ``run`` one transaction off the event loop: SQLite through ``GroupCommit``,
    PostgreSQL in a worker thread from the default pool."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._group = GroupCommit(db) if db.is_sqlite else None

    async def run(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs) -> T:
        if self._group is not None:
            result: T = await self._group.run(lambda s: fn(s, *args, **kw))
            return result

        def alone() -> T:
            with self.db.session() as s:
                return fn(s, *args, **kw)
        return await asyncio.to_thread(alone)

    def close(self) -> None:
        """Release the SQLite thread (after the callers have finished)."""
        if self._group is not None:
            self._group.close()


__all__ = ["GroupCommit", "Transactions"]
