"""Our CA's revocation service: revoke, publish CRLs, answer OCSP.

``Revocation`` holds the issuing CA's key (it signs CRLs and, with ``[ca] ocsp_signer = "ca"``,
OCSP answers) and the CA's public URLs: the CRL at ``<public_url>/CertEnroll/<CA name>.crl``
(the delta CRL at ``.../<CA name>+.crl``), the CA certificate at ``.../<CA name>.crt`` and OCSP
at ``<public_url>/ocsp``, the paths AD CS uses, which ``CAEngine`` writes into every certificate
it issues (CDP and AIA).  A revocation is stored (``store.ca_revocations``), then a CRL is
published at once (a base CRL, or a delta when ``delta_crl_hours`` is set); ``refresh`` makes a
new base CRL every ``crl_refresh_hours``, well before the last one's nextUpdate, and a new delta
before its own.  Each CRL is kept in the database (numbers never reused) and copied to
``<data>/ca/CertEnroll/`` for a web server of your own.  Every method blocks (signing, the
database): the web server calls them in its worker threads.  It never logs a key.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from cryptography import x509

from onlineca import pki
from onlineca.config import CAPaths, Config
from onlineca.errors import OnlineCAError, PKIError
from onlineca.infra import files
from onlineca.pki import revocation as rev
from onlineca.store.ca_revocations import CARevocations, CRLKind, RevocationRecord
from onlineca.store.db import Database
from onlineca.store.revocation_models import CACRL

log = logging.getLogger("onlineca.ca")

# The delegated OCSP responder's certificate: short-lived (it cannot be revoked: ocsp-nocheck),
# made again once half its life has passed.
OCSP_RESPONDER_DAYS = 30
ROOT_CRL_DAYS = 30
# id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): clients do not check the responder's own status.
OCSP_NOCHECK = x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.5")


def public_base(config: Config, https_port: int | None = None) -> str:
    """``[ca] public_url``, else ``http://<first web name>:<http_port>`` when the plain HTTP port
    is on, else ``https://<first web name>:<the HTTPS port>`` (the port bound, when given)."""
    ca = config.ca
    if ca.public_url:
        return ca.public_url
    host = ca.web_names[0] if ca.web_names else ca.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if ca.http_port:
        return f"http://{host}:{ca.http_port}"
    return f"https://{host}:{https_port or ca.port}"


@dataclass(frozen=True)
class PublicURLs:
    """Where clients find the CA's CRLs, certificate and OCSP responder."""

    base: str
    ca_name: str

    @property
    def crl(self) -> str:
        return f"{self.base}/CertEnroll/{quote(self.ca_name)}.crl"

    @property
    def delta_crl(self) -> str:
        return f"{self.base}/CertEnroll/{quote(self.ca_name)}+.crl"  # AD CS's delta suffix

    @property
    def ca_cert(self) -> str:
        return f"{self.base}/CertEnroll/{quote(self.ca_name)}.crt"

    @property
    def ocsp(self) -> str:
        return f"{self.base}/ocsp"


