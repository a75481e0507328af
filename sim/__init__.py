"""Simulation: Gymnasium worlds on MuJoCo, scripted experts, the RL trainer. No rclpy here.

Importing this package registers the worlds with Gymnasium:

    import gymnasium as gym
    import embodied_stack.sim  # noqa: F401  (registers the ids below)
    env = gym.make("EmbodiedStack/Tabletop-v0", width=64, height=64)

or, without the import: ``gym.make("embodied_stack.sim:EmbodiedStack/Driving-v0")``.
"""

import gymnasium

#: Gymnasium ids of the worlds, by short name (as the CLI and the nodes take them).
WORLD_IDS = {
    "tabletop": "EmbodiedStack/Tabletop-v0",
    "driving": "EmbodiedStack/Driving-v0",
}

if WORLD_IDS["tabletop"] not in gymnasium.registry:
    gymnasium.register(
        id=WORLD_IDS["tabletop"],
        entry_point="embodied_stack.sim.worlds.tabletop:TabletopEnv",
    )
if WORLD_IDS["driving"] not in gymnasium.registry:
    gymnasium.register(
        id=WORLD_IDS["driving"],
        entry_point="embodied_stack.sim.worlds.driving:DrivingEnv",
    )
