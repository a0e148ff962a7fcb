"""``onlineca admin``: the administration console (serve) and its accounts, API tokens and audit log.

``admin serve`` serves the REST API and the pages over HTTPS (``[admin] host:port``, 127.0.0.1:8080);
when no account exists yet it makes ``admin`` with a generated password and prints it once.  The
other commands call the same service functions as the console (their changes are in the audit log,
made by the operating-system user through ``cli``).  Passwords and tokens are printed once, to
stdout, and never logged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from onlineca.cli.app import AppContext, read_only_config, serve_until_signal


@contextmanager
def _services(app: AppContext, read_only: bool = False) -> Iterator[tuple[Any, Any]]:
    from onlineca.service.core import Services, cli_actor

    # read_only: a database that does not exist yet is read as an empty one, not created
    svc = Services(read_only_config(app.config) if read_only else app.config, app.config_path).migrate()
    try:
        yield svc, cli_actor()
    finally:
        svc.close()


@click.group("admin")
def admin() -> None:
    """The administration console: serve it, manage its accounts and tokens, read the audit log."""


@admin.command("serve")
@click.option("--host", default=None, help="Default from [admin] host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default from [admin] port (8080).")
@click.pass_obj
def serve(app: AppContext, host: str | None, port: int | None) -> None:
    """Serve the console (pages and REST API) over HTTPS until interrupted."""
    from onlineca.admin.server import RunningAdmin, start_admin
    from onlineca.service import accounts
    from onlineca.service.core import Services, cli_actor

    svc = Services(app.config, app.config_path).migrate()
    password = accounts.ensure_admin(svc, cli_actor())
    if password is not None:
        click.echo(f"account 'admin' made; its password (shown once): {password}")

    def describe(running: RunningAdmin) -> str:
        return f"console serving {running.url} (TLS certificate {running.cert}; API at {running.url}api/openapi.json)"

    try:
        serve_until_signal(lambda: start_admin(svc, host=host, port=port), describe)
    finally:
        svc.close()


# ---- accounts --------------------------------------------------------------------------------

@admin.group("users")
def users() -> None:
    """Console accounts: admin, operator or viewer."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), default="viewer", show_default=True)
@click.option("--password", envvar="ONLINECA_ADMIN_PASSWORD", default=None,
              help="Its password (or $ONLINECA_ADMIN_PASSWORD); generated and printed once when omitted.")
@click.pass_obj
def users_add(app: AppContext, name: str, role: str, password: str | None) -> None:
    """Add account NAME."""
    from onlineca.service import accounts
    with _services(app) as (svc, actor):
        _, generated = accounts.create_user(svc, actor, name, role, password)
    click.echo(f"account {name} ({role}) added")
    if generated:
        click.echo(f"password for {name}: {generated}   (shown once; stored as a hash)")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def users_list(app: AppContext, as_json: bool) -> None:
    """List the accounts."""
    from onlineca.service import accounts
    with _services(app, read_only=True) as (svc, actor):
        rows = accounts.list_users(svc, actor)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<24} {r['role']:<9} {'disabled' if r['disabled'] else 'enabled':<9} "
                   f"last login {r['last_login_at'] or 'never'}")


@users.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), default=None)
@click.option("--disable/--enable", "disabled", default=None)
@click.pass_obj
def users_set(app: AppContext, name: str, role: str | None, disabled: bool | None) -> None:
    """Change the role of NAME, or disable or enable it."""
    from onlineca.service import accounts
    if role is None and disabled is None:
        raise click.UsageError("nothing to change: give --role, --disable or --enable")
    with _services(app) as (svc, actor):
        accounts.change_user(svc, actor, name, role=role, disabled=disabled)
    click.echo(f"account {name} changed")


@users.command("reset-password")
@click.argument("name")
@click.pass_obj
def users_reset(app: AppContext, name: str) -> None:
    """Give NAME a new generated password (printed once); its sessions end."""
    from onlineca.service import accounts
    with _services(app) as (svc, actor):
        password = accounts.reset_password(svc, actor, name)
    click.echo(f"password for {name}: {password}   (shown once; stored as a hash)")


@users.command("remove")
@click.argument("name")
@click.pass_obj
def users_remove(app: AppContext, name: str) -> None:
    """Remove account NAME (and its tokens and sessions)."""
    from onlineca.service import accounts
    with _services(app) as (svc, actor):
        accounts.delete_user(svc, actor, name)
    click.echo(f"account {name} removed")


# ---- tokens ----------------------------------------------------------------------------------

@admin.group("tokens")
def tokens() -> None:
    """API tokens (hashed at rest, scoped by role, expiring)."""


@tokens.command("create")
@click.argument("user")
@click.option("--name", required=True, help="What the token is for, e.g. inventory-sync.")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), default=None,
              help="At most the account's role (default: the account's).")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.pass_obj
def tokens_create(app: AppContext, user: str, name: str, role: str | None, days: int) -> None:
    """Make an API token for account USER (printed once)."""
    from onlineca.service import accounts
    with _services(app) as (svc, actor):
        info, token = accounts.create_token(svc, actor, name, role=role, days=days, user=user)
    click.echo(f"token {info['prefix']} for {user} ({info['role']}, expires {info['expires_at'][:10]}):")
    click.echo(token)


@tokens.command("list")
@click.option("--user", default="*", show_default=True, help="One account's tokens ('*': all).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tokens_list(app: AppContext, user: str, as_json: bool) -> None:
    """List API tokens (never the tokens themselves)."""
    from onlineca.service import accounts
    with _services(app, read_only=True) as (svc, actor):
        rows = accounts.list_tokens(svc, actor, user)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['id']:>4} {r['prefix']} {r['user']:<16} {r['name']:<20} {r['role']:<9} "
                   f"expires {r['expires_at'][:10]} {'revoked' if r['revoked'] else ''}")


@tokens.command("revoke")
@click.argument("token_id", type=click.IntRange(1, 2**31 - 1))
@click.pass_obj
def tokens_revoke(app: AppContext, token_id: int) -> None:
    """Revoke token TOKEN_ID."""
    from onlineca.service import accounts
    with _services(app) as (svc, actor):
        accounts.revoke_token(svc, actor, token_id)
    click.echo(f"token {token_id} revoked")


# ---- audit log -----------------------------------------------------------------------------

@admin.command("audit")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--action", default=None, help="e.g. 'device.*'.")
@click.option("--target", default=None, help="e.g. device:SEP74A02FC0A675.")
@click.option("--csv", "as_csv", is_flag=True, help="Every matching entry as CSV, oldest first.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def audit_cmd(app: AppContext, limit: int, action: str | None, target: str | None, as_csv: bool,
              as_json: bool) -> None:
    """The audit log: every change from the API, the pages and the command line, newest first."""
    from onlineca.service import audit
    query = audit.AuditQuery(action=action, target=target)
    with _services(app, read_only=True) as (svc, actor):
        if as_csv:
            audit.export_csv(svc, actor, sys.stdout, query)
            return
        _, rows = audit.entries(svc, actor, query, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['at'][:19]} {r['actor']:<12} {r['source']:<4} {r['action']:<18} {r['target']:<28} "
                   f"{json.dumps(r['before'])} -> {json.dumps(r['after'])}")


__all__ = ["admin"]
