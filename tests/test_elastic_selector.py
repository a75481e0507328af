"""Selector on a fake clock: tail fit, infeasible budgets, hysteresis, online correction with
miss clustering; and the latency table's measurement (interleaved, monotone, per device)."""

import json

import pytest

from embodied_stack.control.elastic.budget import Budget
from embodied_stack.control.elastic.latency_table import (
    measure_latency_table,
    monotonicity_violations,
    read_latency_table,
    write_latency_table,
)
from embodied_stack.control.elastic.selector import Selector, SelectorConfig

# A CPU-like table (ms): p99 well above p50, as measured
TABLE = {
    "full": {"p50_ms": 2.6, "p95_ms": 3.0, "p99_ms": 3.4, "weight_mb": 3.9, "params": 4},
    "3/4": {"p50_ms": 2.0, "p95_ms": 2.3, "p99_ms": 2.6, "weight_mb": 3.1, "params": 3},
    "1/2": {"p50_ms": 1.4, "p95_ms": 1.6, "p99_ms": 1.8, "weight_mb": 1.9, "params": 2},
    "1/4": {"p50_ms": 0.8, "p95_ms": 0.9, "p99_ms": 1.0, "weight_mb": 0.9, "params": 1},
}


def budget(slowdown=1.0, free=1000.0):
    return Budget("test", free, slowdown)


def make(rate=200.0, **kw):  # 5 ms period, 1 ms margin: 4 ms deadline
    return Selector(TABLE, SelectorConfig(rate_hz=rate, margin_s=0.001, **kw), current="full")


def test_quiet_budget_runs_full_and_uses_the_tail_not_the_median():
    s = make()
    d = s.decide(0.0, budget())
    assert d.submodel == "full" and not d.switched and d.deadline_ms == pytest.approx(4.0)
    # slowdown 1.3: full's p50 (3.38 ms) still fits, its p99 (4.42 ms) does not
    d = s.decide(0.1, budget(1.3))
    assert d.switched and d.submodel == "3/4" and "down to 3/4" in d.reason
    assert d.predicted_ms["full"] == pytest.approx(3.4 * 1.3)


def test_infeasible_budget_gives_the_smallest_with_a_reason():
    s = make()
    d = s.decide(0.0, budget(slowdown=10.0))
    assert d.submodel == "1/4" and "nothing fits" in d.reason and "deadline" in d.reason
    s2 = make()
    d = s2.decide(0.0, budget(free=0.5))  # 1/4 needs 0.9 MB
    assert d.submodel == "1/4" and "nothing fits" in d.reason and "MB" in d.reason
    # a rate whose deadline no submodel can ever meet: still one answer, at once
    s3 = Selector(TABLE, SelectorConfig(rate_hz=2000.0, margin_s=0.0001), current="full")
    assert s3.decide(0.0, budget()).submodel == "1/4"


def test_memory_budget_limits_the_choice():
    d = make().decide(0.0, budget(free=3.5))  # full needs 3.9 MB, 3/4 3.1 MB
    assert d.submodel == "3/4" and "3.9 MB > free 3.5 MB" in d.reason


def test_hysteresis_holds_under_an_oscillating_budget():
    """The budget swings around full's threshold (4.0 / 3.4 = 1.176) every poll for 20 s:
    one switch down, no flapping back up."""
    s = make(dwell_s=1.0)
    t, decisions = 0.0, []
    for k in range(2000):
        slow = 1.16 if k % 2 else 1.20
        decisions.append(s.decide(t, budget(slow)))
        t += 0.01
    assert sum(d.switched for d in decisions) == 1 and s.current == "3/4"


def test_steps_up_only_after_the_dwell_with_headroom():
    s = make(dwell_s=2.0, up_headroom=0.15)
    assert s.decide(0.0, budget(2.0)).submodel == "1/2"  # 1.8*2 = 3.6 <= 4
    d = s.decide(0.5, budget(1.0))
    assert d.submodel == "1/2" and "dwell" in d.reason
    d = s.decide(2.1, budget(1.0))
    assert d.switched and d.submodel == "full" and "up to full" in d.reason
    # within the headroom: 3.4 * 1.1 = 3.74 > 0.85 * 4 -> stay on 3/4 after a dip
    s.decide(3.0, budget(1.3))
    assert s.current == "3/4"
    d = s.decide(10.0, budget(1.1))
    assert d.submodel == "3/4" and "headroom" in d.reason


