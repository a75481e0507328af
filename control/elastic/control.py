"""The elastic node's decision loop without ROS: poll the budget, ask the selector, and keep
track of which submodel was asked for, which one the policy confirmed, and which request is
in flight. Tested on a fake clock (tests/test_elastic_control.py); nodes/elastic_node.py
only wires it to parameters, the policy node's parameter service and /diagnostics.

    ctl = ElasticControl(selector, source)
    request = ctl.poll(now)          # a submodel name to send, or None
    ctl.request_done(name, ok, reason, now)   # the SetParameters answer
    ctl.observe(now, submodel, latency_s)     # a latency the policy measured
"""

from __future__ import annotations

import collections

from embodied_stack.control.elastic.budget import Budget, BudgetSource
from embodied_stack.control.elastic.selector import Decision, Selector

#: After a refused or unanswered switch, ask again no sooner than this (s).
RETRY_S = 0.5


class ElasticControl:
    def __init__(self, selector: Selector, source: BudgetSource, request_timeout_s: float = 2.0,
                 idle_poll_s: float = 0.1):
        self.selector = selector
        self.source = source
        self.request_timeout_s = request_timeout_s
        self.idle_poll_s = idle_poll_s
        self.applied: str | None = None        # last submodel the policy confirmed
        self.in_flight: tuple[str, float, str] | None = None  # (name, sent at, why)
        self.budget: Budget | None = None
        self.decision: Decision | None = None
        self.source_error: str | None = None
        self.last_refusal: str | None = None
        self._retry_at = -float("inf")
        self.stats: collections.Counter[str] = collections.Counter()
        self.misses_by_submodel: collections.Counter[str] = collections.Counter()
        self.cycles_by_submodel: collections.Counter[str] = collections.Counter()
        self.switch_log: list[tuple[float, str, str]] = []  # (decided at, submodel, reason)

    def poll(self, now: float) -> str | None:
        """Read the budget and decide; returns the submodel to ask the policy for, or None."""
        try:
            self.budget = self.source.read()
            self.source_error = None
        except Exception as exc:  # a source that fails mid-run: plan for the worst
            self.source_error = f"{type(exc).__name__}: {exc}"
            self.stats["source_errors"] += 1
            smallest = self.selector.order[0]
            self.budget = Budget(self.source.name, 0.0, float("inf"),
                                 {"error": self.source_error})
            self.decision = Decision(smallest, smallest != self.selector.current,
                                     f"budget source failed ({self.source_error}): smallest",
                                     self.selector.config.deadline_s * 1e3, {}, None)
            self.selector.current = smallest
        else:
            self.decision = self.selector.decide(now, self.budget)
        self.stats["polls"] += 1
        if self.in_flight is not None:
            if now - self.in_flight[1] < self.request_timeout_s:
                return None
            self.stats["request_timeouts"] += 1
            self.in_flight = None
            self._retry_at = now
        want = self.selector.current
        if want == self.applied or now < self._retry_at:
            return None
        self.in_flight = (want, now, self.decision.reason)
        self.stats["requests"] += 1
        return want

    def poll_period(self, fast_s: float) -> float:
        """Seconds to the next poll: `fast_s`, or `idle_poll_s` (when longer) while the policy
        runs the smallest submodel, the selector wants it and no request is in flight. There is
        then nothing to step down to, and a step up waits `dwell_s` anyway, so fast polls would
        only spend CPU, which under a quota shared with the policy is the policy's."""
        smallest = self.selector.order[0]
        if self.applied == smallest == self.selector.current and self.in_flight is None:
            return max(fast_s, self.idle_poll_s)
        return fast_s

    def request_done(self, name: str, ok: bool, reason: str, now: float) -> None:
        """The policy's answer to a switch request."""
        if self.in_flight is None or self.in_flight[0] != name:
            return  # an answer to a request given up on
        _, sent_at, why = self.in_flight
        self.in_flight = None
        if ok:
            self.applied = name
            self.stats["switches"] += 1
            self.switch_log.append((sent_at, name, why))
            self.last_refusal = None
        else:
            self.stats["refused"] += 1
            self.last_refusal = f"{name}: {reason}"
            self._retry_at = now + RETRY_S

    def observe(self, now: float, submodel: str, latency_s: float) -> bool:
        """A latency the policy measured; returns True when it missed the deadline."""
        slowdown = self.budget.slowdown if self.budget and self.budget.slowdown < float("inf") \
            else 1.0
        self.selector.observe(now, submodel, latency_s, slowdown)
        if 0 < latency_s < float("inf"):
            self.source.policy_ran(now - latency_s, now)
        missed = latency_s > self.selector.config.deadline_s
        self.cycles_by_submodel[submodel] += 1
        self.stats["cycles"] += 1
        if missed:
            self.misses_by_submodel[submodel] += 1
            self.stats["misses"] += 1
        return missed

    def status(self) -> dict[str, str]:
        """Flat key/value pairs for /diagnostics."""
        d, b = self.decision, self.budget
        cycles = self.stats["cycles"]
        out = {
            "submodel": self.applied or "unknown",
            "wanted": self.selector.current,
            "reason": d.reason if d else "no decision yet",
            "deadline_ms": f"{self.selector.config.deadline_s * 1e3:.2f}",
            "budget_source": self.source.description,
            "free_mem_mb": f"{b.free_mem_mb:.0f}" if b else "nan",
            "slowdown": f"{b.slowdown:.2f}" if b else "nan",
            "correction": f"{d.correction:.2f}" if d and d.correction is not None else "none",
            "miss_rate": f"{self.stats['misses'] / cycles:.4f}" if cycles else "nan",
            **{k: str(v) for k, v in self.stats.items()},
        }
        if d:
            for name, ms in d.predicted_ms.items():
                out[f"predicted_tail_ms.{name}"] = f"{ms:.2f}"
        if b:
            for k, v in b.detail.items():
                out[f"budget.{k}"] = str(v)
        if self.source_error:
            out["fault.budget_source"] = self.source_error
        if self.last_refusal:
            out["fault.refused"] = self.last_refusal
        return out
