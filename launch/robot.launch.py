"""Bring up embodied_stack on a robot: the policy node, wired to the robot's topics.

    ros2 launch embodied_stack robot.launch.py embodiment:=vehicle \
        color_topic:=/front/color/image_raw depth_topic:=/front/depth/image_raw \
        camera_info_topic:=/front/color/camera_info cmd_topic:=/cmd_vel

Launch arguments (all optional):
  params_file        parameter YAML (default: share/embodied_stack/config/policy.yaml)
  namespace          ROS namespace of the nodes ("")
  backend            vla | mimo | expert (overrides the YAML)
  model_path         model directory ("" = shipped default; required for mimo)
  device             cpu | cuda | cuda:0
  embodiment         arm | vehicle
  submodel           full | 3/4 | 1/2 | 1/4
  use_sim_time       true with a simulator publishing /clock
  elastic            true | false: run elastic_node, which switches the policy's submodel to
                     fit the live GPU/CPU budget (default true)
  elastic_params_file  parameter YAML for elastic_node (default: config/elastic.yaml)
  color_topic, depth_topic, camera_info_topic, instruction_topic, estop_topic,
  joint_states_topic, odom_topic, cmd_topic
                     remaps of the node's standard topics (DESIGN §3)

ROS_DOMAIN_ID and SROS2 (ROS_SECURITY_*) settings come from the environment: this file does
not override them. The perception node joins this launch when it lands.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

PACKAGE = "embodied_stack"

ARGUMENTS = {
    "params_file": (None, "parameter YAML for policy_node"),
    "namespace": ("", "ROS namespace of the nodes"),
    "backend": ("vla", "policy backend: vla | mimo | expert"),
    "model_path": ("", "model directory; empty = the shipped default model"),
    "device": ("cpu", "torch device: cpu | cuda | cuda:0"),
    "embodiment": ("arm", "arm (servo/delta_twist_cmds) | vehicle (cmd_vel)"),
    "submodel": ("full", "elastic submodel: full | 3/4 | 1/2 | 1/4"),
    "use_sim_time": ("false", "use /clock"),
    "color_topic": ("camera/color/image_raw", "colour image topic"),
    "depth_topic": ("camera/depth/image_raw", "depth image topic"),
    "camera_info_topic": ("camera/color/camera_info", "camera info topic"),
    "instruction_topic": ("instruction", "instruction topic (std_msgs/String)"),
    "estop_topic": ("estop", "e-stop topic (std_msgs/Bool)"),
    "joint_states_topic": ("joint_states", "proprio source (sensor_msgs/JointState)"),
    "odom_topic": ("odom", "odometry (vehicle speed)"),
    "cmd_topic": ("", "command topic; empty = servo/delta_twist_cmds (arm) or cmd_vel"),
}


def declare_arguments():
    share = get_package_share_directory(PACKAGE)
    actions = []
    for name, (default, description) in ARGUMENTS.items():
        if name == "params_file":
            default = os.path.join(share, "config", "policy.yaml")
        actions.append(DeclareLaunchArgument(name, default_value=default,
                                             description=description))
    return actions


def policy_node():
    cfg = LaunchConfiguration
    remaps = [
        ("camera/color/image_raw", cfg("color_topic")),
        ("camera/depth/image_raw", cfg("depth_topic")),
        ("camera/color/camera_info", cfg("camera_info_topic")),
        ("instruction", cfg("instruction_topic")),
        ("estop", cfg("estop_topic")),
        ("joint_states", cfg("joint_states_topic")),
        ("odom", cfg("odom_topic")),
    ]
    params = [cfg("params_file"), {
        "backend": cfg("backend"), "model_path": cfg("model_path"), "device": cfg("device"),
        "embodiment": cfg("embodiment"), "submodel": cfg("submodel"),
        "use_sim_time": PythonExpression(["'", cfg("use_sim_time"), "' == 'true'"]),
    }]
    common = dict(package=PACKAGE, executable="policy_node", name="policy_node",
                  namespace=cfg("namespace"), parameters=params, output="screen")
    has_cmd = PythonExpression(["'", cfg("cmd_topic"), "' != ''"])
    no_cmd = PythonExpression(["'", cfg("cmd_topic"), "' == ''"])
    # The command topic is remapped only when cmd_topic is given (its default depends on
    # the embodiment), hence two variants of the same node under opposite conditions.
    return [
        Node(**common, remappings=remaps + [("cmd_vel", cfg("cmd_topic")),
                                            ("servo/delta_twist_cmds", cfg("cmd_topic"))],
             condition=IfCondition(has_cmd)),
        Node(**common, remappings=remaps, condition=IfCondition(no_cmd)),
    ]


def elastic_node():
    """elastic_node next to the policy node (same namespace), off with elastic:=false."""
    share = get_package_share_directory(PACKAGE)
    cfg = LaunchConfiguration
    return [
        DeclareLaunchArgument("elastic", default_value="true",
                              description="run elastic_node (switches the policy's submodel)"),
        DeclareLaunchArgument("elastic_params_file",
                              default_value=os.path.join(share, "config", "elastic.yaml"),
                              description="parameter YAML for elastic_node"),
        Node(package=PACKAGE, executable="elastic_node", name="elastic_node",
             namespace=cfg("namespace"), output="screen",
             parameters=[cfg("elastic_params_file"), {
                 "device": cfg("device"), "model_path": cfg("model_path"),
                 "submodel": cfg("submodel"),
                 "use_sim_time": PythonExpression(["'", cfg("use_sim_time"), "' == 'true'"])}],
             condition=IfCondition(PythonExpression([
                 "'", cfg("elastic"), "' == 'true' and '", cfg("backend"), "' == 'vla'"]))),
    ]


def generate_launch_description():
    return LaunchDescription(declare_arguments() + policy_node() + elastic_node())
