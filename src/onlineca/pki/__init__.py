"""X.509 helpers on ``cryptography``: keys, CSRs, certificates, PKCS#7, chains and trust stores.

This package is the only place that touches ``cryptography`` primitives directly; every other
module uses the functions re-exported here.
"""

from onlineca.pki.certs import (
    EKU_NAMES, KEY_USAGE_NAMES, build_certificate, cert_der, cert_pem, certs_pem, common_name,
    der_to_pem, fingerprint, is_self_signed, key_usage_names, load_certificate, load_certificates,
    name_to_slash, parse_name, pem_to_der, same_public_key, san_names,
)
from onlineca.pki.chain import TrustStore, order_chain, validate_chain
from onlineca.pki.csr import build_csr, csr_challenge_password, csr_der, csr_pem, csr_sans, parse_csr, verify_csr
from onlineca.pki.keys import (
    PrivateKey, PublicKey, generate_key, key_spec, load_private_key, load_public_key, private_key_der,
    private_key_pem, public_key_der, public_key_pem,
)
from onlineca.pki.pkcs7 import parse_pkcs7, pkcs7_b64, pkcs7_der, pkcs7_pem

__all__ = [
    "EKU_NAMES", "KEY_USAGE_NAMES", "build_certificate", "cert_der", "cert_pem", "certs_pem",
    "common_name", "der_to_pem", "fingerprint", "is_self_signed", "key_usage_names",
    "load_certificate", "load_certificates", "name_to_slash", "parse_name", "pem_to_der",
    "same_public_key", "san_names", "TrustStore", "order_chain", "validate_chain",
    "build_csr", "csr_challenge_password", "csr_der", "csr_pem", "csr_sans", "parse_csr", "verify_csr", "PrivateKey",
    "PublicKey", "generate_key", "key_spec", "load_private_key", "load_public_key",
    "private_key_der", "private_key_pem", "public_key_der", "public_key_pem", 
    "parse_pkcs7", "pkcs7_b64", "pkcs7_der", "pkcs7_pem",
]
