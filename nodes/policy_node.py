"""policy_node: camera + instruction in, commands out, with safety.

Inputs: `camera/color/image_raw` (rgb8/bgr8; or JPEG/PNG `compressed`, `color_transport`),
`camera/depth/image_raw` (32FC1 m / 16UC1 mm, optional; NaN/inf = no return, REP-118; or
`compressedDepth`, `depth_transport`), `camera/color/camera_info`, `joint_states` (proprio, by
`proprio_names`), `odom` (vehicle speed, yaw rate), `instruction` (std_msgs/String, transient-local; with
`instruction_tasks` set each is first grounded against those known tasks,
control/instruction_check.py: one that matches none, or whose object is not among
`scene/objects` ("red cube, green ball", transient-local, optional), stops the robot, the
reason on /diagnostics), `estop` (std_msgs/Bool, transient-local, latched).
Outputs: `servo/delta_twist_cmds` (TwistStamped, arm) or `cmd_vel` (TwistStamped, or Twist with
`cmd_vel_stamped:=false`), or with `command:=joints` (docs/worlds.md) `joint_commands`
(Float64MultiArray scaled to joint_low..joint_high; a `joint_gripper` channel also on
`gripper_command`, held by every stop); twists stamped with their publish time (MoveIt Servo
and twist muxes judge freshness by it); `~/command_source` (Header: the stamp of the
observation each command answers); `plan` (Path) and `target_point` (PointStamped) when the
backend gives them; `~/inference` (KeyValue per inference: submodel, seconds in the backend;
the elastic node corrects its latency table from them); `/diagnostics`.

How it runs: every decision is PolicyLoop's (control/policy_loop.py lists the rules, tested on
a fake clock), with control/safety.py's clock trust, staleness, faults, e-stop and clamps. This
node declares the parameters (read-only ones refused at run time with a reason; live ones apply
all or none), converts messages (nodes/conversions.py: a malformed one is rejected with a
throttled log and `rejected.<topic>` on /diagnostics), owns the timers and publishes. Inference
runs on a worker thread, never an executor's; an exception there is a safe stop
(`fault.backend`, or `fault.worker` outside the backend), and the worker carries on.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback

from diagnostic_msgs.msg import DiagnosticArray, KeyValue
from geometry_msgs.msg import PointStamped, TwistStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import Bool, Float64, Header, String

from embodied_stack.control.input_sync import LatestSlot
from embodied_stack.control.instruction_check import DEFAULT_THRESHOLD, InstructionCheck
from embodied_stack.control.latency import AddedLatency, DelayedPolicy
from embodied_stack.control.policy_loop import PolicyLoop, PolicyLoopConfig, Request, Step
from embodied_stack.models.policy.backends import BackendSettings, load_backend
from embodied_stack.models.policy.elastic_vla.instruction_encoder import InstructionEncoder
from embodied_stack.models.policy.interface import Policy
from embodied_stack.models.runtime import check_submodel
from embodied_stack.nodes import conversions as conv
from embodied_stack.nodes.answer_msgs import answer_msgs
from embodied_stack.nodes.params import (
    LATCHED,
    QOS_NAMES,
    declare_settings,
    read_only,
    read_only_range,
    rejection_kind,
    sensor_qos,
)
from embodied_stack.sim.worlds import default_proprio_names
from embodied_stack.sim.worlds.paraphrase import known_task_prototypes, scene_tasks

#: The parameters that are PolicyLoopConfig settings (declared from it).
LOOP_SETTINGS = [f.name for f in dataclasses.fields(PolicyLoopConfig)]


class PolicyNode(Node):
    def __init__(self, policy: Policy | None = None, encoder: InstructionEncoder | None = None, **node_kwargs):
        self._worker = self._check = None  # (destroy_node must work whatever __init__ got to)
        self._requests = LatestSlot(0.0, time.monotonic)  # to the inference worker
        super().__init__("policy_node", **node_kwargs)
        p = self.declare_parameter
        # --- the backend and the loop's settings: declared from their settings dataclasses ---
        declare_settings(self, BackendSettings)  # models/policy/backends.py
        declare_settings(self, PolicyLoopConfig)  # control/policy_loop.py
        # --- inputs and outputs (read once) ---
        p("sensor_qos", "sensor_data", read_only(f"camera QoS: {', '.join(QOS_NAMES)}"))
        p("proprio_qos", "sensor_data", read_only(f"joint_states / odom QoS: {', '.join(QOS_NAMES)}"))
        p("proprio_names", [""], read_only("joint_states names forming proprio, in order (default: worlds' layout)"))
        p("cmd_vel_stamped", True, read_only("vehicle: publish TwistStamped (true) or Twist"))
        p("color_transport", "raw", read_only("colour images: raw, or compressed (image_transport's JPEG/PNG topic)"))
        p("depth_transport", "raw", read_only("depth images: raw, or compressedDepth (image_transport's topic)"))
        p("base_frame", "base_link", read_only("frame_id of commands and plans"))
        p("instruction_tasks", "", read_only("known tasks to ground instructions against: '' (off), a world "
                                             "(tabletop, tabletop:shapes, driving) or .yaml/.json {task: [sentences]}"))
        p("grounding_threshold", DEFAULT_THRESHOLD, read_only_range(
            "least sentence-encoder similarity to a known task for an instruction to be grounded", -1.0, 1.0))
        g = lambda name: self.get_parameter(name).value  # noqa: E731
        config = PolicyLoopConfig(**{name: g(name) for name in LOOP_SETTINGS})  # validates
        self._color = conv.camera_transport("camera/color/image_raw", g("color_transport"))  # (topic, type, convert)
        self._depth = conv.camera_transport("camera/depth/image_raw", g("depth_transport"), depth=True)
        self.embodiment = config.embodiment
        qos, proprio_qos = (sensor_qos(g(name), name) for name in ("sensor_qos", "proprio_qos"))
        self.proprio_names = [n for n in g("proprio_names") if n] or default_proprio_names(self.embodiment)
        self.frame = g("base_frame")
        self.policy = policy if policy is not None else load_backend(
            **{f.name: g(f.name) for f in dataclasses.fields(BackendSettings)})
        self.backend_name = g("backend") if policy is None else type(policy).__name__
        if (latency := AddedLatency.parse(config.added_latency)).p99_s > 0:  # simulating a slow backend
            self.policy = DelayedPolicy(self.policy, latency)
        self.runtime_description = self.policy.runtime_description
        check_submodel(self.policy, g("submodel"))
        self._submodel = g("submodel")  # the worker switches the policy to it
        if self._submodel != self.policy.submodel:
            self.policy.set_submodel(self._submodel)
        self.policy.warmup(self.embodiment)  # lazy set-up must not make the first answer late
        self.loop = PolicyLoop(config, self._now(), self.policy.outputs_targets)
        if spec := g("instruction_tasks"):  # the encoder loads on the check's own thread
            self._check = InstructionCheck(tasks := known_task_prototypes(spec), g("grounding_threshold"),
                                           self._on_grounding, encoder, lambda text: scene_tasks(spec, text, tasks))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # --- ROS interfaces ---
        inputs = MutuallyExclusiveCallbackGroup()
        sub = lambda *args: self.create_subscription(*args, callback_group=inputs)  # noqa: E731
        sub(self._color[1], self._color[0], self._on_rgb, qos)
        if config.use_depth:
            sub(self._depth[1], self._depth[0], self._on_depth, qos)
        sub(CameraInfo, "camera/color/camera_info", self._on_info, qos)
        sub(JointState, "joint_states", self._on_joints, proprio_qos)
        sub(Odometry, "odom", self._on_odom, proprio_qos)
        sub(String, "instruction", self._on_instruction, LATCHED)
        if self._check is not None:  # what is in view, e.g. "red cube, green ball"
            scene = lambda m: self._convert("scene/objects", self._check.set_scene, m.data)  # noqa: E731
            sub(String, "scene/objects", scene, LATCHED)
        sub(Bool, "estop", self._on_estop, LATCHED)
        if self.policy.wants_expert_feed:  # the sim-only expert relay (models/policy/expert_relay)
            sub(JointState, "sim/expert_action", self._on_expert, 10)
        self.cmd_pub = self.create_publisher(*conv.command_topic(config.kind, g("cmd_vel_stamped")), 10)
        self.gripper_pub = self.create_publisher(Float64, "gripper_command", 10) if config.joint_gripper >= 0 else None
        self.source_pub = self.create_publisher(Header, "~/command_source", 10)
        self.plan_pub = self.create_publisher(Path, "plan", 10)
        self.point_pub = self.create_publisher(PointStamped, "target_point", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.inference_pub = self.create_publisher(KeyValue, "~/inference", 50)
        self._control_lock = threading.Lock()  # one control step and its publishing at a time
        self._control_group = group = MutuallyExclusiveCallbackGroup()
        self._tick_timer = self.create_timer(1.0 / config.control_rate_hz, self._on_tick, callback_group=group)
        # A one-shot, started (with its delay) by each chunk's first action: it restarts the
        # tick timer so that the ticks fall mid-way between the robot's control steps.
        self._phase_timer = self.create_timer(1.0 / config.control_rate_hz, self._on_phase, callback_group=group)
        self._phase_timer.cancel()
        self.create_timer(1.0, self._publish_diagnostics, callback_group=group)
        self._worker = threading.Thread(target=self._worker_loop, name="policy_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(f"policy_node: backend={self.backend_name} runtime={self.runtime_description} "
                               f"embodiment={self.embodiment} rate={config.control_rate_hz} Hz "
                               f"submodel={self._submodel}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # --- inputs: convert (a malformed message is rejected under its topic), then the loop ---
    def _convert(self, topic: str, convert, msg):
        try:
            return convert(msg)
        except ValueError as exc:  # (conv.MessageRejected, or a parser's own)
            self._reject(topic, str(exc))
            return None

    def _judged(self, source: str, reason: str | None) -> None:
        """The loop's verdict on an input's stamp: report a refusal; else serve any request."""
        self._reject(source, reason) if reason is not None else self._dispatch()

    def _reject(self, source: str, reason: str) -> None:
        last = self.loop.reject(source, reason)
        self.get_logger().warning(f"rejected {source}: {reason}", throttle_duration_sec=2.0)
        if last is None or rejection_kind(reason) != rejection_kind(last):
            self._publish_diagnostics()  # a new kind of rejection: report it now

    def _on_rgb(self, msg) -> None:
        rgb, h = self._convert(self._color[0], self._color[2], msg), msg.header
        if rgb is not None:
            self._judged("camera", self.loop.on_rgb(rgb, conv.stamp_to_seconds(h.stamp), self._now(), time.monotonic(),
                                                    h.frame_id, h.stamp))

    def _on_depth(self, msg) -> None:
        depth = self._convert(self._depth[0], self._depth[2], msg)
        if depth is not None:
            stamp = conv.stamp_to_seconds(msg.header.stamp)
            self._judged("depth", self.loop.on_depth(depth, stamp, self._now(), time.monotonic()))

    def _on_info(self, msg: CameraInfo) -> None:
        if (K := self._convert("camera/color/camera_info", conv.camera_info_to_K, msg)) is not None:
            self.loop.on_camera_info(K)

    def _on_joints(self, msg: JointState) -> None:
        proprio = self._convert("joint_states", lambda m: conv.joint_state_to_proprio(m, self.proprio_names), msg)
        if proprio is not None:
            stamp = conv.stamp_to_seconds(msg.header.stamp)
            self._judged("joint_states", self.loop.on_proprio(proprio, stamp, self._now(), time.monotonic()))

    def _on_odom(self, msg: Odometry) -> None:
        if (motion := self._convert("odom", conv.odometry_motion, msg)) is not None:
            stamp = conv.stamp_to_seconds(msg.header.stamp)
            self._judged("odom", self.loop.on_speed(motion[0], stamp, self._now(), time.monotonic(), motion[1]))

    def _on_instruction(self, msg: String) -> None:
        text = self._convert("instruction", lambda m: conv.check_instruction(m.data), msg)
        if text is not None:
            self.loop.on_instruction(text, time.monotonic(), grounding_pending=self._check is not None)
            self.policy.reset()
            self.get_logger().info(f"instruction: {text!r}")
            if self._check is not None:
                self._check.submit(text)

    def _on_grounding(self, text: str, grounding) -> None:  # (on the check's thread)
        if self.loop.on_grounding(text, grounding.ok, grounding.message):
            if grounding.ok:  # (rclpy ties a call site to one severity)
                self.get_logger().info(grounding.message)
            else:
                self.get_logger().warning(grounding.message)
            self._publish_diagnostics()

    def _on_estop(self, msg: Bool) -> None:
        self.loop.on_estop(msg.data)
        self.get_logger().warning(f"e-stop {'ENGAGED' if msg.data else 'released'}")
        self._publish_diagnostics()

    def _on_expert(self, msg: JointState) -> None:  # (a message that does not fit is rejected)
        dims, stamp = self.loop.config.action_dims, conv.stamp_to_seconds(msg.header.stamp)
        self._convert("sim/expert_action", lambda m: self.policy.feed(stamp, conv.expert_action_values(m, dims)), msg)

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate every change first; apply them all or none. (rclpy refuses read-only
        parameters and values out of range before this is called.)"""
        values = {p.name: p.value for p in params}
        submodel = values.get("submodel")
        if submodel is not None and submodel not in self.policy.submodel_names:
            return SetParametersResult(successful=False, reason=(
                f"unknown submodel {submodel!r}; allowed: {self.policy.submodel_names}"))
        with self._control_lock:
            try:
                self.loop.reconfigure(**{k: v for k, v in values.items() if k in LOOP_SETTINGS})
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self._submodel = submodel or self._submodel
            if "control_rate_hz" in values:
                self._tick_timer.cancel()
                self.destroy_timer(self._tick_timer)
                self._tick_timer = self.create_timer(1.0 / values["control_rate_hz"], self._on_tick,
                                                     callback_group=self._control_group)
        self.get_logger().info(f"parameters set: {', '.join(f'{k}={v}' for k, v in values.items())}")
        return SetParametersResult(successful=True)

    # --- inference worker -----------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand the request the loop formed, if any, to the inference worker."""
        request = self.loop.take_request()
        if request is not None:
            self._requests.offer(request)

    def _worker_loop(self) -> None:
        while (request := self._requests.take()) is not None:  # (None: the node is closing)
            try:
                self._serve(request, self._submodel)
            except Exception as exc:  # a bug outside the backend: stop safely, carry on
                self.loop.worker_failed(f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"inference worker failed: {exc!r}\n"
                                        f"{traceback.format_exc(limit=4)}", throttle_duration_sec=2.0)

    def _serve(self, request: Request, submodel: str) -> None:
        action = error = None
        try:
            if submodel != self.policy.submodel:
                self.policy.set_submodel(submodel)
            t0 = time.perf_counter()
            action = self.policy.select_action(request.observation)
            self.inference_pub.publish(KeyValue(key=submodel, value=f"{time.perf_counter() - t0:.6f}"))
            self.loop.build_chunk(request, action)
        except Exception as exc:  # any backend failure becomes a safety fault
            error = exc
            self.get_logger().error(f"backend failed: {exc!r}\n{traceback.format_exc(limit=3)}",
                                    throttle_duration_sec=2.0)
        # A fresh chunk's first action goes out at once rather than at the next tick:
        # camera -> command latency is then the model's, not the timer's phase.
        with self._control_lock:
            step = self.loop.finish_request(request, action, error, self._now(), time.monotonic())
            if step.answer is not None:
                self._publish_answer(step.answer, request.observation.stamp)
            self._carry_out(step)
        self._dispatch()

    # --- control ----------------------------------------------------------------------------
    def _on_tick(self) -> None:
        with self._control_lock:
            self._carry_out(self.loop.control_step(self._now(), time.monotonic()))
        self._dispatch()

    def _on_phase(self) -> None:
        with self._control_lock:
            self._phase_timer.cancel()
            self._tick_timer.reset()

    def _carry_out(self, step: Step) -> None:
        """(control lock held) Re-phase the ticks, log, publish what the step decided."""
        if step.rephase_s is not None:
            self._tick_timer.cancel()
            self._phase_timer.timer_period_ns = int(step.rephase_s * 1e9)
            self._phase_timer.reset()
        if step.log_warning:
            self.get_logger().warning(step.log_warning)
        if step.log_info:
            self.get_logger().info(step.log_info)
        if step.faults_changed:
            self._publish_diagnostics()
        if step.command is None:
            return
        # Stamped with the publish time; the observation it answers goes to ~/command_source.
        stamped = self.cmd_pub.msg_type is TwistStamped
        self.cmd_pub.publish(conv.command_msg(step.command, self.loop.config.kind, stamped,
                                              self.get_clock().now().to_msg(), self.frame))
        if self.gripper_pub is not None:  # (a joints layout's gripper channel, also apart)
            self.gripper_pub.publish(Float64(data=float(step.command[self.loop.config.joint_gripper])))
        if step.answers is not None:  # (None: a safety stop, which answers no observation)
            self.source_pub.publish(Header(stamp=step.answers_header or conv.seconds_to_stamp(step.answers),
                                           frame_id="camera_color_optical_frame"))

    def _publish_answer(self, action, obs_stamp: float) -> None:
        for pub, msg in zip((self.plan_pub, self.point_pub), answer_msgs(action, obs_stamp, self.frame)):
            if msg is not None:
                pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        report = self.loop.diagnostics()
        values = {"submodel": self.policy.submodel, "runtime": self.runtime_description, **report.values}
        self.diag_pub.publish(conv.diagnostics_msg(conv.status_name(self, "policy"), self.backend_name, report.level,
                                              report.message, values, self.get_clock().now().to_msg()))

    def destroy_node(self):
        self._requests.close()
        if self._check is not None:
            self._check.close()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> None:
    from embodied_stack.nodes.executor import run_node

    run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
