"""MiMo end to end through real rclpy, on the tiny random Qwen2.5-VL checkpoint (no hub).

The random weights say nothing meaningful, so only the text generation step is canned
(mimo_fixtures.install_canned_answer: the real `generate` still runs one token on the real
inputs); the rest is real: the policy node loads the checkpoint (`backend:=mimo`), builds the
prompt from the sim bridge's instruction and camera frame, parses the answer, maps it back by
the resize ratio, back-projects it with the depth image and CameraInfo, publishes
`target_point` in metres, servos the arm toward it (camera -> base transform, bounded
velocity) or drives the plan by pure pursuit, through the chunk scheduler and the safety
supervisor, over DDS.
"""

from __future__ import annotations

import json
import os
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")

import rclpy  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from mimo_fixtures import install_canned_answer, make_tiny_random_checkpoint  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from test_policy_node import Harness, ScriptedPolicy, speed  # noqa: E402

from embodied_stack.control.commands import VehicleScale  # noqa: E402
from embodied_stack.control.target_control import PurePursuit  # noqa: E402
from embodied_stack.models.perception.types import matrix_from_quaternion  # noqa: E402
from embodied_stack.models.policy import mimo_prompts as P  # noqa: E402
from embodied_stack.models.policy.mimo_adapter import MiMoEmbodiedPolicy  # noqa: E402
from embodied_stack.nodes.conversions import depth_to_image  # noqa: E402
from embodied_stack.nodes.demo import run_world  # noqa: E402
from embodied_stack.sim.worlds.tabletop import CLASS_SIZES, TabletopEnv  # noqa: E402

pytestmark = pytest.mark.ros

SIDE = 128  # camera px; the tiny processor (max_pixels 28*28*16) resizes it to 112 x 112
SEED = 2  # "touch the red cube": a clear straight approach from the fingertip's start
#: How far (m) a back-projected point may lie off the object's surface: the sensor model's
#: depth noise at ~0.6 m (sim/worlds/depth_noise.py) plus a pixel of rounding.
SURFACE_TOL_M = 0.012


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return make_tiny_random_checkpoint(tmp_path_factory.mktemp("mimo") / "tiny", seed=0)


def _pixel_on(seed: int, object_id: int | None = None):
    """A pixel well inside an object's mask (the target's by default) in the scene the bridge
    will show: the same world, seed and size with segmentation on."""
    env = TabletopEnv(width=SIDE, height=SIDE, with_segmentation=True)
    try:
        _, info = env.reset(seed=seed)
        oid = info["target_ids"][0] if object_id is None else object_id
        vs, us = np.nonzero(info["segmentation"] == oid)
        k = int(np.argmin((us - us.mean()) ** 2 + (vs - vs.mean()) ** 2))
        return (int(us[k]), int(vs[k])), oid
    finally:
        env.close()


def _off_surface(point_world, obj) -> float:
    """Distance (m) from a world point to the object's surface (outside or inside)."""
    R = matrix_from_quaternion(obj["quaternion"])
    local = R.T @ (np.asarray(point_world) - obj["position"])
    half = CLASS_SIZES[obj["class"]] / 2
    if obj["class"] == "ball":
        return abs(np.linalg.norm(local) - half[0])
    outside = np.linalg.norm(np.maximum(np.abs(local) - half, 0.0))
    return outside if outside > 0 else float(np.min(half - np.abs(local)))


class Listener:
    """Records target_point, and at every joint_states message the fingertip's distance to
    the object (read from the bridge's world in the same executor thread)."""

    def __init__(self, context, bridge, object_id):
        self.node = rclpy.create_node("listener", context=context)
        self.points, self.distances = [], []
        self.bridge, self.object_id = bridge, object_id
        self.lock = threading.Lock()
        self.node.create_subscription(PointStamped, "target_point", self._on_point, 10)
        self.node.create_subscription(JointState, "joint_states", self._on_joints, 10)

    def _on_point(self, msg):
        with self.lock:
            self.points.append(msg)

    def _on_joints(self, msg):
        if self.bridge.finished:
            return
        ee = np.array(msg.position[:3])
        obj = self.bridge.info["objects"][self.object_id]
        with self.lock:
            self.distances.append((time.monotonic(), float(np.linalg.norm(ee - obj["position"]))))


