"""The SQLite group commit (``store.group_commit``) on a real SQLite file: steps waiting together
share one transaction; a failing step rolls its batch back and every other step is committed
alone, while the failing one gets its own error; and no caller ever hears "done" before the
commit that holds its step."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from onlineca.errors import PolicyError
from onlineca.store import Database, devices as inv
from onlineca.store.group_commit import GroupCommit, Transactions

Step = Callable[[Session], Any]


@pytest.fixture
def db(tmp_path) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'capf.db'}")
    database.migrate()
    yield database
    database.dispose()


def _names(db: Database) -> set[str]:
    with db.session() as s:
        return {d.name for d in inv.list_devices(s)}


async def _queue_together(writer: GroupCommit, steps: list[Step]) -> list[asyncio.Future[Any]]:
    """Queue ``steps`` so that all but the first wait together: the first holds the thread until
    the others are queued.  The futures, in the order of ``steps``."""
    started, release = threading.Event(), threading.Event()

    def hold(s: Session) -> Any:
        started.set()
        assert release.wait(10)
        return steps[0](s)

    first = writer.run(hold)
    # Queue the others only once the thread is inside the first step, so it cannot take them
    # into the first batch.
    assert await asyncio.to_thread(started.wait, 10)
    rest = [writer.run(step) for step in steps[1:]]
    release.set()
    return [first, *rest]


async def _batch(writer: GroupCommit, steps: list[Step]) -> list[Any]:
    return await asyncio.gather(*await _queue_together(writer, steps), return_exceptions=True)


def _add(name: str, sessions: list[Session]) -> Step:
    def step(s: Session) -> str:
        sessions.append(s)
        s.info.setdefault("names", []).append(name)
        return inv.add_device(s, name, actor="test").name
    return step


async def test_waiting_steps_share_one_commit(db: Database) -> None:
    writer = GroupCommit(db)
    try:
        seen: list[Session] = []
        names = ["SEP000000000B01", "SEP000000000B02", "SEP000000000B03", "SEP000000000B04"]
        results = await _batch(writer, [_add(n, seen) for n in names])
        assert results == names
        assert len({id(s) for s in seen[1:]}) == 1  # the three that waited: one transaction
        assert _names(db) == set(names)
    finally:
        writer.close()


async def test_a_failing_step_fails_alone(db: Database) -> None:
    writer = GroupCommit(db)
    try:
        seen: list[Session] = []
        steps = [_add("SEP000000000C01", seen), _add("SEP000000000C02", seen), _add("not a device", seen),
                 _add("SEP000000000C03", seen)]
        results = await _batch(writer, steps)
        assert results[:2] == ["SEP000000000C01", "SEP000000000C02"] and results[3] == "SEP000000000C03"
        assert isinstance(results[2], PolicyError)
        assert _names(db) == {"SEP000000000C01", "SEP000000000C02", "SEP000000000C03"}
    finally:
        writer.close()


async def test_a_failing_step_fails_alone_200_times(db: Database) -> None:
    """Issue 10, item 7, as the issue asks: ``test_a_failing_step_fails_alone`` failed about 3 runs
    in 25 before the fix in ``store.group_commit``; its scenario 200 times in one test run."""
    writer = GroupCommit(db)
    try:
        seen: list[Session] = []
        for i in range(200):
            good = [f"SEP{i:04d}00000E01", f"SEP{i:04d}00000E02", f"SEP{i:04d}00000E03"]
            steps = [_add(good[0], seen), _add(good[1], seen), _add(f"not a device {i}", seen), _add(good[2], seen)]
            results = await _batch(writer, steps)
            assert [results[0], results[1], results[3]] == good, f"iteration {i}"
            assert isinstance(results[2], PolicyError), f"iteration {i}"
            assert set(good) <= _names(db), f"iteration {i}"
    finally:
        writer.close()


async def test_no_step_is_acknowledged_before_its_commit_200_times(db: Database) -> None:
    """The race of a failed batch whose steps are retried alone, run 200 times.  Just before each
    commit, the thread asks the event loop (and waits for the answer) whether any caller whose
    step that commit holds has been told "done" already.  The loop runs callbacks in the order
    they were scheduled, so an acknowledgement sent before the commit is always seen: the check
    is deterministic, not a matter of luck with timing."""
    loop = asyncio.get_running_loop()
    futures: dict[str, asyncio.Future[Any]] = {}
    early: list[str] = []

    async def acknowledged(names: list[str]) -> list[str]:
        return [n for n in names if n in futures and futures[n].done()]

    def before_commit(s: Session) -> None:
        names = s.info.get("names")
        if names:
            early.extend(asyncio.run_coroutine_threadsafe(acknowledged(list(names)), loop).result(10))

    event.listen(Session, "before_commit", before_commit)
    writer = GroupCommit(db)
    try:
        seen: list[Session] = []
        for i in range(200):
            good = [f"SEP{i:04d}00000C01", f"SEP{i:04d}00000C02", f"SEP{i:04d}00000C03"]
            steps = [_add(good[0], seen), _add(good[1], seen), _add(f"bad name {i}", seen), _add(good[2], seen)]
            futures.clear()
            pending = await _queue_together(writer, steps)
            futures.update(zip([*good[:2], "bad", good[2]], pending, strict=True))
            results = await asyncio.gather(*pending, return_exceptions=True)
            assert early == [], f"iteration {i}: told done before the commit: {early}"
            assert [results[0], results[1], results[3]] == good and isinstance(results[2], PolicyError)
            assert set(good) <= _names(db), f"iteration {i}"
        assert len(_names(db)) == 600
    finally:
        event.remove(Session, "before_commit", before_commit)
        writer.close()


async def test_transactions_run_each_call_in_its_own_committed_transaction(db: Database) -> None:
    tx = Transactions(db)
    try:
        names = await asyncio.gather(*(tx.run(inv.add_device, f"SEP00000000D0{i}", actor="test") for i in range(4)))
        assert [d.name for d in names] == [f"SEP00000000D0{i}" for i in range(4)]
        with pytest.raises(PolicyError):
            await tx.run(inv.add_device, "not a device", actor="test")
        assert _names(db) == {f"SEP00000000D0{i}" for i in range(4)}
    finally:
        tx.close()
