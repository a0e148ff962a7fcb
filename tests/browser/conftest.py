"""The browser tests' shared pieces: Debian's Chromium driven by Selenium through Debian's
chromedriver (never a downloaded browser or driver), headless, with a fresh profile each time,
and the folder the screenshots go to (printed at the end of the run).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_fixtures import screenshots_dir

CHROMIUM = os.environ.get("ONLINECA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ONLINECA_CHROMEDRIVER", "/usr/bin/chromedriver")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    path = screenshots_dir()
    shots = sorted(path.glob("*.png"))
    if shots:
        terminalreporter.write_line(f"console screenshots ({len(shots)}): {path}")


def _have_browser() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


@pytest.fixture
def make_browser(tmp_path: Path) -> Iterator[object]:
    """A function that starts a headless Chromium (a laptop-sized window, its own profile)."""
    if not _have_browser():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing under CI: .ci/run installs chromium and "
                        "chromium-driver")
        pytest.skip("no Debian chromium/chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    drivers = []

    def start(name: str = "browser") -> webdriver.Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tmp_path / f"profile-{name}-{len(drivers)}"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--window-size=1366,900", f"--user-data-dir={profile}"):
            options.add_argument(arg)
        # The console's certificate is issued by the lab's own CA, which this fresh profile does not trust.
        options.accept_insecure_certs = True
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        driver.set_page_load_timeout(60)
        drivers.append((driver, profile))
        return driver

    yield start
    for driver, profile in drivers:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
