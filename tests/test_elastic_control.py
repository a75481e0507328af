"""ElasticControl on a fake clock: requests, confirmations, refusals, timeouts, source faults,
miss counting."""

import pytest

from embodied_stack.control.elastic.budget import Budget, BudgetSource
from embodied_stack.control.elastic.control import RETRY_S, ElasticControl
from embodied_stack.control.elastic.selector import Selector, SelectorConfig

TABLE = {
    "full": {"p50_ms": 2.6, "p95_ms": 3.0, "p99_ms": 3.4, "weight_mb": 3.9, "params": 4},
    "1/2": {"p50_ms": 1.4, "p95_ms": 1.6, "p99_ms": 1.8, "weight_mb": 1.9, "params": 2},
    "1/4": {"p50_ms": 0.8, "p95_ms": 0.9, "p99_ms": 1.0, "weight_mb": 0.9, "params": 1},
}


class ScriptedSource(BudgetSource):
    """A budget source whose next readings the test sets (slowdown, or an exception)."""

    name = "scripted"

    def __init__(self):
        self.slowdown = 1.0
        self.error = None
        self.runs = []

    def policy_ran(self, start, end):
        self.runs.append((start, end))

    def read(self):
        if self.error:
            raise self.error
        return Budget(self.name, 1000.0, self.slowdown)


@pytest.fixture
def ctl():
    sel = Selector(TABLE, SelectorConfig(rate_hz=200.0, margin_s=0.001, dwell_s=1.0),
                   current="full")
    c = ElasticControl(sel, ScriptedSource(), request_timeout_s=0.5)
    c.applied = "full"
    return c


def test_no_request_while_the_policy_runs_what_is_wanted(ctl):
    assert ctl.poll(0.0) is None and ctl.status()["submodel"] == "full"


def test_switch_is_requested_once_and_confirmed(ctl):
    ctl.source.slowdown = 2.0
    assert ctl.poll(0.0) == "1/2"
    assert ctl.poll(0.01) is None  # in flight: not asked twice
    ctl.request_done("1/2", True, "", 0.02)
    assert ctl.applied == "1/2" and ctl.stats["switches"] == 1
    assert ctl.switch_log[0][1] == "1/2" and "down to 1/2" in ctl.switch_log[0][2]
    st = ctl.status()
    assert st["submodel"] == "1/2" and st["slowdown"] == "2.00"
    assert float(st["predicted_tail_ms.full"]) == pytest.approx(6.8)


def test_refusal_is_reported_and_retried_later(ctl):
    ctl.source.slowdown = 2.0
    assert ctl.poll(0.0) == "1/2"
    ctl.request_done("1/2", False, "unknown submodel", 0.01)
    assert ctl.applied == "full" and "unknown submodel" in ctl.status()["fault.refused"]
    assert ctl.poll(0.02) is None
    assert ctl.poll(0.01 + RETRY_S + 0.01) == "1/2"


def test_unanswered_request_times_out(ctl):
    ctl.source.slowdown = 2.0
    assert ctl.poll(0.0) == "1/2"
    assert ctl.poll(0.4) is None
    assert ctl.poll(0.6) == "1/2" and ctl.stats["request_timeouts"] == 1
    ctl.request_done("1/2", True, "", 0.61)
    assert ctl.applied == "1/2"


def test_failed_source_falls_back_to_the_smallest_and_says_why(ctl):
    ctl.source.error = OSError("tegrastats log vanished")
    assert ctl.poll(0.0) == "1/4"
    st = ctl.status()
    assert "budget source failed" in st["reason"] and "vanished" in st["fault.budget_source"]


def test_misses_are_counted_per_submodel(ctl):
    ctl.poll(0.0)
    assert not ctl.observe(0.01, "full", 2.5e-3)
    assert ctl.observe(0.02, "full", 4.5e-3)  # deadline 4 ms
    assert ctl.misses_by_submodel["full"] == 1 and ctl.status()["miss_rate"] == "0.5000"
    # the source is told when the policy ran (the CPU source leaves that time out)
    assert ctl.source.runs == [pytest.approx((0.0075, 0.01)), pytest.approx((0.0155, 0.02))]
    ctl.observe(0.03, "full", float("nan"))
    assert len(ctl.source.runs) == 2


def test_polls_slow_down_only_while_the_smallest_runs_and_nothing_is_in_flight(ctl):
    ctl.idle_poll_s = 0.1
    assert ctl.poll_period(0.01) == 0.01  # at full: a load step must be seen at once
    ctl.source.slowdown = 10.0  # nothing fits
    assert ctl.poll(0.0) == "1/4"
    assert ctl.poll_period(0.01) == 0.01  # asked, not confirmed yet
    ctl.request_done("1/4", True, "", 0.01)
    assert ctl.poll_period(0.01) == 0.1  # nothing to step down to
    assert ctl.poll_period(0.5) == 0.5  # never faster than asked
    ctl.source.slowdown = 1.0
    assert ctl.poll(1.5) == "full"  # the step up after the dwell
    assert ctl.poll_period(0.01) == 0.01
