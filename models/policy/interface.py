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

#: This stack's own embodiments and their action dims (the default model's):
#: "arm": end-effector velocity [vx, vy, vz] in [-1, 1]^3 (MoveIt Servo convention, scaled).
#: "vehicle": [steer, acceleration] in [-1, 1]^2.
#: Any other name is a world spec's embodiment (sim/worlds/spec.py: its action layout comes
#: from the spec); a model serves the embodiments of its config (ElasticVLAConfig.embodiments).
EMBODIMENT_ACTION_DIM = {"arm": 3, "vehicle": 2}


@dataclass
class Observation:
    """What a policy sees at one control tick."""

    rgb: np.ndarray  #: (H, W, 3) uint8, RGB order
    instruction: str  #: natural-language task, e.g. "touch the red cube"
    proprio: np.ndarray  #: (8,) float32 robot/ego state (world-specific layout, zero padded)
    embodiment: str = "arm"  #: arm, vehicle, or a world spec's embodiment the policy serves
    depth: np.ndarray | None = None  #: (H, W) float32 metres, 0 = no return
    camera_K: np.ndarray | None = None  #: (3, 3) intrinsics of `rgb`, if known
    stamp: float = 0.0  #: time (s) of the camera frame; copied into the Action it yields
    #: the first frame seen after the current instruction arrived (rgb, and depth when the
    #: model reads depth): the scene the task started from, for models with
    #: ``reference_frame``. None = this frame is the first one (the task starts now).
    reference_rgb: np.ndarray | None = None
    reference_depth: np.ndarray | None = None

    def __post_init__(self):
        if not isinstance(self.embodiment, str) or not self.embodiment.isidentifier():
            raise ValueError(f"embodiment {self.embodiment!r} must be a name such as "
                             f"{sorted(EMBODIMENT_ACTION_DIM)} or a world spec's embodiment")
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if self.reference_rgb is not None:
            ref = np.asarray(self.reference_rgb)
            if ref.ndim != 3 or ref.shape[2] != 3 or ref.dtype != np.uint8:
                raise ValueError(f"reference_rgb must be (H, W, 3) uint8, got {ref.shape} {ref.dtype}")


@dataclass(frozen=True)
class ExecutionMode:
    """How a stream of action chunks is executed, as the policy node does it: each chunk is
    cut to ``execute_steps`` actions (0 = all ``chunk_length``), and the next chunk is asked
    for when ``refill_at`` actions remain; the fresh chunk replaces what was left. With a
    policy much faster than the control period this is "execute ``steps_per_inference``
    actions, then re-plan on the newest frame", which is what training rolls out."""

    chunk_length: int = 4  #: actions per chunk (the model's T)
    refill_at: int = 1  #: ask for the next chunk when this many actions remain
    execute_steps: int = 0  #: cut each chunk to this many actions (0 = whole chunk)

    def __post_init__(self):
        if self.chunk_length < 1 or self.refill_at < 0 or self.execute_steps < 0:
            raise ValueError(f"ExecutionMode(chunk_length={self.chunk_length}, refill_at="
                             f"{self.refill_at}, execute_steps={self.execute_steps}): need "
                             "chunk_length >= 1, refill_at >= 0, execute_steps >= 0")

    @property
    def steps_per_inference(self) -> int:
        usable = min(self.execute_steps or self.chunk_length, self.chunk_length)
        return max(1, usable - self.refill_at)


@dataclass
class Action:
    """A policy's answer to one Observation."""

    chunk: np.ndarray  #: (T, action_dim) float32 in [-1, 1]: T future control steps
    stamp: float  #: the stamp of the Observation this answers (for staleness checks)
    submodel: str = "full"  #: which (elastic) submodel produced it
    latency_s: float = 0.0  #: wall time spent inside select_action
    #: (x, y, z) metres in the camera optical frame: the point the policy points at
    target_point: np.ndarray | None = None
    plan: np.ndarray | None = None  #: (N, 2) or (N, 3) waypoints, if the backend plans
    extras: dict[str, Any] = field(default_factory=dict)  #: backend-specific (raw text, ...)


class Policy(abc.ABC):
    """Base class of every policy backend."""

    #: Names of the submodels this backend can switch between (["full"] if not elastic).
    submodel_names: list[str] = ["full"]
    #: True for a backend that answers with ``target_point`` / ``plan`` instead of motor
    #: actions (MiMo): its chunk is a placeholder, and the policy node builds the executed
    #: chunk from the target (servo) or the plan (pure pursuit), control/target_control.py.
    outputs_targets: bool = False
    #: True for a backend fed the simulator's expert actions (``feed``): the sim-only expert
    #: relay. The policy node then subscribes to ``sim/expert_action``.
    wants_expert_feed: bool = False

    @abc.abstractmethod
    def select_action(self, observation: Observation) -> Action:
        """Return the action chunk for one observation (batch of one)."""

    def reset(self) -> None:
        """Forget any per-episode state (called at every episode start)."""

    def warmup(self, embodiment: str) -> None:
        """Run whatever lazy set-up the first answer would otherwise pay for (kernel
        selection, allocator growth), so the first real answer is not late. Default: none."""

    def feed(self, stamp: float, action: np.ndarray) -> None:
        """The simulator expert's action for the observation stamped `stamp` (only for a
        backend with ``wants_expert_feed``)."""
        raise NotImplementedError(f"{type(self).__name__} takes no expert actions")

    @property
    def runtime_description(self) -> str:
        """What runs ``select_action`` (e.g. ``onnxruntime:CPUExecutionProvider``), for logs
        and /diagnostics."""
        return f"{type(self).__name__} (eager)"

    @property
    def submodel(self) -> str:
        return "full"

    def set_submodel(self, name: str) -> None:
        """Switch the active submodel; raise ValueError naming the allowed ones if unknown."""
        if name not in self.submodel_names:
            raise ValueError(f"unknown submodel {name!r}; allowed: {self.submodel_names}")
