"""Meta-World v3's MT10 as worlds of embodied_stack (docs/worlds.md, "Meta-World MT10").

Registered with this stack's own worlds (sim/worlds/builtin.py) when the ``metaworld`` package
is installed (setup.sh installs it); without it these worlds are simply not there:

- ``metaworld_mt10``: one world for the multi-task benchmark: the seed picks the task
  (``MT10_TASKS[seed % 10]``) and the positions, so any 10 consecutive seeds hold each task
  once and eval's per-task table has ``episodes / 10`` episodes per task;
- ``metaworld_<task>`` (``metaworld_reach``, ``metaworld_push``, ...): one task each, the same
  start as ``metaworld_mt10`` gives that task for the same seed.

All act with one embodiment, ``sawyer`` (4-D: end-effector displacement xyz + gripper), so one
policy serves all ten tasks; the instruction says which task.

What the adapter gives:

- ``obs["rgb"]``: 64x64 RGB from Meta-World's fixed ``corner3`` camera, turned 180 degrees
  (Meta-World's corner cameras render upside down); no depth;
- ``obs["proprio"]``: [hand x, y, z (m), gripper opening (0 closed .. 1 open)]: the goal and the
  objects' positions are NOT in it, the policy must see them;
- success: Meta-World's ``info["success"]``; an episode ends at the first success;
- seeds fix the start: ``reset(seed=s)`` draws the task's random vector (object and goal
  positions) with Meta-World's seeded sampling (``seeded_rand_vec``) from a generator seeded
  with ``s``, so the same seed gives the same start and goal, different seeds different ones,
  and seeds outside the training block give positions never used in training (continuous
  draws). Meta-World's own ``MT10`` benchmark instead fixes 50 random vectors per task;
- the expert: Meta-World's scripted policies (``metaworld.policies``) on the privileged state
  vector, with exact snapshot/restore for look-ahead chunk labels;
- ``control_rate_hz`` 80 (``frame_skip`` 5 x 2.5 ms), ``episode_limit`` EPISODE_LIMIT.

MuJoCo 4.0: Meta-World 3.1.1 pins mujoco==3.3.0; it is installed here without its dependencies
and runs on the stack's mujoco 4.0.0 with one override, :func:`reset_mocap_welds` (see there).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium
import numpy as np

from embodied_stack.sim.worlds.spec import EmbodimentSpec, WorldSpec

#: The Meta-World version this adapter is written and measured against (constraints.txt).
METAWORLD_VERSION = "3.1.1"
#: MT10's tasks (metaworld.env_dict.MT10_V3), in its order, with one instruction each.
MT10_TASKS: dict[str, str] = {
    "reach-v3": "reach the goal",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "open the window",
    "window-close-v3": "close the window",
}
TASK_NAMES = list(MT10_TASKS)
#: Meta-World's fixed camera above the table's far corner: the whole workspace, objects and goal
#: markers in view (corner2 shows them smaller, corner4 crops the far end)
CAMERA = "corner3"
#: control steps per episode: Meta-World's own horizon (max_path_length) is 500; see docs.
EPISODE_LIMIT = 200
CONTROL_RATE_HZ = 80.0  #: frame_skip 5 x timestep 0.0025 s
#: One mocap step moves the hand by action * 0.01 m (Meta-World's action_scale).
ACTION_SCALE_M = 0.01
PROPRIO_NAMES = ("hand_x", "hand_y", "hand_z", "gripper_opening")
#: Weld equality data Meta-World writes for the mocap weld (anchor 0, relpose pos 0, relpose
#: quat (-1, 0, 0, 0), torquescale 5), in MuJoCo 3's 11-field layout.
_WELD_DATA = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0])


def available() -> bool:
    """Whether the metaworld package is installed (these worlds are registered only then)."""
    return importlib.util.find_spec("metaworld") is not None


def world_name(task: str) -> str:
    """``push-v3`` -> ``metaworld_push`` (world names are lower-case identifiers)."""
    return "metaworld_" + task.removesuffix("-v3").replace("-", "_")


# --- the MuJoCo 4.0 fix ------------------------------------------------------------------------


def reset_mocap_welds(self) -> None:
    """Meta-World's ``SawyerMocapBase.reset_mocap_welds`` for MuJoCo 3 and 4.

    Meta-World writes an 11-value row into ``model.eq_data`` for each weld (the mocap weld
    that drives the hand): anchor (3), relpose position (3), relpose quaternion (4),
    torquescale (1) — MuJoCo 3's layout, ``mjNEQDATA == 11``. MuJoCo 4.0 widened eq_data to
    ``mjNEQDATA == 12`` (mjmodel.h), so the original assignment fails with "could not
    broadcast input array from shape (11,) into shape (12,)". The 12th field of a weld is a
    flag the compiler sets to 1 when the XML gives no ``relpose`` (Meta-World's XML gives
    none): "compute relpose from qpos0", which ``mj_setConst`` acts on (measured: with the flag
    at 1, mj_setConst overwrites the relpose written here; at 0 it keeps it). Meta-World means
    its relpose as given, so this writes the same 11 values and sets the flag to 0. The first
    11 fields keep their MuJoCo 3 meaning (engine_core_constraint.c reads torquescale from
    data[10]), and stepping is the same with the flag at 0 or 1 (tests/test_metaworld.py).
    """
    import mujoco

    model = self.model
    if model.nmocap > 0 and model.eq_data is not None:
        width = model.eq_data.shape[1]
        for i in range(model.eq_data.shape[0]):
            if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                model.eq_data[i, : len(_WELD_DATA)] = _WELD_DATA
                if width > len(_WELD_DATA):
                    model.eq_data[i, len(_WELD_DATA):] = 0.0  # relpose given, not from qpos0


def _patch_metaworld() -> None:
    """Install :func:`reset_mocap_welds` on Meta-World's mocap base class (idempotent); it
    runs in every Sawyer env's constructor."""
    from metaworld.sawyer_xyz_env import SawyerMocapBase

    if SawyerMocapBase.reset_mocap_welds is not reset_mocap_welds:
        SawyerMocapBase.reset_mocap_welds = reset_mocap_welds  # type: ignore[method-assign]