def test_correction_after_consistently_slow_latencies_and_recovery():
    """Latencies 1.7x the table (throttling the budget source does not see): the selector
    learns it and steps down; once they are back to normal and the window has passed, it
    returns to full."""
    s = make(dwell_s=1.0, window_s=2.0, min_samples=20, miss_hold_s=1.0)
    t = 0.0
    assert s.decide(t, budget()).submodel == "full"
    for _ in range(100):  # 1 s of slow but not missed cycles on full: 2.6*1.45 = 3.8 ms
        s.observe(t, s.current, 2.6e-3 * 1.45)
        t += 0.01
    assert s.current == "full"  # observing alone never switches
    d = s.decide(t, budget())
    # p50 x 1.45 predicted: full 3.77 ms fits the 4 ms deadline, so the tail decides it
    assert d.correction == pytest.approx(1.45) and d.submodel == "full"
    for _ in range(100):  # another second, now 1.7x: full's predicted tail 4.42 ms > 4 ms
        s.observe(t, s.current, 2.6e-3 * 1.7)
        t += 0.01
    d = s.decide(t, budget())
    assert d.correction == pytest.approx(1.7) and d.submodel == "3/4" and d.switched
    # slow samples are forgotten after window_s; normal ones come in
    for _ in range(300):
        s.observe(t, s.current, TABLE[s.current]["p50_ms"] * 1e-3)
        t += 0.01
        s.decide(t, budget())
    assert s.current == "full" and s.correction(t) == pytest.approx(1.0)


def test_a_miss_is_planned_for_at_once_and_blocks_stepping_up():
    s = make(dwell_s=0.5, miss_hold_s=1.0, min_samples=50)
    t = 0.0
    s.decide(t, budget())
    s.observe(t, "full", 8e-3)  # one cycle at 8 ms: a miss (deadline 4 ms)
    d = s.decide(t + 0.01, budget())
    assert d.correction == pytest.approx(8 / 2.6) and d.submodel == "1/4"
    # while the miss is recent the worst cycle is planned for: still the smallest
    assert s.decide(t + 0.8, budget()).submodel == "1/4"
    # the miss ages out of the hold and the window: back up
    d = s.decide(t + 6.0, budget())
    assert d.submodel == "full"


def test_a_recent_miss_blocks_stepping_up_even_when_the_budget_recovers():
    s = make(dwell_s=0.5, miss_hold_s=1.0, min_samples=50)
    assert s.decide(0.0, budget(5.0)).submodel == "1/4"  # 0.8 * 5 = 4.0 ms
    s.observe(0.1, "1/4", 4.4e-3, slowdown=5.0)  # a miss, 1.1x what the budget predicted
    d = s.decide(0.8, budget(1.0))  # the load is gone; full would fit (2.6 * 1.1)
    assert d.submodel == "1/4" and "miss" in d.reason and d.predicted_ms["full"] < 3.4
    assert s.decide(1.2, budget(1.0)).submodel == "full"


def test_bad_configs_and_tables_are_refused():
    with pytest.raises(ValueError, match="margin"):
        SelectorConfig(rate_hz=100.0, margin_s=0.02)
    with pytest.raises(ValueError, match="tail quantile"):
        SelectorConfig(quantile=20)
    with pytest.raises(ValueError, match="p50"):
        Selector({"full": {"p99_ms": 1.0}})
    with pytest.raises(ValueError, match="empty"):
        Selector({})


def test_sync_follows_the_policy():
    s = make()
    s.sync(1.0, "1/2")
    assert s.current == "1/2"
    assert "dwell" in s.decide(1.5, budget()).reason


# --- the latency table ----------------------------------------------------------------------

def test_monotonicity_check():
    assert monotonicity_violations(TABLE, ["1/4", "1/2", "3/4", "full"]) == []
    bad = dict(TABLE, **{"3/4": dict(TABLE["3/4"], p99_ms=5.0)})
    v = monotonicity_violations(bad, ["1/4", "1/2", "3/4", "full"])
    assert v == ["p99_ms: 3/4 5.000 ms > full 3.400 ms"]