class Revocation:
    """Revocations, CRLs and OCSP answers of the issuing CA in ``ca_paths``."""

    def __init__(self, config: Config, ca_paths: CAPaths, issuing: x509.Certificate,
                 issuing_key: pki.PrivateKey | pki.ExternalSigner,
                 db: Database, *, base_url: str | None = None, root: x509.Certificate | None = None) -> None:
        self.config = config
        self.ca_paths = ca_paths
        self.issuing, self.issuing_key = issuing, issuing_key
        self.store = CARevocations(db)
        self.ca_name = pki.common_name(issuing.subject) or "onlineca CA"
        self.urls = PublicURLs(base_url or public_base(config), self.ca_name)
        self.issuing_der = pki.cert_der(issuing)
        self._lock = threading.Lock()  # one CRL built at a time in this process
        self._responder: tuple[x509.Certificate, pki.PrivateKey] | None = None
        # The root's CRL (an empty ARL: revoking the issuing CA means a new CA), so that
        # ``openssl verify -crl_check_all`` finds a CRL for every certificate of the chain; only
        # where the root's key is (the lab's ``ca init``; an offline root publishes its own).
        self.root = root
        self._arl: tuple[dt.datetime, bytes] | None = None

    # ---- settings ------------------------------------------------------------------------------

    @property
    def delta(self) -> bool:
        return self.config.ca.delta_crl_hours > 0

    def extensions(self) -> list[x509.Extension[x509.ExtensionType]]:
        """The CDP and AIA of a certificate this CA issues."""
        return rev.revocation_extensions(crl_url=self.urls.crl, ca_issuers_url=self.urls.ca_cert,
                                         ocsp_url=self.urls.ocsp if self.config.ca.ocsp else None)

    # ---- revoking ------------------------------------------------------------------------------

    def revoke(self, *, serial: str | None = None, req_id: int | None = None, reason: str = "unspecified",
               by: str = "administrator", requester: str | None = None,
               now: dt.datetime | None = None) -> RevocationRecord:
        """Record the revocation, then publish a CRL that lists it (a delta CRL in delta mode)."""
        reason = rev.parse_reason(reason)
        if serial is not None:
            serial = format(rev.parse_serial(serial), "x")
        record = self.store.revoke(serial=serial, req_id=req_id, reason=reason, by=by, requester=requester, now=now)
        if record.already:
            log.info("serial %s was already revoked (%s, %s, by %s)", record.serial, record.reason,
                     record.revoked_at.isoformat(), record.revoked_by)
            return record
        log.warning("serial %s (ReqID %s) revoked by %s: %s", record.serial, record.req_id, by, reason)
        self.publish(kinds=("delta",) if self.delta else ("base",), now=now)
        return record

    # ---- CRLs ----------------------------------------------------------------------------------

    def publish(self, kinds: tuple[CRLKind, ...] = ("base", "delta"), now: dt.datetime | None = None) -> list[CACRL]:
        """Sign and store new CRLs of these kinds now (a delta only in delta mode, against the
        newest base); copy them to the CertEnroll folder."""
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        made = []
        with self._lock:
            for kind in kinds:
                if kind == "delta" and not self.delta:
                    continue
                made.append(self._make(kind, now))
        return made

    def _make(self, kind: CRLKind, now: dt.datetime) -> CACRL:
        ca = self.config.ca
        entries = [rev.Revoked(int(r.serial, 16), r.revoked_at, r.reason) for r in self.store.listed(now)]
        base = self.store.latest("base") if kind == "delta" else None
        if kind == "delta" and base is None:
            kind, base = "base", None  # a delta needs its base first
        if kind == "delta":
            assert base is not None
            in_base = {e.serial_number for e in rev.load_crl(base.der)}
            entries = [e for e in entries if e.serial not in in_base]
            hours = ca.delta_crl_hours
        else:
            hours = ca.crl_validity_hours
        next_update = now + dt.timedelta(hours=hours)

        def build(number: int) -> tuple[bytes, dt.datetime, dt.datetime, int]:
            crl = rev.build_crl(issuer_cert=self.issuing, issuer_key=self.issuing_key, entries=entries, number=number,
                                this_update=now, next_update=next_update,
                                delta_of=base.number if base is not None else None,
                                freshest_url=self.urls.delta_crl if kind == "base" and self.delta else None)
            return rev.crl_der(crl), now, next_update, len(entries)

        row = self.store.next_crl(kind, build, base.number if base is not None else None)
        log.info("%s CRL number %d published: %d entries, next update %s", kind, row.number, row.entries,
                 next_update.isoformat())
        self._write(kind, row.der)
        return row

    def _write(self, kind: CRLKind, der: bytes) -> None:
        folder = self.ca_paths.cert_enroll
        try:
            files.ensure_dir(folder, 0o755)
            name = f"{self.ca_name}+.crl" if kind == "delta" else f"{self.ca_name}.crl"
            files.write_file(folder / name, der, mode=0o644)
            crt = folder / f"{self.ca_name}.crt"
            if not crt.exists():
                files.write_file(crt, self.issuing_der, mode=0o644)
        except OSError as exc:  # a copy for other web servers: the database holds the CRL
            log.error("cannot write the CRL copy in %s: %s", folder, exc)

    def _due(self, row: CACRL | None, kind: CRLKind, now: dt.datetime) -> bool:
        if row is None:
            return True
        this_update, next_update = _utc(row.this_update), _utc(row.next_update)
        if kind == "base":
            refresh = this_update + dt.timedelta(hours=self.config.ca.crl_refresh_hours)
            # Never let a CRL reach its nextUpdate: at the latest a tenth of its life before.
            return now >= min(refresh, next_update - (next_update - this_update) / 10)
        return now >= this_update + (next_update - this_update) / 2

    def current(self, kind: CRLKind, now: dt.datetime | None = None) -> CACRL | None:
        """The newest CRL of this kind, made first when there is none or it is due (None: a delta
        asked for when delta CRLs are off).  Read from the database each time: another process
        (``ca revoke``, a second CA node) may have published since."""
        if kind == "delta" and not self.delta:
            return None
        now = now or dt.datetime.now(dt.UTC)
        row = self.store.latest(kind)
        if self._due(row, kind, now) or (kind == "delta" and row is not None and self._stale_delta(row)):
            made = self.publish(kinds=(kind,), now=now)
            row = made[0] if made else row
        return row

    def _stale_delta(self, delta: CACRL) -> bool:
        base = self.store.latest("base")
        return base is not None and delta.base_number != base.number

    def refresh(self, now: dt.datetime | None = None) -> None:
        """The periodic pass: a new base CRL (and delta, and the root's) when due."""
        self.current("base", now)
        self.root_crl(now)
        if self.delta:
            self.current("delta", now)

    @property
    def root_name(self) -> str | None:
        return (pki.common_name(self.root.subject) or None) if self.root is not None else None

    def root_crl(self, now: dt.datetime | None = None) -> bytes | None:
        """The root's CRL (DER), signed again once half of its ROOT_CRL_DAYS have passed; None
        without the root's key."""
        if self.root is None or not self.ca_paths.root_key.exists():
            return None
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        with self._lock:
            if self._arl is None or now >= self._arl[0]:
                key = files.read_private_key(self.ca_paths.root_key)
                crl = rev.build_crl(issuer_cert=self.root, issuer_key=key, entries=(), number=int(now.timestamp()),
                                    this_update=now, next_update=now + dt.timedelta(days=ROOT_CRL_DAYS))
                self._arl = (now + dt.timedelta(days=ROOT_CRL_DAYS / 2), rev.crl_der(crl))
                folder = self.ca_paths.cert_enroll
                try:
                    files.ensure_dir(folder, 0o755)
                    files.write_file(folder / f"{self.root_name}.crl", self._arl[1], mode=0o644)
                except OSError as exc:
                    log.error("cannot write the root CRL copy in %s: %s", folder, exc)
            return self._arl[1]

    # ---- OCSP ----------------------------------------------------------------------------------

    def responder(self) -> tuple[x509.Certificate, pki.PrivateKey, list[x509.Certificate]]:
        """Who signs OCSP answers: the issuing CA, or the delegated responder (made or renewed
        here), with the certificates the answer carries."""
        # A key in a token signs CRLs and certificates, not OCSP answers (``cryptography`` builds
        # those with a key object): then the delegated responder answers, with its own key.
        if self.config.ca.ocsp_signer == "ca" and isinstance(self.issuing_key, pki.PrivateKey):
            return self.issuing, self.issuing_key, []
        now = dt.datetime.now(dt.UTC)
        current = self._responder
        if current is None or now >= _half_life(current[0]):
            current = self._load_or_issue_responder(now)
            self._responder = current
        return current[0], current[1], [current[0]]

    def _load_or_issue_responder(self, now: dt.datetime) -> tuple[x509.Certificate, pki.PrivateKey]:
        cert_path, key_path = self.ca_paths.ocsp_cert, self.ca_paths.ocsp_key
        try:
            cert = files.load_cert_file(cert_path)[0]
            key = files.read_private_key(key_path)
            if now < _half_life(cert) and cert.issuer == self.issuing.subject and pki.same_public_key(key, cert.public_key()):
                return cert, key
        except (OSError, OnlineCAError, ValueError):
            pass
        key = pki.generate_key("ec", 256)
        cert = pki.build_certificate(
            subject=f"CN={self.ca_name} OCSP Responder", public_key=key.public_key(), issuer_key=self.issuing_key,
            issuer_cert=self.issuing, validity_days=OCSP_RESPONDER_DAYS, key_usage=["digital_signature"],
            extended_key_usage=["ocsp_signing"],
            extra_extensions=[x509.Extension(OCSP_NOCHECK, False, x509.UnrecognizedExtension(OCSP_NOCHECK, b"\x05\x00"))])
        files.write_private_key(key_path, key)
        files.write_file(cert_path, pki.cert_pem(cert))
        log.info("OCSP responder certificate issued: serial %x, valid until %s", cert.serial_number,
                 cert.not_valid_after_utc.isoformat())
        return cert, key

    def ocsp(self, request_der: bytes, now: dt.datetime | None = None) -> tuple[bytes, str]:
        """The DER OCSP response to a request, and what it said (good, revoked, unknown, malformed,
        unauthorized) for the metrics and the log."""
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        try:
            query = rev.parse_ocsp_request(request_der)
        except PKIError:
            return rev.ocsp_error("malformed"), "malformed"
        if not rev.asks_about(query, self.issuing):
            return rev.ocsp_error("unauthorized"), "unauthorized"
        status, record = self.store.status(format(query.serial, "x"))
        cert, key, extra = self.responder()
        body = rev.ocsp_response(query, status=status, responder_cert=cert, responder_key=key, this_update=now,
                                 next_update=now + dt.timedelta(hours=self.config.ca.ocsp_validity_hours),
                                 revoked_at=record.revoked_at if record else None,
                                 reason=record.reason if record else None, certificates=extra)
        return body, status


def _half_life(cert: x509.Certificate) -> dt.datetime:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) / 2


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def published_file(name: str, ca_name: str, root_name: str | None = None
                   ) -> Literal["base", "delta", "crt", "root"] | None:
    """What ``/CertEnroll/<name>`` is (case-insensitive, as IIS): the base or delta CRL, the CA
    certificate, the root's CRL, or nothing of ours."""
    lowered, ca = name.lower(), ca_name.lower()
    known: dict[str, Literal["base", "delta", "crt", "root"]] = {
        f"{ca}.crl": "base", f"{ca}+.crl": "delta", f"{ca}.crt": "crt"}
    if root_name and root_name.lower() != ca:
        known[f"{root_name.lower()}.crl"] = "root"
    return known.get(lowered)


__all__ = ["OCSP_NOCHECK", "PublicURLs", "Revocation", "public_base", "published_file"]
