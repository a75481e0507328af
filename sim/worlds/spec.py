"""WorldSpec: everything the stack needs to know about a world, in one validated dataclass (no
rclpy, no MuJoCo import: a spec is cheap to build and to register).

A world is any Gymnasium environment whose factory (or Gymnasium id) the spec names. The
environment must give, at reset and at every step:

- ``obs["rgb"]``: an (H, W, 3) uint8 colour image (the minimum), and
- a success signal: ``info[spec.success_key]`` (bool), ``"is_success"`` by default.

Everything else is optional and filled in by :class:`embodied_stack.sim.worlds.registry.WorldEnv`
(the wrapper every world is made through) when the environment does not give it:

============================  =====================================================================
absent                        what it disables
============================  =====================================================================
``obs["depth"]``              zeros are fed (``has_depth=False``): the policy learns from colour
                              only; the sim bridge publishes no depth image worth reading
``obs["proprio"]``            zeros (``proprio_names=()``): the policy sees no robot state
``obs["instruction"]``        the spec's fixed ``instruction`` is the task's instruction
``expert``                    no behaviour cloning from live demonstrations, no DAgger, no
                              ``--backend expert``: train from a dataset (``--dataset``) or RL only
``expert_lookahead``          (a world without ``snapshot()``/``restore()``) expert chunks are
                              labelled with their first action only, the rest masked
``seed_fixes_start``          (False) evaluation and RL groups are not reproducible seed by seed:
                              group RL compares rollouts from different starts
``skip_render``               (False) every step renders, also inside a chunk (RL ~2x slower)
============================  =====================================================================

Actions: the policy emits a normalised action in [-1, 1] per dim, and the world's environment
takes that normalised action. ``EmbodimentSpec.low`` / ``high`` say what -1 and +1 mean in the
command's units (N m, m/s, rad, gripper opening), which is what a ROS command carries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Length of the proprio vector every world's observation is padded to at least (sim/worlds/base.py's
#: PROPRIO_DIM; repeated here so that a spec does not import MuJoCo): the shipped model's width.
PROPRIO_DIM = 8
#: The most proprio entries a world may name (a new model is made that wide: its proprio_dim).
MAX_PROPRIO_DIM = 64
#: How a world's actions become ROS commands (nodes/policy_node.py, nodes/sim_bridge_node.py):
#: ``arm_twist``: [vx, vy, vz] end-effector velocity on servo/delta_twist_cmds
#: (geometry_msgs/TwistStamped); ``vehicle_cmd_vel``: [steer, accel] through the bicycle model
#: to cmd_vel (geometry_msgs/Twist); ``joints``: the action scaled to [low, high] per dim on
#: ``joint_commands`` (std_msgs/Float64MultiArray, one entry per action name), a gripper
#: channel also on ``gripper_command`` (std_msgs/Float64), held at its last command by every
#: stop (e-stop, stale input, command timeout): a gripper never opens by itself.
ROS_COMMANDS = ("arm_twist", "vehicle_cmd_vel", "joints")
#: TrainConfig fields a spec's ``train_defaults`` may set for its world (per-world counts).
TRAIN_DEFAULT_KEYS = ("demo_episodes", "dagger_episodes", "rl_groups", "entropy_probe_episodes",
                      "proprio_inputs")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_name(what: str, value: Any) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{what}={value!r} must be a lower-case identifier "
                         "(letters, digits, _; starting with a letter)")


@dataclass(frozen=True)
class EmbodimentSpec:
    """The robot that acts in a world: the policy's action layout for it."""

    name: str  #: the model's embodiment (ElasticVLAConfig.embodiments key): arm, vehicle, ...
    action_names: tuple[str, ...]  #: one name per action dim, in order
    low: tuple[float, ...]  #: command value at action -1, per dim
    high: tuple[float, ...]  #: command value at action +1, per dim
    #: index of the gripper channel in the action (None: no gripper); it is published apart
    #: and holds its last command on e-stop or stale input
    gripper: int | None = None
    ros_command: str = "joints"  #: one of ROS_COMMANDS

    def __post_init__(self):
        _check_name("EmbodimentSpec.name", self.name)
        object.__setattr__(self, "action_names", tuple(self.action_names))
        object.__setattr__(self, "low", tuple(float(v) for v in self.low))
        object.__setattr__(self, "high", tuple(float(v) for v in self.high))
        n = len(self.action_names)
        if not 1 <= n <= 64 or not all(isinstance(a, str) and a for a in self.action_names):
            raise ValueError(f"EmbodimentSpec.action_names={self.action_names!r} must be 1 to 64 "
                             "non-empty names")
        if len(set(self.action_names)) != n:
            raise ValueError(f"EmbodimentSpec.action_names={self.action_names!r} repeat a name")
        if len(self.low) != n or len(self.high) != n:
            raise ValueError(f"EmbodimentSpec low={self.low!r} and high={self.high!r} need one "
                             f"value per action name ({n})")
        bad = [i for i in range(n) if not (math.isfinite(self.low[i]) and math.isfinite(self.high[i])
                                           and self.low[i] < self.high[i])]
        if bad:
            raise ValueError(f"EmbodimentSpec bounds of dims {bad}: low={self.low!r}, "
                             f"high={self.high!r} must be finite with low < high")
        if self.gripper is not None and not (isinstance(self.gripper, int) and 0 <= self.gripper < n):
            raise ValueError(f"EmbodimentSpec.gripper={self.gripper!r} must be None or an action "
                             f"index in [0, {n})")
        if self.ros_command not in ROS_COMMANDS:
            raise ValueError(f"EmbodimentSpec.ros_command={self.ros_command!r} not in {ROS_COMMANDS}")
        if self.ros_command == "arm_twist" and n != 3:
            raise ValueError(f"ros_command='arm_twist' takes 3 action dims, got {n}")
        if self.ros_command == "vehicle_cmd_vel" and n != 2:
            raise ValueError(f"ros_command='vehicle_cmd_vel' takes 2 action dims, got {n}")

    @property
    def dims(self) -> int:
        return len(self.action_names)

    @property
    def command_kind(self) -> str:
        """The control layer's command layout (control/policy_loop.py): arm, vehicle or joints."""
        return {"arm_twist": "arm", "vehicle_cmd_vel": "vehicle"}.get(self.ros_command, "joints")


