"""The simulation graph: per robot, a sim bridge (its own world) and the robot bringup
(policy node, perception node, elastic node), all in the robot's namespace.

    ros2 launch embodied_stack sim.launch.py world:=driving backend:=vla
    ros2 launch embodied_stack sim.launch.py world:=driving namespace:=car1
    ros2 launch embodied_stack sim.launch.py world:=driving robots:=car1,car2 backend:=expert
    ros2 launch embodied_stack sim.launch.py world:=reacher world_file:=$PWD/examples/worlds/reacher.py

Frames are stamped with the wall clock (use_sim_time false), so the policy node's staleness
and deadline checks run in real time; the bridge still publishes its world's time for tools:
on /clock with one robot, on /<robot>/clock with several (`robots:=`), where each robot's
nodes get /clock remapped to it, so `use_sim_time:=true` runs each robot on its own world's
time (two bridges on one /clock would make it jump). docs/simulation.md has the details.

The sim bridge's parameters come from `sim_params_file` (keys under `/**:`, or
`/<robot>/sim_bridge:` for one robot: its world, seed, ...); the arguments below override a
YAML value only when given, converted to the parameter's type.

Launch arguments (plus every argument of robot.launch.py, which apply to each robot):
  world            a registered world: tabletop | driving | a world_file's (picks the
                   embodiment: arm | vehicle | the spec's, whose actions go out on
                   joint_commands; docs/worlds.md)
  world_file       adapter files that register worlds, comma-separated
  seed             seed of the first episode
  episodes         episodes to run (0 = forever)
  width, height    camera image size
  mode             realtime | lockstep
  sim_params_file  sim bridge parameter YAML (default: the installed config/sim.yaml)
  robots           robot namespaces, e.g. car1,car2: one sim bridge and one robot bringup per
                   robot (unset: one robot, in namespace:=, the root by default)
  namespace        the one robot's namespace (robot.launch.py's argument; not with robots:=)
  use_sim_time     true: the bridges stamp with simulated time and every node runs on it
  perception       true | false: robot.launch.py's perception node (default true)
  elastic          true | false: robot.launch.py's elastic node (default true)

DDS discovery stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) so a simulation
never drives a robot on the LAN, and Fast DDS uses LARGE_DATA transports for images; both only
when the variable is not already set in the environment (a value you set is kept).

The nodes are computed by `embodied_stack.nodes.launch_graph.sim_nodes` (plain Python, tested
without ROS 2's launch, and started in-process by tests/test_multi_robot.py).
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration

from embodied_stack.nodes.launch_graph import PACKAGE, robot_arguments, sim_arguments, sim_nodes
from launch import LaunchDescription

#: DDS settings for a simulation on this host, used unless the environment already sets them.
DDS_DEFAULTS = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}


def arguments():
    share = get_package_share_directory(PACKAGE)
    return sim_arguments(share) + robot_arguments(share)


def start(context):
    value = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments()}
    return [spec.launch_node() for spec in sim_nodes(value)]


def generate_launch_description():
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                for a in arguments()]
    env = [SetEnvironmentVariable(name, EnvironmentVariable(name, default_value=default))
           for name, default in DDS_DEFAULTS.items()]
    return LaunchDescription(declared + env + [OpaqueFunction(function=start)])
