"""One simulated phone: its identity and key material, in a folder or only in memory.

A ``Phone`` holds a MIC (the manufacturer's certificate and key), an LSC (the one CAPF issued and
its key) and, during an install, the new key it made when CAPF asked.  It does the three things a
phone's key store does for the protocol: make a new key of the type and size asked and return
only its public key; sign what the protocol asks it to sign (a request info for its own new key,
or the authentication payload with its LSC or MIC key); and store, delete or show certificates.
Folder layout: ``phone.json`` (name, model), ``mic.key``/``mic.pem`` (MIC first, then its
issuers), ``lsc.key``/``lsc.pem``, ``new.key`` (kept until an LSC for it is stored, so a
certificate delivered in a later session still fits).  Key files are written 0600.  A private
key must never leave this object: there is no accessor for one, and nothing here sends bytes.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from onlineca import pki
from onlineca.errors import OnlineCAError, ParseError, PhoneError
from onlineca.infra import files
from onlineca.pki import tbs
from onlineca.proto.devproto import CertificateType, CertificateValue

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
DEFAULT_MODEL = "Cisco 8865"
KeySpec = tuple[str, int]


class KeyPool:
    """Keys made ahead of time, by type and size, so that a benchmark measures CAPF, the RA and the
    CA rather than this machine's key generation.  A phone that finds no key of the asked spec in
    the pool makes one itself.  Thread-safe; each key is handed out once."""

    def __init__(self) -> None:
        self._keys: dict[KeySpec, list[pki.PrivateKey]] = defaultdict(list)
        self._lock = threading.Lock()

    def fill(self, wanted: dict[KeySpec, int], workers: int | None = None) -> None:
        """Make ``wanted[(type, bits)]`` keys of each spec, in a thread pool (OpenSSL releases the
        GIL while it searches for primes, so threads use every core)."""
        specs = [spec for spec, n in wanted.items() for _ in range(n)]
        with ThreadPoolExecutor(max_workers=workers or (os.cpu_count() or 2)) as ex:
            for spec, key in zip(specs, ex.map(lambda s: pki.generate_key(*s), specs), strict=True):
                self.put(spec, key)

    def put(self, spec: KeySpec, key: pki.PrivateKey) -> None:
        with self._lock:
            self._keys[spec].append(key)

    def take(self, spec: KeySpec) -> pki.PrivateKey | None:
        with self._lock:
            keys = self._keys.get(spec)
            return keys.pop() if keys else None

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._keys.values())


@dataclass(frozen=True)
class CertInfo:
    """What ``onlineca phone show`` prints about one certificate."""

    kind: str
    subject: str
    issuer: str
    serial: str
    not_before: str
    not_after: str
    key: str
    fingerprint: str

    @classmethod
    def of(cls, kind: str, cert: x509.Certificate) -> CertInfo:
        key_type, bits = pki.key_spec(cert.public_key())
        return cls(kind, pki.name_to_slash(cert.subject), pki.name_to_slash(cert.issuer), f"{cert.serial_number:x}",
                   cert.not_valid_before_utc.isoformat(), cert.not_valid_after_utc.isoformat(),
                   f"{key_type.upper()} {bits}", pki.fingerprint(cert))


class Phone:
    """One phone.  ``folder=None`` keeps everything in memory (fleets for benchmarks)."""

    def __init__(self, name: str, *, folder: str | os.PathLike[str] | None = None, model: str = DEFAULT_MODEL,
                 key_pool: KeyPool | None = None) -> None:
        if not NAME_RE.match(name or ""):
            raise PhoneError(f"device name {name!r} is not allowed",
                             hint="Use letters, digits, '_', '.', '-' (at most 64), e.g. SEP74A02FC0A675.")
        self.name = name
        self.model = model
        self.folder = Path(folder) if folder is not None else None
        self.key_pool = key_pool
        self._mic_key: pki.PrivateKey | None = None
        self.mic_chain: list[x509.Certificate] = []
        self._lsc_key: pki.PrivateKey | None = None
        self.lsc: x509.Certificate | None = None
        self._new_key: pki.PrivateKey | None = None
        self._lock = threading.Lock()  # key generation runs in a worker thread

    # ------------------------------------------------------------------ folder

    @classmethod
    def create(cls, folder: str | os.PathLike[str], name: str, *, model: str = DEFAULT_MODEL) -> Phone:
        """A new phone in ``folder`` (an existing phone of the same name there is reopened)."""
        path = Path(folder)
        if (path / "phone.json").exists():
            phone = cls.open(path)
            if phone.name != name.upper():
                raise PhoneError(f"{path} already holds phone {phone.name}", hint="Choose another --dir.")
            return phone
        phone = cls(name.upper(), folder=path, model=model)
        path.mkdir(parents=True, exist_ok=True)
        (path / "phone.json").write_text(json.dumps({"name": phone.name, "model": model}, indent=2) + "\n")
        return phone

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> Phone:
        path = Path(folder)
        try:
            meta = json.loads((path / "phone.json").read_text())
            phone = cls(str(meta["name"]), folder=path, model=str(meta.get("model", DEFAULT_MODEL)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PhoneError(f"{path} is not a phone folder ({exc})",
                             hint="Create one with 'onlineca phone enroll --dir DIR --name NAME'.") from None
        try:
            if (path / "mic.key").exists():
                phone._mic_key = files.read_private_key(path / "mic.key")
                phone.mic_chain = pki.load_certificates((path / "mic.pem").read_bytes())
            if (path / "lsc.key").exists() and (path / "lsc.pem").exists():
                phone._lsc_key = files.read_private_key(path / "lsc.key")
                phone.lsc = pki.load_certificate((path / "lsc.pem").read_bytes())
            if (path / "new.key").exists():
                phone._new_key = files.read_private_key(path / "new.key")
        except (OSError, OnlineCAError) as exc:
            raise PhoneError(f"{path}: unreadable key or certificate ({exc})") from None
        return phone

    def _save_key(self, file: str, key: pki.PrivateKey | None) -> None:
        if self.folder is None:
            return
        if key is None:
            (self.folder / file).unlink(missing_ok=True)
        else:
            files.write_private_key(self.folder / file, key)

    def _save_certs(self, file: str, certs: list[x509.Certificate]) -> None:
        if self.folder is None:
            return
        if certs:
            (self.folder / file).write_bytes(pki.certs_pem(certs))
        else:
            (self.folder / file).unlink(missing_ok=True)

    # ------------------------------------------------------------------ what the protocol asks

    @property
    def has_lsc(self) -> bool:
        return self.lsc is not None and self._lsc_key is not None

    @property
    def has_mic(self) -> bool:
        return bool(self.mic_chain) and self._mic_key is not None

    @property
    def pending_key(self) -> bool:
        return self._new_key is not None

    def new_key(self, key_type: str, bits: int) -> bytes:
        """Make the key CAPF asked for (or take one made ahead from the pool); its public key
        (SubjectPublicKeyInfo DER) is all that goes back.  Replaces an earlier pending key."""
        key = self.key_pool.take((key_type, bits)) if self.key_pool is not None else None
        if key is None:
            try:
                key = pki.generate_key(key_type, bits)
            except OnlineCAError as exc:
                raise PhoneError(f"cannot make a {key_type.upper()} {bits} key: {exc.message}",
                                 code="KEY_UNSUPPORTED") from None
        with self._lock:
            self._new_key = key
            self._save_key("new.key", key)
        return pki.public_key_der(key)

    def sign_request_info(self, info_der: bytes, digest: str = "sha256") -> bytes:
        """Sign CAPF's CertificationRequestInfo, but only if it asks for a certificate on the key
        this phone just made (a phone signs nothing else with it)."""
        with self._lock:
            key = self._new_key
        if key is None:
            raise PhoneError("asked to sign a request before any key was made", code="SIGN_FAILED")
        try:
            inner = tbs.csr_info_public_key(info_der)
        except ParseError as exc:
            raise PhoneError(f"the data to sign is not a request info: {exc.message}", code="SIGN_FAILED") from None
        if pki.public_key_der(inner) != pki.public_key_der(key):
            raise PhoneError("the request info is for another key than the one just made", code="SIGN_FAILED")
        try:
            return tbs.sign_csr_info(key, info_der, digest)
        except OnlineCAError as exc:
            raise PhoneError(f"cannot sign: {exc.message}", code="SIGN_FAILED") from None

    def auth_credential(self, kind: CertificateType, payload: bytes,
                        digest: str = "sha256") -> tuple[CertificateValue, bytes]:
        """The certificate of ``kind`` (LSC or MIC) and its key's signature over ``payload``."""
        if kind is CertificateType.LSC:
            cert, key = self.lsc, self._lsc_key
        else:
            cert, key = (self.mic_chain[0] if self.mic_chain else None), self._mic_key
        if cert is None or key is None:
            raise PhoneError(f"this phone has no {kind.name}", code="NO_CERTIFICATE")
        return CertificateValue(kind, pki.cert_der(cert)), tbs.sign_data(key, payload, digest)

    def store_lsc(self, lsc: x509.Certificate | bytes) -> None:
        """Install the LSC CAPF sent (parsed already, or its DER): it must certify the pending
        key (or be the LSC already installed, delivered again); the old LSC is replaced only now."""
        cert = lsc if isinstance(lsc, x509.Certificate) else pki.load_certificate(lsc)
        cert_key = pki.public_key_der(cert.public_key())
        with self._lock:
            if self._new_key is not None and cert_key == pki.public_key_der(self._new_key):
                self._lsc_key, self.lsc, self._new_key = self._new_key, cert, None
                self._save_key("lsc.key", self._lsc_key)
                self._save_certs("lsc.pem", [cert])
                self._save_key("new.key", None)
                return
            if self.lsc is not None and self._lsc_key is not None and cert_key == pki.public_key_der(self._lsc_key):
                self.lsc = cert
                self._save_certs("lsc.pem", [cert])
                return
        raise PhoneError("the certificate is not for a key of this phone", code="STORE_FAILED")

    def provision_lsc(self, cert: x509.Certificate, key: pki.PrivateKey) -> None:
        """Give the phone an LSC and its key made elsewhere (another CAPF, a lab CA, a test): what
        it presents when CAPF asks for its existing certificate.  The key must be the certificate's."""
        if not pki.same_public_key(cert.public_key(), key):
            raise PhoneError("the LSC does not certify the key given with it", code="KEY_MISMATCH")
        with self._lock:
            self.lsc, self._lsc_key = cert, key
            self._save_key("lsc.key", key)
            self._save_certs("lsc.pem", [cert])

    def delete_lsc(self) -> bool:
        """Remove the LSC and its key; False when there was none."""
        with self._lock:
            had = self.lsc is not None
            self.lsc, self._lsc_key = None, None
            self._save_key("lsc.key", None)
            self._save_certs("lsc.pem", [])
            return had

    def certificates(self, kind: CertificateType | None = None) -> list[CertificateValue]:
        """The phone's certificates for FETCH_CERT_RESPONSE (all, or those of ``kind``)."""
        out: list[CertificateValue] = []
        if self.lsc is not None and kind in (None, CertificateType.LSC):
            out.append(CertificateValue(CertificateType.LSC, pki.cert_der(self.lsc)))
        if self.mic_chain and kind in (None, CertificateType.MIC):
            out.append(CertificateValue(CertificateType.MIC, pki.cert_der(self.mic_chain[0])))
        return out

    # ------------------------------------------------------------------ manufacturing

    def mic_public_key(self, key_type: str = "ec", bits: int = 256) -> pki.PublicKey:
        """The MIC key's public half, making the key on first use (the factory step)."""
        with self._lock:
            if self._mic_key is None:
                self._mic_key = pki.generate_key(key_type, bits)
                self._save_key("mic.key", self._mic_key)
            return self._mic_key.public_key()

    def install_mic(self, chain: Iterable[x509.Certificate]) -> None:
        chain = list(chain)
        if not chain or self._mic_key is None or not pki.same_public_key(chain[0].public_key(), self._mic_key):
            raise PhoneError("the MIC does not certify this phone's MIC key", code="MIC")
        self.mic_chain = chain
        self._save_certs("mic.pem", chain)

    def describe(self) -> dict[str, object]:
        """Name, model, folder and each certificate (for ``phone show``)."""
        certs = [CertInfo.of("LSC", self.lsc).__dict__] if self.lsc is not None else []
        if self.mic_chain:
            certs.append(CertInfo.of("MIC", self.mic_chain[0]).__dict__)
        return {"name": self.name, "model": self.model, "folder": str(self.folder) if self.folder else None,
                "pending_key": self.pending_key, "certificates": certs}

    def __repr__(self) -> str:
        return f"Phone({self.name!r}, lsc={self.has_lsc}, mic={self.has_mic})"


__all__ = ["DEFAULT_MODEL", "CertInfo", "KeyPool", "KeySpec", "Phone", "PhoneError"]
