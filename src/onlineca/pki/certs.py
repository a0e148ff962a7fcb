"""X.509 certificates: names, building, loading (PEM/DER, one or many), and small facts about them."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onlineca.errors import ParseError, PKIError
from onlineca.pki.keys import AnyKey, PrivateKey, PublicKey

_NAME_ATTRS = {
    "CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
    "DC": NameOID.DOMAIN_COMPONENT, "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS, "UID": NameOID.USER_ID,
}

EKU_NAMES = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING, "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING, "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}

KEY_USAGE_NAMES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                   "key_agreement", "key_cert_sign", "crl_sign")

_PEM_CERT_RE = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----(.*?)-----END (?:X509 |TRUSTED )?CERTIFICATE-----", re.S)


def parse_name(text: str | x509.Name) -> x509.Name:
    """``"CN=SEP74A02FC0A675,O=Example"`` (or ``/O=x/CN=y``) to an ``x509.Name``.

    Commas inside a value are escaped as ``\\,``.  The attribute order is kept as written.
    """
    if isinstance(text, x509.Name):
        return text
    s = text.strip()
    if not s:
        return x509.Name([])
    if s.startswith("/"):
        parts = [p for p in s.split("/") if p]
    else:
        parts = [p.replace("\\,", ",").strip() for p in re.split(r"(?<!\\),", s)]
    attrs = []
    for part in parts:
        key, sep, value = part.partition("=")
        oid = _NAME_ATTRS.get(key.strip().upper())
        if not sep or oid is None or not value:
            raise PKIError(f"bad distinguished name component {part!r} in {text!r}", code="NAME",
                           hint=f"Write names as CN=...,O=...; known attributes: {', '.join(_NAME_ATTRS)}.")
        attrs.append(x509.NameAttribute(oid, value.strip()))
    return x509.Name(attrs)


def name_to_slash(name: x509.Name) -> str:
    """OpenSSL's one-line form, most significant first, as the source document logs it: ``/O=Cisco/CN=ACT2 SUDI CA``."""
    out = []
    for rdn in name.rdns:
        for attr in rdn:
            short = {v: k for k, v in _NAME_ATTRS.items()}.get(attr.oid, attr.oid.dotted_string)
            if short == "EMAILADDRESS":
                short = "emailAddress"
            value = attr.value.decode("utf-8", "replace") if isinstance(attr.value, bytes) else attr.value
            out.append(f"/{short}={value}")
    return "".join(out)


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _general_names(sans: Iterable[str | x509.GeneralName]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for san in sans:
        if isinstance(san, x509.GeneralName):
            out.append(san)
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            if "@" in san:
                out.append(x509.RFC822Name(san))
            elif "://" in san:
                out.append(x509.UniformResourceIdentifier(san))
            else:
                out.append(x509.DNSName(san))
    return out


SigningHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def _signing_hash(key: PrivateKey) -> SigningHash:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 384:
        return hashes.SHA512()
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


class ExternalSigner(Protocol):
    """A private key held elsewhere (a PKCS#11 token): it gives its public key and signs bytes.
    ``sign`` returns what a certificate carries: PKCS#1 v1.5 for RSA, a DER ECDSA-Sig-Value for EC."""

    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes, digest: str) -> bytes: ...


_STAND_INS: dict[tuple[str, int], PrivateKey] = {}


def stand_in_key(public: PublicKey) -> PrivateKey:
    """A throw-away key of the same algorithm and size, made once per process: ``cryptography``'s
    builder signs with it, so its to-be-signed bytes carry the right signature algorithm."""
    from onlineca.pki.keys import generate_key, key_spec

    spec = key_spec(public)
    if spec not in _STAND_INS:
        _STAND_INS[spec] = generate_key(spec[0], 2048 if spec[0] == "rsa" else spec[1])
    return _STAND_INS[spec]


