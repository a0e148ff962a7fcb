"""Shared fixtures: free ports, a lab PKI on disk, and the databases the store runs on.

PostgreSQL tests use ``ONLINECA_TEST_PG_URL`` (``.ci/run`` starts a private server and sets it).
Under CI (``CI=true``) a missing PostgreSQL is an error, not a skip.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from onlineca import pki
from onlineca.infra import files as fs

# Proxies and CA-bundle overrides in the environment would silently change what the tests talk
# to and trust (the certsrv package and curl both honour them).
for _var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "HTTPS_PROXY", "https_proxy",
             "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabPKI:
    """A two-tier lab PKI (RSA root, RSA issuing CA) and a web server certificate for 127.0.0.1."""

    dir: Path
    root_key: pki.PrivateKey
    root: x509.Certificate
    issuing_key: pki.PrivateKey
    issuing: x509.Certificate
    server_key: pki.PrivateKey
    server: x509.Certificate

    @property
    def root_pem(self) -> Path:
        return self.dir / "root.pem"

    @property
    def chain_pem(self) -> Path:
        return self.dir / "chain.pem"

    @property
    def server_cert_pem(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key_pem(self) -> Path:
        return self.dir / "server.key"

    def issue(self, subject: str, key: pki.PrivateKey | None = None, **kw) -> tuple[pki.PrivateKey, x509.Certificate]:
        key = key or pki.generate_key("ec", 256)
        cert = pki.build_certificate(subject=subject, public_key=key.public_key(), issuer_key=self.issuing_key,
                                     issuer_cert=self.issuing, **kw)
        return key, cert


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    d = tmp_path_factory.mktemp("labpki")
    root_key = pki.generate_key("rsa", 2048)
    root = pki.build_certificate(subject="CN=Test Lab Root CA,O=onlineca tests", public_key=root_key.public_key(),
                                 issuer_key=root_key, is_ca=True, validity_days=3650)
    issuing_key = pki.generate_key("rsa", 2048)
    issuing = pki.build_certificate(subject="CN=Test Lab Issuing CA,O=onlineca tests",
                                    public_key=issuing_key.public_key(), issuer_key=root_key, issuer_cert=root,
                                    is_ca=True, path_length=0, validity_days=1825)
    server_key = pki.generate_key("ec", 256)
    server = pki.build_certificate(subject="CN=localhost", public_key=server_key.public_key(),
                                   issuer_key=issuing_key, issuer_cert=issuing, sans=["localhost", "127.0.0.1"],
                                   extended_key_usage=["server_auth"])
    lab = LabPKI(d, root_key, root, issuing_key, issuing, server_key, server)
    lab.root_pem.write_bytes(pki.cert_pem(root))
    lab.chain_pem.write_bytes(pki.certs_pem([issuing, root]))
    lab.server_cert_pem.write_bytes(pki.certs_pem([server, issuing]))
    fs.write_private_key(lab.server_key_pem, server_key)
    fs.write_private_key(d / "root.key", root_key)
    fs.write_private_key(d / "issuing.key", issuing_key)
    (d / "issuing.pem").write_bytes(pki.cert_pem(issuing))
    return lab


def _pg_url() -> str | None:
    return os.environ.get("ONLINECA_TEST_PG_URL") or None


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in a temp folder, or a new schema-less PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    base = _pg_url()
    if base is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ONLINECA_TEST_PG_URL is not set under CI: .ci/run must start PostgreSQL")
        pytest.skip("no PostgreSQL (set ONLINECA_TEST_PG_URL, see .ci/postgres.sh)")
    from sqlalchemy import create_engine, text
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = base.rsplit("/", 1)[0] + "/" + name
    yield url
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class LogLines:
    """The messages written so far at INFO and above (a live view: iterate it again to see new ones)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __iter__(self) -> Iterator[str]:
        return iter(self._caplog.messages)


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Callable[[str], LogLines]:
    """``log_lines("onlineca.est")``: that logger's messages from here on (pytest's caplog, its level
    set to INFO for the test and restored after)."""
    def watch(logger: str) -> LogLines:
        caplog.set_level(logging.INFO, logger=logger)
        return LogLines(caplog)
    return watch
