"""Gymnasium's MuJoCo ``Reacher-v5`` as a world of embodied_stack: nothing but this adapter
file and its registration (docs/worlds.md walks through it).

    embodied-stack eval --world-file examples/worlds/reacher.py --world reacher --model DIR
    embodied-stack train --world-files examples/worlds/reacher.py --worlds reacher --init-from '' ...
    EMBODIED_STACK_WORLDS=examples/worlds/reacher.py embodied-stack eval --world reacher ...

A two-link planar arm (torques on its two joints) must bring its fingertip to a target drawn
anew each episode. The adapter gives:

- 64x64 RGB renders from a camera above the arena (no depth: zeros are fed);
- proprio [cos q0, cos q1, sin q0, sin q1, dq0, dq1, tip x, tip y] (the target's position is
  NOT in it: the policy must see the red target in the image);
- success: the fingertip within SUCCESS_RADIUS of the target for HOLD_STEPS steps in a row;
- the fixed instruction "reach the target";
- seeded starts (Reacher-v5 draws the arm's pose and the target from its seeded np_random);
- a scripted expert from privileged state: Jacobian-transpose PD control of the fingertip
  toward the target, with exact snapshot/restore for its chunk labels' look-ahead.

"""

from __future__ import annotations

import gymnasium
import numpy as np

from embodied_stack.sim.worlds import EmbodimentSpec, WorldSpec, register_world

SUCCESS_RADIUS = 0.02  #: m, fingertip to target
HOLD_STEPS = 3  #: steps in a row within SUCCESS_RADIUS for a success
FRAME_SKIP = 4  #: physics steps of 0.01 s per control step: 25 Hz
EPISODE_LIMIT = 50  #: control steps (2 s)
INSTRUCTION = "reach the target"
#: A camera straight above the arena's centre, the whole reach (0.21 m) and target in view.
CAMERA = {"distance": 0.62, "elevation": -90.0, "azimuth": 90.0,
          "lookat": np.array([0.0, 0.0, 0.0])}


def _import_gymnasium_mujoco() -> None:
    """Headless GL as the stack chooses it, before Gymnasium's MuJoCo envs load MuJoCo."""
    from embodied_stack.sim.worlds.base import select_gl_backend

    select_gl_backend()


class ReacherWorld(gymnasium.Wrapper):
    """Reacher-v5 with the stack's observation dict and success signal (module docstring)."""

    def __init__(self, width: int = 64, height: int = 64):
        _import_gymnasium_mujoco()
        # max_episode_steps=-1: no TimeLimit of Gymnasium's own; the spec's episode_limit is
        # enforced by the stack's WorldEnv, on every step.
        env = gymnasium.make("Reacher-v5", render_mode="rgb_array", width=width, height=height,
                             max_episode_steps=-1, frame_skip=FRAME_SKIP,
                             default_camera_config=CAMERA, disable_env_checker=True)
        super().__init__(env)
        self.observation_space = gymnasium.spaces.Dict({
            "rgb": gymnasium.spaces.Box(0, 255, (height, width, 3), np.uint8),
            "proprio": gymnasium.spaces.Box(-np.inf, np.inf, (8,), np.float32)})
        self._lookahead = False  #: True: steps do not render (chunk insides, look-ahead)
        self._held = 0

    # --- privileged state (the expert's) ---
    @property
    def sim(self):
        return self.env.unwrapped

    def fingertip(self) -> np.ndarray:
        return np.array(self.sim.get_body_com("fingertip")[:2])

    def target(self) -> np.ndarray:
        return np.array(self.sim.get_body_com("target")[:2])

    def distance(self) -> float:
        return float(np.linalg.norm(self.fingertip() - self.target()))

    # --- the episode ---
    def _observe(self) -> dict:
        data = self.sim.data
        q, dq = data.qpos.flat[:2], data.qvel.flat[:2]
        proprio = np.concatenate([np.cos(q), np.sin(q), dq, self.fingertip()]).astype(np.float32)
        return {"rgb": None if self._lookahead else self.env.render(), "proprio": proprio}

    def reset(self, *, seed=None, options=None):
        self.env.reset(seed=seed, options=options)
        self._held = 0
        return self._observe(), {"is_success": False, "distance": self.distance()}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        _, reward, terminated, truncated, _ = self.env.step(action)
        distance = self.distance()
        self._held = self._held + 1 if distance < SUCCESS_RADIUS else 0
        success = self._held >= HOLD_STEPS
        info = {"is_success": success, "distance": distance,
                "outcome": "success" if success else "none"}
        return self._observe(), float(reward), bool(terminated), bool(truncated), info

    # --- exact snapshots, for the expert's look-ahead ---
    # (MuJoCo's whole integration state, not qpos/qvel alone: with contacts the solver's warm
    # start matters, and a replay from positions and velocities only drifts)
    def snapshot(self) -> tuple:
        from embodied_stack.sim.worlds.base import mujoco_state  # (MuJoCo only once a world runs)

        return (mujoco_state(self.sim.model, self.sim.data), self._held)

    def restore(self, snap: tuple) -> None:
        from embodied_stack.sim.worlds.base import set_mujoco_state

        set_mujoco_state(self.sim.model, self.sim.data, snap[0])
        self._held = snap[1]


class ReacherExpert:
    """Jacobian-transpose PD on the fingertip: torque = J^T (kp (target - tip) - kd tip
    velocity), from privileged state; normalised to the actuators' [-1, 1]."""

    def __init__(self, env, kp: float = 60.0, kd: float = 5.0):
        world = env
        while not isinstance(world, ReacherWorld):
            world = world.env
        self.world, self.kp, self.kd = world, kp, kd

    def reset(self) -> None:
        pass

    def __call__(self, obs, info) -> np.ndarray:
        import mujoco

        sim = self.world.sim
        body = sim.model.body("fingertip").id
        jacp = np.zeros((3, sim.model.nv))
        mujoco.mj_jacBody(sim.model, sim.data, jacp, None, body)
        J = jacp[:2, :2]  # the fingertip's x, y over the two arm joints
        error = self.world.target() - self.world.fingertip()
        velocity = J @ sim.data.qvel[:2]
        force = self.kp * error - self.kd * velocity
        return np.clip(J.T @ force, -1.0, 1.0).astype(np.float32)


REACHER = register_world(WorldSpec(
    name="reacher", make_env=ReacherWorld,
    embodiment=EmbodimentSpec("reacher", ("joint0_torque", "joint1_torque"), (-1.0, -1.0),
                              (1.0, 1.0), ros_command="joints"),
    control_rate_hz=25.0, episode_limit=EPISODE_LIMIT,  # (0.01 s x FRAME_SKIP a step)
    proprio_names=("cos_q0", "cos_q1", "sin_q0", "sin_q1", "dq0", "dq1", "tip_x", "tip_y"),
    instruction=INSTRUCTION, expert=ReacherExpert, expert_lookahead=True, skip_render=True,
    train_defaults={"demo_episodes": 100, "dagger_episodes": 32, "rl_groups": 4,
                    "entropy_probe_episodes": 4, "proprio_inputs": list(range(8))},
    description="Gymnasium MuJoCo Reacher-v5: bring the fingertip to the red target"))