def resign_der(tbs: bytes, algorithm_oid: x509.ObjectIdentifier, hash_name: str, signer: ExternalSigner) -> bytes:
    """``SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING signature }`` signed by ``signer``: the
    shape of a certificate and of a CRL, whose to-be-signed bytes a stand-in key's signature gave.
    The signature is verified with the signer's public key first: a token that signed with
    another key (or mangled the bytes) must not issue anything."""
    from onlineca.pki import der

    signature = signer.sign(tbs, hash_name)
    public = signer.public_key()
    algorithms: dict[str, hashes.HashAlgorithm] = {
        "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(), "sha1": hashes.SHA1()}
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, tbs, padding.PKCS1v15(), algorithms[hash_name])
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, tbs, ec.ECDSA(algorithms[hash_name]))
        else:
            raise PKIError("the external signer's key is neither RSA nor EC", code="PKI")
    except (InvalidSignature, KeyError):
        raise PKIError("the external signer's signature does not verify with its public key",
                       code="PKI") from None
    algorithm = der.tlv(0x30, der.oid(algorithm_oid.dotted_string)
                        + (b"\x05\x00" if isinstance(public, rsa.RSAPublicKey) else b""))
    return der.tlv(0x30, tbs + algorithm + der.tlv(0x03, b"\x00" + signature))


def _sign_externally(cert: x509.Certificate, signer: ExternalSigner) -> x509.Certificate:
    """``cert`` (signed by a stand-in) signed again, over the same to-be-signed bytes, by ``signer``."""
    digest = cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else "sha256"
    return x509.load_der_x509_certificate(
        resign_der(cert.tbs_certificate_bytes, cert.signature_algorithm_oid, digest, signer))


