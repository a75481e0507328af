"""Execution strategies, the output limiter and latency in the loop, on a fake clock
(control/chunk_scheduler.py, control/smoothing.py, control/latency.py), through the policy
loop (control/policy_loop.py), and in the offline rollouts that bench/execution.py measures
(sim/train/rollouts.py). The node's ROS wiring of the same settings is tested over DDS in
tests/test_policy_node.py and tests/test_mimo_graph.py."""

import math

import numpy as np
import pytest

from embodied_stack.control.chunk_scheduler import AUTO_STRATEGY, ChunkScheduler, SchedulerConfig
from embodied_stack.control.commands import ArmScale, VehicleScale
from embodied_stack.control.latency import ORIN_P50_S, ORIN_P99_S, AddedLatency, DelayedPolicy
from embodied_stack.control.policy_loop import PolicyLoop, PolicyLoopConfig
from embodied_stack.control.smoothing import CommandLimiter, LimiterConfig
from embodied_stack.models.policy.interface import Action, Observation, Policy

RATE = 10.0
P = 1.0 / RATE
STRATEGIES = ("replace", "early", "ensemble", "delay_aware")


def ramp(n=4, start=0.0):
    """A chunk whose action k is [start + k, 0, 0]: a command tells which step it came from."""
    return np.array([[start + k, 0.0, 0.0] for k in range(n)])


def drive(strategy, latency_steps, steps=40, deadline_s=1.0, refill_at=1, chunk=4):
    """A frame every period, answers `latency_steps` periods after their frame (one in
    flight), the control decision at every period: (due actions per step, None where
    nothing was due; the chunk serials)."""
    s = ChunkScheduler(SchedulerConfig(rate_hz=RATE, deadline_s=deadline_s, refill_at=refill_at,
                                       strategy=strategy))
    pending, out, serials = [], [], []
    for k in range(steps):
        now = k * P
        for answer in [a for a in pending if a[0] <= k]:
            s.finish(ramp(chunk, 10 * answer[1]), answer[1] * P, answer[2], now, answer[3])
        pending = [a for a in pending if a[0] > k]
        if s.wants_request(now, now):
            pending.append((k + latency_steps, k, s.start_request(now), s.request_origin(now)))
            if latency_steps == 0:
                a = pending.pop()
                s.finish(ramp(chunk, 10 * a[1]), now, a[2], now, a[3])
        due = s.next_action(now, from_result=False)
        out.append(None if due is None else due.action.copy())
        serials.append(None if due is None else due.serial)
    return out, serials


# ------------------------------------------------------------------ strategies
@pytest.mark.parametrize("strategy", ["early", "delay_aware"])
def test_with_a_fast_model_every_strategy_but_ensemble_is_replace(strategy):
    """No latency: the same actions at the same steps as replace (the shipped model's offline
    evaluation is unchanged by the default, `auto`)."""
    base, _ = drive("replace", 0)
    other, _ = drive(strategy, 0)
    assert all(a is not None and np.array_equal(a, b) for a, b in zip(base, other))
    assert [a[0] % 10 for a in base[:7]] == [0, 1, 2, 0, 1, 2, 0]  # 3 actions, then refill


