"""The whole chain on 127.0.0.1, from nothing: for ``onlineca demo``, the benches and the tests.

A lab lives in one folder.  ``make_lab`` makes its PKI (our /certsrv CA with an RSA root and
issuing CA, the RA's TLS certificate, a manufacturer CA for MICs) and its configuration;
``start_servers`` starts the CA, the RA (EST, certsrv connector to the CA) and CAPF on 127.0.0.1
(the default ports, or free ones when those are taken) and writes ``<lab>/onlineca.toml`` with the
ports they got; ``plan_fleet`` and ``register_devices`` make simulated phones and put them in
CAPF's inventory with several authentication modes (auth string, null string, MIC), key types
(RSA 1024/2048, EC P-256) and both flows: phones that speak the public flow exactly (CAPF vouches
for their keys at the RA, which lets CAPF's certificate do so, and the CA issues them under its
``CAPFVouchedLSC`` template) and phones that announce onlineca's extensions; ``advance_to_renewal``
runs the renewal scheduler with its clock past the LSCs' renewal window (and CAPF's clock with it,
for the public-flow phones that renew by asking again).  ``run_lab`` does all of it: enroll the
fleet through CAPF -> RA -> CA, then renew it, and returns a report (the JSON ``onlineca demo
--json`` prints).

It never touches a folder it did not make (``prepare_folder`` refuses a non-empty folder without
its marker) and never prints: progress goes to a ``Progress`` the caller gives (the command line's
progress bar), and nothing here imports click or rich.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import secrets
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from pydantic import SecretStr
from sqlalchemy import func, select, update

from onlineca import pki
from onlineca.ca.engine import init_ca
from onlineca.ca.users import add_user
from onlineca.ca.web import RunningCA, start_ca
from onlineca.capf.local_ca import LSC_EXTENDED_KEY_USAGE
from onlineca.capf.revocation import LSCRevoker
from onlineca.capf.scheduler import SchedulerSettings, run_once
from onlineca.capf.service import RunningCAPF, start_capf as _start_capf
from onlineca.config import CAConfig, Config, DataDir
from onlineca.errors import ConfigError
from onlineca.infra import files, tls
from onlineca.phone.client import Flow, PhoneAuth, SessionResult, Target, phone_ssl_context
from onlineca.phone.device import KeyPool, Phone
from onlineca.phone.fleet import Member, device_names, run_fleet
from onlineca.phone.mic import MICAuthority
from onlineca.proto.est import WELL_KNOWN
from onlineca.ra.app import RunningRA, start_ra
from onlineca.store import Database, devices as inventory
from onlineca.store.capf_models import Device

MARKER = ".onlineca-demo"
CA_USER = "ciscora"
DEFAULT_PORTS = {"ca": 8443, "ra": 8084, "capf": 3804}
LAB_CONFIG = "onlineca.toml"
VOUCHED_TEMPLATE = "CAPFVouchedLSC"
# CAPF's own certificate (its TLS server certificate, and its RA-agent certificate for
# vouched requests) comes from a template of its own: only CAPF's account, subject set by the CA,
# the RA-agent EKU; CAPF asks for it under an EST label the RA maps to that template.
AGENT_TEMPLATE = "CAPFAgent"
AGENT_LABEL = "capf-agent"
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"


@dataclass(frozen=True)
class Group:
    """Devices that share a flow, an authentication mode and a key type (one row of the summary)."""

    auth_mode: str      # policy.capf AuthMode identifier
    phone_auth: str     # how the simulated phone answers
    key_order: str      # policy.capf KeyOrder identifier
    key: tuple[str, int]
    flow: Flow = "extended"  # the public flow exactly, or onlineca's extensions announced

    @property
    def label(self) -> str:
        words = {"AUTH_BY_STR": "auth string", "AUTH_BY_NULL_STR": "null string", "AUTH_BY_MIC": "MIC"}
        return f"{words[self.auth_mode]} / {self.key[0].upper()} {self.key[1]}"


# The first four already hold every auth mode, both key types and both flows (a short demo).
GROUPS = (
    Group("AUTH_BY_STR", "string", "KEYORDER_RSA_ONLY", ("rsa", 2048)),
    Group("AUTH_BY_NULL_STR", "null", "KEYORDER_RSA_ONLY", ("rsa", 2048), "public"),
    Group("AUTH_BY_MIC", "mic", "KEYORDER_EC_ONLY", ("ec", 256)),
    Group("AUTH_BY_STR", "string", "KEYORDER_RSA_ONLY", ("rsa", 1024), "public"),
    Group("AUTH_BY_NULL_STR", "null", "KEYORDER_EC_ONLY", ("ec", 256)),
    Group("AUTH_BY_STR", "string", "KEYORDER_EC_ONLY", ("ec", 256)),
    Group("AUTH_BY_MIC", "mic", "KEYORDER_RSA_ONLY", ("rsa", 2048)),
    Group("AUTH_BY_NULL_STR", "null", "KEYORDER_RSA_ONLY", ("rsa", 1024), "public"),
)


@dataclass
class LabDevice:
    """One simulated phone of the fleet, its group, and what its two sessions came to."""

    member: Member
    group: Group
    auth_string: str | None = None
    enroll: SessionResult | None = None
    renew: SessionResult | None = None
    first_serial: str | None = None

    @property
    def name(self) -> str:
        return self.member.phone.name


class Progress(Protocol):
    """Where ``run_lab`` reports its progress (the command line draws a bar; tests pass nothing)."""

    def stage(self, description: str, total: int) -> None:
        """A stage of ``total`` steps begins."""

    def advance(self, note: str) -> None:
        """One step of the current stage is done; ``note`` says which."""

    def log(self, text: str) -> None:
        """A line worth showing (the servers' addresses, what the renewal clock did)."""


class NoProgress:
    """A ``Progress`` that shows nothing."""

    def stage(self, description: str, total: int) -> None:
        pass

    def advance(self, note: str) -> None:
        pass

    def log(self, text: str) -> None:
        pass


# --------------------------------------------------------------------------- the lab on disk


def prepare_folder(root: Path) -> None:
    """Empty ``root`` for a new run; only a folder a lab made (with its marker) is emptied."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise ConfigError(f"{root} is not empty and was not made by 'onlineca demo'",
                              hint="Give another folder with --dir, or remove this one yourself.")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by 'onlineca demo'; emptied by the next run\n")


def lab_config(root: Path, ca_password: str, mic_trust: Path) -> Config:
    """Every component's settings for the lab (ports are chosen when each server starts)."""
    ca_dir = root / "ca"
    # The CA's templates: the defaults, and one for keys CAPF vouches for (public-flow phones,
    # RSA 1024 among them), restricted to the RA's account.
    templates = [t.model_dump() for t in CAConfig().templates] + [{
        "name": VOUCHED_TEMPLATE, "display_name": "CAPF vouched LSC", "validity_days": 365, "vouched_keys": True,
        "min_rsa_bits": 1024, "extended_key_usage": list(LSC_EXTENDED_KEY_USAGE), "enroll": [CA_USER]}, {
        "name": AGENT_TEMPLATE, "display_name": "CAPF (TLS server and RA agent)", "validity_days": 730,
        "extended_key_usage": ["server_auth", "client_auth", ID_KP_CMC_RA], "enroll": [CA_USER],
        "subject_from_request": False, "allowed_sans": ["localhost", r"127\.0\.0\.1"]}]
    return Config.model_validate({
        "data_dir": str(root), "log_dir": str(root / "logs"),
        "database": {"url": f"sqlite:///{root / 'capf.db'}"},
        "ca": {"key_type": "rsa", "key_size": 2048, "users_file": str(ca_dir / "users"),
               "root_name": "CN=onlineca Demo Root CA,O=onlineca demo",
               "issuing_name": "CN=onlineca Demo Issuing CA,O=onlineca demo", "templates": templates,
               # CAPF revokes the LSCs it replaces through the CA's revoke endpoint.
               "revokers": [CA_USER]},
        "ra": {"connector": "certsrv", "ca_user": CA_USER, "ca_password": ca_password,
               "trust_store": str(ca_dir / "root.pem"), "template": "CiscoRA",
               "tls_cert": str(root / "ra" / "ra.pem"), "tls_key": str(root / "ra" / "ra.key"),
               "connect_timeout": 5.0, "login_timeout": 5.0, "enroll_timeout": 10.0,
               "backoff_initial": 0.2, "backoff_max": 2.0, "unavailable_retry_after": 5,
               "vouched_template": VOUCHED_TEMPLATE, "label_templates": {AGENT_LABEL: AGENT_TEMPLATE}},
        # CAPF's certificate, as the RA's TLS client certificate, makes it an RA agent (its EKU).
        "est": {"client_trust_store": str(ca_dir / "root.pem")},
        "capf": {"ra_user": CA_USER, "ra_password": ca_password, "ra_trust_store": str(ca_dir / "root.pem"),
                 "agent_label": AGENT_LABEL,
                 "mic_trust_store": str(mic_trust), "retry_delay": 5, "keepalive_seconds": 5.0,
                 "max_concurrent_enrollments": 8, "scheduler_interval": 3600.0},
    })


def make_lab(root: Path) -> tuple[Config, MICAuthority]:
    """The CA (root + issuing, web certificate, one user), the RA's TLS certificate, the MIC CA."""
    mic = MICAuthority.init(root / "mic-ca")
    password = secrets.token_urlsafe(18)
    config = lab_config(root, password, mic.trust_store)
    ca_paths = init_ca(config, root)
    add_user(config.ca.users_file, CA_USER, password)
    issuing_key = files.read_private_key(ca_paths.issuing_key)
    issuing = pki.load_certificate(ca_paths.issuing_cert.read_bytes())
    key = pki.generate_key("ec", 256)
    cert = pki.build_certificate(subject="CN=ra.onlineca.demo,O=onlineca demo", public_key=key.public_key(),
                                 issuer_key=issuing_key, issuer_cert=issuing, sans=["localhost", "127.0.0.1"],
                                 extended_key_usage=["server_auth"])
    (root / "ra").mkdir(exist_ok=True)
    (root / "ra" / "ra.pem").write_bytes(pki.certs_pem([cert, issuing]))
    files.write_private_key(root / "ra" / "ra.key", key)
    assert DataDir(Path(root)).ca.root_cert.exists()
    return config, mic


# --------------------------------------------------------------------------- servers


async def _on_port(start: Callable[[int], Awaitable[Any]], preferred: int | None) -> Any:
    """Start on the preferred port, or on a free one when it is taken."""
    if preferred:
        try:
            return await start(preferred)
        except (ConfigError, OSError):
            pass
    return await start(0)


@dataclass(frozen=True)
class Endpoints:
    """Where the lab's servers listen, whether they run in this process or as processes."""

    ca_url: str    # https://127.0.0.1:port/certsrv
    ra_url: str    # https://127.0.0.1:port/.well-known/est
    capf_host: str
    capf_port: int


@dataclass
class Servers:
    """The lab's running servers; ``close()`` stops those started, last first.  ``ca``, ``ra``
    and ``capf`` are set when they run in this process; ``endpoints`` in either case."""

    ca: RunningCA | None = None
    ra: RunningRA | None = None
    capf: RunningCAPF | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    processes: int = 0  # the servers run as 'serve --workers N' processes with this N; 0: here
    started: Endpoints | None = None

    @property
    def endpoints(self) -> Endpoints:
        if self.started is None:
            assert self.ca is not None and self.ra is not None and self.capf is not None
            self.started = Endpoints(self.ca.url, self.ra.url, self.capf.host, self.capf.port)
        return self.started

    async def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):  # stop the others even when one fails to
                await asyncio.wait_for(close(), 15)
        self.closers.clear()


