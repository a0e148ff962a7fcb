"""``onlineca capf``: the CAPF service (serve), its device inventory (devices, profiles), reports
and renewal runs.

A thin layer over ``capf.service``, the service layer (``service.devices``, ``service.reports``:
the same functions the administration console calls, so both record the same audit entries) and
``capf.scheduler``: it parses options, opens the configured database (migrating it) and prints
rich tables or ``--json``; failures are ``OnlineCAError`` for the root command to report (one
line, exit 1).
Auth strings are kept as salted hashes: one is printed once, by ``devices add
--generate-auth-string``, and never again; ``devices export --with-auth-strings`` writes the hashes
(file mode 0600); credentials never.

``capf serve``: at first start CAPF enrolls its own TLS certificate through the RA (``[capf]
ra_url``, ``ra_user``, ``ra_password``, ``ra_trust_store``), so the RA must be up then; later an
RA that is down only makes phones retry.  Point a phone (``onlineca phone ...``) at the printed
host and port, trusting the RA's root.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import sys
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from onlineca.cli.app import AppContext, exit_on_finding, read_only_config, serve_until_signal, workers_option
from onlineca.errors import CAPFError, CSVImportError

if TYPE_CHECKING:
    from onlineca.capf.service import RunningCAPF


@contextmanager
def _services(ctx: click.Context, read_only: bool = False) -> Iterator[tuple[Any, Any]]:
    """The service layer on the configured database (migrated first) and the command line's actor;
    ``read_only``: a database that does not exist yet is read as an empty one, not created."""
    from onlineca.service.core import Services, cli_actor

    config = read_only_config(ctx.obj.config) if read_only else ctx.obj.config
    svc = Services(config, ctx.obj.config_path).migrate()
    try:
        yield svc, cli_actor()
    finally:
        svc.close()


_RELATIVE = re.compile(r"\+?(\d+)([dhw])")


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``2027-01-31``, ``2027-01-31T12:00`` (UTC), or relative to now: ``30d``, ``+12h``, ``2w``."""
    now = now or dt.datetime.now(dt.UTC)
    m = _RELATIVE.fullmatch(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now + {"d": dt.timedelta(days=n), "h": dt.timedelta(hours=n), "w": dt.timedelta(weeks=n)}[unit]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date (2027-01-31) or a duration (30d, 12h, 2w)") from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _duration(text: str) -> dt.timedelta:
    now = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    if not _RELATIVE.fullmatch(text.strip()):
        raise click.BadParameter(f"{text!r} is not a duration (30d, 12h, 2w)")
    return parse_when(text, now) - now


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console  # here: a command that prints no table never imports rich
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@click.group("capf")
def capf() -> None:
    """The CAPF service and its device inventory."""


@capf.command("serve")
@workers_option
@click.option("--host", default=None, help="Default from [capf] host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default from [capf] port (3804).")
@click.option("--no-scheduler", is_flag=True, help="Do not run renewal passes (another node runs them).")
@click.pass_obj
def serve(app: AppContext, host: str | None, port: int | None, no_scheduler: bool) -> None:
    """Serve the device protocol over TLS until interrupted (SIGINT/SIGTERM)."""
    # The server's modules are imported where it starts: a --workers supervisor never needs them.

    def start() -> Awaitable[RunningCAPF]:
        from onlineca.capf.service import start_capf
        return start_capf(app.config, app.data_dir, app.log_dir, host=host, port=port, log_format=app.log_format,
                          maintenance=not no_scheduler)

    def describe(running: RunningCAPF) -> str:
        cert = app.config.capf.tls_cert or running.enroller.paths.capf_cert
        return (f"CAPF serving {running.host}:{running.port} (TLS certificate {cert}; trace in "
                f"{app.log_dir / 'capf.log'}; RA {app.config.capf.ra_url})")

    serve_until_signal(start, describe, app.reload_config)


# ---- devices -------------------------------------------------------------------------------

def _device_options(f: Any) -> Any:
    options = [
        click.option("--model", help="Phone model, e.g. CP-8845."),
        click.option("--description"),
        click.option("--profile", help="Profile whose defaults the device takes ('' for none)."),
        click.option("--operation", help="'No Pending Operation', 'Install/Upgrade', 'Delete', 'Troubleshoot'."),
        click.option("--auth-mode", help="'By Authentication String', 'By Null String', "
                     "'By Existing Certificate (Precedence to LSC)' or '... MIC)' ('' = profile's)."),
        click.option("--auth-string", help="4 to 10 digits."),
        click.option("--key-order", help="'RSA Only', 'EC Only', 'EC Preferred RSA Backup' ('' = profile's)."),
        click.option("--rsa-key-size", help="512, 1024, 2048, 3072 or 4096 ('' = profile's)."),
        click.option("--ec-key-size", help="256, 384 or 521 ('' = profile's)."),
        click.option("--deadline", help="Operation Completes By, YYYY:MM:DD:HH (default: 10 days ahead)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _given(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


@capf.group()
def devices() -> None:
    """Add, list, show, change, delete, import and export devices."""


@devices.command("add")
@click.argument("name")
@_device_options
@click.option("--generate-auth-string", is_flag=True,
              help="By Authentication String with a new random string, printed once (it is kept only as a hash).")
@click.pass_context
def devices_add(ctx: click.Context, /, name: str, generate_auth_string: bool, **settings: Any) -> None:
    """Add device NAME (e.g. SEP74A02FC0A675).

    An auth string given without an auth mode means 'By Authentication String': a string nobody
    asks for would leave the device open to the null string of its profile.  Auth strings are
    kept as salted hashes: no command shows one again.
    """
    from onlineca.service import devices as service
    if generate_auth_string:
        if settings.get("auth_string"):
            raise click.UsageError("give --auth-string or --generate-auth-string, not both")
        settings["auth_mode"] = settings.get("auth_mode") or "By Authentication String"
    if settings.get("auth_string") and settings.get("auth_mode") is None:
        settings["auth_mode"] = "By Authentication String"
    with _services(ctx) as (svc, actor):
        device, generated = service.add_device(svc, actor, name, generate_auth_string=generate_auth_string,
                                               **_given(**settings))
        click.echo(f"added {device['name']}")
        if generated:
            click.echo(f"auth string {generated} (shown once: it is kept only as a hash)")


@devices.command("set")
@click.argument("name")
@_device_options
@click.pass_context
def devices_set(ctx: click.Context, /, name: str, **settings: Any) -> None:
    """Change device NAME (only the options given)."""
    from onlineca.service import devices as service
    given = _given(**settings)
    if not given:
        raise click.UsageError("nothing to change: give at least one option")
    with _services(ctx) as (svc, actor):
        device = service.change_device(svc, actor, name, **given)
        click.echo(f"changed {device['name']}")


def _filter_options(f: Any) -> Any:
    options = [
        click.option("--status", help="Certificate status (words or identifier)."),
        click.option("--operation"),
        click.option("--profile"),
        click.option("--name", "name_glob", help="Name pattern, e.g. 'SEP74A0*'."),
        click.option("--model"),
        click.option("--lsc-expires-before", help="Date (2027-01-31) or from now (30d)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _make_filter(status: str | None, operation: str | None, profile: str | None, name_glob: str | None,
                 model: str | None, lsc_expires_before: str | None) -> Any:
    from onlineca.service.devices import DeviceQuery
    return DeviceQuery(status=status, operation=operation, profile=profile, name=name_glob, model=model,
                        lsc_expires_before=parse_when(lsc_expires_before) if lsc_expires_before else None)


_LIST_COLUMNS = ["Name", "Model", "Profile", "Operation", "Completes By", "Status", "Auth", "Keys", "LSC expires"]
# Up to this many devices, one table; more are streamed as aligned lines (memory stays flat).
_TABLE_ROWS = 1000


def _list_cells(r: dict[str, Any]) -> list[Any]:
    return [r["name"], r["model"], r["profile"], r["operation_display"], r["operation_completes_by"],
            r["status_display"], r["auth_mode"], f'{r["key_order"]} {r["rsa_key_size"]}/{r["ec_key_size"]}',
            (r["lsc"] or {}).get("not_after")]


def _stream_lines(title: str, rows: Any) -> None:
    """A long list as plain aligned lines, written as they come: widths from the first rows."""
    out = sys.stdout
    out.write(title + "\n")
    widths: list[int] | None = None
    head: list[list[str]] = []

    def emit(cells: list[str]) -> None:
        assert widths is not None
        out.write("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n")

    for r in rows:
        cells = ["" if v is None else str(v) for v in _list_cells(r)]
        if widths is None:
            head.append(cells)
            if len(head) < 100:
                continue
            widths = [max(len(c) for c in col) for col in zip(_LIST_COLUMNS, *head, strict=True)]
            emit(_LIST_COLUMNS)
            for h in head:
                emit(h)
            continue
        emit(cells)
    if widths is None:
        widths = [max(len(c) for c in col) for col in zip(_LIST_COLUMNS, *head, strict=True)]
        emit(_LIST_COLUMNS)
        for h in head:
            emit(h)
    out.flush()


@devices.command("list")
@_filter_options
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many devices (by name) first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@click.pass_context
def devices_list(ctx: click.Context, /, limit: int | None, offset: int, as_json: bool, **filters: Any) -> None:
    """List devices matching every filter given, by name; streamed, so any inventory size lists
    in flat memory (more than 1,000 are written as aligned lines rather than one table)."""
    from onlineca.service import devices as service
    with _services(ctx, read_only=True) as (svc, actor):
        total, rows = service.iter_devices(svc, actor, _make_filter(**filters), limit=limit, offset=offset)
        shown = max(0, min(total - offset, limit if limit is not None else total))
        if as_json:  # one JSON array, an element at a time
            out = sys.stdout
            first = True
            for r in rows:
                element = json.dumps(r, indent=2, sort_keys=False, default=str).replace("\n", "\n  ")
                out.write(("[\n  " if first else ",\n  ") + element)
                first = False
            out.write("[]\n" if first else "\n]\n")
            out.flush()
            return
        if shown > _TABLE_ROWS:
            _stream_lines(f"{shown} device(s)", rows)
            return
        _table(f"{shown} device(s)", _LIST_COLUMNS, [_list_cells(r) for r in rows])


@devices.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.option("--secrets", is_flag=True, help="Say whether an auth string is set (kept as a hash, never shown).")
@click.pass_context
def devices_show(ctx: click.Context, name: str, as_json: bool, secrets: bool) -> None:
    """One device: its effective policy, LSC history and recent events."""
    from onlineca.service import devices as service
    with _services(ctx, read_only=True) as (svc, actor):
        data = service.get_device(svc, actor, name, with_secret=secrets)
    if as_json:
        _print_json(data)
        return
    for key in ("name", "model", "description", "profile", "operation_display", "operation_completes_by",
                "status_display", "auth_mode", "key_order", "rsa_key_size", "ec_key_size", "renewal_due_at",
                "renewal_attempts", "client_flow") + (("auth_string_set",) if secrets else ()):
        click.echo(f"{key:24} {data.get(key)}")
    for line in data["policy_log"]:
        click.echo(line)
    _table("LSC history", ["Serial", "State", "Expires", "Installed", "Issuer"],
           [[c["serial"], c["state"], c["not_after"], c["installed_at"], c["issuer"]] for c in data["lsc_history"]])
    _table("Events", ["At", "Actor", "Event", "Detail"],
           [[e["at"], e["actor"], e["event"], e["detail"]] for e in data["events"]])


@devices.command("delete")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def devices_delete(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Delete devices (their LSC history goes too; the audit trail stays)."""
    from onlineca.service import devices as service
    with _services(ctx) as (svc, actor):
        service.delete_devices(svc, actor, list(names))
    click.echo(f"deleted {len(names)} device(s)")


@devices.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--mode", type=click.Choice(["upsert", "add"]), default="upsert", show_default=True,
              help="'add' refuses devices that exist; 'upsert' updates them.")
@click.pass_context
def devices_import(ctx: click.Context, file: Any, mode: str) -> None:
    """Import a bulk CSV file (as written by 'devices export'); all lines or none."""
    from onlineca.service import devices as service
    with _services(ctx) as (svc, actor):
        name = getattr(file, "name", "-")
        try:
            result = service.import_csv(svc, actor, file, mode=mode, trail="cli-import")
        except CSVImportError as exc:
            for line, message in exc.errors:  # one line each, as a compiler names them: file:line: message
                click.echo(f"{name}:{line}: {message}", err=True)
            raise CAPFError(f"nothing imported ({len(exc.errors)} bad line(s))",
                            hint="Fix the lines named above and import the whole file again.") from None
        except UnicodeDecodeError as exc:
            raise CAPFError(f"{name}: not UTF-8 text: {exc}",
                            hint="Save the file as UTF-8, as 'onlineca capf devices export' writes it.") from None
    click.echo(f"imported: {len(result.added)} added, {len(result.updated)} updated")


@devices.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=Path("-"))
@_filter_options
@click.option("--with-auth-strings", is_flag=True,
              help="Include the AUTHENTICATION STRING column (the strings' salted hashes, which import as they are).")
@click.pass_context
def devices_export(ctx: click.Context, /, file: Path, with_auth_strings: bool, **filters: Any) -> None:
    """Write the devices matching the filters as a bulk CSV file (FILE or stdout), mode 0600.

    Without --with-auth-strings the AUTHENTICATION STRING column is left out, so importing the
    file back keeps each device's string."""
    from onlineca.service import devices as service
    with _services(ctx, read_only=True) as (svc, actor):
        filt = _make_filter(**filters)
        if str(file) == "-":
            service.export_csv(svc, actor, sys.stdout, filt, with_secrets=with_auth_strings)
            return
        try:  # created 0600 whatever the umask (it may hold the hashes), never through a link
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise CAPFError(f"cannot write {file}: {exc.strerror or exc}") from None
        with open(fd, "w", encoding="utf-8", newline="") as out:
            n = service.export_csv(svc, actor, out, filt, with_secrets=with_auth_strings)
    click.echo(f"exported {n} device(s) to {file}", err=True)


# ---- profiles ------------------------------------------------------------------------------

def _profile_options(f: Any) -> Any:
    options = [
        click.option("--description"),
        click.option("--auth-mode"), click.option("--key-order"),
        click.option("--rsa-key-size", type=int), click.option("--ec-key-size", type=int),
        click.option("--deadline-days", type=int, help="Default Operation Completes By, in days (10)."),
        click.option("--renewal-enabled/--no-renewal", default=None),
        click.option("--renewal-fraction", type=float, help="Renew at this fraction of the LSC's life (0.667)."),
        click.option("--renewal-days-before", type=int, help="Renew this many days before expiry instead."),
        click.option("--renewal-jitter", type=float, help="Open the window up to this fraction of the life earlier."),
        click.option("--auto-enroll-mic/--no-auto-enroll-mic", default=None,
                     help="Grant Install/Upgrade to devices with a valid MIC."),
        click.option("--mic-trust-store", help="PEM file of manufacturer CAs for MICs."),
        click.option("--auto-enroll-name-pattern", help="Grant Install/Upgrade to names matching, e.g. 'SEP*'."),
        click.option("--issuer", type=click.Choice(["online-ca", "capf"]),
                     help="Who signs the LSCs: the online CA through the RA (default) or CAPF's own CA."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@capf.group()
def profiles() -> None:
    """Profiles: defaults for devices, renewal and automatic-enrollment policy."""


@profiles.command("add")
@click.argument("name")
@_profile_options
@click.pass_context
def profiles_add(ctx: click.Context, /, name: str, **settings: Any) -> None:
    from onlineca.service import devices as service
    with _services(ctx) as (svc, actor):
        service.add_profile(svc, actor, name, **_given(**settings))
    click.echo(f"added profile {name}")


@profiles.command("set")
@click.argument("name")
@_profile_options
@click.pass_context
def profiles_set(ctx: click.Context, /, name: str, **settings: Any) -> None:
    from onlineca.service import devices as service
    with _services(ctx) as (svc, actor):
        service.change_profile(svc, actor, name, **_given(**settings))
    click.echo(f"changed profile {name}")


@profiles.command("delete")
@click.argument("name")
@click.pass_context
def profiles_delete(ctx: click.Context, name: str) -> None:
    from onlineca.service import devices as service
    with _services(ctx) as (svc, actor):
        service.delete_profile(svc, actor, name)
    click.echo(f"deleted profile {name}")


@profiles.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def profiles_list(ctx: click.Context, as_json: bool) -> None:
    from onlineca.service import devices as service
    with _services(ctx, read_only=True) as (svc, actor):
        rows = service.list_profiles(svc, actor)
    if as_json:
        _print_json(rows)
        return
    _table(f"{len(rows)} profile(s)", ["Name", "Auth", "Key order", "RSA", "EC", "Days", "Renewal", "Auto-enroll"],
           [[r["name"], r["auth_mode"], r["key_order"], r["rsa_key_size"], r["ec_key_size"], r["deadline_days"],
             ("off" if not r["renewal"]["enabled"] else
              f'{r["renewal"]["days_before"]}d before' if r["renewal"]["days_before"] else
              f'at {r["renewal"]["fraction"]:.3f}') + f' ±{r["renewal"]["jitter"]}',
             ", ".join(x for x in ("MIC" if r["auto_enrollment"]["by_mic"] else "",
                                   r["auto_enrollment"]["name_pattern"]) if x)] for r in rows])


# ---- report and renewal --------------------------------------------------------------------

@capf.command("report")
@click.option("--expiring-within", default="30d", show_default=True, help="Expiring: LSCs ending within this.")
@click.option("--grace", default="10d", show_default=True, help="Overdue: renewal window open longer than this.")
@click.option("--stale-after", default="1d", show_default=True, help="Stale: issued, not installed after this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def report_cmd(ctx: click.Context, expiring_within: str, grace: str, stale_after: str, as_json: bool) -> None:
    """Devices by status, expiring LSCs, overdue devices, stale LSCs.  Exit 1 if anything is overdue."""
    from onlineca.service import reports
    with _services(ctx, read_only=True) as (svc, actor):
        data = reports.capf_report(svc, actor, expiring_within=_duration(expiring_within), grace=_duration(grace),
                                   stale_after=_duration(stale_after))
    if as_json:
        _print_json(data)
    else:
        _table("Devices by certificate status", ["Status", "Identifier", "Devices"],
               [[r["display"], f'{r["status"]}:{r["code"]}', r["devices"]] for r in data["by_status"]])
        _table(f"LSCs expiring within {expiring_within}", ["Device", "Serial", "Expires", "Renewal pending", "Status"],
               [[r["name"], r["lsc_serial"], r["lsc_not_after"], "yes" if r["renewal"] else "", r["status"]]
                for r in data["expiring"]])
        _table("Overdue", ["Device", "Why", "Status", "Attempts", "Last error"],
               [[r["name"], "; ".join(r["reasons"]), r["status"], r["renewal_attempts"], r["renewal_last_error"]]
                for r in data["overdue"]])
        _table(f"Stale LSCs (issued, not installed after {stale_after})", ["Device", "Serial", "Issued", "Expires"],
               [[r["name"], r["serial"], r["issued_at"], r["not_after"]] for r in data["stale"]])
    exit_on_finding(bool(data["overdue"]))


@capf.command("renew")
@click.option("--node-id", default="cli", show_default=True, help="Lease owner name of this run.")
@click.option("--now", "now_text", help="Pretend it is this time (ISO date), for planning.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def renew_cmd(ctx: click.Context, node_id: str, now_text: str | None, as_json: bool) -> None:
    """Run the renewal scheduler once: schedule every device whose renewal window is open."""
    from onlineca.capf.scheduler import SchedulerSettings, run_once
    from onlineca.store import Database
    db = Database(ctx.obj.config.database_url)
    db.migrate()
    try:
        result = run_once(db, SchedulerSettings(node_id=node_id), parse_when(now_text) if now_text else None)
    finally:
        db.dispose()
    if as_json:
        _print_json({"scheduled": result.scheduled, "timed_out": result.timed_out})
    else:
        click.echo(f"renewal scheduled for {len(result.scheduled)} device(s), "
                   f"{len(result.timed_out)} late renewal(s) timed out")


@capf.command("reconcile")
@click.option("--ca-database", "ca_database", help="Our CA's database URL (default: [capf] ca_database_url).")
@click.option("--grace", type=click.FloatRange(0, 10**8), default=None, callback=lambda _c, _p, v: _finite(v),
              help="Seconds an enrollment may be in flight (default: [capf] reconcile_grace).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reconcile_cmd(ctx: click.Context, ca_database: str | None, grace: float | None, as_json: bool) -> None:
    """Account for every certificate the CA issued: enrollments never recorded are
    adopted or recorded for revocation, CA certificates CAPF never recorded are recorded for
    revocation.  Without a CA database (a real AD CS) the enrollments never answered are listed.
    Exit 1 when something was found."""
    from pydantic import SecretStr

    from onlineca.capf.reconcile import reconcile
    from onlineca.capf.service import ca_lookup
    from onlineca.store import Database
    config = ctx.obj.config
    if ca_database is not None:
        config = config.model_copy(update={"capf": config.capf.model_copy(
            update={"ca_database_url": SecretStr(ca_database)})})
    cfg = config.capf
    db = Database(config.database_url, busy_timeout=config.database.busy_timeout)
    lookup, release = ca_lookup(config)
    try:
        db.migrate()
        report = reconcile(db, lookup, node="cli", grace=cfg.reconcile_grace if grace is None else grace,
                           window_days=cfg.reconcile_window_days)
    finally:
        release()
        db.dispose()
    found = bool(report.adopted or report.orphaned or report.orphans or report.discarded or report.unresolved)
    if as_json:
        _print_json(report.as_dict())
    else:
        click.echo(f"checked {report.intents_checked} enrollment(s) never recorded"
                   f"{'' if report.ca_checked else ' (no CA database: nothing looked up)'}: "
                   f"{len(report.adopted)} adopted, {len(report.orphaned)} to revoke, {report.abandoned} never issued, "
                   f"{report.recorded} recorded already, {len(report.unresolved)} unresolved")
        click.echo(f"{len(report.orphans)} CA certificate(s) CAPF never recorded, {len(report.discarded)} discarded "
                   f"LSC(s): {report.to_revoke} certificate(s) recorded for revocation in all")
        for item in report.unresolved:
            click.echo(f"  unresolved {item['device']} request {item['request_id']} sent {item['sent_at']}")
    exit_on_finding(found)


# ---- CAPF's own CA (capf10 branch) ---------------------------------------------------------

@capf.group("ca")
def capf_ca() -> None:
    """CAPF's own CA: the issuer of profiles with issuer = capf (the vendor's classic mode)."""


@capf_ca.command("init")
@click.option("--name", help="Subject of the CA certificate (default CN=CAPF-<host> CA,OU=CAPF,O=onlineca).")
@click.option("--key-type", type=click.Choice(["rsa", "ec"]), default="rsa", show_default=True)
@click.option("--force", is_flag=True, help="Replace the CA there (LSCs it issued stop authenticating).")
@click.pass_obj
def capf_ca_init(app: AppContext, name: str | None, key_type: str, force: bool) -> None:
    """Create CAPF's CA in <data dir>/capf/ca (key 0600); CAPF also makes one at first start."""
    from onlineca import pki
    from onlineca.capf.local_ca import CAPFAuthority
    from onlineca.config import DataDir

    folder = DataDir(app.data_dir).capf.ca_dir
    ca = CAPFAuthority.init(folder, name=name, key_type=key_type, bits=2048 if key_type == "rsa" else 256,
                            force=force)
    click.echo(f"CAPF CA {pki.name_to_slash(ca.cert.subject)} in {folder} (phones and call control must trust "
               f"{folder / 'capf-ca.pem'})")


# ---- revocations and alerts ---------------------------------------------------

@capf.group()
def revocations() -> None:
    """LSCs that must be revoked: replaced, deleted with their device, or discarded."""


@revocations.command("list")
@click.option("--state", type=click.Choice(["pending", "manual", "revoked"]), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def revocations_list(ctx: click.Context, state: str | None, as_json: bool) -> None:
    """What CAPF revoked, what it will ask its CA to revoke (pending) and what an administrator must
    revoke at the CA (manual: AD CS has no revoke page), with the certutil command."""
    from onlineca.service import revocations as service
    with _services(ctx) as (svc, actor):
        rows = service.list_revocations(svc, actor, state)
    if as_json:
        _print_json(rows)
        return
    _table("LSC revocations", ["device", "serial", "reason", "state", "why", "at the CA"],
           [[r["device"], r["serial"], r["reason"], r["state"], r["why"] or r["last_error"],
             r["certutil"] if r["state"] == "manual" else (r["done_at"] or "")] for r in rows])


@revocations.command("export")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--state", type=click.Choice(["pending", "manual", "revoked"]), default=None)
@click.pass_context
def revocations_export(ctx: click.Context, out: str, state: str | None) -> None:
    """Write the list as CSV to OUT ('-' for stdout), for the CA's administrators."""
    from onlineca.service import revocations as service
    with _services(ctx) as (svc, actor):
        text = service.export_csv(svc, actor, state)
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text)
        click.echo(f"{text.count(chr(10)) - 1} LSC(s) written to {out}")


@revocations.command("done")
@click.argument("serial")
@click.option("--issuer", default=None, help="The issuer (RFC 4514) when two CAs issued this serial.")
@click.pass_context
def revocations_done(ctx: click.Context, serial: str, issuer: str | None) -> None:
    """Record that an administrator revoked SERIAL at the CA (certutil -revoke)."""
    from onlineca.service import revocations as service
    with _services(ctx) as (svc, actor):
        row = service.mark_done(svc, actor, serial, issuer)
    click.echo(f"{row['device']}: LSC serial {row['serial']} recorded as revoked")


@capf.group()
def alerts() -> None:
    """The [alerts] notifications CAPF sends (webhook, mail, command)."""


@alerts.command("test")
@click.pass_obj
def alerts_test(app: AppContext) -> None:
    """Send a test notification to every [alerts] target; exit 1 if one fails."""
    import asyncio
    import socket

    from onlineca.capf.alerts import Alerter, enabled, probe_notification
    from onlineca.store import Database
    cfg = app.config.alerts
    if not enabled(cfg):
        raise CAPFError("no [alerts] target is configured", code="ALERT_DELIVERY",
                        hint="Set [alerts] webhook_urls, smtp_host with mail_to, or command.")
    db = Database(app.config.database_url)
    try:
        alerter = Alerter(cfg, db, socket.gethostname())
        ok = asyncio.run(alerter.send(probe_notification(alerter.node)))
    finally:
        db.dispose()
    click.echo(f"sent to: {', '.join(sorted(alerter.delivered)) or 'nothing'}"
               + (f"; failed: {', '.join(sorted(alerter.failures))}" if alerter.failures else ""))
    if not ok:
        raise CAPFError("a notification target failed (see the log line above)", code="ALERT_DELIVERY")
