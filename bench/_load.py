"""The enrollment load loop the EST and RA benches share: ``concurrency`` workers drain a list of
CSRs through one EST client and record each request's latency."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any


async def enroll_all(est: Any, csrs: list, concurrency: int) -> tuple[list[float], float]:
    """(sorted latencies in seconds, elapsed seconds) of ``est.simpleenroll`` over every CSR."""
    queue = list(csrs)
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            csr = queue.pop()
            t0 = time.perf_counter()
            await est.simpleenroll(csr)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return latencies, elapsed


def percentile_ms(latencies: list[float], q: float) -> float:
    if q == 0.5:
        return round(statistics.median(latencies) * 1000, 1)
    return round(latencies[max(0, int(len(latencies) * q) - 1)] * 1000, 1)