async def start_servers(config: Config, root: Path, servers: Servers, default_ports: bool) -> None:
    """Start CA, RA (once it is ready) and CAPF into ``servers`` (which the caller closes, also
    when this fails half-way), then write the lab's configuration file with their ports."""
    log_dir = config.log_path
    ca_db = Database(f"sqlite:///{root / 'ca.db'}")  # its own file: the CA and CAPF never wait on one lock
    ca = servers.ca = await _on_port(lambda p: start_ca(config, root, log_dir, host="127.0.0.1", port=p, db=ca_db),
                                     DEFAULT_PORTS["ca"] if default_ports else None)
    servers.closers.append(ca.close)
    ra_config = config.model_copy(update={"ra": config.ra.model_copy(update={"ca_url": ca.url})})
    ra = servers.ra = await _on_port(lambda p: start_ra(ra_config, log_dir, host="127.0.0.1", port=p),
                                     DEFAULT_PORTS["ra"] if default_ports else None)
    servers.closers.append(ra.close)
    await ra.wait_ready(timeout=30)
    capf_config = config.model_copy(update={"capf": config.capf.model_copy(update={
        "ra_url": ra.url, "ca_revoke_url": f"{ca.url}/onlineca/revoke"})})
    capf = servers.capf = await _on_port(lambda p: start_capf(capf_config, root, p),
                                         DEFAULT_PORTS["capf"] if default_ports else None)
    servers.closers.append(capf.close)
    write_lab_config(config, servers.endpoints)


