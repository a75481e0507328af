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
