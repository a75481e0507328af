"""PolicyLoop on a fake clock: the policy node's decisions without rclpy (control/policy_loop.py).
When a chunk is asked for, which depth and joint state go with a frame, the task's reference
frame, results (late, superseded, failed, no target), re-phasing, target chunking, stale
input, clock trust, the e-stop latch and live reconfiguration. The node's ROS wiring (topics,
QoS, parameters, the worker thread, publishing) is tested over DDS in tests/test_policy_node.py."""

import numpy as np
import pytest

from embodied_stack.control.policy_loop import (
    FAULT_LOG_PERIOD_S,
    INSTRUCTION_GRACE_S,
    PHASE_OFFSET,
    PolicyLoop,
    PolicyLoopConfig,
)
from embodied_stack.control.target_control import transform_to_list
from embodied_stack.models.policy.interface import Action

RATE = 20.0
PERIOD = 1.0 / RATE
#: 4 actions [0.4, 0, 0]: 0.1 m/s along x at the default max_ee_speed 0.25
CHUNK = np.tile([0.4, 0.0, 0.0], (4, 1))


class Rig:
    """A PolicyLoop on a fake clock: `t` is both the node's clock and the arrival clock (on a
    robot they differ in origin only; with sim time, in rate too, which no rule here mixes)."""

    def __init__(self, instruction="touch the red cube", outputs_targets=False, **settings):
        self.t = 100.0
        self.loop = PolicyLoop(PolicyLoopConfig(**{"control_rate_hz": RATE, **settings}), self.t,
                               outputs_targets)
        if instruction:
            self.loop.on_instruction(instruction, self.t)

    def at(self, dt):
        self.t += dt
        return self

    def inputs(self, stamp, value=1.0, shape=(8, 8)):
        """The depth image and joint state of the instant `stamp` (proprio[0] = value)."""
        assert self.loop.on_depth(np.full(shape, value, np.float32), stamp, self.t, self.t) is None
        proprio = np.zeros(8, np.float32)
        proprio[0] = value
        assert self.loop.on_proprio(proprio, stamp, self.t, self.t) is None

    def rgb(self, stamp=None, value=100, shape=(8, 8)):
        image = np.full((*shape, 3), value, np.uint8)
        return self.loop.on_rgb(image, self.t if stamp is None else stamp, self.t, self.t, "cam")

    def frame(self, value=100, depth=1.0):
        """One instant's inputs, depth and joint state first (as the sim bridge sends them);
        returns the request the loop formed, if any."""
        stamp = self.t
        self.inputs(stamp, depth)
        assert self.rgb(stamp, value) is None
        return self.loop.take_request()

    def answer(self, request, chunk=CHUNK, latency=0.01, error=None, **fields):
        """The backend answers `request` after `latency` s."""
        self.t += latency
        action = None
        if error is None:
            action = Action(chunk=np.asarray(chunk, np.float32), stamp=request.observation.stamp,
                            **fields)
            self.loop.build_chunk(request, action)
        return self.loop.finish_request(request, action, error, self.t, self.t)

    def tick(self, dt=PERIOD):
        self.t += dt
        return self.loop.control_step(self.t, self.t)

    @property
    def stats(self):
        return self.loop.stats


def moving(step):
    return step.command is not None and np.any(step.command)


# ------------------------------------------------------------------ when to ask
def test_asks_at_the_first_frame_and_again_when_refill_at_actions_remain():
    rig = Rig()
    request = rig.frame()
    assert request is not None and request.observation.instruction == "touch the red cube"
    assert rig.at(0.005).frame() is None  # one request in flight at a time
    step = rig.answer(request)
    np.testing.assert_allclose(step.command, [0.1, 0.0, 0.0])  # the first action, at once
    assert step.answers == request.observation.stamp
    assert rig.at(0.005).frame() is None  # 3 actions left > refill_at 1
    assert moving(rig.tick()) and moving(rig.tick())  # 1 left
    assert rig.at(0.005).frame() is not None  # refill now


def test_no_request_without_an_instruction():
    rig = Rig(instruction=None)
    assert rig.frame() is None
    rig.loop.on_instruction("touch the red cube", rig.t)
    assert rig.at(0.01).frame() is not None


