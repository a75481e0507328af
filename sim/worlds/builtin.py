"""This repository's own worlds as two registrations (sim/worlds/registry.py): nothing else in
the stack knows their names. No MuJoCo import here: each piece is looked up when used."""

from __future__ import annotations

from embodied_stack.sim.worlds.spec import EmbodimentSpec, WorldSpec


def _tabletop_vocabulary():
    from embodied_stack.sim.worlds.tabletop import instruction_vocabulary

    return instruction_vocabulary()


def _driving_vocabulary():
    from embodied_stack.sim.worlds.driving import instruction_vocabulary

    return instruction_vocabulary()


def _tabletop_expert(env):
    from embodied_stack.sim.experts.tabletop import TabletopExpert

    return TabletopExpert(env)


def _driving_expert(env):
    from embodied_stack.sim.experts.driving import DrivingExpert

    return DrivingExpert(env)


def _arm_scale():
    from embodied_stack.control.commands import ArmScale
    from embodied_stack.sim.worlds import tabletop

    return ArmScale(tabletop.MAX_SPEED)


def _vehicle_scale():
    from embodied_stack.control.commands import VehicleScale
    from embodied_stack.sim.worlds import driving

    return VehicleScale(driving.MAX_STEER, driving.MAX_ACCEL, driving.MAX_SPEED,
                        driving.WHEELBASE, driving.DT)


def _task_template(info: dict) -> str:
    """The task family of an episode, from its reset info: the driving task, or the tabletop
    task with "_ambiguous" when several objects fit the instruction."""
    task = str(info.get("task", ""))
    if len(info.get("target_ids", ())) > 1:
        task += "_ambiguous"
    return task


TABLETOP = WorldSpec(
    name="tabletop", make_env="EmbodiedStack/Tabletop-v0",
    embodiment=EmbodimentSpec("arm", ("ee_vx", "ee_vy", "ee_vz"), (-0.25,) * 3, (0.25,) * 3,
                              ros_command="arm_twist"),
    control_rate_hz=10.0, episode_limit=60,
    proprio_names=("ee_x", "ee_y", "ee_z", "ee_vx", "ee_vy", "ee_vz", "contact", "unused_7"),
    has_depth=True, vocabulary=_tabletop_vocabulary, expert=_tabletop_expert,
    expert_lookahead=True, skip_render=True, options=("shift", "segmentation"),
    train_defaults={"demo_episodes": 600, "dagger_episodes": 120, "rl_groups": 8,
                    "entropy_probe_episodes": 8, "proprio_inputs": [0, 1, 2, 6]},
    command_scale=_arm_scale, task_of=_task_template,
    description="a 3-DoF arm touches or pushes the object an instruction names (MuJoCo)")

DRIVING = WorldSpec(
    name="driving", make_env="EmbodiedStack/Driving-v0",
    embodiment=EmbodimentSpec("vehicle", ("steer", "accel"), (-0.5, -3.0), (0.5, 3.0),
                              ros_command="vehicle_cmd_vel"),
    control_rate_hz=10.0, episode_limit=100, terminate_on_success=False,  # keep_lane: success all along
    proprio_names=("speed", "steer", "yaw_rate", "accel", "unused_4", "unused_5", "unused_6",
                   "unused_7"),
    has_depth=True, vocabulary=_driving_vocabulary, expert=_driving_expert,
    expert_lookahead=True, skip_render=True, options=("shift", "segmentation"),
    train_defaults={"demo_episodes": 150, "dagger_episodes": 32, "rl_groups": 4,
                    "entropy_probe_episodes": 4, "proprio_inputs": [0]},
    command_scale=_vehicle_scale, task_of=_task_template,
    description="a car keeps or changes lane, or stops, as told (MuJoCo)")

def _optional_specs() -> tuple[WorldSpec, ...]:
    """Worlds of optional packages, registered when the package is installed: Meta-World's
    MT10 (sim/worlds/metaworld_mt10.py; no import of metaworld or MuJoCo here)."""
    from embodied_stack.sim.worlds import metaworld_mt10

    return tuple(metaworld_mt10.specs())


SPECS = (TABLETOP, DRIVING) + _optional_specs()
