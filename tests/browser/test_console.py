"""The console in a real browser (Debian's Chromium, headless, through Selenium) against the real
chain: our CA, the RA and CAPF from ``onlineca.lab`` on 127.0.0.1, a simulated phone.

Each role logs in; an operator adds a device, starts Install/Upgrade on its CAPF page, a phone
(``onlineca.phone``) completes it, and the dashboard and the device page show it; an operator
approves a pending CA request; a viewer can change nothing, neither through the pages nor the
API; an admin walks every page.  A screenshot of each page lands in the screenshots folder
(``$ONLINECA_SCREENSHOTS`` or ``test-artifacts/screenshots/``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from admin_fixtures import PASSWORDS, Console, LoopThread, screenshots_dir, start_console
from onlineca import pki
from onlineca.ca.engine import CAEngine
from onlineca.config import load_config
from onlineca.lab import LAB_CONFIG, Servers, make_lab, prepare_folder, start_servers
from onlineca.phone.client import PhoneAuth, Target, phone_ssl_context, run_session
from onlineca.phone.device import Phone
from onlineca.store import Database

pytestmark = pytest.mark.slow
DEVICE = "SEP0A1B2C3D4E5F"


@dataclass
class Lab:
    root: Path
    servers: Servers
    console: Console

    def target(self) -> Target:
        assert self.servers.capf is not None
        return Target(self.servers.capf.host, self.servers.capf.port, phone_ssl_context(self.root / "ca" / "root.pem"),
                      read_timeout=60.0, keepalive=5.0)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("browser-lab") / "lab"
    prepare_folder(root)
    config, _mic = make_lab(root)
    # A template that waits for a certificate manager, next to the lab's own.
    templates = [*config.ca.templates, config.ca.templates[0].model_copy(update={"name": "Approve",
                                                                                 "manager_approval": True})]
    config = config.model_copy(update={"ca": config.ca.model_copy(update={"templates": templates})})
    loop = LoopThread()
    servers = Servers()
    loop.run(start_servers(config, root, servers, default_ports=False))
    path = root / LAB_CONFIG  # the lab's whole configuration, the extra template included
    console = start_console(load_config(path), path, loop=loop)
    yield Lab(root, servers, console)
    console.loop.run(console.running.close())
    loop.run(servers.close())
    loop.stop()
    console.svc.close()


def shot(driver: Any, name: str) -> Path:
    """The whole page (the window grown to its height for the shot), laptop width."""
    path = screenshots_dir() / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, min(max(900, height + 140), 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1366, 900)
    return path


def submit(driver: Any, css: str, arrived: Callable[[Any], Any] | None = None) -> None:
    """Click a form's button and wait until the answer page has replaced this one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(driver, 30).until(ec.staleness_of(old))
    if arrived is not None:
        WebDriverWait(driver, 30).until(arrived)


def login(driver: Any, lab: Lab, role: str) -> None:
    from selenium.webdriver.common.by import By
    driver.get(lab.console.url + "login")
    driver.find_element(By.ID, "name").send_keys(role)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[role])
    submit(driver, "form[action='/login'] button[type=submit]")
    assert driver.find_element(By.CSS_SELECTOR, ".who .role").text == role


