"""The console's REST API, served for real (uvicorn, TLS, 127.0.0.1): every operation of the OpenAPI
document exercised, the roles matrix (a viewer changes nothing; nobody without credentials gets
anything), problem details with our codes, sessions with CSRF, tokens scoped and expiring, login
throttling, body limits, and secrets kept out of the database and the audit log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from admin_fixtures import PASSWORDS, Console, console_from_file, write_config
from onlineca import pki
from onlineca.ca.engine import CAEngine, init_ca
from onlineca.config import load_config
from onlineca.store import AdminToken, AdminUser, AuditEntry, Database

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "SEPAA0000000001"
TEMPLATES = """
[[ca.templates]]
name = "CiscoRA"

[[ca.templates]]
name = "Approve"
manager_approval = true
subject_from_request = true
"""


def _csr(cn: str) -> str:
    key = pki.generate_key("ec", 256)
    return pki.csr_pem(pki.build_csr(key, subject=f"CN={cn}")).decode()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    path = write_config(root, TEMPLATES)
    config = load_config(path)
    init_ca(config, config.data_path)
    db = Database(config.database_url)
    db.migrate()
    engine = CAEngine(config, config.data_path, db)
    for i in range(3):  # three requests waiting for a certificate manager
        engine.submit("ciscora", _csr(f"SEPPENDING{i:05d}"), "CertificateTemplate:Approve")
    db.dispose()
    c = console_from_file(path)
    yield c
    c.stop()


def _ops(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


# Each operation of the document with a request that must succeed as admin, in an order that works
# (made before it is read, read before it is deleted).  (method, path template, url, body, content type)
CALLS: list[tuple[str, str, str, Any, str | None]] = [
    ("GET", "/api/me", "/api/me", None, None),
    ("POST", "/api/accounts", "/api/accounts", {"name": "carol", "role": "viewer"}, None),
    ("GET", "/api/accounts", "/api/accounts", None, None),
    ("GET", "/api/accounts/{name}", "/api/accounts/carol", None, None),
    ("PATCH", "/api/accounts/{name}", "/api/accounts/carol", {"role": "operator"}, None),
    ("POST", "/api/tokens", "/api/tokens", {"name": "ci", "role": "viewer", "days": 2}, None),
    ("GET", "/api/tokens", "/api/tokens?user=*", None, None),
    ("POST", "/api/profiles", "/api/profiles", {"name": "lab", "auth_mode": "By Null String", "deadline_days": 5},
     None),
    ("GET", "/api/profiles", "/api/profiles", None, None),
    ("GET", "/api/profiles/{name}", "/api/profiles/lab", None, None),
    ("PATCH", "/api/profiles/{name}", "/api/profiles/lab", {"key_order": "EC Only"}, None),
    ("POST", "/api/devices", "/api/devices", {"name": DEVICE, "profile": "lab", "model": "CP-8845",
                                              "operation": "Install/Upgrade", "auth_mode": "By Authentication String",
                                              "generate_auth_string": True}, None),
    ("GET", "/api/devices", "/api/devices?status=Operation%20Pending&limit=10", None, None),
    ("GET", "/api/devices/{name}", f"/api/devices/{DEVICE}", None, None),
    ("PATCH", "/api/devices/{name}", f"/api/devices/{DEVICE}", {"description": "lobby phone"}, None),
    ("POST", "/api/devices/{name}/operation", f"/api/devices/{DEVICE}/operation",
     {"operation": "Troubleshoot", "deadline": (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y:%m:%d:%H")},
     None),
    ("POST", "/api/devices/import", "/api/devices/import?mode=add",
     "DEVICE NAME,CERTIFICATE OPERATION,AUTHENTICATION MODE\nSEPAA0000000002,Install/Upgrade,By Null String\n"
     "SEPAA0000000003,,\n", "text/csv"),
    ("GET", "/api/devices/export.csv", "/api/devices/export.csv?name=SEPAA*", None, None),
    ("POST", "/api/devices/bulk", "/api/devices/bulk",
     {"names": ["SEPAA0000000002", "SEPAA0000000003"], "action": "operation", "operation": "Delete"}, None),
    ("GET", "/api/devices/{name}/lscs", f"/api/devices/{DEVICE}/lscs", None, None),
    ("GET", "/api/devices/{name}/lscs/{serial}", f"/api/devices/{DEVICE}/lscs/SERIAL", None, None),
    ("GET", "/api/devices/{name}/events", f"/api/devices/{DEVICE}/events?limit=5", None, None),
    ("GET", "/api/devices/{name}/timeline", f"/api/devices/{DEVICE}/timeline?utc_offset=Z", None, None),
    ("GET", "/api/report", "/api/report?expiring_days=60", None, None),
    ("GET", "/api/report.csv", "/api/report.csv", None, None),
    ("GET", "/api/dashboard", "/api/dashboard", None, None),
    ("GET", "/api/ca/requests", "/api/ca/requests?disposition=pending", None, None),
    ("GET", "/api/ca/requests/{req_id}", "/api/ca/requests/1", None, None),
    ("POST", "/api/ca/requests/{req_id}/approve", "/api/ca/requests/1/approve", None, None),
    ("GET", "/api/ca/requests/{req_id}/certificate", "/api/ca/requests/1/certificate", None, None),
    ("POST", "/api/ca/requests/{req_id}/deny", "/api/ca/requests/2/deny", None, None),
    ("POST", "/api/ca/requests/{req_id}/revoke", "/api/ca/requests/1/revoke", {"reason": "superseded"}, None),
    ("GET", "/api/lsc-revocations", "/api/lsc-revocations?state=pending", None, None),
    ("GET", "/api/lsc-revocations.csv", "/api/lsc-revocations.csv", None, None),
    ("POST", "/api/diagnose", "/api/diagnose", {"hops": ["capf"]}, None),
    ("GET", "/api/diagnose", "/api/diagnose", None, None),
    ("GET", "/api/logs/analyze", "/api/logs/analyze", None, None),
    ("POST", "/api/logs/collect", "/api/logs/collect", None, None),
    ("GET", "/api/config", "/api/config", None, None),
    ("PATCH", "/api/config", "/api/config", {"changes": {"capf": {"retry_delay": 120}}}, None),
    ("GET", "/api/config/online-ca", "/api/config/online-ca", None, None),
    ("PUT", "/api/config/online-ca", "/api/config/online-ca", {"template": "CiscoRA", "connect_timeout": 4}, None),
    ("POST", "/api/config/online-ca/test", "/api/config/online-ca/test", {"ca_url": "https://127.0.0.1:9/certsrv"},
     None),
    ("GET", "/api/audit", "/api/audit?action=device.*", None, None),
    ("GET", "/api/audit.csv", "/api/audit.csv", None, None),
    ("DELETE", "/api/tokens/{token_id}", "/api/tokens/TOKEN", None, None),
    ("DELETE", "/api/devices/{name}", "/api/devices/SEPAA0000000003", None, None),
    ("DELETE", "/api/profiles/{name}", "/api/profiles/unused", None, None),
    ("DELETE", "/api/accounts/{name}", "/api/accounts/carol", None, None),
    ("GET", "/api/openapi.json", "/api/openapi.json", None, None),
]
UNSAFE = [c for c in CALLS if c[0] != "GET" and c[1] != "/api/openapi.json"]


def _send(s: Any, console: Console, method: str, url: str, body: Any, ctype: str | None) -> Any:
    if ctype:
        return s.request(method, console.url + url.lstrip("/"), data=body.encode(), headers={"Content-Type": ctype})
    return s.request(method, console.url + url.lstrip("/"), json=body)


def test_every_operation_in_the_openapi_document_is_exercised(console: Console) -> None:
    admin = console.api("admin")
    doc = admin.get(console.url + "api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert _ops(doc) | {("GET", "/api/openapi.json")} == {(m, p) for m, p, *_ in CALLS}
    made: dict[str, Any] = {}
    for method, template, url, body, ctype in CALLS:
        if "SERIAL" in url:  # no LSC was issued in this test: the PEM of an unknown serial is a 404 problem
            r = admin.get(console.url + url.lstrip("/").replace("SERIAL", "abc"))
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", r.text
            continue
        if template == "/api/profiles/{name}" and method == "DELETE":
            admin.post(console.url + "api/profiles", json={"name": "unused"})
        url = url.replace("TOKEN", str(made.get("token_id", 0)))
        r = _send(admin, console, method, url, body, ctype)
        assert 200 <= r.status_code < 300, f"{method} {url}: {r.status_code} {r.text[:500]}"
        if template == "/api/tokens" and method == "POST":
            made["token_id"] = r.json()["info"]["id"]
            assert r.json()["token"].startswith("oca_")
        if template == "/api/devices" and method == "POST":
            assert r.json()["auth_string"] and len(r.json()["auth_string"]) == 6
            made["auth_string"] = r.json()["auth_string"]
        if template == "/api/ca/requests/{req_id}/approve":
            assert r.json()["disposition"] == "issued" and r.json()["resolved_by"] == "admin"
        if template == "/api/ca/requests/{req_id}/certificate":
            assert r.text.startswith("-----BEGIN CERTIFICATE-----")
        if template == "/api/devices/export.csv":
            assert "AUTHENTICATION STRING" not in r.text and "SEPAA0000000002" in r.text
        if template == "/api/logs/collect":
            assert r.content[:2] == b"\x1f\x8b"
    device = admin.get(console.url + f"api/devices/{DEVICE}").json()
    assert device["operation"] == "OPERATION_TROUBLESHOOT" and device["description"] == "lobby phone"
    assert "auth_string" not in device and made["auth_string"] not in json.dumps(device)
    # the auth string is in no answer and no audit entry after its creation
    audit = admin.get(console.url + "api/audit.csv").text
    assert made["auth_string"] not in audit and "device.add" in audit


def test_nobody_gets_anything_without_credentials(console: Console) -> None:
    anon = console.api()
    for method, _template, url, body, ctype in CALLS:
        r = _send(anon, console, method, url.replace("TOKEN", "1").replace("SERIAL", "1"), body, ctype)
        assert r.status_code == 401, f"{method} {url}: {r.status_code}"
        problem = r.json()
        assert problem["code"] == "ADMIN_AUTH" and problem["type"] == "urn:onlineca:problem:ADMIN_AUTH"
    for page in ("/", "/devices", f"/devices/{DEVICE}", "/ca/requests", "/report", "/report.csv", "/audit",
                 "/audit.csv", "/settings/online-ca", "/account", "/users"):
        r = anon.get(console.url + page.lstrip("/"), allow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), page
    assert anon.get(console.url + "static/admin.css").status_code == 200
    assert anon.get(console.url + "login").status_code == 200


def test_a_viewer_cannot_change_anything_through_the_api(console: Console) -> None:
    viewer = console.api("viewer")
    for method, template, url, body, ctype in UNSAFE:
        if template in ("/api/tokens", "/api/tokens/{token_id}") or template.startswith("/api/accounts/{name}"):
            continue  # its own tokens and password: below
        r = _send(viewer, console, method, url.replace("TOKEN", "1"), body, ctype)
        assert r.status_code == 403, f"{method} {url}: {r.status_code} {r.text[:300]}"
        assert r.json()["code"] == "ADMIN_FORBIDDEN"
    assert viewer.get(console.url + f"api/devices/{DEVICE}").status_code == 200
    # its own account only: not another's password, not an admin token, not others' tokens
    assert viewer.patch(console.url + "api/accounts/operator", json={"password": "x" * 12}).status_code == 403
    assert viewer.post(console.url + "api/tokens", json={"name": "up", "role": "admin"}).status_code == 403
    assert viewer.get(console.url + "api/tokens?user=admin").status_code == 403
    r = viewer.post(console.url + "api/tokens", json={"name": "mine", "days": 1})
    assert r.status_code == 201 and r.json()["info"]["role"] == "viewer"
    assert viewer.delete(console.url + f"api/tokens/{r.json()['info']['id']}").json()["revoked"] is True


def test_an_operator_runs_operations_but_not_accounts_or_configuration(console: Console) -> None:
    op = console.api("operator")
    assert op.post(console.url + "api/devices", json={"name": "SEPAA0000000009"}).status_code == 201
    assert op.post(console.url + "api/ca/requests/3/deny").json()["disposition"] == "denied"
    assert op.patch(console.url + "api/config", json={"changes": {"capf": {"retry_delay": 60}}}).status_code == 403
    assert op.post(console.url + "api/accounts", json={"name": "eve", "role": "admin"}).status_code == 403
    assert op.post(console.url + "api/profiles", json={"name": "p2"}).status_code == 403


def test_problems_carry_our_codes(console: Console) -> None:
    admin = console.api("admin")
    r = admin.get(console.url + "api/devices/SEPNOSUCHDEVICE")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "CAPF_DEVICE_UNKNOWN" and "devices list" in r.json()["hint"]
    r = admin.post(console.url + "api/devices", json={"name": "SEPBAD", "rsa_key_size": 1000})
    assert r.status_code == 422 and r.json()["code"] == "CAPF_POLICY" and r.json()["errors"][0]["field"] == "rsa_key_size"
    r = admin.post(console.url + "api/devices", json={"name": "x" * 65})
    assert r.status_code == 422 and r.json()["code"] == "ADMIN_VALIDATION"
    r = admin.post(console.url + "api/devices/import", data=b"DEVICE NAME,NOPE\nSEP1,2\n",
                   headers={"Content-Type": "text/csv"})
    assert r.status_code == 422 and r.json()["code"] == "CAPF_CSV"
    r = admin.post(console.url + "api/ca/requests/1/approve")
    assert r.status_code == 409 and r.json()["code"] == "CA"
    assert admin.get(console.url + "api/nothing-here").json()["code"] == "ADMIN_NOT_FOUND"
    r = admin.post(console.url + "api/devices", data=b"x" * 2_000_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_sessions_need_csrf_tokens_and_cookies_are_strict(console: Console) -> None:
    s, csrf = console.browser("operator")
    cookie = next(c for c in s.cookies if c.name == "__Host-onlineca-session")
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    login = console.api().get(console.url + "login")
    assert "SameSite=strict" in login.headers["set-cookie"] or "samesite=strict" in login.headers["set-cookie"].lower()
    r = s.post(console.url + "api/devices", json={"name": "SEPAA0000000010"})
    assert r.status_code == 403 and r.json()["code"] == "ADMIN_CSRF"
    r = s.post(console.url + "api/devices", json={"name": "SEPAA0000000010"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    r = s.post(console.url + "devices/SEPAA0000000010/delete", data={"csrf": "wrong"})
    assert r.status_code == 403 and "ADMIN_CSRF" in r.text
    r = s.post(console.url + "devices/SEPAA0000000010/delete", data={"csrf": csrf}, allow_redirects=False)
    assert r.status_code == 303
    r = s.get(console.url)
    assert "content-security-policy" in r.headers and r.headers["x-frame-options"] == "DENY"


def test_login_is_throttled(console: Console) -> None:
    s = console.api()
    import re
    for _ in range(5):
        page = s.get(console.url + "login").text
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        r = s.post(console.url + "login", data={"csrf": token, "name": "viewer", "password": "wrong-password"})
        assert r.status_code == 401
    page = s.get(console.url + "login").text
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = s.post(console.url + "login", data={"csrf": token, "name": "viewer", "password": PASSWORDS["viewer"]})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "ADMIN_THROTTLED" in r.text


def test_tokens_expire_and_are_hashed_at_rest(console: Console) -> None:
    admin = console.api("admin")
    made = admin.post(console.url + "api/tokens", json={"name": "short", "days": 1}).json()
    with console.svc.session() as s:
        row = s.get(AdminToken, made["info"]["id"])
        assert row.digest != made["token"] and made["token"] not in row.digest
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        hashes = [u.password_hash for u in s.scalars(select(AdminUser))]
    assert all(h.startswith("scrypt$") for h in hashes) and not any(p in h for p in PASSWORDS.values() for h in hashes)
    r = console.api().get(console.url + "api/me", headers={"Authorization": f"Bearer {made['token']}"})
    assert r.status_code == 401
    with console.svc.session() as s:
        s.execute(update(AdminToken).where(AdminToken.id == made["info"]["id"]).values(
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)))
    assert console.api().get(console.url + "api/me", headers={"Authorization": f"Bearer {made['token']}"}).ok


def test_the_command_line_and_the_api_write_one_audit_log(console: Console) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    path = console.svc.config_path
    out = subprocess.run([sys.executable, "-m", "onlineca", "--config", str(path), "capf", "devices", "add",
                          "SEPAA0000000020", "--auth-string", "987654", "--operation", "Install/Upgrade"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    entries = console.api("viewer").get(console.url + "api/audit?target=device:SEPAA0000000020").json()["items"]
    assert [(e["source"], e["action"], e["role"]) for e in entries] == [("cli", "device.add", "admin")]
    assert entries[0]["after"]["auth_string_set"] == "***"
    with console.svc.session() as s:
        for e in s.scalars(select(AuditEntry)):
            text = e.before + e.after
            assert "987654" not in text and not any(p in text for p in PASSWORDS.values())
    api_entries = console.api("viewer").get(console.url + "api/audit?source=api").json()["items"]
    assert api_entries and all(e["address"] == "127.0.0.1" for e in api_entries)