def write_lab_config(config: Config, at: Endpoints) -> Path:
    """``<lab>/onlineca.toml`` (0600: it holds the lab password): the lab's whole configuration
    (what differs from the defaults) with the ports and URLs of ``at``, so that ``onlineca
    --config <lab>/onlineca.toml`` runs any command on the lab, ``diagnose`` and each tier's
    ``serve`` included (the demo's ``--workers`` starts them so)."""
    sections: dict[str, Any] = _plain(config.model_dump(exclude_defaults=True))
    ca_port, ra_port = (int(url.split(":")[2].split("/")[0]) for url in (at.ca_url, at.ra_url))
    for name, values in {
        "database": {"url": config.database_url},
        "ca": {"port": ca_port},
        "ra": {"port": ra_port, "ca_url": at.ca_url},
        "capf": {"port": at.capf_port, "ra_url": at.ra_url, "ca_revoke_url": f"{at.ca_url}/onlineca/revoke"},
        # The CA keeps its requests in a database of its own (the CA and CAPF never wait on one lock).
        "admin": {"ca_database_url": f"sqlite:///{config.data_path / 'ca.db'}"},
    }.items():
        sections.setdefault(name, {}).update(values)
    lines = ["# Written by 'onlineca demo' for the lab it started; holds the lab's generated password."]
    tables = {k: v for k, v in sections.items() if isinstance(v, dict)}
    lines += [f"{key} = {_toml(value)}" for key, value in sections.items() if key not in tables]
    for name, values in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    path = config.data_path / LAB_CONFIG
    files.write_secret_file(path, ("\n".join(lines) + "\n").encode())
    return path


