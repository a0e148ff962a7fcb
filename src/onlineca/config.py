"""Configuration: one TOML file, validated by pydantic models, with environment overrides.

Every component reads its own section (``[ca]``, ``[ra]``, ``[est]``, ``[capf]``...).  A bad file
gets one clear message naming the key and what is wrong (``ConfigError``).  Secrets are
``SecretStr`` so they never print, and may come from the environment instead of the file:
``ONLINECA_<SECTION>_<KEY>`` overrides ``[section] key`` (e.g. ``ONLINECA_RA_CA_PASSWORD``).
This module reads files and the environment; it never writes anything.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from onlineca.errors import ConfigError

ENV_PREFIX = "ONLINECA_"
DEFAULT_DATA_DIR = "./onlineca-data"

KeyType = Literal["rsa", "ec"]


def read_secret(file: str, env_var: str, what: str, environ: dict[str, str] | None = None) -> bytes | None:
    """A passphrase or PIN: the first line of ``file`` when set, else ``$env_var``, else None.
    ``what`` names the setting in the error (the file's absolute path is in it too)."""
    environ = dict(os.environ) if environ is None else environ
    if file:
        path = Path(file).absolute()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{what} {path}: cannot read: {exc.strerror or exc}",
                              hint="Check the path and that the service's user may read it (mode 0600 or 0400).") from None
        value = text.splitlines()[0] if text.strip() else ""
        if not value:
            raise ConfigError(f"{what} {path}: empty", hint="Put the secret on the file's first line.")
        return value.encode("utf-8")
    value = environ.get(env_var, "")
    return value.encode("utf-8") if value else None


class _Section(BaseModel):
    # Each field's docstring (the string under it) is its description: ``onlineca config example``
    # prints it as the key's comment (``field_docs``), so the example cannot drift from the model
    # (a test requires one per field).  Read from the source only when needed: pydantic's
    # use_attribute_docstrings would parse it at every start of every command.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoggingConfig(_Section):
    """How each component writes its log."""

    format: Literal["text", "json"] = "text"
    """text: each component's own format (the source document's); json: one object a line."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """The lowest level written."""
    target: Literal["file", "journald", "stdout"] = "file"
    """file: <log dir>/<component>.log (reopened on SIGHUP and after rotation); journald: plain lines on stderr with a priority prefix (journald adds the time); stdout: lines on stdout (containers)."""
    buffered: bool = False
    """Servers' log files written by a background thread, flushed in batches (every 0.5 s at most) and completely on a clean stop: less work per request; a line reaches the file up to 0.5 s late."""


class DatabaseConfig(_Section):
    """The one database of devices, CA requests, accounts and the audit trail."""

    # Empty means SQLite in the data dir: sqlite:///<data_dir>/onlineca.db
    url: SecretStr = SecretStr("")
    """SQLAlchemy URL, e.g. postgresql+psycopg://onlineca@db/onlineca; empty: SQLite <data dir>/onlineca.db (secret: $ONLINECA_DATABASE_URL)."""
    echo: bool = False
    """Log every SQL statement (debugging only)."""
    busy_timeout: float = Field(default=10.0, gt=0)
    """Seconds a write waits for another writer's lock (SQLite; PostgreSQL lock_timeout for the CA) before the CA answers "busy"."""


class TemplateConfig(_Section):
    """A certificate template, as an AD CS administrator defines one."""

    name: str
    """The template's name, as the RA asks for it ([ra] template)."""
    display_name: str = ""
    """The name /certsrv shows (empty: the name)."""
    validity_days: int = Field(default=365, ge=1, le=36500)
    """Days a certificate issued from this template is valid."""
    key_usage: list[
        Literal[
            "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement",
        ]
    ] = ["digital_signature", "key_encipherment"]
    """Key usage bits of issued certificates."""
    extended_key_usage: list[str] = ["client_auth", "server_auth"]
    """Extended key usages (client_auth, server_auth, or dotted OIDs)."""
    allowed_key_types: list[KeyType] = ["rsa", "ec"]
    """Key types a request may carry."""
    min_rsa_bits: int = Field(default=2048, ge=512, le=16384)
    """Smallest RSA key accepted."""
    min_ec_bits: int = Field(default=256, ge=256, le=521)
    """Smallest EC curve accepted."""
    subject_from_request: bool = True
    """Take the subject and names from the request (AD CS: supply in the request)."""
    sans_from_request: bool = True
    """Take the subjectAltName from the request (false: none, as AD CS's "build from Active Directory")."""
    allowed_subjects: list[str] = []
    """Regular expressions (whole match, case-insensitive) the subject ("CN=...,O=...") must match; empty: anything."""
    allowed_sans: list[str] = []
    """Regular expressions (whole match, case-insensitive) each subjectAltName value must match; empty: anything."""
    manager_approval: bool = False
    """Hold requests as pending until 'onlineca ca requests approve'."""
    # Users (as in the users file) allowed to enroll; "*" means every authenticated user.
    enroll: list[str] = ["*"]
    """Users allowed to enroll ("*": every authenticated user)."""
    vouched_keys: bool = False
    """Issue for a key an RA agent vouched for (docs/ca.md), not only for a self-signed PKCS#10 (AD CS has no such setting)."""

    @field_validator("allowed_subjects", "allowed_sans")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return v


def _default_templates() -> list[TemplateConfig]:
    return [
        TemplateConfig(name="CiscoRA", display_name="Cisco RA", validity_days=365),
        # Server certificates only to requesters named here (none by default): anyone else could
        # otherwise get a web certificate from the root every tier trusts.
        TemplateConfig(name="WebServer", display_name="Web Server", validity_days=730,
                       extended_key_usage=["server_auth"], enroll=[]),
    ]


