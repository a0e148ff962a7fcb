"""The CA's issuing engine: its key material on disk, requests in the database, signing in-process.

``init_ca`` makes a two-tier lab PKI (root + issuing intermediate, keys 0600) and a web server
certificate in ``<data_dir>/ca/``.  ``CAEngine`` loads the keys once, and for each certfnsh.asp
submission runs the policy (``ca.templates``), records the request with its ReqID and disposition
and, when the template allows, signs, all in one database transaction, so a certificate is stored
before any client can see it.  It never logs a key or a password and never talks HTTP.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy import select

from onlineca import pki
from onlineca.config import CAPaths, Config, DataDir, TemplateConfig
from onlineca.errors import CAError
from onlineca.infra import files
from onlineca.policy import ca as policy
from onlineca.store import CARequest, Database

log = logging.getLogger("onlineca.ca")

ISSUED, PENDING, DENIED, FAILED = "issued", "pending", "denied", "failed"


def users_path(config: Config, data_dir: str | Path) -> Path:
    return Path(config.ca.users_file) if config.ca.users_file else DataDir(Path(data_dir)).ca.users


def init_ca(config: Config, data_dir: str | Path, *, key_type: str | None = None, key_size: int | None = None,
            root_name: str | None = None, issuing_name: str | None = None, force: bool = False) -> CAPaths:
    """Create the root, the issuing CA, the chain and the web server certificate."""
    ca_paths = DataDir(Path(data_dir)).ca
    if ca_paths.exists() and not force:
        raise CAError(f"a CA already exists in {ca_paths.dir}",
                      hint="Use --force to replace it (every certificate it issued becomes untrusted).")
    cfg = config.ca
    key_type = key_type or cfg.key_type
    size: int | str = key_size or (cfg.key_size if key_type == "rsa" else cfg.ec_curve)
    root_key = pki.generate_key(key_type, size)
    root = pki.build_certificate(subject=root_name or cfg.root_name, public_key=root_key.public_key(),
                                 issuer_key=root_key, is_ca=True, validity_days=cfg.root_validity_days)
    issuing_key = pki.generate_key(key_type, size)
    issuing = pki.build_certificate(subject=issuing_name or cfg.issuing_name, public_key=issuing_key.public_key(),
                                    issuer_key=root_key, issuer_cert=root, is_ca=True, path_length=0,
                                    validity_days=cfg.issuing_validity_days)
    ca_paths.dir.mkdir(parents=True, exist_ok=True)
    files.write_private_key(ca_paths.root_key, root_key)
    files.write_private_key(ca_paths.issuing_key, issuing_key)
    ca_paths.root_cert.write_bytes(pki.cert_pem(root))
    ca_paths.issuing_cert.write_bytes(pki.cert_pem(issuing))
    ca_paths.chain.write_bytes(pki.certs_pem([issuing, root]))
    issue_web_certificate(ca_paths, cfg.web_names, issuing_key, issuing)
    return ca_paths


def issue_web_certificate(ca_paths: CAPaths, names: list[str], issuing_key: pki.PrivateKey,
                          issuing: x509.Certificate) -> None:
    """The HTTPS certificate ``ca serve`` uses by default: EC P-256, the configured web names."""
    web_key = pki.generate_key("ec", 256)
    web = pki.build_certificate(subject=f"CN={names[0] if names else 'localhost'}", public_key=web_key.public_key(),
                                issuer_key=issuing_key, issuer_cert=issuing, sans=names,
                                extended_key_usage=["server_auth"], validity_days=825)
    files.write_private_key(ca_paths.web_key, web_key)
    ca_paths.web_cert.write_bytes(pki.certs_pem([web, issuing]))


@dataclass(frozen=True)
class Outcome:
    """The answer to one submission: what certfnsh.asp shows."""

    req_id: int | None
    disposition: str
    hresult: int
    message: str
    cert: x509.Certificate | None = None


def _outcome(row: CARequest) -> Outcome:
    cert = pki.load_certificate(row.cert_der) if row.cert_der else None
    return Outcome(row.req_id, row.disposition, policy.to_unsigned(row.hresult), row.disposition_message, cert)


class CAEngine:
    """Issues from the templates of ``config.ca``; keys are read once, at construction."""

    def __init__(self, config: Config, data_dir: str | Path, db: Database) -> None:
        self.config = config
        self.ca_paths = DataDir(Path(data_dir)).ca
        if not self.ca_paths.issuing_key.exists():
            raise CAError(f"no CA in {self.ca_paths.dir}", hint="Run 'onlineca ca init' first.")
        self.db = db
        self.issuing_key = files.read_private_key(self.ca_paths.issuing_key)
        self.issuing = pki.load_certificate(self.ca_paths.issuing_cert.read_bytes())
        self.root = pki.load_certificate(self.ca_paths.root_cert.read_bytes())
        if not pki.same_public_key(self.issuing_key, self.issuing.public_key()):  # type: ignore[arg-type]
            raise CAError(f"{self.ca_paths.issuing_key} does not belong to {self.ca_paths.issuing_cert}",
                          hint="Run 'onlineca ca init --force' to make a new CA.")
        self.templates: list[TemplateConfig] = list(config.ca.templates)

    @property
    def chain(self) -> list[x509.Certificate]:
        """The CA chain, issuing CA first (what certnew.p7b?ReqID=CACert serves)."""
        return [self.issuing, self.root]

    # -- submissions ---------------------------------------------------------------------------

    def submit(self, requester: str, cert_request: str, cert_attrib: str) -> Outcome:
        """One certfnsh.asp ``Mode=newreq``: decide, store and (maybe) sign in one transaction."""
        attributes = policy.parse_cert_attrib(cert_attrib)
        try:
            der = policy.request_der(cert_request)
        except policy.RequestRefused as exc:
            return Outcome(None, FAILED, exc.hresult, exc.disposition)
        row = CARequest(requester=requester, template=attributes.get("certificatetemplate", "")[:256],
                        csr_der=der, attributes=cert_attrib[:4096], subject="", hresult=0,
                        disposition=PENDING, disposition_message=policy.TAKEN_UNDER_SUBMISSION, resolved_by="")
        decision: policy.Decision | None = None
        try:
            csr = policy.load_request(der)
            row.subject = pki.name_to_slash(csr.subject)[:1024]
            decision = policy.decide(self.templates, requester, attributes, csr)
        except policy.RequestRefused as exc:
            row.disposition = FAILED if exc.hresult in (policy.CRYPT_E_ASN1_BADTAG, policy.CRYPT_E_ASN1_EOD,
                                                        policy.NTE_BAD_SIGNATURE) else DENIED
            row.hresult, row.disposition_message = policy.to_signed(exc.hresult), exc.disposition
            row.resolved_at, row.resolved_by = dt.datetime.now(dt.UTC), "policy"
        with self.db.session() as s:
            s.add(row)
            s.flush()  # assigns the ReqID
            if decision is not None:
                row.template = decision.template.name
                if decision.action == "issue":
                    self._sign(row, csr, decision, "policy")
            outcome = _outcome(row)
        log.info("ReqID %s from %s template %r: %s%s", outcome.req_id, requester, row.template,
                 outcome.disposition,
                 f" ({policy.hresult_hex(outcome.hresult)})" if outcome.hresult else "")
        return outcome

    def _sign(self, row: CARequest, csr: x509.CertificateSigningRequest, decision: policy.Decision, by: str) -> None:
        t = decision.template
        cert = pki.build_certificate(
            subject=decision.subject, public_key=csr.public_key(), issuer_key=self.issuing_key,  # type: ignore[arg-type]
            issuer_cert=self.issuing, validity_days=t.validity_days, key_usage=t.key_usage,
            extended_key_usage=t.extended_key_usage, sans=decision.sans)
        row.cert_der = pki.cert_der(cert)
        row.serial = format(cert.serial_number, "x")
        row.not_after = cert.not_valid_after_utc
        row.disposition, row.hresult, row.disposition_message = ISSUED, 0, policy.ISSUED_MESSAGE
        row.resolved_at, row.resolved_by = dt.datetime.now(dt.UTC), by

    # -- reading and resolving -------------------------------------------------------------------

    def get(self, req_id: int) -> CARequest | None:
        with self.db.session() as s:
            return s.get(CARequest, req_id)

    def outcome(self, req_id: int, requester: str | None = None) -> Outcome | None:
        """The request's outcome; None if there is none (or, with ``requester``, it is someone else's)."""
        row = self.get(req_id)
        if row is None or (requester is not None and row.requester.lower() != requester.lower()):
            return None
        return _outcome(row)

    def list(self, disposition: str | None = None, requester: str | None = None, limit: int = 1000) -> list[CARequest]:
        q = select(CARequest).order_by(CARequest.req_id).limit(limit)
        if disposition:
            q = q.where(CARequest.disposition == disposition)
        if requester:
            q = q.where(CARequest.requester == requester)
        with self.db.session() as s:
            return list(s.scalars(q))

    def approve(self, req_id: int, by: str = "administrator") -> Outcome:
        """Issue a pending request (a certificate manager's "Issue"), re-checking it against its template."""
        with self.db.session() as s:
            row = self._pending_row(s, req_id)
            csr = policy.load_request(row.csr_der)
            decision = policy.decide(self.templates, row.requester, policy.parse_cert_attrib(row.attributes), csr)
            self._sign(row, csr, decision, by)
            outcome = _outcome(row)
        log.info("ReqID %s issued by %s", req_id, by)
        return outcome

    def deny(self, req_id: int, by: str = "administrator") -> Outcome:
        with self.db.session() as s:
            row = self._pending_row(s, req_id)
            row.disposition = DENIED
            row.hresult = policy.to_signed(policy.CERTSRV_E_ADMIN_DENIED_REQUEST)
            row.disposition_message = f"Denied by {by}"
            row.resolved_at, row.resolved_by = dt.datetime.now(dt.UTC), by
            outcome = _outcome(row)
        log.info("ReqID %s denied by %s", req_id, by)
        return outcome

    @staticmethod
    def _pending_row(s, req_id: int) -> CARequest:  # type: ignore[no-untyped-def]
        row = s.get(CARequest, req_id, with_for_update=True)
        if row is None:
            raise CAError(f"no request with ReqID {req_id}", hint="List them with 'onlineca ca requests list'.")
        if row.disposition != PENDING:
            raise CAError(f"ReqID {req_id} is {row.disposition}, not pending",
                          hint="Only pending requests can be approved or denied.")
        return row


__all__ = [
    "DENIED",
    "FAILED",
    "ISSUED",
    "PENDING",
    "CAEngine",
    "CAError",
    "Outcome",
    "init_ca",
    "issue_web_certificate",
    "users_path",
]
