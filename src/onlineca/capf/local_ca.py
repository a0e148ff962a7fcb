"""CAPF's own CA: the ``capf`` issuer, the vendor's classic mode.

A profile whose ``issuer`` is ``capf`` gets its LSCs signed here, in process, instead of through
the RA: it works with any online CA (AD CS included, which refuses a request a phone did not sign
itself) and with phones that cannot sign (every public-flow phone), at the price of a CA that
phones and call control must trust besides the enterprise one.  The CA is a self-signed root in
``<data dir>/capf/ca/`` (``capf-ca.key`` 0600, ``capf-ca.pem``), made by ``onlineca capf ca init``
or at CAPF's first start.  Its LSCs are what a public CAPF issues: ``CN=<device>``, SAN
``URI:<device>``, keyUsage digitalSignature + keyEncipherment (critical), extended key usage
serverAuth, clientAuth and IPsec end system.  This module signs; it never decides whom for, and
never logs or exports the CA key.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from onlineca import pki
from onlineca.errors import CAPFError, OnlineCAError
from onlineca.infra import files

IPSEC_END_SYSTEM = "1.3.6.1.5.5.7.3.5"
LSC_KEY_USAGE = ("digital_signature", "key_encipherment")
LSC_EXTENDED_KEY_USAGE = ("server_auth", "client_auth", IPSEC_END_SYSTEM)


def default_name() -> str:
    host = socket.gethostname().split(".")[0][:40] or "onlineca"
    return f"CN=CAPF-{host} CA,OU=CAPF,O=onlineca"


@dataclass
class CAPFAuthority:
    """CAPF's CA: its certificate, and its key (never handed out)."""

    folder: Path
    cert: x509.Certificate
    _key: pki.PrivateKey

    @classmethod
    def init(cls, folder: str | os.PathLike[str], *, name: str | None = None, key_type: str = "rsa",
             bits: int = 2048, validity_days: int = 3650, force: bool = False) -> CAPFAuthority:
        """A new self-signed CA in ``folder`` (``force`` replaces one that is there: every LSC it
        issued stops authenticating)."""
        path = Path(folder)
        if (path / "capf-ca.pem").exists() and not force:
            raise CAPFError(f"CAPF's CA already exists in {path}", code="CAPF_CA",
                            hint="Use --force to replace it (LSCs it issued then stop authenticating).")
        key = pki.generate_key(key_type, bits)
        cert = pki.build_certificate(subject=name or default_name(), public_key=key.public_key(), issuer_key=key,
                                     is_ca=True, path_length=0, validity_days=validity_days)
        files.ensure_dir(path, 0o700)
        files.write_private_key(path / "capf-ca.key", key)  # the key first: never a certificate without it
        files.write_file(path / "capf-ca.pem", pki.cert_pem(cert))  # 0600 like every file of the data dir
        return cls(path, cert, key)

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> CAPFAuthority:
        path = Path(folder)
        try:
            cert = pki.load_certificate((path / "capf-ca.pem").read_bytes())
            key = files.read_private_key(path / "capf-ca.key")
        except (OSError, OnlineCAError) as exc:
            raise CAPFError(f"{path} holds no usable CAPF CA ({exc})", code="CAPF_CA") from None
        if not pki.same_public_key(cert.public_key(), key):
            raise CAPFError(f"{path}: capf-ca.key does not belong to capf-ca.pem", code="CAPF_CA")
        return cls(path, cert, key)

    @classmethod
    def ensure(cls, folder: str | os.PathLike[str]) -> tuple[CAPFAuthority, bool]:
        """The CA in ``folder``, made when there is none; True when it was made now."""
        if (Path(folder) / "capf-ca.pem").exists():
            return cls.open(folder), False
        return cls.init(folder), True

    @property
    def trust(self) -> pki.TrustStore:
        return pki.TrustStore([self.cert])

    def issue_lsc(self, device: str, public_key: pki.PublicKey, *, validity_days: int = 365) -> x509.Certificate:
        """The LSC for ``device``'s ``public_key`` (never beyond the CA's own validity)."""
        return pki.build_certificate(
            subject=f"CN={device}", public_key=public_key, issuer_key=self._key, issuer_cert=self.cert,
            validity_days=validity_days, key_usage=LSC_KEY_USAGE, extended_key_usage=LSC_EXTENDED_KEY_USAGE,
            sans=[x509.UniformResourceIdentifier(device)])


__all__ = ["IPSEC_END_SYSTEM", "LSC_EXTENDED_KEY_USAGE", "LSC_KEY_USAGE", "CAPFAuthority", "default_name"]
