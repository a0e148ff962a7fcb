"""``onlineca keys encrypt | decrypt``: convert the CA's and CAPF's private keys at rest.

``encrypt`` rewrites each key as encrypted PKCS#8 (``BestAvailableEncryption``) with the
passphrase the servers will read (``[ca] key_passphrase_file`` / ``$ONLINECA_CA_KEY_PASSPHRASE``
for the CA's root and issuing keys, ``[capf] ...`` / ``$ONLINECA_CAPF_KEY_PASSPHRASE`` for CAPF's
key); ``decrypt`` writes them back in clear.  Each file is replaced atomically, mode 0600; a key
that is already in the wanted form is left alone.  No passphrase is ever printed.
"""

from __future__ import annotations

from pathlib import Path

import click

from onlineca.cli.app import AppContext
from onlineca.errors import ConfigError


def _targets(app: AppContext, role: str) -> list[tuple[str, Path, bytes | None]]:
    """(role, key file, passphrase) of every key file of ``role`` that exists."""
    cfg = app.config
    out: list[tuple[str, Path, bytes | None]] = []
    if role in ("ca", "all"):
        ca = cfg.paths.ca
        out += [("ca", p, cfg.ca.key_passphrase()) for p in (ca.root_key, ca.issuing_key) if p.exists()]
    if role in ("capf", "all"):
        capf_key = Path(cfg.capf.tls_key).absolute() if cfg.capf.tls_key else cfg.paths.capf.capf_key
        if capf_key.exists():
            out.append(("capf", capf_key, cfg.capf.key_passphrase()))
    return out


def _convert(app: AppContext, role: str, encrypt: bool) -> None:
    from onlineca.infra import files

    targets = _targets(app, role)
    if not targets:
        raise ConfigError(f"no {'' if role == 'all' else role + ' '}key found under {app.data_dir}",
                          hint="Run 'onlineca ca init' (and start CAPF once) first, or give --data-dir.")
    for name, path, passphrase in targets:
        if passphrase is None:
            var = f"ONLINECA_{name.upper()}_KEY_PASSPHRASE"
            raise ConfigError(f"no passphrase for the {name} keys ({path})",
                              hint=f"Set [{name}] key_passphrase_file, or ${var}.")
    for _name, path, passphrase in targets:
        encrypted = files.is_encrypted_key_file(path)
        if encrypted == encrypt:
            click.echo(f"{path}: already {'encrypted' if encrypt else 'in clear'}")
            continue
        key = files.read_private_key(path, passphrase)
        files.write_private_key(path, key, passphrase if encrypt else None)
        click.echo(f"{path}: {'encrypted (PKCS#8)' if encrypt else 'decrypted'}")


_ROLE = click.option("--role", type=click.Choice(["ca", "capf", "all"]), default="all", show_default=True,
                     help="Whose keys: the CA's root and issuing keys, CAPF's TLS key, or both.")


@click.group("keys")
def keys() -> None:
    """Encrypt or decrypt the CA's and CAPF's private keys (encrypted PKCS#8)."""


@keys.command("encrypt")
@_ROLE
@click.pass_obj
def encrypt_cmd(app: AppContext, role: str) -> None:
    """Encrypt the keys with their configured passphrase (restart the servers afterwards)."""
    _convert(app, role, True)


@keys.command("decrypt")
@_ROLE
@click.pass_obj
def decrypt_cmd(app: AppContext, role: str) -> None:
    """Write the keys back in clear (PKCS#8, 0600)."""
    _convert(app, role, False)
