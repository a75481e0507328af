"""policy_node: camera + instruction in, commands out, with safety.

Inputs: `camera/color/image_raw` (rgb8/bgr8), `camera/depth/image_raw` (32FC1 m / 16UC1 mm,
optional), `camera/color/camera_info`, `joint_states` (proprio, mapped by `proprio_names`),
`odom` (vehicle speed), `instruction` (std_msgs/String, transient-local), `estop`
(std_msgs/Bool, transient-local, latched).
Outputs: `servo/delta_twist_cmds` (TwistStamped, arm) or `cmd_vel` (TwistStamped, or Twist
with `cmd_vel_stamped:=false`, vehicle), `plan` (nav_msgs/Path) and `target_point`
(PointStamped) when the backend gives them, `/diagnostics`.

How it runs:
- Inference never runs on an executor thread: a dedicated worker thread runs
  `policy.select_action` on the latest observation when the action queue needs a refill.
- A control timer at `control_rate_hz` executes the chunk from a queue; it requests the next
  chunk when `refill_at` actions remain, so the queue is refilled before it runs dry. Actions
  of a chunk whose time has already passed (the result came late) are skipped.
- Each command carries the stamp of the observation it answers. A result older than
  `deadline_s` when it is ready is dropped (never published) and counted.
- Safety (nodes/safety.py): stale camera input, a missed deadline, a backend exception or an
  e-stop give a zero command (vehicles ramp down), then quiet; commands are clamped.
- Malformed messages are rejected at the boundary with a throttled log line and a
  diagnostics entry; the last good state is kept.
- The `submodel` parameter switches the elastic submodel at run time (unknown names are
  rejected with the list of allowed ones); the worker applies it between inferences.
"""

from __future__ import annotations

import collections
import threading
import traceback

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String

from embodied_stack.models.policy.interface import Observation, Policy
from embodied_stack.nodes.commands import ArmScale, VehicleScale
from embodied_stack.nodes.conversions import (MessageRejected, camera_info_to_K,
                                              check_instruction, image_to_depth, image_to_rgb,
                                              seconds_to_stamp, stamp_to_seconds)
from embodied_stack.nodes.safety import SafetyConfig, SafetySupervisor

#: Default proprio layouts, as the simulation worlds define them (sim/worlds/*.py).
DEFAULT_PROPRIO_NAMES = {
    "arm": ["ee_x", "ee_y", "ee_z", "ee_vx", "ee_vy", "ee_vz", "contact", "unused_7"],
    "vehicle": ["speed", "steer", "yaw_rate", "accel", "unused_4", "unused_5", "unused_6",
                "unused_7"],
}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def sensor_qos(name: str) -> QoSProfile:
    """QoS for camera topics from a string parameter."""
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    if name == "best_effort":
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    raise ValueError(f"sensor_qos {name!r} not in ('sensor_data', 'reliable', 'best_effort')")


def _float(desc, lo, hi):
    return ParameterDescriptor(description=desc, floating_point_range=[
        FloatingPointRange(from_value=float(lo), to_value=float(hi))])


def _int(desc, lo, hi):
    return ParameterDescriptor(description=desc, integer_range=[
        IntegerRange(from_value=int(lo), to_value=int(hi), step=1)])


def _str(desc, read_only=False):
    return ParameterDescriptor(description=desc, read_only=read_only)


def load_backend(name: str, model_path: str, device: str, runtime: str = "torch") -> Policy:
    """Build the policy backend the `backend` parameter names. For `vla`, a runtime other
    than torch is prepared here (ONNX export / engine build for every named submodel, cached
    on disk), never in the control loop."""
    if name == "expert":
        from embodied_stack.models.policy.expert_relay import ExpertRelayPolicy

        return ExpertRelayPolicy()
    if name == "vla":
        from embodied_stack.models.policy import load_default_policy

        policy = load_default_policy(model_path or None, device=device)
        if runtime != "torch":
            from embodied_stack.models.runtime import make_runtime

            policy.use_runtime(make_runtime(runtime, policy))
        return policy
    if name == "mimo":
        from embodied_stack.models.policy.mimo_adapter import MiMoEmbodiedPolicy

        if not model_path:
            raise ValueError("backend 'mimo' needs model_path: a local MiMo-Embodied-7B checkpoint")
        return MiMoEmbodiedPolicy.from_pretrained(model_path, device=device)
    raise ValueError(f"backend {name!r} not in ('vla', 'mimo', 'expert')")


