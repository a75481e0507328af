"""Bring up embodied_stack on a robot: the policy node, wired to the robot's topics.

    ros2 launch embodied_stack robot.launch.py embodiment:=vehicle \
        color_topic:=/front/color/image_raw depth_topic:=/front/depth/image_raw \
        camera_info_topic:=/front/color/camera_info cmd_topic:=/cmd_vel

Every parameter of the policy node comes from `params_file` (default: the installed
config/policy.yaml, keys under `/**:` so it also applies in a namespace). The override
arguments below replace a YAML value only when given; left unset, the YAML decides. Values are
converted to the parameter's type (never evaluated): `use_sim_time:=maybe` is an error.

Launch arguments (all optional; `ros2 launch embodied_stack robot.launch.py --show-args`):
  params_file        policy_node parameter YAML
  namespace          ROS namespace of every node below: their topics, services (the policy's
                     parameter service the elastic node calls) and parameters; /diagnostics,
                     /parameter_events and /clock stay global (nodes/launch_graph.py says why)
  backend            vla | mimo | expert
  model_path         model directory (the YAML's "" = the shipped default; required for mimo)
  runtime            vla runtime: onnxruntime | torch
  device             cpu | cuda | cuda:0
  embodiment         arm | vehicle
  submodel           full | 3/4 | 1/2 | 1/4
  use_sim_time       true with a simulator publishing /clock (every node below)
  camera_to_base     arm: camera optical frame pose in the base frame, "x y z qx qy qz qw"
                     (needed by target backends such as mimo; sim.launch.py sets it)
  instruction_tasks  check each instruction against known tasks first: tabletop | driving |
                     a tasks .yaml; one that matches none stops the robot (docs/policy_node.md)
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

The nodes, namespaces, parameters and remappings are computed by
`embodied_stack.nodes.launch_graph.robot_nodes` (plain Python, tested without ROS 2's launch);
this file only declares the arguments and starts what it computes.

ROS_DOMAIN_ID and SROS2 (ROS_SECURITY_*) settings come from the environment: this file does
not set them.
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from embodied_stack.nodes.launch_graph import PACKAGE, robot_arguments, robot_nodes
from launch import LaunchDescription


def start(context):
    arguments = robot_arguments(get_package_share_directory(PACKAGE))
    value = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments}
    return [spec.launch_node() for spec in robot_nodes(value)]


def generate_launch_description():
    arguments = robot_arguments(get_package_share_directory(PACKAGE))
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
         for a in arguments] + [OpaqueFunction(function=start)])
