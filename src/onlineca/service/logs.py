"""The logs as the console shows them: one device's timeline (``logs trace``), the failure
signatures (``logs analyze``) and the support bundle (``logs collect``), over the configured log
folder only (a caller never names a path).  Reads only; the bundle is written to a temporary
file the caller removes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from onlineca.diagnose.analyze import analyze_paths
from onlineca.diagnose.collect import collect_bundle
from onlineca.diagnose.trace import build_timeline
from onlineca.policy.capf import validate_device_name
from onlineca.service.core import Actor, Services


def trace(svc: Services, actor: Actor, device: str, *, day: str | None = None, utc_offset: str | None = None,
          limit: int = 500) -> dict[str, Any]:
    """The device's timeline through the CAPF, RA and CA logs (the newest ``limit`` events)."""
    actor.require("read", "read the logs")
    name = validate_device_name(device)
    log_dir = svc.log_dir
    if not log_dir.is_dir():
        return {"schema": "onlineca.logs-trace/1", "device": name, "utc_offset": "", "files": [], "req_ids": [],
                "events": []}
    timeline = build_timeline(name, [log_dir], day=day, utc_offset=utc_offset).as_dict()
    timeline["events"] = timeline["events"][-limit:]
    return timeline


def analyze(svc: Services, actor: Actor) -> dict[str, Any]:
    """The known failure signatures found in the configured log folder."""
    actor.require("read", "read the logs")
    if not svc.log_dir.is_dir():
        return {"schema": "onlineca.logs-analyze/1", "ok": True, "files": [], "unreadable": {}, "causes": [], "hits": [],
                "healthy_records": 0}
    return analyze_paths([svc.log_dir]).as_dict()


def collect(svc: Services, actor: Actor, *, run_diagnose: bool = False) -> Path:
    """A support bundle (.tar.gz: logs, redacted configuration, versions) in a temporary file."""
    actor.require("logs.collect", "collect the logs")
    folder = Path(tempfile.mkdtemp(prefix="onlineca-bundle-"))
    out = folder / "onlineca-bundle.tar.gz"
    collect_bundle(svc.config, out, config_path=svc.config_path, run_diagnose=run_diagnose)
    return out


__all__ = ["analyze", "collect", "trace"]
