"""Each tier's /metrics on the lab chain (``onlineca.lab``, real TLS on 127.0.0.1) after a phone
enrolled and CAPF ran a maintenance pass: CAPF's own HTTP server (``[capf] metrics_port``) with
/healthz, the CA's /metrics (loopback allowed), the RA's; every metric the shipped alert rules use
is exposed by one of them (the rules cannot drift from the names), and no label carries a device
name (bounded cardinality)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from onlineca import pki
from onlineca.infra import tls
from onlineca.lab import Servers, make_lab, prepare_folder, start_servers
from onlineca.phone.client import PhoneAuth, Target, phone_ssl_context, run_session
from onlineca.phone.device import Phone
from onlineca.store import Database, devices as inv

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "onlineca-alerts.yml"


async def _get(url: str, root: Path | None = None) -> tuple[int, str]:
    ctx = tls.client_context([pki.load_certificate(root.read_bytes())]) if root else None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx) if ctx else None) as session, \
            session.get(url) as resp:
        return resp.status, await resp.text()


async def test_every_tier_exposes_what_the_alert_rules_use(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    prepare_folder(root)
    config, _mic = make_lab(root)
    servers = Servers()
    db = Database(config.database_url)
    try:
        await start_servers(config, root, servers, default_ports=False)
        assert servers.capf is not None and servers.ca is not None and servers.ra is not None
        name = "SEP0000000C0001"
        with db.session() as s:
            inv.add_device(s, name, actor="test", operation="Install/Upgrade")
        capf = servers.capf
        target = Target(capf.host, capf.port, phone_ssl_context(root / "ca" / "root.pem"))
        result = await run_session(Phone.create(root / "phones" / name, name), target, PhoneAuth("null"))
        assert result.outcome == "installed"
        await capf.maintenance_once()
        assert capf.ops is not None
        server = await capf.ops.start_server("127.0.0.1", 0)
        status, capf_text = await _get(f"{server.base}/metrics")
        assert status == 200
        status, health = await _get(f"{server.base}/healthz")
        assert status == 200 and '"status": "alive"' in health
        root_pem = root / "ca" / "root.pem"
        status, ca_text = await _get(f"{servers.ca.base}/metrics", root_pem)
        assert status == 200
        status, ra_text = await _get(f"{servers.ra.base}/metrics", root_pem)
        assert status == 200

        assert 'onlineca_capf_devices{status="CERT_STATUS_UPGRADE_SUCCESS"} 1.0' in capf_text
        assert 'onlineca_capf_lsc_expiry_days_bucket{le="365"} 1.0' in capf_text
        assert 'onlineca_capf_lsc_expiring_unscheduled{within_days="14"} 0.0' in capf_text
        assert 'onlineca_capf_enrollments_total{code="EST_ERR_NONE",result="issued"} 1.0' in capf_text
        assert "onlineca_capf_session_duration_seconds_count 1.0" in capf_text
        assert 'onlineca_capf_ra_ready 1.0' in capf_text
        for role in ("capf_tls", "capf_ca", "ca_chain"):
            assert f'onlineca_certificate_expiry_seconds{{role="{role}"' in capf_text
        assert name not in capf_text  # no series per device

        exposed = set(re.findall(r"^(onlineca_[a-z_]+)", capf_text + ca_text + ra_text, re.M))
        exprs = "\n".join(line for line in RULES.read_text().splitlines()
                          if not line.strip().startswith(("#", "description:", "summary:")))
        used = set(re.findall(r"\b(onlineca_[a-z_]+)", exprs))
        missing = {m for m in used if not any(e == m or e.startswith(m + "_") for e in exposed)}
        assert missing == set(), f"the alert rules use metrics no tier exposes: {missing}"
    finally:
        await servers.close()
        db.dispose()
