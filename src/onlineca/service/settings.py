"""The configuration as the console reads and changes it.

``read`` is the whole configuration with every secret masked (``diagnose.collect.redacted_config``).
``change`` takes ``{section: {key: value}}``, applies it to the file's own values, validates the
result with the configuration's models (nothing is written when one value is wrong), writes the
file back atomically with mode 0600 (it may hold a password), and reloads ``Services.config``.
A secret given as ``""`` or ``"***"`` keeps its value.  The console applies the new file at once;
the CA, RA and CAPF read theirs when they start, so a change to their sections takes effect at
their next start (docs/admin.md).  The file is rewritten from its values: comments are not kept.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from onlineca.config import Config, load_config
from onlineca.diagnose.collect import MASK, redacted_config
from onlineca.errors import ConfigError
from onlineca.infra import files
from onlineca.service import audit
from onlineca.service.core import Actor, Services

# Sections the console may change; [database] and the console's own TLS files stay with the file's owner.
CHANGEABLE = ("logging", "ca", "ra", "est", "capf", "admin")
FIXED_KEYS = {("admin", "tls_cert"), ("admin", "tls_key"), ("admin", "client_trust_store"),
              ("admin", "ca_database_url")}


def read(svc: Services, actor: Actor) -> dict[str, Any]:
    actor.require("read", "read the configuration")
    return {"path": str(svc.config_path) if svc.config_path else None, "config": redacted_config(svc.config)}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list) and all(not isinstance(v, dict) for v in value):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def to_toml(raw: dict[str, Any]) -> str:
    """A configuration's raw values as TOML: top-level keys, then one table per section (arrays of
    tables such as ``[[ca.templates]]`` after the section's own keys)."""
    lines = ["# onlineca configuration, written by the administration console (comments are not kept)."]
    for key, value in raw.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for section, values in raw.items():
        if not isinstance(values, dict):
            continue
        lines.append(f"\n[{section}]")
        tables = []
        for key, value in values.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                tables.append((key, value))
            elif isinstance(value, dict):
                raise ConfigError(f"{section}.{key}: nested tables are not supported")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, items in tables:
            for item in items:
                lines.append(f"\n[[{section}.{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _is_secret(model: BaseModel, key: str) -> bool:
    field = type(model).model_fields.get(key)
    return field is not None and (field.annotation is SecretStr or "password" in key)


def _flat(config: dict[str, Any], changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{section}.{key}": config.get(section, {}).get(key) for section, values in changes.items()
            for key in values}


def change(svc: Services, actor: Actor, changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Apply ``{section: {key: value}}`` to the configuration file, validated first; returns the
    redacted new configuration.  ``ConfigError`` names the first wrong key; nothing is written then."""
    actor.require("config.write", "change the configuration")
    if svc.config_path is None:
        raise ConfigError("the console was started without a configuration file: there is nothing to change",
                          hint="Start it with 'onlineca --config FILE admin serve'.")
    path = svc.config_path
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    for section, values in changes.items():
        if section not in CHANGEABLE or not isinstance(values, dict):
            raise ConfigError(f"{section}: not a section the console may change ({', '.join(CHANGEABLE)})")
        current = getattr(svc.config, section)
        target = raw.setdefault(section, {})
        for key, value in values.items():
            if key not in type(current).model_fields:
                raise ConfigError(f"{section}.{key}: unknown key")
            if (section, key) in FIXED_KEYS:
                raise ConfigError(f"{section}.{key}: only the configuration file's owner may change this")
            if _is_secret(current, key) and value in ("", MASK, None):
                continue  # keep the secret as it is (in the file or the environment)
            target[key] = value
    try:
        Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {first['msg']}") from None
    before = redacted_config(svc.config)
    files.write_secret_file(path, to_toml(raw).encode())
    new = load_config(path)  # the environment's overrides apply on top, as at start-up
    svc.config = new
    after = redacted_config(new)
    with svc.session() as s:
        audit.record(s, actor, "config.change", f"config:{path.name}", _flat(before, changes), _flat(after, changes))
    return {"path": str(path), "config": after}


__all__ = ["CHANGEABLE", "change", "read", "to_toml"]
