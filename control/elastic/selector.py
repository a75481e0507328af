"""Which nested submodel to run now: the largest whose tail latency and memory fit the live
budget, without flapping, corrected online by the latencies the policy really measures.

Plain class, no ROS, no clock of its own (every call takes `now`), so it is tested on a fake
clock. The rules:

- deadline = 1 / control rate - margin;
- a submodel's predicted tail = its table p99 (a tail quantile measured on this device, never
  mean + k sigma) x the budget's slowdown, or, once the policy has reported enough latencies,
  its table p50 x slowdown x the p99 of the measured/predicted ratios of the last
  `window_s` seconds (so thermal throttling and contention the budget source does not see are
  learned, and forgotten again once latencies are back to normal);
- misses cluster (after a miss the next cycle misses far more often than chance): while a miss
  is recent (`miss_hold_s`) the worst recent ratio is used instead of the p99, and the selector
  does not step up;
- choose the largest submodel whose predicted tail <= deadline and whose memory fits the free
  memory; none fits -> the smallest, with the reason (one pass over the table, no search);
- hysteresis: stepping down is immediate; stepping up waits `dwell_s` since the last switch and
  needs the larger submodel's predicted tail <= (1 - up_headroom) x deadline, and so its table
  tail x slowdown (a correction below 1, learned on a smaller submodel, does not carry a step
  up: under a CPU quota a small inference fits between refills and a larger one does not).
"""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np

from embodied_stack.control.elastic.budget import Budget


@dataclasses.dataclass
class SelectorConfig:
    rate_hz: float = 100.0
    margin_s: float = 0.001
    dwell_s: float = 2.0
    up_headroom: float = 0.15
    mem_reserve_mb: float = 0.0
    window_s: float = 5.0
    min_samples: int = 20
    miss_hold_s: float = 2.0
    quantile: float = 99.0

    def __post_init__(self):
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {self.rate_hz}")
        if not 0 <= self.margin_s < 1.0 / self.rate_hz:
            raise ValueError(f"margin_s {self.margin_s} must be in [0, period "
                             f"{1.0 / self.rate_hz:.4f} s)")
        if self.dwell_s < 0 or not 0 <= self.up_headroom < 1 or self.window_s <= 0:
            raise ValueError("dwell_s >= 0, 0 <= up_headroom < 1 and window_s > 0 are required")
        if not 50 <= self.quantile < 100:
            raise ValueError(f"quantile {self.quantile} must be a tail quantile in [50, 100)")

    @property
    def deadline_s(self) -> float:
        return 1.0 / self.rate_hz - self.margin_s


@dataclasses.dataclass(frozen=True)
class Decision:
    submodel: str
    switched: bool
    reason: str
    deadline_ms: float
    predicted_ms: dict
    correction: float | None


