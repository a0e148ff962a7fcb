"""The CA's issuing engine: its key material on disk, requests in the database, signing in-process.

``init_ca`` makes a two-tier lab PKI (root + issuing intermediate, keys 0600) and a web server
certificate in ``<data_dir>/ca/``.  ``CAEngine`` loads the keys once, and for each certfnsh.asp
submission reads the request (``proto.certsrv.server``), runs the policy (``policy.ca``) and,
when the template allows, signs; then it stores the request with its disposition and certificate
in one transaction (``store.ca_requests``), so a certificate is stored before any client can see
its ReqID.  Answers are ``proto.results`` values.  It never logs a key or a password and never
talks HTTP.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from onlineca import pki
from onlineca.ca.revocation import Revocation
from onlineca.ca.users import users_path
from onlineca.config import CAPaths, Config, DataDir, TemplateConfig
from onlineca.errors import CAError, ConfigError, OnlineCAError, PKIError, RequestRefused
from onlineca.infra import files
from onlineca.pki import vouch
from onlineca.policy import ca as policy
from onlineca.proto.certsrv import hresults as hr, server
from onlineca.proto.results import DENIED, FAILED, ISSUED, PENDING, Denied, EnrollResult, Issued, Pending
from onlineca.store import CARequest, Database
from onlineca.store.ca_requests import CARequests, Resolution

log = logging.getLogger("onlineca.ca")

# id-kp-cmcRA (RFC 6402): the RA-agent EKU a voucher must hold.
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"


def _is_ra_agent(cert: x509.Certificate) -> bool:
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return any(oid.dotted_string == ID_KP_CMC_RA for oid in ekus)


# ---- the key-loading seam (branch ops): where the issuing key lives -- a file, an encrypted
# file (PKCS#8, [ca] key_passphrase_file or $ONLINECA_CA_KEY_PASSPHRASE), or a PKCS#11 token.

IssuingKey = pki.PrivateKey | pki.ExternalSigner


def load_issuing_key(config: Config, ca_paths: CAPaths) -> IssuingKey:
    """The key the CA signs with: in the token when ``[ca] pkcs11_module`` is set, else the file."""
    cfg = config.ca
    if cfg.pkcs11_module:
        from onlineca.infra.pkcs11 import Pkcs11Signer
        return Pkcs11Signer(cfg.pkcs11_module, cfg.pkcs11_token_label, cfg.pkcs11_key_label, cfg.pkcs11_pin())
    return files.read_private_key(ca_paths.issuing_key, cfg.key_passphrase())


def _new_issuing_key(config: Config, key_type: str, size: int | str, pkcs11: bool) -> IssuingKey:
    cfg = config.ca
    if not pkcs11:
        return pki.generate_key(key_type, size)
    if not cfg.pkcs11_module:
        raise ConfigError("--pkcs11 needs [ca] pkcs11_module (and pkcs11_token_label, pkcs11_key_label)",
                          hint="Set them in the configuration file, with the PIN in pkcs11_pin_file or $ONLINECA_CA_PKCS11_PIN.")
    from onlineca.infra import pkcs11 as token
    bits = size if isinstance(size, int) else {"P-256": 256, "P-384": 384, "P-521": 521}[size]
    token.generate_key(cfg.pkcs11_module, cfg.pkcs11_token_label, cfg.pkcs11_key_label, cfg.pkcs11_pin(),
                       key_type, bits)
    return load_issuing_key(config, DataDir(config.data_path).ca)


def init_ca(config: Config, data_dir: str | Path, *, key_type: str | None = None, key_size: int | None = None,
            root_name: str | None = None, issuing_name: str | None = None, force: bool = False,
            encrypt_keys: bool = False, pkcs11: bool = False) -> CAPaths:
    """Create the root, the issuing CA, the chain and the web server certificate.  With
    ``encrypt_keys`` the root and issuing keys are written as encrypted PKCS#8 (the passphrase of
    ``[ca] key_passphrase_file`` or $ONLINECA_CA_KEY_PASSPHRASE); with ``pkcs11`` the issuing key
    is made in the token of ``[ca] pkcs11_*`` and no issuing.key is written."""
    ca_paths = DataDir(Path(data_dir)).ca
    passphrase = config.ca.key_passphrase() if encrypt_keys else None
    if encrypt_keys and passphrase is None:
        raise ConfigError("--encrypt-keys needs a passphrase",
                          hint="Set [ca] key_passphrase_file, or $ONLINECA_CA_KEY_PASSPHRASE.")
    if ca_paths.exists() and not force:
        raise CAError(f"a CA already exists in {ca_paths.dir}",
                      hint="Use --force to replace it (every certificate it issued becomes untrusted).")
    cfg = config.ca
    key_type = key_type or cfg.key_type
    size: int | str = key_size or (cfg.key_size if key_type == "rsa" else cfg.ec_curve)
    root_key = pki.generate_key(key_type, size)
    root = pki.build_certificate(subject=root_name or cfg.root_name, public_key=root_key.public_key(),
                                 issuer_key=root_key, is_ca=True, validity_days=cfg.root_validity_days)
    ca_paths.dir.mkdir(parents=True, exist_ok=True)
    issuing_key = _new_issuing_key(config, key_type, size, pkcs11)
    issuing = pki.build_certificate(subject=issuing_name or cfg.issuing_name, public_key=issuing_key.public_key(),
                                    issuer_key=root_key, issuer_cert=root, is_ca=True, path_length=0,
                                    validity_days=cfg.issuing_validity_days)
    files.write_private_key(ca_paths.root_key, root_key, passphrase)
    if isinstance(issuing_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        files.write_private_key(ca_paths.issuing_key, issuing_key, passphrase)
    else:
        ca_paths.issuing_key.unlink(missing_ok=True)  # the token holds it: no stale file beside it
    ca_paths.root_cert.write_bytes(pki.cert_pem(root))
    ca_paths.issuing_cert.write_bytes(pki.cert_pem(issuing))
    ca_paths.chain.write_bytes(pki.certs_pem([issuing, root]))
    issue_web_certificate(ca_paths, cfg.web_names, issuing_key, issuing)
    close = getattr(issuing_key, "close", None)
    if callable(close):  # the token's session
        close()
    return ca_paths


def issue_web_certificate(ca_paths: CAPaths, names: list[str], issuing_key: IssuingKey,
                          issuing: x509.Certificate) -> None:
    """The HTTPS certificate ``ca serve`` uses by default: EC P-256, the configured web names."""
    web_key = pki.generate_key("ec", 256)
    web = pki.build_certificate(subject=f"CN={names[0] if names else 'localhost'}", public_key=web_key.public_key(),
                                issuer_key=issuing_key, issuer_cert=issuing, sans=names,
                                extended_key_usage=["server_auth"], validity_days=825)
    files.write_private_key(ca_paths.web_key, web_key)
    ca_paths.web_cert.write_bytes(pki.certs_pem([web, issuing]))


def _result(row: CARequest) -> EnrollResult:
    """What certfnsh.asp shows for a stored request: the DER stays as stored (nobody here needs
    the certificate object)."""
    if row.disposition == ISSUED and row.cert_der:
        return Issued(row.cert_der, req_id=row.req_id)
    if row.disposition == PENDING:
        return Pending(row.req_id, row.disposition_message)
    return Denied(row.disposition_message, req_id=row.req_id, hresult=hr.to_unsigned(row.hresult),
                  failed=row.disposition == FAILED)


class CAEngine:
    """Issues from the templates of ``config.ca``; keys are read once, at construction.  Every
    method blocks (signing, the database): the web server calls them off its event loop."""

    def __init__(self, config: Config, data_dir: str | Path, db: Database) -> None:
        self.config = config
        self.ca_paths = DataDir(Path(data_dir)).ca
        if not self.ca_paths.issuing_cert.exists():
            raise CAError(f"no CA in {self.ca_paths.dir}", hint="Run 'onlineca ca init' first.")
        self.db = db
        self.requests = CARequests(db)
        self.issuing_key: IssuingKey = load_issuing_key(config, self.ca_paths)
        self.issuing = pki.load_certificate(self.ca_paths.issuing_cert.read_bytes())
        self.root = pki.load_certificate(self.ca_paths.root_cert.read_bytes())
        if not pki.same_public_key(self.issuing_key.public_key(), self.issuing.public_key()):
            where = f"the PKCS#11 key {config.ca.pkcs11_key_label!r}" if config.ca.pkcs11_module else self.ca_paths.issuing_key
            raise CAError(f"{where} does not belong to {self.ca_paths.issuing_cert}",
                          hint="Run 'onlineca ca init --force' to make a new CA.")
        self.templates: list[TemplateConfig] = list(config.ca.templates)
        # Serialised once: certnew.cer and certnew.p7b send these bytes.
        self.chain_der: tuple[bytes, ...] = tuple(pki.cert_der(c) for c in self.chain)
        # revocation (CRLs, OCSP; the CDP and AIA of what it issues), and who hears
        # of each submission's outcome (the CA's metrics): (template, disposition, HRESULT).
        self.revocation = Revocation(config, self.ca_paths, self.issuing, self.issuing_key, db, root=self.root)
        self.on_result: Callable[[str, str, int], None] | None = None

    @property
    def chain(self) -> list[x509.Certificate]:
        """The CA chain, issuing CA first (what certnew.p7b?ReqID=CACert serves)."""
        return [self.issuing, self.root]

    # -- submissions ---------------------------------------------------------------------------

    def submit(self, requester: str, cert_request: str, cert_attrib: str) -> EnrollResult:
        """One certfnsh.asp ``Mode=newreq``: read, decide, sign (when the template allows), then
        store with the outcome in one transaction."""
        attributes = server.parse_cert_attrib(cert_attrib)
        try:
            der = server.request_der(cert_request)
        except RequestRefused as exc:
            return Denied(exc.disposition, hresult=exc.hresult, failed=True)
        template, subject = attributes.get("certificatetemplate", ""), ""
        try:
            csr = self._load(der, attributes)
            subject = pki.name_to_slash(csr.subject)
            decision = policy.decide(self.templates, requester, attributes, csr)
        except RequestRefused as exc:
            resolution = Resolution(FAILED if exc.hresult in hr.PARSE_HRESULTS else DENIED, exc.hresult,
                                    exc.disposition, "policy")
        else:
            template = decision.template.name
            if decision.action == "issue":
                resolution = self._sign(csr, decision, "policy")
            else:
                resolution = Resolution(PENDING, hr.S_OK, hr.TAKEN_UNDER_SUBMISSION)
        row = self.requests.submit(requester=requester, template=template, csr_der=der, attributes=cert_attrib,
                                   subject=subject, resolution=resolution)
        log.info("ReqID %s from %s template %r: %s%s", row.req_id, requester, row.template, row.disposition,
                 f" ({hr.hresult_hex(resolution.hresult)})" if resolution.hresult else "")
        if self.on_result is not None:
            self.on_result(row.template, row.disposition, resolution.hresult)
        return _result(row)

    def _load(self, der: bytes, attributes: dict[str, str]) -> x509.CertificateSigningRequest:
        """The request with its self-signature checked, as AD CS does; or (capf10 branch), for a
        template with ``vouched_keys``, a request an RA agent vouched for (``pki.vouch``): the
        agent's certificate comes as ``onlinecaVoucher`` and must be one this CA issued."""
        try:
            return server.load_request(der)
        except RequestRefused as refused:
            if refused.hresult != hr.NTE_BAD_SIGNATURE or "onlinecavoucher" not in attributes:
                raise
            template = policy.find_template(self.templates, attributes.get("certificatetemplate", ""))
            if template is None or not template.vouched_keys:
                raise  # the template wants the key holder's own signature, as every AD CS template does
            try:
                voucher = pki.load_certificate(base64.b64decode(attributes["onlinecavoucher"], validate=True))
                pki.validate_chain(voucher, [], pki.TrustStore([self.issuing, self.root]))
                if not _is_ra_agent(voucher):  # the agent role, not merely a certificate of ours
                    raise PKIError(f"the voucher {pki.name_to_slash(voucher.subject)} lacks the RA-agent EKU "
                                   f"(id-kp-cmcRA, {ID_KP_CMC_RA})")
                csr = pki.parse_csr(der, verify=False)
                vouch.verify_vouched_request(csr, voucher)
            except (OnlineCAError, ValueError) as exc:
                log.warning("vouched request refused (template %s): %s", template.name, exc)
                raise refused from None
            log.info("request for %s vouched for by RA agent %s (template %s)", pki.name_to_slash(csr.subject),
                     pki.name_to_slash(voucher.subject), template.name)
            return csr

    def _sign(self, csr: x509.CertificateSigningRequest, decision: policy.Decision[TemplateConfig],
              by: str) -> Resolution:
        t = decision.template
        cert = pki.build_certificate(
            subject=decision.subject, public_key=csr.public_key(), issuer_key=self.issuing_key,  # type: ignore[arg-type]
            issuer_cert=self.issuing, validity_days=t.validity_days, key_usage=t.key_usage,
            extended_key_usage=t.extended_key_usage, sans=decision.sans,
            extra_extensions=self.revocation.extensions())
        # The one serialisation of this certificate: from here on it travels as these bytes.
        return Resolution(ISSUED, hr.S_OK, hr.ISSUED_MESSAGE, by, pki.cert_der(cert),
                          format(cert.serial_number, "x"), cert.not_valid_after_utc)

    # -- reading and resolving -------------------------------------------------------------------

    def get(self, req_id: int) -> CARequest | None:
        return self.requests.get(req_id)

    def outcome(self, req_id: int, requester: str | None = None) -> EnrollResult | None:
        """The request's outcome; None if there is none (or, with ``requester``, it is someone else's)."""
        row = self.requests.get(req_id)
        if row is None or (requester is not None and row.requester.lower() != requester.lower()):
            return None
        return _result(row)

    def list(self, disposition: str | None = None, requester: str | None = None, limit: int = 1000) -> list[CARequest]:
        return self.requests.list(disposition, requester, limit)

    def approve(self, req_id: int, by: str = "administrator") -> EnrollResult:
        """Issue a pending request (a certificate manager's "Issue"), re-checking it against its template."""
        def issue(row: CARequest) -> Resolution:
            attributes = server.parse_cert_attrib(row.attributes)
            csr = self._load(row.csr_der, attributes)
            decision = policy.decide(self.templates, row.requester, attributes, csr)
            return self._sign(csr, decision, by)

        row = self.requests.resolve_pending(req_id, issue)
        log.info("ReqID %s issued by %s", req_id, by)
        return _result(row)

    def deny(self, req_id: int, by: str = "administrator") -> EnrollResult:
        row = self.requests.resolve_pending(
            req_id, lambda _row: Resolution(DENIED, hr.CERTSRV_E_ADMIN_DENIED_REQUEST, f"Denied by {by}", by))
        log.info("ReqID %s denied by %s", req_id, by)
        return _result(row)


__all__ = [
    "DENIED",
    "FAILED",
    "ISSUED",
    "PENDING",
    "CAEngine",
    "CAError",
    "init_ca",
    "issue_web_certificate",
    "users_path",
]
