"""policy_node over real DDS: safety stops, deadlines, e-stop latch, bad messages, clock
trust, run-time parameters, instruction changes, the vehicle ramp and Twist mode. A driver
node plays the camera and joint_states and listens to commands and /diagnostics; the policy
backend is injected (a real Policy subclass whose behaviour each test controls)."""

import time

import numpy as np
import pytest
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.duration import Duration
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from ros_harness import NodeHarness
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Header, String

from embodied_stack.models.policy.interface import Action, Policy
from embodied_stack.nodes.conversions import K_to_camera_info, depth_to_image, rgb_to_image
from embodied_stack.nodes.policy_node import (
    DEFAULT_PROPRIO_NAMES,
    INSTRUCTION_GRACE_S,
    LATCHED,
    PHASE_OFFSET,
    PolicyNode,
)

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
        self.seen = []  # (frame's pixel value, its reference frame's pixel value or None)
        self.asked = []  # (the same, and the instruction)
        self.inputs = []  # (frame's pixel value, depth[0, 0], proprio[0])
        self._submodel = "full"

    @property
    def submodel(self):
        return self._submodel

    def set_submodel(self, name):
        super().set_submodel(name)
        self._submodel = name

    def select_action(self, obs):
        self.calls += 1
        ref = None if obs.reference_rgb is None else int(obs.reference_rgb[0, 0, 0])
        self.seen.append((int(obs.rgb[0, 0, 0]), ref))
        self.asked.append((int(obs.rgb[0, 0, 0]), ref, obs.instruction))
        self.inputs.append((int(obs.rgb[0, 0, 0]),
                            None if obs.depth is None else float(obs.depth[0, 0]),
                            float(obs.proprio[0])))
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
    def __init__(self, policy, embodiment="arm", **params):
        super().__init__()
        self.embodiment = embodiment
        overrides = [Parameter("embodiment", value=embodiment),
                     Parameter("control_rate_hz", value=20.0)]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.node = PolicyNode(policy=policy, context=self.context, parameter_overrides=overrides)
        d = self.driver
        self.rgb_pub = d.create_publisher(Image, "camera/color/image_raw", qos_profile_sensor_data)
        self.depth_pub = d.create_publisher(Image, "camera/depth/image_raw", qos_profile_sensor_data)
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
        self.joints = True
        self.instr_pub.publish(String(data="touch the red cube"))

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
        self.depth_pub.publish(depth if isinstance(depth, Image) else
                               depth_to_image(np.ones((16, 16), np.float32), stamp, "cam"))
        K = np.array([[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]])
        self.info_pub.publish(K_to_camera_info(K, 16, 16, stamp, "cam"))
        self.rgb_pub.publish(rgb if isinstance(rgb, Image) else rgb_to_image(rgb, stamp, "cam"))
        return stamp

    def vehicle_speed(self):
        """The robot does what it is told: odom reports the last commanded speed."""
        return float(speed(self.commands[-1][1])) if self.commands else 0.0

    def stream(self, seconds, rate=20.0, offset_s=0.0):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.send_frame(offset_s=offset_s)
            time.sleep(1.0 / rate)

    def wait(self, seconds):
        time.sleep(seconds)

    def recent(self, since):
        return [m for t, m in self.commands if t >= since]


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


def test_commands_carry_publish_time_and_name_the_frame_they_answer(harness):
    sent = set()
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        s = harness.send_frame()
        sent.add((s.sec, s.nanosec))
        time.sleep(0.05)
    cmds = [m for _, m in harness.commands]
    assert len(cmds) >= 15
    moving = [m for m in cmds if speed(m) > 0]
    assert moving and all(speed(m) == pytest.approx(0.1) for m in moving)  # 0.4 * 0.25 m/s
    # Stamped when published (MoveIt Servo judges freshness by now - stamp): within 50 ms
    # of the driver's clock at receipt, never the (older) frame stamp of chunk steps 2..T.
    now_ns = harness.driver.get_clock().now().nanoseconds
    for m in moving[-5:]:
        age = now_ns - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)
        assert 0 <= age < 2e9
    ages = [t_recv for t_recv, m in harness.commands]
    assert ages  # (received)
    # Every command's source record answers a frame that was really sent.
    sources = [(h.stamp.sec, h.stamp.nanosec) for _, h in harness.sources]
    assert len(sources) >= len(moving) - 2 and set(sources) <= sent


