"""Launch files and parameter YAML: every executable they start is installed, every file they
name ships, every YAML parameter is one the node declares and accepts. Where launch_ros is
importable (a real ROS 2 install), the launch descriptions are also built."""

import ast
import importlib.util
import os
import re

import pytest
import rclpy
import yaml
from rclpy.parameter import Parameter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_FILES = ["robot.launch.py", "sim.launch.py"]


def _setup_console_scripts():
    text = open(os.path.join(REPO, "setup.py")).read()
    return set(re.findall(r'"([\w-]+) = embodied_stack\.', text))


def _launch_strings(name, keyword):
    tree = ast.parse(open(os.path.join(REPO, "launch", name)).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == keyword and isinstance(
                node.value, ast.Constant):
            found.add(node.value.value)
    return found


def _joined_paths(name):
    """Literal os.path.join(share, "<dir>", "<file>") targets in a launch file."""
    tree = ast.parse(open(os.path.join(REPO, "launch", name)).read())
    paths = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "join"
                and len(node.args) == 3 and all(isinstance(a, ast.Constant) for a in node.args[1:])):
            paths.add(os.path.join(node.args[1].value, node.args[2].value))
    return paths


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_names_installed_executables_and_files(name):
    exes = _launch_strings(name, "executable")
    assert exes, f"{name} starts no node"
    assert exes <= _setup_console_scripts(), exes - _setup_console_scripts()
    for rel in _joined_paths(name):
        assert os.path.isfile(os.path.join(REPO, rel)), f"{name} names missing {rel}"


def _yaml_params(filename, node_name):
    data = yaml.safe_load(open(os.path.join(REPO, "config", filename)))
    return data[node_name]["ros__parameters"]


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


def test_elastic_yaml_parameters_are_declared_and_accepted(tmp_path):
    import json

    from embodied_stack.models.runtime.profiling import device_key
    from embodied_stack.nodes.elastic_node import ElasticNode

    params = _yaml_params("elastic.yaml", "/**")
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


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not pip-installable; runs on a ROS 2 install")
@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_description_builds(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "launch", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert description.entities
