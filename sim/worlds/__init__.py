"""sim/worlds: the Gymnasium worlds (Tabletop, Driving) and what the rest of the stack needs to
know about them without building one."""

#: The embodiment that acts in each world: the policy node's `embodiment` parameter
#: (arm -> servo/delta_twist_cmds, vehicle -> cmd_vel).
EMBODIMENT_OF_WORLD = {"tabletop": "arm", "driving": "vehicle"}

#: Each world's proprio vector (obs["proprio"], PROPRIO_DIM long), entry by entry; the sim
#: bridge publishes it as joint_states under these names and the policy node reads them back
#: by name. "unused_k" entries are zero.
PROPRIO_NAMES = {
    "tabletop": ["ee_x", "ee_y", "ee_z", "ee_vx", "ee_vy", "ee_vz", "contact", "unused_7"],
    "driving": ["speed", "steer", "yaw_rate", "accel", "unused_4", "unused_5", "unused_6",
                "unused_7"],
}

#: Each world's action, entry by entry (the normalised action in [-1, 1] the policy emits).
ACTION_NAMES = {"tabletop": ["ee_vx", "ee_vy", "ee_vz"], "driving": ["steer", "accel"]}


def command_scale(world: str):
    """The scaling between the world's normalised action and its ROS command
    (control/commands.py), from the world's constants: ArmScale for an arm world,
    VehicleScale (integrated over one control period) for a vehicle world."""
    from embodied_stack.control.commands import ArmScale, VehicleScale

    if world == "tabletop":
        from embodied_stack.sim.worlds import tabletop

        return ArmScale(tabletop.MAX_SPEED)
    if world == "driving":
        from embodied_stack.sim.worlds import driving

        return VehicleScale(driving.MAX_STEER, driving.MAX_ACCEL, driving.MAX_SPEED,
                            driving.WHEELBASE, driving.DT)
    raise ValueError(f"world {world!r} not in {sorted(EMBODIMENT_OF_WORLD)}")


def control_rate_hz(world: str) -> int:
    """Control steps (and camera frames) per second of a world."""
    if world not in EMBODIMENT_OF_WORLD:
        raise ValueError(f"world {world!r} not in {sorted(EMBODIMENT_OF_WORLD)}")
    from embodied_stack.sim.worlds import driving, tabletop

    return int({"tabletop": tabletop.CONTROL_HZ, "driving": driving.CONTROL_HZ}[world])