def _renderer(model, camera: str, width: int, height: int):
    """The stack's renderer (sim/worlds/base.py: RGBDRenderer) on a Meta-World model: shadows,
    multisampling and reflections off (measured at 64x64 on llvmpipe: 180 ms a frame with
    Meta-World's settings, its 4096 px shadow map above all), and it binds its GL context
    per thread as the sim bridge's executor threads need. Its shadows are off, so the shadow
    map is not allocated (size 0) and the offscreen buffer is the image's size: the GL
    context of a Meta-World model took ~118 MB with Meta-World's 4096 px shadow map and
    640x480 buffer, ~0.1 MB so (measured here)."""
    from embodied_stack.sim.worlds.base import RGBDRenderer

    model.vis.quality.shadowsize = 0
    model.vis.global_.offwidth, model.vis.global_.offheight = width, height
    return RGBDRenderer(model, camera, width, height)


def _import_metaworld():
    from embodied_stack.sim.worlds.base import select_gl_backend

    select_gl_backend()  # headless GL as the stack chooses it, before MuJoCo renders
    import metaworld  # noqa: F401

    _patch_metaworld()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return ALL_V3_ENVIRONMENTS


# --- the environment ---------------------------------------------------------------------------


class MetaWorldEnv(gymnasium.Env):
    """Meta-World tasks with the stack's observation dict (module docstring). With several
    tasks the seed picks one: ``tasks[seed % len(tasks)]``."""

    metadata = {"render_modes": []}

    def __init__(self, width: int = 64, height: int = 64, tasks: tuple[str, ...] = tuple(TASK_NAMES),
                 camera: str = CAMERA):
        unknown = [t for t in tasks if t not in MT10_TASKS]
        if not tasks or unknown:
            raise ValueError(f"Meta-World tasks {list(tasks)}: each must be one of {TASK_NAMES}")
        self._classes = _import_metaworld()
        self.tasks, self.width, self.height, self.camera = tuple(tasks), width, height, camera
        self._envs: dict[str, Any] = {}
        self._renderers: dict[str, Any] = {}
        self.task = self.tasks[0]
        self._rng = np.random.default_rng()
        self._lookahead = False  #: True: steps do not render (chunk insides, look-ahead)
        self._flat: np.ndarray | None = None  #: Meta-World's 39-D state (the expert's input)
        self.observation_space = gymnasium.spaces.Dict({
            "rgb": gymnasium.spaces.Box(0, 255, (height, width, 3), np.uint8),
            "proprio": gymnasium.spaces.Box(-np.inf, np.inf, (len(PROPRIO_NAMES),), np.float32)})
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)

    @property
    def sim(self):
        """The current task's Meta-World env (SawyerXYZEnv)."""
        if self.task not in self._envs:
            env = self._classes[self.task]()
            # Meta-World's own seeded task sampling (not its fixed MT10 goals), and the goal in
            # the state vector the scripted policies read (the MT benchmarks' setting).
            env._set_task_called = True
            env._freeze_rand_vec = False
            env.seeded_rand_vec = True
            if env._partially_observable:
                env.__dict__.pop("sawyer_observation_space", None)  # (a cached_property)
                env._partially_observable = False
            env._set_task_inner()
            self._envs[self.task] = env
            self._renderers[self.task] = _renderer(env.model, self.camera, self.width, self.height)
        return self._envs[self.task]

    def instruction(self) -> str:
        return MT10_TASKS[self.task]

    def _observe(self, flat: np.ndarray) -> dict:
        self._flat = np.asarray(flat, np.float64)
        proprio = np.asarray(flat[:4], np.float32)  # hand xyz, gripper opening
        rgb = None
        if not self._lookahead:
            rgb, _, _ = self._renderers[self.task].render(self.sim.data)
            rgb = np.ascontiguousarray(rgb[::-1, ::-1])  # Meta-World's corner cams: upside down
        return {"rgb": rgb, "proprio": proprio, "instruction": self.instruction()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        from gymnasium.utils import seeding

        if seed is not None:
            self.task = self.tasks[int(seed) % len(self.tasks)]
            env = self.sim
            env.np_random, _ = seeding.np_random(int(seed))  # the positions: fixed by the seed
        else:
            self.task = self.tasks[int(self._rng.integers(len(self.tasks)))]
            env = self.sim
        flat, _ = env.reset()
        info = {"task": self.task.removesuffix("-v3"), "success": False, "is_success": False,
                "rand_vec": np.array(env._last_rand_vec)}
        return self._observe(flat), info

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32).reshape(-1), -1.0, 1.0)
        flat, reward, terminated, truncated, info = self.sim.step(action)
        info = dict(info)
        success = bool(info.get("success", 0.0))
        info.update(success=success, is_success=success, task=self.task.removesuffix("-v3"))
        # Meta-World's own truncation (max_path_length 500) is beyond the spec's episode_limit.
        return self._observe(flat), float(reward), bool(terminated), bool(truncated), info

    def close(self):
        for renderer in self._renderers.values():
            renderer.close()
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._renderers.clear()

    def image_position(self, points: np.ndarray) -> np.ndarray:
        """(n, 2) positions (u / width, v / height) in the observed image (turned 180 degrees,
        as ``obs["rgb"]``) of world points (n, 3); NaN for a point behind the camera."""
        cam = self._renderers[self.task].camera_model(self.sim.data)
        pts = np.atleast_2d(np.asarray(points, np.float64))
        pc = (np.linalg.inv(cam.T_world_camera) @ np.c_[pts, np.ones(len(pts))].T)[:3]
        u, v, w = cam.K @ pc
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([(u / w + 0.5) / cam.width, (v / w + 0.5) / cam.height], 1)
        uv[w <= 0] = np.nan
        return 1.0 - uv  # the turn: pixel (u, v) is shown at (width - 1 - u, height - 1 - v)

    # --- exact snapshots, for the expert's look-ahead ---
    def snapshot(self) -> tuple:
        from embodied_stack.sim.worlds.base import mujoco_state  # (MuJoCo only when a world runs)

        env = self.sim
        state = mujoco_state(env.model, env.data)
        copy = lambda a: None if a is None else np.array(a)  # noqa: E731
        return (self.task, state, env.curr_path_length, copy(env._prev_obs),
                copy(env._last_stable_obs), env._did_see_sim_exception, copy(self._flat))

    def restore(self, snap: tuple) -> None:
        from embodied_stack.sim.worlds.base import set_mujoco_state

        self.task = snap[0]
        env = self.sim
        set_mujoco_state(env.model, env.data, snap[1])
        env.curr_path_length = snap[2]
        env._prev_obs = None if snap[3] is None else np.array(snap[3])
        env._last_stable_obs = None if snap[4] is None else np.array(snap[4])
        env._did_see_sim_exception = snap[5]
        self._flat = None if snap[6] is None else np.array(snap[6])