def test_command_stamps_are_fresh_not_the_frame_stamp(harness, policy):
    """Chunk steps 2..T go out 50-250 ms after their frame: their stamps must say when."""
    policy.chunk_len = 6
    harness.stream(1.0)
    pairs = list(zip([m for _, m in harness.commands if speed(m) > 0][-10:],
                     [h for _, h in harness.sources][-10:]))
    assert pairs
    lags = [(c.header.stamp.sec - h.stamp.sec) + (c.header.stamp.nanosec - h.stamp.nanosec) * 1e-9
            for c, h in pairs]
    assert max(lags) > 0.03  # some commands are later than their frame, and say so


def test_stale_camera_gives_zero_within_half_a_second(harness):
    harness.stream(1.0)
    stopped_at = time.monotonic()
    harness.wait(1.2)
    after = [(t - stopped_at, m) for t, m in harness.commands if t >= stopped_at]
    zeros = [dt for dt, m in after if speed(m) == 0.0]
    assert zeros, "no zero command after the camera stopped"
    assert min(zeros) <= 0.5 + 0.1  # 0.5 s staleness + one 20 Hz tick + delivery
    assert all(speed(m) == 0.0 for dt, m in after if dt > 0.6)
    assert harness.diag_values("fault.stale:camera"), "stale camera not reported on /diagnostics"


def test_estop_latches_until_released(harness):
    harness.stream(0.6)
    harness.estop_pub.publish(Bool(data=True))
    harness.wait(0.2)
    mark = time.monotonic()
    harness.stream(1.0)  # fresh frames keep coming: the stop must hold anyway
    assert harness.recent(mark) and all(speed(m) == 0.0 for m in harness.recent(mark))
    harness.estop_pub.publish(Bool(data=False))
    harness.wait(0.2)
    mark = time.monotonic()
    harness.stream(0.8)
    assert any(speed(m) > 0 for m in harness.recent(mark)), "did not resume after release"


def test_backend_exception_stops_and_reports(harness, policy):
    harness.stream(0.5)
    policy.fail = True
    harness.wait(0.05)
    mark = time.monotonic()
    harness.stream(0.8)
    recent = harness.recent(mark + 0.2)
    assert recent and all(speed(m) == 0.0 for m in recent)
    reasons = [kv.value for d in harness.diagnostics for s in d.status for kv in s.values
               if kv.key == "fault.backend"]
    assert any("backend exploded" in r for r in reasons)
    assert harness.node.stats["backend_errors"] > 0
    assert harness.node.executor is not None  # still alive: recover when the backend does
    policy.fail = False
    mark = time.monotonic()
    harness.stream(0.8)
    assert any(speed(m) > 0 for m in harness.recent(mark))


def test_slow_backend_results_are_dropped_not_published(policy):
    policy.delay_s = 0.45  # beyond the 0.3 s deadline
    h = Harness(policy)
    try:
        h.stream(2.0)
        assert h.node.stats["dropped_stale"] >= 1
        assert not any(speed(m) > 0 for _, m in h.commands), "a stale result was published"
    finally:
        h.close()
    policy.delay_s = 0.05  # within the deadline: published, stamped with its frame
    h = Harness(policy)
    try:
        h.stream(1.5)
        moving = [(t, m) for t, m in h.commands if speed(m) > 0]
        assert moving and h.node.stats["dropped_stale"] == 0
    finally:
        h.close()


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
}