class CAConfig(_Section):
    """Our /certsrv CA (onlineca ca ...); a real AD CS needs none of it."""

    host: str = "127.0.0.1"
    """Address 'ca serve' listens on."""
    port: int = Field(default=8443, ge=1, le=65535)
    """HTTPS port of /certsrv."""
    # Web server certificate; empty = the CA makes and uses its own, issued by its intermediate.
    tls_cert: str = ""
    """Web server certificate (PEM, chain allowed); empty: <data dir>/ca/web.pem from 'ca init'."""
    tls_key: str = ""
    """Its private key; empty: <data dir>/ca/web.key."""
    key_type: KeyType = "rsa"
    """Key type of the root and issuing CA made by 'ca init'."""
    key_size: int = Field(default=2048, ge=1024, le=4096)
    """RSA bits of those keys."""
    ec_curve: Literal["P-256", "P-384", "P-521"] = "P-256"
    """EC curve of those keys when key_type is ec."""
    root_name: str = "CN=onlineca Lab Root CA,O=onlineca"
    """Subject of the root CA."""
    issuing_name: str = "CN=onlineca Lab Issuing CA,O=onlineca"
    """Subject of the issuing (intermediate) CA."""
    root_validity_days: int = Field(default=3650, ge=1)
    """Days the root CA is valid."""
    issuing_validity_days: int = Field(default=1825, ge=1)
    """Days the issuing CA is valid."""
    web_names: list[str] = ["localhost", "127.0.0.1"]
    """DNS names and addresses of the web certificate 'ca init' makes."""
    # Users file: one "user:scrypt$..." line each (see onlineca ca users add).
    users_file: str = ""
    """Users file (user:scrypt$... lines, 'onlineca ca users add'); empty: <data dir>/ca/users."""
    domain: str = "ONLINECA"
    """NTLM domain of the users."""
    basic_auth: bool = True
    """Accept HTTP Basic logins."""
    ntlm_auth: bool = False
    """Accept NTLM/Negotiate logins (needs onlineca[ntlm])."""
    kerberos_auth: bool = False
    """Accept HTTP Negotiate with Kerberos (needs onlineca[kerberos] and a keytab of HTTP/<host>)."""
    keytab: str = ""
    """Keytab of the CA's HTTP/<host> service principal; empty: $KRB5_KTNAME."""
    kerberos_realm: str = ""
    """Realm whose users may log in (a principal user@REALM is "user"); empty: the keytab's default realm."""
    require_epa: bool = False
    """Extended Protection: NTLM logins must carry this server's TLS channel binding (RFC 5929), or get IIS's 401."""
    max_request_bytes: int = Field(default=65536, ge=1024)
    """Largest request body accepted."""
    templates: list[TemplateConfig] = Field(default_factory=_default_templates)
    """The certificate templates the CA offers."""
    key_passphrase_file: str = ""
    """File holding the passphrase of encrypted CA keys (encrypted PKCS#8); empty: $ONLINECA_CA_KEY_PASSPHRASE, or unencrypted keys."""
    pkcs11_module: str = ""
    """PKCS#11 library holding the issuing key (e.g. /usr/lib/softhsm/libsofthsm2.so); empty: the key is a file."""
    pkcs11_token_label: str = ""
    """Label of the PKCS#11 token."""
    pkcs11_key_label: str = "onlineca-issuing"
    """Label of the issuing key in the token."""
    pkcs11_pin_file: str = ""
    """File holding the token's user PIN; empty: $ONLINECA_CA_PKCS11_PIN."""
    # Revocation (docs/ca.md, "Revocation") and /metrics.
    public_url: str = ""
    """Base URL of the CRL, CA certificate and OCSP in every certificate issued (CDP, AIA); empty: http://<first web name>:<http_port> when http_port is set, else https://<first web name>:<port>."""
    http_port: int = Field(default=0, ge=0, le=65535)
    """Plain-HTTP port serving /CertEnroll/ and /ocsp, as AD CS publishes them (a revocation check must not need TLS); 0: off."""
    crl_validity_hours: float = Field(default=168.0, gt=0)
    """Hours a base CRL is valid."""
    crl_refresh_hours: float = Field(default=24.0, gt=0)
    """Hours between base CRLs (also made on every revocation unless delta CRLs are on)."""
    delta_crl_hours: float = Field(default=0.0, ge=0)
    """Hours a delta CRL is valid; > 0 publishes delta CRLs on every revocation and a base CRL only every crl_refresh_hours; 0: no delta CRLs."""
    ocsp: bool = True
    """Answer OCSP (RFC 6960) at /ocsp."""
    ocsp_signer: Literal["ca", "delegated"] = "ca"
    """Who signs OCSP answers: the issuing CA, or a responder certificate it issues itself (ocsp.pem, id-kp-OCSPSigning + ocsp-nocheck); an issuing key in a PKCS#11 token always uses the responder."""
    ocsp_validity_hours: float = Field(default=1.0, gt=0)
    """Hours an OCSP answer is valid."""
    revokers: list[str] = []
    """Accounts that may revoke, over the network (POST /certsrv/onlineca/revoke), the certificates they requested themselves (CAPF's service account); nobody by default."""
    metrics_allow: list[str] = ["127.0.0.1/32", "::1/128"]
    """Client addresses (CIDR) allowed to read /metrics; empty: no /metrics."""

    def key_passphrase(self, environ: dict[str, str] | None = None) -> bytes | None:
        """The CA keys' passphrase (key_passphrase_file, else $ONLINECA_CA_KEY_PASSPHRASE), or None."""
        return read_secret(self.key_passphrase_file, "ONLINECA_CA_KEY_PASSPHRASE", "[ca] key_passphrase_file", environ)

    def pkcs11_pin(self, environ: dict[str, str] | None = None) -> bytes | None:
        """The token's user PIN (pkcs11_pin_file, else $ONLINECA_CA_PKCS11_PIN), or None."""
        return read_secret(self.pkcs11_pin_file, "ONLINECA_CA_PKCS11_PIN", "[ca] pkcs11_pin_file", environ)

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not an address or network: {exc}") from None
        return v

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not re.fullmatch(r"https?://[^/\s]+(/[^\s]*)?", v):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v.rstrip("/")


