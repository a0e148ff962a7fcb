"""``onlineca est``: a command-line EST client for any EST server, and a standalone test server.

Each subcommand is one EST operation (``cacerts``, ``enroll``, ``reenroll``, ``csrattrs``,
``serverkeygen``) that writes PEM or DER files; ``serve`` runs our EST server with the local
signer, ``hash-password`` makes users-file lines.  Failures are reported by the root command with
the libEST code as CAPF logs it (``error: rv = 35 (EST_ERR_SSL_READ): ...``, exit 1).  Passwords come from ``$ONLINECA_EST_PASSWORD`` or a
prompt rather than the command line where possible; they are never printed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from onlineca import pki
from onlineca.cli.app import AppContext, serve_until_signal
from onlineca.errors import ChainError, ConfigError, ESTCodedError
from onlineca.est.client import ESTClient, bootstrap_cacerts
from onlineca.infra import files
from onlineca.proto.libest import enrollment_rv_line

_path = click.Path(dir_okay=False, path_type=Path)
_existing = click.Path(dir_okay=False, exists=True, path_type=Path)


def client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every client subcommand shares: server, label, trust, auth, timeouts."""
    opts = [
        click.option("--server", required=True, help="EST server: https://host:port (or its .../.well-known/est)."),
        click.option("--label", default=None, help="CA label (/.well-known/est/<label>/...)."),
        click.option("--cafile", type=_existing, help="Trust anchors for the server (PEM, DER or .p7b)."),
        click.option("--insecure-bootstrap", is_flag=True,
                     help="Fetch cacerts unverified, show fingerprints, trust them only if you confirm."),
        click.option("--expect-fingerprint", default=None,
                     help="With --insecure-bootstrap: the SHA-256 fingerprint to accept without a prompt."),
        click.option("--user", default=None, help="HTTP Basic user name."),
        click.option("--password", default=None, envvar="ONLINECA_EST_PASSWORD",
                     help="HTTP Basic password (default $ONLINECA_EST_PASSWORD, else a prompt)."),
        click.option("--cert", "cert_file", type=_existing, help="TLS client certificate (PEM, chain allowed)."),
        click.option("--key", "key_file", type=_existing, help="Private key of --cert."),
        click.option("--timeout", default=30.0, show_default=True, help="Seconds per request."),
        click.option("--retries", default=3, show_default=True, help="Retries on 202/503 Retry-After."),
        click.option("--der", "fmt", flag_value="der", help="Write DER (a .p7b for several certificates)."),
        click.option("--pem", "fmt", flag_value="pem", default=True, help="Write PEM (default)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _run(coro_fn: Callable[..., Any]) -> Callable[..., Any]:
    """A click command body from a coroutine function (run in a new event loop)."""
    @functools.wraps(coro_fn)
    def wrapper(**kw: Any) -> None:
        asyncio.run(coro_fn(**kw))
    return wrapper


def _confirm_factory(expect: str | None) -> Callable[[list[x509.Certificate]], bool]:
    def confirm(certs: list[x509.Certificate]) -> bool:
        for c in certs:
            click.echo(f"  {pki.name_to_slash(c.subject)}\n    SHA-256 {pki.fingerprint(c)}", err=True)
        if expect:
            want = expect.replace(":", "").upper()
            return any(pki.fingerprint(c).replace(":", "") == want for c in certs)
        if not sys.stdin.isatty():
            click.echo("refusing to trust unverified CA certificates without a terminal "
                       "(use --expect-fingerprint)", err=True)
            return False
        return click.confirm("Trust these CA certificates?", default=False, err=True)
    return confirm


async def _client(kw: dict[str, Any]) -> ESTClient:
    trust: list[x509.Certificate] = []
    if kw["insecure_bootstrap"]:
        click.echo(f"Bootstrap: CA certificates offered by {kw['server']} (not yet verified):", err=True)
        trust = await bootstrap_cacerts(kw["server"], _confirm_factory(kw["expect_fingerprint"]),
                                        label=kw["label"], timeout=kw["timeout"])
    elif not kw["cafile"]:
        raise click.UsageError("give --cafile, or --insecure-bootstrap to fetch and confirm the CA")
    password = kw["password"]
    if kw["user"] and password is None:
        password = click.prompt(f"EST password for {kw['user']}", hide_input=True, err=True)
    if bool(kw["cert_file"]) != bool(kw["key_file"]):
        raise click.UsageError("--cert and --key go together")
    return ESTClient(kw["server"], label=kw["label"], cafile=kw["cafile"], trust_certs=trust, user=kw["user"],
                     password=password, cert_file=kw["cert_file"], key_file=kw["key_file"],
                     timeout=kw["timeout"], max_retries=kw["retries"],
                     # Connection refused is retried only when --retries is given: fail fast otherwise.
                     connect_retries=kw["retries"] if _given("retries") else 0,
                     on_retry=lambda line: click.echo(line, err=True))


def _given(name: str) -> bool:
    """Whether the user gave option ``name`` on the command line (not its default)."""
    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source(name) if ctx is not None else None
    return source is click.core.ParameterSource.COMMANDLINE


def _write_certs(certs: list[x509.Certificate], out: Path | None, fmt: str) -> None:
    if fmt == "der":
        data = pki.cert_der(certs[0]) if len(certs) == 1 else pki.pkcs7_der(certs)
        if out is None:
            raise click.UsageError("--der needs --out")
    else:
        data = pki.certs_pem(certs)
    if out is None:
        click.echo(data.decode(), nl=False)
    else:
        out.write_bytes(data)
        click.echo(f"wrote {len(certs)} certificate(s) to {out}", err=True)


@dataclass(frozen=True)
class PoPRequest:
    """What a PoP enrollment needs: the CSR is built later, on the TLS connection."""

    key: pki.PrivateKey
    subject: str | x509.Name
    sans: tuple[Any, ...]


def _new_key(key_type: str, key_size: str, key_out: Path | None) -> pki.PrivateKey:
    key = pki.generate_key(key_type, int(key_size) if key_size.isdigit() else key_size)
    if key_out is not None:
        files.write_private_key(key_out, key)
        click.echo(f"wrote private key to {key_out} (mode 0600)", err=True)
    return key


def _make_csr(csr_file: Path | None, subject: str | None, sans: tuple[str, ...], key_type: str,
              key_size: str, key_out: Path | None, pop: bool = False) -> x509.CertificateSigningRequest | PoPRequest:
    """The CSR to send: from a file, or a new key (written 0600 to --key-out) and CSR."""
    if csr_file is not None:
        if pop:
            raise click.UsageError("--pop builds the CSR on the connection: use --subject, not --csr")
        return pki.parse_csr(csr_file.read_bytes())
    if not subject:
        raise click.UsageError("give --csr FILE, or --subject (and --key-out) to make a key and CSR")
    key = _new_key(key_type, key_size, key_out)
    if pop:
        return PoPRequest(key, subject, tuple(sans))
    return pki.build_csr(key, subject, sans)


def csr_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--csr", "csr_file", type=_existing, help="PKCS#10 request (PEM, DER or base64)."),
        click.option("--subject", default=None, help="Make a new key and CSR for this name (CN=...,O=...)."),
        click.option("--san", "sans", multiple=True, help="subjectAltName (DNS name, IP, e-mail); repeatable."),
        click.option("--key-type", type=click.Choice(["ec", "rsa"]), default="ec", show_default=True),
        click.option("--key-size", default="256", show_default=True, help="RSA bits or EC curve size."),
        click.option("--key-out", type=_path, help="Where to write the new private key (0600)."),
        click.option("--out", type=_path, help="Certificate output file (default: stdout, PEM)."),
        click.option("--pop", is_flag=True, help="Prove possession by tls-unique in the CSR (RFC 7030 3.5; "
                                                 "needs --subject, uses TLS 1.2)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.group("est")
def est() -> None:
    """A command-line EST (RFC 7030) client for any EST server, and a test server."""


@est.command("cacerts")
@client_options
@click.option("--out", type=_path, help="Output file (default: stdout, PEM).")
@_run
async def cacerts_cmd(out: Path | None, fmt: str, **kw: Any) -> None:
    """Fetch the CA certificates (/cacerts)."""
    async with await _client(kw) as client:
        certs = await client.cacerts()
    _write_certs(certs, out, fmt)


async def _enroll(op: str, kw: dict[str, Any], csr: x509.CertificateSigningRequest | PoPRequest,
                  out: Path | None, fmt: str) -> None:
    async with await _client(kw) as client:
        try:
            if isinstance(csr, PoPRequest):
                res = await client.enroll_with_pop(csr.key, csr.subject, csr.sans, reenroll=op == "simplereenroll")
            else:
                res = await getattr(client, op)(csr)
        except ESTCodedError as exc:
            click.echo(enrollment_rv_line(exc.code, 0), err=True)
            raise
    click.echo(enrollment_rv_line("EST_ERR_NONE", res.pkcs7_length), err=True)
    click.echo(f"issued {pki.name_to_slash(res.certificate.subject)} serial {res.certificate.serial_number:x} "
               f"by {pki.name_to_slash(res.certificate.issuer)}", err=True)
    _write_certs([res.certificate], out, fmt)
    # diag branch: a certificate valid only from the future is kept, but never reported as a success
    ahead = res.certificate.not_valid_before_utc - dt.datetime.now(dt.UTC)
    if ahead.total_seconds() > 0:
        start = f"{res.certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        raise ChainError(f"the issued certificate is valid only from {start} ({int(ahead.total_seconds())} s from "
                         "now): the CA's clock is ahead of this machine's; it was written, but nothing accepts it "
                         "until then", code="NOT_YET_VALID")


@est.command("enroll")
@client_options
@csr_options
@_run
async def enroll_cmd(csr_file: Path | None, subject: str | None, sans: tuple[str, ...], key_type: str,
                     key_size: str, key_out: Path | None, out: Path | None, pop: bool, fmt: str,
                     **kw: Any) -> None:
    """Enroll a CSR (/simpleenroll); with --subject, make the key and CSR first."""
    csr = _make_csr(csr_file, subject, sans, key_type, key_size, key_out, pop)
    await _enroll("simpleenroll", kw, csr, out, fmt)


@est.command("reenroll")
@client_options
@csr_options
@_run
async def reenroll_cmd(csr_file: Path | None, subject: str | None, sans: tuple[str, ...], key_type: str,
                       key_size: str, key_out: Path | None, out: Path | None, pop: bool, fmt: str,
                       **kw: Any) -> None:
    """Renew the --cert certificate (/simplereenroll).  Without --csr/--subject a new key is made
    for the same subject and subjectAltName (RFC 7030 4.2.2 requires them unchanged)."""
    if not kw["cert_file"]:
        raise click.UsageError("reenroll authenticates with the certificate being renewed: give --cert and --key")
    csr: x509.CertificateSigningRequest | PoPRequest
    if csr_file is None and not subject:
        current = pki.load_certificate(Path(kw["cert_file"]).read_bytes())
        key = _new_key(key_type, key_size, key_out)
        try:
            san_values = list(current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            san_values = []
        csr = PoPRequest(key, current.subject, tuple(san_values)) if pop else \
            pki.build_csr(key, current.subject, san_values)
    else:
        csr = _make_csr(csr_file, subject, sans, key_type, key_size, key_out, pop)
    await _enroll("simplereenroll", kw, csr, out, fmt)


@est.command("csrattrs")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_run
async def csrattrs_cmd(as_json: bool, fmt: str, **kw: Any) -> None:
    """Show what the server wants in a CSR (/csrattrs)."""
    async with await _client(kw) as client:
        attrs = await client.csrattrs()
    items = [{"oid": i} if isinstance(i, str) else {"attribute": i.type, "values": [v.hex() for v in i.values]}
             for i in attrs.items]
    if as_json:
        click.echo(json.dumps(items, indent=2))
    elif not items:
        click.echo("no CSR attributes requested")
    else:
        for item in items:
            click.echo(f"OID {item['oid']}" if "oid" in item else
                       f"attribute {item['attribute']} values(DER hex) {', '.join(item['values'])}")


@est.command("serverkeygen")
@client_options
@csr_options
@_run
async def serverkeygen_cmd(csr_file: Path | None, subject: str | None, sans: tuple[str, ...], key_type: str,
                           key_size: str, key_out: Path | None, out: Path | None, pop: bool, fmt: str,
                           **kw: Any) -> None:
    """Have the server generate the key (/serverkeygen); the key is written 0600 to --key-out."""
    if key_out is None:
        raise click.UsageError("serverkeygen needs --key-out for the key the server generates")
    if pop:
        raise click.UsageError("--pop is not supported with serverkeygen")
    csr = _make_csr(csr_file, subject, sans, key_type, key_size, None)
    assert isinstance(csr, x509.CertificateSigningRequest)
    async with await _client(kw) as client:
        res = await client.serverkeygen(csr)
    files.write_private_key(key_out, pki.load_private_key(res.private_key_der))
    click.echo(f"wrote server-generated private key to {key_out} (mode 0600)", err=True)
    _write_certs(res.certificates[:1], out, fmt)


@est.command("hash-password")
@click.argument("user")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="ONLINECA_EST_PASSWORD")
def hash_password_cmd(user: str, password: str) -> None:
    """Print a users-file line (user:scrypt$...) for the EST server."""
    from onlineca.infra.users import hash_password
    if ":" in user:
        raise click.UsageError("a user name cannot contain ':'")
    click.echo(f"{user}:{hash_password(password)}")


@est.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=None, type=int, help="Port (default 8084; 0 picks a free one).")
@click.option("--tls-cert", type=_existing, required=True, help="Server certificate (PEM, chain allowed).")
@click.option("--tls-key", type=_existing, required=True)
@click.option("--issuer-cert", type=_existing, required=True, help="Issuing CA certificate (PEM, chain allowed).")
@click.option("--issuer-key", type=_existing, required=True)
@click.option("--ca-chain", type=_existing, default=None,
              help="The issuing CA's chain up to the root, if --issuer-cert holds the issuing CA alone "
                   "(/cacerts must include the root, RFC 7030 4.1.3).")
@click.option("--validity-days", default=365.0, show_default=True)
@click.option("--users-file", type=_existing, help="HTTP Basic users (default [est] users_file).")
@click.option("--client-ca", type=_existing, help="Trust store for TLS client certificates.")
@click.option("--label", "labels", multiple=True, help="CA label to serve besides the default; repeatable.")
@click.option("--pop/--no-pop", default=None,
              help="Require tls-unique proof of possession (caps TLS at 1.2); default [est] pop_tls_unique.")
@click.pass_obj
def serve_cmd(app: AppContext, host: str, port: int | None, tls_cert: Path, tls_key: Path, issuer_cert: Path,
              issuer_key: Path, ca_chain: Path | None, validity_days: float, users_file: Path | None, client_ca: Path | None,
              labels: tuple[str, ...], pop: bool | None) -> None:
    """Run a standalone EST server that signs with a local issuing key (for tests and labs)."""
    from dataclasses import replace

    from onlineca.config import ESTConfig
    from onlineca.est.backend import LocalSigner
    from onlineca.est.server import RunningESTServer, settings_from_config, start_est_server
    from onlineca.infra.serving import ConnectionLimits
    from onlineca.infra.users import UsersFile
    from onlineca.logs import setup_component_log

    cfg: ESTConfig = app.config.est
    try:
        signer = LocalSigner.from_files(str(issuer_cert), str(issuer_key), str(ca_chain) if ca_chain else None,
                                        validity_days=validity_days)
        settings = settings_from_config(cfg)
        if users_file:
            settings = replace(settings, password_check=UsersFile.from_path(users_file))
        if labels:
            settings = replace(settings, labels=labels)
        if pop is not None:
            settings = replace(settings, pop_tls_unique=pop)
        trust_path = client_ca or cfg.client_trust_store
        trust = files.load_trust_store(trust_path) if trust_path else None
    except ValueError as exc:
        raise ConfigError(str(exc), hint="") from None
    if not any(pki.is_self_signed(c) for c in (signer.issuer_cert, *signer.ca_chain)):
        raise ConfigError(f"/cacerts would lack the root CA: {issuer_cert} holds no chain up to a self-signed root "
                          "(RFC 7030 4.1.3 requires the root there; libEST clients refuse the answer)",
                          hint="Give --issuer-cert a PEM file with the issuing CA and its chain up to the root, "
                               "or add --ca-chain FILE.")
    setup_component_log("est", app.log_dir, fmt=app.log_format)

    def start() -> Awaitable[RunningESTServer]:
        return start_est_server(signer, cert_file=tls_cert, key_file=tls_key, host=host,
                                port=8084 if port is None else port, settings=settings, client_trust=trust,
                                limits=ConnectionLimits(**app.config.connections.model_dump()))

    serve_until_signal(start, lambda srv: f"EST server listening on {srv.url}", app.reload_config)