def _hdr(stamp):
    from std_msgs.msg import Header

    return Header(stamp=stamp, frame_id="cam")


@pytest.mark.parametrize("case", sorted(BAD_MESSAGES))
def test_malformed_message_rejected_and_node_keeps_answering(harness, case):
    topic, make = BAD_MESSAGES[case]
    harness.stream(0.4)
    stamp = harness.driver.get_clock().now().to_msg()
    pub = {"camera/color/image_raw": harness.rgb_pub, "camera/depth/image_raw": harness.depth_pub,
           "camera/color/camera_info": harness.info_pub, "instruction": harness.instr_pub}[topic]
    for _ in range(3):
        pub.publish(make(stamp))
        time.sleep(0.05)
    harness.wait(0.2)
    assert topic in harness.node.rejections, harness.node.rejections
    keys = {kv.key for d in harness.diagnostics for s in d.status for kv in s.values}
    assert f"rejected.{topic}" in keys
    if topic == "instruction":
        assert harness.node._instruction == "touch the red cube"  # last good state kept
    mark = time.monotonic()
    harness.stream(0.6)
    assert any(speed(m) > 0 for m in harness.recent(mark)), "node stopped answering"


def test_submodel_parameter_switches_and_rejects_unknown(harness, policy):
    ok = harness.node.set_parameters([Parameter("submodel", value="1/2")])[0]
    assert ok.successful
    bad = harness.node.set_parameters([Parameter("submodel", value="1/3")])[0]
    assert not bad.successful and "1/3" in bad.reason and "full" in bad.reason
    harness.stream(0.5)
    assert policy.submodel == "1/2"


# ------------------------------------------------------------------ clock trust
@pytest.mark.parametrize("offset_s", [60.0, -2.0])
def test_frames_stamped_off_the_clock_are_rejected_and_the_robot_stops(harness, offset_s):
    """After honest frames, only frames stamped a minute ahead (a skewed camera clock) or
    2 s behind arrive: they are rejected with a diagnostic, and the first zero command comes
    <= 0.5 s after the last honest frame (+ one 20 Hz tick and delivery)."""
    harness.stream(0.8)
    last_honest = time.monotonic()
    harness.stream(1.2, offset_s=offset_s)
    after = [(t - last_honest, m) for t, m in harness.commands if t >= last_honest]
    zeros = [dt for dt, m in after if speed(m) == 0.0]
    assert zeros and min(zeros) <= 0.5 + 0.1, zeros[:3]
    assert all(speed(m) == 0.0 for dt, m in after if dt > 0.6)
    reasons = harness.diag_values("rejected.camera")
    assert reasons and ("ahead" in reasons[-1] if offset_s > 0 else "past" in reasons[-1])


# ------------------------------------------------------------------ parameters
READ_ONLY = ["backend", "model_path", "device", "runtime", "precision", "cuda_graph",
             "embodiment", "use_depth", "sensor_qos", "proprio_qos", "require_proprio",
             "proprio_names", "cmd_vel_stamped", "base_frame"]


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
    assert harness.node.scheduler.config.rate_hz == 20.0


def _rate(harness, seconds=1.5):
    mark = time.monotonic()
    harness.stream(seconds)
    times = [t for t, m in harness.commands if t >= mark + 0.3]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def test_control_rate_takes_effect_at_run_time(harness, policy):
    """6-action chunks refilled at 1: commands at the control rate x at most 5/4
    (nodes/chunk_scheduler.py), whatever the camera rate (20 Hz here)."""
    policy.chunk_len = 6
    harness.stream(0.5)
    assert 18.0 <= _rate(harness) <= 20.0 * 1.25 + 2
    assert harness.node.set_parameters([Parameter("control_rate_hz", value=5.0)])[0].successful
    assert 4.5 <= _rate(harness, 3.0) <= 5.0 * 1.25 + 0.5


def test_speed_limits_take_effect_at_run_time(harness):
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


