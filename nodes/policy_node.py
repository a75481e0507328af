"""policy_node: camera + instruction in, commands out, with safety.

Inputs: `camera/color/image_raw` (rgb8/bgr8), `camera/depth/image_raw` (32FC1 m / 16UC1 mm,
optional; NaN/inf pixels are "no return", REP-118), `camera/color/camera_info`, `joint_states`
(proprio, mapped by `proprio_names`), `odom` (vehicle speed), `instruction` (std_msgs/String,
transient-local), `estop` (std_msgs/Bool, transient-local, latched).
Outputs: `servo/delta_twist_cmds` (TwistStamped, arm) or `cmd_vel` (TwistStamped, or Twist
with `cmd_vel_stamped:=false`, vehicle), stamped with their publish time (MoveIt Servo and
twist muxes judge freshness by it); `~/command_source` (std_msgs/Header: the stamp of the
observation each command answers, published with it); `plan` (nav_msgs/Path) and
`target_point` (PointStamped) when the backend gives them; `~/inference`
(diagnostic_msgs/KeyValue per inference: key = submodel, value = seconds inside the backend;
the elastic node corrects its latency table from them); `/diagnostics`.

How it runs:
- Inference never runs on an executor thread: a dedicated worker thread runs
  `policy.select_action` on the latest observation when the chunk queue needs a refill. Any
  exception there is logged, reported on /diagnostics and turned into a safe stop; the worker
  carries on with the next request.
- When to ask for a chunk and which action to execute is decided by ChunkScheduler
  (nodes/chunk_scheduler.py: refill, deadline, skip by age, instruction epochs) and what may
  go out by SafetySupervisor (nodes/safety.py: stale input, faults, e-stop, clamps); both are
  plain classes tested on a fake clock. Every message on `instruction` starts a new task (the
  same text too) and invalidates every older result; the first frame used after it is the
  task's reference frame, handed to the policy with every later observation (models with
  `reference_frame` read it: their memory of where the task started).
- Every input is judged by this node's clock (sim time with `use_sim_time`): a frame stamped
  more than `max_clock_skew_s` ahead of it, or older than `stale_after_s`, is rejected with a
  diagnostic and does not refresh staleness.
- Parameters marked read-only are refused at run time with a reason; every other one takes
  effect at once (rate, deadline, staleness, clamps, submodel, ...).
- Backends that answer with a target or a plan (`Policy.outputs_targets`: MiMo) get their
  chunk built here (nodes/target_control.py): an arm servoes to `target_point` (metres, camera
  optical frame) moved to the base frame by `camera_to_base`; a vehicle follows `plan` by pure
  pursuit. No target (no answer, no valid depth, no transform) -> a stop, the reason on
  /diagnostics (`fault.target`). For a model that takes seconds, raise `deadline_s` and make
  `plan_horizon_s` and `refill_at` cover its latency.
- Malformed messages are rejected at the boundary with a throttled log line and a
  diagnostics entry; the last good state is kept. Repeated identical faults are logged at most
  every few seconds; a change of the active faults at once.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
import threading
import time
import traceback

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Header, String

from embodied_stack.models.policy.interface import Observation, Policy
from embodied_stack.models.runtime import check_submodel, example_observation, make_vla_runtime
from embodied_stack.nodes.chunk_scheduler import ChunkScheduler, SchedulerConfig
from embodied_stack.nodes.commands import ArmScale, VehicleScale
from embodied_stack.nodes.conversions import (
    MessageRejected,
    camera_info_to_K,
    check_instruction,
    image_to_depth,
    image_to_rgb,
    seconds_to_stamp,
    stamp_to_seconds,
)
from embodied_stack.nodes.input_sync import StampedBuffer
from embodied_stack.nodes.safety import SafetyConfig, SafetySupervisor
from embodied_stack.nodes.target_control import ArmServo, PurePursuit, static_transform
from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD, PROPRIO_NAMES

#: Default proprio layouts by embodiment: the simulation worlds' (a robot sets proprio_names).
DEFAULT_PROPRIO_NAMES = {EMBODIMENT_OF_WORLD[w]: names for w, names in PROPRIO_NAMES.items()}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
QOS_NAMES = ("sensor_data", "reliable", "best_effort")
#: A fault repeated unchanged is logged at most this often (s); a new one at once.
FAULT_LOG_PERIOD_S = 5.0
#: a frame that arrived at most this long before an instruction may start the new task: the
#: two come on different topics, which DDS does not order (a simulator's reset frame came
#: 0.6-3.6 ms ahead of its instruction here; the frame before it, >= 8 ms)
INSTRUCTION_GRACE_S = 0.005
#: A chunk's second action goes out 1 + PHASE_OFFSET control periods after its frame's stamp
#: (its first goes out as soon as it is ready): mid-way between the robot's steps.
PHASE_OFFSET = 0.5


def sensor_qos(name: str) -> QoSProfile:
    """QoS for input topics from a string parameter."""
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    if name == "best_effort":
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    raise ValueError(f"QoS {name!r} not in {QOS_NAMES}")


def _kind(reason: str) -> str:
    """A rejection reason without its numbers: repeats of one kind are not re-reported."""
    return re.sub(r"[-+]?\d[\d.e+-]*", "#", reason)


def _float(desc, lo, hi):
    return ParameterDescriptor(description=desc, floating_point_range=[
        FloatingPointRange(from_value=float(lo), to_value=float(hi))])


def _int(desc, lo, hi):
    return ParameterDescriptor(description=desc, integer_range=[
        IntegerRange(from_value=int(lo), to_value=int(hi), step=1)])


def _fixed(desc):
    """A parameter read once at start-up: setting it later is refused with a reason."""
    return ParameterDescriptor(description=desc + " (read-only: set it at launch)",
                               read_only=True)


def _fixed_range(desc, lo, hi):
    """A read-only float with its allowed range."""
    d = _float(desc + " (read-only: set it at launch)", lo, hi)
    d.read_only = True
    return d


def _live(desc):
    return ParameterDescriptor(description=desc)


#: Parameters that change the limits or timings at run time (the rest are read-only).
SCHEDULER_PARAMS = {"control_rate_hz": "rate_hz", "deadline_s": "deadline_s",
                    "refill_at": "refill_at", "execute_steps": "execute_steps"}
SCALE_PARAMS = ("max_ee_speed", "max_steer", "max_accel", "max_speed", "wheelbase",
                "control_rate_hz", "servo_gain", "servo_stop_radius_m", "lookahead_m",
                "lookahead_time_s", "plan_horizon_s")


def load_backend(name: str, model_path: str, device: str, runtime: str = "torch",
                 precision: str = "fp32", cuda_graph: bool = False,
                 submodel: str | None = None, elastic: bool = False) -> Policy:
    """Build the policy backend the `backend` parameter names. For `vla`, the runtime is
    prepared here (ONNX export / engine build / CUDA graph capture for every named submodel,
    cached on disk where it can be), never in the control loop; `submodel` is checked first,
    so a wrong name fails before that work. For `mimo`, `elastic` ranks and permutes the
    Qwen decoder at start-up so `submodel` can switch its nested submodels."""
    if name == "expert":
        from embodied_stack.models.policy.expert_relay import ExpertRelayPolicy

        return ExpertRelayPolicy()
    if name == "vla":
        from embodied_stack.models.policy import load_default_policy

        policy = load_default_policy(model_path or None)
        check_submodel(policy, submodel)
        if runtime != "torch" or device != "cpu" or precision != "fp32" or cuda_graph:
            policy.use_runtime(make_vla_runtime(policy, runtime, device, precision, cuda_graph))
        return policy
    if name == "mimo":
        from embodied_stack.models.policy.mimo_adapter import MiMoEmbodiedPolicy

        if not model_path:
            raise ValueError("backend 'mimo' needs model_path: a local MiMo-Embodied-7B checkpoint")
        if submodel not in (None, "full") and not elastic:
            raise ValueError(f"submodel {submodel!r}: backend 'mimo' serves only 'full' unless "
                             "mimo_elastic:=true")
        policy = MiMoEmbodiedPolicy.from_pretrained(model_path, device=device)
        if elastic:
            policy.make_elastic()
        return policy
    raise ValueError(f"backend {name!r} not in ('vla', 'mimo', 'expert')")


class PolicyNode(Node):
    def __init__(self, policy: Policy | None = None, **node_kwargs):
        self._worker = None  # (destroy_node must work whatever __init__ got to)
        self._wake = threading.Condition(threading.Lock())
        self._stop = False
        super().__init__("policy_node", **node_kwargs)
        p = self.declare_parameter
        # --- backend (read once) ---
        p("backend", "vla", _fixed("policy backend: vla (own ElasticVLA), mimo "
                                   "(MiMo-Embodied-7B checkpoint), expert (sim only)"))
        p("model_path", "", _fixed("model directory; empty = the shipped default model"))
        p("device", "cpu", _fixed("torch device for the backend: cpu, cuda, cuda:0"))
        p("runtime", "onnxruntime", _fixed("vla runtime: torch (eager; CPU or CUDA) or "
                                           "onnxruntime (exported per submodel at start-up, "
                                           "cached; faster on CPU; CUDA/TensorRT providers "
                                           "when installed)"))
        p("precision", "fp32", _fixed("vla on CUDA with runtime torch: fp32, bf16 or fp16 "
                                      "weights"))
        p("cuda_graph", False, _fixed("vla on CUDA with runtime torch: replay one captured "
                                      "CUDA graph per submodel"))
        p("submodel", "full", _live("elastic submodel (full, 3/4, 1/2, 1/4 for ElasticVLA, "
                                    "and for mimo with mimo_elastic); switchable at run time"))
        p("mimo_elastic", False, _fixed("mimo: rank and permute the Qwen decoder at start-up "
                                        "into nested submodels full, 3/4, 1/2, 1/4 (zero-shot; "
                                        "calibrated on synthetic frames)"))
        p("embodiment", "arm", _fixed("arm (servo/delta_twist_cmds) or vehicle (cmd_vel)"))
        # --- timing (live) ---
        p("control_rate_hz", 10.0, _float("command rate (Hz)", 1.0, 200.0))
        p("deadline_s", 0.3, _float("drop a result whose observation is older than this (s); "
                                    "seconds for a large planner backend", 0.01, 60.0))
        p("stale_after_s", 0.5, _float("an input older than this (s) stops the robot",
                                       0.05, 60.0))
        p("max_clock_skew_s", 0.1, _float("reject inputs stamped further than this (s) ahead "
                                          "of this node's clock", 0.001, 5.0))
        p("refill_at", 1, _int("request the next chunk when this many actions remain", 0, 64))
        p("execute_steps", 0, _int("actions of each chunk to execute (0 = all)", 0, 64))
        # --- inputs (read once) ---
        p("use_depth", True, _fixed("feed depth to the backend and require it"))
        p("sensor_qos", "sensor_data", _fixed(f"camera QoS: {', '.join(QOS_NAMES)}"))
        p("proprio_qos", "sensor_data", _fixed(f"joint_states / odom QoS: {', '.join(QOS_NAMES)}"))
        p("require_proprio", True, _fixed("stop when joint_states (and odom for a vehicle) "
                                          "go stale, like the camera"))
        p("sync_tolerance_s", 0.02, _fixed_range(
            "pair each camera frame with the depth image and joint state stamped closest to "
            "it within this many seconds, waiting while they may still come", 0.0, 1.0))
        p("proprio_names", [""], _fixed("joint_states names forming the proprio vector, in "
                                        "order (default: the worlds' layout)"))
        # --- outputs and limits ---
        p("cmd_vel_stamped", True, _fixed("vehicle: publish TwistStamped (true) or Twist"))
        p("base_frame", "base_link", _fixed("frame_id of commands and plans"))
        p("max_linear", 0.0, _float("|v| limit m/s (0 = embodiment default)", 0.0, 100.0))
        p("max_angular", 1.0, _float("vehicle |omega| limit rad/s", 0.01, 10.0))
        p("max_reverse", 0.0, _float("vehicle: most negative speed allowed m/s", 0.0, 10.0))
        p("max_ee_speed", 0.25, _float("arm: m/s at |action| = 1", 0.001, 5.0))
        p("max_steer", 0.5, _float("vehicle: steering rad at |action| = 1", 0.01, 1.5))
        p("max_accel", 3.0, _float("vehicle: m/s^2 at |action| = 1", 0.1, 20.0))
        p("max_speed", 15.0, _float("vehicle: speed cap m/s", 0.1, 100.0))
        p("wheelbase", 2.7, _float("vehicle: wheelbase m", 0.1, 10.0))
        # --- target / plan backends (mimo): how their answers become the chunk ---
        p("plan_horizon_s", 3.0, _float("mimo: seconds of commands built from one answer "
                                        "(cover the backend's inference time)", 0.1, 60.0))
        p("camera_to_base", [0.0], _fixed("arm: the camera optical frame's pose in the base "
                                          "frame of servo commands, x y z qx qy qz qw (as "
                                          "static_transform_publisher); [0.0] = not set"))
        p("servo_gain", 2.0, _float("arm: m/s toward the target per m of distance", 0.01, 50.0))
        p("servo_stop_radius_m", 0.01, _float("arm: zero velocity this close to the target",
                                              0.0, 1.0))
        p("lookahead_m", 5.0, _float("vehicle: shortest pure-pursuit look-ahead, m", 0.1, 100.0))
        p("lookahead_time_s", 1.0, _float("vehicle: look-ahead grows to this many seconds of "
                                          "travel", 0.0, 10.0))

        g = lambda name: self.get_parameter(name).value  # noqa: E731
        self.embodiment = g("embodiment")
        if self.embodiment not in ("arm", "vehicle"):
            raise ValueError(f"embodiment {self.embodiment!r} not in ('arm', 'vehicle')")
        for name in ("sensor_qos", "proprio_qos"):
            if g(name) not in QOS_NAMES:
                raise ValueError(f"{name} {g(name)!r} not in {QOS_NAMES}")
        self.use_depth = bool(g("use_depth"))
        self.require_proprio = bool(g("require_proprio"))
        self.sync_tolerance_s = float(g("sync_tolerance_s"))
        self.frame = g("base_frame")
        names = [n for n in g("proprio_names") if n]
        self.proprio_names = names or DEFAULT_PROPRIO_NAMES[self.embodiment]
        self.scheduler = ChunkScheduler(SchedulerConfig(
            rate_hz=g("control_rate_hz"), deadline_s=g("deadline_s"), refill_at=g("refill_at"),
            execute_steps=g("execute_steps")))
        self.safety = SafetySupervisor(SafetyConfig(kind=self.embodiment, **self._safety_limits(g)))
        self.camera_to_base = static_transform(g("camera_to_base"))
        self._build_scales(g)

        self.policy = policy if policy is not None else load_backend(
            g("backend"), g("model_path"), g("device"), g("runtime"), g("precision"),
            bool(g("cuda_graph")), g("submodel"), bool(g("mimo_elastic")))
        self.backend_name = g("backend") if policy is None else type(policy).__name__
        #: chunks of a target backend hold setpoints (arm: a base-frame point; vehicle:
        #: steering and desired speed), turned into commands at every tick
        self._target_chunks = bool(getattr(self.policy, "outputs_targets", False))
        runtime = getattr(self.policy, "_runtime", None)
        self.runtime_description = getattr(runtime, "description", "model (eager)")
        check_submodel(self.policy, g("submodel"))
        self._pending_submodel = g("submodel")
        if hasattr(self.policy, "obs_to_batch"):
            # One inference now: lazy kernel set-up must not make the first real answer late.
            self.policy.set_submodel(self._pending_submodel)
            self.policy.select_action(example_observation(self.policy, self.embodiment))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # --- state shared with the worker: under _lock (the _wake condition's lock) ---
        self._lock = self._wake
        self._rgb = self._rgb_stamp = None
        self._rgb_frame = "camera_color_optical_frame"  # frame_id of the latest colour image
        self._depth_buf = StampedBuffer()  # recent (stamp, depth) / (stamp, proprio) samples
        self._proprio_buf = StampedBuffer()
        # The newest frame waits for its depth / joint state: only then may their callbacks
        # ask (one of the next instant must not start an inference on the frame before it).
        self._awaiting_inputs = False
        self._K = None
        self._proprio = np.zeros(8, np.float32)
        self._speed = 0.0
        self._instruction: str | None = None
        self._instruction_since = -float("inf")  # when it arrived (wall time)
        self._reference = None  # (rgb, depth) of the task's first frame, once one was used
        self._request = None  # (Observation, epoch, camera frame, speed) for the worker
        self._result = None  # (Action | None, Exception | None, obs stamp, epoch)
        self._control_lock = threading.Lock()  # serialises _control_step (timer vs worker)
        self._last_obs_stamp = None  # the observation the last command answered
        self._stamp_msgs: dict[float, object] = {}  # frame stamp -> its exact header stamp
        # Counters for diagnostics (copied under _lock when published).
        self.stats = collections.Counter()
        self.latencies: collections.deque = collections.deque(maxlen=500)  # frame -> result
        self.model_latencies: collections.deque = collections.deque(maxlen=500)  # in backend
        #: frame arrival -> its first command published, inside this node (wall time)
        self.node_latencies: collections.deque = collections.deque(maxlen=1000)
        self.rejections: dict[str, tuple[int, str]] = {}
        self._last_faults: dict[str, str] = {}
        self._fault_logged_at = -float("inf")

        # --- ROS interfaces ---
        qos = sensor_qos(g("sensor_qos"))
        proprio_qos = sensor_qos(g("proprio_qos"))
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, "camera/color/image_raw", self._on_rgb, qos,
                                 callback_group=inputs)
        if self.use_depth:
            self.create_subscription(Image, "camera/depth/image_raw", self._on_depth, qos,
                                     callback_group=inputs)
        self.create_subscription(CameraInfo, "camera/color/camera_info", self._on_info, qos,
                                 callback_group=inputs)
        self.create_subscription(JointState, "joint_states", self._on_joints, proprio_qos,
                                 callback_group=inputs)
        self.create_subscription(Odometry, "odom", self._on_odom, proprio_qos,
                                 callback_group=inputs)
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED,
                                 callback_group=inputs)
        self.create_subscription(Bool, "estop", self._on_estop, LATCHED, callback_group=inputs)
        if hasattr(self.policy, "feed"):  # the sim-only expert relay (models/policy/expert_relay)
            self.create_subscription(TwistStamped, "sim/expert_action", self._on_expert, 10,
                                     callback_group=inputs)
        if self.embodiment == "arm":
            self.cmd_pub = self.create_publisher(TwistStamped, "servo/delta_twist_cmds", 10)
        else:
            self.cmd_pub = self.create_publisher(
                TwistStamped if g("cmd_vel_stamped") else Twist, "cmd_vel", 10)
        self.source_pub = self.create_publisher(Header, "~/command_source", 10)
        self.plan_pub = self.create_publisher(Path, "plan", 10)
        self.point_pub = self.create_publisher(PointStamped, "target_point", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.inference_pub = self.create_publisher(KeyValue, "~/inference", 50)
        now = self._now()
        self.safety.watch("camera", now)
        if self.use_depth:
            self.safety.watch("depth", now)
        if g("require_proprio"):
            self.safety.watch("joint_states", now)
            if self.embodiment == "vehicle":
                self.safety.watch("odom", now)
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._tick_timer = self.create_timer(self.scheduler.config.period_s, self._on_tick,
                                             callback_group=self._control_group)
        # A one-shot, started (with its delay) by each chunk's first action: it restarts the
        # tick timer so that the ticks fall mid-way between the robot's control steps.
        self._phase_timer = self.create_timer(self.scheduler.config.period_s, self._on_phase,
                                              callback_group=self._control_group)
        self._phase_timer.cancel()
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._control_group)
        self._worker = threading.Thread(target=self._worker_loop, name="policy_inference",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"policy_node: backend={self.backend_name} runtime={self.runtime_description} "
            f"embodiment={self.embodiment} rate={self.scheduler.config.rate_hz} Hz "
            f"submodel={self._pending_submodel}")

    # --- helpers ------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _safety_limits(self, g) -> dict:
        default_linear = g("max_ee_speed") if self.embodiment == "arm" else g("max_speed")
        return {"stale_after_s": g("stale_after_s"), "max_future_s": g("max_clock_skew_s"),
                "max_linear": g("max_linear") or default_linear,
                "max_angular": g("max_angular"), "max_reverse": g("max_reverse")}

    def _build_scales(self, g) -> None:
        """Command scaling and the target/plan controllers, from the parameters (at start-up
        and on every change; the worker reads them as whole objects)."""
        dt = 1.0 / g("control_rate_hz")
        self.arm_scale = ArmScale(g("max_ee_speed"))
        self.vehicle_scale = VehicleScale(g("max_steer"), g("max_accel"), g("max_speed"),
                                          g("wheelbase"), dt)
        self.arm_servo = ArmServo(self.arm_scale, g("servo_gain"), g("servo_stop_radius_m"))
        self.pursuit = PurePursuit(self.vehicle_scale, g("lookahead_m"), g("lookahead_time_s"))
        self.plan_steps = max(1, math.ceil(g("plan_horizon_s") * g("control_rate_hz")))

    def _reject(self, source: str, reason: str) -> None:
        with self._lock:
            count, last = self.rejections.get(source, (0, ""))
            self.rejections[source] = (count + 1, reason)
            self.stats["rejected"] += 1
        self.get_logger().warning(f"rejected {source}: {reason}", throttle_duration_sec=2.0)
        if count == 0 or _kind(reason) != _kind(last):
            self._publish_diagnostics()  # a new kind of rejection: report it now

    def _note(self, source: str, stamp: float) -> bool:
        """Judge an input's stamp by this node's clock; False (and a diagnostic) if refused."""
        reason = self.safety.note_input(source, stamp, self._now())
        if reason is not None:
            self._reject(source, reason)
            return False
        return True

    # --- inputs ---------------------------------------------------------------------------
    def _on_rgb(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except MessageRejected as exc:
            return self._reject("camera/color/image_raw", str(exc))
        stamp = stamp_to_seconds(msg.header.stamp)
        if not self._note("camera", stamp):
            return
        with self._lock:
            self._rgb, self._rgb_stamp = rgb, stamp
            self._rgb_frame = msg.header.frame_id or self._rgb_frame
            # ~/command_source echoes the frame's exact header stamp (a float loses ns), and
            # the arrival time gives the node's own share of camera -> command latency.
            self._stamp_msgs[stamp] = (msg.header.stamp, time.monotonic())
            if len(self._stamp_msgs) > 64:
                self._stamp_msgs.pop(next(iter(self._stamp_msgs)))
            self._maybe_request()  # start inference now, not at the next tick

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = image_to_depth(msg)
        except MessageRejected as exc:
            return self._reject("camera/depth/image_raw", str(exc))
        if not self._note("depth", stamp_to_seconds(msg.header.stamp)):
            return
        with self._lock:
            self._depth_buf.add(stamp_to_seconds(msg.header.stamp), depth)
            if self._awaiting_inputs:  # the newest frame waits for its depth image
                self._maybe_request()

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            K = camera_info_to_K(msg)
        except MessageRejected as exc:
            return self._reject("camera/color/camera_info", str(exc))
        with self._lock:
            self._K = K

    def _on_joints(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            return self._reject("joint_states", f"{len(msg.name)} names but "
                                f"{len(msg.position)} positions")
        index = {n: i for i, n in enumerate(msg.name)}
        wanted = [n for n in self.proprio_names[:8] if not n.startswith("unused")]
        missing = [n for n in wanted if n not in index]
        if missing:
            return self._reject("joint_states", f"missing proprio entries {missing} (have "
                                f"{list(msg.name)[:12]}); set proprio_names")
        values = np.zeros(8, np.float32)
        for k, name in enumerate(self.proprio_names[:8]):
            if name in index:
                values[k] = msg.position[index[name]]
        if not np.all(np.isfinite(values)):
            return self._reject("joint_states", "NaN/inf in proprio entries")
        if not self._note("joint_states", stamp_to_seconds(msg.header.stamp)):
            return
        with self._lock:
            self._proprio = values
            self._proprio_buf.add(stamp_to_seconds(msg.header.stamp), values)
            if self._awaiting_inputs:  # the newest frame waits for its joint state
                self._maybe_request()

    def _on_odom(self, msg: Odometry) -> None:
        v = msg.twist.twist.linear.x
        if not np.isfinite(v):
            return self._reject("odom", "NaN/inf speed")
        if not self._note("odom", stamp_to_seconds(msg.header.stamp)):
            return
        with self._lock:
            self._speed = float(v)

    def _on_instruction(self, msg: String) -> None:
        try:
            text = check_instruction(msg.data)
        except MessageRejected as exc:
            return self._reject("instruction", str(exc))
        with self._lock:
            # Every message is a new task, the same text too ("do it again", or the next
            # episode in simulation): drop the old plan and any result still in flight, and
            # take the task's reference frame afresh.
            self._instruction = text
            self.scheduler.new_instruction()
            self._instruction_since = time.monotonic()
            self._reference = None
            self.policy.reset()
        self.get_logger().info(f"instruction: {text!r}")

    def _on_estop(self, msg: Bool) -> None:
        self.safety.set_estop(msg.data)
        if msg.data:
            with self._lock:
                self.scheduler.clear()
        self.get_logger().warning(f"e-stop {'ENGAGED' if msg.data else 'released'}")
        self._publish_diagnostics()

    def _on_expert(self, msg: TwistStamped) -> None:
        action = [msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z]
        self.policy.feed(stamp_to_seconds(msg.header.stamp),
                         np.array(action[: 3 if self.embodiment == "arm" else 2]))

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate every change first; apply them all or none. (Read-only parameters and
        ranges are refused by rclpy before this is called.)"""
        values = {p.name: p.value for p in params}
        g = lambda name: values.get(name, self.get_parameter(name).value)  # noqa: E731
        if "submodel" in values and values["submodel"] not in self.policy.submodel_names:
            return SetParametersResult(successful=False, reason=(
                f"unknown submodel {values['submodel']!r}; allowed: "
                f"{self.policy.submodel_names}"))
        try:
            sched = {field: g(name) for name, field in SCHEDULER_PARAMS.items()}
            SchedulerConfig(**sched)  # validates
            limits = self._safety_limits(g)
            SafetyConfig(kind=self.embodiment, **limits)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self._control_lock, self._lock:
            if "submodel" in values:
                self._pending_submodel = values["submodel"]
            self.scheduler.reconfigure(**sched)
            self.safety.reconfigure(**limits)
            if any(n in values for n in SCALE_PARAMS):
                self._build_scales(g)
            if "control_rate_hz" in values:
                self._tick_timer.cancel()
                self.destroy_timer(self._tick_timer)
                self._tick_timer = self.create_timer(
                    1.0 / values["control_rate_hz"], self._on_tick,
                    callback_group=self._control_group)
        changed = ", ".join(f"{k}={v}" for k, v in values.items())
        self.get_logger().info(f"parameters set: {changed}")
        return SetParametersResult(successful=True)

    # --- inference worker -----------------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            try:
                if not self._worker_step():
                    return
            except Exception as exc:  # a bug outside the backend: stop safely, carry on
                self.stats["worker_errors"] += 1
                self.safety.report_fault("worker", f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"inference worker failed: {exc!r}\n"
                                        f"{traceback.format_exc(limit=4)}",
                                        throttle_duration_sec=2.0)
                with self._lock:
                    self.scheduler.failed()

    def _worker_step(self) -> bool:
        """Serve one request; False when the node is shutting down."""
        with self._wake:
            self._wake.wait_for(lambda: self._request is not None or self._stop)
            if self._stop:
                return False
            (obs, epoch, frame, speed), self._request = self._request, None
            submodel = self._pending_submodel
        action = error = None
        try:
            if submodel != self.policy.submodel:
                self.policy.set_submodel(submodel)
            t0 = time.perf_counter()
            action = self.policy.select_action(obs)
            self.inference_pub.publish(KeyValue(key=submodel,
                                                value=f"{time.perf_counter() - t0:.6f}"))
            action.extras["frame_id"] = frame
            if getattr(self.policy, "outputs_targets", False):
                self._chunk_from_target(action, obs, speed)
        except Exception as exc:  # any backend failure becomes a safety fault
            error = exc
            self.get_logger().error(
                f"backend failed: {exc!r}\n{traceback.format_exc(limit=3)}",
                throttle_duration_sec=2.0)
        with self._lock:
            self._result = (action, error, obs.stamp, epoch)
        # Execute the first action of a fresh chunk at once rather than at the next
        # tick: camera -> command latency is then the model's, not the timer's phase.
        self._control_step(from_result=True)
        self.safety.clear_fault("worker")
        return True

    def _maybe_request(self, fresh_only: bool = False) -> None:
        """Ask the worker for a chunk on the newest complete observation (lock held).

        `fresh_only` (timer ticks): while actions remain queued, skip a frame that arrived
        more than half a control period ago; a fresher one is due, and asking on the old one
        would answer it a period late (the latency tail of bench/graph_latency.py)."""
        self._awaiting_inputs = False
        if self._instruction is None or not self.scheduler.wants_request(self._rgb_stamp):
            return
        arrived = self._stamp_msgs.get(self._rgb_stamp, (None, None))[1]
        if arrived is not None:
            age = time.monotonic() - arrived
            if age >= 0.5 * self.scheduler.config.deadline_s:
                return  # half its deadline gone before inference starts: wait for a fresher one
            if arrived < self._instruction_since - INSTRUCTION_GRACE_S:
                return  # a scene from before the instruction: wait for one that goes with it
            if fresh_only and self.scheduler.queue and age > 0.5 * self.scheduler.config.period_s:
                return
        # Depth and proprio of this frame's instant (nodes/input_sync.py), not merely the
        # latest: those may still be the previous instant's when the colour image comes first.
        tol = self.sync_tolerance_s
        depth = None
        if self.use_depth:
            status, depth = self._depth_buf.match(self._rgb_stamp, tol)
            if status in ("wait", "empty"):
                self._awaiting_inputs = True  # its depth image is on the way: ask again then
                return
            self.stats["sync_closest_depth"] += status == "closest"
        proprio = self._proprio
        if len(self._proprio_buf) or self.require_proprio:
            status, proprio = self._proprio_buf.match(self._rgb_stamp, tol)
            if status in ("wait", "empty"):
                self._awaiting_inputs = True
                return
            self.stats["sync_closest_proprio"] += status == "closest"
        if depth is not None and depth.shape != self._rgb.shape[:2]:
            depth = None  # not registered to the colour image: do not feed it
        if self._reference is None:  # the first frame since the instruction: where the task starts
            self._reference = (self._rgb, depth)
        obs = Observation(
            rgb=self._rgb, instruction=self._instruction, proprio=proprio.copy(),
            embodiment=self.embodiment, depth=depth, camera_K=self._K, stamp=self._rgb_stamp,
            reference_rgb=self._reference[0], reference_depth=self._reference[1])
        self._request = (obs, self.scheduler.start_request(self._rgb_stamp), self._rgb_frame,
                         self._speed)
        self._wake.notify()

    def _chunk_from_target(self, action, obs: Observation, speed: float) -> None:
        """(worker) For a backend that answers with a target or a plan (MiMo): build the
        chunk to execute (nodes/target_control.py); step k is for the observation's time
        + k periods, so the scheduler skips what a slow answer missed. An arm: `target_point`
        moved to the base frame by `camera_to_base`, held as the setpoint each tick servoes
        to from the end-effector position in proprio[0:3] (base frame). A vehicle: `plan`
        followed by pure pursuit (steering rolled forward from the odometry speed, rows of
        [steer, desired speed] whose speed loop closes at the tick). No target -> a zero
        chunk and extras["no_target"] (a stop with the reason on /diagnostics)."""
        steps, extras = self.plan_steps, action.extras
        dim = 3 if self.embodiment == "arm" else 2
        chunk, why = None, extras.get("reason") or "the backend gave no target"
        if self.embodiment == "arm" and action.target_point is not None:
            if self.camera_to_base is None:
                why = "camera_to_base not set: a camera-frame target cannot be servoed to"
            else:
                T = self.camera_to_base
                target = T[:3, :3] @ np.asarray(action.target_point, np.float64)[:3] + T[:3, 3]
                extras["target_base"] = target
                chunk = self.arm_servo.setpoints(target, steps)
        elif self.embodiment == "vehicle" and action.plan is not None:
            pursuit = dataclasses.replace(
                self.pursuit, waypoint_dt=float(extras.get("waypoint_dt", self.pursuit.waypoint_dt)))
            chunk = pursuit.chunk(action.plan, speed, steps)
        if chunk is None:
            extras["no_target"] = why
            chunk = np.zeros((steps, dim), np.float32)
        action.chunk = chunk

    # --- control tick -------------------------------------------------------------------
    def _on_phase(self) -> None:
        with self._control_lock:
            self._phase_timer.cancel()
            self._tick_timer.reset()

    def _on_tick(self) -> None:
        self._control_step(from_result=False)

    def _control_step(self, from_result: bool) -> None:
        """One control decision: take a finished result, pop the next action, apply safety,
        publish. Runs on the timer, and on the worker right after a result (serialised)."""
        with self._control_lock:
            now = self._now()
            with self._lock:
                result, self._result = self._result, None
                if result is not None:
                    self._take_result(result, now)
                self._maybe_request(fresh_only=not from_result)
                popped = self.scheduler.next_action(now, from_result)
                if popped is None and not from_result and self.scheduler.missed_tick(now):
                    self.stats["missed_ticks"] += 1
                speed = self._speed
                ee = self._proprio[:3].copy()
            if from_result:
                if popped is None:
                    return  # nothing due yet; the timer keeps the cadence and the safety
                self.stats["actions_on_result"] += 1
                # Re-phase the ticks to this chunk: its next action goes out 1 + PHASE_OFFSET
                # periods after its frame's stamp (the robot's control step it shows), mid-way
                # between the robot's next two steps (the phase timer restarts the tick
                # timer). With the ticks at any other phase, one could fall before the robot's
                # next step and replace this action unexecuted, or just after a step and lose
                # the race to a late one.
                period = self.scheduler.config.period_s
                since = max(0.0, now - popped[1])
                delay = max(PHASE_OFFSET * period - since, 0.05 * period)
                self._tick_timer.cancel()
                self._phase_timer.timer_period_ns = int(delay * 1e9)
                self._phase_timer.reset()
            command = obs_stamp = None
            if popped is not None:
                action, obs_stamp = popped
                self.safety.note_input("actions", now, now)
                if not self._target_chunks:
                    command = (self.arm_scale.to_command(action) if self.embodiment == "arm"
                               else self.vehicle_scale.to_command(action, speed))
                elif self.embodiment == "arm":  # a base-frame setpoint
                    command = self.arm_servo.velocity(action, ee)
                else:  # [steer, desired speed]
                    command = self.pursuit.command(action, speed)
            out, faults = self.safety.filter(now, command)
            self._log_faults(faults, now)
            if out is None:
                return
            if faults:
                obs_stamp = None
                self.stats["stop_ticks"] += 1
            elif obs_stamp is None:
                return  # healthy but no action (e.g. waiting for the first chunk)
            self._publish_command(out, obs_stamp)

    def _log_faults(self, faults: dict, now: float) -> None:
        """At once when the set of active faults changes; else at most every few seconds."""
        changed = set(faults) != set(self._last_faults)
        if changed or (faults and now - self._fault_logged_at >= FAULT_LOG_PERIOD_S):
            if faults:
                self.get_logger().warning(f"safety stop: {faults}")
            elif changed:
                self.get_logger().info("safety: all clear")
            self._fault_logged_at = now
        self._last_faults = faults
        if changed:
            self._publish_diagnostics()

    def _take_result(self, result, now: float) -> None:
        """(lock held) Queue a finished chunk, or record why it is not executed."""
        action, error, obs_stamp, epoch = result
        if error is not None:
            self.stats["backend_errors"] += 1
            self.safety.report_fault("backend", f"{type(error).__name__}: {error}")
            self.scheduler.failed()
            return
        outcome, age = self.scheduler.finish(action.chunk, obs_stamp, epoch, now)
        if outcome == "superseded":
            self.stats["superseded"] += 1
            return
        if outcome == "late":
            self.stats["dropped_stale"] += 1
            self.safety.report_fault(
                "deadline", f"result {age * 1e3:.0f} ms after its observation "
                            f"(> {self.scheduler.config.deadline_s * 1e3:.0f} ms); dropped")
            return
        self.safety.clear_fault("backend")
        self.safety.clear_fault("deadline")
        self.latencies.append(age)
        self.model_latencies.append(action.latency_s)
        self._publish_answer(action, obs_stamp)
        no_target = action.extras.get("no_target") if isinstance(action.extras, dict) else None
        if no_target:  # a target/plan backend found nothing to aim at: stop and say why
            self.scheduler.clear()
            self.stats["no_target"] += 1
            self.safety.report_fault("target", no_target)
            return
        self.safety.clear_fault("target")
        self.safety.watch("actions", now)
        self.safety.note_input("actions", now, now)
        self.stats["chunks"] += 1

    def _publish_answer(self, action, obs_stamp: float) -> None:
        """`plan` (base frame) and `target_point` (metres, the camera frame of the image the
        answer is about), stamped with that image's stamp."""
        header_stamp = seconds_to_stamp(obs_stamp)
        if action.plan is not None:
            path = Path()
            path.header.stamp, path.header.frame_id = header_stamp, self.frame
            for point in np.asarray(action.plan):
                pose = PoseStamped()
                pose.header = path.header
                pose.pose.position.x, pose.pose.position.y = float(point[0]), float(point[1])
                pose.pose.position.z = float(point[2]) if len(point) > 2 else 0.0
                pose.pose.orientation.w = 1.0
                path.poses.append(pose)
            self.plan_pub.publish(path)
        if action.target_point is not None:
            pt = PointStamped()
            pt.header.stamp = header_stamp
            extras = action.extras if isinstance(action.extras, dict) else {}
            pt.header.frame_id = extras.get("frame_id") or "camera_color_optical_frame"
            pt.point.x, pt.point.y, pt.point.z = (
                float(v) for v in np.asarray(action.target_point, np.float64)[:3])
            self.point_pub.publish(pt)

    def _publish_command(self, command: np.ndarray, obs_stamp: float | None) -> None:
        """Stamped with the publish time; the observation it answers goes to
        ~/command_source (None: a safety stop, which answers no observation)."""
        twist = Twist()
        if self.embodiment == "arm":
            twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in command[:3])
        else:
            twist.linear.x, twist.angular.z = float(command[0]), float(command[1])
        now = self.get_clock().now().to_msg()
        if self.cmd_pub.msg_type is Twist:
            self.cmd_pub.publish(twist)
        else:
            msg = TwistStamped()
            msg.header.stamp, msg.header.frame_id = now, self.frame
            msg.twist = twist
            self.cmd_pub.publish(msg)
        if obs_stamp is not None:
            with self._lock:
                exact, arrived = self._stamp_msgs.get(obs_stamp, (None, None))
                if arrived is not None and obs_stamp != self._last_obs_stamp:
                    self.node_latencies.append(time.monotonic() - arrived)
            self.source_pub.publish(Header(stamp=exact or seconds_to_stamp(obs_stamp),
                                           frame_id="camera_color_optical_frame"))
            self._last_obs_stamp = obs_stamp
        self.stats["commands"] += 1

    # --- diagnostics ----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        with self._lock:  # the worker appends to these: publish a copy
            faults = dict(self._last_faults)
            lat = np.array(self.latencies) * 1e3
            model_lat = np.array(self.model_latencies) * 1e3
            node_lat = np.array(self.node_latencies) * 1e3
            stats = dict(self.stats)
            rejections = dict(self.rejections)
            obs_stamp = self._last_obs_stamp
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: policy"
        status.hardware_id = self.backend_name
        status.level = DiagnosticStatus.ERROR if faults else (
            DiagnosticStatus.WARN if rejections else DiagnosticStatus.OK)
        status.message = "; ".join(f"{k}: {v}" for k, v in faults.items()) or "running"
        values = {
            "submodel": self.policy.submodel, "embodiment": self.embodiment,
            "runtime": self.runtime_description,
            "latency_p50_ms": f"{np.percentile(lat, 50):.2f}" if lat.size else "nan",
            "latency_p95_ms": f"{np.percentile(lat, 95):.2f}" if lat.size else "nan",
            "model_p50_ms": f"{np.median(model_lat):.2f}" if model_lat.size else "nan",
            "model_p99_ms": f"{np.percentile(model_lat, 99):.2f}" if model_lat.size else "nan",
            "node_p50_ms": f"{np.percentile(node_lat, 50):.2f}" if node_lat.size else "nan",
            "node_p99_ms": f"{np.percentile(node_lat, 99):.2f}" if node_lat.size else "nan",
            "node_max_ms": f"{node_lat.max():.2f}" if node_lat.size else "nan",
            "last_observation_stamp": f"{obs_stamp:.6f}" if obs_stamp is not None else "none",
            **{k: str(v) for k, v in stats.items()},
        }
        for cause, detail in faults.items():
            values[f"fault.{cause}"] = detail
        for source, (count, reason) in rejections.items():
            values[f"rejected.{source}"] = f"{count}x, last: {reason}"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.diag_pub.publish(msg)

    def destroy_node(self):
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> None:
    from embodied_stack.nodes.executor import run_node

    run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
