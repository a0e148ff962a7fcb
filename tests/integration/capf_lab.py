"""What the CAPF session-server tests share: an EST server with a counting local signer (the RA),
CAPF started in-process on 127.0.0.1, a manufacturer CA for MICs, and a minimal phone.

The phone here is a test driver on devproto's ``PhoneSession`` (the simulator in ``onlineca.phone``
is another module's); each behaviour a test needs (wrong key, failing or hanging key generation,
a connection dropped before STORE_CERT_RESPONSE...) is one field.  Nothing waits on a sleep: the
tests wait on sessions ending, on events, or on the servers' own readiness.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
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
from onlineca.pki import tbs
from onlineca.proto.devproto.messages import (
    AuthRequest,
    CertificateType,
    CertificateValue,
    DeleteCertRequest,
    EndSession,
    FetchCertRequest,
    KeyGenRequest,
    Message,
    RequestInProgress,
    RetryLater,
    SignCertRequest,
    StoreCertRequest,
)
from onlineca.proto.devproto.session import PhoneSession
from onlineca.proto.results import Denied, EnrollRequest, EnrollResult
from onlineca.store import Database, devices as inv
from onlineca.store.capf_models import Device

RA_USER, RA_PASSWORD = "capf", "capf-Passw0rd!"
_RSA_KEYS: dict[int, pki.PrivateKey] = {}


def rsa_key(bits: int = 2048) -> pki.PrivateKey:
    """One RSA key per size for the whole test run (tests measure CAPF, not key generation)."""
    if bits not in _RSA_KEYS:
        _RSA_KEYS[bits] = pki.generate_key("rsa", bits)
    return _RSA_KEYS[bits]


class CountingSigner:
    """The RA's signing backend: a LocalSigner that counts enrollments, can refuse, and can hold
    requests at a gate (to observe the concurrency bound)."""

    def __init__(self, signer: LocalSigner) -> None:
        self.signer = signer
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
            return await self.signer.enroll(request)
        finally:
            async with self.inflight_changed:
                self.inflight -= 1
                self.inflight_changed.notify_all()


@dataclass
class MICCA:
    """A manufacturer CA that gives phones their MICs."""

    key: pki.PrivateKey
    cert: x509.Certificate
    path: Path

    @classmethod
    def make(cls, folder: Path, name: str = "CN=Test Manufacturing CA,O=Phones Inc") -> MICCA:
        key = pki.generate_key("ec", 256)
        cert = pki.build_certificate(subject=name, public_key=key.public_key(), issuer_key=key, is_ca=True,
                                     validity_days=3650)
        path = folder / f"mic-ca-{pki.fingerprint(cert)[:8]}.pem"
        path.write_bytes(pki.cert_pem(cert))
        return cls(key, cert, path)

    def issue(self, device: str, model: str = "CP-8845") -> tuple[pki.PrivateKey, x509.Certificate]:
        key = pki.generate_key("ec", 256)
        cert = pki.build_certificate(subject=f"CN={model}-{device},O=Phones Inc", public_key=key.public_key(),
                                     issuer_key=self.key, issuer_cert=self.cert, validity_days=3650)
        return key, cert


@dataclass
class SessionResult:
    received: list[Message] = field(default_factory=list)
    end_reason: int | None = None
    retry_delay: int | None = None
    stored: x509.Certificate | None = None
    keepalives: int = 0
    dropped: bool = False

    @property
    def commands(self) -> list[str]:
        return [m.COMMAND.name for m in self.received]


@dataclass
class LabPhone:
    """One phone.  ``keygen``: ok | fail | fail-ec | hang | wrong; ``store``: ok | drop | refuse."""

    name: str
    password: str | None = None
    password_only_when_asked: bool = False
    lsc: x509.Certificate | None = None
    lsc_key: pki.PrivateKey | None = None
    mic: x509.Certificate | None = None
    mic_key: pki.PrivateKey | None = None
    present: str | None = None          # "LSC" | "MIC" | None: what to answer AUTH_REQUEST with
    keygen: str = "ok"
    store: str = "ok"
    version: int = 3
    new_key: pki.PrivateKey | None = None
    keepalive_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def _key_for(self, kind: str, bits: int) -> pki.PrivateKey:
        if self.keygen == "wrong":
            kind, bits = ("ec", 384) if kind == "rsa" or bits != 384 else ("ec", 256)
        return rsa_key(bits) if kind == "rsa" else pki.generate_key("ec", bits)

    def _auth(self, ps: PhoneSession, msg: AuthRequest) -> None:
        password = self.password
        if self.password_only_when_asked and msg.auth_type is None:
            password = None
        present = self.present
        if present == "LSC" and self.lsc is not None and self.lsc_key is not None:
            cert, key, ctype = self.lsc, self.lsc_key, CertificateType.LSC
        elif present == "MIC" and self.mic is not None and self.mic_key is not None:
            cert, key, ctype = self.mic, self.mic_key, CertificateType.MIC
        else:
            ps.auth_response(password=password)
            return
        signature = tbs.sign_data(key, ps.auth_payload(), "sha256")
        ps.auth_response(password=password, certificate=CertificateValue(ctype, pki.cert_der(cert)),
                         signature=signature)

    async def run(self, lab: CAPFLab, timeout: float = 30.0) -> SessionResult:
        """One session with CAPF, until it ends (END_SESSION, RETRY_LATER, or a closed connection)."""
        ctx = ssl.create_default_context(cafile=str(lab.lab_pki.root_pem))
        reader, writer = await asyncio.open_connection("127.0.0.1", lab.capf.port, ssl=ctx,
                                                       server_hostname="127.0.0.1")
        ps = PhoneSession(device_name=self.name, max_version=self.version)
        result = SessionResult()
        try:
            async with asyncio.timeout(timeout):
                while not ps.closed:
                    data = await reader.read(65536)
                    if not data:
                        break
                    for msg in ps.receive_data(data):
                        result.received.append(msg)
                        if not await self._answer(ps, msg, result, writer):
                            return result
                    out = ps.data_to_send()
                    if out:
                        writer.write(out)
                        await writer.drain()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
        return result

    async def _answer(self, ps: PhoneSession, msg: Message, result: SessionResult,
                      writer: asyncio.StreamWriter) -> bool:
        if isinstance(msg, AuthRequest):
            self._auth(ps, msg)
        elif isinstance(msg, KeyGenRequest):
            kind, bits = msg.key_spec
            if self.keygen == "hang":
                return True
            if self.keygen == "fail" or (self.keygen == "fail-ec" and kind == "ec"):
                ps.key_gen_failed(info="test: no key")
                return True
            ps.in_progress()
            self.new_key = self._key_for(kind, bits)
            ps.key_gen_response(pki.public_key_der(self.new_key))
        elif isinstance(msg, SignCertRequest):
            assert self.new_key is not None
            asked = tbs.csr_info_public_key(msg.tbs_data)
            assert pki.same_public_key(asked, self.new_key), "CAPF asked to sign a request for another key"
            digest = msg.digest_type.hash_name if msg.digest_type is not None else "sha256"
            ps.sign_response(tbs.sign_csr_info(self.new_key, msg.tbs_data, digest))
        elif isinstance(msg, StoreCertRequest):
            if self.store == "drop":
                result.dropped = True
                writer.close()
                return False
            if self.store == "refuse":
                ps.store_response(reason=71, info="test: flash full")
                return True
            result.stored = pki.load_certificate(msg.certificate.der)
            self.lsc, self.lsc_key = result.stored, self.new_key
            ps.store_response()
        elif isinstance(msg, DeleteCertRequest):
            self.lsc = self.lsc_key = None
            ps.delete_response()
        elif isinstance(msg, FetchCertRequest):
            certs = [CertificateValue(CertificateType.LSC, pki.cert_der(c)) for c in (self.lsc,) if c is not None]
            certs += [CertificateValue(CertificateType.MIC, pki.cert_der(c)) for c in (self.mic,) if c is not None]
            ps.fetch_response(certs)
        elif isinstance(msg, RequestInProgress):
            result.keepalives += 1
            self.keepalive_seen.set()
        elif isinstance(msg, (EndSession, RetryLater)):
            result.end_reason = int(msg.reason) if msg.reason is not None else None
            if isinstance(msg, RetryLater):
                result.retry_delay = msg.retry_delay
        return True


@dataclass
class CAPFLab:
    dir: Path
    lab_pki: Any
    db_url: str
    backend: CountingSigner
    mic_ca: MICCA
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
        settings = ESTServerSettings(password_check=UsersFile.from_plain({RA_USER: RA_PASSWORD}))
        self.est = await start_est_server(self.backend, cert_file=self.lab_pki.server_cert_pem,
                                          key_file=self.lab_pki.server_key_pem, port=self.est_port,
                                          settings=settings)
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
                     "mic_trust_store": str(self.mic_ca.path), "read_timeout": 10, "session_timeout": 30,
                     "keepalive_seconds": 5, "max_keygen_seconds": 10, "enroll_timeout": 5, "retry_delay": 120,
                     "max_auth_failures": 3, "node_id": "test-node", **self.capf_settings, **capf},
        })

    async def start_capf(self, **capf: Any) -> RunningCAPF:
        self.capf = await start_capf(self.config(**capf), host="127.0.0.1", port=0, db=self.db,
                                     maintenance=False)
        return self.capf

    async def stop_capf(self) -> None:
        if self.capf is not None:
            await self.capf.close()
            self.capf = None

    # ---- the inventory

    def add_device(self, name: str, **settings: Any) -> None:
        assert self.db is not None
        with self.db.session() as s:
            inv.add_device(s, name, **settings)

    def set_device(self, name: str, **settings: Any) -> None:
        assert self.db is not None
        with self.db.session() as s:
            inv.set_device(s, name, **settings)

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
    lab = CAPFLab(tmp_path, lab_pki, db_url, CountingSigner(local_signer(lab_pki)), MICCA.make(tmp_path),
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