def test_each_role_logs_in(lab: Lab, make_browser: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By
    driver = make_browser("roles")
    driver.get(lab.console.url)
    assert "/login" in driver.current_url
    shot(driver, "login")
    for role in ("admin", "operator", "viewer"):
        login(driver, lab, role)
        assert driver.find_element(By.TAG_NAME, "h1").text == "Dashboard"
        nav = driver.find_element(By.CSS_SELECTOR, "nav[aria-label=Main]").text
        assert ("Accounts" in nav) == (role == "admin")
        submit(driver, "form[action='/logout'] button")
        assert "/login" in driver.current_url
    # a wrong password is refused on the page, with the same words for any account name
    driver.find_element(By.ID, "name").send_keys("admin")
    driver.find_element(By.ID, "password").send_keys("not-the-password")
    submit(driver, "form[action='/login'] button[type=submit]")
    assert "wrong account name or password" in driver.find_element(By.CSS_SELECTOR, "[role=alert]").text


def _status_count(driver: Any, status: str) -> int:
    from selenium.webdriver.common.by import By
    rows = driver.find_elements(By.CSS_SELECTOR, f"#by-status tr[data-status='{status}'] td.num")
    return int(rows[0].text) if rows else 0


def test_an_operator_adds_a_device_starts_an_operation_and_watches_a_phone_complete_it(
        lab: Lab, make_browser: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    driver = make_browser("operator")
    login(driver, lab, "operator")
    driver.get(lab.console.url + "devices/new")
    driver.find_element(By.ID, "name").send_keys(DEVICE)
    driver.find_element(By.ID, "model").send_keys("CP-8845")
    Select(driver.find_element(By.ID, "auth_mode")).select_by_visible_text("By Null String")
    Select(driver.find_element(By.ID, "key_order")).select_by_visible_text("EC Only")
    shot(driver, "device-new")
    submit(driver, "form.device button[type=submit]")
    assert driver.find_element(By.ID, "device-name").text == DEVICE
    assert driver.find_element(By.ID, "capf-status").text == "None"

    # Start Install/Upgrade on the device's CAPF section, as on the vendor's phone page.
    Select(driver.find_element(By.ID, "operation")).select_by_visible_text("Install/Upgrade")
    submit(driver, "form.device button[type=submit]")
    assert driver.find_element(By.ID, "capf-status").text == "Operation Pending"
    assert driver.find_element(By.ID, "deadline").get_attribute("value")  # "Operation Completes By" set
    driver.get(lab.console.url)
    before = _status_count(driver, "CERT_STATUS_UPGRADE_SUCCESS")
    assert _status_count(driver, "CERT_STATUS_OPERATION_PENDING") >= 1

    # The phone comes in and gets its LSC through CAPF -> RA -> CA.
    phone = Phone.create(lab.root / "phones" / DEVICE, DEVICE)
    result = lab.console.loop.run(run_session(phone, lab.target(), PhoneAuth("null")))
    assert result.outcome == "installed", result

    driver.refresh()
    assert _status_count(driver, "CERT_STATUS_UPGRADE_SUCCESS") == before + 1
    today = driver.find_elements(By.CSS_SELECTOR, "#per-day tbody tr")[-1].find_elements(By.TAG_NAME, "td")
    assert int(today[1].get_attribute("textContent")) >= 1  # a first install today
    assert driver.find_element(By.ID, "expiring").get_attribute("role") == "img"
    shot(driver, "dashboard")

    driver.get(lab.console.url + f"devices/{DEVICE}")
    assert driver.find_element(By.ID, "capf-status").text == "Upgrade Success"
    history = driver.find_element(By.ID, "lsc-history").text
    assert "installed" in history and result.lsc_serial in history
    timeline = driver.find_element(By.ID, "timeline").text
    assert "CAPF" in timeline and "RA" in timeline  # the session across the tiers, from logs trace
    shot(driver, "device")


def test_an_operator_approves_a_pending_ca_request(lab: Lab, make_browser: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By
    config = lab.console.svc.config
    ca_db = Database(config.admin.ca_database_url.get_secret_value())
    key = pki.generate_key("ec", 256)
    csr = pki.csr_pem(pki.build_csr(key, subject="CN=SEPAPPROVE000001")).decode()
    outcome = CAEngine(config, lab.root, ca_db).submit("ciscora", csr, "CertificateTemplate:Approve")
    ca_db.dispose()
    assert outcome.disposition == "pending"
    driver = make_browser("approver")
    login(driver, lab, "operator")
    driver.get(lab.console.url + "ca/requests?disposition=pending")
    row = driver.find_element(By.ID, f"req-{outcome.req_id}")
    assert "pending" in row.text
    shot(driver, "ca-requests")
    submit(driver, f"#req-{outcome.req_id} button[aria-label='Approve request {outcome.req_id}']")
    assert f"ReqID {outcome.req_id}: issued" in driver.find_element(By.CSS_SELECTOR, ".flash").text
    assert "issued" in driver.find_element(By.ID, f"req-{outcome.req_id}").text
    assert "operator" in driver.find_element(By.ID, f"req-{outcome.req_id}").text


def test_a_viewer_cannot_change_anything(lab: Lab, make_browser: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By
    driver = make_browser("viewer")
    login(driver, lab, "viewer")
    driver.get(lab.console.url + "devices")
    assert not driver.find_elements(By.CSS_SELECTOR, "input[name=names]")
    assert not driver.find_elements(By.CSS_SELECTOR, "a[href='/devices/new']")
    driver.get(lab.console.url + f"devices/{DEVICE}")
    assert not driver.find_element(By.ID, "operation").is_enabled()
    assert not driver.find_elements(By.CSS_SELECTOR, "form.device button[type=submit]")
    driver.get(lab.console.url + "ca/requests")
    assert not driver.find_elements(By.CSS_SELECTOR, "button[aria-label^=Approve]")
    driver.get(lab.console.url + "settings/online-ca")
    assert not driver.find_elements(By.ID, "save") and not driver.find_elements(By.ID, "test-connection")
    driver.get(lab.console.url + "devices/new")
    assert "403" in driver.find_element(By.TAG_NAME, "h1").text
    # a forged form, with the viewer's own valid CSRF token, is refused by the server
    driver.get(lab.console.url + f"devices/{DEVICE}")
    driver.execute_script("""
        const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
        const c = document.createElement('input'); c.name = 'csrf'; c.value = arguments[1]; f.appendChild(c);
        document.body.appendChild(f); f.submit();""", f"/devices/{DEVICE}/delete",
        driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] input[name=csrf]").get_attribute("value"))
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".problem"))
    assert "ADMIN_FORBIDDEN" in driver.find_element(By.CSS_SELECTOR, ".problem").text
    shot(driver, "viewer-forbidden")
    api = lab.console.api("viewer")
    assert api.delete(lab.console.url + f"api/devices/{DEVICE}").status_code == 403
    assert api.post(lab.console.url + f"api/devices/{DEVICE}/operation",
                    json={"operation": "Delete"}).json()["code"] == "ADMIN_FORBIDDEN"
    assert api.get(lab.console.url + f"api/devices/{DEVICE}").json()["status"] == "CERT_STATUS_UPGRADE_SUCCESS"


def test_an_admin_walks_every_page(lab: Lab, make_browser: Callable[..., Any]) -> None:
    from selenium.webdriver.common.by import By
    driver = make_browser("admin")
    login(driver, lab, "admin")
    # The online CA's settings and the RA's start-up checks with each fix.
    driver.get(lab.console.url + "settings/online-ca")
    shot(driver, "online-ca")
    submit(driver, "#test-connection")
    result = driver.find_element(By.ID, "test-result").text
    assert "Connection test: passed" in result and "ca.login" in result and "ca.template" in result
    shot(driver, "online-ca-test")
    template = driver.find_element(By.ID, "template")
    template.clear()
    template.send_keys("CiscoRAA")
    submit(driver, "#test-connection")
    result = driver.find_element(By.ID, "test-result").text
    assert "CA_TEMPLATE" in result and "Fix:" in result
    shot(driver, "online-ca-test-failed")
    # diagnose from the dashboard
    driver.get(lab.console.url)
    submit(driver, "form[action='/diagnose'] button")
    assert "diagnose:" in driver.find_element(By.CSS_SELECTOR, ".flash").text
    assert driver.find_elements(By.CSS_SELECTOR, "#health table tbody tr")
    for path, name in (("devices", "devices"), ("report", "report"), ("audit", "audit"), ("account", "account"),
                       ("users", "users")):
        driver.get(lab.console.url + path)
        assert driver.find_element(By.TAG_NAME, "h1").text
        assert not driver.find_elements(By.CSS_SELECTOR, ".problem")
        shot(driver, name)
    # the audit log shows the page and API changes with who made them
    driver.get(lab.console.url + "audit?action=device.*")
    audit = driver.find_element(By.ID, "audit").text
    assert "operator" in audit and "device.add" in audit and "page" in audit
    # keyboard: the skip link is the first stop and leads to the content
    from selenium.webdriver.common.keys import Keys
    driver.get(lab.console.url + "devices")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert driver.switch_to.active_element.text == "Skip to content"
    # every form control of every page has a label
    for path in ("", "devices", f"devices/{DEVICE}", "devices/new", "ca/requests", "settings/online-ca", "report",
                 "audit", "account", "users"):
        driver.get(lab.console.url + path)
        unlabeled = driver.execute_script("""
            return [...document.querySelectorAll('input:not([type=hidden]), select')]
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name || e.id);""")
        assert unlabeled == [], f"/{path}: {unlabeled}"
