"""What the CAPF session-server tests share: an EST server with a counting local signer (the RA),
CAPF started in-process on 127.0.0.1, a manufacturer CA for MICs, and the inventory to inspect.

The phones are the simulator's (``onlineca.phone``): ``lab.session(phone, ...)`` runs one session
with ``phone.client.run_session`` and passes its faults and options through.  Nothing waits on a
sleep: the tests wait on sessions ending, on events, or on the servers' own readiness.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import update

from onlineca import pki
from onlineca.capf.service import RunningCAPF, start_capf
from onlineca.config import Config
from onlineca.est.backend import LocalSigner
from onlineca.est.server import ESTServerSettings, RunningESTServer, start_est_server
from onlineca.infra.users import UsersFile
from onlineca.phone.client import (
    NO_FAULTS,
    Faults,
    Flow,
    PhoneAuth,
    SessionResult,
    Target,
    phone_ssl_context,
    run_session,
)
from onlineca.phone.device import Phone
from onlineca.phone.mic import MICAuthority
from onlineca.proto.devproto.messages import Message
from onlineca.proto.results import Denied, EnrollRequest, EnrollResult
from onlineca.store import Database, devices as inv
from onlineca.store.capf_models import Device

RA_USER, RA_PASSWORD = "capf", "capf-Passw0rd!"
AGENT_LABEL = "capf-agent"
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"
NULL = PhoneAuth("null")


class CountingSigner:
    """The RA's signing backend: a LocalSigner that counts enrollments, can refuse, and can hold
    requests at a gate (to observe the concurrency bound)."""

    def __init__(self, signer: LocalSigner) -> None:
        self.signer = signer
        # CAPF's own certificate, asked for under the agent label, holds the RA-agent EKU as the
        # lab CA's agent template gives it: it may then vouch for public-flow phones' keys.
        self.agent_signer = LocalSigner(signer.issuer_key, signer.issuer_cert, ca_chain=signer.ca_chain,
                                        extended_key_usage=(*signer.extended_key_usage, ID_KP_CMC_RA))
        self.enrolls = 0
        self.subjects: list[str] = []
        self.deny = False
        self.gate: asyncio.Event | None = None
        self.inflight = 0
        self.max_inflight = 0
        self.inflight_changed = asyncio.Condition()

    async def cacerts(self, label: str | None) -> list[x509.Certificate]:
        return await self.signer.cacerts(label)

    async def csrattrs(self, label: str | None) -> Any:
        return await self.signer.csrattrs(label)

    async def enroll(self, request: EnrollRequest) -> EnrollResult:
        self.enrolls += 1
        self.subjects.append(request.csr.subject.rfc4514_string())
        if self.deny:
            return Denied("the CA refused the request (test)", 403)
        async with self.inflight_changed:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.inflight_changed.notify_all()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if request.label == AGENT_LABEL:
                return await self.agent_signer.enroll(request)
            return await self.signer.enroll(request)
        finally:
            async with self.inflight_changed:
                self.inflight -= 1
                self.inflight_changed.notify_all()


@dataclass
class CAPFLab:
    dir: Path
    lab_pki: Any
    db_url: str
    backend: CountingSigner
    mic_ca: MICAuthority
    capf_settings: dict[str, Any] = field(default_factory=dict)
    est: RunningESTServer | None = None
    est_port: int = 0
    capf: RunningCAPF | None = None  # type: ignore[assignment]
    db: Database | None = None

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def capf_log(self) -> str:
        return (self.log_dir / "capf.log").read_text()

    async def start_ra(self) -> None:
        # CAPF's own certificate (issued by this RA) makes it an RA agent: it may vouch for the
        # keys of phones that cannot sign (the public flow).
        settings = ESTServerSettings(password_check=UsersFile.from_plain({RA_USER: RA_PASSWORD}),
                                     labels=(AGENT_LABEL,))
        self.est = await start_est_server(self.backend, cert_file=self.lab_pki.server_cert_pem,
                                          key_file=self.lab_pki.server_key_pem, port=self.est_port,
                                          settings=settings, client_trust=pki.TrustStore([self.lab_pki.root]))
        self.est_port = self.est.port

    async def stop_ra(self) -> None:
        if self.est is not None:
            await self.est.close()
            self.est = None

    def config(self, **capf: Any) -> Config:
        return Config.model_validate({
            "data_dir": str(self.data_dir), "log_dir": str(self.log_dir),
            "database": {"url": self.db_url},
            "capf": {"ra_url": f"https://127.0.0.1:{self.est_port}/.well-known/est", "ra_user": RA_USER,
                     "ra_password": RA_PASSWORD, "ra_trust_store": str(self.lab_pki.root_pem),
                     "mic_trust_store": str(self.mic_ca.trust_store), "read_timeout": 10, "session_timeout": 30,
                     "keepalive_seconds": 5, "max_keygen_seconds": 10, "enroll_timeout": 5, "retry_delay": 120,
                     "max_auth_failures": 3, "node_id": "test-node", "agent_label": AGENT_LABEL,
                     **self.capf_settings, **capf},
        })

    async def start_capf(self, **capf: Any) -> RunningCAPF:
        self.capf = await start_capf(self.config(**capf), host="127.0.0.1", port=0, db=self.db,
                                     maintenance=False)
        return self.capf

    async def stop_capf(self) -> None:
        if self.capf is not None:
            await self.capf.close()
            self.capf = None

    # ---- the phones

    def target(self) -> Target:
        """CAPF as a phone of the lab sees it: trusting the lab root only."""
        assert self.capf is not None
        return Target("127.0.0.1", self.capf.port, phone_ssl_context(self.lab_pki.root_pem),
                      server_hostname="127.0.0.1", read_timeout=30)

    async def session(self, phone: Phone, auth: PhoneAuth = NULL, *, faults: Faults = NO_FAULTS,
                      max_version: int | None = None, on_message: Callable[[Message], object] | None = None,
                      flow: Flow = "extended") -> SessionResult:
        """One session of ``phone`` with CAPF (null string unless said otherwise; ``flow``
        "public" for a public client)."""
        return await run_session(phone, self.target(), auth, max_version=max_version, faults=faults,
                                 on_message=on_message, flow=flow)

    async def sessions_done(self) -> None:
        """Wait until CAPF has finished every open session (its last writes included): a phone that
        aborts or hangs up stops listening before CAPF records why."""
        assert self.capf is not None
        if self.capf.capf.tasks:
            await asyncio.wait(set(self.capf.capf.tasks), timeout=30)

    def manufacturer(self, name: str) -> MICAuthority:
        """Another phone maker, with its own MIC CA (CAPF does not trust it unless told)."""
        return MICAuthority.init(self.dir / "makers" / name.replace(" ", "_"), name=f"CN={name},O=Phones Inc")

    # ---- the inventory

    def add_device(self, name: str, **settings: Any) -> None:
        assert self.db is not None
        with self.db.session() as s:
            inv.add_device(s, name, **settings)

    def set_device(self, name: str, **settings: Any) -> None:
        assert self.db is not None
        with self.db.session() as s:
            inv.set_device(s, name, **settings)

    def record_installed(self, name: str, cert: x509.Certificate) -> str:
        """Record ``cert`` as the LSC installed on ``name`` (as if CAPF had issued and delivered
        it), leaving the pending operation as it was; its serial."""
        assert self.db is not None
        with self.db.session() as s:
            device = inv.get_device(s, name)
            pending = {k: getattr(device, k) for k in ("operation", "operation_deadline", "operation_auth_mode",
                                                        "status")}
            row = inv.record_lsc_issued(s, name, pki.cert_der(cert))
            inv.mark_lsc_installed(s, name, row.serial)
            serial = row.serial
        self.force(name, **pending)
        return serial

    def force(self, name: str, **columns: Any) -> None:
        """Write columns directly (e.g. a deadline already past, which the inventory refuses)."""
        assert self.db is not None
        with self.db.session() as s:
            s.execute(update(Device).where(Device.name == name).values(**columns))

    def device(self, name: str) -> Device:
        assert self.db is not None
        with self.db.session() as s:
            return inv.get_device(s, name)

    def status(self, name: str) -> str:
        return inv.CertStatus(self.device(name).status).display  # type: ignore[attr-defined]

    def events(self, name: str) -> list[str]:
        assert self.db is not None
        with self.db.session() as s:
            return [f"{e.event} {e.detail}" for e in inv.device_events(s, name, 200)]


def local_signer(lab_pki: Any) -> LocalSigner:
    return LocalSigner(lab_pki.issuing_key, lab_pki.issuing, ca_chain=[lab_pki.root],
                       extended_key_usage=("client_auth", "server_auth"))


async def make_lab(tmp_path: Path, lab_pki: Any, db_url: str, **capf: Any) -> CAPFLab:
    lab = CAPFLab(tmp_path, lab_pki, db_url, CountingSigner(local_signer(lab_pki)),
                  MICAuthority.init(tmp_path / "mic-ca", name="CN=Test Manufacturing CA,O=Phones Inc"),
                  capf_settings=capf)
    lab.db = Database(db_url)
    lab.db.migrate()
    await lab.start_ra()
    await lab.start_capf()
    return lab


async def close_lab(lab: CAPFLab) -> None:
    await lab.stop_capf()
    await lab.stop_ra()
    if lab.db is not None:
        lab.db.dispose()


def past(hours: float = 1) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
