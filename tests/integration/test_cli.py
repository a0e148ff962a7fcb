"""The ``onlineca`` command as a whole: one error path (an ``OnlineCAError`` is one ``error:`` line
and exit 1, in-process under click's runner and in a real process), bad usage exits 2, a global
option after the command says where it goes, and ``--help`` lists every command group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import free_port

from onlineca import pki
from onlineca.cli import COMMANDS, GLOBAL_OPTIONS, main_group
from onlineca.cli.app import error_line
from onlineca.errors import ESTCodedError


def _process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onlineca", *args], capture_output=True, text=True, timeout=60)


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_command_failure_is_one_error_line_and_exit_1_in_process(tmp_path: Path) -> None:
    result = CliRunner().invoke(main_group, ["--data-dir", str(tmp_path), "ca", "users", "remove", "bob"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # not an uncaught error
    assert result.stdout == ""
    line = _one_error_line(result.stderr)
    assert line == "error: no user 'bob' (List them with 'onlineca ca users list'.)"


def test_a_command_failure_is_one_error_line_and_exit_1_in_a_process(tmp_path: Path) -> None:
    proc = _process("--data-dir", str(tmp_path), "ca", "requests", "show", "1")
    assert proc.returncode == 1 and proc.stdout == ""
    assert _one_error_line(proc.stderr).startswith(f"error: no CA in {tmp_path / 'ca'} (Run 'onlineca ca init'")


def test_a_bad_configuration_file_fails_through_the_same_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ra]\nport = -1\n")
    proc = _process("--config", str(bad), "config", "example")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "ra.port" in _one_error_line(proc.stderr)


def test_an_est_failure_keeps_its_libest_number_and_name(tmp_path: Path) -> None:
    key = pki.generate_key("ec", 256)
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(pki.cert_pem(pki.build_certificate(subject="CN=nobody", public_key=key.public_key(),
                                                          issuer_key=key)))
    proc = _process("est", "cacerts", "--server", f"https://127.0.0.1:{free_port()}", "--cafile", str(cafile))
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr).startswith("error: rv = 43 (EST_ERR_IP_CONNECT): https://127.0.0.1:")


def test_error_line_forms() -> None:
    assert error_line(ESTCodedError("EST_ERR_AUTH_FAIL", "401 from the server", hint="")) == \
        "error: rv = 22 (EST_ERR_AUTH_FAIL): 401 from the server"


@pytest.mark.parametrize("args", [
    ["ca", "requests", "show", "not-a-number"],   # a bad argument
    ["ca", "no-such-command"],
    ["est", "cacerts", "--server", "https://127.0.0.1:1"],  # neither --cafile nor --insecure-bootstrap
])
def test_bad_usage_exits_2(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main_group, ["--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert "Error:" in result.stderr and "Traceback" not in result.output


def test_a_global_option_after_the_command_says_where_it_goes(tmp_path: Path) -> None:
    result = CliRunner().invoke(main_group, ["ca", "serve", "--config", str(tmp_path / "x.toml")])
    assert result.exit_code == 2
    assert ("global options such as --config go before the command: onlineca --config FILE ca serve"
            in result.stderr)
    proc = _process("capf", "devices", "list", "--data-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "go before the command: onlineca --data-dir DIR capf devices list" in proc.stderr
    # The hint knows every root option (but --version and --help, which end at the root).
    assert set(GLOBAL_OPTIONS) == {o for p in main_group.params for o in p.opts} - {"--version", "-h", "--help"}
    # An option no level knows is click's plain usage error.
    other = CliRunner().invoke(main_group, ["ca", "serve", "--colour"])
    assert other.exit_code == 2 and "global options" not in other.stderr


def test_help_lists_every_command_group() -> None:
    result = CliRunner().invoke(main_group, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMANDS) == {"ca", "ra", "capf", "est", "phone", "diagnose", "logs", "config", "demo", "admin",
                                       "service", "keys", "backup", "manpage"}
    for name in COMMANDS:  # each entry of the table loads, and its own --help works
        sub = CliRunner().invoke(main_group, [name, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.stdout, (name, sub.output)


def test_help_loads_no_command_module() -> None:
    code = ("import sys; from onlineca.cli import main_group\n"
            "try:\n    main_group(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('onlineca.cli.') and m != 'onlineca.cli.app'"
            " or m in ('onlineca.config', 'pydantic')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
