"""The graph a launch file starts, as plain data: which nodes, in which namespace, with which
parameters and remappings (`NodeSpec`). Computed here without `launch` or rclpy, so the
rules are unit-tested without a ROS 2 install and a test can start exactly these nodes
in-process (tests/test_multi_robot.py); `launch/robot.launch.py` and `launch/sim.launch.py`
only declare the arguments listed here and turn each NodeSpec into a launch_ros `Node`.

Names: every topic, service and parameter service of a robot is relative, so the robot's
namespace applies to all of it (camera topics, commands, `instruction`, `estop`,
`policy_node/set_parameters` that the elastic node calls, ...). Global on purpose:
- `/diagnostics`: ROS convention (diagnostic aggregators, rqt_robot_monitor listen there);
  each status is named by the node's full name (`car1/policy_node: policy`);
- `/parameter_events` and `/rosout`: ROS's own, one per graph;
- `/clock`, with one simulated world in the launch: it is that world's time, the topic tools
  (rviz, `ros2 bag`) read. With several robots (`robots:=car1,car2`) every bridge steps its
  own world, so there are as many simulated times as worlds: two publishers on one `/clock`
  would make time jump back and forth. Each robot's nodes then get `/clock` remapped to
  `/<robot>/clock`, so each runs on its own world's time under `use_sim_time:=true`; by
  default (wall time) nothing reads it but tools, given `-r /clock:=/car1/clock`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Mapping

from embodied_stack.nodes.launch_params import (
    UNSET,
    effective_parameters,
    embodiment_of_world,
    node_parameters,
    sim_camera_to_base,
    typed,
    world_policy_parameters,
    yaml_parameters,
)

PACKAGE = "embodied_stack"

#: Policy-node parameters a robot.launch.py argument may override: (type, description).
ROBOT_OVERRIDES = {
    "backend": (str, "policy backend: vla | mimo | expert"),
    "model_path": (str, "model directory (unset: the YAML's; its empty = the shipped model)"),
    "runtime": (str, "vla runtime: onnxruntime | torch"),
    "device": (str, "torch device: cpu | cuda | cuda:0"),
    "embodiment": (str, "arm (servo/delta_twist_cmds) | vehicle (cmd_vel)"),
    "submodel": (str, "elastic submodel: full | 3/4 | 1/2 | 1/4"),
    "use_sim_time": (bool, "true: every node runs on the simulated /clock"),
    "camera_to_base": (list, "arm: the camera optical frame's pose in the base frame, "
                             "'x y z qx qy qz qw' (target backends such as mimo)"),
    "instruction_tasks": (str, "check each instruction against known tasks first: '' (off) | tabletop | "
                               "driving | a tasks .yaml (one that matches none stops the robot)"),
}
#: The policy node's input topics and the argument that remaps each: (default, description).
REMAPS = {
    "color_topic": ("camera/color/image_raw", "colour image topic"),
    "depth_topic": ("camera/depth/image_raw", "depth image topic"),
    "camera_info_topic": ("camera/color/camera_info", "camera info topic"),
    "instruction_topic": ("instruction", "instruction topic (std_msgs/String)"),
    "estop_topic": ("estop", "e-stop topic (std_msgs/Bool)"),
    "joint_states_topic": ("joint_states", "proprio source (sensor_msgs/JointState)"),
    "odom_topic": ("odom", "odometry (vehicle speed)"),
}
CAMERA_REMAPS = ("color_topic", "depth_topic", "camera_info_topic")  # the perception node's
#: Sim-bridge parameters a sim.launch.py argument may override: (type, description).
SIM_OVERRIDES = {
    "world": (str, "a registered world: tabletop | driving | one of world_file's (picks the "
                   "embodiment: arm | vehicle | the spec's, on joint_commands)"),
    "world_file": (str, "adapter files that register worlds, comma-separated (docs/worlds.md)"),
    "seed": (int, "first episode seed"),
    "episodes": (int, "episodes to run; 0 = forever"),
    "width": (int, "image width px"),
    "height": (int, "image height px"),
    "mode": (str, "realtime | lockstep"),
}
#: What the policy node runs and the elastic node's latency table must describe.
ELASTIC_MIRRORED = ("device", "model_path", "runtime", "submodel", "use_sim_time")

_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Argument:
    """A launch argument: DeclareLaunchArgument(name, default_value=default, description=...)."""
    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    """One node as launch_ros starts it: Node(package, executable, name, namespace,
    parameters, remappings)."""
    executable: str
    name: str
    namespace: str = ""  # absolute ("/car1") or "" (the root)
    parameters: list = field(default_factory=list)  # YAML paths and dicts; later ones win
    remappings: list = field(default_factory=list)  # (from, to)

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def launch_node(self):
        """This node as a launch_ros action (needs a ROS 2 install: launch_ros has no wheel)."""
        from launch_ros.actions import Node

        return Node(package=PACKAGE, executable=self.executable, name=self.name,
                    namespace=self.namespace, parameters=self.parameters,
                    remappings=self.remappings, output="screen")

    def ros_arguments(self, params_dir: str) -> list[str]:
        """The node's `--ros-args` as launch_ros gives them (a dict of parameters goes in a
        YAML file under `/**`, written to `params_dir`): for rclpy's `cli_args=`."""
        import yaml

        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for i, params in enumerate(self.parameters):
            if isinstance(params, dict):
                stem = self.fully_qualified_name.strip("/").replace("/", "__")
                path = os.path.join(params_dir, f"{stem}_{i}.yaml")
                with open(path, "w") as f:
                    yaml.safe_dump({"/**": {"ros__parameters": params}}, f)
                params = path
            args += ["--params-file", str(params)]
        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        return args


