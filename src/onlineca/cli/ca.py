"""``onlineca ca``: make the CA (init), run it (serve), manage its users and its requests.

Commands print for an administrator; a failure is an ``OnlineCAError`` that the root command reports
(``error: ...`` with the fix, exit 1).  A generated password is printed once, to stdout, and never
logged.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from onlineca.ca import users as ca_users
from onlineca.cli.app import AppContext, read_only_config, serve_until_signal, workers_option
from onlineca.config import DataDir
from onlineca.errors import CAError
from onlineca.proto.results import DENIED, FAILED, ISSUED, PENDING

if TYPE_CHECKING:
    from onlineca.ca.web import RunningCA

PASSWORD_ENV = "ONLINECA_CA_PASSWORD"


def _ntlm_domain(app: AppContext) -> str | None:
    """The domain of NTLM store entries, when the CA serves NTLM."""
    return app.config.ca.domain if app.config.ca.ntlm_auth else None


@click.group("ca")
def ca() -> None:
    """The CA (AD CS web enrollment): init, serve, users, requests."""


@ca.command("init")
@click.option("--key-type", type=click.Choice(["rsa", "ec"]), default=None, help="Default from [ca] key_type.")
@click.option("--key-size", type=int, default=None, help="RSA bits (1024-4096) or EC curve bits (256/384/521).")
@click.option("--root-name", default=None, help='Root CA subject, e.g. "CN=Lab Root CA,O=Example".')
@click.option("--issuing-name", default=None, help="Issuing (intermediate) CA subject.")
@click.option("--user", default="ciscora", show_default=True, help="Initial user, when there is no users file.")
@click.option("--password", default=None, envvar=PASSWORD_ENV, help=f"Its password (or ${PASSWORD_ENV}); "
              "generated and printed once when omitted.")
@click.option("--force", is_flag=True, help="Replace an existing CA.")
@click.option("--encrypt-keys", is_flag=True, help="Write the root and issuing keys as encrypted PKCS#8 (passphrase "
              "from [ca] key_passphrase_file or $ONLINECA_CA_KEY_PASSPHRASE).")
@click.option("--pkcs11", is_flag=True, help="Make the issuing key in the PKCS#11 token of [ca] pkcs11_module, "
              "pkcs11_token_label, pkcs11_key_label (PIN from pkcs11_pin_file or $ONLINECA_CA_PKCS11_PIN).")
@click.pass_obj
def init_cmd(app: AppContext, key_type: str | None, key_size: int | None, root_name: str | None,
             issuing_name: str | None, user: str, password: str | None, force: bool, encrypt_keys: bool,
             pkcs11: bool) -> None:
    """Create the root CA, the issuing CA and the web server certificate in <data dir>/ca."""
    from onlineca import pki
    from onlineca.ca import engine as eng
    from onlineca.store import Database

    files = eng.init_ca(app.config, app.data_dir, key_type=key_type, key_size=key_size,
                        root_name=root_name, issuing_name=issuing_name, force=force, encrypt_keys=encrypt_keys,
                        pkcs11=pkcs11)
    upath = ca_users.users_path(app.config, app.data_dir)
    generated = None
    if not ca_users.list_users(upath):
        generated = ca_users.add_user(upath, user, password, _ntlm_domain(app))
    Database(app.config.ca_database_url).migrate()
    issuing = pki.load_certificate(files.issuing_cert.read_bytes())
    click.echo(f"CA created in {files.dir}")
    click.echo(f"  root:    {files.root_cert}")
    click.echo(f"  issuing: {files.issuing_cert} ({pki.name_to_slash(issuing.subject)})")
    click.echo(f"  chain:   {files.chain}")
    if pkcs11:
        click.echo(f"  issuing key: in the PKCS#11 token {app.config.ca.pkcs11_token_label!r}, "
                   f"label {app.config.ca.pkcs11_key_label!r}")
    if encrypt_keys:
        click.echo(f"  keys:    {files.root_key}{'' if pkcs11 else ' and ' + str(files.issuing_key)} "
                   "encrypted (PKCS#8)")
    click.echo(f"  web:     {files.web_cert} for {', '.join(app.config.ca.web_names)}")
    if generated is not None:
        click.echo(f"  users:   {upath} with user {user!r}")
        if password is None:
            click.echo(f"  password for {user}: {generated}   (shown once; not stored in clear)")


@ca.command("serve")
@workers_option
@click.option("--host", default=None, help="Default from [ca] host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default from [ca] port (8443).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Web server certificate (PEM, chain allowed) instead of the one 'ca init' made.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.pass_obj
def serve_cmd(app: AppContext, host: str | None, port: int | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Serve /certsrv over HTTPS until interrupted."""
    # The server's modules are imported where it starts: a --workers supervisor never needs them.

    def start() -> Awaitable[RunningCA]:
        from onlineca.ca.web import start_ca
        return start_ca(app.config, app.data_dir, app.log_dir, host=host, port=port,
                        tls_cert=tls_cert, tls_key=tls_key, log_format=app.log_format)

    def describe(running: RunningCA) -> str:
        from onlineca.ca.web import IIS_LOG_NAME
        return f"CA serving {running.url} (IIS log {app.log_dir / IIS_LOG_NAME})"

    serve_until_signal(start, describe, app.reload_config)


