"""elastic_node over real DDS with a real policy_node: the budget comes from a tegrastats log
file (the interface `tegrastats --logfile` gives on a Jetson) that the test writes; a GPU clock
drop makes the elastic node switch the policy's submodel through the policy node's
SetParameters service, and the clock coming back switches it back after the dwell."""

import json
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from ros_harness import wait_for
from test_policy_node import ScriptedPolicy

from embodied_stack.control.elastic.latency_table import device_key, load_table
from embodied_stack.nodes.elastic_node import ElasticNode
from embodied_stack.nodes.executor import spin_in_background
from embodied_stack.nodes.policy_node import PolicyNode

pytestmark = pytest.mark.ros

TABLE = {  # ms, measured with "onnxruntime" (what the elastic node is told the policy runs)
    "full": {"p50_ms": 3.0, "p95_ms": 3.6, "p99_ms": 4.0, "weight_mb": 3.9, "params": 4},
    "1/2": {"p50_ms": 1.2, "p95_ms": 1.4, "p99_ms": 1.5, "weight_mb": 1.9, "params": 2},
    "1/4": {"p50_ms": 0.7, "p95_ms": 0.8, "p99_ms": 0.9, "weight_mb": 0.9, "params": 1},
}
LINE = ("RAM 3000/7000MB (lfb 1x4MB) CPU [10%@1500,20%@1500] EMC_FREQ 5%@1600 "
        "GR3D_FREQ {load}%@[{mhz}] VDD_IN 5000mW/4800mW\n")
DWELL_S = 1.5


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "latency_tables.json"
    entries = {n: dict(e, runtime="onnxruntime:CPU") for n, e in TABLE.items()}
    path.write_text(json.dumps({device_key("cpu"): entries}))
    return path


@pytest.fixture
def graph(tmp_path, table):
    log = tmp_path / "tegrastats.log"
    log.write_text(LINE.format(load=30, mhz=1300))
    context = rclpy.Context()
    rclpy.init(context=context)
    policy = ScriptedPolicy()
    policy.submodel_names = ["full", "1/2", "1/4"]
    policy_node = PolicyNode(policy=policy, context=context, parameter_overrides=[
        Parameter("control_rate_hz", value=100.0)])
    elastic = ElasticNode(context=context, parameter_overrides=[
        Parameter("budget_source", value="tegrastats"),
        Parameter("tegrastats_log", value=str(log)),
        Parameter("latency_table", value=str(table)),
        Parameter("measure_if_missing", value=False),
        Parameter("control_rate_hz", value=10.0),  # follows the policy's: 100 Hz, 8 ms
        Parameter("poll_rate_hz", value=50.0),
        Parameter("dwell_s", value=DWELL_S)])
    watcher = rclpy.create_node("watcher", context=context)
    diagnostics = []
    watcher.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 50)
    executor = spin_in_background([policy_node, elastic, watcher], context)
    yield policy_node, elastic, log, diagnostics
    executor.shutdown()
    for n in (watcher, elastic, policy_node):
        n.destroy_node()
    rclpy.shutdown(context=context)


def test_budget_drop_switches_down_and_recovery_switches_back_after_the_dwell(graph):
    policy_node, elastic, log, diagnostics = graph
    sub = lambda: policy_node.get_parameter("submodel").value  # noqa: E731
    assert wait_for(lambda: elastic.get_parameter("control_rate_hz").value == 100.0, 3.0)
    assert sub() == "full"
    with open(log, "a") as f:  # GPU clock 1300 -> 325 MHz: everything 4x slower
        f.write(LINE.format(load=99, mhz=325))
    t_drop = time.monotonic()
    assert wait_for(lambda: sub() == "1/2", 3.0), elastic.control.status()
    t_down = time.monotonic()
    assert t_down - t_drop < 1.0  # 1/2: 1.5 ms x 4 = 6 ms <= 8 ms; full 16 ms does not fit
    with open(log, "a") as f:  # the clock comes back at once
        f.write(LINE.format(load=20, mhz=1300))
    assert wait_for(lambda: sub() == "full", DWELL_S + 3.0), elastic.control.status()
    # The policy node takes the value before its SetParameters answer reaches the elastic
    # node, which logs the switch on that answer.
    assert wait_for(lambda: len(elastic.control.switch_log) >= 2, 2.0)
    log_ = elastic.control.switch_log
    assert [name for _, name, _ in log_] == ["1/2", "full"]
    assert log_[1][0] - log_[0][0] >= DWELL_S  # not before the dwell
    assert "down to 1/2" in log_[0][2] and "up to full" in log_[1][2]
    # the decision and its reasons on /diagnostics
    assert wait_for(lambda: any(s.name.endswith("elastic") for d in diagnostics
                                for s in d.status), 2.0)
    values = {kv.key: kv.value for d in diagnostics for s in d.status
              if s.name.endswith("elastic") for kv in s.values}
    assert values["budget_source"].startswith("tegrastats") and "switches" in values
    assert "predicted_tail_ms.full" in values and "reason" in values