@pytest.mark.parametrize("waited,asked", [(0.1, True), (0.15, False)])
def test_no_inference_on_a_frame_that_has_used_half_its_deadline(waited, asked):
    """A frame that waited half the deadline (0.3 s) before inference could start is not
    asked about: its answer would come late. When the camera then stops, the backend is left
    alone instead of answering the last frame again and again too late."""
    rig = Rig(deadline_s=0.3)
    request = rig.frame()
    rig.at(0.01).frame()  # comes while the request is in flight
    rig.answer(request, chunk=CHUNK[:1], latency=waited)  # the queue runs dry: ask again
    requests = []
    for _ in range(10):  # the camera is silent
        rig.tick()
        requests.append(rig.loop.take_request())
    assert (requests[0] is not None) == asked and not any(requests[1:])


def test_a_frame_from_before_the_instruction_waits_unless_it_came_within_the_grace():
    """Camera and instruction come on different topics, which DDS does not order: a frame
    that arrived a few ms before the instruction (a simulator's reset frame) starts the new
    task; one that arrived long before is the old scene, and the loop waits for a new one."""
    rig = Rig(instruction=None)
    rig.frame(value=77)
    rig.at(0.01).loop.on_instruction("touch the blue cube", rig.t)
    rig.tick()
    assert rig.loop.take_request() is None
    rig = Rig(instruction=None)
    rig.frame(value=33)
    rig.at(INSTRUCTION_GRACE_S * 0.6).loop.on_instruction("touch the red cube", rig.t)
    rig.tick(0.0)
    request = rig.loop.take_request()
    assert request is not None and int(request.observation.rgb[0, 0, 0]) == 33
    assert request.observation.instruction == "touch the red cube"


def test_timer_ticks_skip_a_frame_older_than_half_a_period_while_actions_remain():
    """Asking on a frame that arrived more than half a control period ago would answer it a
    period late while a fresher one is due: a tick does that only once the queue is empty."""
    rig = Rig(refill_at=3, deadline_s=1.0)
    request = rig.frame()
    rig.at(0.001).frame()  # comes while the request is in flight
    rig.answer(request, latency=0.03)  # 3 actions left: a refill is wanted
    asked = []
    for _ in range(4):
        rig.tick()
        asked.append(rig.loop.take_request() is not None)
    assert asked == [False, False, False, True]


# ------------------------------------------------------------------ pairing by stamp
def test_a_frame_waits_for_the_depth_and_joint_state_of_its_own_instant():
    """DDS orders nothing between topics: when the colour image comes first, the loop waits
    for the depth image and joint state stamped with it instead of pairing the frame with the
    previous instant's."""
    rig = Rig()
    rig.inputs(rig.t, value=1.0)
    rig.at(0.05)
    stamp = rig.t
    assert rig.rgb(stamp, value=20) is None
    assert rig.loop.take_request() is None  # ("wait": its depth may still come)
    depth = np.full((8, 8), 2.0, np.float32)
    assert rig.at(0.005).loop.on_depth(depth, stamp, rig.t, rig.t) is None  # its depth ...
    assert rig.loop.take_request() is None  # ... and still its joint state to wait for
    proprio = np.zeros(8, np.float32)
    proprio[0] = 2.0
    assert rig.loop.on_proprio(proprio, stamp, rig.t, rig.t) is None  # the frame may go now
    request = rig.loop.take_request()
    assert request is not None and float(request.observation.depth[0, 0]) == 2.0
    assert float(request.observation.proprio[0]) == 2.0 and rig.stats["sync_closest_depth"] == 0


def test_a_vehicle_frame_waits_for_its_odometry_so_the_command_uses_its_speed():
    """A vehicle's command turns the chunk's acceleration into a speed from the odometry. When
    the image (and depth, joint state) came before the odometry of its instant, the loop
    waits for it: the command then starts from that instant's speed, as the base applies it,
    not from the instant before's (which gave the car another acceleration)."""
    rig = Rig(embodiment="vehicle")
    assert rig.loop.on_speed(5.0, rig.t, rig.t, rig.t) is None
    rig.at(0.1)
    stamp = rig.t
    rig.inputs(stamp)
    assert rig.rgb(stamp) is None
    assert rig.loop.take_request() is None  # ("wait": its odometry may still come)
    assert rig.at(0.005).loop.on_speed(6.0, stamp, rig.t, rig.t) is None
    request = rig.loop.take_request()
    assert request is not None and request.speed == 6.0
    step = rig.answer(request, chunk=np.tile([0.0, 1.0], (4, 1)))  # full acceleration
    v = step.command[0]
    assert v == pytest.approx(6.0 + rig.loop.config.max_accel * PERIOD, rel=1e-3)


