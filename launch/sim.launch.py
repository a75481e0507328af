"""The simulation graph: sim bridge + the robot bringup (policy node).

Frames are stamped with the wall clock (use_sim_time false), so the policy node's staleness
and deadline checks run in real time; the bridge still publishes /clock for tools.

    ros2 launch embodied_stack sim.launch.py world:=driving backend:=vla

Launch arguments (plus every argument of robot.launch.py, passed through):
  world         tabletop | driving (picks the embodiment: arm | vehicle)
  seed          seed of the first episode
  episodes      episodes to run (0 = forever)
  width, height camera image size
  mode          realtime | lockstep
  sim_params_file  sim bridge parameter YAML (default: share/embodied_stack/config/sim.yaml)
  elastic       true | false: the elastic node (from robot.launch.py; default true)

DDS discovery stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) so a simulation
never drives a robot on the LAN; Fast DDS uses LARGE_DATA transports for images.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

PACKAGE = "embodied_stack"


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    cfg = LaunchConfiguration
    args = [
        DeclareLaunchArgument("world", default_value="tabletop", description="tabletop | driving"),
        DeclareLaunchArgument("seed", default_value="0", description="first episode seed"),
        DeclareLaunchArgument("episodes", default_value="0", description="0 = forever"),
        DeclareLaunchArgument("width", default_value="64", description="image width px"),
        DeclareLaunchArgument("height", default_value="64", description="image height px"),
        DeclareLaunchArgument("mode", default_value="realtime", description="realtime | lockstep"),
        DeclareLaunchArgument("sim_params_file",
                              default_value=os.path.join(share, "config", "sim.yaml"),
                              description="sim bridge parameter YAML"),
    ]
    env = [
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"),
    ]
    bridge = Node(
        package=PACKAGE, executable="sim_bridge_node", name="sim_bridge", output="screen",
        parameters=[cfg("sim_params_file"), {
            "world": cfg("world"), "seed": PythonExpression([cfg("seed")]),
            "episodes": PythonExpression([cfg("episodes")]),
            "width": PythonExpression([cfg("width")]), "height": PythonExpression([cfg("height")]),
            "mode": cfg("mode"),
        }],
    )
    embodiment = PythonExpression(["'vehicle' if '", cfg("world"), "' == 'driving' else 'arm'"])
    robot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "robot.launch.py")),
        launch_arguments={"embodiment": embodiment, "use_sim_time": "false"}.items(),
    )
    return LaunchDescription(args + env + [bridge, robot])
