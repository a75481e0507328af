"""policy_node over real DDS: its ROS wiring. Parameters (read-only, ranges, live changes that
reach the timers and the clamps at the publisher), topics and their QoS, commands stamped with
their publish time and the frame each answers, the inference worker thread (a backend
exception, a bug outside the backend), rejected messages on /diagnostics, e-stop, the phase
timer, the vehicle's Twist mode. A driver node plays the camera and joint_states and listens to
commands and /diagnostics; the policy backend is injected (a real Policy subclass whose
behaviour each test controls). The decisions themselves (when to ask, pairing, deadlines,
reference frames, safety) are tested on a fake clock in tests/test_policy_loop.py."""

import time

import numpy as np
import pytest
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.duration import Duration
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from ros_harness import NodeHarness, wait_for
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Bool, Header, String

from embodied_stack.models.policy.interface import Action, Policy
from embodied_stack.nodes.conversions import (
    K_to_camera_info,
    depth_to_compressed_depth,
    depth_to_image,
    rgb_to_compressed,
    rgb_to_image,
)
from embodied_stack.nodes.params import LATCHED
from embodied_stack.nodes.policy_node import PolicyNode
from embodied_stack.sim.worlds import PROPRIO_NAMES_OF_EMBODIMENT as DEFAULT_PROPRIO_NAMES

pytestmark = pytest.mark.ros


class ScriptedPolicy(Policy):
    """Returns a fixed chunk; can be told to sleep or raise. The chunk's sign follows the
    instruction ("... red ..." -> +, "... blue ..." -> -), so a test can tell which task a
    command belongs to."""

    submodel_names = ["full", "1/2"]

    def __init__(self):
        self.delay_s = 0.0
        self.fail = False
        self.bad_chunk = False
        self.chunk_len = 2
        self.calls = 0
        self.resets = 0
        self.seen = []  # (frame's pixel value, its reference frame's pixel value or None)
        self._submodel = "full"

    @property
    def submodel(self):
        return self._submodel

    def set_submodel(self, name):
        super().set_submodel(name)
        self._submodel = name

    def reset(self):
        self.resets += 1

    def select_action(self, obs):
        self.calls += 1
        ref = None if obs.reference_rgb is None else int(obs.reference_rgb[0, 0, 0])
        self.seen.append((int(obs.rgb[0, 0, 0]), ref))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("backend exploded")
        sign = -1.0 if "blue" in obs.instruction else 1.0
        chunk = np.tile([0.4 * sign, 0.0, 0.0], (self.chunk_len, 1))
        if obs.embodiment == "vehicle":
            chunk = np.tile([0.0, 0.5], (self.chunk_len, 1))  # straight on, accelerating
        if self.bad_chunk:
            chunk = "not a chunk"  # a backend bug the node must survive
        return Action(chunk=chunk, stamp=obs.stamp, submodel=self._submodel)