class MetaWorldExpert:
    """Meta-World's scripted policy of the current task (metaworld.policies.ENV_POLICY_MAP)
    on the privileged 39-D state; its action is already the normalised 4-D action."""

    def __init__(self, env):
        world = env
        while not isinstance(world, MetaWorldEnv):
            world = world.env
        from metaworld.policies import ENV_POLICY_MAP

        self.world = world
        self._policies = {t: ENV_POLICY_MAP[t]() for t in world.tasks}

    def reset(self) -> None:
        pass  # the scripted policies are stateless

    def __call__(self, obs, info) -> np.ndarray:
        action = self._policies[self.world.task].get_action(self.world._flat)
        return np.clip(np.asarray(action, np.float32), -1.0, 1.0)

    def features(self) -> np.ndarray:
        """Privileged features (10,), the layout of the stack's own experts: for the auxiliary
        head, the task's target relative to the hand (dx, dy, dz, decimetres) and the goal
        relative to the target (decimetres); for the pointing head, the target in the image
        (u / width, v / height), and for the effector head the hand's. The target is what the
        hand must go to first: the goal for reach, else the task's object (puck, handle,
        button, peg: the state vector's first object)."""
        flat = self.world._flat
        hand, obj, goal = flat[:3], flat[4:7], flat[36:39]
        target = goal if self.world.task == "reach-v3" else obj
        out = np.zeros(10, np.float32)
        out[:3] = (target - hand) * 10.0
        out[3:6] = (goal - target) * 10.0
        out[6:10] = self.world.image_position(np.stack([target, hand])).reshape(-1)
        return out


