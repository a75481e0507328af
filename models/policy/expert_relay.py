"""`expert` backend: relays the scripted expert's action computed by the simulator.

A scripted expert needs privileged state (object poses, the road centreline) that only the
simulator has, so the sim bridge runs it and publishes its normalised action stamped with the
observation it answers (topic `sim/expert_action`). The policy node feeds those into this
backend; `select_action` returns the one whose stamp matches the observation, waiting up to
`wait_s` for it. The node's queueing, deadlines and safety then apply exactly as for a
learned backend. Simulation only: on a robot there is no expert.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np

from embodied_stack.models.policy.interface import Action, Observation, Policy


class ExpertRelayPolicy(Policy):
    submodel_names = ["full"]
    wants_expert_feed = True

    def __init__(self, wait_s: float = 0.2, keep: int = 64):
        self.wait_s = wait_s
        self._keep = keep
        self._actions: OrderedDict[float, np.ndarray] = OrderedDict()
        self._cond = threading.Condition()

    def feed(self, stamp: float, action: np.ndarray) -> None:
        """The expert's action for the observation stamped `stamp` (seconds)."""
        with self._cond:
            self._actions[round(stamp, 6)] = np.asarray(action, np.float32)
            while len(self._actions) > self._keep:
                self._actions.popitem(last=False)
            self._cond.notify_all()

    def select_action(self, observation: Observation) -> Action:
        start = time.perf_counter()
        key = round(observation.stamp, 6)
        with self._cond:
            if not self._cond.wait_for(lambda: key in self._actions, timeout=self.wait_s):
                raise TimeoutError(
                    f"no expert action for stamp {observation.stamp:.3f} within {self.wait_s} s "
                    "(is the sim bridge publishing sim/expert_action?)"
                )
            action = self._actions[key]
        return Action(chunk=action[None, :], stamp=observation.stamp, submodel="full",
                      latency_s=time.perf_counter() - start)
