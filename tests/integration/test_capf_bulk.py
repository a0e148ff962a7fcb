"""The inventory's bulk paths at small sizes (correctness only, never a timing).

``capf devices import`` checks and adds lines in batches (one query for which names exist, the
new devices written by batched INSERTs) and still names every bad line by its number, across
batches, importing nothing then; ``capf devices list`` streams in name order with --limit and
--offset, as JSON or (more than 1,000 devices) as aligned lines."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from capf_fixtures import T0
from click.testing import CliRunner
from sqlalchemy import select

from onlineca.cli import main_group
from onlineca.errors import CSVImportError
from onlineca.policy.capf import as_utc, auth_string_matches
from onlineca.store import Database, Device, DeviceEvent, auth_hashing as cpu_pool, devices as inv, devices_csv

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


FULL_HEADER = ("DEVICE NAME,DESCRIPTION,MODEL,PROFILE,CERTIFICATE OPERATION,AUTHENTICATION MODE,AUTHENTICATION STRING,"
               "KEY ORDER,RSA KEY SIZE (BITS),EC KEY SIZE (BITS),OPERATION COMPLETES BY\n")
MIXED = [  # new devices with every kind of setting, as add_device and the bulk path both see them
    "SEP000000000A01,desk,CP-8845,phones,Install/Upgrade,By Authentication String,1234567,EC Only,,384,\n",
    "SEP000000000A02,,CP-7841,,,,,,,,\n",
    "SEP000000000A03,lobby,,phones,Delete,By Null String,,,3072,,2026:01:05:12\n",
    "SEP000000000A04,,,,Install/Upgrade,,,EC Preferred RSA Backup,4096,256,\n",
    # the same combinations again, with other names, descriptions and auth strings (checked once, reused)
    "SEP000000000A05,hall,CP-8845,phones,Install/Upgrade,By Authentication String,7654321,EC Only,,384,\n",
    "SEP000000000A06,back\\slash\ttab,CP-7841,,,,,,,,\n",  # COPY's escapes
    "SEP000000000A07,,,phones,Delete,By Null String,,,3072,,2026:01:05:12\n",
    "SEP000000000A08,stairs,,phones,Delete,By Null String,,,3072,,2026:01:05:12\n",
    "SEP000000000A09,cellar,,,Install/Upgrade,,,EC Preferred RSA Backup,4096,256,\n",
]


def _same(value: object) -> object:
    """A timestamp as one string whichever database read it (SQLite: naive UTC)."""
    return as_utc(value).isoformat() if isinstance(value, dt.datetime) else value


def _rows_and_trail(db: Database) -> tuple[list[dict[str, object]], list[tuple[object, ...]]]:
    with db.session() as s:
        devices = []
        for d in s.scalars(select(Device).order_by(Device.name)):
            row = {c.key: _same(getattr(d, c.key)) for c in Device.__table__.columns if c.key != "id"}
            row["auth_string_hash"] = row["auth_string_hash"] is not None  # salted: differs each time
            devices.append(row)
        trail = [(e.device_name, e.event, e.detail, e.actor, _same(e.at))
                 for e in s.scalars(select(DeviceEvent).order_by(DeviceEvent.device_name, DeviceEvent.id))]
    return devices, trail


def test_the_bulk_path_writes_what_add_device_writes(db_url: str, tmp_path: Path, small_batches: None) -> None:
    def fresh(url: str) -> Database:
        db = Database(url)
        db.migrate()
        with db.session() as s:
            inv.add_profile(s, "phones", deadline_days=3)
        return db

    one_by_one = fresh(f"sqlite:///{tmp_path / 'one.db'}")
    cells = list(devices_csv.CSV_COLUMNS)[:11]
    with one_by_one.session() as s:
        for line in MIXED:
            values = dict(zip(cells, line.rstrip("\n").split(","), strict=True))
            settings = {devices_csv.CSV_COLUMNS[k]: v.strip() for k, v in values.items() if k != "DEVICE NAME"}
            inv.add_device(s, values["DEVICE NAME"], actor="import", now=T0, **settings)  # type: ignore[misc]
    bulk = fresh(db_url)
    with bulk.session() as s:
        assert devices_csv.import_csv(s, FULL_HEADER + "".join(MIXED), actor="import", now=T0).added == [
            f"SEP000000000A0{i}" for i in range(1, 10)]
    try:
        want, got = _rows_and_trail(one_by_one), _rows_and_trail(bulk)
        for rows in (want[0], got[0]):
            for row in rows:
                row["profile_id"] = row["profile_id"] is not None  # ids of two databases
        assert got == want
    finally:
        one_by_one.dispose()
        bulk.dispose()


def test_a_repeated_combination_names_each_bad_line_with_its_own_error(db_url: str, small_batches: None) -> None:
    # Each distinct combination of cells is checked once: a bad one is still named on every line,
    # and a line's own bad name or description is named even where its combination is good.
    lines = ["SEP000000000B01,,CP-8845,,Install/Upgrade,,,RSA Only,2048,,\n",
             "SEP000000000B02,,CP-8845,,Install/Upgrade,,,RSA Only,1000,,\n",
             "not a name!,,CP-8845,,Install/Upgrade,,,RSA Only,2048,,\n",
             "SEP000000000B04," + "d" * 257 + ",CP-8845,,Install/Upgrade,,,RSA Only,2048,,\n",
             "SEP000000000B05,,CP-8845,,Install/Upgrade,,,RSA Only,1000,,\n",
             "SEP000000000B06,fine,CP-8845,,Install/Upgrade,,,RSA Only,2048,,\n"]
    db = Database(db_url)
    db.migrate()
    try:
        with db.session() as s, pytest.raises(CSVImportError) as caught:
            devices_csv.import_csv(s, FULL_HEADER + "".join(lines), now=T0)
        with db.session() as s:
            bad = [(n, m.split(":")[0]) for n, m in caught.value.errors]
            assert bad == [(3, "rsa_key_size"), (4, bad[1][1]), (5, "description"), (6, "rsa_key_size")]
            assert bad[1][1] != "rsa_key_size"  # the name's own error
            assert s.scalars(select(Device)).first() is None
    finally:
        db.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_auth_strings_are_hashed_on_every_core_and_a_bad_one_is_named(db_url: str, tmp_path: Path) -> None:
    lines = [f"SEP{i:012X},,,,Install/Upgrade,By Authentication String,{1000000 + i},,,,\n"
             for i in range(cpu_pool.POOL_MIN + 2)]  # enough to start the pool
    csv_file = tmp_path / "auth.csv"
    csv_file.write_text(FULL_HEADER + "".join(lines[:3]) + lines[3].replace("1000003", "12ab") + "".join(lines[4:]))
    r = _cli(db_url, tmp_path, "devices", "import", str(csv_file))
    assert r.exit_code == 1 and f"{csv_file}:5: auth_string" in r.output and "1 bad line(s)" in r.output, r.output
    assert "12ab" not in r.output.replace(f"{csv_file}:5: auth_string: '12ab'", "")  # only where it is named

    csv_file.write_text(FULL_HEADER + "".join(lines))
    assert _cli(db_url, tmp_path, "devices", "import", str(csv_file)).exit_code == 0
    db = Database(db_url)
    try:
        with db.session() as s:
            stored = {d.name: d.auth_string_hash for d in s.scalars(select(Device))}
    finally:
        db.dispose()
    assert len(stored) == len(lines)
    for i in range(len(lines)):
        assert auth_string_matches(stored[f"SEP{i:012X}"], str(1000000 + i))
    assert len(set(stored.values())) == len(lines)  # each with its own salt
