"""Launch arguments -> node parameters, shared by `launch/robot.launch.py` and
`launch/sim.launch.py`. Plain Python (no rclpy, no launch import), so the rules are tested
without a ROS 2 install.

The rules:
- Every node parameter comes from its YAML file (`config/*.yaml`, keys under `/**:` so they
  also apply in a namespace). A launch argument overrides a parameter only when it is given on
  the command line (or by an including launch file); an argument left unset (its default is
  the empty string) leaves the YAML value alone.
- A given argument is converted to the parameter's type (bool, int, float, string or a list
  of numbers), never
  evaluated as Python; a value that does not convert is an error that names the argument,
  the value and the expected type.
"""

from __future__ import annotations

#: Default of an override argument: "not given, keep the YAML value".
UNSET = ""

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def typed(name: str, text: str, kind: type):
    """`text` (a launch argument's string) as a value of `kind`, or ValueError naming it."""
    value = text.strip()
    if kind is bool:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"launch argument {name}:={text!r} is not a boolean (true | false)")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"launch argument {name}:={text!r} is not an integer") from None
    if kind is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"launch argument {name}:={text!r} is not a number") from None
    if kind is str:
        return text
    if kind is list:  # numbers: "x y z", "x,y,z" or "[x, y, z]"
        try:
            return [float(v) for v in value.strip("[]").replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"launch argument {name}:={text!r} is not a list of numbers") from None
    raise TypeError(f"unsupported parameter type {kind!r} for launch argument {name}")


def overrides(given: dict[str, str], kinds: dict[str, type]) -> dict:
    """The parameter overrides for the launch arguments in `given` (name -> string as the
    launch system resolved it) whose value is not UNSET, each converted by `kinds`."""
    unknown = set(given) - set(kinds)
    if unknown:
        raise ValueError(f"no parameter type for launch argument(s) {sorted(unknown)}")
    return {name: typed(name, text, kinds[name]) for name, text in given.items() if text != UNSET}


def node_parameters(params_file: str, given: dict[str, str], kinds: dict[str, type]) -> list:
    """The `parameters=` list of a launch_ros Node: the YAML file first, then only the
    explicitly given overrides (later entries win in launch_ros)."""
    extra = overrides(given, kinds)
    return [params_file] + ([extra] if extra else [])


def effective_parameters(yaml_params: dict, given: dict[str, str], kinds: dict[str, type]) -> dict:
    """What the node ends up with: the YAML's parameters, then the given overrides."""
    return {**yaml_params, **overrides(given, kinds)}


def sim_camera_to_base(world: str) -> str:
    """A simulated arm world's camera pose in the arm's base frame, as the `camera_to_base`
    launch argument takes it ("x y z qx qy qz qw"). The Tabletop fingertip moves in the world
    frame, so base = world and this is the camera's world pose (fixed across episodes)."""
    from embodied_stack.control.target_control import transform_to_list
    from embodied_stack.sim.worlds import make_world

    env = make_world(world, width=8, height=8)
    try:
        _, info = env.reset(seed=0)
        return " ".join(f"{v:.6f}" for v in transform_to_list(info["camera"]["T_world_camera"]))
    finally:
        env.close()


def embodiment_of_world(world: str) -> str:
    """The embodiment that drives a simulation world (arm for tabletop, vehicle for driving,
    a registered world's own)."""
    from embodied_stack.sim.worlds import registered_worlds, world_spec

    if world not in registered_worlds():
        raise ValueError(f"launch argument world:={world!r} is not one of "
                         f"{registered_worlds()} (world_file:= registers more)")
    return world_spec(world).embodiment.name


def world_policy_parameters(world: str) -> dict:
    """Policy-node parameters a world's spec sets beyond `embodiment`: for a world whose
    actions go out as joint commands, command joints with its bounds, its proprio names and
    control rate (arm and vehicle worlds: none, the YAML's stand)."""
    from embodied_stack.sim.worlds import world_spec

    spec = world_spec(world)
    body = spec.embodiment
    if body.command_kind != "joints":
        return {}
    return {"command": "joints", "joint_low": list(body.low), "joint_high": list(body.high),
            "proprio_names": spec.proprio_layout, "control_rate_hz": float(spec.control_rate_hz),
            **({"joint_gripper": body.gripper} if body.gripper is not None else {})}


def yaml_parameters(path: str, node_name: str, namespace: str = "") -> dict:
    """The parameters a ROS 2 parameter file gives the node `namespace`/`node_name`, merged as
    ROS merges them: `/**` first, then the node's name, then its fully qualified name."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a ROS 2 parameter file is a mapping of node names")
    fqn = "/" + "/".join(p for p in (namespace.strip("/"), node_name) if p)
    merged: dict = {}
    for key in ("/**", node_name, fqn):
        section = data.get(key)
        if section is None:
            continue
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ValueError(f"{path}: '{key}' has no 'ros__parameters' mapping")
        merged.update(params)
    return merged