@dataclass(frozen=True)
class WorldSpec:
    """One world (module docstring: the minimum, and what each absence disables)."""

    name: str  #: the short name the CLI, the trainer and the nodes take (``--world reacher``)
    #: the environment: a Gymnasium id (made with ``gymnasium.make(id, width=, height=,
    #: **env_kwargs)``) or a factory ``make_env(width, height, **env_kwargs) -> Env``
    make_env: str | Callable[..., Any]
    embodiment: EmbodimentSpec
    control_rate_hz: float  #: control steps (and camera frames) per second
    episode_limit: int  #: steps; an episode is truncated there (the wrapper enforces it)
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)  #: passed to make_env
    success_key: str = "is_success"  #: the info key of the success signal (required)
    terminate_on_success: bool = True  #: end the episode at the first success
    #: obs["proprio"] entry by entry (<= MAX_PROPRIO_DIM; more than PROPRIO_DIM needs a model
    #: trained that wide, which a new model for the world is); () = none
    proprio_names: tuple[str, ...] = ()
    has_depth: bool = False  #: obs["depth"] (H, W) float32 metres is given
    #: the instruction of every episode when the world gives none (obs["instruction"]); a
    #: world without instructions must give one here
    instruction: str = ""
    #: the words its instructions use (the tokenizer's vocabulary), or a callable returning them;
    #: () = the words of ``instruction``
    vocabulary: Iterable[str] | Callable[[], Iterable[str]] = ()
    seed_fixes_start: bool = True  #: reset(seed=s) gives the same start for the same s
    #: the scripted expert: ``expert(env) -> obj`` with ``reset()``, ``obj(obs, info) ->
    #: normalised action`` and optionally ``features()`` (auxiliary targets); None = none
    expert: Callable[[Any], Any] | None = None
    #: the expert's chunk labels look ahead in the simulator: the env (some layer of it) has
    #: ``snapshot()`` / ``restore(snap)`` (exact), and steps without rendering while
    #: ``_lookahead`` is True
    expert_lookahead: bool = False
    #: the env (some layer) has a ``_lookahead`` flag that skips rendering for a step (the
    #: observation's images are then None): frames inside a chunk are not rendered in RL
    skip_render: bool = False
    #: optional make() keywords the env takes: "shift" (sim/worlds/shift.py), "segmentation"
    options: tuple[str, ...] = ()
    #: per-world TrainConfig defaults (TRAIN_DEFAULT_KEYS): demo_episodes, dagger_episodes,
    #: rl_groups, entropy_probe_episodes (counts), proprio_inputs (indices the model reads)
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    #: the command scaling of the control layer (control/commands.py) for this world's
    #: constants; None = the embodiment's default for its ros_command
    command_scale: Callable[[], Any] | None = None
    #: task family of an episode from its reset info (eval's per-task table); None = info["task"]
    #: or the world's name
    task_of: Callable[[dict], str] | None = None
    description: str = ""  #: one line for ``--help`` and the docs

    def __post_init__(self):
        _check_name("WorldSpec.name", self.name)
        if not (isinstance(self.make_env, str) and self.make_env) and not callable(self.make_env):
            raise ValueError(f"WorldSpec {self.name!r}: make_env={self.make_env!r} must be a "
                             "Gymnasium id or a callable")
        if not isinstance(self.embodiment, EmbodimentSpec):
            raise ValueError(f"WorldSpec {self.name!r}: embodiment={self.embodiment!r} must be "
                             "an EmbodimentSpec")
        if not (isinstance(self.control_rate_hz, (int, float)) and 1.0 <= self.control_rate_hz <= 200.0):
            raise ValueError(f"WorldSpec {self.name!r}: control_rate_hz={self.control_rate_hz!r} "
                             "must be in [1, 200] (the policy node's range)")
        if not (isinstance(self.episode_limit, int) and self.episode_limit >= 1):
            raise ValueError(f"WorldSpec {self.name!r}: episode_limit={self.episode_limit!r} must "
                             "be an int >= 1")
        if not isinstance(self.success_key, str) or not self.success_key:
            raise ValueError(f"WorldSpec {self.name!r}: success_key={self.success_key!r} must name "
                             "the info key of the success signal")
        object.__setattr__(self, "proprio_names", tuple(self.proprio_names))
        if len(self.proprio_names) > MAX_PROPRIO_DIM or not all(
                isinstance(n, str) and n for n in self.proprio_names):
            raise ValueError(f"WorldSpec {self.name!r}: proprio_names={self.proprio_names!r} must "
                             f"be at most {MAX_PROPRIO_DIM} non-empty names")
        if len(set(self.proprio_names)) != len(self.proprio_names):
            raise ValueError(f"WorldSpec {self.name!r}: proprio_names={self.proprio_names!r} repeat a name")
        if not isinstance(self.instruction, str) or len(self.instruction) > 96:
            raise ValueError(f"WorldSpec {self.name!r}: instruction={self.instruction!r} must be a "
                             "string of at most 96 characters")
        object.__setattr__(self, "options", tuple(self.options))
        unknown = sorted(set(self.options) - {"shift", "segmentation"})
        if unknown:
            raise ValueError(f"WorldSpec {self.name!r}: options {unknown} not in "
                             "('shift', 'segmentation')")
        if self.expert is not None and not callable(self.expert):
            raise ValueError(f"WorldSpec {self.name!r}: expert={self.expert!r} must be a callable "
                             "env -> expert, or None")
        if self.expert_lookahead and self.expert is None:
            raise ValueError(f"WorldSpec {self.name!r}: expert_lookahead=True needs an expert")
        bad = sorted(set(self.train_defaults) - set(TRAIN_DEFAULT_KEYS))
        if bad:
            raise ValueError(f"WorldSpec {self.name!r}: train_defaults keys {bad} not in "
                             f"{TRAIN_DEFAULT_KEYS}")
        for key, value in self.train_defaults.items():
            if key == "proprio_inputs":
                if not (isinstance(value, (list, tuple)) and all(
                        isinstance(i, int) and 0 <= i < self.proprio_width for i in value)):
                    raise ValueError(f"WorldSpec {self.name!r}: train_defaults['proprio_inputs']="
                                     f"{value!r} must be indices in [0, {self.proprio_width})")
            elif not (isinstance(value, int) and value >= 0):
                raise ValueError(f"WorldSpec {self.name!r}: train_defaults[{key!r}]={value!r} "
                                 "must be an int >= 0")

    # --- derived views ---
    @property
    def proprio_width(self) -> int:
        """Length of the world's proprio vector: PROPRIO_DIM, or its names' count if more."""
        return max(PROPRIO_DIM, len(self.proprio_names))

    @property
    def proprio_layout(self) -> list[str]:
        """The proprio names padded to proprio_width with ``unused_k`` (as joint_states carry them)."""
        return list(self.proprio_names) + [f"unused_{k}" for k in range(len(self.proprio_names),
                                                                       self.proprio_width)]

    def words(self) -> set[str]:
        """The words of the world's instructions (the tokenizer's share of this world)."""
        vocab = self.vocabulary() if callable(self.vocabulary) else self.vocabulary
        words = set(vocab)
        if self.instruction:
            words |= set(self.instruction.lower().split())
        return words

    @property
    def has_expert(self) -> bool:
        return self.expert is not None
