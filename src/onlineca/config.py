"""Configuration: one TOML file, validated by pydantic models, with environment overrides.

Every component reads its own section (``[ca]``, ``[ra]``, ``[est]``, ``[capf]``...).  A bad file
gets one clear message naming the key and what is wrong (``ConfigError``).  Secrets are
``SecretStr`` so they never print, and may come from the environment instead of the file:
``ONLINECA_<SECTION>_<KEY>`` overrides ``[section] key`` (e.g. ``ONLINECA_RA_CA_PASSWORD``).
This module reads files and the environment; it never writes anything.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from onlineca.errors import ConfigError

ENV_PREFIX = "ONLINECA_"
DEFAULT_DATA_DIR = "./onlineca-data"

KeyType = Literal["rsa", "ec"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoggingConfig(_Section):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class DatabaseConfig(_Section):
    # Empty means SQLite in the data dir: sqlite:///<data_dir>/onlineca.db
    url: SecretStr = SecretStr("")
    echo: bool = False
    # Seconds a write waits for another writer's lock (SQLite) before the CA answers "busy".
    busy_timeout: float = Field(default=10.0, gt=0)


class TemplateConfig(_Section):
    """A certificate template, as an AD CS administrator defines one."""

    name: str
    display_name: str = ""
    validity_days: int = Field(default=365, ge=1, le=36500)
    key_usage: list[
        Literal[
            "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement",
        ]
    ] = ["digital_signature", "key_encipherment"]
    extended_key_usage: list[str] = ["client_auth", "server_auth"]
    allowed_key_types: list[KeyType] = ["rsa", "ec"]
    min_rsa_bits: int = Field(default=2048, ge=512, le=16384)
    min_ec_bits: int = Field(default=256, ge=256, le=521)
    # AD CS's "supply in the request" (true) or "build from this Active Directory information"
    # (false: the subject is CN=<requester>); the same for the subjectAltName (false: none).
    subject_from_request: bool = True
    sans_from_request: bool = True
    # Regular expressions (whole match, case-insensitive) the subject ("CN=...,O=...") and each
    # subjectAltName value must match; empty: anything.
    allowed_subjects: list[str] = []
    allowed_sans: list[str] = []
    manager_approval: bool = False
    # Users (as in the users file) allowed to enroll; "*" means every authenticated user.
    enroll: list[str] = ["*"]
    # capf10 branch: issue for a key an RA agent vouched for (pki.vouch; docs/ca.md), not only
    # for a self-signed PKCS#10.  AD CS has no such setting: it always wants the self-signature.
    vouched_keys: bool = False

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
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    # Web server certificate; empty = the CA makes and uses its own, issued by its intermediate.
    tls_cert: str = ""
    tls_key: str = ""
    key_type: KeyType = "rsa"
    key_size: int = Field(default=2048, ge=1024, le=4096)
    ec_curve: Literal["P-256", "P-384", "P-521"] = "P-256"
    root_name: str = "CN=onlineca Lab Root CA,O=onlineca"
    issuing_name: str = "CN=onlineca Lab Issuing CA,O=onlineca"
    root_validity_days: int = Field(default=3650, ge=1)
    issuing_validity_days: int = Field(default=1825, ge=1)
    web_names: list[str] = ["localhost", "127.0.0.1"]
    # Users file: one "user:scrypt$..." line each (see onlineca ca users add).
    users_file: str = ""
    domain: str = "ONLINECA"
    basic_auth: bool = True
    ntlm_auth: bool = False
    # Negotiate with Kerberos: the keytab of HTTP/<host> (default $KRB5_KTNAME), and the realm
    # whose users may log in (empty: the keytab's default realm); a principal user@REALM is "user".
    kerberos_auth: bool = False
    keytab: str = ""
    kerberos_realm: str = ""
    # Extended Protection (EPA): NTLM logins must carry the channel binding of this server's TLS
    # certificate (RFC 5929 tls-server-end-point), or get 401 as IIS answers it (SEC_E_BAD_BINDINGS).
    require_epa: bool = False
    max_request_bytes: int = Field(default=65536, ge=1024)
    templates: list[TemplateConfig] = Field(default_factory=_default_templates)


class RAConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8084, ge=1, le=65535)
    tls_cert: str = ""
    tls_key: str = ""
    connector: Literal["certsrv", "local"] = "certsrv"
    ca_url: str = "https://127.0.0.1:8443/certsrv"
    # basic, ntlm, kerberos (HTTP Negotiate: ca_user@REALM with ca_password, or the ticket cache
    # $KRB5CCNAME / client keytab when the password is empty), or cert (ca_client_cert).
    ca_auth: Literal["basic", "ntlm", "cert", "kerberos"] = "basic"
    # NTLM and Kerberos tokens carry the TLS channel binding of the CA's certificate (Extended
    # Protection); the host of the CA's service principal HTTP/<host> if not ca_url's.
    ca_channel_binding: bool = True
    ca_service_host: str = ""
    # The CA's identity beyond the trust store (its certificate must carry serverAuth, always):
    # a name it must hold (subjectAltName or CN), and optionally its SHA-256 fingerprint.
    ca_expected_name: str = ""
    ca_fingerprint: str = ""
    ca_user: str = "ciscora"
    ca_password: SecretStr = SecretStr("")
    ca_client_cert: str = ""
    ca_client_key: str = ""
    template: str = "CiscoRA"
    trust_store: str = ""
    connect_timeout: float = Field(default=10.0, gt=0)
    login_timeout: float = Field(default=10.0, gt=0)
    enroll_timeout: float = Field(default=10.0, gt=0)
    client_auth: Literal["users", "certificate", "passthrough"] = "passthrough"
    # Local connector: the issuing key and certificate to sign with.
    local_key: str = ""
    local_cert: str = ""
    # Start-up checks retry with exponential backoff from backoff_initial up to backoff_max seconds.
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=60.0, gt=0)
    # Retry-After (seconds) on 202 (pending at the CA) and 503 (RA not ready, CA unreachable or slow).
    pending_retry_after: int = Field(default=60, ge=1)
    unavailable_retry_after: int = Field(default=30, ge=1)
    # Passthrough: how long a CA login with an EST client's credentials is trusted.
    auth_cache_seconds: float = Field(default=60.0, ge=0)
    # Passthrough: accounts whose kept-alive CA client is kept (one per account, least recently
    # used out); a refused login is not forwarded again with the same credentials for
    # login_failure_cache_seconds; refused logins per account and per client address within
    # login_throttle_seconds beyond which the RA stops asking the CA (so nobody locks an account).
    passthrough_cache_size: int = Field(default=256, ge=1)
    login_failure_cache_seconds: float = Field(default=60.0, ge=0)
    max_failed_logins_per_user: int = Field(default=5, ge=1)
    max_failed_logins_per_address: int = Field(default=20, ge=1)
    login_throttle_seconds: float = Field(default=300.0, gt=0)
    # Consecutive logins the CA refuses (HTTP 401) before the RA stops logging in until a reload:
    # a real AD account locks after a few failures.
    max_login_failures: int = Field(default=3, ge=1)
    # Seconds between the background checks that the CA still answers while the RA is ready.
    ready_check_interval: float = Field(default=10.0, gt=0)
    # Pending requests (kept in [database]) nobody asked about for this many days are forgotten.
    pending_keep_days: float = Field(default=30.0, gt=0)
    # capf10 branch: vouched requests (pki.vouch; docs/ra.md) come from RA agents only ([est]
    # ra_agents / ra_agent_eku, sec branch); vouch_agents optionally pins which agent certificates
    # ("sha256:<hex>" fingerprints).  Their requests go to the CA under vouched_template.
    vouch_agents: list[str] = []
    vouched_template: str = "CAPFVouchedLSC"
    # sec branch: EST CA labels (/.well-known/est/<label>/...) enrolled under another template than
    # ``template``, e.g. {"capf-agent": "CAPFAgent"} for CAPF's own RA-agent certificate.
    label_templates: dict[str, str] = {}

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
    pop_tls_unique: bool = False
    max_body_bytes: int = Field(default=65536, ge=1024)
    request_timeout: float = Field(default=30.0, gt=0)
    retry_after: int = Field(default=60, ge=1)
    users_file: str = ""
    client_trust_store: str = ""
    labels: list[str] = []
    # RA agents: clients authenticated by certificate that may enroll names other than their own
    # (CAPF, for its phones): their subjects ("CN=...,O=..."), and the EKU that makes a certificate
    # an agent's (id-kp-cmcRA; "" turns the EKU rule off).  Everyone else gets only its own names.
    ra_agents: list[str] = []
    ra_agent_eku: str = "1.3.6.1.5.5.7.3.28"


class ConnectionsConfig(_Section):
    """Bounds on the connections of every HTTPS server (CA, RA, EST); see docs/security.md."""

    # Open connections in all, and from one client address (an RA, or a load balancer, counts as one).
    max_connections: int = Field(default=1024, ge=1)
    max_per_address: int = Field(default=256, ge=1)
    # Seconds for the TLS handshake; for complete request headers after it (or after an answer).
    handshake_timeout: float = Field(default=10.0, gt=0)
    header_timeout: float = Field(default=15.0, gt=0)
    # Seconds a kept-alive connection may stay idle; seconds to read a request body.
    idle_timeout: float = Field(default=60.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)


class CAPFConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=3804, ge=1, le=65535)
    ra_url: str = "https://127.0.0.1:8084/.well-known/est"
    ra_user: str = "ciscora"
    ra_password: SecretStr = SecretStr("")
    ra_trust_store: str = ""
    # The RA's identity beyond ra_trust_store (its certificate must carry serverAuth, always): a
    # name it must hold (subjectAltName or CN), and optionally its SHA-256 fingerprint.
    ra_expected_name: str = ""
    ra_fingerprint: str = ""
    max_concurrent_enrollments: int = Field(default=16, ge=1)
    operation_deadline_days: int = Field(default=10, ge=1)
    lsc_validity_days: int = Field(default=365, ge=1, le=1825)
    # The session server (onlineca.capf.server); every wait is bounded.
    tls_cert: str = ""            # empty: CAPF enrolls its own at <data>/capf/capf.pem through the RA
    tls_key: str = ""
    tls_names: list[str] = ["localhost", "127.0.0.1"]
    mic_trust_store: str = ""     # manufacturer CAs that issue MICs
    read_timeout: float = Field(default=60.0, gt=0)        # each read from a phone
    session_timeout: float = Field(default=3600.0, gt=0)   # one whole session
    keepalive_seconds: float = Field(default=15.0, gt=0)   # REQUEST_IN_PROGRESS while the RA works
    max_keygen_seconds: float = Field(default=1800.0, gt=0)
    max_keygen_attempts: int = Field(default=3, ge=1, le=10)
    enroll_timeout: float = Field(default=30.0, gt=0)      # one EST request to the RA
    retry_delay: int = Field(default=300, ge=1)            # RETRY_LATER when the RA/CA is unavailable
    max_auth_failures: int = Field(default=5, ge=1)        # wrong auth strings before a lockout
    lockout_minutes: float = Field(default=30.0, gt=0)
    # sec branch: a wrong auth string is answered after auth_failure_delay seconds, doubled for each
    # wrong one in a row, never more than auth_failure_max_delay (the device's lease is held meanwhile).
    auth_failure_delay: float = Field(default=1.0, ge=0)
    auth_failure_max_delay: float = Field(default=5.0, ge=0)
    # sec branch: empty: made once and kept in <data>/capf/node-id (stable across restarts).
    node_id: str = ""
    # sec branch: a session's device lease lasts this long and is renewed every third of it while
    # the session lives, so the devices of a node that died are free again within this time.
    lease_seconds: float = Field(default=30.0, ge=3, le=600)
    # sec branch: EST CA label under which CAPF enrolls its own (RA agent) certificate; the RA maps
    # it to a template ([ra] label_templates).  Empty: the RA's default template.
    agent_label: str = ""
    # sec branch: reconciliation (capf reconcile, and every reconcile_interval seconds): our CA's
    # request database to read (empty: none, report only), and how long an enrollment may be in
    # flight before it counts as abandoned.
    ca_database_url: SecretStr = SecretStr("")
    reconcile_interval: float = Field(default=300.0, gt=0)
    reconcile_grace: float = Field(default=120.0, gt=0)
    reconcile_window_days: float = Field(default=30.0, gt=0)  # how far back CA certificates are checked
    scheduler_interval: float = Field(default=60.0, gt=0)  # renewal runs; CAPF's own certificate check
    # capf10 branch: a phone that announced no keepalive gets its LSC within this, or a decline
    # (public clients give up after 8-10 s of silence).
    public_enroll_timeout: float = Field(default=6.0, gt=0)


class AdminConfig(_Section):
    """The administration console and REST API (``onlineca admin serve``, docs/admin.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Empty: <data>/admin/admin.pem, made at first start (issued by the CA in the data dir if any).
    tls_cert: str = ""
    tls_key: str = ""
    # PEM of CAs whose client certificates log in as the account their CN names (empty: off).
    client_trust_store: str = ""
    session_idle_minutes: float = Field(default=30.0, gt=0)
    session_max_hours: float = Field(default=12.0, gt=0)
    token_max_days: int = Field(default=365, ge=1, le=3650)
    max_login_failures: int = Field(default=5, ge=1)        # per account, within login_window_minutes
    max_address_failures: int = Field(default=20, ge=1)     # per source address, within the window
    login_window_minutes: float = Field(default=15.0, gt=0)
    max_body_bytes: int = Field(default=1048576, ge=1024)
    request_timeout: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    # The CA's request database when it is not [database] url (the lab keeps it apart).
    ca_database_url: SecretStr = SecretStr("")


class Config(_Section):
    data_dir: str = ""
    log_dir: str = ""
    logging: LoggingConfig = LoggingConfig()
    database: DatabaseConfig = DatabaseConfig()
    ca: CAConfig = CAConfig()
    ra: RAConfig = RAConfig()
    est: ESTConfig = ESTConfig()
    capf: CAPFConfig = CAPFConfig()
    admin: AdminConfig = AdminConfig()
    connections: ConnectionsConfig = ConnectionsConfig()

    @field_validator("data_dir", "log_dir")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("must not contain a NUL byte")
        return v

    # Resolved paths: the data dir from the file, $ONLINECA_DATA_DIR, or ./onlineca-data.
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or os.environ.get("ONLINECA_DATA_DIR") or DEFAULT_DATA_DIR)

    @property
    def paths(self) -> DataDir:
        return DataDir(self.data_path)

    @property
    def log_path(self) -> Path:
        return Path(self.log_dir) if self.log_dir else self.paths.logs

    @property
    def database_url(self) -> str:
        url = self.database.url.get_secret_value()
        return url or f"sqlite:///{self.paths.database}"

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
        """sec branch: this CAPF node's id, made at first start, kept across restarts."""
        return self.root / "node-id"

    def csr_file(self, device: str) -> Path:
        return self.csr_dir / f"{device}.csr"

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


