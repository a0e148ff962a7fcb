"""``onlineca phone``: act as one phone (enroll, check-in, show), as a fleet, or as a phone factory
(mic-ca).  ``--flow public`` makes a phone that speaks exactly the public flow (no extension
announced); ``phone fleet`` mixes both kinds by default.

A phone lives in a folder (default ``<data dir>/phones/<NAME>``); ``enroll`` creates it when
needed.  CAPF is ``--capf HOST:PORT`` (default from ``[capf]``), trusted through ``--cafile``
(default: the lab root ``<data dir>/ca/root.pem``; CAPF serves its certificate with the issuing
CA, so the root is all a phone needs).  Exit 0 on success, 1 when the phone did not get what it came
for or on failure (``error:`` with the fix, from the root command), 2 on bad usage.  An auth string
is taken from the option or ``$ONLINECA_PHONE_AUTH_STRING`` and is never printed.
"""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import click

from onlineca.cli.app import AppContext, exit_on_finding
from onlineca.config import DataDir
from onlineca.phone.client import PhoneAuth, SessionResult, Target, check_in, phone_ssl_context
from onlineca.phone.device import KeyPool, Phone
from onlineca.phone.fleet import make_fleet, run_fleet, run_open_loop
from onlineca.phone.mic import MICAuthority

AUTH_ENV = "ONLINECA_PHONE_AUTH_STRING"


@click.group("phone")
def phone() -> None:
    """The device simulator: one phone, a fleet, or a manufacturer CA for MICs."""


def _target(app: AppContext, capf: str | None, cafile: Path | None, read_timeout: float) -> Target:
    host, port = app.config.capf.host, app.config.capf.port
    if capf:
        host, _, port_text = capf.rpartition(":")
        if not host or not port_text.isdigit():
            raise click.BadParameter("expected HOST:PORT", param_hint="--capf")
        port = int(port_text)
    cafile = cafile or DataDir(Path(app.data_dir)).ca.root_cert
    return Target(host, port, phone_ssl_context(cafile), read_timeout=read_timeout)


def _session_options(f: Any) -> Any:
    for option in reversed([
        click.option("--capf", metavar="HOST:PORT", help="CAPF's device-protocol address (default from [capf])."),
        click.option("--cafile", type=click.Path(dir_okay=False, path_type=Path),
                     help="CA certificate(s) that CAPF's TLS certificate chains to (default: the lab root <data dir>/ca/root.pem)."),
        click.option("--auth", "auth_mode", type=click.Choice(["auto", "string", "null", "lsc", "mic"]),
                     default="auto", show_default=True,
                     help="Credential to present (auto: auth string if given, else LSC, else MIC, else none)."),
        click.option("--auth-string", envvar=AUTH_ENV, help=f"The auth string (4-10 digits; or ${AUTH_ENV})."),
        click.option("--retries", type=int, default=3, show_default=True,
                     help="More sessions after RETRY_LATER or a connection failure."),
        click.option("--max-retry-delay", type=float, default=None,
                     help="Wait at most this many seconds before the next session (default: as CAPF says)."),
        click.option("--read-timeout", type=float, default=120.0, show_default=True),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]):
        f = option(f)
    return f


def _flow_option(f: Any, *, mix: bool = False) -> Any:
    choices = ["extended", "public", "mix"] if mix else ["extended", "public"]
    help_text = ("public: exactly the public flow (no extension announced, byte for byte as a public client); "
                 "extended: every onlineca extension announced" + ("; mix: every other phone public." if mix else "."))
    return click.option("--flow", type=click.Choice(choices), default="mix" if mix else "extended",
                        show_default=True, help=help_text)(f)


def _phone_dir(app: AppContext, folder: Path | None, name: str | None) -> Path:
    if folder:
        return folder
    if not name:
        raise click.UsageError("give --dir or --name")
    return app.data_dir / "phones" / name.upper()


def _report(result: SessionResult, phone: Phone, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "phone": phone.describe()}, default=str))
        return
    line = f"{result.device}: {result.outcome}"
    if result.reason:
        line += f" (reason {result.reason}{': ' + result.reason_info if result.reason_info else ''})"
    if result.key:
        line += f", key {result.key}"
    if result.lsc_serial:
        line += f", LSC serial {result.lsc_serial}"
    click.echo(f"{line}, {result.attempts} session(s), {result.seconds:.2f} s")
    if result.error:
        click.echo(f"  {result.error}")


