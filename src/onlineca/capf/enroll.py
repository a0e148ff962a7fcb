"""CAPF's online-CA enrollment: a device's CSR to a checked LSC through the RA by EST, and CAPF's own
TLS certificate, exactly as the source document's CAPF log shows it.

``OnlineCAEnroller.enroll_device`` writes the CSR to ``<data>/capf/csr/<DEVICE>.csr``, logs
``Calling enrollCertUsingEST() csr_file=...``, sends EST ``simpleenroll`` with CAPF's RA credentials
(CAPF enrolls on the device's behalf; the proof of possession is the phone's own signature inside
the CSR), logs ``Enrollment rv = N (EST_ERR_...) with pkcs7 length = N``, writes the PKCS#7 reply
and its PEM and DER forms to ``<data>/capf/cert/``, and checks the certificate (the phone's key, a
chain that validates against the RA's ``cacerts``, keyUsage digitalSignature + keyEncipherment)
before ``Online Cert Signing successful``.  A bounded semaphore (``max_concurrent_enrollments``)
keeps a fleet from flooding the RA and the CA.  Failures are ``CAUnavailable`` (retry later: the RA
or CA is down, slow or busy) or ``CARejected`` (a refusal, or a certificate that fails the checks).
``ensure_capf_certificate`` enrolls CAPF's TLS certificate at first start and renews it once two
thirds of its life have passed.  The files are written on one file thread (atomic, 0600, in the
order queued, ``infra.files.SerialWriter``), off the event loop and off the session's path: a
session does not wait for its copies until CAPF removes the CSR (``remove_csr``, queued after
them), because a worker thread of a busy process waits tens of milliseconds for the interpreter at
each system call.  The LSC goes back as its DER and its parsed form together,
so nobody downstream parses or serialises it again.  This module never sees a device's private key, never logs the RA password, and never
hands back a certificate it has not checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from onlineca import pki
from onlineca.config import CAPFConfig, DataDir
from onlineca.errors import CARejected, CAUnavailable, ChainError, ConfigError, ESTCodedError, PKIError
from onlineca.est.client import ESTClient
from onlineca.infra import files, workers
from onlineca.logs.capf_trace import SessionTrace, log as trace_log, request_id_line
from onlineca.pki import vouch
from onlineca.proto.libest import enrollment_rv_line
from onlineca.proto.request_id import REQUEST_ID_HEADER, new_request_id

# The RA refused the request itself (credentials, a bad request, the CA denied it): retrying
# the same request would get the same answer.  Everything else is "CA Communication Failure".
_REJECTIONS = {"EST_ERR_AUTH_FAIL", "EST_ERR_HTTP_BAD_REQ", "EST_ERR_BAD_PKCS10", "EST_ERR_HTTP_NOT_FOUND",
               "EST_ERR_WRONG_METHOD", "EST_ERR_BAD_CONTENT_TYPE", "EST_ERR_BAD_CONTENT_LEN"}
# Failures before the request reached the RA (no connection, no TLS, not the RA we
# pin): nothing can have been issued, so the request's intent is closed, not left open.
NOT_SENT_CODES = frozenset({"EST_ERR_IP_CONNECT", "EST_ERR_IP_GETADDR", "EST_ERR_SSL_CONNECT",
                            "EST_ERR_FQDN_MISMATCH", "EST_ERR_CACERT_VERIFICATION"})
REQUIRED_KEY_USAGE = ("digital_signature", "key_encipherment")
CAPF_RENEW_FRACTION = 2 / 3
# Called with the request (DER) and its X-Request-ID before the request leaves: the
# session server commits its intent there (store.lsc_intents), so a crash leaves a trace.
BeforeSend = Callable[[bytes, str], Awaitable[None]]


def _write_copies(*files_and_data: tuple[Path, bytes], make_dir: bool = True) -> None:
    """The document's copies of a request and its answer.  Atomic and 0600, but not flushed to
    disk one by one: the database holds the certificate; these are for the administrator."""
    for path, data in files_and_data:
        files.write_file(path, data, sync=False, make_dir=make_dir)


def _write_copies_or_warn(files_and_data: tuple[tuple[Path, bytes], ...]) -> None:
    try:  # CAPF made its folders at start-up
        _write_copies(*files_and_data, make_dir=False)
    except OSError as exc:  # a copy for the administrator: the enrollment goes on
        trace_log.warning("debug cannot write %s: %s", ", ".join(str(p) for p, _ in files_and_data), exc)


def _write_folder(folder: Path, named: list[tuple[str, bytes]]) -> None:
    files.ensure_dir(folder)
    _write_copies(*((folder / name, data) for name, data in named))


@dataclass(frozen=True)
class IssuedLSC:
    """A checked LSC: its DER (what is stored and delivered) and the parsed certificate."""

    der: bytes
    cert: x509.Certificate


def renewal_due(cert: x509.Certificate, now: dt.datetime | None = None,
                fraction: float = CAPF_RENEW_FRACTION) -> bool:
    """True once ``fraction`` of the certificate's lifetime has passed."""
    now = now or dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * fraction