def test_tiny_mimo_points_at_the_object_in_metres_and_the_arm_reaches_it(ckpt):
    (u, v), oid = _pixel_on(SEED)
    resize = P.ResizeInfo.for_image(SIDE, SIDE, min_pixels=56 * 56, max_pixels=28 * 28 * 16)
    assert (resize.resized_h, resize.resized_w) == (112, 112)
    x, y = np.rint(resize.to_model([u, v])).astype(int)  # what the model would say
    answer = json.dumps([{"points": [[int(x), int(y)]], "label": "red cube"}])
    seen, box = {}, {}

    def prepare(bridge, policy):
        assert isinstance(policy.policy, MiMoEmbodiedPolicy)  # loaded by backend:=mimo
        install_canned_answer(policy.policy, answer, seen, run_model=True)
        box["listener"] = Listener(policy.context, bridge, oid)
        box["bridge"] = bridge
        box["camera"] = bridge.info["camera"]
        box["object"] = {k: np.copy(val) if isinstance(val, np.ndarray) else val
                         for k, val in bridge.info["objects"][oid].items()}
        return [box["listener"].node]

    run = run_world("tabletop", episodes=1, seed=SEED, backend="mimo", model_path=str(ckpt),
                    submodel="full", bag_path=None, width=SIDE, height=SIDE, timeout_s=60,
                    bridge_params={"depth_noise": True},
                    policy_params={"deadline_s": 2.0, "plan_horizon_s": 2.0},
                    prepare=prepare)
    listener = box["listener"]
    assert seen["calls"] >= 1 and "<|image_pad|>" in seen["prompt"]
    assert "touch the red cube" in seen["prompt"]  # the bridge's instruction reached the prompt
    # target_point: metres in the camera optical frame of the bridge's images.
    assert listener.points, run.policy_stats
    T = box["camera"]["T_world_camera"]
    first = listener.points[0]
    assert first.header.frame_id == "camera_color_optical_frame"
    p_cam = np.array([first.point.x, first.point.y, first.point.z])
    assert 0.3 < p_cam[2] < 1.2  # a depth in metres, not a pixel
    p_world = T[:3, :3] @ p_cam + T[:3, 3]
    off = _off_surface(p_world, box["object"])
    assert off <= SURFACE_TOL_M, (p_world, box["object"]["position"], off)
    # The arm moved toward it: the fingertip's distance to the object fell and it touched it.
    # (The touch itself happens inside the episode's last step, which publishes no frame.)
    d = [dist for _, dist in listener.distances]
    assert d and d[0] > 0.12 and min(d) < 0.08 and d[-1] < d[0] - 0.07, d
    assert run.episodes[0]["outcome"] == f"touched:{oid}", run.episodes
    assert run.episodes[0]["success"]
    assert run.policy_stats.get("chunks", 0) >= 1 and run.policy_stats.get("backend_errors", 0) == 0
    print(f"\ntarget_point {p_cam.round(4).tolist()} m (camera), {off * 1e3:.1f} mm off the "
          f"object's surface; fingertip-object distance {d[0]:.3f} -> {min(d):.3f} m in "
          f"{run.episodes[0]['steps']} steps; policy stats {run.policy_stats}")


