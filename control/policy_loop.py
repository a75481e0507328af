"""PolicyLoop: what the policy node decides, as a plain class (no rclpy, no threads of its own,
the clocks passed in), tested on a fake clock (tests/test_policy_loop.py). nodes/policy_node.py
declares the parameters, converts messages, runs the inference worker, owns the timers and
publishes; every rule below is here.

Two clocks come in with the calls that need them. `now` is the node's clock (ROS time, or sim
time with `use_sim_time`): input stamps, deadlines, staleness and the control cadence are
judged by it. `arrived` / `arrived_now` is a monotonic wall clock (time.monotonic()) of when
messages reached the process: how long a frame has waited here, whatever the ROS clock does.

Rules:
- Inputs (`on_rgb`, `on_depth`, `on_proprio`, `on_speed`) are judged by `now`: one stamped
  more than `max_clock_skew_s` ahead of it, or older than `stale_after_s`, is refused (the
  reason comes back for the caller to report) and does not refresh staleness (control/safety.py).
- When to ask for a chunk: an instruction is there; the scheduler wants one (its execution
  strategy's threshold of actions left, from `refill_at` and the measured latency; none in
  flight; a frame not asked about yet: control/chunk_scheduler.py); and the
  newest frame arrived less than half the deadline ago (its answer would be dropped), after
  the instruction or at most INSTRUCTION_GRACE_S before it (camera and instruction come on
  different topics, which DDS does not order), and, on a timer tick while actions remain
  queued, at most half a control period ago (a fresher one is due: asking on the old one
  would answer it a period late). The loop asks at every accepted frame, at a depth image or
  joint state the newest frame was waiting for, and at every control step; `take_request`
  hands the request out once.
- Input pairing (control/input_sync.py): a frame goes to the policy with the depth image and
  the proprio stamped closest to it within `sync_tolerance_s`; while those may still come, the
  frame waits for them (and only their arrival may then ask: the next instant's depth must
  not start an inference on the frame before it). A sample outside the tolerance is counted
  (`sync_closest_depth`, `sync_closest_proprio`); depth of another size than the image is not fed.
- Every instruction message starts a new task (the same text too): older results are
  superseded, the queue is dropped, and the first frame used after it becomes the task's
  reference frame, handed to the policy with every later observation.
- Instruction grounding (when the node checks instructions, control/instruction_check.py):
  `on_instruction(..., grounding_pending=True)` holds every request until `on_grounding`
  gives the verdict on that text; an instruction that is not grounded is a fault
  (`fault.instruction`, the grounder's reason): the robot stops and asks for nothing until the
  next instruction. `instruction_grounding` on /diagnostics says what the last verdict was.
- Results (`finish_request`): a backend exception -> `fault.backend` and a stop; an older
  task's result is dropped (`superseded`); one older than `deadline_s` is dropped
  (`dropped_stale`, `fault.deadline`); a target backend's answer without a target -> a stop,
  the reason in `fault.target`. A queued chunk's first action goes out at once, and the ticks
  are re-phased (`Step.rephase_s`): the chunk's next action then goes out 1 + PHASE_OFFSET
  periods after its frame's stamp, mid-way between the robot's control steps.
- The control step: take the action due now (chunks live on a time line: the action for this
  control step, never one older than `deadline_s`), scale it to a command (or servo to a
  target / pursue a plan), limit its acceleration and jerk (`limit_*`, control/smoothing.py),
  and let the safety supervisor pass it or replace it with a stop (stale input, faults, e-stop
  latched until released; control/safety.py). A stop bypasses the limiter: it goes out at
  once, and the limiter starts again from it. A fault that persists is logged again at most
  every FAULT_LOG_PERIOD_S, a change of the active faults at once.
- `delay_aware` (and `auto` for an arm): a request's proprio is rolled forward through the
  actions that will run while it is answered (control/commands.py), and its answer starts at
  the step it was planned for (`Request.origin`). Not for target / plan backends, whose chunks
  are setpoints.
- `reconfigure` validates every change first and applies all of them or none.

Threads: every public method takes the loop's own lock, so the node calls it from its
executor callbacks, its timers and its inference worker alike. The loop never calls the
policy: inference is the node's worker's. Its public attributes (config, scheduler, safety,
controllers, stats, the latency deques) are for reading: tests, the demo's report.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from embodied_stack.control.chunk_scheduler import (
    AUTO_STRATEGY,
    STEP_EPS,
    STRATEGIES,
    ChunkScheduler,
    SchedulerConfig,
)
from embodied_stack.control.commands import ArmScale, JointScale, VehicleScale
from embodied_stack.control.input_sync import StampedBuffer
from embodied_stack.control.latency import AddedLatency
from embodied_stack.control.safety import SafetyConfig, SafetySupervisor
from embodied_stack.control.smoothing import CommandLimiter, LimiterConfig
from embodied_stack.control.target_control import ArmServo, PurePursuit, static_transform
from embodied_stack.models.policy.interface import Action, Observation
from embodied_stack.models.settings import check_ranges, fixed_settings, setting

#: A fault repeated unchanged is logged at most this often (s); a new one at once.
FAULT_LOG_PERIOD_S = 5.0
#: a frame that arrived at most this long before an instruction may start the new task: the
#: two come on different topics, which DDS does not order (a simulator's reset frame came
#: 0.6-3.6 ms ahead of its instruction here; the frame before it, >= 8 ms)
INSTRUCTION_GRACE_S = 0.005
#: A chunk's second action goes out 1 + PHASE_OFFSET control periods after its frame's stamp
#: (its first goes out as soon as it is ready): mid-way between the robot's steps.
PHASE_OFFSET = 0.5
#: Frames whose arrival time (and header stamp) are kept, for request gating and latencies.
FRAMES_KEPT = 64

@dataclass(frozen=True)
class PolicyLoopConfig:
    """The loop's settings (models/settings.py): each is the policy node's parameter of the
    same name, declared from here."""

    # --- embodiment and inputs (fixed at start-up) ---
    embodiment: str = setting("arm", "the model's embodiment: arm (servo/delta_twist_cmds), "
                                     "vehicle (cmd_vel), or a world spec's (command: joints)",
                              fixed=True)
    command: str = setting("auto", "how actions become commands: auto (arm: servo twist, vehicle: "
                                   "cmd_vel) or joints (joint_commands: Float64MultiArray of the "
                                   "action scaled to joint_low..joint_high)", fixed=True)
    joint_low: tuple = setting((-1.0,), "joints: the command at action -1, per dim", fixed=True)
    joint_high: tuple = setting((1.0,), "joints: the command at action +1, per dim", fixed=True)
    joint_gripper: int = setting(-1, "joints: the gripper channel's index (-1 = none): also "
                                     "published on gripper_command (std_msgs/Float64), and held "
                                     "at its last command by every stop", -1, 63, fixed=True)
    use_depth: bool = setting(True, "feed depth to the backend and require it", fixed=True)
    require_proprio: bool = setting(True, "stop when joint_states (and odom for a vehicle) go "
                                          "stale, like the camera", fixed=True)
    sync_tolerance_s: float = setting(
        0.02, "pair each camera frame with the depth image and joint state stamped closest to "
              "it within this many seconds, waiting while they may still come", 0.0, 1.0,
        fixed=True)
    camera_to_base: tuple = setting(
        (0.0,), "arm: the camera optical frame's pose in the base frame of servo commands, x y z "
                "qx qy qz qw (as static_transform_publisher); [0.0] = not set", fixed=True)
    # --- timing ---
    control_rate_hz: float = setting(10.0, "command rate (Hz)", 1.0, 200.0)
    deadline_s: float = setting(0.3, "drop a result whose observation is older than this (s), and "
                                     "execute no action older than it (cover latency + the chunk's "
                                     "horizon); seconds for a large planner backend", 0.01, 60.0)
    stale_after_s: float = setting(0.5, "an input older than this (s) stops the robot", 0.05, 60.0)
    max_clock_skew_s: float = setting(0.1, "reject inputs stamped further than this (s) ahead "
                                           "of this node's clock", 0.001, 5.0)
    refill_at: int = setting(1, "request the next chunk when this many actions remain", 0, 64)
    execute_steps: int = setting(0, "actions of each chunk to execute (0 = all)", 0, 64)
    # --- execution strategy (control/chunk_scheduler.py) and the output limiter (smoothing.py) ---
    execution: str = setting("auto", "how chunks are executed (control/chunk_scheduler.py): auto ("
                                     + ", ".join(f"{k}: {v}" for k, v in AUTO_STRATEGY.items()) + "); "
                             + "; ".join(f"{k}: {v}" for k, v in STRATEGIES.items()))
    ensemble_halflife_s: float = setting(0.1, "ensemble: a chunk's vote halves for every this many "
                                              "seconds it is older than the newest (0 = newest only)",
                                         0.0, 10.0)
    latency_quantile: float = setting(0.9, "early / delay_aware: plan for this quantile of the recent "
                                           "answer latencies", 0.5, 1.0)
    blend_steps: int = setting(0, "cross-fade a new chunk's first this many actions from the last "
                                  "command, so a jump between two chunks reaches the robot over "
                                  "blend_steps + 1 steps (0 = off; not with ensemble)", 0, 64)
    limit_accel: float = setting(0.0, "healthy commands: most change of a linear velocity per second, "
                                      "m/s^2 (arm: each end-effector axis; vehicle: speed); 0 = off; a "
                                      "stop is never limited", 0.0, 1000.0)
    limit_jerk: float = setting(0.0, "healthy commands: most change of that acceleration per second, "
                                     "m/s^3; 0 = off", 0.0, 10000.0)
    limit_angular_accel: float = setting(0.0, "vehicle: most change of the yaw rate command per "
                                              "second, rad/s^2; 0 = off", 0.0, 1000.0)
    limit_angular_jerk: float = setting(0.0, "vehicle: most change of that per second, rad/s^3; "
                                             "0 = off", 0.0, 10000.0)
    added_latency: str = setting("", "simulation: delay every answer by this: seconds ('0.2'), "
                                     "'lognormal' (Jetson Orin figures: p50 170 ms, p99 600 ms) or "
                                     "'lognormal:P50:P99'; empty = none (control/latency.py)",
                                 fixed=True)
    # --- limits and command scales ---
    max_linear: float = setting(0.0, "|v| limit m/s (0 = embodiment default)", 0.0, 100.0)
    max_angular: float = setting(1.0, "vehicle |omega| limit rad/s", 0.01, 10.0)
    max_reverse: float = setting(0.0, "vehicle: most negative speed allowed m/s", 0.0, 10.0)
    max_ee_speed: float = setting(0.25, "arm: m/s at |action| = 1", 0.001, 5.0)
    max_steer: float = setting(0.5, "vehicle: steering rad at |action| = 1", 0.01, 1.5)
    max_accel: float = setting(3.0, "vehicle: m/s^2 at |action| = 1", 0.1, 20.0)
    max_speed: float = setting(15.0, "vehicle: speed cap m/s", 0.1, 100.0)
    wheelbase: float = setting(2.7, "vehicle: wheelbase m", 0.1, 10.0)
    # --- target / plan backends (Policy.outputs_targets: mimo): how answers become chunks ---
    plan_horizon_s: float = setting(3.0, "mimo: seconds of commands built from one answer "
                                         "(cover the backend's inference time)", 0.1, 60.0)
    servo_gain: float = setting(2.0, "arm: m/s toward the target per m of distance", 0.01, 50.0)
    servo_stop_radius_m: float = setting(0.01, "arm: zero velocity this close to the target",
                                         0.0, 1.0)
    lookahead_m: float = setting(5.0, "vehicle: shortest pure-pursuit look-ahead, m", 0.1, 100.0)
    lookahead_time_s: float = setting(1.0, "vehicle: look-ahead grows to this many seconds of "
                                           "travel", 0.0, 10.0)

    def __post_init__(self):
        if self.command not in ("auto", "joints"):
            raise ValueError(f"command {self.command!r} not in ('auto', 'joints')")
        if self.command == "auto" and self.embodiment not in ("arm", "vehicle"):
            raise ValueError(f"embodiment {self.embodiment!r} not in ('arm', 'vehicle'): another "
                             "embodiment needs command='joints' (a world spec's layout)")
        for name in ("joint_low", "joint_high"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if len(self.joint_low) != len(self.joint_high) or not all(
                lo < hi for lo, hi in zip(self.joint_low, self.joint_high)):
            raise ValueError(f"joint_low={self.joint_low} and joint_high={self.joint_high} need "
                             "one bound each per dim, low < high")
        if self.execution != "auto" and self.execution not in STRATEGIES:
            raise ValueError(f"execution {self.execution!r} not in {['auto', *STRATEGIES]}")
        check_ranges(self)
        object.__setattr__(self, "camera_to_base", tuple(float(v) for v in self.camera_to_base))
        static_transform(self.camera_to_base)  # (raises on anything but 7 numbers or unset)
        AddedLatency.parse(self.added_latency)
        self.scheduler_config()
        self.safety_config()

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(rate_hz=self.control_rate_hz, deadline_s=self.deadline_s,
                               refill_at=self.refill_at, execute_steps=self.execute_steps,
                               strategy=self.strategy, ensemble_halflife_s=self.ensemble_halflife_s,
                               latency_quantile=self.latency_quantile, blend_steps=self.blend_steps)

    @property
    def strategy(self) -> str:
        """The execution strategy in force (`execution`, with auto resolved by embodiment)."""
        return AUTO_STRATEGY[self.kind] if self.execution == "auto" else self.execution

    @property
    def kind(self) -> str:
        """The command layout: arm, vehicle or joints."""
        return "joints" if self.command == "joints" else self.embodiment

    @property
    def action_dims(self) -> int:
        """Entries of one action (and command) of this layout."""
        return {"arm": 3, "vehicle": 2}.get(self.kind, len(self.joint_low))

    def limiter_config(self) -> LimiterConfig:
        """The output limiter's limits for this embodiment's command layout."""
        accel: tuple[float, ...]
        jerk: tuple[float, ...]
        if self.kind in ("arm", "joints"):
            n = self.action_dims
            accel, jerk = (self.limit_accel,) * n, (self.limit_jerk,) * n
        else:
            accel, jerk = (self.limit_accel, self.limit_angular_accel), (self.limit_jerk, self.limit_angular_jerk)
        return LimiterConfig(accel, jerk, 1.0 / self.control_rate_hz)

    def safety_config(self) -> SafetyConfig:
        default_linear = self.max_ee_speed if self.kind != "vehicle" else self.max_speed
        return SafetyConfig(kind=self.kind, joint_dims=self.action_dims,
                            gripper=self.joint_gripper if self.kind == "joints" else -1,
                            stale_after_s=self.stale_after_s,
                            max_future_s=self.max_clock_skew_s,
                            max_linear=self.max_linear or default_linear,
                            max_angular=self.max_angular, max_reverse=self.max_reverse)


#: Settings fixed at start-up; every other one may change at run time (`reconfigure`).
FIXED = fixed_settings(PolicyLoopConfig)


class Controllers(NamedTuple):
    """Command scaling and the target / plan controllers of one configuration."""

    arm_scale: ArmScale
    vehicle_scale: VehicleScale
    arm_servo: ArmServo
    pursuit: PurePursuit
    plan_steps: int  #: chunk length built from one target / plan answer
    joint_scale: JointScale = JointScale()  #: joints: the spec's bounds

    def scale(self, kind: str) -> ArmScale | VehicleScale | JointScale:
        """The command scaling of a layout (arm, vehicle, joints)."""
        if kind == "arm":
            return self.arm_scale
        return self.vehicle_scale if kind == "vehicle" else self.joint_scale

    @classmethod
    def of(cls, c: PolicyLoopConfig) -> Controllers:
        arm = ArmScale(c.max_ee_speed)
        vehicle = VehicleScale(c.max_steer, c.max_accel, c.max_speed, c.wheelbase,
                               1.0 / c.control_rate_hz)
        return cls(arm, vehicle, ArmServo(arm, c.servo_gain, c.servo_stop_radius_m),
                   PurePursuit(vehicle, c.lookahead_m, c.lookahead_time_s),
                   max(1, math.ceil(c.plan_horizon_s * c.control_rate_hz)),
                   JointScale(c.joint_low, c.joint_high))


@dataclass(frozen=True)
class Request:
    """A chunk to ask the backend for; its answer goes back through `finish_request`."""

    observation: Observation
    epoch: int  #: the instruction epoch it was asked in (a newer instruction supersedes it)
    frame_id: str  #: the camera frame of the observation's image (a target point is in it)
    speed: float  #: the vehicle's speed (odom) when asked: a plan is rolled forward from it
    origin: float  #: when the answer's first action is due (its stamp; later for delay_aware)


@dataclass(frozen=True)
class Step:
    """What one control step decided, for the node to carry out."""

    #: publish this command (clamped; a stop while faults are active); None = publish nothing
    command: np.ndarray | None = None
    answers: float | None = None  #: stamp of the observation the command answers (None: a stop)
    answers_header: object = None  #: that frame's header stamp as `on_rgb` got it (exact ns)
    rephase_s: float | None = None  #: restart the tick timer this many seconds from now
    log_warning: str | None = None  #: log this warning now ("safety stop: ...")
    log_info: str | None = None  #: log this now ("safety: all clear")
    faults_changed: bool = False  #: the active faults changed: report them at once
    answer: Action | None = None  #: a fresh answer whose plan / target point to publish


@dataclass(frozen=True)
class Diagnostics:
    """What /diagnostics shows of the loop."""

    level: str  #: "error" (a fault is active), "warn" (inputs were rejected) or "ok"
    message: str  #: the active faults, or "running"
    values: dict  #: key -> value, as /diagnostics shows them


class PolicyLoop:
    """The policy node's decisions (module docstring). `outputs_targets`: the backend answers
    with a target point or a plan (Policy.outputs_targets), turned into chunks here."""

    def __init__(self, config: PolicyLoopConfig, now: float, outputs_targets: bool = False):
        self.config = config
        self.outputs_targets = outputs_targets
        self.scheduler = ChunkScheduler(config.scheduler_config())
        self.safety = SafetySupervisor(config.safety_config())
        self.limiter = CommandLimiter(config.limiter_config())
        self._camera_to_base = static_transform(config.camera_to_base)
        self.controllers = Controllers.of(config)  # rebuilt by reconfigure
        self._lock = threading.Lock()
        # --- the newest inputs ---
        self._rgb: np.ndarray | None = None
        self._rgb_stamp: float | None = None
        self._rgb_frame = "camera_color_optical_frame"  # frame_id of the newest colour image
        self._frames: dict[float, tuple[object, float]] = {}  # stamp -> (header stamp, arrived)
        self._depth_buf = StampedBuffer()  # recent (stamp, depth) / (stamp, proprio) samples
        self._proprio_buf = StampedBuffer()
        self._speed_buf = StampedBuffer()
        self._awaiting_inputs = False  # the newest frame waits for its depth / proprio / odom
        self._proprio = np.zeros(8, np.float32)
        self._speed = 0.0
        self._yaw_rate = 0.0
        self._K: np.ndarray | None = None
        # --- the task and the request for the worker ---
        self._instruction: str | None = None
        self._instruction_since = -float("inf")  # when it arrived (arrival clock)
        self._grounding_pending = False  # no request until the verdict on the instruction
        self._ungrounded = False  # the instruction was not grounded: stopped until the next
        self._grounding_message = "not checked"
        #: (rgb, depth) of the task's first frame, once one was used
        self._reference: tuple[np.ndarray, np.ndarray | None] | None = None
        self._request: Request | None = None  # formed, not yet taken
        # --- what went out, and diagnostics ---
        self._last_obs_stamp: float | None = None  # the observation the last command answered
        self._last_faults: dict[str, str] = {}
        self._fault_logged_at = -float("inf")
        self.stats: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque = collections.deque(maxlen=500)  # frame -> result
        self.model_latencies: collections.deque = collections.deque(maxlen=500)  # in backend
        #: frame arrival -> its first command, inside this process (arrival clock)
        self.node_latencies: collections.deque = collections.deque(maxlen=1000)
        self.rejections: dict[str, tuple[int, str]] = {}  # source -> (count, last reason)
        self.safety.watch("camera", now)
        if config.use_depth:
            self.safety.watch("depth", now)
        if config.require_proprio:
            self.safety.watch("joint_states", now)
            if config.kind == "vehicle":
                self.safety.watch("odom", now)

    @property
    def instruction(self) -> str | None:
        return self._instruction

    # --- inputs: each returns None when accepted, else why not (for the caller to report) ---
    def on_rgb(self, rgb: np.ndarray, stamp: float, now: float, arrived: float, frame_id: str = "",
               header_stamp: object = None) -> str | None:
        """A colour frame; `header_stamp` (the message's own) is echoed in Step.answers_header."""
        with self._lock:
            reason = self.safety.note_input("camera", stamp, now)
            if reason is None:
                self._rgb, self._rgb_stamp = rgb, stamp
                self._rgb_frame = frame_id or self._rgb_frame
                self._frames[stamp] = (header_stamp, arrived)
                if len(self._frames) > FRAMES_KEPT:
                    self._frames.pop(next(iter(self._frames)))
                self._maybe_request(now, arrived)  # start inference now, not at the next tick
            return reason

    def on_depth(self, depth: np.ndarray, stamp: float, now: float, arrived: float) -> str | None:
        with self._lock:
            reason = self.safety.note_input("depth", stamp, now)
            if reason is None:
                self._depth_buf.add(stamp, depth)
                if self._awaiting_inputs:  # the newest frame waits for its depth image
                    self._maybe_request(now, arrived)
            return reason

    def on_proprio(self, proprio: np.ndarray, stamp: float, now: float, arrived: float) -> str | None:
        """The proprio vector (joint_states mapped by proprio_names)."""
        with self._lock:
            reason = self.safety.note_input("joint_states", stamp, now)
            if reason is None:
                self._proprio = proprio
                self._proprio_buf.add(stamp, proprio)
                if self._awaiting_inputs:  # the newest frame waits for its joint state
                    self._maybe_request(now, arrived)
            return reason

    def on_speed(self, speed: float, stamp: float, now: float, arrived: float,
                 yaw_rate: float = 0.0) -> str | None:
        """The vehicle's speed m/s and yaw rate rad/s (odom)."""
        with self._lock:
            reason = self.safety.note_input("odom", stamp, now)
            if reason is None:
                self._speed, self._yaw_rate = float(speed), float(yaw_rate)
                self._speed_buf.add(stamp, float(speed))
                if self._awaiting_inputs:  # the newest frame waits for its odometry
                    self._maybe_request(now, arrived)
            return reason

    def on_camera_info(self, K: np.ndarray) -> None:
        with self._lock:
            self._K = K

    def on_instruction(self, text: str, arrived: float, grounding_pending: bool = False) -> None:
        """A new task (the same text too: "do it again", the next episode in simulation): drop
        the old plan and every result still in flight, and take the reference frame afresh.
        `grounding_pending`: ask for nothing until `on_grounding` gives the verdict on it."""
        with self._lock:
            self._instruction = text
            self.scheduler.new_instruction()
            self._instruction_since = arrived
            self._reference = None
            self._grounding_pending, self._ungrounded = grounding_pending, False
            self._grounding_message = "pending" if grounding_pending else "not checked"
            self.safety.clear_fault("instruction")

    def on_grounding(self, text: str, grounded: bool, message: str) -> bool:
        """The verdict on instruction `text`: grounded -> the task may start; not grounded ->
        `fault.instruction` with `message` (a stop) until the next instruction or a verdict
        that grounds it (the scene changed: InstructionCheck.set_scene). Returns whether it
        changed anything: a verdict on any other text than the current instruction, or the
        same verdict again, is ignored."""
        with self._lock:
            if text != self._instruction or (not self._grounding_pending and self._ungrounded != grounded):
                return False
            self._grounding_pending, self._ungrounded = False, not grounded
            self._grounding_message = message
            if grounded:
                self.safety.clear_fault("instruction")
            else:
                self.stats["ungrounded_instructions"] += 1
                self.scheduler.clear()
                self.safety.report_fault("instruction", message)
            return True

    def on_estop(self, engaged: bool) -> None:
        """Latched: the stop holds until an explicit release."""
        with self._lock:
            self.safety.set_estop(engaged)
            if engaged:
                self.scheduler.clear()

    def reject(self, source: str, reason: str) -> str | None:
        """Count a rejected message; returns the previous reason from `source` (None: first)."""
        with self._lock:
            count, last = self.rejections.get(source, (0, None))
            self.rejections[source] = (count + 1, reason)
            self.stats["rejected"] += 1
            return last

    # --- inference ---------------------------------------------------------------------------
    def take_request(self) -> Request | None:
        """The chunk request formed since the last call, if any: hand it to the worker."""
        with self._lock:
            request, self._request = self._request, None
            return request

    def build_chunk(self, request: Request, action: Action) -> None:
        """(worker, after select_action) Tag the answer with its camera frame; for a backend
        that answers with a target or a plan, build the chunk to execute
        (control/target_control.py). Step k is for the observation's time + k periods, so the
        scheduler skips what a slow answer missed. An arm: `target_point` moved to the base
        frame by `camera_to_base`, held as the setpoint each tick servoes to from the
        end-effector position in proprio[0:3] (base frame). A vehicle: `plan` followed by pure
        pursuit (steering rolled forward from the odometry speed, rows of [steer, desired
        speed] whose speed loop closes at the tick). No target -> a zero chunk and
        extras["no_target"] (a stop with the reason)."""
        action.extras["frame_id"] = request.frame_id
        if not self.outputs_targets:
            return
        with self._lock:
            ctl, T, embodiment = self.controllers, self._camera_to_base, self.config.kind
        extras, steps = action.extras, ctl.plan_steps
        chunk, why = None, extras.get("reason") or "the backend gave no target"
        if embodiment == "arm" and action.target_point is not None:
            if T is None:
                why = "camera_to_base not set: a camera-frame target cannot be servoed to"
            else:
                target = T[:3, :3] @ np.asarray(action.target_point, np.float64)[:3] + T[:3, 3]
                extras["target_base"] = target
                chunk = ctl.arm_servo.setpoints(target, steps)
        elif embodiment == "vehicle" and action.plan is not None:
            pursuit = dataclasses.replace(
                ctl.pursuit, waypoint_dt=float(extras.get("waypoint_dt", ctl.pursuit.waypoint_dt)))
            chunk = pursuit.chunk(action.plan, request.speed, steps)
        if chunk is None:
            extras["no_target"] = why
            chunk = np.zeros((steps, self.config.action_dims), np.float32)
        action.chunk = chunk

    def finish_request(self, request: Request, action: Action | None, error: Exception | None,
                       now: float, arrived_now: float) -> Step:
        """The backend's answer (or its exception): queue the chunk or record why not, then
        the control step that sends a fresh chunk's first action at once."""
        with self._lock:
            answer = self._take_result(request, action, error, now)
            step = self._step(now, arrived_now, from_result=True)
            self.safety.clear_fault("worker")  # (after the step: a stop went out for it)
        return dataclasses.replace(step, answer=answer)

    def worker_failed(self, detail: str) -> None:
        """A bug outside the backend broke the worker: stop safely; it carries on."""
        with self._lock:
            self.stats["worker_errors"] += 1
            self.safety.report_fault("worker", detail)
            self.scheduler.failed()

    # --- control -----------------------------------------------------------------------------
    def control_step(self, now: float, arrived_now: float) -> Step:
        """A control tick."""
        with self._lock:
            return self._step(now, arrived_now, from_result=False)

    def reconfigure(self, **changes) -> None:
        """New values for settings not in FIXED; ValueError (and nothing changed) if any is
        fixed or invalid."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(PolicyLoopConfig)})
        fixed = sorted(set(changes) & set(FIXED))
        if unknown or fixed:
            raise ValueError(f"{unknown or fixed}: {'no such setting' if unknown else 'fixed at start-up'}")
        with self._lock:
            config = dataclasses.replace(self.config, **changes)  # validates every value
            controllers = Controllers.of(config)
            self.config, self.controllers = config, controllers
            self.scheduler.reconfigure(**dataclasses.asdict(config.scheduler_config()))
            self.safety.reconfigure(**dataclasses.asdict(config.safety_config()))
            self.limiter.reconfigure(config.limiter_config())

    def diagnostics(self) -> Diagnostics:
        with self._lock:  # the worker appends to these: report a copy
            faults = dict(self._last_faults)
            lat = np.array(self.latencies) * 1e3
            model_lat = np.array(self.model_latencies) * 1e3
            node_lat = np.array(self.node_latencies) * 1e3
            stats = dict(self.stats)
            rejections = dict(self.rejections)
            obs_stamp = self._last_obs_stamp
            grounding = self._grounding_message
        pct = lambda a, q: f"{np.percentile(a, q):.2f}" if a.size else "nan"  # noqa: E731
        values = {
            "embodiment": self.config.embodiment, "execution": self.config.strategy,
            "instruction_grounding": grounding,
            "latency_estimate_ms": f"{self.scheduler.latency_estimate() * 1e3:.1f}",
            "latency_p50_ms": pct(lat, 50), "latency_p95_ms": pct(lat, 95),
            "model_p50_ms": pct(model_lat, 50), "model_p99_ms": pct(model_lat, 99),
            "node_p50_ms": pct(node_lat, 50), "node_p99_ms": pct(node_lat, 99),
            "node_max_ms": f"{node_lat.max():.2f}" if node_lat.size else "nan",
            "last_observation_stamp": f"{obs_stamp:.6f}" if obs_stamp is not None else "none",
            **{k: str(v) for k, v in stats.items()},
        }
        values.update({f"fault.{cause}": detail for cause, detail in faults.items()})
        values.update({f"rejected.{source}": f"{count}x, last: {reason}"
                       for source, (count, reason) in rejections.items()})
        level = "error" if faults else "warn" if rejections else "ok"
        message = "; ".join(f"{k}: {v}" for k, v in faults.items()) or "running"
        return Diagnostics(level, message, values)

    # --- internals (lock held) ---------------------------------------------------------------
    def _maybe_request(self, now: float, arrived_now: float, fresh_only: bool = False) -> None:
        """Form a request on the newest complete observation when the rules allow one.

        `fresh_only` (timer ticks): while actions remain queued, skip a frame that arrived
        more than half a control period ago; a fresher one is due, and asking on the old one
        would answer it a period late (the latency tail of bench/graph_latency.py)."""
        self._awaiting_inputs = False
        rgb, stamp, instruction, scheduler = self._rgb, self._rgb_stamp, self._instruction, self.scheduler
        if instruction is None or rgb is None or stamp is None or self._grounding_pending \
                or self._ungrounded or not scheduler.wants_request(stamp, now):
            return
        arrived = self._frames[stamp][1] if stamp in self._frames else None
        if arrived is not None:
            age = arrived_now - arrived
            if age >= 0.5 * self.scheduler.config.deadline_s:
                return  # half its deadline gone before inference starts: wait for a fresher one
            if arrived < self._instruction_since - INSTRUCTION_GRACE_S:
                return  # a scene from before the instruction: wait for one that goes with it
            if fresh_only and scheduler.remaining(now) and age > 0.5 * scheduler.config.period_s:
                return
        # Depth and proprio of this frame's instant (control/input_sync.py), not merely the
        # latest: those may still be the previous instant's when the colour image comes first.
        tol = self.config.sync_tolerance_s
        depth = None
        if self.config.use_depth:
            status, depth = self._depth_buf.match(stamp, tol)
            if status in ("wait", "empty"):
                self._awaiting_inputs = True  # its depth image is on the way: ask again then
                return
            self.stats["sync_closest_depth"] += status == "closest"
        proprio = self._proprio
        if len(self._proprio_buf) or self.config.require_proprio:
            status, proprio = self._proprio_buf.match(stamp, tol)
            if status in ("wait", "empty"):
                self._awaiting_inputs = True
                return
            self.stats["sync_closest_proprio"] += status == "closest"
        if self.config.kind == "vehicle" and len(self._speed_buf):
            # A vehicle's command turns the chunk's acceleration into a speed from the odometry
            # (control/commands.py), as the base applies it: that of this frame's instant. When
            # the image came first, the speed was still the instant before's, and the car got
            # another acceleration than the policy chose (the sim graph under load did).
            if self._speed_buf.match(stamp, tol)[0] == "wait":
                self._awaiting_inputs = True
                return
        if depth is not None and depth.shape != rgb.shape[:2]:
            depth = None  # not registered to the colour image: do not feed it
        if self._reference is None:  # the first frame since the instruction: where the task starts
            self._reference = (rgb, depth)
        origin = scheduler.request_origin(stamp)
        if origin > stamp and not self.outputs_targets:  # delay_aware: the state it will start from
            pending = scheduler.pending_actions(stamp, scheduler.shift_steps())
            scale = self.controllers.scale(self.config.kind)
            proprio = scale.roll_forward(proprio, pending, scheduler.config.period_s)
        obs = Observation(
            rgb=rgb, instruction=instruction, proprio=proprio.copy(), embodiment=self.config.embodiment,
            depth=depth, camera_K=self._K, stamp=stamp, reference_rgb=self._reference[0],
            reference_depth=self._reference[1])
        self._request = Request(obs, scheduler.start_request(stamp), self._rgb_frame, self._speed, origin)

    def _take_result(self, request: Request, action: Action | None, error: Exception | None,
                     now: float) -> Action | None:
        """Queue a finished chunk, or record why it is not executed; returns the answer to
        publish (its plan / target point), if any."""
        if error is not None:
            self.stats["backend_errors"] += 1
            self.safety.report_fault("backend", f"{type(error).__name__}: {error}")
            self.scheduler.failed()
            return None
        assert action is not None  # (an answer whenever there is no error)
        obs_stamp = request.observation.stamp
        outcome, age = self.scheduler.finish(action.chunk, obs_stamp, request.epoch, now, request.origin)
        if outcome == "superseded":
            self.stats["superseded"] += 1
            return None
        if outcome == "late":
            self.stats["dropped_stale"] += 1
            self.safety.report_fault(
                "deadline", f"result {age * 1e3:.0f} ms after its observation "
                            f"(> {self.scheduler.config.deadline_s * 1e3:.0f} ms); dropped")
            return None
        self.safety.clear_fault("backend")
        self.safety.clear_fault("deadline")
        self.latencies.append(age)
        self.model_latencies.append(action.latency_s)
        no_target = action.extras.get("no_target") if isinstance(action.extras, dict) else None
        if no_target:  # a target/plan backend found nothing to aim at: stop and say why
            self.scheduler.clear()
            self.stats["no_target"] += 1
            self.safety.report_fault("target", no_target)
            return action
        self.safety.clear_fault("target")
        self.safety.watch("actions", now)
        self.safety.note_input("actions", now, now)
        self.stats["chunks"] += 1
        return action

    def _step(self, now: float, arrived_now: float, from_result: bool) -> Step:
        """One control decision: ask for a chunk if due, pop the next action, apply safety."""
        self._maybe_request(now, arrived_now, fresh_only=not from_result)
        popped = self.scheduler.next_action(now, from_result)
        if popped is None and not from_result and self.scheduler.missed_tick(now):
            self.stats["missed_ticks"] += 1
        rephase_s = None
        if from_result:
            if popped is None:
                return Step()  # nothing due yet; the timer keeps the cadence and the safety
            self.stats["actions_on_result"] += 1
            # Re-phase the ticks to this chunk: its next action goes out 1 + PHASE_OFFSET
            # periods after its frame's stamp (the robot's control step it shows), mid-way
            # between the robot's next two steps. With the ticks at any other phase, one could
            # fall before the robot's next step and replace this action unexecuted, or just
            # after a step and lose the race to a late one.
            period = self.scheduler.config.period_s
            age = max(0.0, now - popped.stamp)  # (a late chunk: into the period of its step)
            since = age - math.floor(age / period + STEP_EPS) * period
            rephase_s = max(PHASE_OFFSET * period - since, 0.05 * period)
        command = obs_stamp = None
        if popped is not None:
            obs_stamp = popped.stamp
            self.safety.note_input("actions", now, now)
            # Healthy commands are smoothed (control/smoothing.py); a stop never is: the
            # supervisor replaces the command with it below, and the limiter starts from it.
            command = self.limiter.limit(self._to_command(popped.action), now, self._measured_motion())
        elif not from_result and self._last_obs_stamp is not None:
            # Waiting for a late chunk: ease the last commands' acceleration out. Left alone,
            # the robot holds the last command and ends a ramp at once; eased, that hold comes
            # at most |acceleration| / jerk later (0.25 s for a car braking at 3 m/s^2, 12 m/s^3).
            command = self.limiter.coast(now)
            if command is not None:
                obs_stamp = self._last_obs_stamp
                self.stats["eased"] += 1
        out, faults = self.safety.filter(now, command)
        if out is not None and faults:
            self.limiter.reset(out, now, self._measured_motion())
        elif out is not None:
            self.limiter.record(out, now)
        warning, info, changed = self._fault_log(faults, now)
        if out is None or (not faults and obs_stamp is None):
            # publish nothing: quiet after a stop, or healthy without an action (e.g. waiting
            # for the first chunk)
            return Step(rephase_s=rephase_s, log_warning=warning, log_info=info, faults_changed=changed)
        if faults:
            obs_stamp = None  # a stop answers no observation
            self.stats["stop_ticks"] += 1
        self.stats["commands"] += 1
        header = None
        if obs_stamp is not None:
            header, arrived = self._frames.get(obs_stamp, (None, None))
            if arrived is not None and obs_stamp != self._last_obs_stamp:
                self.node_latencies.append(arrived_now - arrived)
            self._last_obs_stamp = obs_stamp
        return Step(out, obs_stamp, header, rephase_s, warning, info, changed)

    def _measured_motion(self) -> np.ndarray | None:
        """The robot's motion in command units, where the limiter starts before anything went
        out: an arm's end-effector velocity (proprio[3:6], the layout roll_forward assumes), a
        vehicle's odometry [speed, yaw rate]; none for joints."""
        if self.config.kind == "arm":
            return self._proprio[3:6].astype(np.float64)
        if self.config.kind == "vehicle":
            return np.array([self._speed, self._yaw_rate])
        return None

    def _to_command(self, action: np.ndarray) -> np.ndarray:
        """A chunk row -> the command: scaled (control/commands.py), or for a target backend
        servoed toward the base-frame setpoint / [steer, desired speed] pursued."""
        ctl, arm = self.controllers, self.config.kind == "arm"
        if self.config.kind == "joints":
            return ctl.joint_scale.to_command(action)
        if not self.outputs_targets:
            return ctl.arm_scale.to_command(action) if arm else \
                ctl.vehicle_scale.to_command(action, self._speed)
        if arm:
            return ctl.arm_servo.velocity(action, self._proprio[:3].copy())
        return ctl.pursuit.command(action, self._speed)

    def _fault_log(self, faults: dict, now: float) -> tuple[str | None, str | None, bool]:
        """(warning, info to log, whether the faults changed): at once when the set of active
        faults changes; else at most every FAULT_LOG_PERIOD_S."""
        changed = set(faults) != set(self._last_faults)
        warning = info = None
        if changed or (faults and now - self._fault_logged_at >= FAULT_LOG_PERIOD_S):
            if faults:
                warning = f"safety stop: {faults}"
            elif changed:
                info = "safety: all clear"
            self._fault_logged_at = now
        self._last_faults = faults
        return warning, info, changed
