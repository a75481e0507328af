"""SafetySupervisor: stale input, faults, e-stop latch, clamps, the vehicle ramp."""

import numpy as np
import pytest

from embodied_stack.control.safety import SafetyConfig, SafetySupervisor


def arm(**kw):
    sup = SafetySupervisor(SafetyConfig(kind="arm", **kw))
    sup.watch("rgb", 0.0)
    assert sup.note_input("rgb", 0.0, 0.0) is None
    return sup


def test_fresh_input_passes_clamped_command():
    sup = arm(max_linear=0.2)
    out, faults = sup.filter(0.1, np.array([0.1, -0.5, 0.3]))
    assert faults == {}
    np.testing.assert_allclose(out, [0.1, -0.2, 0.2])


def test_stale_input_zeroes_within_half_a_second_then_goes_quiet():
    sup = arm()
    t = 0.0
    first_zero = None
    while t < 3.0:
        t += 0.05
        out, faults = sup.filter(t, np.array([0.1, 0.1, 0.1]))
        if first_zero is None and out is not None and not np.any(out):
            first_zero = t
    assert first_zero is not None and first_zero <= 0.5 + 0.05 + 1e-9
    assert out is None  # quiet after the 1 s hold
    assert "stale:rgb" in faults


def test_nan_command_becomes_zero_not_passed_through():
    out, _ = arm().filter(0.1, np.array([np.nan, 0.1, 0.0]))
    assert np.all(out == 0)


def test_estop_latches_until_released():
    sup = arm()
    sup.set_estop(True)
    for k in range(5):
        sup.note_input("rgb", 0.1 * k, 0.1 * k)
        out, faults = sup.filter(0.1 * k, np.array([0.1, 0, 0]))
        assert "estop" in faults and (out is None or not np.any(out))
    sup.set_estop(False)
    sup.note_input("rgb", 0.5, 0.5)
    out, faults = sup.filter(0.5, np.array([0.1, 0, 0]))
    assert faults == {} and out[0] == pytest.approx(0.1)


def test_backend_fault_holds_until_cleared():
    sup = arm()
    sup.report_fault("backend", "RuntimeError: boom")
    out, faults = sup.filter(0.1, np.array([0.1, 0, 0]))
    assert faults == {"backend": "RuntimeError: boom"} and not np.any(out)
    sup.clear_fault("backend")
    out, faults = sup.filter(0.2, np.array([0.1, 0, 0]))
    assert faults == {} and out[0] == pytest.approx(0.1)


def test_vehicle_ramps_down_with_limited_decel_and_jerk_keeping_curvature():
    cfg = SafetyConfig(kind="vehicle", max_linear=20.0, max_angular=1.0)
    sup = SafetySupervisor(cfg)
    sup.watch("rgb", 0.0)
    sup.note_input("rgb", 0.0, 0.0)
    out, _ = sup.filter(0.0, np.array([8.0, 0.4]))  # curvature 0.05 1/m
    sup.report_fault("deadline", "missed")
    dt, t, speeds, accels = 0.02, 0.0, [8.0], [0.0]
    outs = []
    while t < 10.0:
        t += dt
        out, _ = sup.filter(t, None)
        outs.append(out)
        if out is None:
            break
        speeds.append(out[0])
        accels.append((speeds[-1] - speeds[-2]) / dt)
        if out[0] > 1e-6:
            assert out[1] == pytest.approx(out[0] * 0.05)
    speeds, accels = np.array(speeds), np.array(accels)
    assert speeds[1] < 8.0  # no step to zero: it ramps
    assert np.all(np.diff(speeds) <= 1e-9)
    assert accels.min() >= -2.5 - 1e-6
    assert np.all(np.diff(accels)[: np.argmax(speeds <= 0)] >= -1.5 * dt - 1e-6)
    assert outs[-1] is None  # quiet after holding zero
    zero_ticks = sum(1 for o in outs if o is not None and o[0] == 0.0)
    assert 1.0 / dt - 2 <= zero_ticks <= 1.0 / dt + 2


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="kind"):
        SafetyConfig(kind="boat")
    with pytest.raises(ValueError, match="stale_after_s"):
        SafetyConfig(stale_after_s=0)


@pytest.mark.parametrize("offset_s", [60.0, 0.2, -0.8])
def test_frames_stamped_off_the_clock_are_rejected_and_do_not_keep_the_robot_moving(offset_s):
    """A frame stamped a minute (or 0.2 s) ahead of the node's clock, or already older than
    the staleness limit, is rejected; the stop comes <= 0.5 s after the last honest frame."""
    sup = arm()
    t, last_honest = 0.0, None
    while t < 1.0:  # honest frames at 20 Hz
        t = round(t + 0.05, 10)
        assert sup.note_input("rgb", t, t) is None
        last_honest = t
        sup.filter(t, np.array([0.1, 0, 0]))
    for _ in range(40):  # then only skewed frames, still at 20 Hz
        t = round(t + 0.05, 10)
        reason = sup.note_input("rgb", t + offset_s, t)
        assert reason is not None and ("ahead" in reason if offset_s > 0 else "past" in reason)
        out, faults = sup.filter(t, np.array([0.1, 0, 0]))
        if t - last_honest > 0.5 + 1e-9:
            assert "stale:rgb" in faults and (out is None or not np.any(out)), t - last_honest


def test_a_slightly_early_stamp_buys_no_extra_time():
    sup = arm(max_future_s=0.1)
    assert sup.note_input("rgb", 1.08, 1.0) is None  # within the skew tolerance: accepted
    _, faults = sup.filter(1.0 + 0.5 + 0.01, np.array([0.1, 0, 0]))
    assert "stale:rgb" in faults  # judged from its arrival, not its early stamp


def test_limits_change_at_run_time():
    sup = arm(max_linear=0.2)
    sup.reconfigure(max_linear=0.05)
    out, _ = sup.filter(0.1, np.array([0.1, -0.5, 0.3]))
    np.testing.assert_allclose(out, [0.05, -0.05, 0.05])
    with pytest.raises(ValueError, match="stale_after_s"):
        sup.reconfigure(stale_after_s=-1.0)
    assert sup.config.max_linear == 0.05  # a refused change keeps the old limits
