"""Two simulated robots in one graph, over real DDS: the nodes sim.launch.py computes for
`robots:=car1,arm1` (nodes/launch_graph.py), started in-process with exactly those names,
namespaces, parameter files and remappings (the `--ros-args` launch_ros would give them).
`launch_ros` has no pip wheel, so this is how the launch's graph runs here."""

import importlib
import os

import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from ros_harness import wait_for
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from embodied_stack.nodes.demo import configure_dds_environment
from embodied_stack.nodes.executor import spin_in_background
from embodied_stack.nodes.launch_graph import argument_defaults, robot_arguments, sim_arguments, sim_nodes

pytestmark = pytest.mark.ros

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: executable (setup.py console script) -> the node class its main() runs.
NODE_CLASSES = {"sim_bridge_node": "SimBridgeNode", "policy_node": "PolicyNode",
                "perception_node": "PerceptionNode", "elastic_node": "ElasticNode"}
ROBOTS = ("car1", "arm1")


def _launch(**given):
    """sim.launch.py's NodeSpecs for `given` arguments (the rest at their defaults, this checkout
    as the share directory)."""
    arguments = sim_arguments(REPO) + robot_arguments(REPO)
    return sim_nodes({**argument_defaults(arguments), **given})


def _start(spec, context, params_dir):
    module = importlib.import_module(f"embodied_stack.nodes.{spec.executable}")
    node = getattr(module, NODE_CLASSES[spec.executable])(
        context=context, cli_args=spec.ros_arguments(params_dir))
    assert node.get_fully_qualified_name() == spec.fully_qualified_name
    return node


def _key(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class _RecordingPublisher:
    """Wraps a bridge's colour publisher: the stamp of every frame it sends is recorded."""

    def __init__(self, publisher, stamps: set):
        self._publisher, self._stamps = publisher, stamps

    def publish(self, msg) -> None:
        self._stamps.add(_key(msg.header.stamp))
        self._publisher.publish(msg)

    def __getattr__(self, name):
        return getattr(self._publisher, name)


class _Graph:
    """The nodes of `specs` and a listener node, in one context, spun in the background."""

    def __init__(self, specs, params_dir):
        configure_dds_environment()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.nodes = {}
        self.executor = self.listener = None
        try:
            for spec in specs:
                self.nodes[spec.fully_qualified_name] = _start(spec, self.context, params_dir)
            self.listener = rclpy.create_node("listener", context=self.context)
        except BaseException:
            self.close()
            raise

    def spin(self):
        self.executor = spin_in_background([*self.nodes.values(), self.listener], self.context)

    def close(self):
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=2.0)
        for node in [*self.nodes.values(), *([self.listener] if self.listener else [])]:
            node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.mark.parametrize("use_sim_time", ["false", "true"])
def test_two_robots_run_their_own_worlds_without_cross_talk(tmp_path, use_sim_time):
    """car1 drives the road, arm1 the tabletop (its world and seed from the YAML's
    /arm1/sim_bridge key), both with the expert backend and one episode each. Each bridge
    finishes its episode on commands answering its own frames; each robot's camera and clock
    topics have its own bridge as their only publisher, its policy node subscribes only in its
    namespace, nobody publishes /clock, and the episode results reach the global /diagnostics
    under the robot's name.
    - Wall time (frames stamped with distinct wall times): the frames each policy's commands
      answer are all its own bridge's, none the other's.
    - use_sim_time:=true: each robot runs on its own world's time: after the episodes (of
      different lengths) each policy node's clock reads its own bridge's last /<robot>/clock."""
    sim_yaml = yaml.safe_load(open(os.path.join(REPO, "config", "sim.yaml")))
    sim_yaml["/**"]["ros__parameters"].update(world="driving", seed=4, episodes=1)  # ~2.5 s
    sim_yaml["/arm1/sim_bridge"] = {"ros__parameters": {"world": "tabletop", "seed": 1}}
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump(sim_yaml))
    specs = _launch(robots=",".join(ROBOTS), sim_params_file=str(tmp_path / "sim.yaml"),
                    backend="expert", perception="false", use_sim_time=use_sim_time)
    assert sorted(s.fully_qualified_name for s in specs) == sorted(
        f"/{r}/{n}" for r in ROBOTS for n in ("sim_bridge", "policy_node"))
    graph = _Graph(specs, str(tmp_path))
    try:
        published = {r: set() for r in ROBOTS}
        answered: dict = {r: [] for r in ROBOTS}
        clocks = {r: [] for r in ROBOTS}
        diagnostics: list = []
        listener = graph.listener
        for robot in ROBOTS:
            bridge = graph.nodes[f"/{robot}/sim_bridge"]
            bridge.rgb_pub = _RecordingPublisher(bridge.rgb_pub, published[robot])
            listener.create_subscription(Header, f"/{robot}/policy_node/command_source",
                                         lambda m, r=robot: answered[r].append(_key(m.stamp)),
                                         QoSProfile(depth=1000))
            listener.create_subscription(Clock, f"/{robot}/clock", clocks[robot].append, 10)
        listener.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 100)
        graph.spin()
        bridges = {r: graph.nodes[f"/{r}/sim_bridge"] for r in ROBOTS}
        assert wait_for(lambda: all(b.finished for b in bridges.values()), timeout=45), {
            r: (b.results, b.steps) for r, b in bridges.items()}

        def episode_names():
            return {s.name for d in diagnostics for s in d.status if s.name.endswith(": episode")}
        assert wait_for(lambda: episode_names() >= {f"{r}/sim_bridge: episode" for r in ROBOTS}, 5), \
            episode_names()
        # The graph: each robot's camera and clock come from its own bridge alone.
        assert listener.count_publishers("/clock") == 0
        for robot in ROBOTS:
            for topic in (f"/{robot}/camera/color/image_raw", f"/{robot}/clock"):
                sources = {(i.node_namespace, i.node_name)
                           for i in listener.get_publishers_info_by_topic(topic)}
                assert sources == {(f"/{robot}", "sim_bridge")}, (topic, sources)
            subscribed = listener.get_subscriber_names_and_types_by_node("policy_node", f"/{robot}")
            assert all(t.startswith(f"/{robot}/") for t, _ in subscribed), subscribed
        for robot, other in (ROBOTS, ROBOTS[::-1]):
            summary = bridges[robot].summary()
            assert summary["episodes"] == 1 and summary["steps"] >= 5, summary
            assert summary["latency_samples"] >= summary["steps"] - 2, summary
            assert answered[robot] and set(answered[robot]) <= published[robot], robot
            assert clocks[robot], f"nothing on /{robot}/clock"
            policy = graph.nodes[f"/{robot}/policy_node"]
            assert policy.loop.stats.get("rejected", 0) == 0, policy.loop.stats
            if use_sim_time == "false":
                assert not set(answered[robot]) & published[other], robot
            else:
                last = _key(clocks[robot][-1].clock)
                assert wait_for(lambda p=policy, t=last: p.get_clock().now().nanoseconds == t, 5), (
                    robot, policy.get_clock().now(), last)
        assert bridges["arm1"].world == "tabletop" and bridges["car1"].world == "driving"
        if use_sim_time == "true" and bridges["car1"].steps != bridges["arm1"].steps:
            # Episodes of different lengths (here 23 and ~16 steps): the clocks tell them apart.
            assert clocks["car1"][-1].clock != clocks["arm1"][-1].clock
    finally:
        graph.close()