def test_table_is_measured_interleaved_and_remeasured_when_not_monotone():
    """A fake runner (a clock that advances by a cost per submodel) whose first attempt is
    disturbed by a load burst on the small submodel: the table is measured again."""
    import embodied_stack.models.runtime.profiling as prof

    cost = {"small": 1.0, "big": 2.0}
    calls = []
    state = {"t": 0.0, "burst": 0}

    def run(name):
        calls.append(name)
        extra = 5.0 if (name == "small" and state["burst"] < 40) else 0.0
        if name == "small":
            state["burst"] += 1
        state["t"] += (cost[name] + extra) * 1e-3

    real = prof.time.perf_counter
    prof.time.perf_counter = lambda: state["t"]
    try:
        entries, bad = measure_latency_table(run, ["small", "big"], rounds=4, iters=10,
                                             warmup=0)
    finally:
        prof.time.perf_counter = real
    assert bad == [] and entries["small"]["attempts"] == 2 and entries["small"]["monotone"]
    assert entries["small"]["p99_ms"] == pytest.approx(1.0)
    assert entries["big"]["samples"] == 40
    # interleaved: the order rotates each round, never all of one submodel first
    assert calls.index("big") == 11  # 1 warm-up + 10 timed calls of small, then big
    assert calls[22] == "big"  # round 2 starts with big


def test_the_table_is_timed_paced_as_a_control_loop_calls_the_policy():
    """Each timed call follows a pause (the runtime's threads asleep, as between two
    inferences of a control loop); the pause itself is not timed."""
    import time

    import embodied_stack.models.runtime.profiling as prof

    state = {"t": 0.0, "slept": []}
    real_clock, real_sleep = prof.time.perf_counter, prof.time.sleep
    prof.time.perf_counter = lambda: state["t"]

    def sleep(s):
        state["slept"].append(s)
        state["t"] += s

    prof.time.sleep = sleep

    def run(name):
        state["t"] += 1e-3

    try:
        entries, _ = measure_latency_table(run, ["small"], rounds=2, iters=5, warmup=0,
                                           pause_s=0.005)
    finally:
        prof.time.perf_counter, prof.time.sleep = real_clock, real_sleep
    assert time.sleep is real_sleep
    assert state["slept"] == [0.005] * 10  # one pause before each timed call
    assert entries["small"]["p99_ms"] == pytest.approx(1.0)  # the pause is not in it


def test_another_devices_table_is_never_used(tmp_path):
    path = tmp_path / "t.json"
    write_latency_table(path, "cuda:Some GPU", {n: e for n, e in TABLE.items()})
    with pytest.raises(KeyError, match="no latency entry"):
        read_latency_table(path)  # this machine's CPU is not in it
    assert json.loads(path.read_text())["cuda:Some GPU"]["full"]["p99_ms"] == 3.4


def test_a_correction_below_one_does_not_carry_a_step_up():
    """Under a CPU quota the source's slowdown (threads / quota) overstates what a small
    inference that fits between two refills sees, so the correction learned on `1/4` falls
    below 1; applied to `full` it would make full look fine, but full crosses the quota and
    waits. The selector stays on `1/4` until the slowdown itself comes down."""
    s = make(dwell_s=0.5, window_s=2.0, min_samples=20, miss_hold_s=0.5)
    assert s.decide(0.0, budget(5.0)).submodel == "1/4"  # 0.8 x 5 = 4 ms: only 1/4 fits
    t = 0.0
    for _ in range(100):  # 1/4 measures a quarter of the budget's prediction: 1 ms
        s.observe(t, "1/4", 0.8e-3 * 5 * 0.25, slowdown=5.0)
        t += 0.01
        d = s.decide(t, budget(5.0))
    assert d.correction == pytest.approx(0.25)
    assert d.predicted_ms["full"] <= 0.85 * 4.0  # 2.6 x 5 x 0.25 = 3.25 ms would "fit" ...
    assert s.current == "1/4" and "holding 1/4" in d.reason  # ... but full's tail x 5 does not
    d = s.decide(t + 0.1, budget(1.0))  # the quota is lifted
    assert d.submodel == "full" and d.switched
