"""A manufacturer CA for the simulator: it gives phones their MICs (manufacturing installed
certificates), as a phone vendor's factory does.

``MICAuthority.init(folder)`` makes (or reopens) a self-signed manufacturing root in ``folder``
(``mic-ca.pem``, ``mic-ca.key`` 0600); ``issue(phone)`` has the phone make its MIC key and signs a
certificate for it (``CN=<device name>``, ``OU=<model>``), which the phone keeps with the CA
certificate as its chain.  CAPF trusts MICs through ``mic-ca.pem`` as its manufacturer trust
store.  The phone's MIC private key is made inside the ``Phone`` and never seen here; this module
must never be used as a real CA (its key is an unencrypted lab file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from onlineca import pki
from onlineca.errors import OnlineCAError, PhoneError
from onlineca.infra import files
from onlineca.phone.device import Phone

DEFAULT_CA_NAME = "CN=onlineca Lab Manufacturing CA,O=onlineca phones"
CA_CERT, CA_KEY = "mic-ca.pem", "mic-ca.key"


@dataclass
class MICAuthority:
    folder: Path
    cert: x509.Certificate
    _key: pki.PrivateKey

    @property
    def trust_store(self) -> Path:
        """The file CAPF's manufacturer trust store points at."""
        return self.folder / CA_CERT

    @classmethod
    def init(cls, folder: str | os.PathLike[str], *, name: str = DEFAULT_CA_NAME, key_type: str = "ec",
             bits: int = 256, validity_days: int = 7300) -> MICAuthority:
        """A new manufacturing root in ``folder``, or the one already there."""
        path = Path(folder)
        if (path / CA_CERT).exists():
            return cls.open(path)
        key = pki.generate_key(key_type, bits)
        cert = pki.build_certificate(subject=name, public_key=key.public_key(), issuer_key=key, is_ca=True,
                                     path_length=0, validity_days=validity_days)
        path.mkdir(parents=True, exist_ok=True)
        files.write_private_key(path / CA_KEY, key)
        (path / CA_CERT).write_bytes(pki.cert_pem(cert))
        return cls(path, cert, key)

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> MICAuthority:
        path = Path(folder)
        try:
            return cls(path, pki.load_certificate((path / CA_CERT).read_bytes()), files.read_private_key(path / CA_KEY))
        except (OSError, OnlineCAError) as exc:
            raise PhoneError(f"{path} holds no manufacturer CA ({exc})",
                             hint="Run 'onlineca phone mic-ca init --dir DIR' first.") from None

    def issue(self, phone: Phone, *, key_type: str = "ec", bits: int = 256, validity_days: int = 3650) -> x509.Certificate:
        """Give ``phone`` a MIC (its MIC key is made by the phone if it has none)."""
        public_key = phone.mic_public_key(key_type, bits)
        model = "".join(c for c in phone.model if c not in ",=+\\\"<>;#") or "phone"
        cert = pki.build_certificate(subject=f"CN={phone.name},OU={model},O=onlineca phones", public_key=public_key, issuer_key=self._key, issuer_cert=self.cert, validity_days=validity_days,
            key_usage=("digital_signature", "key_encipherment"))
        phone.install_mic([cert, self.cert])
        return cert


__all__ = ["CA_CERT", "CA_KEY", "DEFAULT_CA_NAME", "MICAuthority"]
