"""``onlineca config check``: what can be known about a configuration without the network.

It checks the URLs (scheme, host, port, path), every file the configuration names (it exists, this
user may read it, it is what the key says: a certificate, a key, a trust store), that each
certificate and key configured together belong together, the certificates' dates and chains
(against the trust store that will judge them, or at least their own chain), the CA in the data
dir, and the ports (in range, not twice on one address, below 1024 only with privilege).  Each
result names the key as written in the file and the absolute path it resolved to.  It reads
files and never writes, never connects anywhere (that is ``onlineca diagnose``) and never shows a
secret.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography import x509

from onlineca import pki
from onlineca.config import Config, ConfigSource, is_path_key
from onlineca.errors import OnlineCAError
from onlineca.infra import files

Level = Literal["ok", "warning", "error"]
EXPIRY_WARNING_DAYS = 30

# (section, certificate key, private key key) configured together
PAIRS = (("ca", "tls_cert", "tls_key"), ("ra", "tls_cert", "tls_key"), ("ra", "ca_client_cert", "ca_client_key"),
         ("ra", "local_cert", "local_key"), ("capf", "tls_cert", "tls_key"), ("admin", "tls_cert", "tls_key"))
# certificate key -> the trust store key that will judge it (whoever connects to that server)
JUDGED_BY = {("ca", "tls_cert"): ("ra", "trust_store"), ("ra", "tls_cert"): ("capf", "ra_trust_store")}
FOLDER_KEYS = ("data_dir", "log_dir")


@dataclass(frozen=True)
class Check:
    level: Level
    what: str     # the key as written in the file, e.g. "[ra] tls_cert", or a subject ("CA in data dir")
    message: str  # with absolute paths

    def line(self) -> str:
        return f"{self.level:<8} {self.what}: {self.message}"


def _passphrase(cfg: Config, section: str) -> bytes | None:
    try:
        if section == "ca":
            return cfg.ca.key_passphrase()
        if section == "capf":
            return cfg.capf.key_passphrase()
    except OnlineCAError:
        return None
    return None


class _Run:
    def __init__(self, cfg: Config, now: dt.datetime) -> None:
        self.cfg = cfg
        self.now = now
        self.results: list[Check] = []

    def add(self, level: Level, what: str, message: str) -> None:
        self.results.append(Check(level, what, message))

    # -- URLs
    def url(self, what: str, value: str, path_hint: str) -> None:
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError as exc:
            self.add("error", what, f"{value!r}: bad port ({exc})")
            return
        if parts.scheme != "https":
            self.add("error", what, f"{value!r}: must be an https:// URL")
        elif not parts.hostname:
            self.add("error", what, f"{value!r}: no host")
        elif not parts.path.rstrip("/").endswith(path_hint):
            self.add("warning", what, f"{value!r}: the path usually ends with {path_hint}")
        else:
            self.add("ok", what, f"{value} (host {parts.hostname}, port {port or 443})")

    # -- files
    def readable(self, what: str, path: Path, *, folder_ok: bool = False) -> bool:
        if not path.exists():
            if path.is_relative_to(self.cfg.data_path) and not self.cfg.paths.ca.issuing_cert.exists():
                # a fresh install names what 'ca init' (and CAPF's first start) will make
                self.add("warning", what, f"{path}: not there yet ('onlineca ca init' and the servers make the "
                         "data dir's files)")
            else:
                self.add("error", what, f"{path}: no such file")
            return False
        if path.is_dir() and not folder_ok:
            self.add("error", what, f"{path}: is a folder, a file was expected")
            return False
        if not os.access(path, os.R_OK):
            self.add("error", what, f"{path}: not readable by this user (uid {os.getuid()})")
            return False
        return True

    def certificates(self, what: str, path: Path) -> list[x509.Certificate] | None:
        if not self.readable(what, path):
            return None
        try:
            certs = files.load_cert_file(path)
        except OnlineCAError as exc:
            self.add("error", what, f"{path}: {exc.message}")
            return None
        leaf = certs[0]
        left = leaf.not_valid_after_utc - self.now
        subject = pki.name_to_slash(leaf.subject)
        if leaf.not_valid_before_utc > self.now:
            self.add("error", what, f"{path}: {subject} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
        elif left.total_seconds() <= 0:
            self.add("error", what, f"{path}: {subject} expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
        elif left.days < EXPIRY_WARNING_DAYS:
            self.add("warning", what, f"{path}: {subject} expires in {left.days} day(s), on {leaf.not_valid_after_utc:%Y-%m-%d}")
        else:
            self.add("ok", what, f"{path}: {subject}, valid until {leaf.not_valid_after_utc:%Y-%m-%d}")
        return certs

    def key(self, what: str, path: Path, passphrase: bytes | None) -> pki.PrivateKey | None:
        if not self.readable(what, path):
            return None
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            self.add("warning", what, f"{path}: mode {mode:04o}; a private key should be 0600")
        try:
            key = files.read_private_key(path, passphrase)
        except OnlineCAError as exc:
            self.add("error", what, exc.message)
            return None
        kind, size = pki.key_spec(key)
        encrypted = " (encrypted)" if files.is_encrypted_key_file(path) else ""
        self.add("ok", what, f"{path}: {kind.upper()} {size}{encrypted}")
        return key

    def trust_store(self, what: str, path: Path) -> pki.TrustStore | None:
        if not self.readable(what, path, folder_ok=True):
            return None
        try:
            store = files.load_trust_store(path)
        except (OSError, OnlineCAError) as exc:
            self.add("error", what, f"{path}: {getattr(exc, 'message', exc)}")
            return None
        if not len(store):
            self.add("error", what, f"{path}: no certificate in it")
            return None
        self.add("ok", what, f"{path}: {len(store)} certificate(s)")
        return store

    def chain(self, what: str, path: Path, certs: list[x509.Certificate], trust: pki.TrustStore | None,
              trust_what: str) -> None:
        leaf, rest = certs[0], certs[1:]
        if trust is None:
            # no trust store to judge it: at least its own chain must hold together
            for child, parent in itertools.pairwise(certs):
                if child.issuer != parent.subject:
                    self.add("error", what, f"{path}: the certificates are out of order: "
                             f"{pki.name_to_slash(child.issuer)} should follow {pki.name_to_slash(child.subject)}")
                    return
            return
        try:
            path_found = pki.validate_chain(leaf, rest, trust, at=self.now)
        except OnlineCAError as exc:
            self.add("error", what, f"{path}: does not chain to {trust_what}: {exc.message}")
            return
        self.add("ok", what, f"{path}: chains to {pki.name_to_slash(path_found[-1].subject)} ({trust_what})")


def _abs(value: str) -> Path:
    return Path(value).expanduser().absolute()


def check_config(cfg: Config, source: ConfigSource, now: dt.datetime | None = None) -> list[Check]:
    """Every check, in the order of the file; see the module docstring."""
    run = _Run(cfg, now or dt.datetime.now(dt.UTC))
    run.add("ok", "configuration", source.describe().removeprefix("configuration: "))
    data = cfg.data_path
    run.add("ok" if data.is_dir() else "warning", "data_dir",
            f"{data}" + ("" if data.is_dir() else ": does not exist yet ('onlineca ca init' or the first server makes it)"))

    # URLs
    run.url("[ra] ca_url", cfg.ra.ca_url, "/certsrv")
    run.url("[capf] ra_url", cfg.capf.ra_url, "/.well-known/est")
    db_url = cfg.database.url.get_secret_value()
    if db_url:
        scheme = db_url.split(":", 1)[0]
        if scheme.split("+")[0] not in ("sqlite", "postgresql"):
            run.add("error", "[database] url", f"scheme {scheme!r}: onlineca uses sqlite or postgresql")
        else:
            run.add("ok", "[database] url", f"{scheme} (the URL itself is not shown: it may hold a password)")
    else:
        run.add("ok", "[database] url", f"SQLite {cfg.paths.database}")

    # files named by the configuration, section by section
    stores: dict[tuple[str, str], pki.TrustStore | None] = {}
    for section in ("ca", "ra", "est", "capf", "admin"):
        model = getattr(cfg, section)
        for key in type(model).model_fields:
            value = getattr(model, key)
            if not isinstance(value, str) or not value or not is_path_key(key):
                continue
            what, path = f"[{section}] {key}", _abs(value)
            if key.endswith("_store"):
                stores[(section, key)] = run.trust_store(what, path)
            elif key.endswith("_cert") or key.endswith("_key"):
                continue  # checked in pairs below
            elif key == "pkcs11_module":
                run.readable(what, path)
            elif run.readable(what, path):
                mode = path.stat().st_mode & 0o777
                secret = "passphrase" in key or "pin" in key or "users" in key
                run.add("warning" if secret and mode & 0o077 else "ok", what,
                        f"{path}" + (f": mode {mode:04o}; a secret should be 0600" if secret and mode & 0o077 else ""))
    for section, cert_key, key_key in PAIRS:
        model = getattr(cfg, section)
        cert_value, key_value = getattr(model, cert_key), getattr(model, key_key)
        if not cert_value and not key_value:
            continue
        if bool(cert_value) != bool(key_value):
            missing = key_key if cert_value else cert_key
            run.add("error", f"[{section}] {missing}", f"empty, but [{section}] {cert_key if cert_value else key_key} is set: "
                    "give both")
            continue
        _pair(run, f"[{section}] {cert_key}", _abs(cert_value), f"[{section}] {key_key}", _abs(key_value),
              _passphrase(cfg, section), stores.get(JUDGED_BY.get((section, cert_key), ("", ""))),
              "[{}] {}".format(*JUDGED_BY[(section, cert_key)]) if (section, cert_key) in JUDGED_BY else "")

    # what 'ca init' and CAPF made in the data dir
    ca = cfg.paths.ca
    if ca.issuing_cert.exists():
        root = run.certificates("CA root (data dir)", ca.root_cert)
        issuing = run.certificates("CA issuing (data dir)", ca.issuing_cert)
        if root and issuing:
            trust = pki.TrustStore()
            trust.add(root[0])
            run.chain("CA issuing (data dir)", ca.issuing_cert, issuing, trust, str(ca.root_cert))
        if cfg.ca.pkcs11_module:
            run.add("ok", "CA issuing key", f"in the PKCS#11 token {cfg.ca.pkcs11_token_label!r} "
                    f"(label {cfg.ca.pkcs11_key_label!r}; 'onlineca ca serve' opens it)")
        elif issuing:
            key = run.key("CA issuing key (data dir)", ca.issuing_key, _passphrase(cfg, "ca"))
            if key is not None and not pki.same_public_key(key, issuing[0].public_key()):
                run.add("error", "CA issuing key (data dir)", f"{ca.issuing_key} does not belong to {ca.issuing_cert}")
        if not cfg.ca.tls_cert and ca.web_cert.exists():
            _pair(run, "CA web certificate (data dir)", ca.web_cert, "CA web key (data dir)", ca.web_key, None, None, "")
    capf = cfg.paths.capf
    if not cfg.capf.tls_cert and capf.capf_cert.exists():
        _pair(run, "CAPF certificate (data dir)", capf.capf_cert, "CAPF key (data dir)", capf.capf_key,
              _passphrase(cfg, "capf"), None, "")

    _ports(run, cfg)
    return run.results


def _pair(run: _Run, cert_what: str, cert_path: Path, key_what: str, key_path: Path, passphrase: bytes | None,
          trust: pki.TrustStore | None, trust_what: str) -> None:
    certs = run.certificates(cert_what, cert_path)
    key = run.key(key_what, key_path, passphrase)
    if certs:
        run.chain(cert_what, cert_path, certs, trust, trust_what)
    if certs and key is not None:
        if pki.same_public_key(key, certs[0].public_key()):
            run.add("ok", key_what, f"{key_path} belongs to {cert_path}")
        else:
            run.add("error", key_what, f"{key_path} does not belong to {cert_path} (their public keys differ)")


def _ports(run: _Run, cfg: Config) -> None:
    listeners = {"[ca] port": (cfg.ca.host, cfg.ca.port), "[ra] port": (cfg.ra.host, cfg.ra.port),
                 "[capf] port": (cfg.capf.host, cfg.capf.port), "[admin] port": (cfg.admin.host, cfg.admin.port)}
    seen: dict[int, list[tuple[str, str]]] = {}
    for what, (host, port) in listeners.items():
        seen.setdefault(port, []).append((what, host))
    wildcard = ("0.0.0.0", "::", "")
    for port, users in seen.items():
        for i, (what, host) in enumerate(users):
            for other, other_host in users[:i]:
                if host == other_host or host in wildcard or other_host in wildcard:
                    run.add("error", what, f"{host}:{port} is also {other} ({other_host}:{port}): one of them cannot listen")
    for what, (host, port) in listeners.items():
        if 0 < port < 1024:
            run.add("warning", what, f"{host}:{port} is below 1024: it needs CAP_NET_BIND_SERVICE (the systemd "
                    "units drop every capability; add AmbientCapabilities=CAP_NET_BIND_SERVICE)")
        elif port:
            run.add("ok", what, f"{host}:{port}")


__all__ = ["Check", "check_config"]
