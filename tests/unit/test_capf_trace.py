"""The CAPF trace log's two formats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from onlineca.logs.capf_trace import SessionTrace, attach_capf_trace


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_trace_lines_name_the_device(tmp_path: Path, fmt: str) -> None:
    detach = attach_capf_trace(tmp_path, fmt)
    try:
        trace = SessionTrace("127.0.0.1:50000", 0x1234ABCD)
        trace.debug("CAPF CORE: Rcvd Event: CAPF_EV_AUTH_RESPONSE in State: CAPF_STATE_AUTH_REQUESTED")
        trace.device = "SEP74A02FC0A675"
        trace.debug("Calling enrollCertUsingEST() csr_file=/x/SEP74A02FC0A675.csr password=hunter2")
        trace.plain("debug LSC is verified. removing CSR at /x/SEP74A02FC0A675.csr")
    finally:
        detach()
    lines = (tmp_path / "capf.log").read_text().splitlines()
    assert len(lines) == 3
    assert "hunter2" not in "\n".join(lines)
    if fmt == "text":
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} \| debug 2:\[127\.0\.0\.1:50000\]:CAPF CORE: .*", lines[0])
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} \| debug 2:SEP74A02FC0A675:Calling enrollCertUsingEST\(\) "
                            r"csr_file=/x/SEP74A02FC0A675\.csr password=\*\*\*", lines[1])
        assert lines[2].endswith("| debug LSC is verified. removing CSR at /x/SEP74A02FC0A675.csr")
    else:
        objs = [json.loads(line) for line in lines]
        assert [o["device"] for o in objs] == ["", "SEP74A02FC0A675", "SEP74A02FC0A675"]
        assert all(o["session_id"] == "0x1234abcd" and o["component"] == "capf.trace" for o in objs)
        assert objs[1]["message"].startswith("debug 2:SEP74A02FC0A675:Calling enrollCertUsingEST()")