class Selector:
    """`table`: {submodel: {"p50_ms", "p99_ms" (or "p95_ms"), "weight_mb" / "mem_mb"}} for
    this device; `current`: the submodel the policy runs now."""

    def __init__(self, table: dict[str, dict], config: SelectorConfig | None = None,
                 current: str | None = None):
        if not table:
            raise ValueError("empty latency table")
        for name, e in table.items():
            if not isinstance(e.get("p50_ms"), (int, float)):
                raise ValueError(f"latency table entry {name!r} has no p50_ms")
            if not isinstance(e.get("p99_ms", e.get("p95_ms")), (int, float)):
                raise ValueError(f"latency table entry {name!r} has no p99_ms / p95_ms")
        self.table = table
        self.config = config or SelectorConfig()
        # smallest first: by parameters when the table has them, else by median latency
        self.order = sorted(table, key=lambda n: (table[n].get("params", 0), table[n]["p50_ms"]))
        self.current = current if current in table else self.order[-1]
        self.tail_key = "p99_ms" if all("p99_ms" in e for e in table.values()) else "p95_ms"
        self._last_switch = -float("inf")
        self._last_miss = -float("inf")
        self._ratios: deque = deque()  # (t, measured / (p50 * slowdown), missed)
        self._cache_key: tuple | None = None  # (what the cached correction was computed from)
        self._cache: float | None = None
        self.switches = 0

    # --- online correction ---------------------------------------------------------------
    def observe(self, now: float, submodel: str, latency_s: float, slowdown: float = 1.0) -> None:
        """One latency the policy measured for `submodel` (under the budget's `slowdown`)."""
        if submodel not in self.table or not np.isfinite(latency_s) or latency_s <= 0:
            return
        expected = self.table[submodel]["p50_ms"] * 1e-3 * max(slowdown, 1e-6)
        missed = latency_s > self.config.deadline_s
        if missed:
            self._last_miss = now
        self._ratios.append((now, latency_s / expected, missed))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._ratios and self._ratios[0][0] < now - self.config.window_s:
            self._ratios.popleft()

    def correction(self, now: float) -> float | None:
        """The tail of measured/predicted latency ratios (None: not enough recent samples)."""
        self._trim(now)
        hold = now - self._last_miss < self.config.miss_hold_s
        key = (len(self._ratios), self._ratios[-1][0] if self._ratios else None, hold,
               self.config.quantile, self.config.min_samples)
        if key == self._cache_key:  # polled far more often than latencies arrive
            return self._cache
        r = np.fromiter((x[1] for x in self._ratios), float, len(self._ratios))
        if hold and r.size:
            value = float(r.max())  # misses cluster: plan for the worst recent cycle
        elif r.size < self.config.min_samples:
            value = None
        else:
            value = float(np.percentile(r, self.config.quantile))
        self._cache_key, self._cache = key, value
        return value

    def predicted_tail_ms(self, name: str, slowdown: float, correction: float | None) -> float:
        e = self.table[name]
        if correction is None:
            return e[self.tail_key] * slowdown
        return e["p50_ms"] * slowdown * correction

    def mem_mb(self, name: str) -> float:
        e = self.table[name]
        return float(e.get("mem_mb", e.get("weight_mb", 0.0)))

    # --- decision ------------------------------------------------------------------------
    def decide(self, now: float, budget: Budget) -> Decision:
        cfg = self.config
        deadline_ms = cfg.deadline_s * 1e3
        corr = self.correction(now)
        pred = {n: self.predicted_tail_ms(n, budget.slowdown, corr) for n in self.order}
        free = budget.free_mem_mb - cfg.mem_reserve_mb

        def fits(n, limit_ms):
            return pred[n] <= limit_ms and self.mem_mb(n) <= free

        fitting = [n for n in self.order if fits(n, deadline_ms)]
        rank = self.order.index
        if not fitting:
            target = self.order[0]
            s = self.order[0]
            why = (f"predicted p{cfg.quantile:g} {pred[s]:.2f} ms > deadline {deadline_ms:.2f} ms"
                   if pred[s] > deadline_ms else
                   f"needs {self.mem_mb(s):.1f} MB > free {free:.1f} MB")
            reason = f"nothing fits: running the smallest ({s}): {why}"
        else:
            target = fitting[-1]
            reason = (f"{target}: predicted p{cfg.quantile:g} {pred[target]:.2f} ms <= deadline "
                      f"{deadline_ms:.2f} ms")
        if rank(target) > rank(self.current):  # stepping up: hysteresis
            if now - self._last_switch < cfg.dwell_s:
                return self._keep(pred, deadline_ms, corr,
                                  f"holding {self.current}: dwell "
                                  f"({now - self._last_switch:.2f} < {cfg.dwell_s:.2f} s)")
            if now - self._last_miss < cfg.miss_hold_s:
                return self._keep(pred, deadline_ms, corr,
                                  f"holding {self.current}: a deadline miss "
                                  f"{now - self._last_miss:.2f} s ago")
            # A correction below 1 was learned on the submodel that runs; a larger one may
            # not scale down with it (under a CPU quota a small inference fits between two
            # refills, a larger one crosses one and waits), so a step up also needs the
            # table's own tail x slowdown (the prediction without a correction) to fit.
            up_limit = (1 - cfg.up_headroom) * deadline_ms
            larger = [n for n in fitting if rank(n) > rank(self.current) and fits(n, up_limit)]
            up = [n for n in larger
                  if self.predicted_tail_ms(n, budget.slowdown, None) <= up_limit]
            if not up:
                why = (f"{larger[-1]}'s table p99 x slowdown "
                       f"{self.predicted_tail_ms(larger[-1], budget.slowdown, None):.2f} ms "
                       f"does not (a correction below 1 does not carry a step up)" if larger
                       else f"{target} fits but within the {cfg.up_headroom:.0%} headroom")
                return self._keep(pred, deadline_ms, corr, f"holding {self.current}: {why}")
            target = up[-1]
            reason = (f"up to {target}: predicted p{cfg.quantile:g} {pred[target]:.2f} ms <= "
                      f"{1 - cfg.up_headroom:.0%} of deadline {deadline_ms:.2f} ms")
        elif rank(target) < rank(self.current) and fitting:
            reason = (f"down to {target}: {self.current} predicted p{cfg.quantile:g} "
                      f"{pred[self.current]:.2f} ms > deadline {deadline_ms:.2f} ms"
                      if pred[self.current] > deadline_ms else
                      f"down to {target}: {self.current} needs {self.mem_mb(self.current):.1f}"
                      f" MB > free {free:.1f} MB")
        switched = target != self.current
        if switched:
            self.current = target
            self._last_switch = now
            self.switches += 1
        return Decision(target, switched, reason, deadline_ms, pred, corr)

    def _keep(self, pred, deadline_ms, corr, reason) -> Decision:
        return Decision(self.current, False, reason, deadline_ms, pred, corr)

    def reconfigure(self, **changes) -> None:
        self.config = dataclasses.replace(self.config, **changes)

    def sync(self, now: float, submodel: str) -> None:
        """The policy reports it runs `submodel` (set by someone else, or a switch refused)."""
        if submodel in self.table and submodel != self.current:
            self.current = submodel
            self._last_switch = now


__all__ = ["Decision", "Selector", "SelectorConfig"]