def test_replace_runs_dry_under_latency_and_early_asks_in_time():
    """200 ms at 10 Hz: replace asks when one action is left and the robot then gets nothing
    for a step per chunk; early asks one step sooner and never runs dry. Each executes the
    action for the step it runs at (step k of the chunk asked at step t runs at t + k)."""
    replace, _ = drive("replace", 2)
    early, _ = drive("early", 2)
    assert sum(a is None for a in replace[6:]) >= 8
    assert all(a is not None for a in early[2:])
    for k, a in enumerate(early[2:], start=2):  # chunk of frame t: value 10 t + (k - t)
        t = int(a[0] // 10)
        assert a[0] - 10 * t == k - t


def test_at_400_ms_a_4_action_chunk_is_used_up_on_arrival_unless_moved_on():
    """replace and early get nothing they could execute (every action's step has passed);
    delay_aware moves the answer to the step it lands at and executes it from its first."""
    for strategy in ("replace", "early"):
        out, _ = drive(strategy, 4)
        assert all(a is None for a in out)
    aware, _ = drive("delay_aware", 4)
    assert sum(a is not None for a in aware) >= 25 and aware[8] is not None


def test_delay_aware_starts_the_answer_at_the_step_it_was_planned_for():
    """The latency measured (200 ms), a request made at step t is answered from t + 2 with
    its first action; until then the chunk before plays the steps the request was
    conditioned on (pending_actions), with no gap."""
    s = ChunkScheduler(SchedulerConfig(rate_hz=RATE, deadline_s=1.0, strategy="delay_aware"))
    s.ages.extend([0.2] * 5)
    assert s.lead_steps() == 2 and s.shift_steps() == 2 and s.request_threshold() == 3
    s.finish(ramp(4), 0.0, s.start_request(0.0), now=0.0, origin=0.0)
    assert s.next_action(0.0, False).action[0] == 0
    assert s.wants_request(0.1, 0.1)  # 3 left <= 1 + 2
    pending = s.pending_actions(0.1, s.shift_steps())
    assert [a[0] for a in pending] == [1, 2]
    origin = s.request_origin(0.1)
    assert origin == pytest.approx(0.3)
    epoch = s.start_request(0.1)
    assert s.next_action(0.1, False).action[0] == 1
    assert s.finish(ramp(4, 100), 0.1, epoch, now=0.25, origin=origin)[0] == "queued"
    assert s.next_action(0.25, True).action[0] == 2  # the new one waits for its origin
    assert s.next_action(0.35, False).action[0] == 100  # ... and starts with its first action


def test_delay_aware_never_moves_an_answer_past_its_deadline():
    s = ChunkScheduler(SchedulerConfig(rate_hz=RATE, deadline_s=0.3, strategy="delay_aware"))
    s.ages.extend([0.9] * 5)
    assert s.lead_steps() == 9 and s.shift_steps() == 2  # two actions still inside 0.3 s


def test_the_ensemble_averages_the_chunks_that_cover_a_step():
    s = ChunkScheduler(SchedulerConfig(rate_hz=RATE, deadline_s=1.0, strategy="ensemble",
                                       ensemble_halflife_s=0.1))
    s.finish(ramp(4), 0.0, s.start_request(0.0), now=0.0)
    assert s.wants_request(0.1, 0.1)  # at every new frame while none is in flight
    s.finish(ramp(4, 100), 0.1, s.start_request(0.1), now=0.1)
    due = s.next_action(0.1, True)
    # step 0.1: the first chunk's action 1 (weight 1/2: 0.1 s older), the second's action 0
    assert due.action[0] == pytest.approx((0.5 * 1 + 1.0 * 100) / 1.5)
    assert due.serial == 2
    s.reconfigure(ensemble_halflife_s=0.0)  # the newest alone
    assert s.next_action(0.2, False).action[0] == 101


def test_no_action_is_executed_once_its_observation_is_older_than_the_deadline():
    """A deadline shorter than the chunk cuts it, and the refill is asked for before then."""
    s = ChunkScheduler(SchedulerConfig(rate_hz=RATE, deadline_s=0.25, refill_at=0))
    s.finish(ramp(8), 0.0, s.start_request(0.0), now=0.0)
    assert s.remaining(0.0) == 3  # steps 0, 1, 2 are within 0.25 s
    got = [s.next_action(k * P, False) for k in range(5)]
    assert [g is not None for g in got] == [True, True, True, False, False]
    assert s.wants_request(0.3, 0.3)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("latency_steps", [0, 1, 2, 3, 4])
def test_every_strategy_keeps_commands_inside_the_deadline(strategy, latency_steps):
    s_out, _ = drive(strategy, latency_steps, deadline_s=0.3)
    # value 10 t + j for the chunk of frame t, executed at step k: its age is k - t periods
    for k, a in enumerate(s_out):
        if a is not None and strategy != "ensemble":
            assert k - int(a[0] // 10) <= 3


def test_strategy_settings_are_validated_with_the_value_and_the_choices():
    with pytest.raises(ValueError, match="strategy 'fastest' not in"):
        SchedulerConfig(strategy="fastest")
    with pytest.raises(ValueError, match="execution 'fastest' not in"):
        PolicyLoopConfig(execution="fastest")
    with pytest.raises(ValueError, match="latency_quantile=0.2 outside"):
        PolicyLoopConfig(latency_quantile=0.2)
    assert PolicyLoopConfig(embodiment="arm").strategy == AUTO_STRATEGY["arm"] == "delay_aware"
    assert PolicyLoopConfig(embodiment="vehicle").strategy == AUTO_STRATEGY["vehicle"] == "early"


# ------------------------------------------------------------------ rolling the state forward
def test_the_state_is_rolled_forward_through_the_actions_still_to_run():
    arm = ArmScale(0.25)
    proprio = np.zeros(8, np.float32)
    proprio[6] = 1.0  # contact: kept
    out = arm.roll_forward(proprio, [np.array([1.0, 0, 0]), np.array([1.0, -0.4, 0])], 0.1)
    np.testing.assert_allclose(out[:6], [0.05, -0.01, 0.0, 0.25, -0.1, 0.0], atol=1e-7)
    assert out[6] == 1.0
    car = VehicleScale(0.5, 3.0, 15.0, 2.7, 0.1)
    state = np.array([10.0, 0.0, 0.0, 0.0, 0, 0, 0, 0], np.float32)
    out = car.roll_forward(state, [np.array([0.2, 1.0])] * 2, 0.1)
    assert out[0] == pytest.approx(10.6) and out[1] == pytest.approx(0.1)
    assert out[2] == pytest.approx(10.6 * math.tan(0.1) / 2.7, rel=1e-5) and out[3] == pytest.approx(3.0)


# ------------------------------------------------------------------ the limiter
def test_the_limiter_bounds_acceleration_and_jerk_and_meets_the_target():
    lim = CommandLimiter(LimiterConfig((2.0,), (15.0,), P))
    t, out = 0.0, [np.zeros(1)]
    lim.record(out[-1], t)
    for _ in range(40):  # a step from 0 to 0.25 m/s
        t += P
        c = lim.limit(np.array([0.25]), t)
        lim.record(c, t)
        out.append(c)
    v = np.array([o[0] for o in out])
    a = np.diff(v) / P
    j = np.diff(a) / P
    assert np.all(np.abs(a) <= 2.0 + 1e-9) and np.all(np.abs(j) <= 15.0 + 1e-9)
    assert v[-1] == pytest.approx(0.25) and v.max() <= 0.25 + 1e-3  # no overshoot to speak of
    assert v[4] > 0.2  # not sluggish: most of the way in 0.4 s


def test_a_command_within_half_a_period_replaces_the_one_before():
    lim = CommandLimiter(LimiterConfig((1.0,), (0.0,), P))
    lim.record(np.zeros(1), 0.0)
    lim.record(np.array([0.1]), 0.1)
    # 0.02 s later: limited against what was out before 0.1 (0), not against 0.1
    assert lim.limit(np.array([1.0]), 0.12)[0] == pytest.approx(0.1)
    assert lim.limit(np.array([1.0]), 0.2)[0] == pytest.approx(0.2)


def test_the_limiter_starts_from_the_measured_motion_before_anything_went_out():
    """A vehicle at 6 m/s going straight; the first command wants full steer: limited from the
    measured [speed, yaw rate], not passed as a step; unknown motion passes it as it is."""
    cfg = LimiterConfig((0.0, 2.5), (12.0, 0.0), P)
    lim = CommandLimiter(cfg)
    out = lim.limit(np.array([6.3, 1.3]), 0.0, measured=np.array([6.0, 0.0]))
    assert out[1] == pytest.approx(2.5 * P)  # the yaw rate's change limit, from 0
    assert out[0] == pytest.approx(6.0 + 12.0 * P * P)  # the speed's jerk limit, from no acceleration
    np.testing.assert_allclose(CommandLimiter(cfg).limit(np.array([6.3, 1.3]), 0.0), [6.3, 1.3])
    lim.record(out, 0.0)  # once a command went out, the measured motion is not used
    assert lim.limit(np.array([6.3, 1.3]), P, measured=np.array([0.0, 0.0]))[1] == pytest.approx(2 * 2.5 * P)


def test_the_limiter_follows_a_ramp_without_falling_behind():
    """A chunk that brakes at 3 m/s^2: the output brakes with it once the jerk limit allows.
    Braked against a fixed target instead, sqrt(2 * 12 * 0.3) = 2.68 m/s^2 would cap it and the
    output would fall further behind every period (the car that braked too late)."""
    lim = CommandLimiter(LimiterConfig((0.0,), (12.0,), P))
    lim.record(np.array([8.0]), 0.0)
    wanted, out = 8.0, []
    for k in range(1, 21):
        wanted -= 3.0 * P
        out.append(lim.limit(np.array([wanted]), k * P)[0])
        lim.record(np.array([out[-1]]), k * P)
    lag = np.array([8.0 - 3.0 * P * k for k in range(1, 21)]) - np.array(out)
    assert np.all(np.abs(np.diff(np.diff([8.0, *out]))) / P**2 <= 12.0 + 1e-6)
    assert np.max(np.abs(lag[5:])) < 1e-6  # caught up within 0.5 s, and stays caught up


def test_after_a_stop_the_limiter_starts_from_the_measured_braking():
    """A car braking at 3 m/s^2 from a stop (its speed measured each tick) gets a healthy
    command again: the limiter eases the braking out, not a step from -3 m/s^2 to speeding up."""
    lim = CommandLimiter(LimiterConfig((0.0, 2.5), (12.0, 0.0), P))
    lim.record(np.array([8.0, 0.0]), 0.0)
    speed = 8.0
    for k in (1, 2, 3):  # stops: the robot brakes and its odometry says so
        lim.reset(np.zeros(2), k * P, measured=np.array([speed, 0.0]))
        speed -= 3.0 * P
    out = lim.limit(np.array([speed + 0.3, 0.0]), 4 * P, measured=np.array([speed, 0.0]))
    accel = (out[0] - speed) / P
    assert accel == pytest.approx(-3.0 + 12.0 * P)  # from the measured -3 m/s^2, one jerk step
    # not knowing the motion, it starts from the stop at rest (an arm's stop)
    lim = CommandLimiter(LimiterConfig((1.0,), (10.0,), P))
    lim.record(np.array([1.0]), 0.0)
    lim.reset(np.zeros(1), P)
    assert lim.limit(np.array([1.0]), 2 * P)[0] == pytest.approx(10.0 * P * P)


def test_coasting_eases_the_acceleration_out_at_the_jerk_limit_and_never_reverses():
    lim = CommandLimiter(LimiterConfig((0.0,), (12.0,), P))
    lim.record(np.array([2.0]), 0.0)
    lim.record(np.array([1.7]), P)  # braking at 3 m/s^2 when the chunk runs out
    v, t = [1.7], P
    while (c := lim.coast(t + P)) is not None:
        t += P
        lim.record(c, t)
        v.append(c[0])
    accel = np.diff([2.0, *v]) / P
    np.testing.assert_allclose(accel, [-3.0, -1.8, -0.6])  # eased out: 12 m/s^3, then held
    lim.record(np.array([0.25]), t + P)
    lim.record(np.array([0.05]), t + 2 * P)  # -2 m/s^2 would take it to -0.03
    assert lim.coast(t + 3 * P)[0] == 0.0  # to a stop, never into reverse
    assert CommandLimiter(LimiterConfig((1.0,), (0.0,), P)).coast(0.0) is None  # no jerk limit: hold
    lim = CommandLimiter(LimiterConfig((0.0,), (12.0,), P))
    lim.record(np.array([2.0]), 0.0)
    lim.reset(np.zeros(1), P)
    assert lim.coast(2 * P) is None  # nothing to ease after a stop


def test_the_loop_eases_out_while_it_waits_for_a_late_chunk():
    """A car braking at 3 m/s^2 through its chunk; the next chunk is late: the loop sends the
    commands that ease the braking out at the jerk limit (answering the last observation),
    then nothing (the robot holds the last one)."""
    rig = LoopRig(embodiment="vehicle", limit_jerk=12.0, execution="replace")
    rig.loop.on_instruction("stop behind the car", rig.t)
    speed = 8.0
    assert rig.loop.on_speed(speed, rig.t, rig.t, rig.t) is None
    request = rig.frame()
    steps = [rig.answer(request, np.tile([0.0, -1.0], (4, 1)))]  # full braking
    for _ in range(8):
        speed = steps[-1].command[0] if steps[-1].command is not None else speed
        rig.t += P
        assert rig.loop.on_speed(speed, rig.t, rig.t, rig.t) is None
        rig.frame()  # (fresh inputs; the requests stay unanswered: late)
        steps.append(rig.loop.control_step(rig.t, rig.t))
    sent = [s for s in steps if s.command is not None]
    accel = np.diff([8.0, *(s.command[0] for s in sent)]) / P
    np.testing.assert_allclose(accel, [-1.2, -2.4, -3.0, -3.0, -1.8, -0.6], atol=1e-6)
    assert rig.loop.stats["eased"] == 2
    assert all(s.answers == request.observation.stamp for s in sent)
    assert steps[-1].command is None  # then quiet: the robot holds the last command


def test_the_loop_limits_a_vehicles_first_command_from_its_odometry():
    rig = LoopRig(embodiment="vehicle", limit_angular_accel=2.5)
    for turning in (0.0, 0.4):
        rig.t += 1.0
        rig.loop = PolicyLoop(rig.loop.config, rig.t)
        rig.loop.on_instruction("change to the left lane", rig.t)
        assert rig.loop.on_speed(8.0, rig.t, rig.t, rig.t, yaw_rate=turning) is None
        step = rig.answer(rig.frame(), np.tile([1.0, 0.0], (4, 1)))  # full left steer
        assert step.command is not None and step.command[1] == pytest.approx(turning + 2.5 * P)


def test_limits_are_validated_and_off_by_default():
    with pytest.raises(ValueError, match="must be >= 0"):
        LimiterConfig((-1.0,), (0.0,), P)
    assert not PolicyLoopConfig().limiter_config().active
    assert PolicyLoopConfig(embodiment="vehicle", limit_jerk=10.0).limiter_config().jerk == (10.0, 0.0)


class LoopRig:
    """A PolicyLoop on a fake clock with one colour frame, depth and joint state per period."""

    def __init__(self, **settings):
        self.t = 100.0
        self.loop = PolicyLoop(PolicyLoopConfig(**{"control_rate_hz": RATE, **settings}), self.t)
        self.loop.on_instruction("touch the red cube", self.t)

    def frame(self):
        assert self.loop.on_depth(np.ones((8, 8), np.float32), self.t, self.t, self.t) is None
        assert self.loop.on_proprio(np.zeros(8, np.float32), self.t, self.t, self.t) is None
        assert self.loop.on_rgb(np.full((8, 8, 3), 9, np.uint8), self.t, self.t, self.t) is None
        return self.loop.take_request()

    def answer(self, request, chunk):
        action = Action(chunk=np.asarray(chunk, np.float32), stamp=request.observation.stamp)
        self.loop.build_chunk(request, action)
        return self.loop.finish_request(request, action, None, self.t, self.t)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_stop_bypasses_the_limiter_and_is_immediate_under_every_strategy(strategy):
    """Full speed, limited; then e-stop: the very next command is zero (an arm stops at
    once), never a ramp; released, the robot starts again from the stop, limited."""
    rig = LoopRig(execution=strategy, limit_accel=1.0, limit_jerk=10.0)
    full = np.tile([1.0, 0, 0], (4, 1))
    rig.answer(rig.frame(), full)  # (then at rest: a stop went out)
    rig.loop.on_estop(True)
    assert not np.any(rig.loop.control_step(rig.t, rig.t).command)
    rig.loop.on_estop(False)
    rig.t += P
    commands = []
    for _ in range(8):
        request = rig.frame()
        step = rig.answer(request, full) if request else None
        rig.t += 0.5 * P
        tick = rig.loop.control_step(rig.t, rig.t)
        commands += [c.command[0] for c in (step, tick) if c is not None and c.command is not None]
        rig.t += 0.5 * P
    assert 0 < commands[0] < 0.25 and max(commands) <= 0.25 + 1e-9
    assert np.all(np.diff(commands) / P <= 1.0 + 1e-6)  # the acceleration limit held
    moving = commands[-1]
    assert moving > 0.2
    rig.loop.on_estop(True)
    stop = rig.loop.control_step(rig.t, rig.t)
    assert stop.command is not None and np.all(stop.command == 0.0)  # at once
    rig.loop.on_estop(False)
    rig.t += P
    request = rig.frame()
    step = rig.answer(request, full)
    assert step.command is not None and 0 < step.command[0] <= 1.0 * P + 1e-9  # from the stop


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_stale_camera_stops_the_robot_at_once_with_the_limiter_on(strategy):
    rig = LoopRig(execution=strategy, limit_accel=0.5, limit_jerk=5.0, stale_after_s=0.3)
    request = rig.frame()
    rig.answer(request, np.tile([1.0, 0, 0], (4, 1)))
    outs = []
    for _ in range(8):  # the camera is silent
        rig.t += P
        outs.append(rig.loop.control_step(rig.t, rig.t).command)
    first_stop = next(k for k, c in enumerate(outs) if c is not None and not np.any(c))
    assert all(c is None or np.any(c) for c in outs[:first_stop])
    assert first_stop <= 3 and all(c is None or not np.any(c) for c in outs[first_stop:])


def test_the_strategy_changes_at_run_time():
    rig = LoopRig(execution="replace")
    rig.loop.reconfigure(execution="ensemble", ensemble_halflife_s=0.0)
    assert rig.loop.scheduler.config.strategy == "ensemble"
    assert rig.loop.diagnostics().values["execution"] == "ensemble"
    with pytest.raises(ValueError, match="execution 'fast'"):
        rig.loop.reconfigure(execution="fast")
    assert rig.loop.config.execution == "ensemble"


# ------------------------------------------------------------------ latency in the loop
def test_added_latency_parses_and_draws_the_published_orin_figures():
    assert AddedLatency.parse("") == AddedLatency() and AddedLatency.parse("0.2") == AddedLatency(0.2, 0.2)
    assert AddedLatency.parse("lognormal") == AddedLatency(ORIN_P50_S, ORIN_P99_S)
    assert AddedLatency.parse("lognormal:0.1:0.3") == AddedLatency(0.1, 0.3)
    for bad in ("fast", "lognormal:0.3:0.1", "-1"):
        with pytest.raises(ValueError, match="added latency"):
            AddedLatency.parse(bad)
    draws = np.array([AddedLatency.parse("lognormal").sample(np.random.default_rng(k)) for k in range(20000)])
    assert np.quantile(draws, 0.5) == pytest.approx(ORIN_P50_S, rel=0.03)
    assert np.quantile(draws, 0.99) == pytest.approx(ORIN_P99_S, rel=0.08)


class Echo(Policy):
    submodel_names = ["full", "1/2"]

    def select_action(self, observation):
        return Action(chunk=np.zeros((4, 3), np.float32), stamp=observation.stamp)


def test_a_delayed_policy_answers_after_the_drawn_latency():
    slept = []
    policy = DelayedPolicy(Echo(), AddedLatency(0.2, 0.2), sleep=slept.append)
    obs = Observation(rgb=np.zeros((8, 8, 3), np.uint8), instruction="x", proprio=np.zeros(8, np.float32), stamp=3.0)
    assert policy.select_action(obs).stamp == 3.0 and slept == [0.2]
    assert policy.submodel_names == ["full", "1/2"] and "200 ms added" in policy.runtime_description


# ------------------------------------------------------------------ the offline rollouts
@pytest.fixture(scope="module")
def model():
    from embodied_stack.models.policy import load_default_policy

    return load_default_policy()


@pytest.mark.parametrize("latency", ["0", "0.2"])
def test_offline_answers_run_from_the_step_their_latency_reaches(model, latency):
    """The answer to the frame of step t is first executed at t + latency / period; no
    command is older than the deadline; replace under latency holds the last command."""
    from embodied_stack.models.policy.interface import ExecutionMode
    from embodied_stack.sim.train.rollouts import Execution, WorldPool, run_episodes

    pool = WorldPool("tabletop", 2)
    try:
        eps = run_episodes(model, pool, [300000, 300001], ExecutionMode(4), execution=Execution(
            {"deadline_s": 0.3, "execution": "replace"}, AddedLatency.parse(latency), record=True))
    finally:
        pool.close()
    ages = np.concatenate([np.asarray(e.command_ages) for e in eps])
    executed = ages[np.isfinite(ages)]
    first = [e.command_ages[k] for e in eps for k in range(1, len(e.chunk_serials))
             if e.chunk_serials[k] >= 0 and e.chunk_serials[k] != e.chunk_serials[k - 1]]
    assert np.allclose(first, float(latency))  # every chunk starts at the step it landed at
    assert executed.max() <= 0.3 + 1e-9
    assert (not np.isfinite(ages).all()) == (latency != "0")  # held steps only under latency
    assert all(len(e.commands) == e.steps == len(e.motion) - 1 for e in eps)


def test_offline_a_car_holds_its_velocity_setpoint_while_it_waits(model):
    """Under latency `replace` runs dry: the car keeps its last [v, omega] (the sim bridge's
    velocity setpoint) while it waits, instead of going on accelerating or braking."""
    from embodied_stack.models.policy.interface import ExecutionMode
    from embodied_stack.sim.train.rollouts import Execution, WorldPool, run_episodes

    pool = WorldPool("driving", 2)
    try:
        eps = run_episodes(model, pool, [300000, 300001], ExecutionMode(4), execution=Execution(
            {"deadline_s": 1.0, "execution": "replace"}, AddedLatency.parse("0.2"), record=True))
    finally:
        pool.close()
    held = [(np.asarray(e.commands[k]), np.asarray(e.commands[k - 1]), np.asarray(e.motion[k + 1]))
            for e in eps for k in range(1, len(e.commands))
            if e.chunk_serials[k] < 0 <= e.chunk_serials[k - 1]]
    assert len(held) >= 4
    for command, before, measured in held:
        np.testing.assert_allclose(command, before, atol=1e-4)
        assert abs(measured[0] - before[0]) < 1e-3  # the speed it was asked for, kept


def test_offline_with_the_limiter_a_car_eases_its_acceleration_out_while_it_waits(model):
    """The offline rollouts wait as the policy node does: with a jerk limit, the first step
    without a chunk moves the car's acceleration toward zero by at most jerk * period, not to
    zero at once (control/smoothing.py, CommandLimiter.coast)."""
    from embodied_stack.models.policy.interface import ExecutionMode
    from embodied_stack.sim.train.rollouts import Execution, WorldPool, run_episodes

    pool = WorldPool("driving", 4)
    try:
        eps = run_episodes(model, pool, list(range(300000, 300004)), ExecutionMode(4), execution=Execution(
            {"deadline_s": 1.0, "execution": "replace", "limit_jerk": 12.0}, AddedLatency.parse("0.2"),
            record=True))
    finally:
        pool.close()
    waits = eased = 0
    for e in eps:
        v, serials = np.asarray(e.commands)[:, 0], e.chunk_serials
        for k in range(2, len(v)):
            if serials[k] < 0 <= min(serials[k - 1], serials[k - 2]) and 0.5 < v[k] < 14.5:
                before, now = (v[k - 1] - v[k - 2]) / P, (v[k] - v[k - 1]) / P
                assert now == pytest.approx(np.sign(before) * max(abs(before) - 12.0 * P, 0.0), abs=1e-3)
                waits, eased = waits + 1, eased + (abs(now) > 1e-3)
    assert waits >= 4 and eased >= 1
