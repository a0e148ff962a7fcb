"""``onlineca capf serve``: run the CAPF session server (TLS, device protocol, port 3804) until
interrupted.

The ``capf`` group in ``onlineca.capf.cli`` loads this module lazily.  At first start CAPF enrolls
its own TLS certificate through the RA (``[capf] ra_url``, ``ra_user``, ``ra_password``,
``ra_trust_store``), so the RA must be up then; later an RA that is down only makes phones retry.
A configuration or start-up error prints one line and exits 1.  Credentials are never printed.
Point a phone (``onlineca phone ...``) at the printed host and port, trusting the RA's root.
"""

from __future__ import annotations

import click

from onlineca.cli import AppContext
from onlineca.errors import OnlineCAError


@click.command("serve")
@click.option("--host", default=None, help="Default from [capf] host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default from [capf] port (3804).")
@click.option("--no-scheduler", is_flag=True, help="Do not run renewal passes (another node runs them).")
@click.pass_obj
def serve(app: AppContext, host: str | None, port: int | None, no_scheduler: bool) -> None:
    """Serve the device protocol over TLS until interrupted (SIGINT/SIGTERM)."""
    from onlineca.capf.service import RunningCAPF, start_capf
    from onlineca.infra.serving import run_until_signal

    def describe(running: RunningCAPF) -> str:
        cert = app.config.capf.tls_cert or running.enroller.paths.capf_cert
        return (f"CAPF serving {running.host}:{running.port} (TLS certificate {cert}; trace in "
                f"{app.log_dir / 'capf.log'}; RA {app.config.capf.ra_url})")

    try:
        run_until_signal(lambda: start_capf(app.config, app.data_dir, app.log_dir, host=host, port=port,
                                            log_format=app.log_format, maintenance=not no_scheduler), describe)
    except OnlineCAError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