class RAConfig(_Section):
    """The RA (onlineca ra serve): an EST server that enrolls at the CA."""

    host: str = "127.0.0.1"
    """Address 'ra serve' listens on."""
    port: int = Field(default=8084, ge=1, le=65535)
    """HTTPS port of EST."""
    tls_cert: str = ""
    """The RA's TLS certificate (PEM, chain allowed)."""
    tls_key: str = ""
    """Its private key."""
    connector: Literal["certsrv", "local"] = "certsrv"
    """certsrv: enroll at an AD CS web-enrollment CA (ca_url); local: sign in-process with local_key."""
    ca_url: str = "https://127.0.0.1:8443/certsrv"
    """The CA's /certsrv URL."""
    ca_auth: Literal["basic", "ntlm", "cert", "kerberos"] = "basic"
    """How the RA logs in to the CA."""
    ca_channel_binding: bool = True
    """NTLM and Kerberos tokens carry the TLS channel binding of the CA's certificate (Extended Protection)."""
    ca_service_host: str = ""
    """Host of the CA's service principal HTTP/<host>; empty: ca_url's host."""
    ca_expected_name: str = ""
    """A name the CA's web certificate must hold (subjectAltName or CN); it must carry serverAuth in any case."""
    ca_fingerprint: str = ""
    """The CA web certificate's SHA-256 fingerprint, pinned; empty: not pinned."""
    ca_user: str = "ciscora"
    """User the RA logs in to the CA as."""
    ca_password: SecretStr = SecretStr("")
    """Its password (secret: $ONLINECA_RA_CA_PASSWORD)."""
    ca_client_cert: str = ""
    """Client certificate for ca_auth = cert."""
    ca_client_key: str = ""
    """Its private key."""
    template: str = "CiscoRA"
    """Template the RA enrolls with (its name, not its display name)."""
    trust_store: str = ""
    """PEM file or folder of the CAs that issue the CA's web certificate and chain."""
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to connect to the CA."""
    login_timeout: float = Field(default=10.0, gt=0)
    """Seconds for a login at the CA."""
    enroll_timeout: float = Field(default=10.0, gt=0)
    """Seconds for one enrollment at the CA."""
    client_auth: Literal["users", "certificate", "passthrough"] = "passthrough"
    """How EST clients authenticate: users ([est] users_file), certificate, or passthrough (their credentials go to the CA)."""
    # Local connector: the issuing key and certificate to sign with.
    local_key: str = ""
    """Local connector: the issuing key to sign with."""
    local_cert: str = ""
    """Local connector: its certificate."""
    # Start-up checks retry with exponential backoff from backoff_initial up to backoff_max seconds.
    backoff_initial: float = Field(default=1.0, gt=0)
    """First retry delay of the start-up checks (seconds, doubling)."""
    backoff_max: float = Field(default=60.0, gt=0)
    """Longest retry delay of the start-up checks."""
    # Retry-After (seconds) on 202 (pending at the CA) and 503 (RA not ready, CA unreachable or slow).
    pending_retry_after: int = Field(default=60, ge=1)
    """Retry-After (seconds) with 202, pending at the CA."""
    unavailable_retry_after: int = Field(default=30, ge=1)
    """Retry-After (seconds) with 503, RA not ready or CA unreachable."""
    # Passthrough: how long a CA login with an EST client's credentials is trusted.
    auth_cache_seconds: float = Field(default=60.0, ge=0)
    """Passthrough: seconds a CA login with a client's credentials is trusted."""
    passthrough_cache_size: int = Field(default=256, ge=1)
    """Passthrough: accounts whose kept-alive CA client is kept (one per account, least recently used out)."""
    login_failure_cache_seconds: float = Field(default=60.0, ge=0)
    """Seconds a login the CA refused is not forwarded again with the same credentials."""
    max_failed_logins_per_user: int = Field(default=5, ge=1)
    """Refused logins per account within login_throttle_seconds beyond which the RA stops asking the CA."""
    max_failed_logins_per_address: int = Field(default=20, ge=1)
    """Refused logins per client address within login_throttle_seconds beyond which the RA stops asking the CA."""
    login_throttle_seconds: float = Field(default=300.0, gt=0)
    """The window of the two limits above."""
    max_login_failures: int = Field(default=3, ge=1)
    """Consecutive logins the CA refuses before the RA stops logging in until a reload (AD accounts lock)."""
    ready_check_interval: float = Field(default=10.0, gt=0)
    """Seconds between the background checks that the CA still answers while the RA is ready."""
    pending_keep_days: float = Field(default=30.0, gt=0)
    """Pending requests (kept in [database]) nobody asked about for this many days are forgotten."""
    vouch_agents: list[str] = []
    """Pins on the RA agents that may vouch for a key (docs/ra.md): "sha256:<hex>" fingerprints of their certificates; agents are known by the RA-agent EKU ([est] ra_agent_eku)."""
    vouched_template: str = "CAPFVouchedLSC"
    """The CA template vouched requests are sent under."""
    label_templates: dict[str, str] = {}
    """EST CA labels (/.well-known/est/<label>/...) enrolled under another template than ``template``, e.g. {"capf-agent": "CAPFAgent"} for CAPF's own RA-agent certificate."""

    @field_validator("vouch_agents")
    @classmethod
    def _pins(cls, v: list[str]) -> list[str]:
        for pin in v:
            digest = pin[7:].replace(":", "") if pin.lower().startswith("sha256:") else ""
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError(f"{pin!r} is not a sha256:<hex> fingerprint (a subject pattern is no longer "
                                 "accepted: anyone allowed a template that takes the request's subject can get any "
                                 "name; agents are known by the RA-agent EKU, [est] ra_agent_eku)")
        return v


