"""Scripted experts: privileged-state controllers that solve each world (>= 95% success).

They are the warm-start teachers for behaviour cloning, the `expert` backend of the policy
node in simulation, and the reference for every success-rate figure.
"""

from __future__ import annotations

from typing import Any, Protocol, SupportsFloat, cast

import gymnasium
import numpy as np


class LookaheadWorld(Protocol):
    """What expert look-ahead needs of a world (TabletopEnv, DrivingEnv; ``env.unwrapped``,
    which gymnasium types as a plain Env): exact snapshot/restore, and ``_lookahead``, which
    makes steps skip rendering."""

    _lookahead: bool

    def snapshot(self) -> tuple: ...

    def restore(self, snap: tuple) -> None: ...

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]: ...


def make_expert(env: gymnasium.Env):
    """The scripted expert of a world made by ``sim.worlds.make_world`` (its spec's
    ``expert``), or of a bare TabletopEnv / DrivingEnv (wrapped or not)."""
    from embodied_stack.sim.worlds.registry import make_world_expert, world_spec_of

    try:
        world_spec_of(env)
    except ValueError:
        from embodied_stack.sim.worlds.driving import DrivingEnv
        from embodied_stack.sim.worlds.tabletop import TabletopEnv

        world = env.unwrapped
        if isinstance(world, TabletopEnv):
            from embodied_stack.sim.experts.tabletop import TabletopExpert

            return TabletopExpert(env)
        if isinstance(world, DrivingEnv):
            from embodied_stack.sim.experts.driving import DrivingExpert

            return DrivingExpert(env)
        raise TypeError(f"no scripted expert for {type(world).__name__}") from None
    return make_world_expert(env)


def expert_features(expert) -> np.ndarray:
    """An expert's auxiliary targets (``features()``), NaN (no target) for an expert without."""
    features = getattr(expert, "features", None)
    if features is None:
        return np.full(FEATURE_DIM, np.nan, np.float32)
    return np.asarray(features(), np.float32)


def expert_chunk(env: gymnasium.Env, expert, length: int, first_action=None, obs=None, info=None):
    """The expert's next `length` actions from the world's current state, as it would act if
    it took over now: (length, action_dim) float32 and a (length,) bool mask (False past the
    episode's end).

    The world is stepped ahead without rendering and then restored exactly (world
    ``snapshot``/``restore``), and so is the expert's own memory (its target and phase), so a
    label never sees noise or learner actions that were not part of its own chunk (DART and
    DAgger both label with this). ``first_action``: the expert's action at this state when
    the caller already asked for it (its phase has then advanced, as it should); otherwise
    the expert is asked with ``obs``, ``info`` (the current step's). Inside the look-ahead the
    expert gets each step's own observation and info, whose images are None (not rendered).

    A world made by ``make_world`` is stepped through its WorldEnv (time limit and success
    termination apply to the look-ahead as to every step); one without snapshot/restore
    (``WorldSpec.expert_lookahead`` False) gets its first action only, the rest masked.
    """
    from embodied_stack.sim.worlds.registry import WorldEnv

    first = np.asarray(expert(obs, info) if first_action is None else first_action, np.float32)
    chunk = np.zeros((length, first.shape[0]), np.float32)
    mask = np.zeros(length, bool)
    chunk[0], mask[0] = first, True
    if length == 1:
        return chunk, mask
    # What steps ahead, and how it is told it is looking ahead (no rendering, no side effects).
    stepper: WorldEnv | LookaheadWorld
    if isinstance(env, WorldEnv):
        if not env.can_lookahead:
            return chunk, mask
        stepper, rendering = env, env.skip_render

        def looking_ahead(on: bool) -> None:
            env.skip_render = True if on else rendering
    else:
        stepper = world = cast(LookaheadWorld, env.unwrapped)

        def looking_ahead(on: bool) -> None:
            world._lookahead = on
    snap, memory = stepper.snapshot(), dict(vars(expert))
    looking_ahead(True)
    try:
        action = first
        for t in range(1, length):
            obs, _, terminated, truncated, info = stepper.step(action)
            if terminated or truncated:
                break
            action = np.asarray(expert(obs, info), np.float32)
            chunk[t], mask[t] = action, True
    finally:
        looking_ahead(False)
        stepper.restore(snap)
        vars(expert).update(memory)
    return chunk, mask


#: The entries of every expert's ``features()`` vector, named as sim/expert_features and a
#: recorded dataset's ``observation.privileged`` name them: [0:6] the auxiliary head's
#: regression targets, [6:8] where the target is in the camera image (u / width, v / height of
#: its centre; NaN where the task has no object target) for the pointing head, [8:10] where the
#: robot's end effector is in the image (NaN where none is seen) for the effector head.
FEATURE_NAMES = [f"aux_{i}" for i in range(6)] + ["target_u", "target_v", "effector_u", "effector_v"]
FEATURE_DIM = len(FEATURE_NAMES)