# --------------------------------------------------------------------------- users

@ca.group("users")
def users_group() -> None:
    """Who may log in to /certsrv (Basic authentication)."""


@users_group.command("add")
@click.argument("user")
@click.option("--password", default=None, envvar=PASSWORD_ENV,
              help=f"The password (or ${PASSWORD_ENV}); generated and printed once when omitted.")
@click.pass_obj
def users_add(app: AppContext, user: str, password: str | None) -> None:
    """Add USER (or set a new password)."""
    got = ca_users.add_user(ca_users.users_path(app.config, app.data_dir), user, password, _ntlm_domain(app))
    click.echo(f"user {user} saved")
    if password is None:
        click.echo(f"password for {user}: {got}   (shown once; not stored in clear)")


@users_group.command("remove")
@click.argument("user")
@click.pass_obj
def users_remove(app: AppContext, user: str) -> None:
    """Remove USER."""
    if not ca_users.remove_user(ca_users.users_path(app.config, app.data_dir), user):
        raise CAError(f"no user {user!r}", hint="List them with 'onlineca ca users list'.")
    click.echo(f"user {user} removed")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def users_list(app: AppContext, as_json: bool) -> None:
    """List the users."""
    names = ca_users.list_users(ca_users.users_path(app.config, app.data_dir))
    click.echo(json.dumps(names) if as_json else "\n".join(names) or "(no users)")


# --------------------------------------------------------------------------- requests

def _services(app: AppContext, read_only: bool = False) -> Any:
    """The service layer (the CA's request database migrated), shared with the console; the
    requests commands are the CA's, so they need the CA (as 'ca serve' does)."""
    from onlineca.service.core import Services

    ca_paths = DataDir(app.data_dir).ca
    if not ca_paths.issuing_cert.exists():
        raise CAError(f"no CA in {ca_paths.dir}", hint="Run 'onlineca ca init' first.")
    # read_only: a CA whose database was never made is read as empty rather than made
    return Services(read_only_config(app.config) if read_only else app.config, app.config_path).migrate()


@ca.group("requests")
def requests_group() -> None:
    """The CA's requests: list, show, approve (issue) or deny pending ones."""


@requests_group.command("list")
@click.option("--disposition", type=click.Choice([ISSUED, PENDING, DENIED, FAILED]), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def requests_list(app: AppContext, disposition: str | None, as_json: bool) -> None:
    """List requests (ReqID, requester, template, disposition)."""
    from onlineca.service import ca as service
    from onlineca.service.core import cli_actor
    svc = _services(app, read_only=True)
    try:
        _, rows = service.list_requests(svc, cli_actor(), disposition, limit=1000)
    finally:
        svc.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['req_id']:>6}  {r['disposition']:<8} {r['requester']:<16} {r['template']:<16} {r['subject']}")


@requests_group.command("show")
@click.argument("req_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--pem", is_flag=True, help="Print the certificate (if issued) as PEM.")
@click.pass_obj
def requests_show(app: AppContext, req_id: int, pem: bool) -> None:
    """Show one request."""
    from onlineca.service import ca as service
    from onlineca.service.core import cli_actor
    svc = _services(app, read_only=True)
    try:
        row = service.get_request(svc, cli_actor(), req_id)
    finally:
        svc.close()
    if pem:
        if not row["certificate_pem"]:
            raise CAError(f"ReqID {req_id} is {row['disposition']}: no certificate")
        sys.stdout.write(row["certificate_pem"])
        return
    click.echo(json.dumps({k: row[k] for k in service.REQUEST_KEYS}, indent=2))


def _resolve(app: AppContext, req_id: int, action: str) -> None:
    from onlineca.service import ca as service
    from onlineca.service.core import Actor
    by = os.environ.get("USER") or "administrator"
    svc = _services(app)
    try:
        got = service.resolve(svc, Actor(by, "admin", "cli"), req_id, action)
    finally:
        svc.close()
    click.echo(f"ReqID {req_id}: {got['outcome']}")


@requests_group.command("approve")
@click.argument("req_id", type=click.IntRange(1, 2**31 - 1))
@click.pass_obj
def requests_approve(app: AppContext, req_id: int) -> None:
    """Issue a pending request (the certificate manager's "Issue")."""
    _resolve(app, req_id, "approve")