def test_a_sample_outside_the_tolerance_is_used_once_a_later_one_shows_none_will_come():
    rig = Rig(sync_tolerance_s=0.02)
    stamp = rig.t
    rig.at(0.03).inputs(rig.t, value=3.0)  # stamped 30 ms after the frame
    assert rig.rgb(stamp) is None
    request = rig.loop.take_request()
    assert request is not None and float(request.observation.depth[0, 0]) == 3.0
    assert rig.stats["sync_closest_depth"] == 1 and rig.stats["sync_closest_proprio"] == 1


def test_the_next_instants_depth_does_not_start_inference_on_the_frame_before_it():
    """Only inputs the newest frame waits for may ask: a frame passed over (here: one that
    came while 3 actions were queued) waits for the next frame or tick, never for the depth
    image of the next instant, which would start an inference on it."""
    rig = Rig()
    rig.answer(rig.frame())
    assert rig.at(0.01).frame() is None  # 3 queued: passed over
    rig.tick()
    rig.tick()  # 1 left: a refill is wanted
    rig.inputs(rig.t + 0.001)  # the next instant's depth and joint state
    assert rig.loop.take_request() is None
    rig.rgb(rig.t + 0.001, value=42)  # ... and its colour image: that frame is asked about
    assert int(rig.loop.take_request().observation.rgb[0, 0, 0]) == 42


def test_without_depth_or_proprio_the_frame_goes_alone():
    rig = Rig(use_depth=False, require_proprio=False)
    assert rig.rgb() is None
    request = rig.loop.take_request()
    assert request is not None and request.observation.depth is None


def test_depth_of_another_size_than_the_image_is_not_fed():
    rig = Rig()
    rig.inputs(rig.t, shape=(4, 4))
    rig.rgb(rig.t, shape=(8, 8))
    assert rig.loop.take_request().observation.depth is None


# ------------------------------------------------------------------ the reference frame
def test_the_reference_frame_is_the_first_frame_used_after_each_instruction():
    """Every later observation carries the frame its task started from; an instruction message
    starts a new task even with the same text (the next episode in simulation)."""
    rig = Rig()
    first = rig.frame(value=10)
    assert int(first.observation.reference_rgb[0, 0, 0]) == 10
    rig.answer(first, chunk=CHUNK[:1])
    second = rig.at(0.01).frame(value=50)
    assert int(second.observation.reference_rgb[0, 0, 0]) == 10  # never replaced mid-task
    rig.answer(second, chunk=CHUNK[:1])
    rig.at(0.01).loop.on_instruction("touch the red cube", rig.t)  # the same text again
    third = rig.at(0.01).frame(value=90)
    assert int(third.observation.reference_rgb[0, 0, 0]) == 90
    rig.answer(third, chunk=CHUNK[:1])
    assert int(rig.at(0.01).frame(value=60).observation.reference_rgb[0, 0, 0]) == 90


# ------------------------------------------------------------------ results
def test_a_result_of_an_older_instruction_is_never_executed():
    rig = Rig()
    request = rig.frame()
    rig.at(0.01).loop.on_instruction("touch the blue cube", rig.t)
    step = rig.answer(request)
    assert step.command is None and rig.stats["superseded"] == 1
    assert not rig.loop.scheduler.chunks


def test_a_late_result_is_dropped_and_the_robot_stops():
    rig = Rig(deadline_s=0.3)
    step = rig.answer(rig.frame(), latency=0.45)
    assert rig.stats["dropped_stale"] == 1 and step.command is None  # never the late chunk
    stop = rig.tick(0.0)
    assert stop.command is not None and not np.any(stop.command) and stop.faults_changed
    assert "after its observation" in rig.loop.diagnostics().values["fault.deadline"]
    request = rig.at(0.01).frame()  # a result within the deadline clears the fault and runs
    step = rig.answer(request, latency=0.05)  # (delay_aware, planning for the late one's
    assert moving(step) or any(moving(rig.tick()) for _ in range(6))  # latency: from its origin)
    assert "fault.deadline" not in rig.loop.diagnostics().values


