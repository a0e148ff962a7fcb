"""``onlineca logs collect``: one .tar.gz with every component's logs, the configuration with its
secrets redacted, the diagnose report, the log analysis and the versions, for a support case.

Every file of the log dir goes in (CAPF's too: nothing is picked from a list that could forget a
component, as the original tool forgot CAPF, CSCvo28048).  It needs no special account: it reads
what the invoking user can read and names what it could not.  It must never put a secret in the
bundle: SecretStr settings and password-like keys are masked, environment values of secret-like
variables are masked, and every secret value the configuration holds is scrubbed from every file
as a last guard (logs included).  The bundle is written 0600.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from onlineca import __version__
from onlineca.config import Config
from onlineca.diagnose.analyze import analyze_texts
from onlineca.logs import redact
from onlineca.logs.reader import read_log, unreadable_reason

MASK = "***"
_SECRET_KEY = re.compile(r"(?i)pass|secret|token|credential|auth_string|private")
_SECRET_ENV = re.compile(r"(?i)pass|secret|token|credential|private|key$|database_url")
MAX_LOG_BYTES = 512 * 1024 * 1024


@dataclass
class BundleSummary:
    path: Path
    logs: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    diagnosed: bool = False


def secret_values(cfg: BaseModel) -> set[str]:
    """Every secret the configuration holds (SecretStr values, password-like string keys)."""
    found: set[str] = set()
    for name, value in cfg:
        if isinstance(value, SecretStr):
            found.add(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found |= secret_values(value)
        elif isinstance(value, str) and _SECRET_KEY.search(name):
            found.add(value)
    return {s for s in found if len(s) >= 4}


def redacted_config(cfg: BaseModel) -> dict[str, Any]:
    """The configuration as JSON values with every secret masked (an empty secret stays empty,
    so a reader can tell "not set" from "set")."""
    out: dict[str, Any] = {}
    for name, value in cfg:
        if isinstance(value, SecretStr):
            out[name] = MASK if value.get_secret_value() else ""
        elif isinstance(value, BaseModel):
            out[name] = redacted_config(value)
        elif isinstance(value, list):
            out[name] = [redacted_config(v) if isinstance(v, BaseModel) else v for v in value]
        elif isinstance(value, str) and _SECRET_KEY.search(name) and value:
            out[name] = MASK
        else:
            out[name] = value
    return out


def redacted_environment(environ: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if _SECRET_ENV.search(k) and v else v) for k, v in sorted(environ.items())
            if k.startswith("ONLINECA_")}


def versions() -> dict[str, str]:
    got = {"onlineca": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "openssl (python ssl)": ssl.OPENSSL_VERSION}
    for dist in ("cryptography", "aiohttp", "pydantic", "SQLAlchemy", "click"):
        try:
            got[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            got[dist] = "not installed"
    openssl = shutil.which("openssl")
    if openssl:
        try:
            got["openssl (command)"] = subprocess.run([openssl, "version"], capture_output=True, text=True,
                                                      timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            got["openssl (command)"] = "failed to run"
    return got


def scrub(text: str, secrets: set[str]) -> str:
    """The log redaction patterns, then every known secret value masked wherever it appears."""
    text = redact(text)
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


def _log_files(log_dir: Path, bundle: Path) -> list[Path]:
    if not log_dir.is_dir():
        return []
    out = []
    for path in sorted(log_dir.rglob("*")):
        # Symlinks are not followed: the bundle holds the log dir, not what a link points at.
        if path.is_symlink() or not path.is_file() or path.resolve() == bundle.resolve():
            continue
        out.append(path)
    return out


def collect_bundle(cfg: Config, out: Path, *, config_path: Path | None = None, run_diagnose: bool = True,
                   environ: dict[str, str] | None = None) -> BundleSummary:
    """Write the bundle to ``out``; returns what went in."""
    environ = dict(os.environ) if environ is None else environ
    secrets = secret_values(cfg)
    # Secrets given only through the environment are scrubbed too.
    secrets |= {v for k, v in environ.items() if k.startswith("ONLINECA_") and _SECRET_ENV.search(k) and len(v) >= 4}
    summary = BundleSummary(out)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    root = f"onlineca-bundle-{stamp}"
    files: dict[str, bytes] = {}
    log_dir = cfg.log_path
    for path in _log_files(log_dir, out):
        name = f"logs/{path.relative_to(log_dir).as_posix()}"
        try:
            text = read_log(path, MAX_LOG_BYTES)
        except OSError as exc:
            summary.unreadable[str(path)] = unreadable_reason(exc)
            continue
        files[name] = scrub(text, secrets).encode()
        summary.logs.append(name)
    files["config.json"] = json.dumps({"file": str(config_path) if config_path else None,
                                       "config": redacted_config(cfg),
                                       "environment": redacted_environment(environ)}, indent=2).encode()
    files["versions.json"] = json.dumps(versions(), indent=2).encode()
    if run_diagnose:
        from onlineca.diagnose.checks import run_diagnose as diagnose
        started = time.monotonic()
        report = asyncio.run(diagnose(cfg))
        doc = report.as_dict()
        doc["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        files["diagnose.json"] = json.dumps(doc, indent=2, default=str).encode()
        files["diagnose.txt"] = report.to_text().encode()
        summary.diagnosed = True
    # The logs analysed together: a cause in one (the RA's error.log) explains lines of another (CAPF's).
    analysis = analyze_texts((name, body.decode()) for name, body in files.items() if name.startswith("logs/"))
    files["analysis.json"] = json.dumps({"causes": [c.as_dict() for c in analysis.causes()],
                                         "hits": [h.as_dict() for h in analysis.hits if h.severity != "ok"]},
                                        indent=2, default=str).encode()
    files["collect.json"] = json.dumps({"created": stamp, "log_dir": str(log_dir), "logs": summary.logs,
                                        "unreadable": summary.unreadable}, indent=2).encode()
    files = {name: scrub(body.decode(), secrets).encode() for name, body in files.items()}
    manifest = "".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n" for name, body in sorted(files.items()))
    files["MANIFEST.sha256"] = manifest.encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
        now = time.time()
        for name, body in sorted(files.items()):
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size, info.mtime, info.mode = len(body), now, 0o600
            tar.addfile(info, io.BytesIO(body))
    return summary


__all__ = ["BundleSummary", "collect_bundle", "redacted_config", "redacted_environment", "scrub", "secret_values",
           "versions"]