def test_a_bridge_waiting_for_its_subscriber_says_so(tmp_path, capfd):
    """A bridge whose camera nobody subscribes to does not step its world, and its log names
    the topic and namespace it waits on; once a subscriber appears it starts."""
    spec = next(s for s in _launch(namespace="lonely", world="driving", perception="false",
                                   elastic="false") if s.executable == "sim_bridge_node")
    graph = _Graph([spec], str(tmp_path))
    try:
        graph.spin()
        bridge = graph.nodes["/lonely/sim_bridge"]
        expected = "waiting for a subscriber on /lonely/camera/color/image_raw (namespace /lonely)"
        logged = []
        assert wait_for(lambda: logged.append(capfd.readouterr().err) or expected in "".join(logged), 10), \
            "".join(logged)
        assert bridge.steps == 0
        graph.listener.create_subscription(Image, "/lonely/camera/color/image_raw", lambda m: None,
                                           qos_profile_sensor_data)
        assert wait_for(lambda: bridge.steps > 0, 10)
        assert wait_for(lambda: logged.append(capfd.readouterr().err)
                        or "/lonely/camera/color/image_raw has a subscriber" in "".join(logged), 5)
    finally:
        graph.close()


def test_a_third_party_world_runs_through_the_bridge_and_the_policy_node(tmp_path):
    """Gymnasium's Reacher-v5 from nothing but its adapter file (examples/worlds/reacher.py):
    the nodes sim.launch.py computes for world:=reacher world_file:=..., expert backend, in a
    namespace. The policy node publishes joint_commands (Float64MultiArray) at the world's
    25 Hz, the bridge applies them, and the episodes finish, answered frame by frame."""
    from std_msgs.msg import Float64MultiArray

    reacher = os.path.join(REPO, "examples", "worlds", "reacher.py")
    specs = _launch(namespace="reach1", world="reacher", world_file=reacher, episodes="2",
                    mode="lockstep", backend="expert", perception="false", elastic="false")
    graph = _Graph(specs, str(tmp_path))
    try:
        commands: list = []
        graph.listener.create_subscription(Float64MultiArray, "/reach1/joint_commands",
                                           commands.append, 100)
        graph.spin()
        bridge = graph.nodes["/reach1/sim_bridge"]
        policy = graph.nodes["/reach1/policy_node"]
        assert policy.loop.config.kind == "joints" and policy.loop.config.control_rate_hz == 25.0
        assert wait_for(lambda: bridge.finished, timeout=60), (bridge.results, bridge.steps)
        assert bridge.world == "reacher" and len(bridge.results) == 2
        assert commands and all(len(m.data) == 2 for m in commands)
        assert all(-1.0 <= v <= 1.0 for m in commands for v in m.data)
        summary = bridge.summary()
        # (Success is not asserted: on a loaded machine the 0.5 s staleness stops may cut in.)
        assert summary["steps"] >= 10 and summary["latency_samples"] >= 1, summary
    finally:
        graph.close()