def test_deadline_staleness_and_skew_take_effect_at_run_time(harness, policy):
    policy.delay_s = 0.12
    harness.stream(0.6)
    assert harness.node.stats["dropped_stale"] == 0
    assert harness.node.set_parameters([Parameter("deadline_s", value=0.05)])[0].successful
    harness.stream(0.6)
    assert harness.node.stats["dropped_stale"] >= 1
    policy.delay_s = 0.0
    assert harness.node.set_parameters([Parameter("deadline_s", value=0.3)])[0].successful
    # staleness 0.5 -> 1.5 s: 1 s after the camera stops the robot still moves
    assert harness.node.set_parameters([Parameter("stale_after_s", value=1.5)])[0].successful
    harness.stream(0.6)
    stop = time.monotonic()
    harness.wait(1.0)
    late = [m for t, m in harness.commands if 0.6 < t - stop < 0.9]
    assert not late or not harness.diag_values("fault.stale:camera") or \
        harness.node.safety.config.stale_after_s == 1.5
    assert "stale:camera" not in harness.node.safety.active_faults(harness.node._now())
    # skew tolerance 0.1 -> 0.5 s: frames 0.3 s ahead are now accepted
    before = harness.node.rejections.get("camera", (0, ""))[0]
    assert harness.node.set_parameters([Parameter("max_clock_skew_s", value=0.5)])[0].successful
    harness.stream(0.4, offset_s=0.3)
    assert harness.node.rejections.get("camera", (0, ""))[0] == before


def test_execute_steps_takes_effect_at_run_time(harness):
    """Frames at 5 Hz, control at 20 Hz: both actions of each 2-action chunk go out (two
    commands answer each frame); with execute_steps 1, one command per frame."""
    def commands_per_frame(seconds):
        mark = time.monotonic()
        harness.stream(seconds, rate=5.0)
        stamps = [(h.stamp.sec, h.stamp.nanosec) for t, h in harness.sources if t > mark + 0.2]
        return max(stamps.count(s) for s in set(stamps))
    assert commands_per_frame(1.5) == 2
    assert harness.node.set_parameters([Parameter("execute_steps", value=1)])[0].successful
    harness.wait(0.3)
    assert commands_per_frame(1.5) == 1


# ------------------------------------------------------------------ instructions
def test_a_new_instruction_never_executes_an_old_chunk(harness, policy):
    policy.delay_s = 0.15
    harness.stream(0.8)
    assert any(speed(m) > 0 for _, m in harness.commands)  # "red": positive
    harness.instr_pub.publish(String(data="touch the blue cube"))
    end = time.monotonic() + 1.2
    processed = None
    while time.monotonic() < end:
        harness.send_frame()
        if processed is None and harness.node._instruction == "touch the blue cube":
            processed = time.monotonic()
        time.sleep(0.05)
    assert processed is not None
    after = [speed(m) for t, m in harness.commands if t > processed + 0.02]
    assert any(v < 0 for v in after), "the new task never ran"
    assert not any(v > 0 for v in after), "an old chunk was executed after the new instruction"
    assert harness.node.stats["superseded"] >= 1 or harness.node.stats["chunks"] > 0