async def start_server_processes(config: Config, root: Path, servers: Servers, default_ports: bool,
                                 workers: int) -> None:
    """CA, RA and CAPF as ``onlineca --config <lab>/onlineca.toml <tier> serve --workers N``
    processes (each a supervisor of N workers on its port, as they are deployed), started in
    turn once the one before is ready (the RA logged in at the CA before CAPF enrolls its
    certificate through it), into ``servers`` (which the caller closes: SIGTERM, then SIGKILL)."""
    ports = {role: _port_for(DEFAULT_PORTS[role] if default_ports else 0) for role in ("ca", "ra", "capf")}
    at = Endpoints(f"https://127.0.0.1:{ports['ca']}/certsrv", f"https://127.0.0.1:{ports['ra']}{WELL_KNOWN}",
                   "127.0.0.1", ports["capf"])
    path = write_lab_config(config, at)
    trust = tls.client_context(files.load_cert_file(root / "ca" / "root.pem"))
    for role in ("ca", "ra", "capf"):
        proc = await _serve_process(path, role, ports[role], workers, config.log_path)
        servers.closers.append(proc.stop)
        if role == "ra":
            await _until_ready(f"https://127.0.0.1:{ports['ra']}/readyz", trust, proc)
    servers.processes, servers.started = workers, at


