"""Scripted experts: privileged-state controllers that solve each world (>= 95% success).

They are the warm-start teachers for behaviour cloning, the `expert` backend of the policy
node in simulation, and the reference for every success-rate figure.
"""

from __future__ import annotations

import gymnasium


def make_expert(env: gymnasium.Env):
    """The scripted expert for `env` (any wrapper around a world from embodied_stack.sim)."""
    from embodied_stack.sim.worlds.driving import DrivingEnv
    from embodied_stack.sim.worlds.tabletop import TabletopEnv

    world = env.unwrapped
    if isinstance(world, TabletopEnv):
        from embodied_stack.sim.experts.tabletop import TabletopExpert

        return TabletopExpert(env)
    if isinstance(world, DrivingEnv):
        from embodied_stack.sim.experts.driving import DrivingExpert

        return DrivingExpert(env)
    raise TypeError(f"no scripted expert for {type(world).__name__}")
