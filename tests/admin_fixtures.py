"""The console for tests: served for real (uvicorn, TLS, 127.0.0.1) from an event loop in a thread,
with one account per role, their passwords and API tokens, and ``requests`` sessions that log in
through the login form like a browser (cookies, CSRF token from the page).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from onlineca.config import Config, load_config
from onlineca.service import accounts
from onlineca.service.core import Actor, Services

T = TypeVar("T")
ROLES = ("admin", "operator", "viewer")
PASSWORDS = {role: f"{role}-Passw0rd-for-tests" for role in ROLES}
SETUP = Actor("test-setup", "admin", "cli")


def screenshots_dir() -> Path:
    """Where the browser tests save a screenshot of each page (git-ignored)."""
    root = Path(__file__).resolve().parents[1]
    path = Path(os.environ.get("ONLINECA_SCREENSHOTS") or root / "test-artifacts" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class LoopThread:
    """An event loop in a daemon thread: servers started on it keep serving while the test's
    own thread makes blocking requests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="console-loop")
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Console:
    url: str
    cert: Path
    svc: Services
    loop: LoopThread
    running: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, role: str | None = None) -> requests.Session:
        """A session that sends ``role``'s API token (none: unauthenticated)."""
        s = requests.Session()
        s.verify = str(self.cert)
        s.trust_env = False
        if role:
            s.headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return s

    def browser(self, role: str) -> tuple[requests.Session, str]:
        """A session logged in through the login form, and its CSRF token (read from a page)."""
        s = self.api()
        page = s.get(self.url + "login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = s.post(self.url + "login", data={"csrf": token, "name": role, "password": PASSWORDS[role], "next": "/"},
                   allow_redirects=False)
        assert r.status_code == 303, r.text
        page = s.get(self.url + "account")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        return s, csrf

    def stop(self) -> None:
        self.loop.run(self.running.close())
        self.loop.stop()
        self.svc.close()


def write_config(root: Path, extra: str = "") -> Path:
    """A configuration file for a console whose data dir and database are under ``root``."""
    path = root / "onlineca.toml"
    path.write_text(f'data_dir = "{root / "data"}"\n\n[database]\nurl = "sqlite:///{root / "data" / "db.sqlite"}"\n'
                    + extra)
    return path


def make_accounts(svc: Services) -> dict[str, str]:
    """One account per role (PASSWORDS) and an API token each; returns the tokens."""
    tokens = {}
    for role in ROLES:
        accounts.create_user(svc, SETUP, role, role, PASSWORDS[role])
        tokens[role] = accounts.create_token(svc, SETUP, f"{role}-token", user=role, days=7)[1]
    return tokens


def start_console(config: Config, config_path: Path | None = None, *, loop: LoopThread | None = None,
                  before: Callable[[], Awaitable[Any]] | None = None) -> Console:
    from onlineca.admin.server import start_admin

    svc = Services(config, config_path).migrate()
    tokens = make_accounts(svc)
    loop = loop or LoopThread()
    if before is not None:
        loop.run(before())
    running = loop.run(start_admin(svc, host="127.0.0.1", port=0))
    root = config.paths.ca.root_cert  # the console's certificate is issued by the data dir's CA, if any
    return Console(running.url, root if root.exists() else running.cert, svc, loop, running, tokens)


def console_from_file(path: Path) -> Console:
    return start_console(load_config(path), path)


__all__ = ["PASSWORDS", "ROLES", "SETUP", "Console", "LoopThread", "console_from_file", "make_accounts",
           "screenshots_dir", "start_console", "write_config"]