def build_certificate(
    *,
    subject: str | x509.Name,
    public_key: PublicKey,
    issuer_key: PrivateKey | ExternalSigner,
    issuer_cert: x509.Certificate | None = None,
    validity_days: float = 365,
    not_before: dt.datetime | None = None,
    serial: int | None = None,
    is_ca: bool = False,
    path_length: int | None = None,
    key_usage: Sequence[str] | None = None,
    extended_key_usage: Sequence[str | x509.ObjectIdentifier] = (),
    sans: Iterable[str | x509.GeneralName] = (),
    extra_extensions: Iterable[x509.Extension[x509.ExtensionType]] = (),
) -> x509.Certificate:
    """Sign a certificate.  ``issuer_cert=None`` makes a self-signed one (issuer = subject).

    Defaults follow RFC 5280 profiles: CA certificates get keyCertSign+cRLSign, end entities
    digitalSignature+keyEncipherment (what phones need for an LSC); SKI and AKI always.
    """
    subject_name = parse_name(subject)
    issuer_name = issuer_cert.subject if issuer_cert is not None else subject_name
    start = (not_before or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    if not_before is None:
        start -= dt.timedelta(minutes=5)  # tolerate small clock skew between tiers
    end = start + dt.timedelta(days=validity_days)
    if issuer_cert is not None and end > issuer_cert.not_valid_after_utc and not is_ca:
        end = issuer_cert.not_valid_after_utc  # never outlive the issuer
    if key_usage is None:
        key_usage = ("key_cert_sign", "crl_sign", "digital_signature") if is_ca else (
            "digital_signature", "key_encipherment")
    ku = {name: (name in key_usage) for name in KEY_USAGE_NAMES}
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None), critical=True)
        .add_extension(x509.KeyUsage(encipher_only=False, decipher_only=False, **ku), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    issuer_public = issuer_cert.public_key() if issuer_cert is not None else public_key
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)  # type: ignore[arg-type]
    if extended_key_usage:
        oids = [EKU_NAMES[e] if isinstance(e, str) and e in EKU_NAMES else
                (x509.ObjectIdentifier(e) if isinstance(e, str) else e) for e in extended_key_usage]
        builder = builder.add_extension(x509.ExtendedKeyUsage(oids), critical=False)
    names = _general_names(sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not subject_name.rdns)
    for ext in extra_extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    if not isinstance(issuer_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        stand_in = stand_in_key(issuer_key.public_key())
        return _sign_externally(builder.sign(stand_in, _signing_hash(stand_in)), issuer_key)
    return builder.sign(issuer_key, _signing_hash(issuer_key))


def _b64_body(data: bytes) -> bytes | None:
    """Decode bare base64 (whitespace tolerated); None if it is not base64."""
    compact = b"".join(data.split())
    if not compact or len(compact) % 4:
        return None
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def load_certificate(data: bytes) -> x509.Certificate:
    """One certificate from PEM, DER or bare base64 of the DER."""
    certs = load_certificates(data)
    return certs[0]


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM (several blocks), DER or bare base64; ParseError if none."""
    if not isinstance(data, (bytes, bytearray)):
        raise ParseError("certificate data must be bytes")
    data = bytes(data)
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CERT_RE.findall(data)
            if not blocks:
                raise ParseError("no CERTIFICATE block in the PEM data")
            out = []
            for body in blocks:
                der = _b64_body(body)
                if der is None:
                    raise ParseError("a CERTIFICATE block is not valid base64")
                out.append(x509.load_der_x509_certificate(der))
            return out
        if data[:1] == b"\x30":
            return [x509.load_der_x509_certificate(data)]
        der = _b64_body(data)
        if der is not None:
            return [x509.load_der_x509_certificate(der)]
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"not an X.509 certificate: {exc}") from None
    raise ParseError("not an X.509 certificate (neither PEM, DER nor base64)")


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def certs_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(cert_pem(c) for c in certs)


def cert_der_from_text(data: bytes) -> bytes:
    """The DER of one certificate given as DER, PEM or bare base64, without parsing it (the bytes
    are kept as sent; whoever needs the object parses them once).  ParseError if the text is
    neither."""
    if not isinstance(data, (bytes, bytearray)):
        raise ParseError("certificate data must be bytes")
    data = bytes(data)
    if data[:1] == b"\x30":
        return data
    if b"-----BEGIN" in data:
        m = _PEM_CERT_RE.search(data)
        if m is None:
            raise ParseError("no CERTIFICATE block in the PEM data")
        data = m.group(1)
    der = _b64_body(data)
    if der is None:
        raise ParseError("not an X.509 certificate (neither PEM, DER nor base64)")
    return der


def pem_armor(der: bytes, label: str = "CERTIFICATE", eol: bytes = b"\n") -> bytes:
    """DER in PEM armour (64-column base64), byte for byte what ``public_bytes(PEM)`` writes for
    a certificate when ``eol`` is LF; no parsing, so the DER goes out exactly as it came."""
    raw = base64.b64encode(der)
    lines = [raw[i:i + 64] for i in range(0, len(raw), 64)]
    tag = label.encode("ascii")
    return eol.join([b"-----BEGIN " + tag + b"-----", *lines, b"-----END " + tag + b"-----", b""])


_PEM_BEGIN_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")


def pem_label(data: bytes) -> str | None:
    """The label of the first PEM block in ``data`` (``CERTIFICATE``, ``ENCRYPTED PRIVATE KEY``,
    ...), or None when there is none: the inverse of ``pem_armor``'s ``label``."""
    m = _PEM_BEGIN_RE.search(data)
    return m.group(1).decode("ascii") if m else None


def pem_to_der(data: bytes) -> bytes:
    return cert_der(load_certificate(data))


def der_to_pem(data: bytes) -> bytes:
    return cert_pem(load_certificate(data))


def fingerprint(cert: x509.Certificate, algorithm: str = "sha256") -> str:
    """``AB:CD:...`` as openssl prints it."""
    algo = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}[algorithm]
    return ":".join(f"{b:02X}" for b in cert.fingerprint(algo))


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:
        return False
    return True


def san_names(cert: x509.Certificate) -> list[str]:
    """DNS names and IP addresses of the subjectAltName, as strings."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)]


def key_usage_names(cert: x509.Certificate) -> set[str]:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    out = set()
    for name in KEY_USAGE_NAMES:
        if getattr(ku, name):
            out.add(name)
    return out


def same_public_key(a: AnyKey, b: AnyKey) -> bool:
    from onlineca.pki.keys import public_key_der
    return public_key_der(a) == public_key_der(b)


def signature_hash_for(key: PrivateKey) -> SigningHash:
    return _signing_hash(key)


__all__ = [
    "EKU_NAMES",
    "KEY_USAGE_NAMES",
    "ExternalSigner",
    "build_certificate",
    "cert_der",
    "cert_pem",
    "certs_pem",
    "common_name",
    "der_to_pem",
    "fingerprint",
    "is_self_signed",
    "key_usage_names",
    "load_certificate",
    "load_certificates",
    "name_to_slash",
    "parse_name",
    "pem_armor",
    "pem_label",
    "pem_to_der",
    "resign_der",
    "same_public_key",
    "san_names",
    "signature_hash_for",
    "stand_in_key",
]