MAX_CONFIG_BYTES = 1 << 20  # sec branch: a configuration file is a few kilobytes


def load_config(path: str | os.PathLike[str] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Read and validate a configuration file; ``None`` gives the embedded defaults."""
    environ = dict(os.environ) if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            # sec branch: stat before opening: a FIFO or a device would block or never end.
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
        except RecursionError:  # sec branch: arrays or tables nested thousands deep
            raise ConfigError(f"{p}: not valid TOML: nested too deep") from None
    try:
        return Config.model_validate(_env_overrides(raw, environ))
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{_describe(exc, environ)}") from None


EXAMPLE = """\
# onlineca configuration. Every key is optional; these are the defaults.
# Secrets may come from the environment instead: ONLINECA_<SECTION>_<KEY>,
# e.g. ONLINECA_RA_CA_PASSWORD, ONLINECA_CAPF_RA_PASSWORD, ONLINECA_DATABASE_URL.
data_dir = "./onlineca-data"

[logging]
format = "text"        # or "json"
level = "info"

[database]
# url = "postgresql+psycopg://onlineca@localhost/onlineca"   (default: SQLite in data_dir)

[ca]
host = "127.0.0.1"
port = 8443
key_type = "rsa"       # or "ec"
key_size = 2048
root_name = "CN=onlineca Lab Root CA,O=onlineca"
issuing_name = "CN=onlineca Lab Issuing CA,O=onlineca"

[[ca.templates]]
name = "CiscoRA"
validity_days = 365
key_usage = ["digital_signature", "key_encipherment"]
extended_key_usage = ["client_auth", "server_auth"]
manager_approval = false
enroll = ["*"]

[ra]
port = 8084
connector = "certsrv"  # or "local"
ca_url = "https://127.0.0.1:8443/certsrv"
ca_user = "ciscora"
template = "CiscoRA"
connect_timeout = 10.0
login_timeout = 10.0
enroll_timeout = 10.0

[est]
serverkeygen = true

[capf]
port = 3804
ra_url = "https://127.0.0.1:8084/.well-known/est"

[connections]          # every HTTPS server (CA, RA, EST)
max_connections = 1024
max_per_address = 256
handshake_timeout = 10.0
header_timeout = 15.0
idle_timeout = 60.0
body_timeout = 30.0
"""
