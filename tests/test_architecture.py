"""The design's rules, checked: pure cores load no I/O library, every exception lives in errors.py
under one root, every code raised or reported is registered in ``errors.CODES`` with one fix
sentence, the import contracts hold, and mypy --strict only gets better.

These tests read the source tree (and run lint-imports and mypy); they start no server.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from onlineca import errors

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "onlineca"
PURE_PACKAGES = ("pki", "proto", "policy")
# (socket is not here: cryptography.x509 loads it through email.utils, for address parsing.)
HEAVY = ("asyncio", "aiohttp", "sqlalchemy", "click", "rich", "pydantic", "ssl", "logging.handlers")


def _modules(package: str) -> list[str]:
    base = SRC / package
    names = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _source_files() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py")) if "migrations" not in p.parts]


@pytest.mark.parametrize("module", [m for pkg in PURE_PACKAGES for m in _modules(pkg)] + ["onlineca.errors"])
def test_pure_module_loads_no_io_library(module: str) -> None:
    """import-linter sees import statements; this sees what importing really loads, parent
    ``__init__`` files included."""
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} loads {out.stdout.strip()}"


def test_every_exception_class_is_in_errors_and_under_the_root() -> None:
    outside = []
    for path in _source_files():
        if path == SRC / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                if any(b.endswith(("Error", "Exception", "Failure")) or b in {"Exception", "BaseException"}
                       for b in bases):
                    outside.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert outside == [], "exception classes outside errors.py"
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.OnlineCAError), value


_CODE_LIKE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$|^[A-Z]{2,}$")
_CODE_CALLS = {"ESTCodedError", "protocol_error", "finding", "_hit"}


def _raised_codes() -> dict[str, list[str]]:
    """Every code literal at a raise site, in a finding, or as an error-code constant."""
    found: dict[str, list[str]] = {}

    def add(code: str, where: str) -> None:
        found.setdefault(code, []).append(where)

    for path in _source_files():
        tree = ast.parse(path.read_text())
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func).rsplit(".", 1)[-1]
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                        add(kw.value.value, f"{rel}:{node.lineno}")
                if (name in _CODE_CALLS and node.args and isinstance(node.args[0], ast.Constant)
                        and isinstance(node.args[0].value, str) and _CODE_LIKE.match(node.args[0].value)):
                    add(node.args[0].value, f"{rel}:{node.lineno}")
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = ast.unparse(node.targets[0])
                if ((target == "code" or re.fullmatch(r"E_[A-Z_]+", target)) and isinstance(node.value, ast.Constant)
                        and isinstance(node.value.value, str)):
                    add(node.value.value, f"{rel}:{node.lineno}")
    return found


def test_every_code_raised_or_reported_is_registered() -> None:
    missing = {code: where for code, where in _raised_codes().items() if code not in errors.CODES}
    assert missing == {}, "codes not in errors.CODES (add each with its hop and one fix sentence)"


def test_every_code_has_exactly_one_fix_sentence() -> None:
    for code in errors.CODES.values():
        if code.name in ("ONLINECA_ERROR", "EST_ERR_NONE"):
            continue
        assert code.fix and code.fix[0].isupper() and code.fix.endswith("."), code
        # one sentence: no full stop followed by a new sentence (config keys and versions may hold dots)
        assert not re.search(r"[.!?] [A-Z]", code.fix), f"{code.name}: more than one sentence"
    # ... and no second table of fix texts anywhere else
    for path in _source_files():
        if path == SRC / "errors.py":
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and ast.unparse(stmt.targets[0]) == "hint":
                        pytest.fail(f"{path.relative_to(ROOT)}:{stmt.lineno}: class-level hint; use errors.CODES")


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    cmd = [str(lint)] if lint.exists() else ["lint-imports"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


BASELINE = ROOT / "tests" / "mypy-baseline.json"


def mypy_counts() -> dict[str, int]:
    """mypy --strict errors per top-level package of onlineca (pyproject.toml's [tool.mypy])."""
    out = subprocess.run([sys.executable, "-m", "mypy", "src/onlineca"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    counts: dict[str, int] = {}
    for line in out.stdout.splitlines():
        m = re.match(r"src/onlineca/([^/:]+?)(?:\.py)?[/:]", line)
        if m and ": error:" in line:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    assert out.returncode in (0, 1), out.stdout[-2000:] + out.stderr[-2000:]
    return counts


@pytest.mark.slow
def test_mypy_strict_only_gets_better() -> None:
    """Each package may have at most its baseline of mypy --strict errors (0 for the pure cores);
    when a package gets better, lower its number in tests/mypy-baseline.json in the same change."""
    baseline: dict[str, int] = json.loads(BASELINE.read_text())
    counts = mypy_counts()
    for pure in (*PURE_PACKAGES, "errors"):
        assert baseline.get(pure, 0) == 0, f"the baseline of {pure} must be 0"
    worse = {pkg: (n, baseline.get(pkg, 0)) for pkg, n in counts.items() if n > baseline.get(pkg, 0)}
    assert worse == {}, f"more mypy --strict errors than the baseline (package: (now, baseline)): {worse}"
    better = {pkg: (counts.get(pkg, 0), n) for pkg, n in baseline.items() if counts.get(pkg, 0) < n}
    assert better == {}, f"fewer errors than the baseline: lower tests/mypy-baseline.json to {better}"


if __name__ == "__main__":  # python tests/test_architecture.py: print the current counts
    print(json.dumps(dict(sorted(mypy_counts().items())), indent=2))
