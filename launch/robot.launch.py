"""Bring up embodied_stack on a robot: the policy node, wired to the robot's topics.

    ros2 launch embodied_stack robot.launch.py embodiment:=vehicle \
        color_topic:=/front/color/image_raw depth_topic:=/front/depth/image_raw \
        camera_info_topic:=/front/color/camera_info cmd_topic:=/cmd_vel

Every parameter of the policy node comes from `params_file` (default: the installed
config/policy.yaml, keys under `/**:` so it also applies in a namespace). The override
arguments below replace a YAML value only when given; left unset, the YAML decides. Values are
converted to the parameter's type (never evaluated): `use_sim_time:=maybe` is an error.

Launch arguments (all optional):
  params_file        policy_node parameter YAML
  namespace          ROS namespace of the nodes ("")
  backend            vla | mimo | expert
  model_path         model directory (the YAML's "" = the shipped default; required for mimo)
  runtime            vla runtime: onnxruntime | torch
  device             cpu | cuda | cuda:0
  embodiment         arm | vehicle
  submodel           full | 3/4 | 1/2 | 1/4
  use_sim_time       true with a simulator publishing /clock
  camera_to_base     arm: camera optical frame pose in the base frame, "x y z qx qy qz qw"
                     (needed by target backends such as mimo; sim.launch.py sets it)
  elastic            true | false: run elastic_node, which switches the policy's submodel to
                     fit the live GPU/CPU budget (default true)
  elastic_params_file  parameter YAML for elastic_node (default: config/elastic.yaml)
  color_topic, depth_topic, camera_info_topic, instruction_topic, estop_topic,
  joint_states_topic, odom_topic
                     remaps of the node's standard input topics
  cmd_topic          command topic; unset = servo/delta_twist_cmds (arm) or cmd_vel (vehicle)
  perception         true | false: start the perception node (objects/markers, objects/cloud,
                     objects/poses from the same camera topics; default true)
  perception_params_file  its parameter YAML (default: the installed config/perception.yaml)
  elastic            true | false: start the elastic node, which switches the policy's
                     submodel to fit the GPU/CPU budget (vla backend only; default true)
  elastic_params_file     its parameter YAML (default: the installed config/elastic.yaml); the
                     policy's device, model_path, runtime, submodel and use_sim_time are
                     passed to it as the policy node gets them

ROS_DOMAIN_ID and SROS2 (ROS_SECURITY_*) settings come from the environment: this file does
not set them.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from embodied_stack.nodes.launch_params import UNSET, effective_parameters, node_parameters, typed, yaml_parameters
from launch import LaunchDescription

PACKAGE = "embodied_stack"

#: Policy-node parameters a launch argument may override, with their types.
OVERRIDES = {
    "backend": (str, "policy backend: vla | mimo | expert"),
    "model_path": (str, "model directory (unset: the YAML's; its empty = the shipped model)"),
    "runtime": (str, "vla runtime: onnxruntime | torch"),
    "device": (str, "torch device: cpu | cuda | cuda:0"),
    "embodiment": (str, "arm (servo/delta_twist_cmds) | vehicle (cmd_vel)"),
    "submodel": (str, "elastic submodel: full | 3/4 | 1/2 | 1/4"),
    "use_sim_time": (bool, "true: use /clock"),
    "camera_to_base": (list, "arm: the camera optical frame's pose in the base frame, "
                             "'x y z qx qy qz qw' (target backends such as mimo)"),
}
#: Input topics the node subscribes to, and the launch argument that remaps each.
REMAPS = {
    "color_topic": ("camera/color/image_raw", "colour image topic"),
    "depth_topic": ("camera/depth/image_raw", "depth image topic"),
    "camera_info_topic": ("camera/color/camera_info", "camera info topic"),
    "instruction_topic": ("instruction", "instruction topic (std_msgs/String)"),
    "estop_topic": ("estop", "e-stop topic (std_msgs/Bool)"),
    "joint_states_topic": ("joint_states", "proprio source (sensor_msgs/JointState)"),
    "odom_topic": ("odom", "odometry (vehicle speed)"),
}


def declare_arguments():
    share = get_package_share_directory(PACKAGE)
    actions = [
        DeclareLaunchArgument("params_file",
                              default_value=os.path.join(share, "config", "policy.yaml"),
                              description="policy_node parameter YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="ROS namespace"),
        DeclareLaunchArgument("cmd_topic", default_value=UNSET,
                              description="command topic; unset = the embodiment's default"),
    ]
    for name, (_, description) in OVERRIDES.items():
        actions.append(DeclareLaunchArgument(name, default_value=UNSET,
                                             description=description + " (unset: from YAML)"))
    for name, (default, description) in REMAPS.items():
        actions.append(DeclareLaunchArgument(name, default_value=default,
                                             description=description))
    return actions


def policy_node(context):
    value = {name: LaunchConfiguration(name).perform(context)
             for name in ["params_file", "namespace", "cmd_topic", *OVERRIDES, *REMAPS]}
    remaps = [(REMAPS[name][0], value[name]) for name in REMAPS]
    if value["cmd_topic"] != UNSET:
        # Both command topics map to it; the node publishes on its embodiment's one.
        remaps += [("cmd_vel", value["cmd_topic"]),
                   ("servo/delta_twist_cmds", value["cmd_topic"])]
    params = node_parameters(value["params_file"], {k: value[k] for k in OVERRIDES},
                             {k: kind for k, (kind, _) in OVERRIDES.items()})
    return [Node(package=PACKAGE, executable="policy_node", name="policy_node",
                 namespace=value["namespace"], parameters=params, remappings=remaps,
                 output="screen")]


# --- perception node (nodes/perception_node.py); perception:=false leaves it out ----------
def optional_node_arguments(name: str, description: str):
    """`<name>:=true|false` (default true) and `<name>_params_file` (default: the installed
    config/<name>.yaml) for a node the launch may leave out."""
    share = get_package_share_directory(PACKAGE)
    return [
        DeclareLaunchArgument(name, default_value="true", description=description + ": true | false"),
        DeclareLaunchArgument(f"{name}_params_file",
                              default_value=os.path.join(share, "config", f"{name}.yaml"),
                              description=f"{name}_node parameter YAML"),
    ]


def perception_node(context):
    names = ["perception", "perception_params_file", "namespace", "use_sim_time",
             "color_topic", "depth_topic", "camera_info_topic"]
    value = {name: LaunchConfiguration(name).perform(context) for name in names}
    if not typed("perception", value["perception"], bool):
        return []
    params = node_parameters(value["perception_params_file"],
                             {"use_sim_time": value["use_sim_time"]}, {"use_sim_time": bool})
    remaps = [(REMAPS[name][0], value[name])
              for name in ("color_topic", "depth_topic", "camera_info_topic")]
    return [Node(package=PACKAGE, executable="perception_node", name="perception_node",
                 namespace=value["namespace"], parameters=params, remappings=remaps,
                 output="screen")]


# --- elastic node (nodes/elastic_node.py); elastic:=false leaves it out ---------------------
def elastic_node(context):
    names = ["elastic", "elastic_params_file", "params_file", "namespace", *OVERRIDES]
    value = {name: LaunchConfiguration(name).perform(context) for name in names}
    if not typed("elastic", value["elastic"], bool):
        return []
    # What the policy node runs (its YAML, then the given overrides) is what the elastic
    # node's latency table must describe.
    policy = effective_parameters(
        yaml_parameters(value["params_file"], "policy_node", value["namespace"]),
        {k: value[k] for k in OVERRIDES}, {k: kind for k, (kind, _) in OVERRIDES.items()})
    if policy.get("backend", "vla") != "vla":
        return []
    mirrored = {k: policy[k] for k in ("device", "model_path", "runtime", "submodel",
                                        "use_sim_time") if k in policy}
    return [Node(package=PACKAGE, executable="elastic_node", name="elastic_node",
                 namespace=value["namespace"], output="screen",
                 parameters=[value["elastic_params_file"], mirrored])]


def generate_launch_description():
    arguments = (declare_arguments()
                 + optional_node_arguments("perception", "start the perception node")
                 + optional_node_arguments("elastic", "start elastic_node (switches the policy's "
                                                      "submodel to fit the budget; vla only)"))
    return LaunchDescription(arguments + [OpaqueFunction(function=policy_node),
                                          OpaqueFunction(function=perception_node),
                                          OpaqueFunction(function=elastic_node)])
