"""Read-only commands create nothing: on an empty folder (a new data dir, an empty home), each runs
in its own process and afterwards the folder holds exactly what it held before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

READ_ONLY = [
    (("ca", "requests", "list"), 1),          # no CA: one error naming the absolute folder
    (("ca", "users", "list"), 0),
    (("capf", "devices", "list"), 0),
    (("capf", "devices", "list", "--json"), 0),
    (("capf", "devices", "export"), 0),
    (("capf", "profiles", "list"), 0),
    (("capf", "report"), 0),
    (("admin", "audit"), 0),
    (("admin", "users", "list"), 0),
    (("diagnose",), 1),                        # nothing answers: findings, exit 1
    (("logs", "trace", "SEP74A02FC0A675"), None),
    (("logs", "analyze", "{data}/logs"), None),
    (("config", "check"), 0),
    (("config", "example"), 0),
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("args", "status"), READ_ONLY, ids=[" ".join(a) for a, _ in READ_ONLY])
def test_a_read_only_command_creates_nothing(tmp_path: Path, args: tuple[str, ...], status: int | None) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data"
    before = _tree(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONLINECA_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    done = subprocess.run([sys.executable, "-m", "onlineca", "--data-dir", str(data),
                           *(a.format(data=data) for a in args)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    if status is not None:
        assert done.returncode == status, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _tree(tmp_path) == before, f"{' '.join(args)} created files"
    if args[:2] == ("ca", "requests"):
        assert f"no CA in {data / 'ca'}" in done.stderr  # the absolute path
