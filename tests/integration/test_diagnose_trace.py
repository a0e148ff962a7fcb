"""``onlineca logs trace DEVICE`` on real logs: our CA and RA on 127.0.0.1 enroll two devices
(through our CAPF's EST client, which writes its trace in the document's format), and
one device's timeline holds its CAPF lines, the RA's error.log and access lines, and the CA's IIS
lines of its own request (tied by ReqID), not the other device's; also the document's own logs."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from tests.integration.test_diagnose import PASSWORD, USER, CALab, ca_lab, lab  # noqa: F401  (fixtures)

from onlineca import pki
from onlineca.cli import main_group

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "seed_logs"
DEVICE, OTHER = "SEP74A02FC0A675", "SEP001F6C81118B"


def test_trace_follows_one_device_through_capf_ra_and_ca(lab: CALab, tmp_path):
    from onlineca.capf.enroll import OnlineCAEnroller
    from onlineca.logs.capf_trace import SessionTrace, attach_capf_trace
    logs = tmp_path / "logs"
    port = lab.serve(log_dir=logs)
    ra = lab.start_ra(lab.config(f"https://127.0.0.1:{port}/certsrv", log_dir=logs), log_dir=logs)
    lab.loop.run(ra.wait_ready(10))
    cfg = lab.config(f"https://127.0.0.1:{port}/certsrv", log_dir=logs,
                     capf=f'ra_url = "{ra.url}"\nra_user = "{USER}"\nra_password = "{PASSWORD}"\n'
                          f'ra_trust_store = "{lab.files.root_cert}"')

    async def capf_enrolls(*devices: str) -> None:
        """CAPF's own EST client and trace log (onlineca.capf), as in a phone session."""
        detach = attach_capf_trace(logs)
        enroller = OnlineCAEnroller(cfg.capf, tmp_path / "capf-data")
        try:
            await enroller.setup()
            for device in devices:
                trace = SessionTrace("127.0.0.1")
                trace.device = device
                await enroller.enroll_device(device, pki.build_csr(pki.generate_key("ec", 256), f"CN={device}"), trace)
        finally:
            await enroller.close()
            detach()

    lab.loop.run(capf_enrolls(DEVICE, OTHER))
    assert f"{DEVICE}:Enrollment rv = 0 (EST_ERR_NONE)" in (logs / "capf.log").read_text()
    # Healthy logs of all three tiers: logs analyze raises no alarm on them.
    from onlineca.diagnose.analyze import analyze_paths
    healthy = analyze_paths([logs])
    assert healthy.causes() == [] and healthy.ok and len(healthy.files) >= 5

    res = CliRunner().invoke(main_group, ["logs", "trace", DEVICE, "--log-dir", str(logs), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    events = doc["events"]
    tiers = {e["tier"] for e in events}
    assert tiers == {"CAPF", "RA", "CA"}, res.output
    assert not any(OTHER in e["text"] for e in events)
    # The RA names the device's request; the CA's IIS lines of that request are in, the other's are out.
    assert len(doc["req_ids"]) == 1
    req_id = doc["req_ids"][0]
    iis = [e["text"] for e in events if e["tier"] == "CA"]
    assert any("POST /certsrv/certfnsh.asp" in t for t in iis)
    assert any(f"ReqID={req_id}" in t for t in iis)
    assert not any(f"ReqID={req_id + 1}" in t for t in iis)
    assert any("POST /.well-known/est/simpleenroll" in e["text"] and e["tier"] == "RA" for e in events)
    times = [e["time"] for e in events]
    assert times == sorted(times) and all(times)
    text = CliRunner().invoke(main_group, ["logs", "trace", DEVICE, "--log-dir", str(logs)]).output
    assert "CAPF" in text and "certfnsh.asp" in text and OTHER not in text


def test_trace_on_the_document_logs():
    res = CliRunner().invoke(main_group, ["logs", "trace", "SEP001F6C81118B", "--log-dir", str(VECTORS),
                                          "--date", "2019-01-16", "--utc-offset", "Z"])
    assert res.exit_code == 0, res.output
    assert "RA_NO_ANSWER" in res.output and "2019-01-16 12:38:04.779" in res.output
    res = CliRunner().invoke(main_group, ["logs", "trace", "SEP74A02FC0A675", "--log-dir", str(VECTORS),
                                          "--date", "2019-01-16", "--utc-offset", "+00:00", "--json"])
    doc = json.loads(res.output)
    assert doc["req_ids"] == [10]  # certnew.cer?ReqID=10 in the CA's IIS log, 2.6 s before CAPF's lines
    assert {e["tier"] for e in doc["events"]} == {"CAPF", "CA"}
    assert not any("SEP001F6C81118B" in e["text"] for e in doc["events"])


def test_trace_bad_input():
    runner = CliRunner()
    assert runner.invoke(main_group, ["logs", "trace", "SEP;rm", "--log-dir", str(VECTORS)]).exit_code == 2
    assert runner.invoke(main_group, ["logs", "trace", "SEP1", "--log-dir", "/nonexistent"]).exit_code == 2
    assert runner.invoke(main_group, ["logs", "trace", "SEP1", "--log-dir", str(VECTORS),
                                      "--utc-offset", "soon"]).exit_code == 2
    res = runner.invoke(main_group, ["logs", "trace", "SEPFFFFFFFFFFFF", "--log-dir", str(VECTORS)])
    assert res.exit_code == 1 and "no record of SEPFFFFFFFFFFFF" in res.output