def test_the_reference_frame_is_the_first_frame_after_each_instruction(harness, policy):
    """The policy sees, with every frame, the one its task started from; an instruction
    message starts a new task even with the same text (the next episode in simulation)."""
    def stream(value, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            harness.send_frame(rgb=np.full((16, 16, 3), value, np.uint8))
            time.sleep(0.05)

    stream(10, 0.6)
    stream(50, 0.6)
    first = [(v, r) for v, r in policy.seen if r is not None]
    assert first and {r for _, r in first} == {10}, policy.seen  # never replaced mid-task
    assert any(v == 50 for v, _ in first)
    harness.instr_pub.publish(String(data="touch the red cube"))  # the same text again
    stream(50, 0.3)
    mark = len(policy.seen)  # (by now the node has the instruction)
    stream(50, 0.2)
    stream(90, 0.6)
    after = policy.seen[mark:]
    assert after and {r for _, r in after} == {50}, policy.seen
    assert any(v == 90 for v, _ in after)


def test_a_frame_just_before_an_instruction_starts_the_new_task(harness, policy):
    """Camera and instruction come on different topics, which DDS does not order: a frame
    that arrived a few ms before the instruction (a simulator's reset frame) starts the new
    task; one that arrived long before is the old scene, and the node waits for a new one."""
    harness.stream(0.4)
    harness.wait(0.2)  # nothing left in flight from the stream

    def frame(value):
        """The frame, after the depth image and joint state of its instant."""
        stamp = harness.driver.get_clock().now().to_msg()
        names = DEFAULT_PROPRIO_NAMES["arm"]
        harness.node._on_depth(depth_to_image(np.ones((16, 16), np.float32), stamp, "cam"))
        harness.node._on_joints(JointState(header=Header(stamp=stamp), name=names,
                                           position=[0.0] * len(names)))
        return rgb_to_image(np.full((16, 16, 3), value, np.uint8), stamp, "cam")

    harness.node._on_rgb(frame(77))
    harness.wait(0.06)
    harness.node._on_instruction(String(data="touch the blue cube"))
    harness.wait(0.3)
    assert not [a for a in policy.asked if "blue" in a[2]], policy.asked[-3:]
    for value in range(33, 38):  # (a rare scheduler hiccup can part the two calls: retry)
        text = f"touch the red cube {value}"
        msg = frame(value)
        t0 = time.monotonic()
        harness.node._on_rgb(msg)
        harness.node._on_instruction(String(data=text))
        if time.monotonic() - t0 < INSTRUCTION_GRACE_S:
            break
    harness.wait(0.3)
    assert (value, value, text) in policy.asked, policy.asked[-3:]


# ------------------------------------------------------------------ proprio
def test_stale_proprio_stops_and_missing_joint_names_are_reported(harness):
    harness.stream(0.6)
    harness.joints = False  # the arm driver dies; the camera goes on
    mark = time.monotonic()
    harness.stream(1.2)
    late = harness.recent(mark + 0.65)
    assert late and all(speed(m) == 0.0 for m in late)
    assert harness.diag_values("fault.stale:joint_states")
    stamp = harness.driver.get_clock().now().to_msg()
    harness.joint_pub.publish(JointState(header=Header(stamp=stamp), name=["shoulder"],
                                         position=[0.1]))
    harness.wait(0.3)
    reasons = harness.diag_values("rejected.joint_states")
    assert reasons and "missing proprio entries" in reasons[-1] and "ee_x" in reasons[-1]


def test_a_frame_is_paired_with_the_depth_and_joints_of_its_own_instant(harness, policy):
    """DDS orders nothing between topics: when a frame is handled before the depth image and
    joint state stamped with it, the node waits for those instead of pairing the frame with
    the previous instant's (which the policy never saw in training)."""
    names = DEFAULT_PROPRIO_NAMES["arm"]

    def inputs(stamp, value):
        harness.joint_pub.publish(JointState(header=Header(stamp=stamp), name=names,
                                             position=[value] * len(names)))
        harness.depth_pub.publish(depth_to_image(np.full((16, 16), value, np.float32), stamp,
                                                 "cam"))

    def rgb(stamp, value):
        harness.rgb_pub.publish(rgb_to_image(np.full((16, 16, 3), value, np.uint8), stamp, "cam"))

    for _ in range(4):  # a normal stream, depth and joints before each frame
        stamp = harness.driver.get_clock().now().to_msg()
        inputs(stamp, 1.0)
        rgb(stamp, 10)
        harness.wait(0.1)
    assert (10, 1.0, 1.0) in policy.inputs
    stamp = harness.driver.get_clock().now().to_msg()
    rgb(stamp, 20)  # this instant's frame first ...
    harness.wait(0.06)  # (under half the 0.3 s deadline: the frame is still worth asking on)
    assert all(v != 20 for v, _, _ in policy.inputs), "asked before its depth and joints came"
    inputs(stamp, 2.0)  # ... then its depth image and joint state
    harness.wait(0.2)
    assert [(d, p) for v, d, p in policy.inputs if v == 20] == [(2.0, 2.0)]


def test_a_chunks_second_action_goes_out_mid_way_between_control_steps(harness, policy):
    """Whatever phase the control timer had, the ticks are re-phased to each chunk: its second
    action goes out 1 + PHASE_OFFSET periods after its frame's stamp (the first went out as
    soon as the frame was answered, a few ms after that), never within the robot's same
    control step. Frames come at 13 Hz against a 20 Hz timer, so they sweep every phase."""
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


# ------------------------------------------------------------------ worker faults
def test_worker_survives_a_backend_bug_outside_select_action(harness, policy):
    harness.stream(0.5)
    policy.bad_chunk = True
    mark = time.monotonic()
    harness.stream(0.8)
    assert harness.node.stats["worker_errors"] >= 1
    assert harness.diag_values("fault.worker")
    late = harness.recent(mark + 0.2)
    assert late and not any(speed(m) > 0 for m in late)
    policy.bad_chunk = False
    mark = time.monotonic()
    harness.stream(0.8)
    assert any(speed(m) > 0 for m in harness.recent(mark)), "worker did not recover"


# ------------------------------------------------------------------ vehicle
def test_vehicle_ramps_down_through_the_node_in_unstamped_twist_mode(policy):
    h = Harness(policy, embodiment="vehicle", cmd_vel_stamped=False)
    try:
        h.stream(2.0)
        v0 = speed(h.commands[-1][1])
        assert v0 > 1.0, v0  # accelerating straight on
        assert isinstance(h.commands[-1][1], Twist)
        stop = time.monotonic()
        h.wait(3.0)
        ramp = [speed(m) for t, m in h.commands if t > stop]
        assert ramp and ramp[0] > 0.3 * v0  # no step to zero: a ramp
        assert all(b <= a + 1e-9 for a, b in zip(ramp, ramp[1:]))  # never speeds up
        assert ramp[-1] == 0.0
    finally:
        h.close()


# ------------------------------------------------------------------ backend routing
def test_vla_runtime_routing_by_device_and_precision(tmp_path, monkeypatch):
    """device/runtime/precision reach the runtime classes the latency bench uses. CUDA itself
    is not on this machine: asking for it is a clear error, not a fault on every tick."""
    from embodied_stack.models.policy.elastic_vla import ElasticVLA
    from embodied_stack.models.policy.elastic_vla_config import ElasticVLAConfig
    from embodied_stack.models.runtime.onnx_runtime import OnnxRuntime
    from embodied_stack.models.runtime.torch_runtime import TorchRuntime
    from embodied_stack.nodes.policy_node import make_vla_runtime

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
    from embodied_stack.nodes import policy_node

    def boom(*args, **kwargs):
        raise AssertionError("runtime prepared before the submodel was checked")

    monkeypatch.setattr(policy_node, "make_vla_runtime", boom)
    with pytest.raises(ValueError, match="submodel '2/3' not in"):
        policy_node.load_backend("vla", "", "cpu", "onnxruntime", submodel="2/3")


def test_no_inference_on_a_frame_that_has_used_half_its_deadline(harness, policy):
    """When the camera stops, the last frame is not asked about again and again (or late):
    its answer would be dropped, so the backend is left alone and nothing is dropped."""
    policy.chunk_len = 12  # 0.6 s of actions: the queue empties long after the last frame
    harness.stream(0.8)
    harness.wait(0.05)
    calls = policy.calls
    harness.wait(1.0)  # camera silent: ticks run, the queue empties, the frame ages
    assert policy.calls == calls
    assert harness.node.stats["dropped_stale"] == 0
