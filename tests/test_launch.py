"""Launch files and parameter YAML: every executable they start is installed, every file they
name ships, every YAML parameter is one the node declares and accepts. Where launch_ros is
importable (a real ROS 2 install), the launch descriptions are also built."""

import importlib.util
import os
import re

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.parameter import Parameter

from embodied_stack.nodes.launch_graph import (
    ROBOT_OVERRIDES,
    SIM_OVERRIDES,
    argument_defaults,
    robot_arguments,
    robot_nodes,
    sim_arguments,
    sim_nodes,
)
from embodied_stack.nodes.launch_params import UNSET, effective_parameters, node_parameters, yaml_parameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_FILES = ["robot.launch.py", "sim.launch.py"]


def _setup_console_scripts():
    text = open(os.path.join(REPO, "setup.py")).read()
    return set(re.findall(r'"([\w-]+) = embodied_stack\.', text))


def _graph(name, **given):
    """The NodeSpecs a launch file computes (nodes/launch_graph.py) for `given` arguments, the
    others left at their defaults, with this checkout as the installed share directory."""
    arguments = robot_arguments(REPO) + (sim_arguments(REPO) if name == "sim.launch.py" else [])
    unknown = set(given) - {a.name for a in arguments}
    assert not unknown, f"{name} has no argument(s) {unknown}"
    value = {**argument_defaults(arguments), **given}
    return (sim_nodes if name == "sim.launch.py" else robot_nodes)(value)


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_names_installed_executables_and_files(name):
    text = open(os.path.join(REPO, "launch", name)).read()
    assert "launch_graph import" in text and ".launch_node()" in text  # it starts what is computed
    exes = {spec.executable for spec in _graph(name, backend="vla")}
    assert exes, f"{name} starts no node"
    assert exes <= _setup_console_scripts(), exes - _setup_console_scripts()
    arguments = robot_arguments(REPO) + (sim_arguments(REPO) if name == "sim.launch.py" else [])
    for argument in arguments:
        assert argument.description, argument.name
        if argument.default.endswith(".yaml"):
            assert os.path.isfile(argument.default), f"{name}: {argument.name} names a missing file"


def _yaml_params(filename, node_name):
    return yaml_parameters(os.path.join(REPO, "config", filename), node_name)


def test_policy_yaml_parameters_are_declared_and_accepted():
    from embodied_stack.nodes.policy_node import PolicyNode

    params = _yaml_params("policy.yaml", "policy_node")
    params["backend"] = "expert"  # the shipped model is not needed to check parameters
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = PolicyNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        declared = {p for p in node._parameters}
        assert set(params) <= declared, set(params) - declared
        for key, value in params.items():
            assert node.get_parameter(key).value == value
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_sim_yaml_parameters_are_declared_and_accepted():
    from embodied_stack.nodes.sim_bridge_node import SimBridgeNode

    params = _yaml_params("sim.yaml", "sim_bridge")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = SimBridgeNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        assert set(params) <= set(node._parameters)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def _overrides(name):
    """The override table of a launch file ({argument: type name})."""
    table = SIM_OVERRIDES if name == "sim.launch.py" else ROBOT_OVERRIDES
    return {arg: kind.__name__ for arg, (kind, _) in table.items()}


@pytest.mark.parametrize("name,node_module,node_class", [
    ("robot.launch.py", "policy_node", "PolicyNode"),
    ("sim.launch.py", "sim_bridge_node", "SimBridgeNode"),
])
def test_launch_overrides_are_declared_parameters_of_the_right_type(name, node_module,
                                                                    node_class):
    import importlib

    cls = getattr(importlib.import_module(f"embodied_stack.nodes.{node_module}"), node_class)
    overrides = _overrides(name)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        extra = [Parameter("backend", value="expert")] if node_class == "PolicyNode" else []
        node = cls(context=context, parameter_overrides=extra)
        for arg, kind in overrides.items():
            assert node.has_parameter(arg), f"{name}: {arg}:= names no parameter of {node_class}"
            assert type(node.get_parameter(arg).value).__name__ == kind, (arg, kind)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    if name == "robot.launch.py":
        assert "runtime" in overrides


