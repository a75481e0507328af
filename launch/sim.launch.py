"""The simulation graph: sim bridge + the robot bringup (policy node).

Frames are stamped with the wall clock (use_sim_time false), so the policy node's staleness
and deadline checks run in real time; the bridge still publishes /clock for tools.

    ros2 launch embodied_stack sim.launch.py world:=driving backend:=vla

The sim bridge's parameters come from `sim_params_file` (keys under `/**:`); the arguments
below override a YAML value only when given, converted to the parameter's type.

Launch arguments (plus every argument of robot.launch.py, passed through):
  world            tabletop | driving (picks the embodiment: arm | vehicle)
  seed             seed of the first episode
  episodes         episodes to run (0 = forever)
  width, height    camera image size
  mode             realtime | lockstep
  sim_params_file  sim bridge parameter YAML (default: the installed config/sim.yaml)
  perception       true | false: robot.launch.py's perception node (default true)
  elastic          true | false: robot.launch.py's elastic node (default true)

DDS discovery stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) so a simulation
never drives a robot on the LAN, and Fast DDS uses LARGE_DATA transports for images; both only
when the variable is not already set in the environment (a value you set is kept).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from embodied_stack.nodes.launch_params import (
    UNSET,
    embodiment_of_world,
    node_parameters,
    sim_camera_to_base,
    yaml_parameters,
)
from launch import LaunchDescription

PACKAGE = "embodied_stack"

#: Sim-bridge parameters a launch argument may override, with their types.
OVERRIDES = {
    "world": (str, "tabletop | driving"),
    "seed": (int, "first episode seed"),
    "episodes": (int, "episodes to run; 0 = forever"),
    "width": (int, "image width px"),
    "height": (int, "image height px"),
    "mode": (str, "realtime | lockstep"),
}
#: DDS settings for a simulation on this host, used unless the environment already sets them.
DDS_DEFAULTS = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}


def bridge_and_robot(context):
    share = get_package_share_directory(PACKAGE)
    value = {name: LaunchConfiguration(name).perform(context)
             for name in ["sim_params_file", *OVERRIDES]}
    kinds = {k: kind for k, (kind, _) in OVERRIDES.items()}
    params = node_parameters(value["sim_params_file"], {k: value[k] for k in OVERRIDES}, kinds)
    world = value["world"]
    if world == UNSET:
        world = yaml_parameters(value["sim_params_file"], "sim_bridge").get("world", "tabletop")
    bridge = Node(package=PACKAGE, executable="sim_bridge_node", name="sim_bridge",
                  output="screen", parameters=params)
    robot_args = {"embodiment": embodiment_of_world(world)}
    if robot_args["embodiment"] == "arm" and context.launch_configurations.get(
            "camera_to_base", UNSET) == UNSET:
        robot_args["camera_to_base"] = sim_camera_to_base(world)  # the simulated camera's pose
    robot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "robot.launch.py")),
        launch_arguments=robot_args.items(),
    )
    return [bridge, robot]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    args = [DeclareLaunchArgument(name, default_value=UNSET,
                                  description=description + " (unset: from YAML)")
            for name, (_, description) in OVERRIDES.items()]
    args.append(DeclareLaunchArgument("sim_params_file",
                                      default_value=os.path.join(share, "config", "sim.yaml"),
                                      description="sim bridge parameter YAML"))
    env = [SetEnvironmentVariable(name, EnvironmentVariable(name, default_value=default))
           for name, default in DDS_DEFAULTS.items()]
    return LaunchDescription(args + env + [OpaqueFunction(function=bridge_and_robot)])