class ESTConfig(_Section):
    """The EST server's own settings (used by the RA and by a standalone EST server)."""

    serverkeygen: bool = True
    """Offer /serverkeygen."""
    pop_tls_unique: bool = False
    """Require proof of possession (tls-unique in the CSR)."""
    max_body_bytes: int = Field(default=65536, ge=1024)
    """Largest request body accepted."""
    request_timeout: float = Field(default=30.0, gt=0)
    """Seconds one EST request may take."""
    retry_after: int = Field(default=60, ge=1)
    """Retry-After (seconds) on a pending enrollment."""
    users_file: str = ""
    """EST users file (user:scrypt$... lines) for client_auth = users."""
    client_trust_store: str = ""
    """PEM file or folder of CAs whose client certificates are accepted."""
    labels: list[str] = []
    """Extra EST path labels served (/.well-known/est/<label>/...)."""
    ra_agents: list[str] = []
    """RA agents by subject ("CN=...,O=..."): certificate-authenticated clients that may enroll names other than their own."""
    ra_agent_eku: str = "1.3.6.1.5.5.7.3.28"
    """The EKU that makes a client certificate an RA agent's (id-kp-cmcRA); "" turns the rule off."""


class ConnectionsConfig(_Section):
    """Bounds on the connections of every HTTPS server (CA, RA, EST); see docs/security.md."""

    max_connections: int = Field(default=1024, ge=1)
    """Open connections in all."""
    max_per_address: int = Field(default=256, ge=1)
    """Open connections from one client address (an RA, or a load balancer, counts as one)."""
    handshake_timeout: float = Field(default=10.0, gt=0)
    """Seconds for the TLS handshake."""
    header_timeout: float = Field(default=15.0, gt=0)
    """Seconds for complete request headers after the handshake (or after an answer)."""
    idle_timeout: float = Field(default=60.0, gt=0)
    """Seconds a kept-alive connection may stay idle."""
    body_timeout: float = Field(default=30.0, gt=0)
    """Seconds to read a request body."""