def test_elastic_yaml_parameters_are_declared_and_accepted(tmp_path):
    import json

    from embodied_stack.control.elastic.latency_table import device_key
    from embodied_stack.nodes.elastic_node import ElasticNode

    params = _yaml_params("elastic.yaml", "elastic_node")
    table = tmp_path / "latency_tables.json"  # this machine, whatever it is: no measuring
    table.write_text(json.dumps({device_key("cpu"): {n: {
        "p50_ms": 1.0 * k, "p95_ms": 1.2 * k, "p99_ms": 1.5 * k, "weight_mb": k,
        "params": k, "runtime": "onnxruntime:CPU"} for k, n in enumerate(["1/4", "full"], 1)}}))
    params.update(latency_table=str(table), measure_if_missing=False)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ElasticNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        assert set(params) <= set(node._parameters), set(params) - set(node._parameters)
        for key, value in params.items():
            assert node.get_parameter(key).value == value
        assert node.source.name == "cpu"  # auto on a CPU device
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_arguments_are_never_evaluated_as_python(name):
    text = open(os.path.join(REPO, "launch", name)).read()
    assert "PythonExpression" not in text and "eval(" not in text


def test_yaml_decides_unless_a_launch_argument_is_given():
    yaml_params = _yaml_params("sim.yaml", "sim_bridge")
    kinds = {"world": str, "seed": int, "episodes": int, "mode": str}
    unset = {k: UNSET for k in kinds}
    # Nothing given: exactly the YAML, and the node gets only the file.
    assert effective_parameters(yaml_params, unset, kinds) == yaml_params
    assert node_parameters("sim.yaml", unset, kinds) == ["sim.yaml"]
    # Given arguments win, typed; the others stay as the YAML has them.
    given = dict(unset, seed="42", world="driving")
    merged = effective_parameters(yaml_params, given, kinds)
    assert merged["seed"] == 42 and merged["world"] == "driving"
    assert merged["episodes"] == yaml_params["episodes"] and merged["mode"] == yaml_params["mode"]
    assert node_parameters("sim.yaml", given, kinds) == ["sim.yaml",
                                                         {"seed": 42, "world": "driving"}]
    for bad, kind in (("seed", "4.5"), ("seed", "__import__('os')"), ("episodes", "many")):
        with pytest.raises(ValueError, match=f"{bad}:="):
            effective_parameters(yaml_params, dict(unset, **{bad: kind}), kinds)
    with pytest.raises(ValueError, match="use_sim_time:='maybe' is not a boolean"):
        effective_parameters({}, {"use_sim_time": "maybe"}, {"use_sim_time": bool})


def test_list_arguments_and_the_simulated_camera_pose():
    from embodied_stack.control.target_control import static_transform
    from embodied_stack.nodes.launch_params import sim_camera_to_base, typed

    assert typed("camera_to_base", "[1, 2.5, -3]", list) == [1.0, 2.5, -3.0]
    assert typed("camera_to_base", "1,2 3", list) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="camera_to_base:='1 two' is not a list of numbers"):
        typed("camera_to_base", "1 two", list)
    # The pose sim.launch.py hands the policy node is the Tabletop camera's (base = world),
    # through the same string a user would type.
    import gymnasium as gym

    from embodied_stack.sim import WORLD_IDS

    env = gym.make(WORLD_IDS["tabletop"], width=8, height=8, with_segmentation=False)
    _, info = env.reset(seed=3)
    env.close()
    T = static_transform(typed("camera_to_base", sim_camera_to_base("tabletop"), list))
    np.testing.assert_allclose(T, info["camera"]["T_world_camera"], atol=1e-5)


def test_yaml_file_applies_under_a_namespace(tmp_path):
    """The shipped YAML, read by rcl itself (--params-file), reaches a policy node in a
    namespace: the `/**` key matches any node, as a plain `policy_node:` key would not."""
    from embodied_stack.nodes.policy_node import PolicyNode

    data = yaml.safe_load(open(os.path.join(REPO, "config", "policy.yaml")))
    assert list(data) == ["/**"]
    data["/**"]["ros__parameters"].update(backend="expert", control_rate_hz=7.5)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    assert yaml_parameters(str(path), "policy_node", "/robot1")["control_rate_hz"] == 7.5
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(path)])
    try:
        node = PolicyNode(context=context, namespace="/robot1")
        assert node.get_fully_qualified_name() == "/robot1/policy_node"
        assert node.get_parameter("control_rate_hz").value == 7.5
        assert node.get_parameter("backend").value == "expert"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_yaml_parameters_merges_wildcard_name_and_full_name(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"a": 1, "b": 1, "c": 1}},
        "policy_node": {"ros__parameters": {"b": 2, "c": 2}},
        "/robot1/policy_node": {"ros__parameters": {"c": 3}},
    }))
    assert yaml_parameters(str(path), "policy_node", "robot1") == {"a": 1, "b": 2, "c": 3}
    assert yaml_parameters(str(path), "policy_node") == {"a": 1, "b": 2, "c": 2}
    path.write_text("policy_node: {parameters: {a: 1}}\n")
    with pytest.raises(ValueError, match="ros__parameters"):
        yaml_parameters(str(path), "policy_node")