def test_a_slow_answer_skips_the_actions_whose_time_has_passed():
    rig = Rig()
    request = rig.frame()
    chunk = np.array([[0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0], [0.4, 0, 0]])
    step = rig.answer(request, chunk=chunk, latency=0.11)  # 2 periods old
    np.testing.assert_allclose(step.command, [0.3 * 0.25, 0, 0])


def test_a_backend_exception_stops_the_robot_and_the_next_answer_recovers():
    rig = Rig()
    rig.answer(rig.frame(), error=RuntimeError("backend exploded"))
    assert rig.stats["backend_errors"] == 1
    step = rig.tick(0.0)
    assert not moving(step) and step.faults_changed
    assert "backend exploded" in step.log_warning
    assert rig.loop.diagnostics().values["fault.backend"] == "RuntimeError: backend exploded"
    request = rig.at(0.01).frame()
    assert moving(rig.answer(request))
    assert "fault.backend" not in rig.loop.diagnostics().values


def test_a_worker_failure_stops_safely_until_the_next_answer():
    rig = Rig()
    rig.answer(rig.frame())
    rig.loop.worker_failed("TypeError: a bug")
    step = rig.tick()
    assert not moving(step) and rig.stats["worker_errors"] == 1
    assert not rig.loop.scheduler.chunks
    assert rig.loop.diagnostics().values["fault.worker"] == "TypeError: a bug"
    first = rig.answer(rig.at(0.01).frame())
    assert not moving(first)  # the fault holds through the step that answers it ...
    assert moving(rig.tick())  # ... and is cleared after it
    assert "fault.worker" not in rig.loop.diagnostics().values


def test_execute_steps_cuts_each_chunk():
    rig = Rig(execute_steps=1)
    assert moving(rig.answer(rig.frame()))
    assert rig.tick().command is None and rig.loop.scheduler.remaining(rig.t) == 0


# ------------------------------------------------------------------ re-phasing the ticks
@pytest.mark.parametrize("latency", [0.004, 0.02, 0.04, 0.12])
def test_a_fresh_chunk_rephases_the_ticks_to_its_frame(latency):
    """The chunk's next action goes out mid-way between the robot's control steps (1 +
    PHASE_OFFSET periods after its frame's stamp, or after the step a late answer starts at),
    whatever phase the timer had."""
    rig = Rig()
    request = rig.frame()
    step = rig.answer(request, latency=latency)
    into_step = latency - np.floor(latency / PERIOD + 1e-6) * PERIOD  # (latency: the frame's age)
    want = max(PHASE_OFFSET * PERIOD - into_step, 0.05 * PERIOD)
    assert step.rephase_s == pytest.approx(want)
    assert rig.stats["actions_on_result"] == 1
    assert rig.tick().rephase_s is None  # ticks keep the phase


def test_no_rephase_when_the_answer_brings_no_action():
    rig = Rig()
    request = rig.frame()
    rig.at(0.01).loop.on_instruction("another task", rig.t)
    assert rig.answer(request).rephase_s is None


# ------------------------------------------------------------------ target / plan backends
def _target_rig(**settings):
    rig = Rig(outputs_targets=True, **settings)
    return rig, rig.frame()


def test_an_arm_target_needs_camera_to_base_else_the_robot_stops_with_the_reason():
    rig, request = _target_rig()
    step = rig.answer(request, target_point=np.array([0.0, 0.0, 0.5]))
    assert step.command is None and rig.stats["no_target"] == 1
    assert step.answer is not None  # (its target point is still published)
    assert not moving(rig.tick(0.0))
    assert "camera_to_base not set" in rig.loop.diagnostics().values["fault.target"]


