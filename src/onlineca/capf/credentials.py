"""The certificate a phone presents to authenticate (its LSC or its MIC): pki's checks, policy's verdict.

``CertificateChecks`` holds what the checks need: CAPF's manufacturer trust store, the profiles' own
ones (each file read once, then kept), the RA's CA certificates for LSCs (from the enroller) and
the clock.  ``judge`` runs pki's checks (the certificate the decoder parsed, its chain at this
moment, its subject's CN, its key's signature over this session's challenge) and hands what it
found to ``policy.capf.judge_certificate``, which says whether that authenticates the device.
Reading a profile's trust store file is the only I/O here; it never logs a key.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from cryptography import x509

from onlineca import pki
from onlineca.errors import CAUnavailable, ChainError, ParseError, PKIError
from onlineca.infra import files
from onlineca.pki import tbs
from onlineca.policy.capf_session import Credential, PresentedCertificate, judge_certificate
from onlineca.proto.devproto.messages import AuthResponse, CertificateType

log = logging.getLogger("onlineca.capf.server")


class CertificateChecks:
    def __init__(self, mic_trust: pki.TrustStore, lsc_trust: Callable[[], Awaitable[pki.TrustStore]],
                 clock: Callable[[], dt.datetime]) -> None:
        self.mic_trust = mic_trust
        self.lsc_trust = lsc_trust
        self.clock = clock
        self._profile_mic_trust: dict[str, pki.TrustStore] = {}

    def mic_store(self, path: str) -> pki.TrustStore:
        """A profile's manufacturer trust store ("": CAPF's own); an unreadable one trusts nothing."""
        if not path:
            return self.mic_trust
        if path not in self._profile_mic_trust:
            try:
                self._profile_mic_trust[path] = files.load_trust_store(path)
            except (OSError, PKIError) as exc:
                log.warning("profile MIC trust store %s is unreadable: %s", path, exc)
                self._profile_mic_trust[path] = pki.TrustStore()
        return self._profile_mic_trust[path]

    async def check(self, auth: AuthResponse, payload: bytes, name: str) -> Credential | None:
        """The LSC or MIC in ``auth`` judged against its trust store (``payload``: what this
        session's challenge asked the phone to sign); None when the phone sent no certificate."""
        if auth.certificate is None:
            return None
        if auth.certificate.cert_type == CertificateType.MIC:
            return self.judge(auth, payload, name, "MIC", self.mic_trust)
        try:
            trust = await self.lsc_trust()
        except CAUnavailable as exc:
            return Credential("LSC", False, f"cannot check the LSC: {exc.message}")
        return self.judge(auth, payload, name, "LSC", trust)

    def judge(self, auth: AuthResponse, payload: bytes, name: str, kind: str, trust: pki.TrustStore) -> Credential:
        assert auth.certificate is not None
        if not len(trust):
            return judge_certificate(PresentedCertificate(kind, trust_configured=False), name)
        try:
            cert: x509.Certificate = auth.certificate.certificate()
            pki.validate_chain(cert, [], trust, at=self.clock())
            cn = pki.common_name(cert.subject)
        except (ChainError, ParseError, PKIError) as exc:
            return judge_certificate(PresentedCertificate(kind, problem=exc.message), name)
        signature_problem = None
        if auth.signature is not None:
            try:
                tbs.verify_data_signature(cert.public_key(), payload, auth.signature,  # type: ignore[arg-type]
                                          auth.effective_digest.hash_name)
            except (ParseError, PKIError) as exc:
                signature_problem = exc.message
        return judge_certificate(PresentedCertificate(kind, subject_cn=cn, signed=auth.signature is not None,
                                                      signature_problem=signature_problem), name)

    def mic_valid(self, auth: AuthResponse, payload: bytes, name: str, credential: Credential | None,
                  trust_store: str) -> bool:
        """Whether the phone presented a MIC valid for a profile's manufacturer trust store
        ("": CAPF's own, judged already as ``credential``)."""
        if credential is None or credential.kind != "MIC":
            return False
        if not trust_store:
            return credential.valid
        return self.judge(auth, payload, name, "MIC", self.mic_store(trust_store)).valid


__all__ = ["CertificateChecks"]
