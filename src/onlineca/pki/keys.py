"""Private and public keys: generate, describe, load and store (files 0600, written atomically)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from onlineca.errors import ParseError, PKIError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# What a certificate or CSR may carry: the functions that only compare or measure keys accept it,
# and refuse (KEY_TYPE) an algorithm onlineca does not use.
AnyKey = PrivateKey | CertificatePublicKeyTypes

RSA_SIZES = (512, 1024, 2048, 3072, 4096)
EC_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}
CURVE_NAMES = {"P-256": 256, "P-384": 384, "P-521": 521,
               "secp256r1": 256, "secp384r1": 384, "secp521r1": 521, "prime256v1": 256}


def generate_key(key_type: str = "rsa", size: int | str = 2048) -> PrivateKey:
    """A new RSA (1024-4096 bits; 512 only for legacy device tests) or EC (P-256/384/521) key."""
    if key_type == "rsa":
        bits = int(size)
        if bits not in RSA_SIZES:
            raise PKIError(f"RSA key size {bits} is not supported", code="KEY_SIZE",
                           hint=f"Use one of {', '.join(map(str, RSA_SIZES))}.")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if key_type == "ec":
        bits = CURVE_NAMES.get(size, 0) if isinstance(size, str) else int(size)
        if bits not in EC_CURVES:
            raise PKIError(f"EC curve {size} is not supported", code="KEY_SIZE",
                           hint="Use P-256, P-384 or P-521.")
        return ec.generate_private_key(EC_CURVES[bits])
    raise PKIError(f"key type {key_type!r} is not supported", code="KEY_TYPE", hint="Use 'rsa' or 'ec'.")


def key_spec(key: AnyKey) -> tuple[str, int]:
    """("rsa", bits) or ("ec", bits) of a private or public key."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa", key.key_size
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ec", key.curve.key_size
    raise PKIError(f"unsupported key algorithm {type(key).__name__}", code="KEY_TYPE")


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM; with ``passphrase``, encrypted PKCS#8 (``BestAvailableEncryption``: PBES2,
    AES-256-CBC, the key derived from the passphrase)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def is_encrypted_key(data: bytes) -> bool:
    """Whether PEM key bytes are encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY``, or a legacy
    ``Proc-Type: 4,ENCRYPTED`` header)."""
    from onlineca.pki.certs import pem_label

    return pem_label(data) == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in data


def private_key_der(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public(key: AnyKey) -> PublicKey:
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return key.public_key()
    if isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return key
    raise PKIError(f"unsupported key algorithm {type(key).__name__}", code="KEY_TYPE")


def public_key_der(key: AnyKey) -> bytes:
    """SubjectPublicKeyInfo DER."""
    return _public(key).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_pem(key: AnyKey) -> bytes:
    return _public(key).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _as_bytes(data: bytes | str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8", "replace")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise ParseError(f"key data must be bytes, not {type(data).__name__}")


def load_private_key(data: bytes | str, password: bytes | None = None) -> PrivateKey:
    """A PEM or DER private key (PKCS#8, PKCS#1 or SEC1)."""
    data = _as_bytes(data)
    try:
        if b"-----BEGIN" in data:
            # A passphrase for a key that is not encrypted is not an error: keys are converted
            # one by one ('onlineca keys encrypt'), and the passphrase is configured once.
            key = serialization.load_pem_private_key(data, password=password if is_encrypted_key(data) else None)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        if is_encrypted_key(data):
            raise ParseError("the key is encrypted and the passphrase is missing or wrong",
                             code="KEY_PASSPHRASE") from None
        raise ParseError(f"not a usable private key: {exc}") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm and friends
        raise ParseError(f"not a usable private key: {exc}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ParseError(f"unsupported private key algorithm {type(key).__name__}")
    return key


def load_public_key(data: bytes | str) -> PublicKey:
    """A PEM or DER SubjectPublicKeyInfo (RSA or EC)."""
    data = _as_bytes(data)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except Exception as exc:
        raise ParseError(f"not a public key: {exc}") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ParseError(f"unsupported public key algorithm {type(key).__name__}")
    return key
