"""The one policy interface every backend implements and every caller uses.

Control calls ``select_action(observation)``; training calls ``log_probs`` and ``entropy``
over discretised action tokens. Backends: ``ElasticVLA`` (the embedded default),
``MiMoEmbodiedPolicy`` (a local MiMo-Embodied-7B checkpoint), and the scripted experts in
simulation. Nodes and the trainer depend on this file only, never on a backend's internals.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Embodiments a policy may be asked to control; they fix the action layout.
#: "arm": end-effector velocity [vx, vy, vz] in [-1, 1]^3 (MoveIt Servo convention, scaled).
#: "vehicle": [steer, acceleration] in [-1, 1]^2.
EMBODIMENT_ACTION_DIM = {"arm": 3, "vehicle": 2}


@dataclass
class Observation:
    """What a policy sees at one control tick."""

    rgb: np.ndarray  #: (H, W, 3) uint8, RGB order
    instruction: str  #: natural-language task, e.g. "touch the red cube"
    proprio: np.ndarray  #: (8,) float32 robot/ego state (world-specific layout, zero padded)
    embodiment: str = "arm"  #: a key of EMBODIMENT_ACTION_DIM
    depth: np.ndarray | None = None  #: (H, W) float32 metres, 0 = no return
    camera_K: np.ndarray | None = None  #: (3, 3) intrinsics of `rgb`, if known
    stamp: float = 0.0  #: time (s) of the camera frame; copied into the Action it yields

    def __post_init__(self):
        if self.embodiment not in EMBODIMENT_ACTION_DIM:
            raise ValueError(
                f"embodiment {self.embodiment!r} not in {sorted(EMBODIMENT_ACTION_DIM)}"
            )
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")


@dataclass
class Action:
    """A policy's answer to one Observation."""

    chunk: np.ndarray  #: (T, action_dim) float32 in [-1, 1]: T future control steps
    stamp: float  #: the stamp of the Observation this answers (for staleness checks)
    submodel: str = "full"  #: which (elastic) submodel produced it
    latency_s: float = 0.0  #: wall time spent inside select_action
    target_point: np.ndarray | None = None  #: (u, v) camera pixel the policy points at
    plan: np.ndarray | None = None  #: (N, 2) or (N, 3) waypoints, if the backend plans
    extras: dict[str, Any] = field(default_factory=dict)  #: backend-specific (raw text, ...)


class Policy(abc.ABC):
    """Base class of every policy backend."""

    #: Names of the submodels this backend can switch between (["full"] if not elastic).
    submodel_names: list[str] = ["full"]

    @abc.abstractmethod
    def select_action(self, observation: Observation) -> Action:
        """Return the action chunk for one observation (batch of one)."""

    def reset(self) -> None:
        """Forget any per-episode state (called at every episode start)."""

    @property
    def submodel(self) -> str:
        return "full"

    def set_submodel(self, name: str) -> None:
        """Switch the active submodel; raise ValueError naming the allowed ones if unknown."""
        if name not in self.submodel_names:
            raise ValueError(f"unknown submodel {name!r}; allowed: {self.submodel_names}")