@pytest.mark.parametrize("added_latency", ["0.2", "lognormal"])
def test_tiny_mimo_reaches_the_object_with_latency_in_the_loop(ckpt, added_latency):
    """The same pointing answer, each one delayed by 200 ms or by the Jetson Orin log-normal
    (p50 170 ms, p99 600 ms; `added_latency`, control/latency.py) under the default execution
    (`auto`: delay_aware for an arm): the arm still touches the object, every answer within
    the deadline, and /diagnostics' latency shows the delay."""
    (u, v), oid = _pixel_on(SEED)
    resize = P.ResizeInfo.for_image(SIDE, SIDE, min_pixels=56 * 56, max_pixels=28 * 28 * 16)
    x, y = np.rint(resize.to_model([u, v])).astype(int)
    answer = json.dumps([{"points": [[int(x), int(y)]], "label": "red cube"}])
    box = {}

    def prepare(bridge, policy):
        install_canned_answer(policy.policy.policy, answer, {}, run_model=True)  # (inside DelayedPolicy)
        box["policy"] = policy
        return []

    run = run_world("tabletop", episodes=1, seed=SEED, backend="mimo", model_path=str(ckpt),
                    submodel="full", bag_path=None, width=SIDE, height=SIDE, timeout_s=60,
                    policy_params={"deadline_s": 2.0, "plan_horizon_s": 2.0,
                                   "added_latency": added_latency}, prepare=prepare)
    node = box["policy"]
    assert "added" in node.runtime_description
    assert run.episodes[0]["outcome"] == f"touched:{oid}" and run.episodes[0]["success"], run.episodes
    stats = run.policy_stats
    assert stats.get("dropped_stale", 0) == 0 and stats.get("chunks", 0) >= 1, stats
    values = node.loop.diagnostics().values
    assert float(values["latency_p50_ms"]) >= 150.0 and values["execution"] == "delay_aware", values
    print(f"\ntiny MiMo with {added_latency} added: touched in {run.episodes[0]['steps']} steps; "
          f"latency p50 {values['latency_p50_ms']} ms; stats {stats}")


# ---------------------------------------------------------------------------------------------
# Vehicle: canned waypoints -> pure pursuit through the node
# ---------------------------------------------------------------------------------------------

LEFT_PLAN = [[2.5, 0.2], [5.0, 0.8], [7.5, 1.8], [10.0, 3.0], [12.5, 4.2], [15.0, 5.5]]


@pytest.fixture(scope="module")
def tiny_policy(ckpt):
    return MiMoEmbodiedPolicy.from_pretrained(ckpt, max_new_tokens=8)


def test_canned_waypoints_drive_by_pure_pursuit_through_the_node(tiny_policy):
    for plan, sign in ((LEFT_PLAN, 1.0), ([[x, -y] for x, y in LEFT_PLAN], -1.0)):
        install_canned_answer(tiny_policy, json.dumps({"waypoints": plan}))
        h = Harness(tiny_policy, embodiment="vehicle", deadline_s=2.0, plan_horizon_s=0.5)
        h.vehicle_speed = lambda: 5.0  # odom: a steady 5 m/s
        try:
            h.instr_pub.publish(String(data="follow the road"))
            h.stream(1.5)
            moving = [m for _, m in h.commands if speed(m) > 0]
            assert moving and h.node.loop.stats.get("chunks", 0) >= 1, h.node.loop.stats
            assert h.node.loop.stats.get("no_target", 0) == 0
        finally:
            h.close()
        # What pure pursuit says for this plan at 5 m/s (the node's defaults, 20 Hz).
        scale = VehicleScale(0.5, 3.0, 15.0, 2.7, 1.0 / 20)
        pp = PurePursuit(scale, 5.0, 1.0, waypoint_dt=tiny_policy.waypoint_dt)
        expect = [pp.command(row, 5.0) for row in pp.chunk(plan, 5.0, 10)]
        last = moving[-1]  # (from a chunk planned at the steady 5 m/s)
        v, omega = speed(last), last.twist.angular.z
        assert np.sign(omega) == sign
        assert min(abs(v - e[0]) + abs(omega - e[1]) for e in expect) < 1e-3, (v, omega, expect[:3])