def test_an_arm_target_is_moved_to_the_base_frame_and_servoed_to():
    T = np.eye(4)
    T[:3, 3] = [1.0, 0.0, 0.0]  # the camera 1 m along the base's x, not rotated
    rig, request = _target_rig(camera_to_base=transform_to_list(T))
    action_extras = {}
    step = rig.answer(request, target_point=np.array([0.0, 0.0, 0.5]), extras=action_extras)
    np.testing.assert_allclose(action_extras["target_base"], [1.0, 0.0, 0.5])
    assert action_extras["frame_id"] == "cam"
    assert step.answer is not None and rig.stats["chunks"] == 1
    # the end effector (proprio[0:3], base frame) is at (1, 0, 0): up toward the target,
    # at 2 m/s per m of distance capped at max_ee_speed
    np.testing.assert_allclose(step.command, [0.0, 0.0, 0.25])
    assert len(rig.loop.scheduler.chunks[-1].actions) == int(np.ceil(3.0 * RATE))  # plan_horizon_s


def test_a_vehicle_follows_the_plan_by_pure_pursuit():
    rig, request = _target_rig(embodiment="vehicle", plan_horizon_s=1.0)
    assert rig.loop.on_speed(5.0, rig.t, rig.t, rig.t) is None
    plan = np.array([[2.5 * k, 0.0] for k in range(1, 9)])  # straight on at 5 m/s
    step = rig.answer(request, chunk=np.zeros((4, 2)), plan=plan)
    v, omega = step.command
    assert v == pytest.approx(5.0, abs=0.3) and omega == pytest.approx(0.0, abs=1e-6)
    assert step.answer.plan is plan  # published by the node


def test_no_target_stops_the_robot_and_says_why():
    rig, request = _target_rig(embodiment="vehicle")
    step = rig.answer(request, chunk=np.zeros((4, 2)), extras={"reason": "no valid depth"})
    assert step.command is None and not rig.loop.scheduler.chunks
    assert not moving(rig.tick(0.0))
    assert rig.loop.diagnostics().values["fault.target"] == "no valid depth"


# ------------------------------------------------------------------ safety
def test_a_stale_camera_stops_the_robot_within_stale_after_s():
    rig = Rig(stale_after_s=0.5)
    rig.answer(rig.frame(), chunk=np.tile([0.4, 0, 0], (40, 1)))  # 2 s of actions
    last_frame = rig.t
    steps = [(rig.t - last_frame, rig.tick()) for _ in range(20)]
    stops = [dt for dt, s in steps if s.command is not None and not np.any(s.command)]
    assert stops and min(stops) <= 0.5 + PERIOD
    assert all(not moving(s) for dt, s in steps if dt > 0.5 + PERIOD)
    assert "fault.stale:camera" in rig.loop.diagnostics().values


def test_stale_proprio_stops_the_robot_when_required():
    rig = Rig()
    rig.answer(rig.frame(), chunk=np.tile([0.4, 0, 0], (40, 1)))
    for _ in range(12):  # the camera goes on; the arm driver is silent
        rig.at(PERIOD).rgb()
        step = rig.loop.control_step(rig.t, rig.t)
    assert not moving(step)
    assert "fault.stale:joint_states" in rig.loop.diagnostics().values


@pytest.mark.parametrize("offset_s,words", [(60.0, "ahead"), (-2.0, "past")])
def test_inputs_stamped_off_the_clock_are_refused_and_do_not_refresh(offset_s, words):
    rig = Rig()
    rig.answer(rig.frame(), chunk=np.tile([0.4, 0, 0], (40, 1)))
    for _ in range(12):
        reason = rig.at(PERIOD).rgb(stamp=rig.t + offset_s)
        assert reason is not None and words in reason
        step = rig.loop.control_step(rig.t, rig.t)
    assert not moving(step) and "fault.stale:camera" in rig.loop.diagnostics().values


def test_the_estop_latches_until_released():
    rig = Rig()
    rig.answer(rig.frame(), chunk=np.tile([0.4, 0, 0], (40, 1)))
    rig.loop.on_estop(True)
    assert not rig.loop.scheduler.chunks
    for _ in range(5):  # fresh frames and answers keep coming: the stop holds anyway
        request = rig.at(0.01).frame()
        step = rig.answer(request) if request else rig.tick()
        assert not moving(step)
    assert rig.loop.diagnostics().values["fault.estop"] == "e-stop engaged"
    rig.loop.on_estop(False)
    request = rig.at(0.01).frame()
    assert moving(rig.answer(request) if request else rig.tick())


