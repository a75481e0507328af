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
    # 7 ms the load does not scale (the pipe to the world, Python) leave 1/4 no room in 9 ms
    measure = machine({"full": 3.0, "1/4": 1.0}, fixed_ms=7.0)
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


class Clock:
    """A fake time.monotonic that a modelled probe advances by the seconds it runs."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def timed(measure, clock, seconds_per_inference: float):
    """The modelled machine with a time cost: a probe takes `seconds_per_inference` each and
    stops at `max_s` with what it has (as the bench's probes do)."""

    def probe(submodel, rate, level, n, max_s=None):
        got = n if max_s is None else min(n, max(1, int(max_s / seconds_per_inference)))
        clock.t += got * seconds_per_inference
        return measure(submodel, rate, level, n)[:got]
    return probe


def test_a_probe_cut_short_by_time_must_have_no_late_inference(monkeypatch):
    import elastic_calibration

    clock = Clock()
    monkeypatch.setattr(elastic_calibration.time, "monotonic", clock)
    steady = machine({"full": 2.0, "1/4": 0.6})
    # 0.4 s per inference (an inference per chunk at 10 Hz): the 800-inference fit probe
    # would take 320 s; it is cut at its time limit and judged on what it got.
    probe = timed(steady, clock, 0.4)
    cal = calibrate(probe, Load(), [100], 0.001, "1/4", 0.05, 0.93, quick=True, log=lambda s: None,
                    until=clock() + 600)
    assert cal.separated, cal.reason
    fits = [p for p in cal.probes if p.submodel == "1/4"]
    assert fits and fits[0].cut_short and fits[0].n < 800
    assert fits[0].p99_ms <= SMALLEST_P99 * cal.deadline_ms  # a cut-short probe needs room too
    assert "time-limited probe" in cal.reason

    def one_late(submodel, rate, level, n, max_s=None):
        lat = probe(submodel, rate, level, n, max_s)
        if submodel == "1/4":
            lat[len(lat) // 2] = 1.0  # one late inference in the short probe
        return lat

    cal = calibrate(one_late, Load(), [100], 0.001, "1/4", 0.05, 0.93, quick=True,
                    log=lambda s: None, until=clock() + 600)
    assert not cal.separated and "1/4 itself" in cal.reason


def test_the_calibration_stops_when_its_time_is_spent(monkeypatch):
    import elastic_calibration

    clock = Clock()
    monkeypatch.setattr(elastic_calibration.time, "monotonic", clock)
    # nothing separates these, so without a bound it would try every rate at full length
    probe = timed(machine({"full": 1.0, "1/4": 0.9}), clock, 0.4)
    start = clock()
    cal = calibrate(probe, Load(), [100, 30, 20, 10], 0.001, "1/4", 0.05, 0.93, log=lambda s: None,
                    until=start + 90)
    assert not cal.separated and cal.out_of_time
    assert "time limit was reached" in cal.reason and cal.figures()["calibration_out_of_time"] is True
    # it overran its limit by at most one probe's rounding (an inference)
    assert clock() - start <= 90 + 0.4 + 1e-9


def test_a_lighter_level_is_tried_where_the_smallest_is_late_at_the_aimed_one():
    """The smallest's tail grows with the load: late 2% of the time at the aimed level, never a
    little lighter. The calibration tries one lighter level (full's median FULL_LIGHT x the
    deadline) before it gives up on the rate."""
    from elastic_calibration import FULL_LIGHT

    steady = machine({"full": 2.0, "1/4": 0.6})
    edge = 0.79  # full's median is ~1.11x the 9 ms deadline here, between FULL_LIGHT and FULL_AIM

    def measure(submodel, rate, level, n):
        lat = steady(submodel, rate, level, n)
        if submodel == "1/4" and level > edge:
            lat[::50] = 0.05  # 2% late
        return lat

    cal = calibrate(measure, Load(), [100], 0.001, "1/4", 0.05, 0.93, log=lambda s: None)
    assert cal.separated and cal.level < edge, cal.reason
    full = np.median(steady("full", 100, cal.level, 100)) * 1e3
    assert full >= FULL_LIGHT * cal.deadline_ms * 0.97
    fits = [p for p in cal.probes if p.submodel == "1/4"]
    assert len(fits) == 2 and fits[0].miss_rate > 0.01 and fits[1].miss_rate == 0


def test_between_a_level_too_heavy_for_the_smallest_and_one_too_light_for_full():
    """Full's median over a hundred inferences is noisy: at the lighter level its check came
    back under the deadline once, while the smallest is late at the aimed level. The
    calibration bisects between the two before it gives up on the rate."""
    from elastic_calibration import SPLIT_STEPS

    steady = machine({"full": 2.0, "1/4": 0.6})
    late_above, noisy_below = 0.79, 0.78  # the lighter level (~0.777) is below both

    def measure(submodel, rate, level, n):
        lat = steady(submodel, rate, level, n)
        if submodel == "1/4" and level > late_above:
            lat[::50] = 0.05  # 2% late
        if submodel == "full" and n == 100 and level < noisy_below:
            lat = lat * 0.9  # full's check: a quiet stretch
        return lat

    cal = calibrate(measure, Load(), [100], 0.001, "1/4", 0.05, 0.93, quick=True,
                    log=lambda s: None)
    assert SPLIT_STEPS >= 1
    assert cal.separated and noisy_below <= cal.level <= late_above, cal.reason
    assert len([p for p in cal.probes if p.submodel == "1/4"]) == 3  # aimed, lighter, between


def test_a_lighter_level_is_tried_for_a_load_that_is_heavier_at_lower_levels():
    """A CPU quota: the load is heavier at a lower level (fewer CPUs). The lighter level the
    calibration tries is a larger quota, not a smaller one."""
    edge = 0.21  # CPUs: below it 1/4 is late 2% of the time

    def measure(submodel, rate, level, n):
        cost = {"full": 2.0, "1/4": 0.6}[submodel]
        lat = np.linspace(0.8, 1.2, n) * (0.5 + cost / min(1.0, level)) * 1e-3
        if submodel == "1/4" and level < edge:
            lat[::50] = 0.05
        return lat

    class Quota:
        level_name = "CPU quota"

    cal = calibrate(measure, Quota(), [100], 0.001, "1/4", 2.0, 0.05, log=lambda s: None)
    assert cal.separated and cal.level > edge, cal.reason
    fits = [p for p in cal.probes if p.submodel == "1/4"]
    assert len(fits) == 2 and fits[0].level < edge < fits[1].level
