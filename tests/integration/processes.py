"""Real server processes for the tests that kill them or run several side by side.

``config_file`` writes a TOML configuration (JSON scalars and lists are valid TOML values);
``Server`` starts ``python -m onlineca --config FILE <tier> serve ...`` and waits for its
readiness line on stderr (what ``serve_until_signal`` prints), ``kill9`` ends it without a chance
to clean up, ``stop`` with SIGTERM.  Nothing here sleeps to synchronise: readiness is the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def config_file(path: Path, sections: dict[str, dict[str, Any]], top: dict[str, Any] | None = None) -> Path:
    """A TOML file with ``top`` keys, then one table per section (``[[ca.templates]]`` as lists
    of tables under the key ``"ca.templates"``)."""
    lines = [f"{k} = {_toml(v)}" for k, v in (top or {}).items()]
    for name, values in sections.items():
        if isinstance(values, list):
            for table in values:
                lines.append(f"\n[[{name}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
            continue
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@dataclass
class Server:
    """One ``onlineca`` server process."""

    config: Path
    args: list[str]
    ready: str                      # the start of its readiness line
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    line: str = ""
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 90) -> str:
        """Start it and return its readiness line."""
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "onlineca", "--config", str(self.config), *self.args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env)
        assert self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise RuntimeError(f"{' '.join(self.args)} ended before it was ready: {''.join(self.log)[-3000:]}")
                text = raw.decode(errors="replace")
                self.log.append(text)
                if text.startswith(self.ready):
                    self.line = text.strip()
                    break
        self._reader = asyncio.get_running_loop().create_task(self._drain())
        return self.line

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            raw = await self.proc.stderr.readline()
            if not raw:
                return
            self.log.append(raw.decode(errors="replace"))
            del self.log[:-200]

    @property
    def address(self) -> str:
        """``host:port`` from a readiness line such as ``CAPF serving 127.0.0.1:41234 (...``."""
        return self.line.split()[2].rstrip(",")

    async def kill9(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        await self._done()

    async def stop(self, timeout: float = 30) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._done()

    async def _done(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
            self._reader = None
