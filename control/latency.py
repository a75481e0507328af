"""Latency in the loop: every answer of a policy delayed by a fixed time or a draw from a
log-normal distribution, so that success and smoothness can be measured against latency with
any backend (the embedded model answers in milliseconds; a 7B planner on a Jetson Orin in
hundreds of milliseconds to seconds).

`AddedLatency` is the distribution. The offline evaluation (sim/train/rollouts.py) makes the
answer to the observation at step t available at step t + latency / period of simulated time,
while the world keeps stepping with what the execution strategy commands; the policy node
(`added_latency` parameter, for the sim graph) wraps its backend in `DelayedPolicy`, whose
answers come that much later in wall time.

The default distribution is from published Jetson Orin figures: pi0.5 at 124-216 ms per chunk
(its middle, 170 ms, is the median here) and GR00T over 600 ms after TensorRT (the 99th
percentile here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from embodied_stack.models.policy.interface import Action, Observation, Policy

#: the default log-normal's median and 99th percentile (s): Jetson Orin figures (docstring)
ORIN_P50_S = 0.17
ORIN_P99_S = 0.6
#: the standard normal's 99th percentile
Z99 = 2.326348


@dataclass(frozen=True)
class AddedLatency:
    """A fixed latency (`p99_s` == `p50_s`) or a log-normal one with that median and 99th
    percentile, in seconds."""

    p50_s: float = 0.0
    p99_s: float = 0.0

    def __post_init__(self):
        if not (0.0 <= self.p50_s <= self.p99_s <= 60.0):
            raise ValueError(f"latency p50={self.p50_s} s, p99={self.p99_s} s: need "
                             "0 <= p50 <= p99 <= 60")
        if self.p50_s == 0.0 and self.p99_s > 0.0:
            raise ValueError(f"a log-normal latency needs p50 > 0 (p99={self.p99_s} s)")

    @classmethod
    def parse(cls, spec: str) -> AddedLatency:
        """"" or "0" (none), "0.2" (fixed, s), "lognormal" (the Orin default) or
        "lognormal:P50:P99" (s); ValueError naming the spec otherwise."""
        text = spec.strip().lower()
        try:
            if text in ("", "0", "none"):
                return cls()
            if text == "lognormal":
                return cls(ORIN_P50_S, ORIN_P99_S)
            if text.startswith("lognormal:"):
                p50, p99 = (float(v) for v in text.split(":")[1:])
                return cls(p50, p99)
            return cls(float(text), float(text))
        except ValueError as exc:
            raise ValueError(f"added latency {spec!r}: {exc}; use seconds ('0.2'), 'lognormal' or "
                             "'lognormal:P50:P99'") from None

    @property
    def fixed(self) -> bool:
        return self.p99_s == self.p50_s

    @property
    def label(self) -> str:
        """How benches and logs name it: "200 ms" or "log-normal p50 170 / p99 600 ms"."""
        if self.fixed:
            return f"{self.p50_s * 1e3:.0f} ms"
        return f"log-normal p50 {self.p50_s * 1e3:.0f} / p99 {self.p99_s * 1e3:.0f} ms"

    def sample(self, rng: np.random.Generator) -> float:
        """One latency in seconds (a fixed one draws nothing from `rng`)."""
        if self.fixed:
            return self.p50_s
        sigma = math.log(self.p99_s / self.p50_s) / Z99
        return float(self.p50_s * math.exp(sigma * rng.standard_normal()))


class DelayedPolicy(Policy):
    """`policy` whose every answer comes `latency` later (a draw per answer, seeded): the
    policy node's `added_latency` (simulation). `sleep` is injectable for a fake clock."""

    def __init__(self, policy: Policy, latency: AddedLatency, seed: int = 0,
                 sleep: Callable[[float], None] = time.sleep):
        self.policy, self.latency, self._sleep = policy, latency, sleep
        self._rng = np.random.default_rng(seed)
        self.submodel_names = policy.submodel_names
        self.outputs_targets = policy.outputs_targets
        self.wants_expert_feed = policy.wants_expert_feed

    def select_action(self, observation: Observation) -> Action:
        action = self.policy.select_action(observation)
        self._sleep(self.latency.sample(self._rng))
        return action

    def reset(self) -> None:
        self.policy.reset()

    def warmup(self, embodiment: str) -> None:
        self.policy.warmup(embodiment)

    def feed(self, stamp: float, action: np.ndarray) -> None:
        self.policy.feed(stamp, action)

    @property
    def runtime_description(self) -> str:
        return f"{self.policy.runtime_description} + {self.latency.label} added"

    @property
    def submodel(self) -> str:
        return self.policy.submodel

    def set_submodel(self, name: str) -> None:
        self.policy.set_submodel(name)