class OnlineCAEnroller:
    """CAPF's EST client towards the RA, with the document's log lines and the LSC checks."""

    def __init__(self, cfg: CAPFConfig, data_dir: str | os.PathLike[str]) -> None:
        self.cfg = cfg
        self.paths = DataDir(Path(data_dir)).capf
        for folder in self.paths.folders():
            files.ensure_dir(folder)
        if not cfg.ra_trust_store:
            raise ConfigError("[capf] ra_trust_store is not set: CAPF cannot tell the RA from an impostor",
                              hint="Point it at the root CA certificate (PEM) of the RA's TLS certificate.")
        try:
            files.load_cert_file(cfg.ra_trust_store)
        except (OSError, PKIError) as exc:
            raise ConfigError(f"[capf] ra_trust_store {cfg.ra_trust_store}: {exc}") from None
        password = cfg.ra_password.get_secret_value()
        self.est = ESTClient(cfg.ra_url, cafile=cfg.ra_trust_store, user=cfg.ra_user or None,
                             password=password, timeout=cfg.enroll_timeout,
                             connect_timeout=min(10.0, cfg.enroll_timeout),
                             max_retries=0,  # a busy RA means RETRY_LATER to the phone, not a wait here
                             expected_name=cfg.ra_expected_name, fingerprint=cfg.ra_fingerprint)
        # CAPF's own certificate (TLS server, and RA agent for vouched requests) under
        # the EST label the RA maps to the agent template, when one is configured.
        self.agent_enroll_est = self.est if not cfg.agent_label else ESTClient(
            cfg.ra_url, label=cfg.agent_label, cafile=cfg.ra_trust_store, user=cfg.ra_user or None, password=password,
            timeout=cfg.enroll_timeout, connect_timeout=min(10.0, cfg.enroll_timeout), max_retries=0,
            expected_name=cfg.ra_expected_name, fingerprint=cfg.ra_fingerprint)
        # Under 'capf serve --workers N' each worker takes its share, so the RA sees no more in
        # flight than from one CAPF.
        self.semaphore = asyncio.BoundedSemaphore(workers.share(cfg.max_concurrent_enrollments))
        self.requests_sent = 0   # EST enrollments sent (tests and the bench count them)
        self._lsc_trust: pki.TrustStore | None = None
        # The document's file copies, in order, on one thread (a device's CSR is removed after its writes).
        self._files = files.SerialWriter("capf-files")
        # capf10 branch: CAPF's certificate as an RA agent (file stamp, key, certificate, EST client).
        self._agent_est: tuple[int, pki.PrivateKey, x509.Certificate, ESTClient] | None = None
        self._retired: list[ESTClient] = []
        # who hears of each EST enrollment (result, libEST code, seconds): CAPF's metrics.
        self.observe: Callable[[str, str, float], None] | None = None

    async def close(self) -> None:
        await self._files.flush()
        await self.est.close()
        if self.agent_enroll_est is not self.est:
            await self.agent_enroll_est.close()
        for est in [*self._retired, *([self._agent_est[3]] if self._agent_est else [])]:
            await est.close()

    def keep_copies(self, device: str, der: bytes) -> None:
        """The document's copies of an LSC issued without the RA (CAPF's own CA), off the session's path."""
        cert_dir = self.paths.cert_dir
        self._queue_files(device, (cert_dir / f"{device}.pem", pki.pem_armor(der)), (cert_dir / f"{device}.der", der))

    def _queue_files(self, device: str, *files_and_data: tuple[Path, bytes]) -> None:
        """Write the files on the file thread after the earlier file work, without waiting for
        it; ``remove_csr`` waits where it matters.  None at all with ``[capf] document_copies =
        false`` (the database is the record)."""
        if self.cfg.document_copies:
            self._files.queue(functools.partial(_write_copies_or_warn, files_and_data))

    # ------------------------------------------------------------------ the RA's CA certificates

    async def lsc_trust(self, refresh: bool = False) -> pki.TrustStore:
        """The RA's ``cacerts``: what every LSC must chain to (fetched once, refreshed on demand)."""
        if self._lsc_trust is None or refresh:
            try:
                certs = await self.est.cacerts()
            except ESTCodedError as exc:
                raise CAUnavailable(f"cannot fetch the RA's CA certificates: {exc.message}",
                                    est_code=exc.code) from None
            trace_log.info("debug cacert read success. cacert length : %d", sum(len(pki.cert_der(c)) for c in certs))
            self._lsc_trust = pki.TrustStore(list(certs))
        return self._lsc_trust

    async def setup(self) -> None:
        """The start-up lines of the document's CAPF log, and the first ``cacerts`` fetch."""
        url = urlsplit(self.cfg.ra_url)
        trace_log.info("CServiceParameters::Init() Certificate Generation Method=OnlineCA:4")
        trace_log.info("CServiceParameters::OnlineCAInit() Online CA hostname is %s", url.hostname)
        trace_log.info("CServiceParameters::OnlineCAInit() Online CA Port : %s", url.port or 443)
        trace_log.info("debug CA Type is Online CA, setting up EST Connection")
        await self.lsc_trust(refresh=True)
        trace_log.info("debug EST context ectx initialized")
        if self.cfg.ra_user:
            trace_log.info("debug CA Credentials retrieved")
            trace_log.info("debug est_client_set_auth() Successful!!")
        trace_log.info("debug EST set server details success!!")

    # ------------------------------------------------------------------ one device

    async def enroll_device(self, device: str, csr: x509.CertificateSigningRequest,
                            trace: SessionTrace, before_send: BeforeSend | None = None) -> IssuedLSC:
        """The LSC for ``csr`` (already assembled and verified), checked; CAUnavailable/CARejected."""
        return await self._enroll(device, csr, trace, self.est, before_send)

    async def resend(self, device: str, request_der: bytes, vouched: bool, trace: SessionTrace,
                     before_send: BeforeSend | None = None) -> IssuedLSC:
        """An earlier session's request sent again as it was (a vouched one with
        CAPF's agent certificate): the RA hands back the certificate it kept for that request
        if the CA issued it after its client had gone, instead of asking the CA again."""
        try:
            csr = pki.parse_csr(request_der, verify=not vouched)
        except (PKIError, ValueError) as exc:
            raise CARejected(f"the earlier request cannot be sent again: {exc}") from None
        trace.debug("sending the earlier session's request again: the RA keeps what the CA issued for it")
        est = self._agent()[2] if vouched else self.est
        return await self._enroll(device, csr, trace, est, before_send)

    async def enroll_vouched(self, device: str, public_key: pki.PublicKey, trace: SessionTrace,
                             before_send: BeforeSend | None = None) -> IssuedLSC:
        """The LSC for a phone that cannot sign its request (a public-flow phone): CAPF builds the
        request for the phone's key and signs it with its own key as an RA agent vouching for it
        (``pki.vouch``), and sends it with its own certificate as TLS client certificate, which the
        RA accepts only from an RA agent (a certificate holding id-kp-cmcRA; CAPF's
        comes from the agent template, ``[capf] agent_label``); the RA's CA must accept such
        requests (a template with ``vouched_keys``).  Checked as every LSC; CAUnavailable/CARejected."""
        agent_key, agent_cert, est = self._agent()
        csr = vouch.build_vouched_request(f"CN={device}", public_key, agent_key, agent_cert,
                                              sans=[x509.UniformResourceIdentifier(device)])
        trace.debug(f"the phone signs no request: CAPF vouches for its key as RA agent "
                    f"{pki.name_to_slash(agent_cert.subject)}")
        return await self._enroll(device, csr, trace, est, before_send)

    def _agent(self) -> tuple[pki.PrivateKey, x509.Certificate, ESTClient]:
        """CAPF's own certificate and key (``[capf] tls_cert``/``tls_key``, else capf.pem/capf.key)
        and an EST client that presents them; made again when the certificate file changes."""
        cert_path = Path(self.cfg.tls_cert) if self.cfg.tls_cert else self.paths.capf_cert
        key_path = Path(self.cfg.tls_key) if self.cfg.tls_cert else self.paths.capf_key
        try:
            stamp = cert_path.stat().st_mtime_ns
            if self._agent_est is None or self._agent_est[0] != stamp:
                cert = files.load_cert_file(cert_path)[0]
                key = files.read_private_key(key_path)
                est = ESTClient(self.cfg.ra_url, cafile=self.cfg.ra_trust_store, user=self.cfg.ra_user or None,
                                password=self.cfg.ra_password.get_secret_value(), cert_file=cert_path,
                                key_file=key_path, timeout=self.cfg.enroll_timeout,
                                connect_timeout=min(10.0, self.cfg.enroll_timeout), max_retries=0,
                                expected_name=self.cfg.ra_expected_name, fingerprint=self.cfg.ra_fingerprint)
                if self._agent_est is not None:
                    self._retired.append(self._agent_est[3])
                self._agent_est = (stamp, key, cert, est)
        except (OSError, PKIError, ESTCodedError) as exc:
            raise CARejected(f"CAPF cannot vouch for the phone's key: its own certificate {cert_path} is unusable "
                             f"({exc})") from None
        return self._agent_est[1], self._agent_est[2], self._agent_est[3]

    async def _enroll(self, device: str, csr: x509.CertificateSigningRequest, trace: SessionTrace,
                      est: ESTClient, before_send: BeforeSend | None = None) -> IssuedLSC:
        csr_file = self.paths.csr_file(device)
        self._queue_files(device, (csr_file, pki.csr_pem(csr)))
        trace.debug("CA Mode is OnlineCA, Initiating Automatic Certificate Enrollment")
        # diag branch: one X-Request-ID per enrollment, in CAPF's trace, the RA's logs and the CA's IIS log
        request_id = new_request_id()
        if before_send is not None:  # the intent is committed before anything leaves
            await before_send(pki.csr_der(csr), request_id)
        async with self.semaphore:
            trace.debug(f"Calling enrollCertUsingEST() csr_file={csr_file}")
            trace.debug(request_id_line(request_id))
            self.requests_sent += 1
            started = time.perf_counter()
            try:
                resp = await est.simpleenroll(csr, headers={REQUEST_ID_HEADER: request_id})
                if self.observe is not None:
                    self.observe("issued", "EST_ERR_NONE", time.perf_counter() - started)
            except ESTCodedError as exc:
                if self.observe is not None:
                    self.observe("rejected" if exc.code in _REJECTIONS else "unavailable", exc.code,
                                 time.perf_counter() - started)
                trace.error(enrollment_rv_line(exc.code, 0))
                trace.error("est_client_enroll_csr() Failed! Could not obtain new certificate. Aborting.")
                trace.error(f"Online Cert Signing Failed: {exc.message}")
                if exc.code in _REJECTIONS:
                    raise CARejected(f"the RA refused the request: {exc.message}", est_code=exc.code) from None
                if exc.http_status == 503:  # not ready is not pending: the RA's own reason, as it said it
                    raise CAUnavailable(exc.message.partition(": ")[2] or exc.message, est_code=exc.code,
                                        retry_after=exc.retry_after) from None
                raise CAUnavailable(f"the RA did not issue: {exc.message}", est_code=exc.code,
                                    retry_after=exc.retry_after) from None
        trace.debug(enrollment_rv_line("EST_ERR_NONE", resp.pkcs7_length))
        cert_dir = self.paths.cert_dir
        der = pki.cert_der(resp.certificate)  # the one serialisation: the files, the database, the phone
        self._queue_files(device, (cert_dir / f"{device}.p7b", resp.pkcs7),
                          (cert_dir / f"{device}.pem", pki.pem_armor(der)), (cert_dir / f"{device}.der", der))
        trace.debug(f"Signed Cert written to {cert_dir}/ location...")
        trace.debug("Converting PKCS7 file to PEM format and PEM to DER")
        try:
            await self.check_lsc(resp.certificate, resp.certificates, csr)
        except CARejected as exc:
            trace.error(f"Online Cert Signing Failed: {exc.message}")
            raise
        trace.debug("Online Cert Signing successful")
        return IssuedLSC(der, resp.certificate)

    async def remove_csr(self, device: str) -> Path:
        """The phone confirmed its LSC: once its files are written, the request file goes; its path."""
        csr_file = self.paths.csr_file(device)
        await self._files.run(functools.partial(csr_file.unlink, missing_ok=True))
        return csr_file

    async def write_troubleshoot(self, device: str, named_der: list[tuple[str, bytes]]) -> Path:
        """The certificates a phone sent for Troubleshoot, as ``<data>/capf/troubleshoot/<DEVICE>/<name>``."""
        folder: Path = self.paths.troubleshoot_dir / device
        await asyncio.to_thread(_write_folder, folder, named_der)
        return folder

    async def check_lsc(self, cert: x509.Certificate, extra: list[x509.Certificate],
                        csr: x509.CertificateSigningRequest) -> None:
        """The checks the document's CAPF makes before it hands an LSC to a phone."""
        if not pki.same_public_key(cert.public_key(), csr.public_key()):
            raise CARejected("the issued certificate carries another key than the phone's")
        trust = await self.lsc_trust()
        try:
            pki.validate_chain(cert, extra, trust)
        except ChainError:
            trust = await self.lsc_trust(refresh=True)  # the CA may have been re-keyed since start-up
            try:
                pki.validate_chain(cert, extra, trust)
            except ChainError as exc:
                if exc.code == "NOT_YET_VALID":  # diag branch: a CA clock ahead: it chains, valid only later
                    try:
                        pki.validate_chain(cert, extra, trust, at=cert.not_valid_before_utc)
                    except ChainError:
                        pass
                    else:
                        raise CARejected(f"the issued certificate chains to the RA's CA but is not valid yet "
                                         f"({exc.message}): the CA's clock is ahead of CAPF's; fix NTP on the CA"
                                         ) from None
                raise CARejected(f"the issued certificate does not chain to the RA's CA certificates: "
                                 f"{exc.message}") from None
        missing = [u for u in REQUIRED_KEY_USAGE if u not in pki.key_usage_names(cert)]
        if missing:
            raise CARejected(f"the issued certificate lacks keyUsage {', '.join(missing)} (phones need "
                             "digitalSignature and keyEncipherment to register securely)")

    # ------------------------------------------------------------------ CAPF's own certificate

    async def ensure_capf_certificate(self, names: list[str], *, force: bool = False) -> bool:
        """Enroll ``capf.pem``/``capf.key`` if missing, unreadable or past 2/3 of its life; True if new."""
        cert_path, key_path = self.paths.capf_cert, self.paths.capf_key
        if not force and cert_path.exists() and key_path.exists():
            try:
                current = files.load_cert_file(cert_path)[0]
                files.read_private_key(key_path, self.cfg.key_passphrase())
                if not renewal_due(current):
                    return False
                trace_log.info("debug CAPF certificate serial %x is past %d%% of its life: renewing",
                               current.serial_number, round(CAPF_RENEW_FRACTION * 100))
            except Exception as exc:  # unreadable or damaged: enroll a new one
                trace_log.warning("debug CAPF certificate at %s is unusable (%s): enrolling a new one", cert_path, exc)
        key = pki.generate_key("ec", 256)
        subject = f"CN=CAPF-{socket.gethostname().split('.')[0][:40] or 'onlineca'},O=onlineca"
        csr = pki.build_csr(key, subject, names)
        async with self.semaphore:
            self.requests_sent += 1
            try:
                resp = await self.agent_enroll_est.simpleenroll(csr)
            except ESTCodedError as exc:
                trace_log.warning("debug %s", enrollment_rv_line(exc.code, 0))
                raise CAUnavailable(f"CAPF could not enroll its own TLS certificate: {exc.message}",
                                    est_code=exc.code, retry_after=exc.retry_after) from None
        trace_log.info("debug CAPF certificate %s", enrollment_rv_line("EST_ERR_NONE", resp.pkcs7_length))
        chain = await self._served_chain(resp.certificate, resp.certificates)
        # Key first, then the certificate: a reader never finds a certificate without its key.
        files.write_private_key(key_path, key, self.cfg.key_passphrase())  # encrypted when a passphrase is set
        files.write_file(cert_path, pki.certs_pem(chain))
        trace_log.info("debug CAPF certificate written to %s (serial %x, valid until %s)", cert_path,
                       resp.certificate.serial_number, resp.certificate.not_valid_after_utc.isoformat())
        return True

    async def _served_chain(self, cert: x509.Certificate, extra: list[x509.Certificate]) -> list[x509.Certificate]:
        """The certificate and its intermediates (from the reply or the RA's cacerts), root left out:
        a phone trusts the root it has, and needs the intermediates to get there."""
        try:
            known = list(extra) + list((await self.lsc_trust()).certs)
        except CAUnavailable:
            known = list(extra)
        chain = [cert]
        while len(chain) < 8:
            issuer = next((c for c in known if c.subject == chain[-1].issuer and c not in chain), None)
            if issuer is None or pki.is_self_signed(issuer):
                break
            chain.append(issuer)
        return chain


__all__ = ["NOT_SENT_CODES", "BeforeSend", "CARejected", "CAUnavailable", "IssuedLSC", "OnlineCAEnroller", "renewal_due"]