def namespace_of(text: str, argument: str = "namespace") -> str:
    """A launch argument's namespace as an absolute ROS namespace ("car1" -> "/car1", "" ->
    ""), or ValueError naming the argument."""
    name = text.strip().strip("/")
    if name and not _NAMESPACE.fullmatch(name):
        raise ValueError(f"launch argument {argument}:={text!r}: {name!r} is not a ROS namespace "
                         "(letters, digits, _ and /; no part starts with a digit)")
    return "/" + name if name else ""


def robot_namespaces(robots: str, namespace: str) -> list[str]:
    """The namespaces of the simulated robots: `robots:=car1,car2` (commas or spaces), else
    the one robot in `namespace:=` (the root when that is empty too)."""
    names = [n for n in re.split(r"[,\s]+", robots.strip().strip("[]")) if n]
    if not names:
        return [namespace_of(namespace)]
    if namespace_of(namespace):
        raise ValueError(f"give robots:= or namespace:=, not both (robots:={robots!r} "
                         f"namespace:={namespace!r})")
    spaces = [namespace_of(n, "robots") for n in names]
    if "" in spaces or len(set(spaces)) != len(spaces):
        raise ValueError(f"robots:={robots!r}: each robot needs a namespace of its own")
    return spaces


# --- robot.launch.py ----------------------------------------------------------------------
def robot_arguments(share: str) -> list[Argument]:
    """robot.launch.py's arguments; `share` is the installed share/embodied_stack."""
    config = os.path.join(share, "config")
    return [
        Argument("params_file", os.path.join(config, "policy.yaml"), "policy_node parameter YAML"),
        Argument("namespace", "", "ROS namespace of every node of the robot (topics, services, "
                                  "parameters; /diagnostics stays global)"),
        Argument("cmd_topic", UNSET, "command topic; unset = the embodiment's default "
                                     "(servo/delta_twist_cmds or cmd_vel)"),
        *(Argument(name, UNSET, description + " (unset: from YAML)")
          for name, (_, description) in ROBOT_OVERRIDES.items()),
        *(Argument(name, default, description) for name, (default, description) in REMAPS.items()),
        Argument("perception", "true", "start the perception node: true | false"),
        Argument("perception_params_file", os.path.join(config, "perception.yaml"),
                 "perception_node parameter YAML"),
        Argument("elastic", "true", "start elastic_node (switches the policy's submodel to fit "
                                    "the budget; vla backend only): true | false"),
        Argument("elastic_params_file", os.path.join(config, "elastic.yaml"),
                 "elastic_node parameter YAML"),
    ]


def _kinds(table: dict) -> dict[str, type]:
    return {name: kind for name, (kind, _) in table.items()}