# --- the graph the launch files compute (nodes/launch_graph.py), namespaces and robots --------
def _specs_by_node(specs):
    return {spec.fully_qualified_name: spec for spec in specs}


def test_sim_namespace_applies_to_the_whole_graph():
    """namespace:=car1 puts the sim bridge in /car1 too (it used to stay at the root and wait
    forever for a subscriber); one world: /clock stays global, nothing is remapped to it."""
    specs = _specs_by_node(_graph("sim.launch.py", namespace="car1", world="driving"))
    assert set(specs) == {"/car1/sim_bridge", "/car1/policy_node", "/car1/perception_node",
                          "/car1/elastic_node"}
    assert all(not any(src == "/clock" for src, _ in s.remappings) for s in specs.values())
    policy = specs["/car1/policy_node"]
    assert policy.parameters[1]["embodiment"] == "vehicle"
    # Relative remaps resolve in the namespace; the elastic node's target is relative too.
    assert all(not target.startswith("/") for _, target in policy.remappings)
    elastic_yaml = yaml_parameters(specs["/car1/elastic_node"].parameters[0], "elastic_node", "/car1")
    assert not elastic_yaml["policy_node"].startswith("/")
    assert _graph("robot.launch.py", namespace="/fleet/car1/")[0].namespace == "/fleet/car1"


def test_two_robots_get_a_bridge_and_a_bringup_each_on_their_own_clock(tmp_path):
    """robots:=car1,arm1: per robot a sim bridge and its bringup in its namespace, every node of
    a robot on /<robot>/clock; per-robot bridge settings come from the YAML's
    /<robot>/sim_bridge key (here arm1 runs the tabletop, so its policy is an arm)."""
    sim_yaml = yaml.safe_load(open(os.path.join(REPO, "config", "sim.yaml")))
    sim_yaml["/arm1/sim_bridge"] = {"ros__parameters": {"world": "tabletop", "seed": 1}}
    sim_yaml["/**"]["ros__parameters"]["world"] = "driving"
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(sim_yaml))
    specs = _specs_by_node(_graph("sim.launch.py", robots="car1, arm1", sim_params_file=str(path),
                                  backend="expert", use_sim_time="true"))
    assert set(specs) == {f"/{r}/{n}" for r in ("car1", "arm1")
                          for n in ("sim_bridge", "policy_node", "perception_node")}  # expert: no elastic
    for name, spec in specs.items():
        robot = name.split("/")[1]
        assert spec.namespace == f"/{robot}"
        assert ("/clock", f"/{robot}/clock") in spec.remappings, name
    assert specs["/car1/sim_bridge"].parameters == [str(path), {"use_sim_time": True}]
    assert specs["/car1/policy_node"].parameters[1]["embodiment"] == "vehicle"
    arm = specs["/arm1/policy_node"].parameters[1]
    assert arm["embodiment"] == "arm" and len(arm["camera_to_base"]) == 7
    assert yaml_parameters(str(path), "sim_bridge", "/arm1")["seed"] == 1


def test_robots_and_namespaces_are_checked():
    for given, match in (({"robots": "car1,car2", "namespace": "x"}, "not both"),
                         ({"robots": "car1,car1"}, "namespace of its own"),
                         ({"robots": "car1,2car"}, "robots:='2car'"),
                         ({"namespace": "car-1"}, "namespace:='car-1'")):
        with pytest.raises(ValueError, match=match):
            _graph("sim.launch.py", world="driving", **given)


def test_node_spec_gives_the_command_line_launch_ros_would(tmp_path):
    from embodied_stack.nodes.launch_graph import NodeSpec

    spec = NodeSpec("policy_node", "policy_node", "/car1", ["a.yaml", {"seed": 3}],
                    [("/clock", "/car1/clock")])
    args = spec.ros_arguments(str(tmp_path))
    assert args[:6] == ["--ros-args", "-r", "__node:=policy_node", "-r", "__ns:=/car1",
                        "--params-file"]
    assert args[6] == "a.yaml" and args[-2:] == ["-r", "/clock:=/car1/clock"]
    assert yaml.safe_load(open(args[8])) == {"/**": {"ros__parameters": {"seed": 3}}}


def test_nodes_name_only_the_conventional_globals():
    """Every topic, service and parameter name the nodes create is relative (so a namespace
    moves all of it), except ROS's global ones: /diagnostics, /clock, /parameter_events."""
    found = set()
    for file in os.listdir(os.path.join(REPO, "nodes")):
        if file.endswith(".py"):
            found |= set(re.findall(r'create_(?:publisher|subscription|client|service)\(\s*\w+,\s*f?"(/[^"]*)"',
                                    open(os.path.join(REPO, "nodes", file)).read()))
    assert found <= {"/diagnostics", "/clock", "/parameter_events"}, found
    assert "/diagnostics" in found


