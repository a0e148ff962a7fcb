"""Many simulated phones at once: N phones, at most C sessions in flight, per-session latency.

``make_fleet`` builds phones named like real ones (``SEP`` + 12 hex digits), in memory or each in
its own folder, optionally with a ``KeyPool`` of keys made ahead (so a benchmark measures CAPF,
the RA and the CA rather than key generation here), speaking the extended flow, the public flow,
or a mix (every other phone public).  ``run_fleet`` checks every phone in with a
concurrency bound (a closed loop: a phone starts when another ends) and returns a
``FleetReport``: each phone's ``SessionResult``, the counts by outcome, devices per second and
latency percentiles.  ``run_open_loop`` starts the phones at a fixed arrival rate instead (an open
loop: Poisson or evenly spaced arrivals from ``arrival_offsets``, seeded, whatever the servers
answer), measures each latency from the phone's *scheduled* arrival (a late start counts against
the latency, never hides it) and reports how far the load client itself fell behind its schedule.
It reports what happened; it never retries beyond what a phone itself does (``client.check_in``)
and never hides a failure.
"""

from __future__ import annotations

import asyncio
import math
import random
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


Arrival = str  # "poisson" (exponential gaps) or "fixed" (evenly spaced)


def arrival_offsets(count: int, rate: float, arrival: Arrival = "poisson", seed: int = 0) -> list[float]:
    """Seconds from the start at which each of ``count`` phones is due: ``rate`` arrivals a second,
    evenly spaced ("fixed", the first at 0) or a Poisson process ("poisson": exponential gaps drawn
    from a generator seeded with ``seed``, so a run can be repeated)."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if arrival == "fixed":
        return [i / rate for i in range(count)]
    if arrival != "poisson":
        raise ValueError(f"arrival must be poisson or fixed, not {arrival!r}")
    draw = random.Random(seed)
    offsets, at = [], 0.0
    for _ in range(count):
        offsets.append(at)
        at += draw.expovariate(rate)
    return offsets


@dataclass
class OpenLoop:
    """How an open-loop run was paced: what was asked, and how late each phone really started."""

    rate: float
    arrival: Arrival
    seed: int
    lags: list[float]  # per phone, in the order of the results: its start minus its scheduled arrival
    last_arrival: float  # seconds from the start to the last phone's actual start

    def summary(self, count: int) -> dict[str, object]:
        return {"rate": self.rate, "arrival": self.arrival, "seed": self.seed,
                # arrivals per second over the arrival window (n phones start in n - 1 gaps)
                "achieved_rate": round((count - 1) / self.last_arrival, 2) if count > 1 and self.last_arrival > 0
                else None,
                "lag_p50_ms": round(percentile(self.lags, 50) * 1000, 2),
                "lag_p99_ms": round(percentile(self.lags, 99) * 1000, 2),
                "lag_max_ms": round(max(self.lags, default=0.0) * 1000, 2)}


@dataclass
class FleetReport:
    results: list[SessionResult]
    seconds: float
    concurrency: int
    cpu_seconds: float = 0.0  # this process's CPU over the sessions: the load client's own cost
    open_loop: OpenLoop | None = None  # set by run_open_loop

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
        """Each session's seconds; in an open loop from its scheduled arrival (start lag included)."""
        if self.open_loop is None:
            return [r.seconds for r in self.results]
        return [r.seconds + lag for r, lag in zip(self.results, self.open_loop.lags, strict=True)]

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
        extra: dict[str, object] = {} if self.open_loop is None else {
            "open_loop": self.open_loop.summary(len(self.results))}
        return {
            "devices": len(self.results), "ok": self.ok, "failed": len(self.failed), "outcomes": self.outcomes,
            "by_flow": self.by_flow,
            "concurrency": self.concurrency, "seconds": round(self.seconds, 3),
            "devices_per_second": round(self.ok / self.seconds, 2) if self.seconds > 0 else 0.0,
            "latency_p50": round(percentile(lat, 50), 4), "latency_p90": round(percentile(lat, 90), 4),
            "latency_p99": round(percentile(lat, 99), 4), "latency_max": round(max(lat), 4) if lat else 0.0,
            "client_cpu_seconds": round(self.cpu_seconds, 3), **extra,
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


async def run_open_loop(members: Sequence[Member], target: Target, *, rate: float, arrival: Arrival = "poisson",
                        seed: int = 0, retries: int = 3, comm_retry_delay: float = 30.0,
                        max_retry_delay: float | None = None,
                        on_result: Callable[[Member, SessionResult], None] | None = None,
                        faults: Faults = NO_FAULTS) -> FleetReport:
    """Start the phones at ``rate`` a second (``arrival_offsets``), each at its time whether or not
    earlier ones have finished: no bound on sessions in flight (``concurrency`` in the report is the
    most that were).  ``on_result`` sees each phone as it ends."""
    offsets = arrival_offsets(len(members), rate, arrival, seed)
    lags = [0.0] * len(members)
    in_flight = peak = 0

    async def one(index: int, member: Member, due: float) -> SessionResult:
        nonlocal in_flight, peak
        lags[index] = time.monotonic() - due
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            result = await check_in(member.phone, target, member.auth, retries=retries,
                                    comm_retry_delay=comm_retry_delay, max_retry_delay=max_retry_delay,
                                    faults=faults, flow=member.flow)
        finally:
            in_flight -= 1
        if on_result is not None:
            on_result(member, result)
        return result

    started, cpu = time.monotonic(), time.process_time()
    tasks = []
    for index, (member, offset) in enumerate(zip(members, offsets, strict=True)):
        due = started + offset
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule itself, not a synchronisation
        tasks.append(asyncio.create_task(one(index, member, due)))
    results = await asyncio.gather(*tasks)
    last = max((started + offset + lag for offset, lag in zip(offsets, lags, strict=True)), default=started)
    return FleetReport(list(results), time.monotonic() - started, peak, time.process_time() - cpu,
                       OpenLoop(rate, arrival, seed, lags, last - started))


__all__ = ["FleetReport", "Member", "OpenLoop", "arrival_offsets", "device_names", "flow_of", "make_fleet",
           "percentile", "run_fleet", "run_open_loop"]