class CAPFConfig(_Section):
    """CAPF (onlineca capf serve): the device protocol, the inventory and renewal."""

    host: str = "127.0.0.1"
    """Address 'capf serve' listens on."""
    port: int = Field(default=3804, ge=1, le=65535)
    """TLS port of the device protocol."""
    ra_url: str = "https://127.0.0.1:8084/.well-known/est"
    """The RA's EST base URL."""
    ra_user: str = "ciscora"
    """User CAPF authenticates to the RA as."""
    ra_password: SecretStr = SecretStr("")
    """Its password (secret: $ONLINECA_CAPF_RA_PASSWORD)."""
    ra_trust_store: str = ""
    """PEM file or folder of the CAs that issue the RA's TLS certificate."""
    ra_expected_name: str = ""
    """A name the RA's certificate must hold (subjectAltName or CN); it must carry serverAuth in any case."""
    ra_fingerprint: str = ""
    """The RA certificate's SHA-256 fingerprint, pinned; empty: not pinned."""
    max_concurrent_enrollments: int = Field(default=16, ge=1)
    """Enrollments in flight towards the RA at once (with 'capf serve --workers N', each worker takes N-th of it)."""
    document_copies: bool = True
    """Keep the document's file copies of each request and LSC (CSR, PKCS#7, PEM, DER) beside the database, written in a worker thread; false: the database only (less work per enrollment)."""
    operation_deadline_days: int = Field(default=10, ge=1)
    """Default 'Operation Completes By', in days."""
    lsc_validity_days: int = Field(default=365, ge=1, le=1825)
    """Validity CAPF asks for an LSC."""
    # The session server (onlineca.capf.server); every wait is bounded.
    tls_cert: str = ""            # empty: CAPF enrolls its own at <data>/capf/capf.pem through the RA
    """CAPF's TLS certificate; empty: CAPF enrolls its own at <data dir>/capf/capf.pem through the RA."""
    tls_key: str = ""
    """Its private key; empty: <data dir>/capf/capf.key."""
    tls_names: list[str] = ["localhost", "127.0.0.1"]
    """Names in the certificate CAPF enrolls for itself."""
    mic_trust_store: str = ""     # manufacturer CAs that issue MICs
    """PEM file or folder of the manufacturer CAs that issue MICs."""
    read_timeout: float = Field(default=60.0, gt=0)        # each read from a phone
    """Seconds for each read from a phone."""
    session_timeout: float = Field(default=3600.0, gt=0)   # one whole session
    """Seconds one whole session may take."""
    keepalive_seconds: float = Field(default=15.0, gt=0)   # REQUEST_IN_PROGRESS while the RA works
    """Seconds between REQUEST_IN_PROGRESS messages while the RA works."""
    max_keygen_seconds: float = Field(default=1800.0, gt=0)
    """Seconds a phone may take to make its key."""
    max_keygen_attempts: int = Field(default=3, ge=1, le=10)
    """Key generation attempts before the operation fails."""
    enroll_timeout: float = Field(default=30.0, gt=0)      # one EST request to the RA
    """Seconds for one EST request to the RA."""
    retry_delay: int = Field(default=300, ge=1)            # RETRY_LATER when the RA/CA is unavailable
    """Seconds a phone is told to wait (RETRY_LATER) when the RA or CA is unavailable."""
    max_auth_failures: int = Field(default=5, ge=1)        # wrong auth strings before a lockout
    """Wrong auth strings before a lockout."""
    lockout_minutes: float = Field(default=30.0, gt=0)
    """Minutes a locked-out device waits."""
    auth_failure_delay: float = Field(default=1.0, ge=0)
    """Seconds before a wrong auth string is answered, doubled for each wrong one in a row (the device's lease held meanwhile)."""
    auth_failure_max_delay: float = Field(default=5.0, ge=0)
    """The most that delay grows to, in seconds."""
    node_id: str = ""
    """This node's name in row leases; empty: one made at first start and kept in <data>/capf/node-id (stable across restarts)."""
    lease_seconds: float = Field(default=30.0, ge=3, le=600)
    """Seconds a session's device lease lasts, renewed every third of it while the session lives: a dead node's devices are free within this."""
    agent_label: str = ""
    """EST CA label under which CAPF enrolls its own (RA agent) certificate ([ra] label_templates maps it to a template); empty: the RA's default template."""
    ca_database_url: SecretStr = SecretStr("")
    """Our CA's request database, read by reconciliation and by sessions collecting what the CA issued for a request CAPF never recorded; empty: none (AD CS)."""
    reconcile_interval: float = Field(default=300.0, gt=0)
    """Seconds between reconciliation passes in capf serve."""
    reconcile_grace: float = Field(default=120.0, gt=0)
    """Seconds an enrollment may be in flight before reconciliation settles it."""
    reconcile_window_days: float = Field(default=30.0, gt=0)
    """How many days back reconciliation checks the CA's certificates."""
    scheduler_interval: float = Field(default=60.0, gt=0)  # renewal runs; CAPF's own certificate check
    """Seconds between renewal passes (and checks of CAPF's own certificate)."""
    public_enroll_timeout: float = Field(default=6.0, gt=0)
    """Seconds within which a phone that announced no keepalive gets its LSC, or a decline (public clients give up after 8-10 s)."""
    key_passphrase_file: str = ""
    """File holding the passphrase of CAPF's encrypted key; empty: $ONLINECA_CAPF_KEY_PASSPHRASE, or an unencrypted key."""
    metrics_host: str = "127.0.0.1"
    """Address of CAPF's /metrics and /healthz (plain HTTP)."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of CAPF's /metrics and /healthz; 0: off."""
    ca_revoke_url: str = ""
    """Our CA's revoke endpoint, for the LSCs CAPF replaces or whose device is deleted; empty: CAPF records them for an administrator (as with AD CS)."""
    ca_revoke_user: str = ""
    """Account for the revoke endpoint; empty: ra_user."""
    ca_revoke_password: SecretStr = SecretStr("")
    """Its password (secret); empty: ra_password."""
    ca_revoke_trust_store: str = ""
    """Trust store (PEM) of the CA's TLS certificate for revocations; empty: ra_trust_store."""

    def key_passphrase(self, environ: dict[str, str] | None = None) -> bytes | None:
        """CAPF's key passphrase (key_passphrase_file, else $ONLINECA_CAPF_KEY_PASSPHRASE), or None."""
        return read_secret(self.key_passphrase_file, "ONLINECA_CAPF_KEY_PASSPHRASE", "[capf] key_passphrase_file",
                           environ)


class AdminConfig(_Section):
    """The administration console and REST API (``onlineca admin serve``, docs/admin.md)."""

    host: str = "127.0.0.1"
    """Address 'admin serve' listens on."""
    port: int = Field(default=8080, ge=0, le=65535)
    """HTTPS port of the console."""
    # Empty: <data>/admin/admin.pem, made at first start (issued by the CA in the data dir if any).
    tls_cert: str = ""
    """The console's TLS certificate; empty: <data dir>/admin/admin.pem, made at first start."""
    tls_key: str = ""
    """Its private key."""
    # PEM of CAs whose client certificates log in as the account their CN names (empty: off).
    client_trust_store: str = ""
    """PEM of CAs whose client certificates log in as the account their CN names (empty: off)."""
    session_idle_minutes: float = Field(default=30.0, gt=0)
    """Minutes of inactivity that end a session."""
    session_max_hours: float = Field(default=12.0, gt=0)
    """Hours after which a session ends anyway."""
    token_max_days: int = Field(default=365, ge=1, le=3650)
    """Longest life of an API token."""
    max_login_failures: int = Field(default=5, ge=1)        # per account, within login_window_minutes
    """Failed logins per account within login_window_minutes before a wait."""
    max_address_failures: int = Field(default=20, ge=1)     # per source address, within the window
    """Failed logins per source address within the window before a wait."""
    login_window_minutes: float = Field(default=15.0, gt=0)
    """The window of those counts."""
    max_body_bytes: int = Field(default=1048576, ge=1024)
    """Largest request body accepted."""
    request_timeout: float = Field(default=60.0, gt=0)
    """Seconds one request may take."""
    max_connections: int = Field(default=64, ge=1)
    """Connections served at once."""
    # The CA's request database when it is not [database] url (the lab keeps it apart).
    ca_database_url: SecretStr = SecretStr("")
    """The CA's request database when it is not [database] url (secret: $ONLINECA_ADMIN_CA_DATABASE_URL)."""


