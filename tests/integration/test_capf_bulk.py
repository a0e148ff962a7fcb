"""The inventory's bulk paths at small sizes (correctness only, never a timing).

``capf devices import`` checks and adds lines in batches (one query for which names exist, the
new devices written by batched INSERTs) and still names every bad line by its number, across
batches, importing nothing then; ``capf devices list`` streams in name order with --limit and
--offset, as JSON or (more than 1,000 devices) as aligned lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlineca.cli import main_group
from onlineca.store import devices_csv

HEADER = "DEVICE NAME,MODEL,CERTIFICATE OPERATION,AUTHENTICATION MODE,KEY ORDER,RSA KEY SIZE (BITS)\n"


def _cli(db_url: str, tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    env = {"ONLINECA_DATABASE_URL": db_url, "ONLINECA_DATA_DIR": str(tmp_path)}
    return CliRunner().invoke(main_group, ["capf", *args], env=env, catch_exceptions=False)


def _line(i: int, key_order: str = "RSA Only") -> str:
    return f"SEP{i:012X},CP-8845,Install/Upgrade,By Null String,{key_order},2048\n"


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices_csv, "IMPORT_BATCH", 3)  # so that a few lines cross several batches


def test_import_in_batches_then_list_with_limit_and_offset(db_url: str, tmp_path: Path, small_batches: None) -> None:
    names = [f"SEP{i:012X}" for i in range(10)]
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text(HEADER + "".join(_line(i) for i in reversed(range(10))))  # not in name order
    r = _cli(db_url, tmp_path, "devices", "import", str(csv_file))
    assert r.exit_code == 0, r.output
    assert "10 added, 0 updated" in r.output

    rows = json.loads(_cli(db_url, tmp_path, "devices", "list", "--json").output)
    assert [d["name"] for d in rows] == names
    assert all(d["status"] == "CERT_STATUS_OPERATION_PENDING" and d["model"] == "CP-8845" for d in rows)
    page = json.loads(_cli(db_url, tmp_path, "devices", "list", "--json", "--limit", "3", "--offset", "4").output)
    assert [d["name"] for d in page] == names[4:7]
    assert page == rows[4:7]  # the same description as the whole list's
    assert json.loads(_cli(db_url, tmp_path, "devices", "list", "--json", "--offset", "10").output) == []
    table = _cli(db_url, tmp_path, "devices", "list", "--offset", "8").output
    assert "2 device(s)" in table and names[8] in table and names[9] in table and names[7] not in table

    # Upsert: existing devices (found in each batch's one query) are updated, new ones added.
    csv_file.write_text(HEADER + _line(3, "EC Only").replace(",2048", ",") + _line(42))
    r = _cli(db_url, tmp_path, "devices", "import", str(csv_file))
    assert r.exit_code == 0 and "1 added, 1 updated" in r.output, r.output
    shown = json.loads(_cli(db_url, tmp_path, "devices", "show", names[3], "--json").output)
    assert shown["key_order"] == "KEYORDER_EC_ONLY"


def test_import_names_every_bad_line_across_batches_and_adds_nothing(db_url: str, tmp_path: Path,
                                                                    small_batches: None) -> None:
    lines = [_line(i) for i in range(8)]
    lines[1] = _line(1, "DSA Only")                    # file line 3, first batch
    lines[5] = "not a name!,CP-8845,,,,\n"             # file line 7, second batch
    lines.append(_line(2))                             # file line 10: a name also on line 4
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(HEADER + "".join(lines))
    r = _cli(db_url, tmp_path, "devices", "import", str(csv_file))
    assert r.exit_code == 1, r.output
    assert f"{csv_file}:3: key_order: 'DSA Only'" in r.output
    assert f"{csv_file}:7: name: 'not a name!'" in r.output
    assert f"{csv_file}:10: SEP000000000002 is also on line 4" in r.output
    assert "nothing imported (3 bad line(s))" in r.output
    assert json.loads(_cli(db_url, tmp_path, "devices", "list", "--json").output) == []


def test_import_add_mode_refuses_an_existing_device(db_url: str, tmp_path: Path, small_batches: None) -> None:
    csv_file = tmp_path / "d.csv"
    csv_file.write_text(HEADER + _line(1))
    assert _cli(db_url, tmp_path, "devices", "import", str(csv_file)).exit_code == 0
    csv_file.write_text(HEADER + _line(0) + _line(1) + _line(2) + _line(3))
    r = _cli(db_url, tmp_path, "devices", "import", "--mode", "add", str(csv_file))
    assert r.exit_code == 1 and f"{csv_file}:3: SEP000000000001 already exists" in r.output, r.output
    assert [d["name"] for d in json.loads(_cli(db_url, tmp_path, "devices", "list", "--json").output)] == [
        "SEP000000000001"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_long_list_streams_as_aligned_lines(db_url: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "many.csv"
    csv_file.write_text(HEADER + "".join(_line(i) for i in range(1005)))
    assert _cli(db_url, tmp_path, "devices", "import", str(csv_file)).exit_code == 0
    out = _cli(db_url, tmp_path, "devices", "list").output.splitlines()
    assert out[0] == "1005 device(s)"
    assert out[1].split() == ["Name", "Model", "Profile", "Operation", "Completes", "By", "Status", "Auth", "Keys",
                              "LSC", "expires"]
    assert [line.split()[0] for line in out[2:]] == [f"SEP{i:012X}" for i in range(1005)]
    assert out[2].index("CP-8845") == out[1].index("Model")  # aligned under its title
