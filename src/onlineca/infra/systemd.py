"""The systemd units and the logrotate snippet ``onlineca service install`` writes (text only).

One unit per server role (``onlineca-ca``, ``-ra``, ``-capf``, ``-admin``), each ``Type=notify``
(the server sends READY=1 once it listens, ``infra.daemon.notify``) and hardened: a dedicated
user, a read-only system (``ProtectSystem=strict``) with the state dir (``StateDirectory=onlineca``,
0700) and the log dir as the only writable places, no home, private /tmp, no new privileges, no
capabilities, umask 0077.  The logrotate snippet rotates the log files and sends SIGHUP, which
makes the servers reopen them.  This module only builds text; writing files is the caller's.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

ROLES: dict[str, str] = {
    "ca": "the CA (AD CS web enrollment, /certsrv)",
    "ra": "the RA (EST, RFC 7030)",
    "capf": "CAPF (device protocol, inventory, renewal)",
    "admin": "the administration console and REST API",
}
# The RA enrolls at the CA and CAPF at the RA: when they run on one host, start them in that order.
AFTER = {"ca": [], "ra": ["onlineca-ca.service"], "capf": ["onlineca-ra.service"], "admin": []}

STATE_DIR = Path("/var/lib/onlineca")
LOG_DIR = Path("/var/log/onlineca")
SYSTEM_CONFIG = Path("/etc/onlineca/onlineca.toml")
ENV_FILE = Path("/etc/onlineca/onlineca.env")


@dataclass(frozen=True)
class UnitSettings:
    command: tuple[str, ...]    # the onlineca command: its script in the virtual environment, or python -m onlineca
    user: str = "onlineca"
    config: Path = SYSTEM_CONFIG
    log_target: str = "file"    # file | journald
    extra_read_write: tuple[Path, ...] = ()  # e.g. a data dir elsewhere than /var/lib/onlineca
    bind_privileged: bool = False            # a port below 1024 (CAP_NET_BIND_SERVICE only)


def unit_name(role: str) -> str:
    return f"onlineca-{role}.service"


def _under_home(path: Path) -> bool:
    return any(path.is_relative_to(p) for p in (Path("/home"), Path("/root"), Path("/run/user")))


def unit_text(role: str, s: UnitSettings) -> str:
    """The unit file of ``role`` (see the module docstring)."""
    command = [*s.command, "--config", str(s.config), "--data-dir", str(STATE_DIR),
               "--log-target", s.log_target]
    if s.log_target == "file":
        command += ["--log-dir", str(LOG_DIR)]
    command += [role, "serve"]
    read_write = [str(p) for p in s.extra_read_write]
    # ProtectHome=yes hides /home and /root: a virtual environment (or the configuration) there
    # would vanish for the service, so such an install gets read-only access to them instead.
    home = "read-only" if _under_home(Path(s.command[0])) or _under_home(s.config) else "yes"
    after = " ".join(["network-online.target", *AFTER[role]])
    lines = [
        "# Written by 'onlineca service install'; 'systemctl edit' keeps local changes in a drop-in.",
        "[Unit]",
        f"Description=onlineca: {ROLES[role]}",
        "Documentation=man:onlineca(1)",
        f"After={after}",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={shlex.join(command)}",
        # SIGHUP reopens the log files (and reloads the configuration where the server can).
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5s",
        "TimeoutStartSec=120s",
        "TimeoutStopSec=30s",
        f"User={s.user}",
        f"Group={s.user}",
        # Secrets (ONLINECA_RA_CA_PASSWORD, ...) from a root-owned 0600 file, never the unit.
        f"EnvironmentFile=-{ENV_FILE}",
        "StateDirectory=onlineca",
        "StateDirectoryMode=0700",
        *(["LogsDirectory=onlineca", "LogsDirectoryMode=0750"] if s.log_target == "file" else []),
        "UMask=0077",
        "LimitNOFILE=65536",
        # hardening: systemd.exec(5)
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ProtectHome={home}",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        # the set systemd keeps for ordinary services; a call outside it fails (EPERM) rather
        # than killing the server, so a library's probe degrades instead of crashing
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "ProtectProc=invisible",
        "RemoveIPC=yes",
        *(["CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"]
          if s.bind_privileged else ["CapabilityBoundingSet=", "AmbientCapabilities="]),
        *([f"ReadWritePaths={' '.join(read_write)}"] if read_write else []),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def logrotate_text(user: str = "onlineca", log_dir: Path = LOG_DIR) -> str:
    """``/etc/logrotate.d/onlineca``: weekly, 12 kept, compressed; SIGHUP afterwards makes the
    servers reopen their files at once (they would also notice the rename at the next line)."""
    units = " ".join(unit_name(r) for r in ROLES)
    return (f"# Written by 'onlineca service install'.\n"
            f"{log_dir}/*.log {{\n"
            f"    weekly\n    rotate 12\n    maxsize 100M\n    missingok\n    notifempty\n"
            f"    compress\n    delaycompress\n    sharedscripts\n"
            f"    create 0600 {user} {user}\n"
            f"    su {user} {user}\n"
            f"    postrotate\n"
            f"        systemctl kill --kill-who=main --signal=HUP {units} >/dev/null 2>&1 || true\n"
            f"    endscript\n}}\n")


__all__ = ["ROLES", "UnitSettings", "logrotate_text", "unit_name", "unit_text"]
