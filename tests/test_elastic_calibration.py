"""The elastic bench's calibration (bench/elastic_calibration.py) on a modelled machine: where
it puts the load, when it lowers the rate, and that it says why when nothing separates the
submodels. The machine model is deterministic: a submodel's latency is its CPU cost divided by
the CPU share the load leaves, plus a fixed part the load does not scale, with a fixed spread."""

import numpy as np
import pytest
from elastic_calibration import FULL_AIM, FULL_MIN, SMALLEST_MISS, SMALLEST_P99, calibrate


class Load:
    level_name = "busy share"


def machine(cost_ms: dict, fixed_ms: float = 0.5, spread: float = 0.2):
    """measure(submodel, rate, level, n): n latencies (s), evenly spread over +-`spread` of the
    median, for the load holding `level` of every CPU."""

    def measure(submodel, rate, level, n):
        median = fixed_ms + cost_ms[submodel] / (1.0 - level)
        return np.linspace(1 - spread, 1 + spread, n) * median * 1e-3
    return measure


def check(cal, measure, smallest="1/4", margin_s=0.001):
    """What calibrate promises when it separated the two."""
    deadline_ms = (1 / cal.rate_hz - margin_s) * 1e3
    assert cal.deadline_ms == pytest.approx(deadline_ms)
    full = np.median(measure("full", cal.rate_hz, cal.level, 100)) * 1e3
    small = measure(smallest, cal.rate_hz, cal.level, 1000) * 1e3
    assert full >= FULL_MIN * deadline_ms
    assert np.percentile(small, 99) <= SMALLEST_P99 * deadline_ms
    assert np.mean(small > deadline_ms) <= SMALLEST_MISS


def test_the_level_makes_full_miss_and_leaves_the_smallest_room():
    measure = machine({"full": 2.0, "1/4": 0.6})
    cal = calibrate(measure, Load(), [100], 0.001, "1/4", 0.05, 0.93, log=lambda s: None)
    assert cal.separated and cal.rate_hz == 100, cal.reason
    check(cal, measure)
    # bisection towards FULL_AIM x the deadline: full's median lands near it
    full = np.median(measure("full", 100, cal.level, 100)) * 1e3
    assert full == pytest.approx(FULL_AIM * cal.deadline_ms, rel=0.05)
    assert cal.probes and {p.submodel for p in cal.probes} == {"full", "1/4"}


def test_a_fixed_cost_too_large_for_the_rate_lowers_the_rate():
    # 6 ms the load does not scale (the pipe to the world, Python) leave 1/4 no room in 9 ms
    measure = machine({"full": 3.0, "1/4": 1.0}, fixed_ms=6.0)
    cal = calibrate(measure, Load(), [100, 30, 20, 10], 0.001, "1/4", 0.05, 0.93, log=lambda s: None)
    assert cal.separated and cal.rate_hz == 30, cal.reason
    check(cal, measure)
    assert "100 Hz did not separate them" in cal.reason


def test_nothing_separates_submodels_of_nearly_equal_cost():
    measure = machine({"full": 1.0, "1/4": 0.9})
    cal = calibrate(measure, Load(), [100, 30], 0.001, "1/4", 0.05, 0.93, log=lambda s: None)
    assert not cal.separated and cal.level is None and cal.rate_hz is None
    assert cal.reason.startswith("no load level separates full and the smallest submodel")
    assert "1/4 itself has p99" in cal.reason  # says why, per rate
    figures = cal.figures()
    assert figures["calibration_separated"] is False and figures["calibration_probes"]


def test_a_load_too_light_for_full_to_miss_stops_at_once():
    measure = machine({"full": 0.5, "1/4": 0.2})
    cal = calibrate(measure, Load(), [10], 0.001, "1/4", 0.05, 0.5, log=lambda s: None)
    assert not cal.separated and "even the heaviest load" in cal.reason


def test_the_smallest_must_fit_under_the_runs_switched_schedule_too():
    """Under steady load the smallest fits; where the load switches on and off (the run's
    schedule) it is late more often: the fit probe is measured switched, so a level where
    switching makes the smallest late is refused, and the probe says it was switched."""
    steady = machine({"full": 2.0, "1/4": 0.6})

    def switched(submodel, rate, level, n):
        lat = steady(submodel, rate, level, n)
        lat[::20] *= 3.0  # every 20th inference meets a load switching on: 5% late
        return lat

    cal = calibrate(steady, Load(), [100], 0.001, "1/4", 0.05, 0.93, log=lambda s: None,
                    measure_switched=switched)
    assert not cal.separated and "late" in cal.reason
    fits = [p for p in cal.probes if p.submodel == "1/4"]
    assert fits and all(p.switched for p in fits)
    assert all(not p.switched for p in cal.probes if p.submodel == "full")
    # Without a switched measure, the steady one serves (as before).
    assert calibrate(steady, Load(), [100], 0.001, "1/4", 0.05, 0.93, log=lambda s: None).separated