def _run_one(app: AppContext, phone_obj: Phone, capf: str | None, cafile: Path | None, auth_mode: str,
             auth_string: str | None, retries: int, max_retry_delay: float | None,
             read_timeout: float, flow: str = "extended") -> SessionResult:
    target = _target(app, capf, cafile, read_timeout)
    return asyncio.run(check_in(phone_obj, target, PhoneAuth(auth_mode, auth_string),  # type: ignore[arg-type]
                                retries=retries, max_retry_delay=max_retry_delay,
                                flow="public" if flow == "public" else "extended"))


@phone.command("enroll")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), help="The phone's folder.")
@click.option("--name", help="Device name, e.g. SEP74A02FC0A675 (needed to create a phone).")
@click.option("--model", default="Cisco 8865", show_default=True)
@_session_options
@_flow_option
@click.pass_obj
def enroll_cmd(app: AppContext, /, folder: Path | None, name: str | None, model: str, **kw: Any) -> None:
    """Create the phone if needed and check in until it has a new LSC (exit 1 otherwise)."""
    as_json = kw.pop("as_json")
    path = _phone_dir(app, folder, name)
    phone_obj = Phone.create(path, name, model=model) if name else Phone.open(path)
    result = _run_one(app, phone_obj, **kw)
    _report(result, phone_obj, as_json)
    exit_on_finding(result.outcome != "installed")


@phone.command("check-in")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), help="The phone's folder.")
@click.option("--name", help="Device name (its folder is <data dir>/phones/NAME).")
@_session_options
@_flow_option
@click.pass_obj
def check_in_cmd(app: AppContext, /, folder: Path | None, name: str | None, **kw: Any) -> None:
    """One check-in: do whatever CAPF has pending for this phone (install, delete, troubleshoot, nothing)."""
    as_json = kw.pop("as_json")
    phone_obj = Phone.open(_phone_dir(app, folder, name))
    result = _run_one(app, phone_obj, **kw)
    _report(result, phone_obj, as_json)
    exit_on_finding(not result.ok)