def test_canned_stop_plan_brakes_the_simulated_car_over_dds(ckpt):
    """Driving world through the sim bridge: a canned plan of waypoints that stay where the
    car is (our convention: waypoints at future times, so: stand still) is followed by pure
    pursuit from the bridge's odometry; the car brakes from its start speed to a stop,
    straight, on commands of the plan (no safety stop involved)."""
    from geometry_msgs.msg import TwistStamped
    from nav_msgs.msg import Odometry

    plan = [[0.0, 0.0]] * 6
    box = {}

    def prepare(bridge, policy):
        install_canned_answer(policy.policy, json.dumps({"waypoints": plan}), run_model=True)
        node = rclpy.create_node("odom_listener", context=policy.context)
        box["odom"] = []
        node.create_subscription(Odometry, "odom", lambda m: box["odom"].append(
            (m.twist.twist.linear.x, m.twist.twist.angular.z)), 10)
        box["cmd"] = []
        node.create_subscription(TwistStamped, "cmd_vel", lambda m: box["cmd"].append(
            (m.twist.linear.x, m.twist.angular.z)), 10)
        return [node]

    run = run_world("driving", episodes=1, seed=11, backend="mimo", model_path=str(ckpt),
                    submodel="full", bag_path=None, timeout_s=60,
                    policy_params={"deadline_s": 2.0}, prepare=prepare)
    speeds = [v for v, _ in box["odom"]]
    assert max(speeds) > 5.0 and min(speeds) < 0.2, speeds  # moving at the start, then stopped
    stopped = next(i for i, v in enumerate(speeds) if v < 0.2)
    assert max(abs(w) for _, w in box["odom"]) < 0.05  # straight ahead
    cmd = [v for v, _ in box["cmd"]]  # the plan's commands: braking, never speeding up
    first = next(i for i, v in enumerate(cmd) if v > 0)  # (after the start-up stop ticks)
    cmd = cmd[first:]
    # (Two ticks between odom messages repeat a command, so "falls" is over the run, not
    # from each command to the next.)
    assert max(cmd) <= cmd[0] + 1e-4 and min(cmd[1:4]) < cmd[0] and cmd[-1] < 0.05, cmd
    # (The bridge applies actions in float32: speeds match commands to ~1e-6 m/s. A new chunk
    # starts from the last odom message, which may be a tick behind the last command, so a
    # command may sit one braking step (max_accel / rate = 0.3 m/s) above the one before; on
    # a loaded machine a stale-input stop may interleave its own ramp-down.)
    if run.policy_stats.get("stop_ticks", 0) <= 1:
        rises = [(i, a, b) for i, (a, b) in enumerate(zip(cmd, cmd[1:])) if b > a + 0.3 + 1e-4]
        assert not rises, rises
    stats = run.policy_stats
    assert stats.get("chunks", 0) >= 1 and stats.get("no_target", 0) == 0, stats
    assert stats.get("backend_errors", 0) == 0, stats
    print(f"\ncanned stop plan: {speeds[0]:.1f} m/s -> {min(speeds):.2f} m/s in {stopped} "
          f"steps; stats {stats}")


def test_lookahead_parameters_take_effect_at_run_time(tiny_policy):
    install_canned_answer(tiny_policy, json.dumps({"waypoints": LEFT_PLAN}))
    h = Harness(tiny_policy, embodiment="vehicle", deadline_s=2.0, plan_horizon_s=0.3)
    h.vehicle_speed = lambda: 5.0
    try:
        h.stream(1.0)
        mark = time.monotonic()
        h.stream(0.5)
        short = np.median([m.twist.angular.z for m in h.recent(mark)])
        ok = h.node.set_parameters([Parameter("lookahead_m", value=15.0),
                                    Parameter("lookahead_time_s", value=3.0)])[0]
        assert ok.successful
        h.stream(0.6)
        mark = time.monotonic()
        h.stream(0.5)
        far = np.median([m.twist.angular.z for m in h.recent(mark)])
    finally:
        h.close()
    # A longer look-ahead aims at a point further along the bend: a larger bearing over a
    # longer chord; pure pursuit says which way the yaw rate moves, compare with it.
    scale = VehicleScale(0.5, 3.0, 15.0, 2.7, 1.0 / 20)
    pp = PurePursuit(scale, 5.0, 1.0)
    expect_short, expect_far = (pp.steering(np.array(LEFT_PLAN), 5.0),
                                PurePursuit(scale, 15.0, 3.0).steering(np.array(LEFT_PLAN), 5.0))
    assert short > 0 and far > 0 and np.sign(far - short) == np.sign(expect_far - expect_short), (
        short, far, expect_short, expect_far)


# ---------------------------------------------------------------------------------------------
# Arm through the node on the Harness: no transform or no depth -> stop with a reason
# ---------------------------------------------------------------------------------------------