# --- the registrations -------------------------------------------------------------------------

EMBODIMENT = EmbodimentSpec(
    "sawyer", ("ee_dx", "ee_dy", "ee_dz", "gripper"),
    (-ACTION_SCALE_M, -ACTION_SCALE_M, -ACTION_SCALE_M, -1.0),  # m per step; gripper -1 open
    (ACTION_SCALE_M, ACTION_SCALE_M, ACTION_SCALE_M, 1.0),  # gripper +1 closed (effort)
    gripper=3, ros_command="joints")


def _make(tasks: tuple[str, ...]):
    def make_env(width: int = 64, height: int = 64, **kwargs) -> MetaWorldEnv:
        kwargs.pop("max_episode_steps", None)  # (the spec's episode_limit, WorldEnv enforces it)
        return MetaWorldEnv(width=width, height=height, tasks=tasks, **kwargs)

    make_env.__name__ = make_env.__qualname__ = "make_" + "_".join(t.split("-")[0] for t in tasks)
    return make_env


def _vocabulary() -> list[str]:
    return sorted({w for text in MT10_TASKS.values() for w in text.split()})


def _spec(name: str, tasks: tuple[str, ...], description: str) -> WorldSpec:
    return WorldSpec(
        name=name, make_env=_make(tasks), embodiment=EMBODIMENT,
        control_rate_hz=CONTROL_RATE_HZ, episode_limit=EPISODE_LIMIT, success_key="success",
        proprio_names=PROPRIO_NAMES, instruction=MT10_TASKS[tasks[0]] if len(tasks) == 1 else "",
        vocabulary=_vocabulary, seed_fixes_start=True, expert=MetaWorldExpert,
        expert_lookahead=True, skip_render=True,
        train_defaults={"demo_episodes": 50 * len(tasks), "dagger_episodes": 10 * len(tasks),
                        "rl_groups": 10, "entropy_probe_episodes": 10,
                        "proprio_inputs": [0, 1, 2, 3]},
        description=description)


def specs() -> list[WorldSpec]:
    """The MT10 worlds (none when metaworld is not installed)."""
    if not available():
        return []
    out = [_spec("metaworld_mt10", tuple(TASK_NAMES),
                 "Meta-World MT10 (v3): ten Sawyer tasks, the seed picks one (seed % 10)")]
    for task in TASK_NAMES:
        out.append(_spec(world_name(task), (task,),
                         f"Meta-World {task}: {MT10_TASKS[task]} (Sawyer, MT10)"))
    return out
