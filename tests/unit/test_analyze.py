"""``logs analyze`` on every log snippet of the source document (tests/vectors/seed_logs/): each
failure names the document's cause, each healthy log raises no alarm; plus our own log formats,
run-together records, and hostile input."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlineca.cli import main_group
from onlineca.diagnose.analyze import analyze_paths, analyze_text, analyze_texts, records
from onlineca.logs import JSONFormatter
from onlineca.logs.iis import IISEntry, format_line
from onlineca.logs.nginx import NginxErrorFormatter
from onlineca.proto.certsrv import client as p

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "seed_logs"

# file -> (the cause the document gives, the code that names it, evidence that must be extracted)
FAILURES = {
    "capf_enroll_ssl_read.log": ("RA_NO_ANSWER", {"waited_s": 10.038}),
    "nginx_untrusted_issuer.log": ("CA_TLS_UNTRUSTED", {}),
    "nginx_self_signed.log": ("CA_TLS_UNTRUSTED", {}),  # the document logs the same line for both
    "nginx_name_mismatch.log": ("CA_TLS_NAME_MISMATCH", {"cert": "lab-dc", "host": "lab-dc.michamen.com"}),
    "nginx_dns.log": ("CA_DNS", {"host": "lab-dcc.michamen.com"}),
    "nginx_not_yet_valid.log": ("CA_TLS_NOT_YET_VALID", {}),
    "nginx_typo_auth_fail.log": ("CA_TEMPLATE", {}),
    "nginx_timeout_login.log": ("CA_TIMEOUT", {"ms": "10000"}),
    "nginx_timeout_cacerts.log": ("CA_TIMEOUT", {"ms": "10001", "func": "retrieve_cacerts"}),
}
HEALTHY = sorted(f.name for f in VECTORS.glob("*_healthy.log"))


def test_every_vector_is_covered():
    assert set(FAILURES) | set(HEALTHY) == {f.name for f in VECTORS.glob("*.log")}
    assert len(HEALTHY) == 6


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_document_failure_snippets_name_the_cause(name):
    code, evidence = FAILURES[name]
    result = analyze_paths([VECTORS / name])
    causes = result.causes()
    assert [c.code for c in causes] == [code], result.to_text()
    assert not result.ok
    cause = causes[0]
    assert cause.fix and cause.cause and not cause.secondary
    for key, value in evidence.items():
        assert cause.evidence[key] == value


def test_self_signed_and_untrusted_explain_both_possibilities():
    for name in ("nginx_self_signed.log", "nginx_untrusted_issuer.log"):
        cause = analyze_paths([VECTORS / name]).causes()[0]
        assert "self-signed" in cause.cause and "trust store" in cause.cause


def test_consequence_lines_are_reported_but_not_as_causes():
    hits = analyze_paths([VECTORS / "nginx_dns.log"]).hits
    chain = [h for h in hits if h.code == "CA_CHAIN"]
    assert len(chain) == 2 and all(h.secondary for h in chain)


def test_typo_without_the_certrqxt_context_is_an_est_credential_problem():
    line = "***EST [WARNING][est_enroll_auth:394]--> HTTP authentication failed. Auth type=1"
    assert [h.code for h in analyze_text(line)] == ["RA_EST_AUTH"]


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_logs_raise_no_alarm(name):
    result = analyze_paths([VECTORS / name])
    assert result.ok and result.problems == [] and result.causes() == []
    assert sum(h.severity == "ok" for h in result.hits) >= 2


def _table_rows() -> list[tuple[str, str]]:
    rows, last = [], ""
    for line in (VECTORS / "summary_table.md").read_text(encoding="utf-8").splitlines()[2:]:
        cause, _where, signature = [c.strip() for c in line.strip("|").split("|")]
        quoted = re.findall(r"`([^`]+)`", signature)
        text = "\n".join(quoted) if quoted else last  # "same as above"
        rows.append((cause, text))
        last = text
    return rows


TABLE_CODES = ["RA_NO_ANSWER", "CA_TLS_UNTRUSTED", "CA_TLS_UNTRUSTED", "CA_TLS_NAME_MISMATCH", "CA_DNS",
               "CA_TLS_NOT_YET_VALID", "CA_TEMPLATE", "CA_TIMEOUT", "CA_TIMEOUT"]


@pytest.mark.parametrize("row", range(len(TABLE_CODES)))
def test_summary_table_signatures(row):
    rows = _table_rows()
    assert len(rows) == len(TABLE_CODES)
    cause, text = rows[row]
    causes = analyze_texts([("summary_table.md", text)]).causes()
    assert [c.code for c in causes] == [TABLE_CODES[row]], (cause, text)


def test_run_together_records_are_cut_apart_with_times_and_devices():
    text = (VECTORS / "capf_enroll_healthy.log").read_text(encoding="utf-8")
    recs = list(records(text, "capf"))
    assert len(recs) > 60
    rv = next(r for r in recs if "Enrollment rv = 0" in r.text)
    assert rv.device == "SEP74A02FC0A675" and rv.time.strftime("%H:%M:%S.%f")[:-3] == "14:05:05.236"
    iis = list(records((VECTORS / "iis_enroll_healthy.log").read_text(encoding="utf-8")))
    assert [r.fields["sc-status"] for r in iis] == [401, 301, 200, 401, 301, 200, 200]
    assert iis[5].fields["cs-uri-stem"] == "/certsrv/certfnsh.asp"


def test_our_ra_error_log_lines(tmp_path):
    """Our RA words CA failures as the original does (CertsrvFailure.reason): same causes."""
    fmt = NginxErrorFormatter()
    failures = {
        "CA_TLS_SELF_SIGNED": p.tls_error("ca.lab", 18, "self-signed certificate"),
        "CA_TLS_EXPIRED": p.tls_error("ca.lab", 10, "certificate has expired"),
        "CA_TLS_UNTRUSTED": p.tls_error("ca.lab", 20, "unable to get local issuer certificate"),
        "CA_DNS": p.dns_error("lab-dcc.example.invalid"),
        "CA_CONNECT": p.connect_error("127.0.0.1", 9, 0),
        "CA_TIMEOUT": p.timeout_error("login", "https://ca.lab/certsrv/", 10, 10000, 0),
        "CA_AUTH": p.http_status_error(401, "https://ca.lab/certsrv/"),
    }
    for code, exc in failures.items():
        rec = logging.LogRecord("onlineca.ra", logging.WARNING, __file__, 1,
                                "Curl call for MS CA login failed with %s", (exc.reason,), None)
        rec.func = "login_to_certsrv_ca"
        line = fmt.format(rec)
        assert [h.code for h in analyze_text(line) if not h.secondary] == [code], line


def test_our_json_logs_and_iis_lines():
    rec = logging.LogRecord("onlineca.ra", logging.ERROR, __file__, 1, "the CA refused the credentials", (), None)
    rec.code = "CA_AUTH"
    line = JSONFormatter().format(rec)
    assert [h.code for h in analyze_text(line)] == ["CA_AUTH"]
    import datetime as dt
    now = dt.datetime(2026, 1, 1, 12, 0, 0)
    ok = format_line(IISEntry(now, "127.0.0.1", "GET", "/certsrv", "", 8443, "", "127.0.0.1", "onlineca", "",
                              401, 1, 2148074254, 0))
    bad = format_line(IISEntry(now, "127.0.0.1", "GET", "/certsrv/", "", 8443, "ciscora", "127.0.0.1", "onlineca",
                               "", 401, 1, 1326, 3))
    slow = format_line(IISEntry(now, "127.0.0.1", "POST", "/certsrv/certfnsh.asp", "", 8443, "ciscora", "127.0.0.1",
                                "onlineca", "", 200, 0, 0, 12000))
    assert [h.code for h in analyze_text(ok)] == ["OK_IIS"]
    assert [h.code for h in analyze_text(bad)] == ["CA_AUTH"]
    assert [h.code for h in analyze_text(slow)] == ["CA_TIMEOUT"]


def test_unknown_error_lines_are_not_silently_dropped():
    hits = analyze_text("2026/01/01 10:00:00 [error] 1#0: something_new: it broke")
    assert [h.code for h in hits] == ["UNKNOWN_ERROR"]


def test_hostile_input_never_raises(tmp_path):
    junk = tmp_path / "junk.log"
    junk.write_bytes(b"\x00\xff\xfe" * 1000 + b"{not json\n" + b"12:00:00.000 |" * 5000 + b"\n"
                     + b'{"message": 1, "ts": "yesterday"}\n' + b"2019-01-01 10:00:00 1.2.3.4 GET\n")
    result = analyze_paths([junk, tmp_path / "missing.log"])
    assert str(tmp_path / "missing.log") in result.unreadable
    json.dumps(result.as_dict())


def test_cli_analyze(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main_group, ["logs", "analyze", str(VECTORS / "nginx_name_mismatch.log")])
    assert res.exit_code == 1, res.output
    assert "CA_TLS_NAME_MISMATCH" in res.output and "lab-dc.michamen.com" in res.output
    res = runner.invoke(main_group, ["logs", "analyze", "--json", *[str(VECTORS / n) for n in HEALTHY]])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["ok"] and doc["causes"] == [] and doc["healthy_records"] > 20
    res = runner.invoke(main_group, ["logs", "analyze", str(VECTORS)])
    assert res.exit_code == 1
    for code in {c for c, _ in FAILURES.values()}:
        assert code in res.output


@pytest.mark.parametrize("pattern,needle", [
    (r"return code 6 \(Could not resolve(?: host)?:? (?P<host>[^\s()]+)", "return code 6 (Could not resolve"),
    (r"(?:rc|rv|code)[=:] ?22 \(EST_ERR_AUTH_FAIL\)", "22 (EST_ERR_AUTH_FAIL)"),
    (r"a|b", ""),                       # a top-level alternation requires nothing
    (r"x(?P<g>one|two)yy", "yy"),       # runs inside a group are alternatives
    (r"colou?r [a-z]+ value", " value"),  # "colo": the character before ? is optional
])
def test_required_literal(pattern, needle):
    from onlineca.diagnose.analyze import required_literal
    assert required_literal(pattern) == needle


def test_every_signature_needle_is_in_what_it_matches():
    """The pre-check may never hide a match: each signature's hits in the vectors hold its needle."""
    from onlineca.diagnose.analyze import SIGNATURES
    by_name = {s.name: s for s in SIGNATURES}
    hits = analyze_paths([VECTORS]).hits
    for h in hits:
        if h.signature in by_name:
            assert by_name[h.signature].needle in h.record.text


def test_report_schema_and_exit_rule():
    from onlineca.diagnose.findings import Report, finding
    r = Report()
    assert r.ok and r.worst == "ok" and json.loads(r.to_json())["findings"] == []
    r.findings.append(finding("CAPF_CERT_EXPIRING", "soon", severity="warning", days_left=3, absent=None))
    assert r.ok and r.worst == "warning" and r.findings[0].evidence == {"days_left": 3}
    r.findings.append(finding("CA_DNS", "no such host", host="x.invalid"))
    doc = json.loads(r.to_json())
    assert not doc["ok"] and doc["worst"] == "error" and doc["findings"][1]["hop"] == "ca"
    assert doc["findings"][1]["fix"].startswith("Check the CA host name")
    assert "CA_DNS" in r.to_text() and "fix:" in r.to_text()