def _faults(h):
    return [kv.value for d in h.diagnostics for s in d.status for kv in s.values
            if kv.key == "fault.target"]


def test_arm_target_needs_camera_to_base_and_valid_depth(tiny_policy):
    install_canned_answer(tiny_policy, '[{"points": [[28, 28]]}]')  # 56x56 model image: centre
    h = Harness(tiny_policy, plan_horizon_s=0.3)  # camera_to_base not set
    try:
        h.stream(1.2)
        assert not any(speed(m) for _, m in h.commands)
        assert h.node.loop.stats.get("no_target", 0) >= 1
        assert any("camera_to_base not set" in f for f in _faults(h)), _faults(h)
    finally:
        h.close()
    h = Harness(tiny_policy, plan_horizon_s=0.3, camera_to_base=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    try:
        h.send_frame()  # depth 1 m everywhere: a target 1 m ahead of the camera
        h.stream(1.0)
        moving = [m for _, m in h.commands if any((m.twist.linear.x, m.twist.linear.z))]
        assert moving, h.node.loop.stats  # base = camera frame, fingertip at the origin: go +z
        assert all(m.twist.linear.z > 0 and abs(m.twist.linear.z) <= 0.25 + 1e-9 for m in moving)
        zero = np.zeros((16, 16), np.float32)
        mark = time.monotonic()
        end = mark + 1.0
        while time.monotonic() < end:  # now every depth pixel is "no return"
            stamp = h.driver.get_clock().now().to_msg()
            h.send_frame(depth=depth_to_image(zero, stamp, "cam"))
            time.sleep(0.05)
        assert any("no valid depth" in f for f in _faults(h)), _faults(h)
        assert not any(m.twist.linear.z for m in h.recent(mark + 0.5))
    finally:
        h.close()


def _stream_at_depth(h, seconds, depth_m, rate=20.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stamp = h.driver.get_clock().now().to_msg()
        h.send_frame(depth=depth_to_image(np.full((16, 16), depth_m, np.float32), stamp, "cam"))
        time.sleep(1.0 / rate)


def _norms(h, since):
    return [float(np.linalg.norm([m.twist.linear.x, m.twist.linear.y, m.twist.linear.z]))
            for m in h.recent(since)]


def test_servo_and_horizon_parameters_take_effect_at_run_time(tiny_policy):
    seen = install_canned_answer(tiny_policy, '[{"points": [[28, 28]]}]')  # 0.5 m ahead
    h = Harness(tiny_policy, plan_horizon_s=0.3, camera_to_base=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    try:
        _stream_at_depth(h, 1.0, 0.5)
        mark = time.monotonic()
        _stream_at_depth(h, 0.6, 0.5)
        assert np.median(_norms(h, mark)) == pytest.approx(0.25, abs=0.01)  # gain 2: capped
        assert h.node.set_parameters([Parameter("servo_gain", value=0.1)])[0].successful
        _stream_at_depth(h, 0.5, 0.5)
        mark = time.monotonic()
        _stream_at_depth(h, 0.6, 0.5)
        assert np.median(_norms(h, mark)) == pytest.approx(0.1 * 0.5, abs=0.003)  # 0.1 x 0.5 m
        assert h.node.set_parameters([Parameter("servo_stop_radius_m", value=0.6)])[0].successful
        _stream_at_depth(h, 0.5, 0.5)
        mark = time.monotonic()
        _stream_at_depth(h, 0.6, 0.5)
        assert max(_norms(h, mark)) == 0.0  # inside the radius: hold still
        calls = seen["calls"]
        _stream_at_depth(h, 1.2, 0.5)
        fast = seen["calls"] - calls  # a 0.3 s horizon: an answer every ~0.3 s
        # a 5 s horizon (and a deadline that covers it: no command older than deadline_s)
        assert h.node.set_parameters_atomically([Parameter("plan_horizon_s", value=5.0),
                                                 Parameter("deadline_s", value=5.0)]).successful
        _stream_at_depth(h, 0.4, 0.5)  # (the chunk in hand was cut at 0.3 s)
        calls = seen["calls"]
        _stream_at_depth(h, 1.2, 0.5)
        assert h.node.loop.controllers.plan_steps == 100 and fast >= 3 and seen["calls"] - calls <= 1, (fast, seen)
    finally:
        h.close()


# ---------------------------------------------------------------------------------------------
# Elastic submodels of the Qwen decoder through the node's `submodel` parameter
# ---------------------------------------------------------------------------------------------


def test_mimo_submodel_without_elastic_fails_before_loading():
    from embodied_stack.models.policy.backends import load_backend

    with pytest.raises(ValueError, match="mimo_elastic"):  # (the path is never opened)
        load_backend("mimo", "/nonexistent/mimo", "cpu", submodel="1/2")


def test_mimo_elastic_submodels_switch_through_the_node_parameter(ckpt):
    h = Harness(None, backend="mimo", model_path=str(ckpt), mimo_elastic=True, plan_horizon_s=0.3,
                camera_to_base=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    try:
        pol = h.node.policy
        assert pol.submodel_names == ["full", "3/4", "1/2", "1/4"]
        seen = install_canned_answer(pol, '[{"points": [[28, 28]]}]', run_model=True)
        h.stream(0.8)
        assert pol.submodel == "full" and seen.get("calls", 0) >= 1
        result = h.node.set_parameters([Parameter("submodel", value="1/2")])[0]
        assert result.successful
        calls = seen["calls"]
        h.stream(1.2)
        assert pol.submodel == "1/2" and pol.elastic.active == "1/2" and seen["calls"] > calls
        assert "1/2" in h.diag_values("submodel")
        refused = h.node.set_parameters([Parameter("submodel", value="1/8")])[0]
        assert not refused.successful and "allowed" in refused.reason
    finally:
        h.close()


# ---------------------------------------------------------------------------------------------
# A slow planner (seconds per answer, as a 7B model on a small GPU): executed, its age skipped
# ---------------------------------------------------------------------------------------------


class SlowRampPolicy(ScriptedPolicy):
    """Takes `delay_s` per answer; action k of its chunk is [k / 100, 0, 0], so a command
    tells which step of the chunk it came from."""

    def select_action(self, obs):
        action = super().select_action(obs)
        action.chunk = np.stack([np.arange(60) / 100.0, np.zeros(60), np.zeros(60)], axis=1)
        return action


@pytest.mark.parametrize("execution", ["early", "delay_aware"])
def test_a_slow_planner_is_executed_with_its_age_accounted_for(execution):
    """1 s per answer at 20 Hz. The first answer (no latency measured yet) runs from the step
    for "now": the 20 steps the answer took are skipped. Later ones are asked for early enough
    to land before the chunk runs out; `early` still skips what the answer took, while
    `delay_aware` planned for it and starts the answer near its first step. Either way no
    control step goes without a command."""
    policy = SlowRampPolicy()
    policy.delay_s = 1.0  # at 20 Hz: 20 control periods pass while it thinks
    h = Harness(policy, deadline_s=3.0, refill_at=30, execution=execution)  # refill 1.5 s early
    try:
        h.stream(4.0)
        stats = dict(h.node.loop.stats)
    finally:
        h.close()
    assert stats.get("dropped_stale", 0) == 0 and stats.get("chunks", 0) >= 2, stats
    steps = [round(speed(m) / 0.25 * 100) for _, m in h.commands]
    moving = [k for k, s in enumerate(steps) if s > 0]
    assert moving, steps
    first = steps[moving[0]]
    assert 19 <= first <= 35, steps  # step "now", not step 0
    after = steps[moving[0]:]
    starts = [b for a, b in zip(after, after[1:]) if b < a]  # where a new chunk takes over
    assert starts, after
    if execution == "early":
        assert all(19 <= b <= 35 for b in starts) and all(s > 0 for s in after), str(steps)
    else:
        assert all(b <= 5 for b in starts), str(steps)
    assert stats.get("missed_ticks", 0) == 0, stats  # no stop between chunks
    print(f"\nslow planner (1 s per answer, 20 Hz, {execution}): first command from chunk step "
          f"{first}, later chunks from steps {starts}; stats {stats}")
