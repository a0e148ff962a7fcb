"""The open-loop fleet's schedule (``phone.fleet.arrival_offsets``): evenly spaced or Poisson
arrivals at the rate asked, the same for the same seed, and the report's percentiles."""

from __future__ import annotations

import pytest

from onlineca.phone.fleet import arrival_offsets, percentile


def test_fixed_arrivals_are_evenly_spaced_from_zero() -> None:
    assert arrival_offsets(4, 8.0, "fixed") == [0.0, 0.125, 0.25, 0.375]


def test_poisson_arrivals_repeat_for_a_seed_and_keep_the_rate_on_average() -> None:
    first = arrival_offsets(20_000, 100.0, "poisson", seed=7)
    assert first == arrival_offsets(20_000, 100.0, "poisson", seed=7)
    assert first != arrival_offsets(20_000, 100.0, "poisson", seed=8)
    assert first[0] == 0.0 and first == sorted(first)
    # 19,999 exponential gaps of mean 10 ms: their mean is within 5% of it far beyond chance
    assert first[-1] / (len(first) - 1) == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize(("rate", "arrival"), [(0.0, "fixed"), (-1.0, "poisson"), (1.0, "burst")])
def test_a_rate_that_is_not_positive_or_an_unknown_arrival_is_refused(rate: float, arrival: str) -> None:
    with pytest.raises(ValueError):
        arrival_offsets(3, rate, arrival)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50.0, 90.0, 99.0)