class Harness(NodeHarness):
    def __init__(self, policy, embodiment="arm", encoder=None, **params):
        super().__init__()
        self.embodiment = embodiment
        overrides = [Parameter("embodiment", value=embodiment),
                     Parameter("control_rate_hz", value=20.0)]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.node = PolicyNode(policy=policy, encoder=encoder, context=self.context,
                               parameter_overrides=overrides)
        d = self.driver
        #: image_transport's compressed topics instead of the raw ones (PNG: lossless)
        self.compressed = params.get("color_transport") == "compressed"
        self.compressed_depth = params.get("depth_transport") == "compressedDepth"
        self.rgb_pub = d.create_publisher(CompressedImage, "camera/color/image_raw/compressed",
                                          qos_profile_sensor_data) if self.compressed else \
            d.create_publisher(Image, "camera/color/image_raw", qos_profile_sensor_data)
        self.depth_pub = d.create_publisher(CompressedImage, "camera/depth/image_raw/compressedDepth",
                                            qos_profile_sensor_data) if self.compressed_depth else \
            d.create_publisher(Image, "camera/depth/image_raw", qos_profile_sensor_data)
        self.info_pub = d.create_publisher(CameraInfo, "camera/color/camera_info",
                                           qos_profile_sensor_data)
        self.joint_pub = d.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        self.odom_pub = d.create_publisher(Odometry, "odom", qos_profile_sensor_data)
        self.instr_pub = d.create_publisher(String, "instruction", LATCHED)
        self.estop_pub = d.create_publisher(Bool, "estop", LATCHED)
        self.commands = []  # (receive time, TwistStamped or Twist)
        self.sources = []  # (receive time, Header): the frame each command answers
        cmd_topic = "servo/delta_twist_cmds" if embodiment == "arm" else "cmd_vel"
        cmd_type = Twist if params.get("cmd_vel_stamped") is False else TwistStamped
        d.create_subscription(cmd_type, cmd_topic,
                              lambda m: self.commands.append((time.monotonic(), m)), 50)
        d.create_subscription(Header, "policy_node/command_source",
                              lambda m: self.sources.append((time.monotonic(), m)), 50)
        self.spin()
        inputs = [self.rgb_pub, self.info_pub, self.joint_pub, self.odom_pub, self.instr_pub,
                  self.estop_pub] + [self.depth_pub] * (params.get("use_depth") is not False)
        outputs = (cmd_topic, "policy_node/command_source", "/diagnostics")
        assert wait_for(lambda: all(p.get_subscription_count() for p in inputs)
                        and all(d.count_publishers(t) for t in outputs)), "discovery"
        self.joints = True
        self.instr_pub.publish(String(data="touch the red cube"))
        assert wait_for(lambda: self.node.loop.instruction == "touch the red cube")

    def send_frame(self, rgb=None, depth=None, offset_s=0.0):
        stamp = (self.driver.get_clock().now() + Duration(nanoseconds=int(offset_s * 1e9))).to_msg()
        rgb = rgb if rgb is not None else np.full((16, 16, 3), 100, np.uint8)
        if self.joints:
            names = DEFAULT_PROPRIO_NAMES[self.embodiment]
            self.joint_pub.publish(JointState(header=Header(stamp=stamp), name=names,
                                              position=[0.0] * len(names)))
            if self.embodiment == "vehicle":
                odom = Odometry()
                odom.header.stamp = stamp
                odom.twist.twist.linear.x = self.vehicle_speed()
                self.odom_pub.publish(odom)
        if not isinstance(depth, (Image, CompressedImage)):
            depth = np.ones((16, 16), np.float32) if depth is None else depth
            depth = depth_to_compressed_depth(depth, stamp, "cam") if self.compressed_depth else \
                depth_to_image(depth, stamp, "cam")
        self.depth_pub.publish(depth)
        K = np.array([[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]])
        self.info_pub.publish(K_to_camera_info(K, 16, 16, stamp, "cam"))
        if not isinstance(rgb, (Image, CompressedImage)):
            rgb = rgb_to_compressed(rgb, stamp, "cam", "png") if self.compressed else rgb_to_image(rgb, stamp, "cam")
        self.rgb_pub.publish(rgb)
        return stamp

    def vehicle_speed(self):
        """The robot does what it is told: odom reports the last commanded speed."""
        return float(speed(self.commands[-1][1])) if self.commands else 0.0

    def stream(self, seconds, rate=20.0, offset_s=0.0):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.send_frame(offset_s=offset_s)
            time.sleep(1.0 / rate)

    def stream_until(self, predicate, timeout=5.0, rate=20.0):
        """Stream frames until `predicate` holds (True) or `timeout` s pass (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.send_frame()
            time.sleep(1.0 / rate)
        return predicate()

    def recent(self, since):
        return [m for t, m in self.commands if t >= since]

    def moves_after(self, mark):
        return any(speed(m) > 0 for m in self.recent(mark))


@pytest.fixture
def policy():
    return ScriptedPolicy()


@pytest.fixture
def harness(policy):
    h = Harness(policy)
    yield h
    h.close()


def speed(msg):
    return (msg.twist if isinstance(msg, TwistStamped) else msg).linear.x


# ------------------------------------------------------------------ commands
def test_commands_carry_publish_time_and_name_the_frame_they_answer(harness, policy):
    """Commands are stamped when published (MoveIt Servo judges freshness by now - stamp),
    never with the older frame stamp of chunk steps 2..T; ~/command_source names the frame."""
    policy.chunk_len = 6
    sent = set()
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        s = harness.send_frame()
        sent.add((s.sec, s.nanosec))
        time.sleep(0.05)
    moving = [m for _, m in harness.commands if speed(m) > 0]
    assert len(moving) >= 10
    assert all(speed(m) == pytest.approx(0.1) for m in moving)  # 0.4 * 0.25 m/s
    now_ns = harness.driver.get_clock().now().nanoseconds
    for m in moving[-5:]:
        assert 0 <= now_ns - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec) < 2e9
    sources = [h for _, h in harness.sources]
    assert len(sources) >= len(moving) - 2 and {(h.stamp.sec, h.stamp.nanosec) for h in sources} <= sent
    lags = [(c.header.stamp.sec - h.stamp.sec) + (c.header.stamp.nanosec - h.stamp.nanosec) * 1e-9
            for c, h in zip(moving[-10:], sources[-10:])]
    assert max(lags) > 0.03  # some commands go out later than their frame, and say so


def test_a_chunks_second_action_goes_out_mid_way_between_control_steps(harness, policy):
    """The phase timer re-phases the ticks to each chunk (control/policy_loop.py): its second
    action goes out 1 + PHASE_OFFSET periods after its frame's stamp, the first a few ms after
    it. Frames come at 13 Hz against a 20 Hz timer, so they sweep every phase."""
    from embodied_stack.control.policy_loop import PHASE_OFFSET

    policy.chunk_len = 4
    period = 1.0 / 20.0
    harness.stream(3.0, rate=13.0)
    gaps, first = [], None  # per chunk: second command's arrival - first's
    for (t, src), (_, src_prev) in zip(harness.sources[1:], harness.sources[:-1]):
        if src.stamp != src_prev.stamp:
            first = t  # a new chunk's first action
        elif first is not None:
            gaps.append(t - first)
            first = None
    assert len(gaps) >= 15, gaps
    want = (1 + PHASE_OFFSET) * period
    near = [g for g in gaps if abs(g - want) < 0.3 * period]
    # (at an unchanged timer phase these gaps spread over 0.5 .. 1.5 periods)
    assert len(near) >= 0.75 * len(gaps), [round(g / period, 2) for g in gaps]


def test_a_new_instruction_reaches_the_policy(harness, policy):
    """`instruction` (latched) starts a new task: the policy is reset and the next chunks
    answer it (the loop drops the old task's results: tests/test_policy_loop.py)."""
    assert harness.stream_until(lambda: harness.moves_after(0.0))
    resets = policy.resets
    harness.instr_pub.publish(String(data="touch the blue cube"))
    assert wait_for(lambda: policy.resets == resets + 1)
    mark = time.monotonic()
    assert harness.stream_until(lambda: any(speed(m) < 0 for m in harness.recent(mark)))


def test_an_instruction_matching_no_known_task_stops_the_robot_with_the_reason(policy, tmp_path):
    """`instruction_tasks`: each instruction is grounded first (on a thread of its own); one
    that matches no known task stops the robot, says why on /diagnostics, and asks the policy
    for nothing until an instruction that does match. (A bag-of-words encoder stands in for
    the packaged sentence encoder, whose threshold tests/test_instruction_grounding.py checks.)"""
    from test_instruction_grounding import bag_of_words

    from embodied_stack.models.policy.elastic_vla.instruction_encoder import InstructionEncoder

    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("red: [touch the red cube]\nblue: [touch the blue cube]\n")
    h = Harness(policy, encoder=InstructionEncoder(backend=bag_of_words), instruction_tasks=str(tasks),
                grounding_threshold=0.6)
    try:
        assert h.stream_until(lambda: h.moves_after(0.0))  # "touch the red cube": grounded
        assert wait_for(lambda: any("grounded as" in v for v in h.diag_values("instruction_grounding")))
        h.instr_pub.publish(String(data="make me a coffee"))
        assert wait_for(lambda: h.diag_values("fault.instruction"), 3.0)
        assert "no known task matches 'make me a coffee'" in h.diag_values("fault.instruction")[-1]
        calls, mark = policy.calls, time.monotonic()
        h.stream(0.6)  # fresh frames keep coming: the robot stays stopped, nothing is asked
        assert h.recent(mark) and all(speed(m) == 0.0 for m in h.recent(mark))
        assert policy.calls == calls
        h.instr_pub.publish(String(data="touch the blue cube"))
        mark = time.monotonic()
        assert h.stream_until(lambda: any(speed(m) < 0 for m in h.recent(mark)))
    finally:
        h.close()


def test_an_instruction_whose_object_is_not_in_view_stops_the_robot_until_it_is(policy):
    """`scene/objects` ("colour noun, ..."): with `instruction_tasks` set, an instruction
    whose object is not in view stops the robot with the reason on /diagnostics; once the
    object is in view again, the task goes on; a scene it cannot read is rejected."""
    from test_instruction_grounding import bag_of_words

    from embodied_stack.models.policy.elastic_vla.instruction_encoder import InstructionEncoder

    h = Harness(policy, encoder=InstructionEncoder(backend=bag_of_words), instruction_tasks="tabletop",
                grounding_threshold=0.6)
    scene = h.driver.create_publisher(String, "scene/objects", LATCHED)
    try:
        assert wait_for(lambda: scene.get_subscription_count())
        assert h.stream_until(lambda: h.moves_after(0.0))  # no scene yet: "touch the red cube" goes
        scene.publish(String(data="blue cube, green ball"))
        assert h.stream_until(lambda: h.diag_values("fault.instruction"))
        assert "nothing in the scene matches it" in h.diag_values("fault.instruction")[-1]
        mark = time.monotonic()
        h.stream(0.5)
        assert h.recent(mark) and all(speed(m) == 0.0 for m in h.recent(mark))
        scene.publish(String(data="a red cube somewhere"))
        assert h.stream_until(lambda: h.diag_values("rejected.scene/objects"))
        scene.publish(String(data="red cube, green ball"))
        mark = time.monotonic()
        assert h.stream_until(lambda: h.moves_after(mark))
    finally:
        h.close()


# ------------------------------------------------------------------ faults
def test_stale_camera_stops_the_robot_and_says_so(harness):
    assert harness.stream_until(lambda: harness.moves_after(0.0))
    stopped_at = time.monotonic()
    assert wait_for(lambda: any(speed(m) == 0.0 for m in harness.recent(stopped_at)), 2.0)
    assert wait_for(lambda: harness.diag_values("fault.stale:camera"), 2.0)


def test_estop_latches_until_released(harness):
    assert harness.stream_until(lambda: harness.moves_after(0.0))
    harness.estop_pub.publish(Bool(data=True))
    assert wait_for(lambda: harness.diag_values("fault.estop"))
    mark = time.monotonic()
    harness.stream(0.6)  # fresh frames keep coming: the stop holds anyway
    assert harness.recent(mark) and all(speed(m) == 0.0 for m in harness.recent(mark))
    harness.estop_pub.publish(Bool(data=False))
    mark = time.monotonic()
    assert harness.stream_until(lambda: harness.moves_after(mark)), "did not resume after release"


def test_backend_exception_stops_reports_and_the_worker_carries_on(harness, policy):
    assert harness.stream_until(lambda: harness.moves_after(0.0))
    policy.fail = True
    assert harness.stream_until(lambda: any("backend exploded" in r for r in
                                            harness.diag_values("fault.backend")))
    mark = time.monotonic()
    harness.stream(0.4)
    assert harness.recent(mark) and all(speed(m) == 0.0 for m in harness.recent(mark))
    assert harness.node.loop.stats["backend_errors"] > 0
    policy.fail = False
    mark = time.monotonic()
    assert harness.stream_until(lambda: harness.moves_after(mark))


def test_worker_survives_a_backend_bug_outside_select_action(harness, policy):
    assert harness.stream_until(lambda: harness.moves_after(0.0))
    policy.bad_chunk = True
    assert harness.stream_until(lambda: harness.diag_values("fault.worker"))
    assert harness.node.loop.stats["worker_errors"] >= 1
    mark = time.monotonic()
    harness.stream(0.4)
    assert harness.recent(mark) and not harness.moves_after(mark)
    policy.bad_chunk = False
    mark = time.monotonic()
    assert harness.stream_until(lambda: harness.moves_after(mark)), "worker did not recover"


# ------------------------------------------------------------------ the message boundary
BAD_MESSAGES = {
    "wrong encoding": ("camera/color/image_raw",
                       lambda s: Image(header=_hdr(s), height=16, width=16, encoding="yuv422",
                                       step=32, data=bytes(512))),
    "step mismatch": ("camera/color/image_raw",
                      lambda s: Image(header=_hdr(s), height=16, width=16, encoding="rgb8",
                                      step=40, data=bytes(640))),
    "empty data": ("camera/color/image_raw",
                   lambda s: Image(header=_hdr(s), height=16, width=16, encoding="rgb8",
                                   step=48, data=b"")),
    "negative depth": ("camera/depth/image_raw",
                       lambda s: depth_to_image(np.full((16, 16), -1.0, np.float32), s, "cam")),
    "zero focal": ("camera/color/camera_info",
                   lambda s: K_to_camera_info(np.diag([0.0, 0.0, 1.0]), 16, 16, s, "cam")),
    "1 MB instruction": ("instruction", lambda s: String(data="x" * 1_000_000)),
    "missing joint name": ("joint_states",
                           lambda s: JointState(header=_hdr(s), name=["shoulder"], position=[0.1])),
}


def _hdr(stamp):
    return Header(stamp=stamp, frame_id="cam")


@pytest.mark.parametrize("case", sorted(BAD_MESSAGES))
def test_malformed_message_rejected_and_node_keeps_answering(harness, case):
    topic, make = BAD_MESSAGES[case]
    assert harness.stream_until(lambda: harness.moves_after(0.0))
    stamp = harness.driver.get_clock().now().to_msg()
    pub = {"camera/color/image_raw": harness.rgb_pub, "camera/depth/image_raw": harness.depth_pub,
           "camera/color/camera_info": harness.info_pub, "instruction": harness.instr_pub,
           "joint_states": harness.joint_pub}[topic]
    pub.publish(make(stamp))
    assert wait_for(lambda: topic in harness.node.loop.rejections), harness.node.loop.rejections
    assert wait_for(lambda: harness.diag_values(f"rejected.{topic}"))
    if topic == "joint_states":
        reason = harness.diag_values("rejected.joint_states")[-1]
        assert "missing proprio entries" in reason and "ee_x" in reason
    if topic == "instruction":
        assert harness.node.loop.instruction == "touch the red cube"  # last good state kept
    mark = time.monotonic()
    assert harness.stream_until(lambda: harness.moves_after(mark)), "node stopped answering"


@pytest.mark.parametrize("offset_s,words", [(60.0, "ahead"), (-2.0, "past")])
def test_frames_stamped_off_the_clock_are_rejected_and_the_robot_stops(harness, offset_s, words):
    """A camera clock a minute ahead, or frames 2 s late: rejected under `camera` with the
    reason, and they do not keep the robot moving (timings: tests/test_policy_loop.py)."""
    assert harness.stream_until(lambda: harness.moves_after(0.0))
    mark = time.monotonic()
    harness.stream(1.2, offset_s=offset_s)
    assert harness.recent(mark + 0.7) and not harness.moves_after(mark + 0.7)
    reasons = harness.diag_values("rejected.camera")
    assert reasons and words in reasons[-1]


# ------------------------------------------------------------------ parameters
READ_ONLY = ["backend", "model_path", "device", "runtime", "precision", "cuda_graph",
             "embodiment", "use_depth", "sensor_qos", "proprio_qos", "require_proprio",
             "proprio_names", "cmd_vel_stamped", "base_frame", "sync_tolerance_s",
             "camera_to_base", "color_transport", "depth_transport", "added_latency"]


def test_read_only_parameters_are_refused_with_a_reason(harness):
    for name in READ_ONLY:
        value = harness.node.get_parameter(name).value
        result = harness.node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and "read-only" in result.reason.lower(), (name, result)


def test_out_of_range_values_are_refused_and_change_nothing(harness):
    for name, bad in [("control_rate_hz", 0.0), ("deadline_s", -1.0), ("max_ee_speed", 9.0),
                      ("refill_at", -1)]:
        before = harness.node.get_parameter(name).value
        assert not harness.node.set_parameters([Parameter(name, value=bad)])[0].successful
        assert harness.node.get_parameter(name).value == before
    assert harness.node.loop.scheduler.config.rate_hz == 20.0


def test_submodel_parameter_switches_and_rejects_unknown(harness, policy):
    ok = harness.node.set_parameters([Parameter("submodel", value="1/2")])[0]
    assert ok.successful
    bad = harness.node.set_parameters([Parameter("submodel", value="1/3")])[0]
    assert not bad.successful and "1/3" in bad.reason and "full" in bad.reason
    assert harness.stream_until(lambda: policy.submodel == "1/2")  # the worker switches it


def _rate(harness, seconds=1.5):
    mark = time.monotonic()
    harness.stream(seconds)
    times = [t for t, m in harness.commands if t >= mark + 0.3]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def test_control_rate_takes_effect_at_run_time(harness, policy):
    """6-action chunks refilled at 1: commands at the control rate x at most 5/4
    (control/chunk_scheduler.py), whatever the camera rate (20 Hz here). (At 5 Hz a chunk
    spans 1.2 s: the deadline must cover it, or its later actions are never executed.)"""
    policy.chunk_len = 6
    harness.stream(0.5)
    assert 18.0 <= _rate(harness) <= 20.0 * 1.25 + 2
    assert harness.node.set_parameters([Parameter("control_rate_hz", value=5.0),
                                        Parameter("deadline_s", value=1.5)])[0].successful
    assert 4.5 <= _rate(harness, 3.0) <= 5.0 * 1.25 + 0.5


def test_speed_limits_take_effect_at_run_time(harness):
    """Command scaling and the clamps, as the published commands show them."""
    harness.stream(0.5)
    assert harness.node.set_parameters([Parameter("max_ee_speed", value=0.05)])[0].successful
    mark = time.monotonic()
    harness.stream(0.5)
    moving = [speed(m) for m in harness.recent(mark + 0.1) if speed(m) > 0]
    assert moving and all(v == pytest.approx(0.02) for v in moving)  # 0.4 * 0.05
    assert harness.node.set_parameters([Parameter("max_linear", value=0.01)])[0].successful
    mark = time.monotonic()
    harness.stream(0.5)
    moving = [speed(m) for m in harness.recent(mark + 0.1) if speed(m) > 0]
    assert moving and all(v == pytest.approx(0.01) for v in moving)  # clamped


def test_a_set_of_parameters_applies_all_or_none(harness):
    results = harness.node.set_parameters_atomically([Parameter("deadline_s", value=0.05),
                                                      Parameter("submodel", value="2/3")])
    assert not results.successful
    assert harness.node.loop.config.deadline_s == 0.3
    assert harness.node.set_parameters_atomically([Parameter("deadline_s", value=0.05),
                                                   Parameter("stale_after_s", value=1.5)]).successful
    assert harness.node.loop.config.deadline_s == 0.05 and harness.node.loop.safety.config.stale_after_s == 1.5


def test_the_execution_strategy_and_limits_are_live_and_checked(harness):
    """`execution` and the limiter's limits change at run time; an unknown strategy is refused
    with the choices, a negative limit by its range (docs/policy_node.md)."""
    assert harness.node.loop.config.strategy == "delay_aware"  # auto, for an arm
    bad = harness.node.set_parameters([Parameter("execution", value="fastest")])[0]
    assert not bad.successful and "fastest" in bad.reason and "ensemble" in bad.reason
    assert not harness.node.set_parameters([Parameter("limit_jerk", value=-1.0)])[0].successful
    assert harness.node.set_parameters_atomically([Parameter("execution", value="ensemble"),
                                                   Parameter("limit_accel", value=2.0),
                                                   Parameter("limit_jerk", value=15.0)]).successful
    loop = harness.node.loop
    assert loop.scheduler.config.strategy == "ensemble" and loop.limiter.config.jerk == (15.0,) * 3
    assert harness.stream_until(lambda: harness.diag_values("execution")[-1:] == ["ensemble"])


# ------------------------------------------------------------------ vehicle
def test_vehicle_ramps_down_through_the_node_in_unstamped_twist_mode(policy):
    h = Harness(policy, embodiment="vehicle", cmd_vel_stamped=False)
    try:
        h.stream(2.0)
        v0 = speed(h.commands[-1][1])
        assert v0 > 1.0, v0  # accelerating straight on
        assert isinstance(h.commands[-1][1], Twist)
        stop = time.monotonic()
        assert wait_for(lambda: h.recent(stop) and speed(h.commands[-1][1]) == 0.0, 5.0)
        ramp = [speed(m) for m in h.recent(stop)]
        assert ramp[0] > 0.3 * v0  # no step to zero: a ramp
        assert all(b <= a + 1e-9 for a, b in zip(ramp, ramp[1:]))  # never speeds up
    finally:
        h.close()


# ------------------------------------------------------------------ backend routing
def test_vla_runtime_routing_by_device_and_precision(tmp_path, monkeypatch):
    """device/runtime/precision reach the runtime classes the latency bench uses. CUDA itself
    is not on this machine: asking for it is a clear error, not a fault on every tick."""
    from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
    from embodied_stack.models.runtime import make_vla_runtime
    from embodied_stack.models.runtime.onnx_runtime import OnnxRuntime
    from embodied_stack.models.runtime.torch_runtime import TorchRuntime

    monkeypatch.setenv("EMBODIED_STACK_CACHE", str(tmp_path))
    model = ElasticVLA(ElasticVLAConfig(hidden_size=32, num_heads=2, ffn_size=64, num_layers=2,
                                        vision_width=16))
    rt = make_vla_runtime(model, "torch", "cpu", "fp32", False)
    assert isinstance(rt, TorchRuntime) and rt.description == "torch:cpu:fp32"
    ort = make_vla_runtime(model, "onnxruntime", "cpu", "fp32", False)
    assert isinstance(ort, OnnxRuntime) and ort.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="need device cuda"):
        make_vla_runtime(model, "torch", "cpu", "bf16", False)
    with pytest.raises(ValueError, match="apply to runtime torch"):
        make_vla_runtime(model, "onnxruntime", "cuda", "bf16", False)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            make_vla_runtime(model, "torch", "cuda", "bf16", True)


def test_unknown_submodel_fails_before_any_runtime_is_prepared(monkeypatch):
    from embodied_stack.models.policy import backends

    def boom(*args, **kwargs):
        raise AssertionError("runtime prepared before the submodel was checked")

    monkeypatch.setattr(backends, "make_vla_runtime", boom)
    with pytest.raises(ValueError, match="submodel '2/3' not in"):
        backends.load_backend("vla", "", "cpu", "onnxruntime", submodel="2/3")