class PolicyNode(Node):
    def __init__(self, policy: Policy | None = None, **node_kwargs):
        super().__init__("policy_node", **node_kwargs)
        p = self.declare_parameter
        # --- backend ---
        p("backend", "vla", _str("policy backend: vla (own ElasticVLA), mimo "
                                 "(MiMo-Embodied-7B checkpoint), expert (sim only)", True))
        p("model_path", "", _str("model directory; empty = the shipped default model", True))
        p("device", "cpu", _str("torch device for the backend: cpu, cuda, cuda:0", True))
        p("runtime", "onnxruntime", _str("vla runtime: torch (eager) or onnxruntime (exported per "
                                   "submodel at start-up, cached; faster on CPU)", True))
        p("submodel", "full", _str("elastic submodel (full, 3/4, 1/2, 1/4 for ElasticVLA); "
                                   "switchable at run time"))
        p("embodiment", "arm", _str("arm (servo/delta_twist_cmds) or vehicle (cmd_vel)", True))
        # --- timing ---
        p("control_rate_hz", 10.0, _float("command rate (Hz)", 1.0, 200.0))
        p("deadline_s", 0.3, _float("drop a result whose observation is older than this (s)",
                                    0.01, 5.0))
        p("stale_after_s", 0.5, _float("camera older than this (s) stops the robot", 0.05, 5.0))
        p("refill_at", 1, _int("request the next chunk when this many actions remain", 0, 64))
        p("execute_steps", 0, _int("actions of each chunk to execute (0 = all)", 0, 64))
        # --- inputs ---
        p("use_depth", True, _str("feed depth to the backend and require it"))
        p("sensor_qos", "sensor_data", _str("camera QoS: sensor_data, reliable, best_effort",
                                            True))
        p("proprio_names", [""], _str("joint_states names forming the proprio vector, in "
                                      "order (default: the worlds' layout)", True))
        # --- outputs and limits ---
        p("cmd_vel_stamped", True, _str("vehicle: publish TwistStamped (true) or Twist", True))
        p("base_frame", "base_link", _str("frame_id of commands and plans", True))
        p("max_linear", 0.0, _float("|v| limit m/s (0 = embodiment default)", 0.0, 100.0))
        p("max_angular", 1.0, _float("vehicle |omega| limit rad/s", 0.01, 10.0))
        p("max_reverse", 0.0, _float("vehicle: most negative speed allowed m/s", 0.0, 10.0))
        p("max_ee_speed", 0.25, _float("arm: m/s at |action| = 1", 0.001, 5.0))
        p("max_steer", 0.5, _float("vehicle: steering rad at |action| = 1", 0.01, 1.5))
        p("max_accel", 3.0, _float("vehicle: m/s^2 at |action| = 1", 0.1, 20.0))
        p("max_speed", 15.0, _float("vehicle: speed cap m/s", 0.1, 100.0))
        p("wheelbase", 2.7, _float("vehicle: wheelbase m", 0.1, 10.0))

        g = lambda name: self.get_parameter(name).value  # noqa: E731
        self.embodiment = g("embodiment")
        if self.embodiment not in ("arm", "vehicle"):
            raise ValueError(f"embodiment {self.embodiment!r} not in ('arm', 'vehicle')")
        self.rate = g("control_rate_hz")
        self.deadline = g("deadline_s")
        self.refill_at = g("refill_at")
        self.execute_steps = g("execute_steps")
        self.use_depth = bool(g("use_depth"))
        self.frame = g("base_frame")
        names = [n for n in g("proprio_names") if n]
        self.proprio_names = names or DEFAULT_PROPRIO_NAMES[self.embodiment]
        self.arm_scale = ArmScale(g("max_ee_speed"))
        self.vehicle_scale = VehicleScale(g("max_steer"), g("max_accel"), g("max_speed"),
                                          g("wheelbase"), 1.0 / self.rate)
        default_linear = g("max_ee_speed") if self.embodiment == "arm" else g("max_speed")
        self.safety = SafetySupervisor(SafetyConfig(
            kind=self.embodiment, stale_after_s=g("stale_after_s"),
            max_linear=g("max_linear") or default_linear, max_angular=g("max_angular"),
            max_reverse=g("max_reverse")))

        self.policy = policy if policy is not None else load_backend(
            g("backend"), g("model_path"), g("device"), g("runtime"))
        self.backend_name = g("backend") if policy is None else type(policy).__name__
        if g("submodel") not in self.policy.submodel_names:
            raise ValueError(f"submodel {g('submodel')!r} not in {self.policy.submodel_names}")
        self._pending_submodel = g("submodel")
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # --- state shared with the worker (under _lock) ---
        self._lock = threading.Lock()
        self._rgb = self._rgb_stamp = None
        self._depth = None
        self._K = None
        self._proprio = np.zeros(8, np.float32)
        self._speed = 0.0
        self._instruction: str | None = None
        self._request = None  # Observation waiting for the worker
        self._result = None  # (Action | None, Exception | None, obs stamp)
        self._inflight = False
        self._last_requested_stamp = None
        self._queue: collections.deque = collections.deque()
        self._chunk_stamp = None
        self._wake = threading.Condition(self._lock)
        self._stamp_msgs: dict[float, object] = {}
        self._control_lock = threading.Lock()  # serialises _control_step (timer vs worker)
        self._last_exec = -float("inf")
        self._stop = False
        # Counters for diagnostics.
        self.stats = collections.Counter()
        self.latencies: collections.deque = collections.deque(maxlen=500)  # frame -> result
        self.model_latencies: collections.deque = collections.deque(maxlen=500)  # in backend
        self.rejections: dict[str, tuple[int, str]] = {}
        self._last_faults: dict[str, str] = {}

        # --- ROS interfaces ---
        qos = sensor_qos(g("sensor_qos"))
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, "camera/color/image_raw", self._on_rgb, qos,
                                 callback_group=inputs)
        if self.use_depth:
            self.create_subscription(Image, "camera/depth/image_raw", self._on_depth, qos,
                                     callback_group=inputs)
        self.create_subscription(CameraInfo, "camera/color/camera_info", self._on_info, qos,
                                 callback_group=inputs)
        self.create_subscription(JointState, "joint_states", self._on_joints, 10,
                                 callback_group=inputs)
        self.create_subscription(Odometry, "odom", self._on_odom, 10, callback_group=inputs)
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
        self.plan_pub = self.create_publisher(Path, "plan", 10)
        self.point_pub = self.create_publisher(PointStamped, "target_point", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        now = self._now()
        self.safety.watch("camera", now)
        if self.use_depth:
            self.safety.watch("depth", now)
        control = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0 / self.rate, self._on_tick, callback_group=control)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=control)
        self._worker = threading.Thread(target=self._worker_loop, name="policy_inference",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"policy_node: backend={self.backend_name} embodiment={self.embodiment} "
            f"rate={self.rate} Hz submodel={self._pending_submodel}")

    # --- helpers ------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _reject(self, source: str, reason: str) -> None:
        count = self.rejections.get(source, (0, ""))[0] + 1
        self.rejections[source] = (count, reason)
        self.stats["rejected"] += 1
        self.get_logger().warning(f"rejected {source}: {reason}", throttle_duration_sec=2.0)
        self._publish_diagnostics()

    # --- inputs ---------------------------------------------------------------------------
    def _on_rgb(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except MessageRejected as exc:
            return self._reject("camera/color/image_raw", str(exc))
        stamp = stamp_to_seconds(msg.header.stamp)
        self.safety.note_input("camera", stamp)
        with self._lock:
            self._rgb, self._rgb_stamp = rgb, stamp
            # Commands echo the frame's exact header stamp (a float loses nanoseconds).
            self._stamp_msgs[stamp] = msg.header.stamp
            if len(self._stamp_msgs) > 64:
                self._stamp_msgs.pop(next(iter(self._stamp_msgs)))
            self._maybe_request()  # start inference now, not at the next tick

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = image_to_depth(msg)
        except MessageRejected as exc:
            return self._reject("camera/depth/image_raw", str(exc))
        with self._lock:
            self._depth = depth
        self.safety.note_input("depth", stamp_to_seconds(msg.header.stamp))

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            K = camera_info_to_K(msg)
        except MessageRejected as exc:
            return self._reject("camera/color/camera_info", str(exc))
        with self._lock:
            self._K = K

    def _on_joints(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        if len(msg.position) != len(msg.name):
            return self._reject("joint_states", f"{len(msg.name)} names but "
                                f"{len(msg.position)} positions")
        values = np.zeros(8, np.float32)
        for k, name in enumerate(self.proprio_names[:8]):
            if name in index:
                values[k] = msg.position[index[name]]
        if not np.all(np.isfinite(values)):
            return self._reject("joint_states", "NaN/inf in proprio entries")
        with self._lock:
            self._proprio = values

    def _on_odom(self, msg: Odometry) -> None:
        v = msg.twist.twist.linear.x
        if not np.isfinite(v):
            return self._reject("odom", "NaN/inf speed")
        self._speed = float(v)

    def _on_instruction(self, msg: String) -> None:
        try:
            text = check_instruction(msg.data)
        except MessageRejected as exc:
            return self._reject("instruction", str(exc))
        with self._lock:
            changed = text != self._instruction
            self._instruction = text
            if changed:  # a new task: drop the old plan
                self._queue.clear()
                self._last_requested_stamp = None
        if changed:
            self.policy.reset()
            self.get_logger().info(f"instruction: {text!r}")

    def _on_estop(self, msg: Bool) -> None:
        self.safety.set_estop(msg.data)
        if msg.data:
            with self._lock:
                self._queue.clear()
        self.get_logger().warning(f"e-stop {'ENGAGED' if msg.data else 'released'}")
        self._publish_diagnostics()

    def _on_expert(self, msg: TwistStamped) -> None:
        action = [msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z]
        self.policy.feed(stamp_to_seconds(msg.header.stamp),
                         np.array(action[: 3 if self.embodiment == "arm" else 2]))

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "submodel":
                if param.value not in self.policy.submodel_names:
                    return SetParametersResult(
                        successful=False,
                        reason=f"unknown submodel {param.value!r}; allowed: "
                               f"{self.policy.submodel_names}")
                with self._lock:
                    self._pending_submodel = param.value
        return SetParametersResult(successful=True)

    # --- inference worker -----------------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._request is not None or self._stop)
                if self._stop:
                    return
                obs, self._request = self._request, None
                submodel = self._pending_submodel
            action = error = None
            try:
                if submodel != self.policy.submodel:
                    self.policy.set_submodel(submodel)
                action = self.policy.select_action(obs)
            except Exception as exc:  # any backend failure becomes a safety fault
                error = exc
                self.get_logger().error(
                    f"backend failed: {exc!r}\n{traceback.format_exc(limit=3)}",
                    throttle_duration_sec=2.0)
            with self._lock:
                self._result = (action, error, obs.stamp)
                self._inflight = False
            # Execute the first action of a fresh chunk at once rather than at the next
            # tick: camera -> command latency is then the model's, not the timer's phase.
            self._control_step(from_result=True)

    def _maybe_request(self) -> None:
        """Ask the worker for a chunk on the newest complete observation (lock held)."""
        if self._inflight or len(self._queue) > self.refill_at:
            return
        if self._rgb is None or self._instruction is None:
            return
        if self._rgb_stamp == self._last_requested_stamp:
            return  # no new frame since the last request
        if self.use_depth and self._depth is None:
            return
        depth = self._depth if self.use_depth else None
        if depth is not None and depth.shape != self._rgb.shape[:2]:
            depth = None  # not registered to the colour image: do not feed it
        self._request = Observation(
            rgb=self._rgb, instruction=self._instruction, proprio=self._proprio.copy(),
            embodiment=self.embodiment, depth=depth, camera_K=self._K, stamp=self._rgb_stamp)
        self._last_requested_stamp = self._rgb_stamp
        self._inflight = True
        self._wake.notify()

    # --- control tick -------------------------------------------------------------------
    def _on_tick(self) -> None:
        self._control_step(from_result=False)

    def _control_step(self, from_result: bool) -> None:
        """One control decision: take a finished result, pop the next action, apply safety,
        publish. Runs on the timer, and on the worker right after a result (serialised)."""
        with self._control_lock:
            now = self._now()
            period = 1.0 / self.rate
            with self._lock:
                result, self._result = self._result, None
                if result is not None:
                    self._take_result(result, now)
                self._maybe_request()
                # A timer tick right after an immediate execution would run the chunk early.
                early = not from_result and now - self._last_exec < 0.5 * period
                if self._queue and not early:
                    action, stamp = self._queue.popleft()
                else:
                    action = stamp = None
            if from_result and action is None:
                return  # nothing new to execute; the timer keeps the safety cadence
            if action is not None:
                self._last_exec = now
                self.safety.note_input("actions", now)
                command = (self.arm_scale.to_command(action) if self.embodiment == "arm"
                           else self.vehicle_scale.to_command(action, self._speed))
            else:
                command = None
                if self._chunk_stamp is not None and now - self._last_exec > 1.5 * period:
                    self.stats["missed_ticks"] += 1
            out, faults = self.safety.filter(now, command)
            if faults != self._last_faults:
                if faults:
                    self.get_logger().warning(f"safety stop: {faults}")
                self._last_faults = faults
                self._publish_diagnostics()
            if out is None:
                return
            if faults:
                stamp = now
                self.stats["stop_ticks"] += 1
            elif stamp is None:
                return  # healthy but no action (e.g. waiting for the first chunk)
            with self._lock:
                stamp_msg = self._stamp_msgs.get(stamp) if not faults else None
            self._publish_command(out, stamp_msg or seconds_to_stamp(stamp))

    def _take_result(self, result, now: float) -> None:
        action, error, obs_stamp = result
        if error is not None:
            self.stats["backend_errors"] += 1
            self.safety.report_fault("backend", f"{type(error).__name__}: {error}")
            self._queue.clear()
            return
        age = now - obs_stamp
        if age > self.deadline:
            self.stats["dropped_stale"] += 1
            self.safety.report_fault(
                "deadline", f"result {age * 1e3:.0f} ms after its observation "
                            f"(> {self.deadline * 1e3:.0f} ms); dropped")
            self._queue.clear()
            return
        self.safety.clear_fault("backend")
        self.safety.clear_fault("deadline")
        self.latencies.append(age)
        self.model_latencies.append(action.latency_s)
        chunk = np.asarray(action.chunk, np.float64)
        if self.execute_steps:
            chunk = chunk[: self.execute_steps]
        # Steps of this chunk whose time has already passed are skipped (never the last).
        skip = min(int(age * self.rate), len(chunk) - 1)
        self._queue = collections.deque((a, obs_stamp) for a in chunk[skip:])
        self._chunk_stamp = obs_stamp
        self.safety.watch("actions", now)
        self.safety.note_input("actions", now)
        self.stats["chunks"] += 1
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
            pt.header.stamp, pt.header.frame_id = header_stamp, "camera_color_optical_frame"
            tp = np.asarray(action.target_point, np.float64)
            pt.point.x, pt.point.y = float(tp[0]), float(tp[1])
            pt.point.z = float(tp[2]) if len(tp) > 2 else 0.0
            self.point_pub.publish(pt)

    def _publish_command(self, command: np.ndarray, stamp) -> None:
        twist = Twist()
        if self.embodiment == "arm":
            twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in command[:3])
        else:
            twist.linear.x, twist.angular.z = float(command[0]), float(command[1])
        if self.cmd_pub.msg_type is Twist:
            self.cmd_pub.publish(twist)
        else:
            msg = TwistStamped()
            msg.header.stamp, msg.header.frame_id = stamp, self.frame
            msg.twist = twist
            self.cmd_pub.publish(msg)
        self.stats["commands"] += 1

    # --- diagnostics ----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        faults = self._last_faults
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: policy"
        status.hardware_id = self.backend_name
        status.level = DiagnosticStatus.ERROR if faults else (
            DiagnosticStatus.WARN if self.rejections else DiagnosticStatus.OK)
        status.message = "; ".join(f"{k}: {v}" for k, v in faults.items()) or "running"
        lat = np.array(self.latencies) * 1e3
        values = {
            "submodel": self.policy.submodel, "embodiment": self.embodiment,
            "latency_p50_ms": f"{np.percentile(lat, 50):.2f}" if lat.size else "nan",
            "latency_p95_ms": f"{np.percentile(lat, 95):.2f}" if lat.size else "nan",
            "model_p50_ms": (f"{np.median(self.model_latencies) * 1e3:.2f}"
                             if self.model_latencies else "nan"),
            **{k: str(v) for k, v in self.stats.items()},
        }
        for cause, detail in faults.items():
            values[f"fault.{cause}"] = detail
        for source, (count, reason) in self.rejections.items():
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
        self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> None:
    from embodied_stack.nodes.executor import run_node

    run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
