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
  color_topic, depth_topic, camera_info_topic, instruction_topic, estop_topic,
  joint_states_topic, odom_topic, cmd_topic
                     remaps of the node's standard topics (DESIGN §3)

  perception         true | false: start the perception node (objects/markers, objects/cloud,
                     objects/poses from the same camera topics)
  perception_params_file  its parameter YAML (default: share/embodied_stack/config/perception.yaml)

ROS_DOMAIN_ID and SROS2 (ROS_SECURITY_*) settings come from the environment: this file does
not override them. The elastic node joins this launch when it lands.
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


# --- perception node (nodes/perception_node.py); perception:=false leaves it out ----------
def perception():
    cfg = LaunchConfiguration
    share = get_package_share_directory(PACKAGE)
    args = [
        DeclareLaunchArgument("perception", default_value="true",
                              description="start the perception node: true | false"),
        DeclareLaunchArgument("perception_params_file",
                              default_value=os.path.join(share, "config", "perception.yaml"),
                              description="parameter YAML for perception_node"),
    ]
    node = Node(
        package=PACKAGE, executable="perception_node", name="perception_node",
        namespace=cfg("namespace"), output="screen",
        parameters=[cfg("perception_params_file"), {
            "use_sim_time": PythonExpression(["'", cfg("use_sim_time"), "' == 'true'"])}],
        remappings=[("camera/color/image_raw", cfg("color_topic")),
                    ("camera/depth/image_raw", cfg("depth_topic")),
                    ("camera/color/camera_info", cfg("camera_info_topic"))],
        condition=IfCondition(cfg("perception")),
    )
    return args + [node]


def generate_launch_description():
    return LaunchDescription(declare_arguments() + policy_node() + perception())