@phone.command("show")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), help="The phone's folder.")
@click.option("--name", help="Device name (its folder is <data dir>/phones/NAME).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show_cmd(app: AppContext, folder: Path | None, name: str | None, as_json: bool) -> None:
    """The phone's name, model and certificates (LSC, MIC)."""
    info = Phone.open(_phone_dir(app, folder, name)).describe()
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{info['name']} ({info['model']}) in {info['folder']}")
    certs: list[dict[str, str]] = info["certificates"]  # type: ignore[assignment]
    if not certs:
        click.echo("  no certificates")
    for c in certs:
        click.echo(f"  {c['kind']}: {c['subject']} issued by {c['issuer']}, serial {c['serial']}, "
                   f"{c['key']}, valid until {c['not_after']}")
    if info["pending_key"]:
        click.echo("  a new key waits for its LSC")


def _parse_pregenerate(text: str) -> dict[tuple[str, int], int]:
    wanted: dict[tuple[str, int], int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        try:
            spec, _, count = item.partition("=")
            key_type, _, bits = spec.partition(":")
            if key_type not in ("rsa", "ec"):
                raise ValueError
            wanted[(key_type, int(bits))] = int(count)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected TYPE:BITS=COUNT, e.g. rsa:2048=64",
                                     param_hint="--pregenerate") from None
    return wanted


@phone.command("fleet")
@click.option("--count", type=click.IntRange(1, 1_000_000), default=10, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=16, show_default=True)
@click.option("--prefix", default="SEP", show_default=True, help="Device names are PREFIX + 12 hex digits.")
@click.option("--first", default="74A02FC00000", show_default=True,
              help="The first name's 12 hex digits (the others count up from it).")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Keep each phone in DIR/NAME (default: in memory only).")
@click.option("--pregenerate", default="", help="Keys to make before the first session, e.g. rsa:2048=64,ec:256=64.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Open loop: start RATE phones a second whatever the servers answer (--concurrency is then "
                   "not a bound); latencies count from each phone's scheduled arrival.")
@click.option("--arrival", type=click.Choice(["poisson", "fixed"]), default="poisson", show_default=True,
              help="With --rate: Poisson arrivals or evenly spaced ones.")
@click.option("--seed", type=int, default=0, show_default=True, help="With --rate: the Poisson arrivals' seed.")
@_session_options
@functools.partial(_flow_option, mix=True)
@click.pass_obj
def fleet_cmd(app: AppContext, count: int, concurrency: int, prefix: str, first: str, folder: Path | None,
              pregenerate: str, rate: float | None, arrival: str, seed: int,
              capf: str | None, cafile: Path | None, auth_mode: str, auth_string: str | None, retries: int,
              max_retry_delay: float | None, read_timeout: float, as_json: bool, flow: str) -> None:
    """COUNT phones check in, CONCURRENCY at a time (public-flow and extended phones, by --flow), or
    with --rate at RATE a second (open loop); prints outcomes per flow, devices/s and latency
    percentiles (and, open loop, the rate reached and how late the phones started)."""
    wanted = _parse_pregenerate(pregenerate)
    try:
        first_number = int(first, 16)
    except ValueError:
        raise click.BadParameter(f"{first!r} is not hexadecimal", param_hint="--first") from None
    target = _target(app, capf, cafile, read_timeout)
    pool = KeyPool()
    pool.fill(wanted)
    members = make_fleet(count, folder=folder, prefix=prefix, first=first_number, key_pool=pool,
                         auth=PhoneAuth(auth_mode, auth_string), flow=flow)  # type: ignore[arg-type]
    if rate is None:
        report = asyncio.run(run_fleet(members, target, concurrency=concurrency, retries=retries,
                                       max_retry_delay=max_retry_delay))
    else:
        report = asyncio.run(run_open_loop(members, target, rate=rate, arrival=arrival, seed=seed, retries=retries,
                                           max_retry_delay=max_retry_delay))
    summary = report.summary()
    if as_json:
        click.echo(json.dumps({**summary, "failures": [r.as_dict() for r in report.failed]}, default=str))
    else:
        click.echo(" ".join(f"{k}={v}" for k, v in summary.items() if k != "by_flow"))
        for name, row in report.by_flow.items():
            click.echo(f"  {name:<8} devices={row['devices']} ok={row['ok']} failed={row['failed']}")
        for r in report.failed[:20]:
            click.echo(f"  {r.device}: {r.outcome} {r.reason or ''} {r.error or ''}".rstrip())
    exit_on_finding(bool(report.failed))


@phone.group("mic-ca")
def mic_ca() -> None:
    """A manufacturer CA that gives simulated phones their MICs."""


@mic_ca.command("init")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Where the CA lives (default <data dir>/mic-ca).")
@click.option("--key-type", type=click.Choice(["ec", "rsa"]), default="ec", show_default=True)
@click.pass_obj
def mic_ca_init(app: AppContext, folder: Path | None, key_type: str) -> None:
    """Create the manufacturer CA (or show the one there); its mic-ca.pem is CAPF's MIC trust store."""
    ca = MICAuthority.init(folder or app.data_dir / "mic-ca", key_type=key_type,
                           bits=256 if key_type == "ec" else 2048)
    click.echo(f"manufacturer CA {ca.cert.subject.rfc4514_string()} in {ca.folder}")
    click.echo(f"MIC trust store for CAPF: {ca.trust_store}")


@mic_ca.command("issue")
@click.option("--ca-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The manufacturer CA (default <data dir>/mic-ca).")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), help="The phone's folder.")
@click.option("--name", help="Device name (creates the phone when its folder does not exist).")
@click.pass_obj
def mic_ca_issue(app: AppContext, ca_dir: Path | None, folder: Path | None, name: str | None) -> None:
    """Give a phone a MIC (the phone makes its MIC key itself)."""
    ca = MICAuthority.open(ca_dir or app.data_dir / "mic-ca")
    path = _phone_dir(app, folder, name)
    phone_obj = Phone.create(path, name) if name else Phone.open(path)
    cert = ca.issue(phone_obj)
    click.echo(f"{phone_obj.name}: MIC serial {cert.serial_number:x} in {path / 'mic.pem'}")


__all__ = ["phone"]
