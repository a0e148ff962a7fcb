"""``logs analyze`` and ``logs trace`` on our own samples in the original products' formats
(tests/vectors/logs/, see its README): other hosts, curl and OpenSSL versions and wordings, IIS
field orders and IPv6, NGINX connection numbers, CAPF traces across midnight.  Each sample names
the one root cause it shows (or none), with its consequences grouped under it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlineca.cli import main_group
from onlineca.diagnose.analyze import analyze_paths, analyze_texts
from onlineca.diagnose.signatures import curl_meaning
from onlineca.diagnose.trace import build_timeline
from onlineca.logs.reader import records

SAMPLES = Path(__file__).resolve().parents[1] / "vectors" / "logs"

# sample -> (the one root cause, evidence it must carry)
ONE_CAUSE = {
    "nginx_untrusted_openssl3_retries.log": ("CA_TLS_UNTRUSTED", {"curl_code": "60"}),
    "nginx_self_signed_openssl3.log": ("CA_TLS_SELF_SIGNED", {"url": "https://ca01.lab.example.org:8443/certsrv"}),
    "nginx_not_yet_valid_openssl32.log": ("CA_TLS_NOT_YET_VALID", {}),
    "nginx_expired_nss.log": ("CA_TLS_EXPIRED", {}),
    "nginx_dns_resolving_timeout.log": ("CA_DNS", {}),
    "nginx_ssl_connection_timeout.log": ("CA_TIMEOUT", {"phase": "connect"}),
    "nginx_401_with_reason_phrase.log": ("CA_AUTH", {}),
    "nginx_connect_refused_curl8.log": ("CA_CONNECT", {}),
    "nginx_connect_timeout_curl7.log": ("CA_CONNECT", {}),
    "nginx_name_mismatch_curl8.log": ("CA_TLS_NAME_MISMATCH", {"host": "ca.pki.example.org"}),
    "nginx_untrusted_strerror.log": ("CA_TLS_UNTRUSTED", {}),
    "nginx_recv_reset_on_certfnsh.log": ("CA_CONNECT", {"curl_code": "56"}),
    "nginx_empty_reply.log": ("CA_CONNECT", {"curl_code": "52"}),
    "nginx_earlier_certrqxt_then_refusal.log": ("RA_EST_AUTH", {}),
    "nginx_template_typo_ipv6.log": ("CA_TEMPLATE", {}),
    "iis_default_fields_logon_failure.log": ("CA_AUTH", {"status": 401}),
    "iis_sitename_ipv6_slow_certfnsh.log": ("CA_TIMEOUT", {"url": "/certsrv/certfnsh.asp", "time_taken_ms": 15023}),
    "iis_reordered_fields_logon_failure.log": ("CA_AUTH", {"client": "2001:db8:77::2"}),
    "capf_midnight_rv35.log": ("RA_NO_ANSWER", {"waited_s": 10.043}),
    "capf_rv43_connect.log": ("RA_CONNECT", {"name": "EST_ERR_IP_CONNECT"}),
    "capf_rv42_dns.log": ("RA_DNS", {}),
    "capf_rv60_trust.log": ("RA_TLS_UNTRUSTED", {}),
}
HEALTHY = ["nginx_healthy_enrollments.log", "iis_healthy_ipv6_windows_auth.log"]


def test_every_sample_is_covered():
    files = {p.name for p in SAMPLES.glob("*.log")}
    assert files == set(ONE_CAUSE) | set(HEALTHY)
    assert {p.name for p in SAMPLES.iterdir() if p.is_dir()} == {"ca_timeout_case", "fleet_original"}


@pytest.mark.parametrize("name", sorted(ONE_CAUSE))
def test_each_sample_names_its_one_root_cause(name):
    code, evidence = ONE_CAUSE[name]
    result = analyze_paths([SAMPLES / name])
    causes = result.causes()
    assert [c.code for c in causes] == [code], result.to_text()
    assert causes[0].fix and result.ok == (causes[0].severity != "error")
    for key, value in evidence.items():
        assert causes[0].evidence[key] == value, causes[0].evidence


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_samples_raise_no_alarm(name):
    result = analyze_paths([SAMPLES / name])
    assert result.ok and result.causes() == [], result.to_text()


# --- item 8: context per request, not per file ---------------------------------------------------

def test_an_earlier_healthy_certrqxt_does_not_turn_a_later_refusal_into_a_template_typo():
    hits = analyze_paths([SAMPLES / "nginx_earlier_certrqxt_then_refusal.log"]).hits
    refusals = [h for h in hits if h.signature == "est_auth_failed"]
    # 19 minutes later on *9, and in the same second on *13 but after *12's certrqxt for another client
    assert [h.code for h in refusals] == ["RA_EST_AUTH", "RA_EST_AUTH"]
    typo = [h for h in analyze_paths([SAMPLES / "nginx_template_typo_ipv6.log"]).hits if h.signature == "est_auth_failed"]
    assert [h.code for h in typo] == ["CA_TEMPLATE"] and typo[0].record.conn == "17"


# --- item 9: IIS #Fields ----------------------------------------------------------------------------

def test_iis_fields_directive_is_honoured_in_any_order_with_ipv6():
    recs = list(records((SAMPLES / "iis_sitename_ipv6_slow_certfnsh.log").read_text(), "iis"))
    assert len(recs) == 5 and all(r.kind == "iis" for r in recs)
    post = recs[3]
    assert post.fields["cs-uri-stem"] == "/certsrv/certfnsh.asp" and post.fields["time-taken"] == 15023
    assert post.fields["s-computername"] == "ROOTLESS-CA" and post.client == "2001:db8:10::5"
    assert post.time == dt.datetime(2025, 3, 21, 14, 2, 26, tzinfo=dt.UTC)
    reordered = list(records((SAMPLES / "iis_reordered_fields_logon_failure.log").read_text(), "iis"))
    assert [r.fields["sc-win32-status"] for r in reordered] == [5, 2148074254, 1326]
    assert reordered[2].fields["s-ip"] == "2001:db8:77::1" and reordered[2].fields["sc-status"] == 401


def test_iis_without_a_directive_and_an_ipv6_server_address_is_still_read():
    line = ("2025-01-09 07:00:00 2001:db8::20 GET /certsrv - 443 - 2001:db8::9 CiscoRA+1.0 - 401 1 1326 3 "
            "2025-01-09 07:00:01 2001:db8::20 POST /certsrv/certfnsh.asp - 443 X\\ra 2001:db8::9 CiscoRA+1.0 - 200 0 0 16000")
    result = analyze_texts([("pasted", line)])
    assert sorted(c.code for c in result.causes()) == ["CA_AUTH", "CA_TIMEOUT"]


# --- item 10: curl's code first, the wording second ------------------------------------------------

@pytest.mark.parametrize("rc,why,code", [
    (28, "Resolving timed out after 5519 milliseconds", "CA_DNS"),
    (28, "SSL connection timeout", "CA_TIMEOUT"),
    (28, "Connection timed out after 10001 milliseconds", "CA_TIMEOUT"),
    (28, "Operation timed out after 10000 milliseconds with 0 out of 0 bytes received", "CA_TIMEOUT"),
    (28, "Timeout was reached", "CA_TIMEOUT"),
    (22, "The requested URL returned error: 401 Unauthorized", "CA_AUTH"),
    (22, "The requested URL returned error: 403", "CA_AUTH"),
    (22, "The requested URL returned error: 500 Internal Server Error", "CA_HTTP"),
    (22, "HTTP response code said error", "CA_HTTP"),
    (6, "Could not resolve host: subca.hq.example.net", "CA_DNS"),
    (6, "Couldn't resolve host 'subca'", "CA_DNS"),
    (6, "Couldn't resolve host name", "CA_DNS"),
    (7, "Failed to connect to ca02 port 8443: Connection refused", "CA_CONNECT"),
    (7, "Failed to connect to ca02 port 8443 after 3 ms: Could not connect to server", "CA_CONNECT"),
    (35, "OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to ca02:443", "CA_TLS"),
    (35, "error:0A00010B:SSL routines::wrong version number", "CA_TLS"),
    (51, "SSL: certificate subject name 'web01' does not match target host name 'ca.example.org'",
     "CA_TLS_NAME_MISMATCH"),
    (51, "SSL peer certificate or SSH remote key was not OK", "CA_TLS_NAME_MISMATCH"),
    (60, "SSL certificate problem: self signed certificate", "CA_TLS_SELF_SIGNED"),
    (60, "SSL certificate problem: self-signed certificate in certificate chain", "CA_TLS_UNTRUSTED"),
    (60, "SSL certificate problem: unable to get issuer certificate", "CA_TLS_UNTRUSTED"),
    (60, "SSL certificate problem: unable to verify the first certificate", "CA_TLS_UNTRUSTED"),
    (60, "SSL certificate problem: certificate has expired", "CA_TLS_EXPIRED"),
    (60, "Peer's Certificate issuer is not recognized.", "CA_TLS_UNTRUSTED"),
    (60, "SSL: no alternative certificate subject name matches target host name 'ca'", "CA_TLS_NAME_MISMATCH"),
    (60, "SSL certificate problem: hostname mismatch", "CA_TLS_NAME_MISMATCH"),
    (56, "Recv failure: Connection reset by peer", "CA_CONNECT"),
    (77, "error setting certificate verify locations:  CAfile: /etc/ra/ca.pem CApath: none", "CONFIG"),
    (99, "something new", "CERTSRV"),
])
def test_curl_return_code_first_wording_second(rc, why, code):
    got, cause, _fix, evidence = curl_meaning(rc, why, "login_to_certsrv_ca")
    assert got == code and cause and evidence["curl_code"] == str(rc)


# --- item 11: one root cause first, consequences counted under it ------------------------------------

def test_one_fault_in_three_logs_is_one_cause_with_its_consequences_counted():
    result = analyze_paths([SAMPLES / "ca_timeout_case"])
    causes = result.causes()
    assert [c.code for c in causes] == ["CA_TIMEOUT"], result.to_text()
    cause = causes[0]
    assert len(cause.hits) == 4  # four retries, four different milliseconds: one cause
    counts = {(code, sig): n for code, sig, n in cause.consequence_counts()}
    assert counts[("RA_NOT_READY", "access_503")] == 4
    assert counts[("CAPF_CA_COMM_FAILURE", "capf_rv")] == 4
    assert counts[("RA_EST_ERROR", "est_rc")] == 4
    assert not any(h.code == "UNKNOWN_ERROR" for h in result.hits)  # "URL used:" is context, at any level
    assert cause.evidence["url"].endswith("/certsrv/certfnsh.asp") and cause.evidence["phase"] == "enroll"
    text = result.to_text()
    assert "1 cause(s) found" in text and "x4" in text and "consequence line(s)" in text
    doc = json.loads(CliRunner().invoke(main_group, ["logs", "analyze", "--json", str(SAMPLES / "ca_timeout_case")]).output)
    assert [c["code"] for c in doc["causes"]] == ["CA_TIMEOUT"] and doc["causes"][0]["count"] == 4


# --- item 13: CAPF traces across midnight ---------------------------------------------------------

def test_a_wait_across_midnight_is_positive():
    cause = analyze_paths([SAMPLES / "capf_midnight_rv35.log"]).causes()[0]
    assert cause.evidence["waited_s"] == 10.043 and "waited 10.043 s" in cause.cause
    timeline = build_timeline("SEPA1B2C3D4E5F6", [SAMPLES / "capf_midnight_rv35.log"], day="2024-12-31",
                              utc_offset="Z")
    times = [e.time for e in timeline.events]
    assert times[0].date() == dt.date(2024, 12, 31) and times[-1].date() == dt.date(2025, 1, 1)
    assert times == sorted(times)


# --- item 14: trace by request ----------------------------------------------------------------------

def test_trace_of_the_original_logs_takes_only_what_ties_to_the_device():
    folder = SAMPLES / "fleet_original"
    alone = build_timeline("SEP333333333333", [folder], day="2025-06-10", utc_offset="Z")
    assert {e.tier for e in alone.events} == {"CAPF", "CA"}
    assert alone.as_dict()["req_ids"] == [203]
    assert len([e for e in alone.events if e.tier == "CA"]) == 5
    # Two phones enrolling in the same second through one RA: nothing tells their IIS lines apart,
    # so neither timeline takes them (no other device's requests in a phone's timeline).
    for device in ("SEP111111111111", "SEP222222222222"):
        overlapping = build_timeline(device, [folder], day="2025-06-10", utc_offset="Z")
        assert {e.tier for e in overlapping.events} == {"CAPF"}
        assert all(device in e.text for e in overlapping.events)


def test_trace_follows_the_request_id_through_our_logs():
    timeline = build_timeline("SEP0A1B2C3D4E03", [SAMPLES / "ca_timeout_case"], day="2025-06-10", utc_offset="Z")
    doc = timeline.as_dict()
    assert doc["request_ids"] == ["5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"]
    assert {e["tier"] for e in doc["events"]} == {"CAPF", "RA"}
    assert not any(other in e["text"] for e in doc["events"] for other in
                   ("SEP0A1B2C3D4E01", "SEP0A1B2C3D4E02", "SEP0A1B2C3D4E04", "7d1e2f30a4b5c6d7e8f9a0b1c2d3e4f5",
                    "0b9f4e21c3d5a7b9e1f3a5c7d9e1f3a5", "e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9"))
    assert any("access.log" in e["source"] and " 503 " in e["text"] for e in doc["events"])
    assert any(e["code"] == "CA_TIMEOUT" for e in doc["events"])
