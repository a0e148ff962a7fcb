"""Issue 12 item 10, CAPF's part: the serve loop's SIGHUP calls ``RunningCAPF.reload(config)``,
which takes new RA settings (a new EST client towards the RA) and re-reads CAPF's TLS
certificate, refuses a broken configuration and leaves the running one serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from capf_lab import CAPFLab, close_lab, make_lab

from onlineca.errors import ConfigError


@pytest.fixture
async def lab(tmp_path: Path, lab_pki) -> CAPFLab:  # type: ignore[no-untyped-def]
    running = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}")
    yield running
    await close_lab(running)


async def test_capf_reload_swaps_its_ra_client_and_refuses_a_broken_config(lab: CAPFLab) -> None:
    assert lab.capf is not None
    before = lab.capf.enroller
    with pytest.raises(ConfigError):
        await lab.capf.reload(lab.config(ra_trust_store=str(lab.dir / "missing.pem")))
    assert lab.capf.enroller is before  # refused: nothing changed
    changes = await lab.capf.reload(lab.config(enroll_timeout=7))
    assert changes == ["[capf] enroll_timeout"]
    assert lab.capf.enroller is not before and lab.capf.capf.enroller is lab.capf.enroller
    assert await lab.capf.enroller.lsc_trust(refresh=True)  # the new client reaches the RA
    assert "configuration reloaded (SIGHUP): [capf] enroll_timeout" in lab.capf_log