class AlertsConfig(_Section):
    """Notifications CAPF's maintenance pass sends on the alert rules' conditions, without Prometheus (docs/operations.md, "Monitoring")."""

    webhook_urls: list[str] = []
    """URLs that get each notification as a JSON POST."""
    webhook_trust_store: str = ""
    """Trust store (PEM) for https webhooks; empty: the system's CAs."""
    smtp_host: str = ""
    """SMTP relay for mail notifications; empty: no mail."""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    """Its port."""
    smtp_starttls: bool = False
    """Use STARTTLS."""
    smtp_user: str = ""
    """Login user (a login only with a user)."""
    smtp_password: SecretStr = SecretStr("")
    """Its password (secret)."""
    mail_from: str = "onlineca@localhost"
    """Sender address."""
    mail_to: list[str] = []
    """Recipients."""
    command: list[str] = []
    """A command (argv, no shell) that gets each notification as JSON on its standard input."""
    timeout: float = Field(default=10.0, gt=0)
    """Seconds for one delivery."""
    resend_hours: float = Field(default=24.0, gt=0)
    """One notification per condition and subject until it clears, again after this many hours."""
    send_resolved: bool = True
    """Also notify when a condition clears."""
    lsc_expiry_days: int = Field(default=14, ge=1)
    """An LSC expiring within this many days without a renewal scheduled alerts (the Prometheus rules use the same numbers)."""
    ca_cert_days: int = Field(default=60, ge=1)
    """A CA certificate within this many days of expiry alerts."""
    capf_cert_days: int = Field(default=21, ge=1)
    """CAPF's own certificate within this many days of expiry alerts."""
    renewal_failures: int = Field(default=2, ge=1)
    """Failed renewal attempts of one device that alert."""
    error_rate: float = Field(default=0.2, gt=0, le=1)
    """Share of failed sessions that alerts."""
    error_rate_min_sessions: int = Field(default=20, ge=1)
    """Sessions needed before the error rate counts."""


class Config(_Section):
    data_dir: str = ""
    """Where keys, certificates and the SQLite database live; empty: $ONLINECA_DATA_DIR, else ./onlineca-data in the working directory."""
    log_dir: str = ""
    """Where each component writes its log; empty: <data dir>/logs."""
    logging: LoggingConfig = LoggingConfig()
    database: DatabaseConfig = DatabaseConfig()
    ca: CAConfig = CAConfig()
    ra: RAConfig = RAConfig()
    est: ESTConfig = ESTConfig()
    capf: CAPFConfig = CAPFConfig()
    connections: ConnectionsConfig = ConnectionsConfig()
    admin: AdminConfig = AdminConfig()
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("data_dir", "log_dir")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("must not contain a NUL byte")
        return v

    # Resolved paths: the data dir from the file, $ONLINECA_DATA_DIR, or ./onlineca-data; always
    # absolute, so every message that names a file names it whatever the working directory.
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or os.environ.get("ONLINECA_DATA_DIR") or DEFAULT_DATA_DIR).absolute()

    @property
    def paths(self) -> DataDir:
        return DataDir(self.data_path)

    @property
    def log_path(self) -> Path:
        return Path(self.log_dir).absolute() if self.log_dir else self.paths.logs

    @property
    def database_url(self) -> str:
        url = self.database.url.get_secret_value()
        return url or f"sqlite:///{self.paths.database}"

    @property
    def ca_database_url(self) -> str:
        """The CA's request database: ``[admin] ca_database_url`` when set (the lab keeps the CA's
        requests in a file of their own), else ``[database] url``: every command, the console and
        'ca serve' read the same one."""
        return self.admin.ca_database_url.get_secret_value() or self.database_url

    @property
    def ca_users_path(self) -> Path:
        """The CA's users file: ``[ca] users_file``, else ``<data>/ca/users``."""
        return Path(self.ca.users_file) if self.ca.users_file else self.paths.ca.users


@dataclass(frozen=True)
class CAPaths:
    """``<data>/ca``: what ``ca init`` makes (keys 0600) and the CA's users file."""

    dir: Path

    @property
    def root_key(self) -> Path:
        return self.dir / "root.key"
    @property
    def root_cert(self) -> Path:
        return self.dir / "root.pem"
    @property
    def issuing_key(self) -> Path:
        return self.dir / "issuing.key"
    @property
    def issuing_cert(self) -> Path:
        return self.dir / "issuing.pem"
    @property
    def chain(self) -> Path:
        return self.dir / "chain.pem"
    @property
    def web_key(self) -> Path:
        return self.dir / "web.key"
    @property
    def web_cert(self) -> Path:
        return self.dir / "web.pem"
    @property
    def users(self) -> Path:
        return self.dir / "users"

    # The published CRLs and CA certificate (AD CS's CertEnroll folder), and the
    # delegated OCSP responder's certificate and key.
    @property
    def cert_enroll(self) -> Path:
        return self.dir / "CertEnroll"

    @property
    def ocsp_cert(self) -> Path:
        return self.dir / "ocsp.pem"

    @property
    def ocsp_key(self) -> Path:
        return self.dir / "ocsp.key"

    def exists(self) -> bool:
        return self.root_key.exists() or self.issuing_key.exists()