def test_no_request_until_the_instruction_is_grounded_then_the_task_starts():
    rig = Rig(instruction=None)
    rig.loop.on_instruction("tap the crimson block", rig.t, grounding_pending=True)
    assert rig.frame() is None and rig.tick().command is None  # waiting for the verdict
    assert rig.loop.diagnostics().values["instruction_grounding"] == "pending"
    assert not rig.loop.on_grounding("some older text", True, "grounded")  # not this one: ignored
    assert rig.loop.on_grounding("tap the crimson block", True, "grounded as 'touch the red cube'")
    request = rig.at(0.01).frame()
    assert request is not None and request.observation.instruction == "tap the crimson block"
    assert moving(rig.answer(request))
    assert rig.loop.diagnostics().values["instruction_grounding"] == "grounded as 'touch the red cube'"


def test_an_ungrounded_instruction_stops_the_robot_with_the_reason_until_the_next():
    rig = Rig()
    rig.answer(rig.frame(), chunk=np.tile([0.4, 0, 0], (40, 1)))  # moving on the old task
    rig.loop.on_instruction("make me a coffee", rig.t, grounding_pending=True)
    why = "no known task matches 'make me a coffee'"
    assert rig.loop.on_grounding("make me a coffee", False, why)
    steps = [rig.tick() for _ in range(3)]
    assert steps[0].command is not None and not np.any(steps[0].command)  # a stop goes out
    assert not any(moving(s) for s in steps)
    for _ in range(5):  # fresh frames keep coming: nothing is asked for, nothing moves
        assert rig.at(0.01).frame() is None and not moving(rig.tick())
    report = rig.loop.diagnostics()
    assert report.level == "error" and report.values["fault.instruction"] == why
    assert rig.stats["ungrounded_instructions"] == 1
    rig.loop.on_instruction("touch the red cube", rig.t, grounding_pending=True)
    rig.tick()  # (diagnostics show the faults of the last control step)
    assert "fault.instruction" not in rig.loop.diagnostics().values
    assert rig.loop.on_grounding("touch the red cube", True, "grounded")
    request = rig.at(0.01).frame()
    assert request is not None and moving(rig.answer(request))


def test_a_new_verdict_on_the_current_instruction_stops_or_starts_the_task():
    """The scene changed (InstructionCheck.set_scene grounds the instruction again): its
    object left the view -> a stop with the reason; it came back -> the task goes on; the
    same verdict again changes nothing."""
    rig = Rig(instruction=None)
    rig.loop.on_instruction("touch the red cube", rig.t, grounding_pending=True)
    assert rig.loop.on_grounding("touch the red cube", True, "grounded")
    assert not rig.loop.on_grounding("touch the red cube", True, "grounded")  # nothing new
    request = rig.at(0.01).frame()
    assert request is not None and moving(rig.answer(request, chunk=np.tile([0.4, 0, 0], (40, 1))))
    gone = "'touch the red cube' reads as 'touch the red cube', but nothing in the scene matches it"
    assert rig.loop.on_grounding("touch the red cube", False, gone)
    assert not any(moving(rig.tick()) for _ in range(3))
    assert rig.at(0.01).frame() is None
    assert rig.loop.diagnostics().values["fault.instruction"] == gone
    assert rig.loop.on_grounding("touch the red cube", True, "grounded")
    rig.tick()
    assert "fault.instruction" not in rig.loop.diagnostics().values
    request = rig.at(0.01).frame()
    assert request is not None and moving(rig.answer(request))


def test_a_verdict_on_an_instruction_already_replaced_is_ignored():
    rig = Rig(instruction=None)
    rig.loop.on_instruction("make me a coffee", rig.t, grounding_pending=True)
    rig.loop.on_instruction("touch the red cube", rig.t, grounding_pending=True)
    assert not rig.loop.on_grounding("make me a coffee", False, "no known task")
    assert "fault.instruction" not in rig.loop.diagnostics().values
    assert rig.frame() is None  # still waiting for the verdict on the newest one