def robot_nodes(value: Mapping[str, str], remappings: list | tuple = ()) -> list[NodeSpec]:
    """The nodes of robot.launch.py for its argument values (name -> string, every argument
    of `robot_arguments`); `remappings` go to every node (sim.launch.py's per-robot clock)."""
    namespace = namespace_of(value["namespace"])
    extra = list(remappings)
    given = {k: value[k] for k in ROBOT_OVERRIDES}
    remaps = [(REMAPS[name][0], value[name]) for name in REMAPS]
    if value["cmd_topic"] != UNSET:
        # Both command topics map to it; the node publishes on its embodiment's one.
        remaps += [("cmd_vel", value["cmd_topic"]), ("servo/delta_twist_cmds", value["cmd_topic"])]
    nodes = [NodeSpec("policy_node", "policy_node", namespace,
                      node_parameters(value["params_file"], given, _kinds(ROBOT_OVERRIDES)),
                      remaps + extra)]
    if typed("perception", value["perception"], bool):
        nodes.append(NodeSpec(
            "perception_node", "perception_node", namespace,
            node_parameters(value["perception_params_file"], {"use_sim_time": value["use_sim_time"]},
                            {"use_sim_time": bool}),
            [(REMAPS[name][0], value[name]) for name in CAMERA_REMAPS] + extra))
    if typed("elastic", value["elastic"], bool):
        # What the policy node runs (its YAML, then the given overrides) is what the elastic
        # node's latency table must describe.
        policy = effective_parameters(
            yaml_parameters(value["params_file"], "policy_node", namespace), given,
            _kinds(ROBOT_OVERRIDES))
        if policy.get("backend", "vla") == "vla":
            mirrored = {k: policy[k] for k in ELASTIC_MIRRORED if k in policy}
            nodes.append(NodeSpec("elastic_node", "elastic_node", namespace,
                                  [value["elastic_params_file"], mirrored], extra))
    return nodes


# --- sim.launch.py ------------------------------------------------------------------------
def sim_arguments(share: str) -> list[Argument]:
    """sim.launch.py's own arguments (it takes robot.launch.py's too)."""
    return [
        *(Argument(name, UNSET, description + " (unset: from YAML)")
          for name, (_, description) in SIM_OVERRIDES.items()),
        Argument("sim_params_file", os.path.join(share, "config", "sim.yaml"),
                 "sim bridge parameter YAML (per robot: keys /<robot>/sim_bridge)"),
        Argument("robots", "", "robot namespaces, e.g. car1,car2: one sim bridge (its own "
                               "world) and one robot bringup per robot, each on "
                               "/<robot>/clock; unset = one robot in namespace:="),
    ]


def sim_nodes(value: Mapping[str, str]) -> list[NodeSpec]:
    """The nodes of sim.launch.py for its argument values (`sim_arguments` and
    `robot_arguments`): per robot, a sim bridge and the robot bringup in its namespace."""
    spaces = robot_namespaces(value["robots"], value["namespace"])
    sim_given = {k: value.get(k, UNSET) for k in SIM_OVERRIDES}
    sim_given["use_sim_time"] = value["use_sim_time"]  # the bridge stamps with the graph's clock
    kinds = {**_kinds(SIM_OVERRIDES), "use_sim_time": bool}
    poses: dict[str, str] = {}
    nodes = []
    for namespace in spaces:
        clock = [("/clock", f"{namespace}/clock")] if len(spaces) > 1 else []
        world = value["world"]
        if world == UNSET:
            world = yaml_parameters(value["sim_params_file"], "sim_bridge", namespace).get(
                "world", "tabletop")
        files = value.get("world_file", UNSET)
        files = files if files != UNSET else yaml_parameters(
            value["sim_params_file"], "sim_bridge", namespace).get("world_file", "")
        from embodied_stack.sim.worlds import load_world_files  # (mujoco: only when launched)

        load_world_files(files)
        nodes.append(NodeSpec("sim_bridge_node", "sim_bridge", namespace,
                              node_parameters(value["sim_params_file"], sim_given, kinds), clock))
        robot = dict(value, namespace=namespace, embodiment=embodiment_of_world(world))
        if robot["embodiment"] == "arm" and value["camera_to_base"] == UNSET:
            if world not in poses:
                poses[world] = sim_camera_to_base(world)  # the simulated camera's pose
            robot["camera_to_base"] = poses[world]
        extra = world_policy_parameters(world)  # (a joints world: its layout and rate)
        nodes += [replace(n, parameters=[*n.parameters, extra])
                  if extra and n.executable == "policy_node" else n for n in robot_nodes(robot, clock)]
    return nodes


def argument_defaults(arguments: list[Argument]) -> dict[str, str]:
    """Each argument's default, as the launch system resolves an argument left unset."""
    return {a.name: a.default for a in arguments}