@dataclass(frozen=True)
class CAPFPaths:
    """``<data>/capf``: the source document's CSR and certificate folders, troubleshooting
    fetches, and CAPF's own TLS certificate and key."""

    root: Path

    @property
    def csr_dir(self) -> Path:
        return self.root / "csr"
    @property
    def cert_dir(self) -> Path:
        return self.root / "cert"
    @property
    def troubleshoot_dir(self) -> Path:
        return self.root / "troubleshoot"
    @property
    def capf_cert(self) -> Path:
        return self.root / "capf.pem"
    @property
    def capf_key(self) -> Path:
        return self.root / "capf.key"

    def csr_file(self, device: str) -> Path:
        return self.csr_dir / f"{device}.csr"

    @property
    def ca_dir(self) -> Path:
        """CAPF's own CA (the ``capf`` issuer): capf-ca.key (0600) and capf-ca.pem."""
        return self.root / "ca"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "capf-ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "capf-ca.pem"

    @property
    def node_id_file(self) -> Path:
        """This CAPF node's id, made at first start, kept across restarts."""
        return self.root / "node-id"

    def folders(self) -> tuple[Path, ...]:
        return (self.root, self.csr_dir, self.cert_dir, self.troubleshoot_dir)


@dataclass(frozen=True)
class DataDir:
    """Every path of a data dir, in one place (nothing here creates anything)::

        <data>/onlineca.db      the SQLite database (when no [database] url is set)
        <data>/logs/            each component's log (unless log_dir is set)
        <data>/ca/              the CA: root and issuing keys and certificates, web certificate, users
        <data>/capf/            CAPF: csr/, cert/, troubleshoot/, capf.pem, capf.key
        <data>/phones/<NAME>/   simulated phones
        <data>/mic-ca/          the simulators' manufacturer CA
        <data>/admin/           the console's TLS certificate and key
    """

    root: Path

    @property
    def ca(self) -> CAPaths:
        return CAPaths(self.root / "ca")

    @property
    def capf(self) -> CAPFPaths:
        return CAPFPaths(self.root / "capf")

    @property
    def database(self) -> Path:
        return self.root / "onlineca.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def phones(self) -> Path:
        return self.root / "phones"

    def phone(self, name: str) -> Path:
        return self.phones / name.upper()

    @property
    def mic_ca(self) -> Path:
        return self.root / "mic-ca"

    @property
    def admin(self) -> Path:
        """The console's own TLS certificate and key (admin.pem, admin.key)."""
        return self.root / "admin"


