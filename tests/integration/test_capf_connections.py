"""Issue 11 item 6 on the CAPF port: the CA's and the RA's connection guard (``[connections]``).

A per-address limit (the connection over it is closed at once, one log line), a handshake
timeout (a client that never starts TLS is closed), accept() errors at EMFILE quieted on CAPF's
loop too, and the guard's HTTP header deadline lifted once a device session starts (CAPF's own
read and session timeouts bound it: a whole enrollment outlasts a 50 ms header deadline).
Real TLS on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from tests.integration.capf_lab import close_lab, make_lab

from onlineca.config import ConnectionsConfig
from onlineca.infra.serving import _ACCEPT_FILTERED
from onlineca.phone.device import Phone


@pytest.fixture
def capf_log(log_lines):  # type: ignore[no-untyped-def]
    return log_lines("onlineca.capf.service")


async def test_the_capf_port_is_guarded(tmp_path: Path, lab_pki, capf_log) -> None:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}")
    await lab.stop_capf()
    config = lab.config()
    config = config.model_copy(update={"connections": ConnectionsConfig(
        max_per_address=2, handshake_timeout=0.5, header_timeout=0.05, idle_timeout=0.05)})
    from onlineca.capf.service import start_capf
    lab.capf = await start_capf(config, host="127.0.0.1", port=0, db=lab.db, maintenance=False)
    try:
        assert id(asyncio.get_running_loop()) in _ACCEPT_FILTERED
        # A whole enrollment, much longer than the header deadline: CAPF's own timeouts apply.
        lab.add_device("SEPGUARDED01", operation="Install/Upgrade", key_order="EC Only")
        result = await lab.session(Phone("SEPGUARDED01"))
        assert result.outcome == "installed", result
        ctx = ssl.create_default_context(cafile=str(lab_pki.root_pem))
        port = lab.capf.port
        held = [await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
                for _ in range(2)]
        for r, _w in held:
            assert await r.readexactly(1)  # AUTH_REQUEST: the sessions live
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            r, _w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
            await r.readexactly(1)
        assert any("max_per_address = 2" in line for line in capf_log)
        for _r, w in held:
            w.close()
        await lab.sessions_done()
        assert lab.capf.guard is not None
        async with asyncio.timeout(20):
            while lab.capf.guard.total:  # the held connections' slots come back
                await asyncio.sleep(0.02)
        # A client that never starts its TLS handshake is closed after handshake_timeout.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(20):
            assert await r.read() == b""
        w.close()
        async with asyncio.timeout(20):
            while not any("taking longer than 0.5 seconds" in line for line in capf_log):
                await asyncio.sleep(0.02)
    finally:
        await close_lab(lab)
