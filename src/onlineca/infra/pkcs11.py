"""The CA's issuing key in a PKCS#11 token (an HSM, or SoftHSM2 for tests): make it, and sign with it.

``Pkcs11Signer`` is a ``pki.ExternalSigner``: it hands out the public key and signs the bytes the
CA gives it (a certificate's to-be-signed part), with ``CKM_SHA*_RSA_PKCS`` or ``CKM_ECDSA_SHA*``;
the private key never leaves the token.  One session is opened at start and shared; signing is
serialised with a lock, because the CA signs from a thread pool and not every token tolerates
concurrent use of one session.  The PIN comes from the caller (a file or the environment,
``config.CAConfig.pkcs11_pin``) and is never logged.  ``python-pkcs11`` is an optional dependency
(``pip install 'onlineca[pkcs11]'``).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from onlineca import pki
from onlineca.errors import ConfigError, PKIError

_CURVES = {256: "secp256r1", 384: "secp384r1", 521: "secp521r1"}


def _library() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise ConfigError("[ca] pkcs11_module is set but the python-pkcs11 package is missing",
                          hint="Install it (pip install 'onlineca[pkcs11]') or leave pkcs11_module empty.") from None
    return pkcs11


def _open_session(module: str, token_label: str, pin: bytes | None) -> Any:
    pkcs11 = _library()
    path = Path(module).absolute()
    if not path.is_file():
        raise ConfigError(f"[ca] pkcs11_module {path}: no such file",
                          hint="Install the token's PKCS#11 library (for SoftHSM2: the softhsm2 package).")
    if pin is None:
        raise ConfigError("the PKCS#11 token's PIN is missing",
                          hint="Set [ca] pkcs11_pin_file, or $ONLINECA_CA_PKCS11_PIN.")
    try:
        lib = pkcs11.lib(str(path))
        token = lib.get_token(token_label=token_label or None)
        try:
            return token.open(user_pin=pin.decode("utf-8"), rw=True)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            # PKCS#11 logs in the application, not the session: another session of this process
            # (the CA's signer, while 'ca init' or a test runs beside it) already did
            return token.open(rw=True)
    except pkcs11.exceptions.PKCS11Error as exc:
        raise PKIError(f"PKCS#11 token {token_label!r} in {path}: {type(exc).__name__} {exc}",
                       hint="Check [ca] pkcs11_token_label and the PIN ('pkcs11-tool --module MODULE "
                            "--list-slots' lists the tokens).") from None


def _public_key(pkcs11: Any, key: Any) -> pki.PublicKey:
    """The token's public key as a ``cryptography`` key."""
    if key.key_type == pkcs11.KeyType.RSA:
        from pkcs11.util.rsa import encode_rsa_public_key
        return serialization.load_der_public_key(encode_rsa_public_key(key))  # type: ignore[return-value]
    from pkcs11.util.ec import encode_ec_public_key
    return serialization.load_der_public_key(encode_ec_public_key(key))  # type: ignore[return-value]


class Pkcs11Signer:
    """Signs with the private key labelled ``key_label`` in the token (see the module docstring)."""

    def __init__(self, module: str, token_label: str, key_label: str, pin: bytes | None) -> None:
        self._pkcs11 = _library()
        self._session = _open_session(module, token_label, pin)
        self._lock = threading.Lock()
        self.key_label = key_label
        p = self._pkcs11
        try:
            self._private = self._session.get_key(object_class=p.ObjectClass.PRIVATE_KEY, label=key_label)
            public = self._session.get_key(object_class=p.ObjectClass.PUBLIC_KEY, label=key_label)
        except (p.exceptions.NoSuchKey, p.exceptions.MultipleObjectsReturned) as exc:
            self.close()
            raise PKIError(f"PKCS#11 token {token_label!r}: no single key pair labelled {key_label!r} ({type(exc).__name__})",
                           hint="Set [ca] pkcs11_key_label, or run 'onlineca ca init --pkcs11' to make the key.") from None
        self._public = _public_key(p, public)

    def public_key(self) -> pki.PublicKey:
        return self._public

    def sign(self, data: bytes, digest: str) -> bytes:
        p = self._pkcs11
        if isinstance(self._public, rsa.RSAPublicKey):
            mechanism = {"sha256": p.Mechanism.SHA256_RSA_PKCS, "sha384": p.Mechanism.SHA384_RSA_PKCS,
                         "sha512": p.Mechanism.SHA512_RSA_PKCS}[digest]
            with self._lock:
                return bytes(self._private.sign(data, mechanism=mechanism))
        from pkcs11.util.ec import encode_ecdsa_signature
        # Plain CKM_ECDSA over a digest made here: every token has it (SoftHSM2 2.6 lacks the
        # CKM_ECDSA_SHA* mechanisms), and the token still never sees more than a hash.
        hashed = hashlib.new(digest, data).digest()
        with self._lock:
            raw = self._private.sign(hashed, mechanism=p.Mechanism.ECDSA)
        return bytes(encode_ecdsa_signature(raw))  # the token gives r||s; X.509 carries DER

    def close(self) -> None:
        try:
            self._session.close()
        except Exception:
            pass


def generate_key(module: str, token_label: str, key_label: str, pin: bytes | None, key_type: str,
                 size: int) -> None:
    """Make a key pair labelled ``key_label`` in the token (RSA ``size`` bits, or EC on the curve
    of ``size`` bits); refuses when one with that label exists."""
    pkcs11 = _library()
    session = _open_session(module, token_label, pin)
    try:
        existing = list(session.get_objects({pkcs11.Attribute.LABEL: key_label,
                                             pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}))
        if existing:
            raise PKIError(f"PKCS#11 token {token_label!r} already holds a key labelled {key_label!r}",
                           hint="Choose another [ca] pkcs11_key_label, or delete the old key with pkcs11-tool.")
        template = {pkcs11.Attribute.TOKEN: True, pkcs11.Attribute.PRIVATE: True,
                    pkcs11.Attribute.SENSITIVE: True, pkcs11.Attribute.EXTRACTABLE: False}
        if key_type == "rsa":
            session.generate_keypair(pkcs11.KeyType.RSA, size, label=key_label, store=True,
                                     private_template=template)
        else:
            from pkcs11.util.ec import encode_named_curve_parameters
            params = session.create_domain_parameters(
                pkcs11.KeyType.EC, {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[size])},
                local=True)
            params.generate_keypair(label=key_label, store=True, private_template=template)
    finally:
        session.close()


__all__ = ["Pkcs11Signer", "generate_key"]