@requests_group.command("deny")
@click.argument("req_id", type=click.IntRange(1, 2**31 - 1))
@click.pass_obj
def requests_deny(app: AppContext, req_id: int) -> None:
    """Deny a pending request."""
    _resolve(app, req_id, "deny")


# --------------------------------------------------------------------------- revocation

def _entries(n: int) -> str:
    return "1 entry" if n == 1 else f"{n} entries"


def _revocation(app: AppContext) -> Any:
    """The CA's revocation service on its database (migrated), with the CA's key for CRLs."""
    ca_paths = DataDir(app.data_dir).ca
    if not ca_paths.issuing_key.exists():
        raise CAError(f"no CA in {ca_paths.dir.resolve()}", hint="Run 'onlineca ca init' first.")
    from onlineca.ca import engine as eng
    from onlineca.store import Database

    db = Database(app.config.ca_database_url)
    db.migrate()
    return eng.CAEngine(app.config, app.data_dir, db).revocation, db


@ca.command("revoke")
@click.argument("serial", required=False)
@click.option("--req-id", type=int, default=None, help="Revoke the certificate of this ReqID instead of a serial.")
@click.option("--reason", default="unspecified", show_default=True,
              help="keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, "
                   "privilegeWithdrawn, aACompromise or unspecified.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def revoke_cmd(app: AppContext, serial: str | None, req_id: int | None, reason: str, as_json: bool) -> None:
    """Revoke a certificate this CA issued (by SERIAL in hex, or --req-id) and publish a CRL at once."""
    if (serial is None) == (req_id is None):
        raise click.UsageError("give a SERIAL or --req-id (one of them)")
    from onlineca.pki.revocation import parse_reason
    reason = parse_reason(reason)
    revocation, db = _revocation(app)
    try:
        record = revocation.revoke(serial=serial, req_id=req_id, reason=reason,
                                   by=os.environ.get("USER") or "administrator")
        crl = revocation.store.latest("delta" if revocation.delta else "base")
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps({"serial": record.serial, "req_id": record.req_id, "reason": record.reason,
                               "revoked_at": record.revoked_at.isoformat(), "revoked_by": record.revoked_by,
                               "already": record.already, "crl_number": crl.number if crl else None}, indent=2))
        return
    if record.already:
        click.echo(f"serial {record.serial} (ReqID {record.req_id}) was already revoked on "
                   f"{record.revoked_at:%Y-%m-%d %H:%M} UTC ({record.reason}, by {record.revoked_by})")
        return
    click.echo(f"serial {record.serial} (ReqID {record.req_id}) revoked: {record.reason}")
    if crl is not None:
        click.echo(f"  CRL number {crl.number} ({crl.kind}, {_entries(crl.entries)}): {revocation.urls.crl}")


@ca.command("revocations")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def revocations_cmd(app: AppContext, as_json: bool) -> None:
    """List the certificates this CA revoked."""
    revocation, db = _revocation(app)
    try:
        rows = revocation.store.revoked()
    finally:
        db.dispose()
    out = [{"serial": r.serial, "req_id": r.req_id, "reason": r.reason, "revoked_at": r.revoked_at.isoformat(),
            "revoked_by": r.revoked_by} for r in rows]
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for r in out:
        click.echo(f"{r['serial']:<42} ReqID {r['req_id']!s:<6} {r['reason']:<22} {r['revoked_at']}  {r['revoked_by']}")
    if not out:
        click.echo("(nothing revoked)")


@ca.command("crl")
@click.option("--delta", is_flag=True, help="The delta CRL (with [ca] delta_crl_hours).")
@click.option("--publish", is_flag=True, help="Sign a new CRL now instead of showing the current one.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the CRL (DER) to this file.")
@click.pass_obj
def crl_cmd(app: AppContext, delta: bool, publish: bool, out: Path | None) -> None:
    """Show (or publish) the CRL and where clients fetch it."""
    from onlineca.pki.revocation import load_crl
    revocation, db = _revocation(app)
    kind = "delta" if delta else "base"
    try:
        row = revocation.publish(kinds=(kind,))[0] if publish and (kind == "base" or revocation.delta) \
            else revocation.current(kind)
    finally:
        db.dispose()
    if row is None:
        raise CAError("delta CRLs are off", hint="Set [ca] delta_crl_hours to publish delta CRLs.")
    if out is not None:
        out.write_bytes(row.der)
    crl = load_crl(row.der)
    click.echo(f"{kind} CRL number {row.number}: {_entries(row.entries)}, this update "
               f"{crl.last_update_utc:%Y-%m-%d %H:%M}, next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC"
               if crl.next_update_utc else f"{kind} CRL number {row.number}")
    click.echo(f"  published at {revocation.urls.delta_crl if delta else revocation.urls.crl}")
    click.echo(f"  CA certificate at {revocation.urls.ca_cert}" +
               (f"; OCSP at {revocation.urls.ocsp}" if app.config.ca.ocsp else ""))
