"""Pointing answers to metres (models/policy/grounding.py) and targets / plans to action chunks
(control/target_control.py): back-projection with holes and edges, the static transform, the
bounded arm servo and pure pursuit, without ROS."""

import math

import numpy as np
import pytest

from embodied_stack.control.commands import ArmScale, VehicleScale
from embodied_stack.control.target_control import (
    ArmServo,
    PurePursuit,
    path_point_at,
    static_transform,
    transform_to_list,
)
from embodied_stack.models.policy.grounding import backproject_pixel

K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])


def test_backprojection_is_the_pinhole_inverse():
    depth = np.full((48, 64), 2.0, np.float32)
    r = backproject_pixel((41.5, 13.5), depth, K)
    assert r.ok and r.valid_px >= 3
    np.testing.assert_allclose(r.point, [0.2, -0.2, 2.0], atol=1e-9)


def test_backprojection_survives_holes_and_refuses_no_depth():
    depth = np.full((48, 64), 1.5, np.float32)
    depth[20:27, 28:35] = 0.0  # a hole (NaN/inf arrive as 0 from the node's conversion)
    depth[23, 31] = np.nan  # and a stray NaN at the pixel itself
    r = backproject_pixel((31, 23), depth, K)  # window grows until it finds valid depth
    assert r.ok and r.depth_m == pytest.approx(1.5) and r.radius_px >= 4
    empty = np.zeros((48, 64), np.float32)
    r = backproject_pixel((31, 23), empty, K)
    assert not r.ok and "no valid depth" in r.reason
    assert not backproject_pixel((31, 23), None, K).ok
    assert "intrinsics" in backproject_pixel((31, 23), depth, None).reason
    assert "outside" in backproject_pixel((80, 23), depth, K).reason


def test_backprojection_stays_on_the_surface_at_an_edge():
    depth = np.full((48, 64), 3.0, np.float32)  # the table far behind
    depth[:, :32] = 1.0  # an object's face ending at column 31
    r = backproject_pixel((31, 20), depth, K, radius_px=3)  # the window straddles the edge
    assert r.depth_m == pytest.approx(1.0)


def test_static_transform_round_trip_and_errors():
    q = [0.0, 0.0, math.sin(0.3), math.cos(0.3)]  # 0.6 rad about z
    T = static_transform([1.0, 2.0, 3.0, *q])
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [math.cos(0.6), math.sin(0.6), 0], atol=1e-12)
    np.testing.assert_allclose(static_transform(transform_to_list(T)), T, atol=1e-12)
    assert static_transform([0.0]) is None and static_transform([]) is None
    with pytest.raises(ValueError):
        static_transform([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        static_transform([0, 0, 0, 0, 0, 0, 0])


def test_arm_servo_is_bounded_converges_and_stops_inside_the_radius():
    servo = ArmServo(ArmScale(0.25), gain=2.0, stop_radius_m=0.01)
    target, ee = np.array([0.3, -0.2, 0.05]), np.array([0.0, 0.0, 0.2])
    v = servo.velocity(target, ee)
    assert np.linalg.norm(v) == pytest.approx(0.25)  # capped, direction kept
    np.testing.assert_allclose(v / np.linalg.norm(v), (target - ee) / np.linalg.norm(target - ee))
    chunk = servo.setpoints(target, 40)
    assert chunk.shape == (40, 3) and chunk.dtype == np.float32 and np.all(chunk == target.astype(np.float32))
    dist = []
    for _ in range(40):  # closed loop, as the node runs it: velocity from the latest position
        ee = ee + servo.velocity(target, ee) * 0.1
        dist.append(np.linalg.norm(ee - target))
    assert dist[-1] <= 0.0101 and np.all(np.diff(dist) <= 1e-9)  # monotone approach
    assert not servo.velocity(target, target + [0.005, 0, 0]).any()  # inside the radius: zero


def _drive(chunk, pp, speed):
    """Integrate the bicycle model over a chunk, commands made at each tick: (x, y, yaw, v)."""
    scale = pp.scale
    x = y = yaw = 0.0
    v = speed
    for row in chunk:
        v, omega = pp.command(row, v)
        x, y, yaw = x + v * math.cos(yaw) * scale.dt, y + v * math.sin(yaw) * scale.dt, yaw + omega * scale.dt
    return x, y, yaw, v


def test_pure_pursuit_steers_toward_the_path_and_tracks_its_speed():
    scale = VehicleScale(max_steer=0.5, max_accel=3.0, max_speed=15.0, wheelbase=2.7, dt=0.1)
    pp = PurePursuit(scale, lookahead_m=5.0, lookahead_time_s=1.0, waypoint_dt=0.5)
    left = np.array([[2.5, 0.2], [5.0, 0.8], [7.5, 1.8], [10.0, 3.0], [12.5, 4.2], [15.0, 5.5]])
    chunk = pp.chunk(left, speed=5.0, steps=30)
    assert chunk[0, 0] > 0  # steer left
    assert pp.chunk(left * [1, -1], 5.0, 30)[0, 0] < 0  # mirrored path: steer right
    # The analytic pure-pursuit angle for the first step.
    tx, ty = path_point_at(left, 5.0)
    expect = math.atan2(2 * 2.7 * math.sin(math.atan2(ty, tx)), math.hypot(tx, ty))
    assert chunk[0, 0] * 0.5 == pytest.approx(expect, rel=1e-5)
    x, y, _, v = _drive(chunk[:25], pp, 5.0)  # 2.5 s: the plan says x = 12.5, y = 4.2
    assert y > 2.0 and 9.0 < x < 14.0 and 3.0 < v < 7.0
    straight = np.array([[5.0 * (k + 1), 0.0] for k in range(6)])  # 10 m/s from standstill
    acc = pp.chunk(straight, 0.0, 10)
    assert np.all(acc[:, 1] == 10.0) and not np.any(acc[:, 0])
    assert pp.command(acc[0], 0.0)[0] == pytest.approx(3.0 * 0.1)  # full throttle for a tick
    stop = np.array([[0.5, 0.0], [0.6, 0.0], [0.6, 0.0]])  # stop ahead: brake
    assert np.all(pp.chunk(stop, 8.0, 5)[:, 1] <= 1.0)
    assert pp.command([0.0, 0.0], 8.0)[0] == pytest.approx(8.0 - 0.3)  # closed loop: brake
    assert pp.command([0.0, 5.0], 5.0)[0] == pytest.approx(5.0)  # at the plan's speed: hold


def test_path_point_at_interpolates_and_clips():
    path = np.array([[3.0, 4.0], [3.0, 10.0]])
    np.testing.assert_allclose(path_point_at(path, 2.5), [1.5, 2.0])
    np.testing.assert_allclose(path_point_at(path, 8.0), [3.0, 7.0])
    np.testing.assert_allclose(path_point_at(path, 100.0), [3.0, 10.0])