def test_a_vehicle_ramps_down_instead_of_stepping_to_zero():
    rig = Rig(embodiment="vehicle")
    rig.loop.on_speed(8.0, rig.t, rig.t, rig.t)
    rig.answer(rig.frame(), chunk=np.tile([0.0, 0.0], (4, 1)))  # hold 8 m/s
    rig.loop.on_estop(True)
    speeds = [rig.tick().command for _ in range(120)]
    speeds = [c[0] for c in speeds if c is not None]
    assert speeds[0] > 7.0 and speeds[-1] == 0.0
    assert all(b <= a + 1e-9 for a, b in zip(speeds, speeds[1:]))


def test_faults_are_logged_when_they_change_and_then_every_few_seconds():
    rig = Rig()
    rig.loop.on_estop(True)
    steps, times = [], []
    for _ in range(int(FAULT_LOG_PERIOD_S * RATE) + 3):  # fresh inputs: only the e-stop
        rig.at(PERIOD).frame()
        steps.append(rig.loop.control_step(rig.t, rig.t))
        times.append(rig.t)
    logged = [k for k, s in enumerate(steps) if s.log_warning]
    assert len(logged) == 2 and logged[0] == 0, logged  # at once, then again ...
    assert times[logged[1]] - times[0] >= FAULT_LOG_PERIOD_S > times[logged[1] - 1] - times[0]
    assert steps[0].faults_changed and not any(s.faults_changed for s in steps[1:])
    assert "e-stop engaged" in steps[0].log_warning and not any(s.log_info for s in steps)
    rig.loop.on_estop(False)
    step = rig.tick(0.0)
    assert step.faults_changed and step.log_info == "safety: all clear" and not step.log_warning


# ------------------------------------------------------------------ configuration
def test_settings_out_of_range_are_refused_with_the_value_and_range():
    with pytest.raises(ValueError, match=r"control_rate_hz=0\.5 outside \[1\.0, 200\.0\]"):
        PolicyLoopConfig(control_rate_hz=0.5)
    with pytest.raises(ValueError, match="embodiment 'boat'"):
        PolicyLoopConfig(embodiment="boat")
    with pytest.raises(ValueError, match="7 finite numbers"):
        PolicyLoopConfig(camera_to_base=[1.0, 2.0])


def test_reconfigure_applies_every_change_or_none():
    rig = Rig()
    with pytest.raises(ValueError, match="deadline_s"):
        rig.loop.reconfigure(control_rate_hz=5.0, deadline_s=-1.0)
    assert rig.loop.config.control_rate_hz == RATE and rig.loop.scheduler.config.rate_hz == RATE
    with pytest.raises(ValueError, match="fixed at start-up"):
        rig.loop.reconfigure(control_rate_hz=5.0, embodiment="vehicle")
    assert rig.loop.config.control_rate_hz == RATE
    rig.loop.reconfigure(control_rate_hz=5.0, max_ee_speed=0.05, max_linear=0.01,
                         stale_after_s=1.5, max_clock_skew_s=0.5, deadline_s=0.05)
    assert rig.loop.scheduler.config.rate_hz == 5.0 and rig.loop.scheduler.config.deadline_s == 0.05
    assert rig.loop.safety.config.stale_after_s == 1.5
    assert rig.loop.safety.config.max_future_s == 0.5
    step = rig.answer(rig.frame(), latency=0.01)
    np.testing.assert_allclose(step.command, [0.01, 0, 0])  # 0.4 x 0.05 = 0.02, clamped to 0.01
    assert rig.at(0.3).rgb(stamp=rig.t + 0.3) is None  # 0.3 s ahead: within the new skew


def test_diagnostics_report_what_the_loop_knows():
    rig = Rig()
    rig.loop.reject("camera/color/image_raw", "image is empty (0x0)")
    request = rig.frame()
    rig.answer(request, latency=0.02, latency_s=0.015)
    report = rig.loop.diagnostics()
    assert report.level == "warn" and report.message == "running"
    v = report.values
    assert v["embodiment"] == "arm" and v["latency_p50_ms"] == "20.00" and v["model_p50_ms"] == "15.00"
    assert v["node_p50_ms"] == "20.00" and v["chunks"] == "1" and v["commands"] == "1"
    assert v["last_observation_stamp"] == f"{request.observation.stamp:.6f}"
    assert v["rejected.camera/color/image_raw"] == "1x, last: image is empty (0x0)"
    assert rig.loop.reject("camera/color/image_raw", "again") == "image is empty (0x0)"
