"""The layers under the command line stay free of the terminal: ``onlineca.lab`` (and everything it
imports: the tiers, the store, infra) loads neither click nor rich, checked in a fresh interpreter
because a module loaded by an earlier test would hide it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["onlineca.lab", "onlineca.infra.serving"])
def test_module_loads_neither_click_nor_rich(module: str) -> None:
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'rich')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