def _env_overrides(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Apply ONLINECA_<SECTION>_<KEY> variables to scalar keys of each section."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section_name, field in Config.model_fields.items():
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            var = ENV_PREFIX + section_name.upper()
            if var in environ and section_name in ("data_dir", "log_dir"):
                merged[section_name] = environ[var]
            continue
        for key in annotation.model_fields:
            var = f"{ENV_PREFIX}{section_name.upper()}_{key.upper()}"
            if var in environ:
                merged.setdefault(section_name, {})
                if not isinstance(merged[section_name], dict):
                    continue
                merged[section_name][key] = environ[var]
    return merged


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that holds the key at ``loc`` (e.g. ("ra", "port") -> RAConfig)."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)  # list[TemplateConfig] -> TemplateConfig
        if inner and isinstance(inner[0], type):
            annotation = inner[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _is_secret(loc: tuple[Any, ...]) -> bool:
    model = _model_at(loc)
    field = model.model_fields.get(str(loc[-1])) if model is not None and loc else None
    return field is None or field.annotation is SecretStr or "password" in str(loc[-1])


def _env_var_for(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "_".join(str(p).upper() for p in loc)


def _describe(err: ValidationError, environ: dict[str, str]) -> str:
    """One line: the key (as written in the file), what is wrong, and the bad value unless secret."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    if first["type"] == "extra_forbidden":
        model = _model_at(loc)
        known = ", ".join(model.model_fields) if model is not None else ""
        return f"{where}: unknown key" + (f" (known keys here: {known})" if known else "")
    message = f"{where}: {first['msg']}"
    if _env_var_for(loc) in environ and len(loc) == 2:
        message += f" (from ${_env_var_for(loc)})"
    if "input" in first and not isinstance(first["input"], (dict, list)) and not _is_secret(loc):
        message += f" (got {first['input']!r})"
    return message


def is_path_key(name: str) -> bool:
    """Whether a key holds a file or folder name (resolved against the configuration file's folder)."""
    return name in PATH_KEYS or name.endswith(PATH_SUFFIXES)


# Keys are paths by their names: every ``*_cert``, ``*_key``, ``*_file``, ``*_store``, ``*_dir``
# and ``*_module`` (tests/unit/test_config.py lists them, so a new one is seen).
PATH_SUFFIXES = ("_cert", "_key", "_file", "_store", "_dir", "_module")
PATH_KEYS = frozenset({"data_dir", "log_dir"})


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The file's relative paths made absolute against ``base`` (the file's folder), so that a
    service started from / (systemd, cron) reads the same files as the administrator's shell."""
    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return str(base / value)
        return str(Path(value).expanduser()) if isinstance(value, str) and value.startswith("~") else value

    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out[key] = {k: (fix(v) if is_path_key(k) else v) for k, v in value.items()}
        else:
            out[key] = fix(value) if is_path_key(key) else value
    return out


@dataclass(frozen=True)
class ConfigSource:
    """Which configuration file is in force and why: ``origin`` is ``--config``,
    ``$ONLINECA_CONFIG``, or the search-path entry that matched; ``path`` None means the
    embedded defaults (no file found)."""

    path: Path | None
    origin: str

    def describe(self) -> str:
        """``configuration /etc/onlineca/onlineca.toml (from /etc/onlineca/onlineca.toml)``, one line."""
        if self.path is None:
            return "configuration: embedded defaults (no file in the search path: " + ", ".join(
                entry for entry, _ in search_path()) + ")"
        return f"configuration: {self.path} (from {self.origin})"


SYSTEM_CONFIG = Path("/etc/onlineca/onlineca.toml")


def search_path(environ: dict[str, str] | None = None, cwd: Path | None = None,
                home: Path | None = None) -> list[tuple[str, Path]]:
    """Where a configuration file is looked for when neither --config nor $ONLINECA_CONFIG is
    given, in order: (how it is shown, the absolute path)."""
    environ = dict(os.environ) if environ is None else environ
    cwd = cwd or Path.cwd()
    xdg = environ.get("XDG_CONFIG_HOME")
    home = home or Path(environ.get("HOME") or Path.home())
    user_dir = Path(xdg) if xdg else home / ".config"
    return [("./onlineca.toml", cwd / "onlineca.toml"),
            ("~/.config/onlineca/onlineca.toml", user_dir / "onlineca" / "onlineca.toml"),
            (str(SYSTEM_CONFIG), SYSTEM_CONFIG)]


def find_config(explicit: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None,
                cwd: Path | None = None, home: Path | None = None) -> ConfigSource:
    """The configuration file in force: ``--config``, then ``$ONLINECA_CONFIG``, then the first
    file of ``search_path`` that exists.  A file named explicitly must exist (``load_config``
    says so); a search-path entry that does not exist is skipped."""
    environ = dict(os.environ) if environ is None else environ
    if explicit is not None and str(explicit) != "":
        return ConfigSource(Path(explicit).expanduser().absolute(), "--config")
    if environ.get("ONLINECA_CONFIG"):
        return ConfigSource(Path(environ["ONLINECA_CONFIG"]).expanduser().absolute(), "$ONLINECA_CONFIG")
    for shown, path in search_path(environ, cwd, home):
        if path.is_file():
            return ConfigSource(path.absolute(), shown)
    return ConfigSource(None, "embedded defaults")
MAX_CONFIG_BYTES = 1 << 20  # a configuration file is a few kilobytes


def load_config(path: str | os.PathLike[str] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Read and validate a configuration file; ``None`` gives the embedded defaults.  Relative
    paths in the file are relative to the file's folder; in the environment, to the working
    directory."""
    environ = dict(os.environ) if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path).expanduser().absolute()
        try:
            # Stat before opening: a FIFO or a device would block or never end.
            if p.is_dir():
                raise IsADirectoryError(21, "Is a directory", str(p))
            if not stat.S_ISREG(p.stat().st_mode):
                raise ConfigError(f"{p}: not a regular file", hint="Give --config a TOML file.")
            if p.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES} bytes: not a configuration file")
            text = p.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the name
            raise ConfigError(f"{p}: cannot read: {exc}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        except RecursionError:  # arrays or tables nested thousands deep
            raise ConfigError(f"{p}: not valid TOML: nested too deep") from None
        raw = _resolve_paths(raw, p.parent)
        path = p
    try:
        return Config.model_validate(_env_overrides(raw, environ))
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{_describe(exc, environ)}") from None


# --------------------------------------------------------------------------- config example


def _toml_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. [ra] label_templates
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def field_docs() -> dict[str, dict[str, str]]:
    """``{model class name: {field: its docstring}}``, read from this module's source."""
    import ast

    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(Path(__file__).read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = docs.setdefault(node.name, {})
        for stmt, after in zip(node.body, node.body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                fields[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="#   ") or ["#"]


def _key_lines(model: BaseModel, section: str, docs: dict[str, dict[str, str]]) -> list[str]:
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel) or (isinstance(value, list) and value and isinstance(value[0], BaseModel)):
            continue
        description = docs.get(type(model).__name__, {}).get(name, "")
        if field.annotation is SecretStr:
            var = f"{ENV_PREFIX}{section.upper()}_{name.upper()}".replace(".", "_")
            lines += _comment(description)
            lines.append(f"# {name} = \"\"   # better: ${var}, kept out of this file")
            continue
        lines += _comment(description)
        lines.append(f"{name} = {_toml_value(value)}")
    return lines


def example_toml() -> str:
    """Every key with its default and what it is for, generated from the models above (so it
    cannot drift); loading it gives the defaults (a test checks both)."""
    defaults = Config()
    out = ["# onlineca configuration: every key with its default (generated by 'onlineca config example').",
           "# Every key is optional. Relative paths are relative to this file's folder.",
           "# Secrets come from the environment instead: ONLINECA_<SECTION>_<KEY>, e.g.",
           "# ONLINECA_RA_CA_PASSWORD, ONLINECA_CAPF_RA_PASSWORD, ONLINECA_DATABASE_URL.",
           "# Looked for at: --config, $ONLINECA_CONFIG, " + ", ".join(e for e, _ in search_path()) + ".",
           ""]
    docs = field_docs()
    out += _key_lines(defaults, "", docs)
    for name in Config.model_fields:
        section = getattr(defaults, name)
        if not isinstance(section, BaseModel):
            continue
        doc = (type(section).__doc__ or name).strip().splitlines()[0]
        out += ["", f"[{name}]", *_comment(doc.replace("``", "'"))]
        out += _key_lines(section, name, docs)
        for sub_name in type(section).model_fields:
            items = getattr(section, sub_name)
            if isinstance(items, list) and items and isinstance(items[0], BaseModel):
                for item in items:
                    out += ["", f"[[{name}.{sub_name}]]"]
                    out += _key_lines(item, f"{name}.{sub_name}", docs)
    return "\n".join(out) + "\n"