def test_polls_slow_down_at_the_smallest_and_speed_up_after_the_step_up(graph):
    policy_node, elastic, log, _ = graph
    sub = lambda: policy_node.get_parameter("submodel").value  # noqa: E731
    period = lambda: elastic._poll_timer.timer_period_ns * 1e-9  # noqa: E731
    assert wait_for(lambda: elastic.get_parameter("control_rate_hz").value == 100.0, 3.0)
    assert period() == pytest.approx(1 / 50.0)
    with open(log, "a") as f:  # 1300 -> 65 MHz: 20x slower, nothing fits
        f.write(LINE.format(load=99, mhz=65))
    assert wait_for(lambda: sub() == "1/4", 3.0), elastic.control.status()
    assert wait_for(lambda: period() == pytest.approx(0.1), 2.0)  # idle_poll_s
    with open(log, "a") as f:
        f.write(LINE.format(load=20, mhz=1300))
    # the step up still comes after the dwell: an idle poll sees the budget back
    assert wait_for(lambda: sub() == "full", DWELL_S + 3.0), elastic.control.status()
    assert wait_for(lambda: period() == pytest.approx(1 / 50.0), 2.0)


def test_deadline_follows_the_policy_nodes_control_rate(graph):
    policy_node, elastic, _, _ = graph
    rate = lambda: elastic.get_parameter("control_rate_hz").value  # noqa: E731
    assert wait_for(lambda: rate() == 100.0, 3.0)  # read from the policy node at start-up
    assert policy_node.set_parameters([Parameter("control_rate_hz", value=50.0)])[0].successful
    assert wait_for(lambda: rate() == 50.0, 3.0)
    assert elastic.control.selector.config.deadline_s == pytest.approx(0.02 - 0.002)


def test_no_table_for_this_device_is_a_clear_error(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"cuda:Other GPU": {
        n: dict(e, runtime="onnxruntime:CUDA") for n, e in TABLE.items()}}))
    cache_dir = tmp_path / "cache"
    import os
    os.environ["EMBODIED_STACK_CACHE"] = str(cache_dir)
    try:
        with pytest.raises(ValueError, match="no latency table for 'cpu:"):
            load_table(str(path), "cpu", "onnxruntime", False, "", print)
        # same device, other runtime: not used either
        path.write_text(json.dumps({device_key("cpu"): {
            n: dict(e, runtime="torch:cpu:fp32") for n, e in TABLE.items()}}))
        with pytest.raises(ValueError, match="another runtime"):
            load_table(str(path), "cpu", "onnxruntime", False, "", print)
        entries, origin = load_table(str(path), "cpu", "torch", False, "", print)
        assert entries["full"]["p99_ms"] == 4.0 and str(path) in origin
    finally:
        del os.environ["EMBODIED_STACK_CACHE"]


def test_the_elastic_node_starts_without_the_model_stack():
    """The elastic node reads a table and polls a budget: torch and ONNX Runtime stay out of
    its process (they tripled its memory; bench/node_footprint.py measures it). Only
    measuring a missing table on the spot loads them."""
    import subprocess
    import sys

    code = (
        "import sys, rclpy\n"
        "from rclpy.parameter import Parameter\n"
        "rclpy.init()\n"
        "from embodied_stack.nodes.elastic_node import ElasticNode\n"
        "node = ElasticNode(parameter_overrides=[Parameter('follow_policy_rate', value=False)])\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'mujoco', 'open3d', 'cv2') if m in sys.modules))\n"
        "node.destroy_node(); rclpy.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
