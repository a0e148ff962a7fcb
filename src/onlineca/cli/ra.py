"""``onlineca ra serve``: run the RA (EST server on port 8084 by default) until interrupted.

The RA starts serving at once and runs its start-up checks in the background (see /readyz and
``error.log`` in the log dir); a CA that is down at start-up is retried, never fatal.  Only a
configuration error (exit 1, one clear message) stops it.  Credentials are never printed.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from onlineca.cli.app import AppContext, serve_until_signal, workers_option

if TYPE_CHECKING:
    from onlineca.ra.app import RunningRA


@click.group("ra")
def ra() -> None:
    """The RA: an EST server that enrolls at the CA."""


@ra.command("serve")
@workers_option
@click.option("--host", default=None, help="Default from [ra] host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default from [ra] port (8084).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The RA's TLS certificate (PEM, chain allowed); default [ra] tls_cert.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Its private key; default [ra] tls_key.")
@click.pass_obj
def serve_cmd(app: AppContext, host: str | None, port: int | None, tls_cert: Path | None,
              tls_key: Path | None) -> None:
    """Serve EST over HTTPS until interrupted (SIGINT/SIGTERM)."""
    # The server's modules are imported where it starts: a --workers supervisor never needs them.

    def start() -> Awaitable[RunningRA]:
        from onlineca.ra.app import start_ra
        return start_ra(app.config, app.log_dir, host=host, port=port, tls_cert=tls_cert,
                        tls_key=tls_key, log_format=app.log_format)

    def describe(running: RunningRA) -> str:
        return (f"RA serving {running.url} (connector {app.config.ra.connector}; "
                f"logs in {app.log_dir}; readiness at {running.base}/readyz)")

    serve_until_signal(start, describe, app.reload_config)
