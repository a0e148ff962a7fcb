"""CAPF's SQLite group commit (``capf.server._GroupCommit``) on a real SQLite file: steps waiting
together share one transaction; a failing step rolls its batch back and every other step is
committed alone, while the failing one gets its own error."""

from __future__ import annotations

import asyncio
import threading

import pytest

from onlineca.capf.server import _GroupCommit
from onlineca.errors import PolicyError
from onlineca.store import Database, devices as inv


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'capf.db'}")
    database.migrate()
    yield database
    database.dispose()


def _names(db: Database) -> set[str]:
    with db.session() as s:
        return {d.name for d in inv.list_devices(s)}


async def _batch(writer: _GroupCommit, steps: list) -> list:  # type: ignore[type-arg]
    """Run ``steps`` so that all but the first wait together: the first holds the thread until
    the others are queued."""
    started, release = threading.Event(), threading.Event()

    def hold(s):  # type: ignore[no-untyped-def]
        started.set()
        assert release.wait(10)
        return steps[0](s)

    first = writer.run(hold)
    # Queue the others only once the thread is inside the first step, so it cannot take them
    # into the first batch.
    assert await asyncio.to_thread(started.wait, 10)
    rest = [writer.run(step) for step in steps[1:]]
    release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def _add(name: str, sessions: list):  # type: ignore[no-untyped-def, type-arg]
    def step(s):  # type: ignore[no-untyped-def]
        sessions.append(s)
        return inv.add_device(s, name, actor="test").name
    return step


async def test_waiting_steps_share_one_commit(db: Database) -> None:
    writer = _GroupCommit(db)
    try:
        seen: list = []  # type: ignore[type-arg]
        names = ["SEP000000000B01", "SEP000000000B02", "SEP000000000B03", "SEP000000000B04"]
        results = await _batch(writer, [_add(n, seen) for n in names])
        assert results == names
        assert len({id(s) for s in seen[1:]}) == 1  # the three that waited: one transaction
        assert _names(db) == set(names)
    finally:
        writer.close()


async def test_a_failing_step_fails_alone(db: Database) -> None:
    writer = _GroupCommit(db)
    try:
        seen: list = []  # type: ignore[type-arg]
        steps = [_add("SEP000000000C01", seen), _add("SEP000000000C02", seen), _add("not a device", seen),
                 _add("SEP000000000C03", seen)]
        results = await _batch(writer, steps)
        assert results[:2] == ["SEP000000000C01", "SEP000000000C02"] and results[3] == "SEP000000000C03"
        assert isinstance(results[2], PolicyError)
        assert _names(db) == {"SEP000000000C01", "SEP000000000C02", "SEP000000000C03"}
    finally:
        writer.close()
