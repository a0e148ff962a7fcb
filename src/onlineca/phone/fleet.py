"""Many simulated phones at once: N phones, at most C sessions in flight, per-session latency.

``make_fleet`` builds phones named like real ones (``SEP`` + 12 hex digits), in memory or each in
its own folder, optionally with a ``KeyPool`` of keys made ahead (so a benchmark measures CAPF,
the RA and the CA rather than key generation here), speaking the extended flow, the public flow,
or a mix (every other phone public).  ``run_fleet`` checks every phone in with a
concurrency bound and returns a ``FleetReport``: each phone's ``SessionResult``, the counts by
outcome, devices per second and latency percentiles.  It reports what happened; it never
retries beyond what a phone itself does (``client.check_in``) and never hides a failure.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from onlineca.phone.client import NO_FAULTS, Faults, Flow, PhoneAuth, SessionResult, Target, check_in
from onlineca.phone.device import KeyPool, Phone


@dataclass
class Member:
    """One phone of the fleet and how it authenticates."""

    phone: Phone
    auth: PhoneAuth = field(default_factory=PhoneAuth)
    tags: dict[str, str] = field(default_factory=dict)  # e.g. {"auth": "mic", "key": "EC 256"} for reports
    flow: Flow = "extended"


FleetFlow = Flow | str  # "extended", "public" or "mix"


def flow_of(index: int, flow: FleetFlow) -> Flow:
    """The flow of the ``index``-th phone of a fleet: as given, or every other one public ("mix")."""
    if flow == "mix":
        return "public" if index % 2 else "extended"
    if flow not in ("extended", "public"):
        raise ValueError(f"flow must be extended, public or mix, not {flow!r}")
    return "public" if flow == "public" else "extended"


def device_names(count: int, prefix: str = "SEP", first: int = 0x74A02FC00000) -> list[str]:
    """``count`` names such as ``SEP74A02FC00000``, ``SEP74A02FC00001`` ..."""
    return [f"{prefix}{first + i:012X}" for i in range(count)]


def make_fleet(count: int, *, folder: str | Path | None = None, prefix: str = "SEP", first: int = 0x74A02FC00000,
               key_pool: KeyPool | None = None, auth: PhoneAuth | None = None,
               flow: FleetFlow = "extended") -> list[Member]:
    """``count`` phones (reopened from ``folder/<name>`` when they exist there)."""
    members = []
    for index, name in enumerate(device_names(count, prefix, first)):
        if folder is None:
            phone = Phone(name, key_pool=key_pool)
        else:
            phone = Phone.create(Path(folder) / name, name)
            phone.key_pool = key_pool
        members.append(Member(phone, auth or PhoneAuth(), flow=flow_of(index, flow)))
    return members


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class FleetReport:
    results: list[SessionResult]
    seconds: float
    concurrency: int
    cpu_seconds: float = 0.0  # this process's CPU over the sessions: the load client's own cost

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(Counter(r.outcome for r in self.results))

    @property
    def ok(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failed(self) -> list[SessionResult]:
        return [r for r in self.results if not r.ok]

    @property
    def latencies(self) -> list[float]:
        return [r.seconds for r in self.results]

    @property
    def by_flow(self) -> dict[str, dict[str, int]]:
        """Devices, successes and failures of each flow present."""
        rows: dict[str, dict[str, int]] = {}
        for r in self.results:
            row = rows.setdefault(r.flow, {"devices": 0, "ok": 0, "failed": 0})
            row["devices"] += 1
            row["ok" if r.ok else "failed"] += 1
        return rows

    def summary(self) -> dict[str, object]:
        lat = self.latencies
        return {
            "devices": len(self.results), "ok": self.ok, "failed": len(self.failed), "outcomes": self.outcomes,
            "by_flow": self.by_flow,
            "concurrency": self.concurrency, "seconds": round(self.seconds, 3),
            "devices_per_second": round(self.ok / self.seconds, 2) if self.seconds > 0 else 0.0,
            "latency_p50": round(percentile(lat, 50), 4), "latency_p99": round(percentile(lat, 99), 4),
            "latency_max": round(max(lat), 4) if lat else 0.0,
            "client_cpu_seconds": round(self.cpu_seconds, 3),
        }


async def run_fleet(members: Sequence[Member], target: Target, *, concurrency: int = 16, retries: int = 3,
                    comm_retry_delay: float = 30.0, max_retry_delay: float | None = None,
                    on_result: Callable[[Member, SessionResult], None] | None = None,
                    faults: Faults = NO_FAULTS) -> FleetReport:
    """Check in every phone, at most ``concurrency`` at a time; ``on_result`` sees each as it ends."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(member: Member) -> SessionResult:
        async with gate:
            result = await check_in(member.phone, target, member.auth, retries=retries,
                                    comm_retry_delay=comm_retry_delay, max_retry_delay=max_retry_delay, faults=faults,
                                    flow=member.flow)
        if on_result is not None:
            on_result(member, result)
        return result

    started, cpu = time.monotonic(), time.process_time()
    results = await asyncio.gather(*(one(m) for m in members))
    return FleetReport(list(results), time.monotonic() - started, concurrency, time.process_time() - cpu)


__all__ = ["FleetReport", "Member", "device_names", "flow_of", "make_fleet", "percentile", "run_fleet"]