def _port_for(preferred: int) -> int:
    """``preferred`` when nothing listens there, else a free port (the servers bind it next)."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise ConfigError("no free port on 127.0.0.1")


@dataclass
class ServeProcess:
    """One ``onlineca <tier> serve`` process of the lab; what it prints after its readiness line
    goes to ``<logs>/<tier>-serve.err``."""

    role: str
    proc: asyncio.subprocess.Process
    drain: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 40)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.drain is not None:
            await self.drain


async def _serve_process(config_path: Path, role: str, port: int, workers: int, log_dir: Path) -> ServeProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "onlineca", "--config", str(config_path), role, "serve", "--port", str(port),
        "--workers", str(workers), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    running = ServeProcess(role, proc)
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), 180)).decode(errors="replace").strip()
    except TimeoutError:
        line = ""
    if " serving " not in line:
        await running.stop()
        rest = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
        raise ConfigError(f"'onlineca {role} serve' did not start: {line or rest or 'no answer'}",
                          hint=f"Run it yourself to see why: onlineca --config {config_path} {role} serve")

    async def drain(stream: asyncio.StreamReader, out: Path) -> None:
        with out.open("ab") as f:
            while chunk := await stream.read(65536):
                f.write(chunk)

    err = log_dir / f"{role}-serve.err"
    files.write_secret_file(err, f"{line}\n".encode())
    running.drain = asyncio.ensure_future(drain(proc.stderr, err))
    return running


async def _until_ready(url: str, trust: ssl.SSLContext, server: ServeProcess, timeout: float = 60.0) -> None:
    """Poll ``url`` (the RA's /readyz) until it answers 200, the process ends, or ``timeout``."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline and server.proc.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, ssl=trust) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)  # the RA logs in at the CA: a few hundred ms
    raise ConfigError(f"the lab's RA was not ready at {url}",
                      hint=f"See {server.role}-serve.err and ra.log in the lab's logs folder.")


def _plain(value: Any) -> Any:
    """A dumped configuration as TOML can hold it: secrets revealed (the file is 0600), paths
    and enums as strings, no None (TOML has no null: an unset value is its default)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path | Enum):
        return str(value.value if isinstance(value, Enum) else value)
    return value


def _toml(value: Any) -> str:
    """A TOML value: JSON strings, numbers and booleans are TOML's too; lists and tables inline."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


async def start_capf(config: Config, root: Path, port: int) -> RunningCAPF:
    """CAPF on 127.0.0.1:``port`` (0: a free one) with the lab's data and logs."""
    return await _start_capf(config, root, config.log_path, host="127.0.0.1", port=port)


# --------------------------------------------------------------------------- the fleet


def plan_fleet(root: Path, count: int, mic: MICAuthority, pool: KeyPool) -> list[LabDevice]:
    """``count`` phones in ``<root>/phones``, taking the groups in turn (MIC phones get their MIC)."""
    devices = []
    for i, name in enumerate(device_names(count)):
        group = GROUPS[i % len(GROUPS)]
        phone = Phone.create(root / "phones" / name, name)
        phone.key_pool = pool
        auth_string = f"{secrets.randbelow(10**6):06d}" if group.phone_auth == "string" else None
        if group.phone_auth == "mic":
            mic.issue(phone)
        devices.append(LabDevice(Member(phone, PhoneAuth(group.phone_auth, auth_string),  # type: ignore[arg-type]
                                        {"group": group.label}, flow=group.flow), group, auth_string))
    return devices


def register_devices(config: Config, devices: list[LabDevice]) -> None:
    """Each phone in CAPF's inventory with Install/Upgrade pending, as an administrator would set it."""
    db = Database(config.database_url)
    db.migrate()
    try:
        with db.session() as s:
            for d in devices:
                g = d.group
                key_size: dict[str, Any] = {f"{g.key[0]}_key_size": g.key[1]}  # rsa_key_size or ec_key_size
                inventory.add_device(
                    s, d.name, actor="demo", model=d.member.phone.model, description=f"demo phone ({g.label})",
                    operation="OPERATION_UPGRADE", auth_mode=g.auth_mode, auth_string=d.auth_string,
                    key_order=g.key_order, **key_size)
    finally:
        db.dispose()


def advance_to_renewal(config: Config, *, move_due_dates: bool = False) -> tuple[dt.datetime, int]:
    """Run the renewal scheduler once with its clock just past the last device's renewal window
    (the LSCs are valid for days, the lab runs for seconds); returns that clock and how many it
    scheduled.  ``move_due_dates``: instead, every installed LSC's renewal window opens now (the
    servers run as processes here, whose clocks the lab does not set) and the scheduler runs now."""
    db = Database(config.database_url)
    try:
        now = dt.datetime.now(dt.UTC)
        with db.session() as s:
            if move_due_dates:
                s.execute(update(Device).where(Device.renewal_due_at.is_not(None)).values(renewal_due_at=now))
            last_due = s.scalar(select(func.max(Device.renewal_due_at)))
        if last_due is None:
            return now, 0
        if last_due.tzinfo is None:
            last_due = last_due.replace(tzinfo=dt.UTC)
        clock = max(now, last_due + dt.timedelta(minutes=1))
        result = run_once(db, SchedulerSettings(node_id="demo"), now=clock)
        return clock, len(result.scheduled)
    finally:
        db.dispose()


# --------------------------------------------------------------------------- the run


@dataclass
class LabOptions:
    root: Path
    devices: int = 20
    concurrency: int = 8
    keep_running: bool = False
    default_ports: bool = True
    workers: int = 0  # >0: each server as 'onlineca <tier> serve --workers N' processes; 0: all here


@dataclass
class LabRun:
    """What ``run_lab`` did: the report, and the servers when they were asked to keep running
    (the caller closes them)."""

    report: dict[str, Any]
    servers: Servers | None = None


def _phone_target(root: Path, at: Endpoints) -> Target:
    return Target(at.capf_host, at.capf_port, phone_ssl_context(root / "ca" / "root.pem"),
                  read_timeout=60.0, keepalive=5.0)


async def _revoke_replaced(config: Config, servers: Servers) -> dict[str, Any] | None:
    """CAPF's maintenance pass revokes the LSCs the renewals replaced (through our CA's revoke
    endpoint); the lab runs it once now instead of waiting for the scheduler's interval (with the
    servers as processes, from here: the pass needs only the database and the CA)."""
    at = servers.endpoints
    if servers.capf is not None:
        if servers.capf.ops is None:
            return None
        result = await servers.capf.ops.revoker.run_once()
    else:
        cfg = config.capf.model_copy(update={"ca_revoke_url": f"{at.ca_url}/onlineca/revoke"})
        db = Database(config.database_url)
        revoker = LSCRevoker(cfg, db, "demo", capf_ca_dir=DataDir(config.data_path).capf.ca_dir)
        try:
            result = await revoker.run_once()
        finally:
            await revoker.close()
            db.dispose()
    return {"revoked": len(result.revoked), "manual": len(result.manual), "failed": len(result.failed),
            "crl": at.ca_url.rsplit("/certsrv", 1)[0] + "/CertEnroll/"}


async def run_lab(opts: LabOptions, progress: Progress | None = None) -> LabRun:
    """Make the lab in ``opts.root``, start it, enroll the fleet, renew it; the report says how each
    group fared.  The servers are stopped before it returns, unless ``opts.keep_running``."""
    progress = progress or NoProgress()
    started = time.monotonic()
    root = opts.root
    prepare_folder(root)
    pool = KeyPool()
    specs: dict[tuple[str, int], int] = {}
    for i in range(opts.devices):
        key = GROUPS[i % len(GROUPS)].key
        specs[key] = specs.get(key, 0) + 2  # one for the enrollment, one for the renewal
    # Phones' keys are made in worker threads while the lab is built and the servers start.
    keys_ready = asyncio.ensure_future(asyncio.to_thread(pool.fill, specs))
    config, mic = await asyncio.to_thread(make_lab, root)
    servers = Servers()
    try:
        if opts.workers:
            await start_server_processes(config, root, servers, opts.default_ports, opts.workers)
        else:
            await start_servers(config, root, servers, opts.default_ports)
        at = servers.endpoints
        where = f" ('serve --workers {opts.workers}' processes)" if opts.workers else ""
        progress.log(f"CA   {at.ca_url}\nRA   {at.ra_url}\nCAPF {at.capf_host}:{at.capf_port}"
                     f" (device protocol over TLS){where}")
        devices = await asyncio.to_thread(plan_fleet, root, opts.devices, mic, pool)
        await asyncio.to_thread(register_devices, config, devices)
        await keys_ready
        target = _phone_target(root, at)
        by_phone = {d.member.phone.name: d for d in devices}

        progress.stage("enrolling phones (CAPF->RA->CA)", len(devices))

        def enrolled(member: Member, result: SessionResult) -> None:
            d = by_phone[member.phone.name]
            d.enroll, d.first_serial = result, result.lsc_serial
            progress.advance(f"{member.phone.name} {result.outcome}")

        await run_fleet([d.member for d in devices], target, concurrency=opts.concurrency, retries=2,
                        max_retry_delay=2.0, on_result=enrolled)

        clock, scheduled = await asyncio.to_thread(advance_to_renewal, config, move_due_dates=bool(opts.workers))
        renewing = [d for d in devices if d.enroll is not None and d.enroll.outcome == "installed"]
        public = sum(1 for d in renewing if d.group.flow == "public")
        progress.log(f"renewal: scheduler ran with its clock at {clock:%Y-%m-%d %H:%M} UTC "
                     f"({(clock - dt.datetime.now(dt.UTC)).days} days ahead: the LSCs' renewal window); "
                     f"{scheduled} devices got Install/Upgrade by LSC, {public} public-flow phones renew by "
                     "asking again (CAPF's clock is there too)")
        # A public-flow phone renews by asking again once its LSC is due: CAPF must see that time.
        if servers.capf is not None:
            servers.capf.capf.clock = lambda: clock
        progress.stage("renewing LSCs (extended: by LSC; public: asking again)", len(renewing))

        def renewed(member: Member, result: SessionResult) -> None:
            by_phone[member.phone.name].renew = result
            progress.advance(f"{member.phone.name} {result.outcome}")

        for d in renewing:
            if d.group.flow == "extended":
                d.member.auth = PhoneAuth("lsc")
        await run_fleet([d.member for d in renewing], target, concurrency=opts.concurrency, retries=2,
                        max_retry_delay=2.0, on_result=renewed)
        if servers.capf is not None:
            servers.capf.capf.clock = inventory.utcnow
        revocations = await _revoke_replaced(config, servers)
        report = summarize(devices, servers, config, clock, scheduled)
        if revocations is not None:
            report["revocations"] = revocations
    except BaseException:
        await servers.close()
        raise
    if not opts.keep_running:
        await servers.close()
    report["seconds"] = round(time.monotonic() - started, 2)
    return LabRun(report, servers if opts.keep_running else None)


_RENEWAL_WHY = {
    False: "LSCs are valid for the CA template's days; the scheduler ran once with its clock past their "
           "renewal window, and the phones then renewed for real (public-flow phones by asking again, with "
           "CAPF's clock at the same time).",
    True: "LSCs are valid for the CA template's days; the lab moved their renewal windows to open now (the "
          "servers run as processes with the real clock), the scheduler ran, and the phones then renewed for "
          "real (public-flow phones by asking again).",
}


def summarize(devices: list[LabDevice], servers: Servers, config: Config, clock: dt.datetime,
              scheduled: int) -> dict[str, Any]:
    """The report: per group, how many enrolled and renewed (a new serial), the failures, where
    the servers, data and logs are."""
    at = servers.endpoints
    rows: dict[tuple[str, str], dict[str, int]] = {}
    failures = []
    enrolled = renewed = failed = 0
    for d in devices:
        row = rows.setdefault((d.group.flow, d.group.label), {"devices": 0, "enrolled": 0, "renewed": 0, "failed": 0})
        row["devices"] += 1
        ok_enroll = d.enroll is not None and d.enroll.outcome == "installed"
        ok_renew = (d.renew is not None and d.renew.outcome == "installed"
                    and d.renew.lsc_serial is not None and d.renew.lsc_serial != d.first_serial)
        enrolled += ok_enroll
        renewed += ok_renew
        row["enrolled"] += ok_enroll
        row["renewed"] += ok_renew
        if not (ok_enroll and ok_renew):
            failed += 1
            row["failed"] += 1
            bad = d.enroll if not ok_enroll else d.renew
            failures.append({"device": d.name, "flow": d.group.flow, "phase": "enroll" if not ok_enroll else "renew",
                             "outcome": bad.outcome if bad else "not run", "reason": bad.reason if bad else None,
                             "error": (bad.error or bad.reason_info) if bad else None})
    logs = {p.name: str(p) for p in sorted(config.log_path.glob("*")) if p.is_file()}
    now = dt.datetime.now(dt.UTC)
    return {
        "enrolled": enrolled, "renewed": renewed, "failed": failed, "devices": len(devices),
        "groups": [{"group": label, "flow": flow, **v} for (flow, label), v in rows.items()],
        "flows": {flow: {k: sum(v[k] for (f, _), v in rows.items() if f == flow)
                         for k in ("devices", "enrolled", "renewed", "failed")}
                  for flow in sorted({f for f, _ in rows})},
        "failures": failures,
        "renewal": {"clock": "due dates moved" if servers.processes else "simulated", "scheduler_now": clock.isoformat(), "days_ahead": (clock - now).days,
                    "scheduled": scheduled, "why": _RENEWAL_WHY[bool(servers.processes)]},
        "servers": {"ca": at.ca_url, "ra": at.ra_url, "capf": f"{at.capf_host}:{at.capf_port}",
                    "workers": servers.processes or None},
        "data_dir": str(config.data_path), "logs": logs,
        "config": str(config.data_path / LAB_CONFIG),
    }


__all__ = ["AGENT_LABEL", "AGENT_TEMPLATE", "CA_USER", "DEFAULT_PORTS", "GROUPS", "LAB_CONFIG", "MARKER", "VOUCHED_TEMPLATE",
           "Endpoints", "Group", "LabDevice", "LabOptions",
           "LabRun", "NoProgress", "Progress", "Servers", "advance_to_renewal", "lab_config", "make_lab",
           "plan_fleet", "prepare_folder", "register_devices", "run_lab", "start_capf", "start_server_processes",
           "start_servers",
           "summarize", "write_lab_config"]
