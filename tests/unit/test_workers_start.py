"""The supervisor starts worker 0 alone and the others once it is ready, so what a server does
on its first start in a new data dir (migrations, CAPF's certificate and its own CA) is done
once.  Real worker processes: a few lines of Python that log when they start and when they are
ready, then wait for SIGTERM."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from onlineca.infra.workers import READY_MARK, Supervisor

WORKER = """
import os, signal, sys
index = os.environ["ONLINECA_WORKER_INDEX"]
with open(sys.argv[1], "a") as log:
    log.write(f"start {index} of {os.environ['ONLINECA_WORKER_COUNT']}\\n")
with open(sys.argv[1], "a") as log:
    log.write(f"ready {index}\\n")
print(sys.argv[2] + f"worker {index} serving", file=sys.stderr, flush=True)
signal.pause()
"""


@pytest.mark.timeout(60)
def test_the_other_workers_start_once_the_first_is_ready(tmp_path: Path) -> None:
    order = tmp_path / "order"
    sup = Supervisor([sys.executable, "-c", WORKER, str(order), READY_MARK], 3, err=io.StringIO())
    try:
        assert sup.start() == "worker 0 serving"
        lines = order.read_text().splitlines()
        assert sorted(lines) == ["ready 0", "ready 1", "ready 2", "start 0 of 3", "start 1 of 3", "start 2 of 3"]
        assert lines[:2] == ["start 0 of 3", "ready 0"]  # nobody else started before worker 0 was ready
        assert all(w.proc.poll() is None for w in sup.workers.values())
    finally:
        assert sup.stop() == 0


@pytest.mark.timeout(60)
def test_a_first_worker_that_fails_starts_no_other(tmp_path: Path) -> None:
    order = tmp_path / "order"
    failing = "import sys; open(sys.argv[1], 'a').write('start\\n'); print('error: no database', file=sys.stderr)"
    sup = Supervisor([sys.executable, "-c", failing, str(order)], 3, err=io.StringIO())
    with pytest.raises(RuntimeError, match="no database"):
        sup.start()
    assert order.read_text() == "start\n"  # the two others were never started