needs_launch = pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                                  reason="launch_ros is not pip-installable; runs on a ROS 2 install")


def _load_launch(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "launch", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nodes_after_visit(name, arguments):
    """Visit a launch description as `ros2 launch ... name:=value` would, without starting
    processes: return the launch context and the launch_ros Node actions it would run."""
    from launch_ros.actions import Node

    from launch import LaunchContext

    context = LaunchContext()
    context.launch_configurations.update(arguments)
    nodes = []

    def visit(entities):
        for entity in entities:
            if isinstance(entity, Node):
                nodes.append(entity)
            else:
                visit(entity.visit(context) or [])

    visit(_load_launch(name).generate_launch_description().entities)
    return context, nodes


def _parameters(context, node):
    """A Node action's `parameters=` as launch_ros evaluates them: [yaml path, {overrides}]."""
    from launch_ros.utilities import evaluate_parameters

    return [p if isinstance(p, dict) else str(p)
            for p in evaluate_parameters(context, node._Node__parameters)]


def _by_executable(nodes):
    return {n.node_executable: n for n in nodes}


@needs_launch
def test_robot_launch_passes_only_given_arguments_over_the_yaml():
    context, nodes = _nodes_after_visit("robot.launch.py", {})
    node = _by_executable(nodes)["policy_node"]
    params = _parameters(context, node)
    assert len(params) == 1 and params[0].endswith("config/policy.yaml"), params
    context, nodes = _nodes_after_visit("robot.launch.py", {
        "backend": "expert", "runtime": "torch", "use_sim_time": "true"})
    assert _parameters(context, _by_executable(nodes)["policy_node"])[1] == {
        "backend": "expert", "runtime": "torch", "use_sim_time": True}
    with pytest.raises(ValueError, match="use_sim_time"):
        _nodes_after_visit("robot.launch.py", {"use_sim_time": "sometimes"})


@needs_launch
def test_sim_launch_picks_the_embodiment_from_the_world_and_keeps_user_dds_settings(
        monkeypatch):
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    context, nodes = _nodes_after_visit("sim.launch.py", {})
    assert context.environment["FASTDDS_BUILTIN_TRANSPORTS"] == "UDPv4"
    assert context.environment["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    policy = _parameters(context, _by_executable(nodes)["policy_node"])[1]
    assert policy["embodiment"] == "arm"  # sim.yaml's world: tabletop
    assert len(policy["camera_to_base"]) == 7  # the sim camera's pose
    context, nodes = _nodes_after_visit("sim.launch.py", {"world": "driving", "seed": "7"})
    policy = _parameters(context, _by_executable(nodes)["policy_node"])[1]
    assert policy["embodiment"] == "vehicle" and "camera_to_base" not in policy
    bridge = next(n for n in nodes if n.node_executable == "sim_bridge_node")
    assert _parameters(context, bridge)[1] == {"world": "driving", "seed": 7}


@needs_launch
@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_description_builds(name):
    description = _load_launch(name).generate_launch_description()
    assert description.entities


@needs_launch
def test_robot_launch_starts_perception_unless_switched_off():
    context, nodes = _nodes_after_visit("robot.launch.py", {"use_sim_time": "true"})
    perception = _by_executable(nodes)["perception_node"]
    params = _parameters(context, perception)
    assert params[0].endswith("config/perception.yaml") and params[1] == {"use_sim_time": True}
    context, nodes = _nodes_after_visit("robot.launch.py", {"perception": "false"})
    assert set(_by_executable(nodes)) == {"policy_node", "elastic_node"}
    with pytest.raises(ValueError, match="perception"):
        _nodes_after_visit("robot.launch.py", {"perception": "maybe"})


@needs_launch
def test_robot_launch_gives_the_elastic_node_what_the_policy_runs():
    """The elastic node's latency table must describe the policy node's device, runtime and
    model: it gets them as the policy gets them (YAML, then given arguments); it is left out
    with elastic:=false or a backend other than vla."""
    context, nodes = _nodes_after_visit("robot.launch.py", {"device": "cuda", "runtime": "torch"})
    params = _parameters(context, _by_executable(nodes)["elastic_node"])
    assert params[0].endswith("config/elastic.yaml")
    policy_yaml = _yaml_params("policy.yaml", "policy_node")
    assert params[1] == {"device": "cuda", "runtime": "torch",
                         "model_path": policy_yaml["model_path"],
                         "submodel": policy_yaml["submodel"]}
    for given in ({"elastic": "false"}, {"backend": "expert"}):
        _, nodes = _nodes_after_visit("robot.launch.py", given)
        assert "elastic_node" not in _by_executable(nodes), given
