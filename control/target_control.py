"""A target or a plan -> the action chunk the policy node executes (pure Python, no rclpy).

Backends that answer "where" rather than "how" (``Policy.outputs_targets``: MiMo-Embodied)
give a 3D point for an arm or waypoints for a vehicle. These controllers turn that answer into
a chunk at the control rate, so the chunk scheduler (deadline, skip by age, instruction
epochs) and the safety supervisor (stale inputs, faults, clamps) apply to it unchanged. Step k
of a chunk is the command for time ``stamp + k / rate``, which is what the scheduler assumes
when it skips the steps a slow answer has already missed.

Arm (``ArmServo``): the target, in the camera optical frame, is moved to the arm's base frame
by a static transform (``camera_to_base``: the camera optical frame's pose in the base frame,
x y z qx qy qz qw as ``static_transform_publisher`` takes it). The chunk holds that setpoint
for the plan's horizon, and every control tick turns it into a velocity from the latest
end-effector position (closed loop; an open-loop rollout would be wrong whenever the arm did
not execute the previous chunk while the model was thinking): ``v = gain * (target - ee)``,
its norm capped at the arm's ``max_ee_speed`` (direction kept), zero inside
``stop_radius_m``. In the Tabletop world the fingertip moves in the world frame, so the base
frame is the world frame and the transform is the camera's ``T_world_camera``.

Vehicle (``PurePursuit``): each chunk row is [steering (normalised), desired speed]; the
steering is rolled forward with the bicycle model from the observation's time, and the speed
loop is closed at the tick from the odometry speed (an open-loop acceleration profile would
hold a wrong speed whenever the car did not do what the rollout assumed). Waypoints
in metres in the ego frame at the observation's time (x forward, y left, one every
``waypoint_dt`` s; our JSON convention, models/policy/mimo_prompts).
Steering aims at the point one look-ahead ``L = max(lookahead_m, lookahead_time_s * v)`` along
the path (the last waypoint if the path is shorter): ``delta = atan2(2 * wheelbase * sin(alpha),
L)`` with ``alpha`` the bearing of that point. Speed follows the plan's own timing: the
desired speed at time t is the length of the path segment being driven then divided by
``waypoint_dt``, capped at ``max_speed``; acceleration ``= speed_gain * (desired - v)``, capped
at ``max_accel``. The rollout uses the kinematic bicycle model of control/commands.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embodied_stack.control.commands import ArmScale, VehicleScale
from embodied_stack.models.perception.types import matrix_from_quaternion, quaternion_from_matrix


def static_transform(values) -> np.ndarray | None:
    """[x, y, z, qx, qy, qz, qw] -> 4x4 homogeneous transform; an empty list or the single
    placeholder [0.0] -> None (not set). ValueError for anything else that is not 7 finite
    numbers with a non-zero quaternion."""
    vals = [float(v) for v in values]
    if len(vals) == 0 or vals == [0.0]:
        return None
    if len(vals) != 7 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"camera_to_base needs 7 finite numbers x y z qx qy qz qw, got {vals}")
    qx, qy, qz, qw = vals[3:]
    if math.hypot(qx, qy, qz, qw) < 1e-9:
        raise ValueError(f"camera_to_base quaternion {vals[3:]} has no direction")
    T = np.eye(4)
    T[:3, :3] = matrix_from_quaternion([qw, qx, qy, qz])
    T[:3, 3] = vals[:3]
    return T


def transform_to_list(T: np.ndarray) -> list[float]:
    """4x4 transform -> [x, y, z, qx, qy, qz, qw] (the inverse of :func:`static_transform`)."""
    T = np.asarray(T, np.float64)
    w, x, y, z = quaternion_from_matrix(T[:3, :3])
    return [float(v) for v in T[:3, 3]] + [float(x), float(y), float(z), float(w)]


@dataclass(frozen=True)
class ArmServo:
    """Proportional end-effector servo toward a 3D point (module docstring)."""

    scale: ArmScale = ArmScale()
    gain: float = 2.0  #: 1/s: m/s of velocity per m of distance
    stop_radius_m: float = 0.01  #: zero velocity this close to the target

    def __post_init__(self):
        if not (self.gain > 0 and self.stop_radius_m >= 0):
            raise ValueError(f"ArmServo(gain={self.gain}, stop_radius_m={self.stop_radius_m}): "
                             "need gain > 0, stop_radius_m >= 0")

    def velocity(self, target: np.ndarray, ee: np.ndarray) -> np.ndarray:
        """m/s toward `target` from `ee` (both in the base frame)."""
        offset = np.asarray(target, np.float64)[:3] - np.asarray(ee, np.float64)[:3]
        dist = float(np.linalg.norm(offset))
        if not math.isfinite(dist) or dist <= self.stop_radius_m:
            return np.zeros(3)
        speed = min(self.gain * dist, self.scale.max_ee_speed)
        return offset / dist * speed

    def setpoints(self, target_base: np.ndarray, steps: int) -> np.ndarray:
        """(steps, 3) float32: the chunk, the base-frame target held for `steps` ticks (the
        node converts each with :meth:`velocity` from the end-effector position then)."""
        return np.tile(np.asarray(target_base, np.float32)[:3], (max(1, int(steps)), 1))


def path_point_at(path: np.ndarray, distance: float) -> np.ndarray:
    """The point `distance` metres along the polyline origin -> path[0] -> path[1] ...; the
    last point when the path is shorter."""
    pts = np.vstack([np.zeros(2), np.asarray(path, np.float64)[:, :2]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    acc = 0.0
    for i, s in enumerate(seg):
        if s > 0 and acc + s >= distance:
            return pts[i] + (pts[i + 1] - pts[i]) * (distance - acc) / s
        acc += s
    return pts[-1]


@dataclass(frozen=True)
class PurePursuit:
    """Pure pursuit on ego-frame waypoints plus the plan's own speed profile (module
    docstring). Limits come from the vehicle's command scaling (`scale`)."""

    scale: VehicleScale = VehicleScale()
    lookahead_m: float = 5.0  #: shortest look-ahead distance, m
    lookahead_time_s: float = 1.0  #: look-ahead grows to this many seconds of travel
    speed_gain: float = 2.0  #: 1/s: m/s^2 per m/s of speed error
    waypoint_dt: float = 0.5  #: s between waypoints (the prompt's convention)

    def __post_init__(self):
        if not (self.lookahead_m > 0 and self.lookahead_time_s >= 0 and self.speed_gain > 0
                and self.waypoint_dt > 0):
            raise ValueError(f"PurePursuit(lookahead_m={self.lookahead_m}, lookahead_time_s="
                             f"{self.lookahead_time_s}, speed_gain={self.speed_gain}, "
                             f"waypoint_dt={self.waypoint_dt}): need > 0 (time >= 0)")

    def lookahead(self, speed: float) -> float:
        return max(self.lookahead_m, self.lookahead_time_s * max(speed, 0.0))

    def steering(self, path: np.ndarray, speed: float) -> float:
        """Front-wheel angle (rad, + = left) toward the look-ahead point of `path` (ego frame)."""
        L = self.lookahead(speed)
        tx, ty = path_point_at(path, L)
        dist = math.hypot(tx, ty)
        if dist < 1e-6:
            return 0.0
        alpha = math.atan2(ty, tx)
        return math.atan2(2.0 * self.scale.wheelbase * math.sin(alpha), max(dist, 1e-6))

    def desired_speed(self, path: np.ndarray, t: float) -> float:
        """The plan's speed at `t` s after its time: the length of the segment driven then,
        over waypoint_dt (0 past the last waypoint), capped at max_speed."""
        pts = np.vstack([np.zeros(2), np.asarray(path, np.float64)[:, :2]])
        i = int(t / self.waypoint_dt)
        if i >= len(pts) - 1:
            return 0.0
        v = float(np.linalg.norm(pts[i + 1] - pts[i])) / self.waypoint_dt
        return min(v, self.scale.max_speed)

    def command(self, row: np.ndarray, speed: float) -> np.ndarray:
        """One chunk row [steer (normalised), desired speed m/s] at the measured `speed` ->
        the command [v m/s, omega rad/s]: the speed loop is closed here, at the tick."""
        sc = self.scale
        accel = np.clip(self.speed_gain * (float(row[1]) - speed) / sc.max_accel, -1.0, 1.0)
        return sc.to_command(np.array([float(row[0]), accel]), speed)

    def chunk(self, path: np.ndarray, speed: float, steps: int) -> np.ndarray:
        """(steps, 2) rows [steer (normalised), desired speed m/s], the steering rolled
        forward with the bicycle model from the plan's time (ego at the origin, heading +x,
        moving at `speed`); :meth:`command` turns a row into cmd_vel at the tick."""
        sc = self.scale
        path = np.asarray(path, np.float64)[:, :2]
        x = y = yaw = 0.0
        v = max(float(speed), 0.0)
        out = np.zeros((max(1, int(steps)), 2))
        c, s = 1.0, 0.0
        for k in range(len(out)):
            # The remaining path in the predicted ego frame at step k.
            local = (path - [x, y]) @ np.array([[c, -s], [s, c]])
            ahead = local[local[:, 0] > -1e-6] if k else local
            steer = self.steering(ahead if len(ahead) else local[-1:], v)
            out[k] = [np.clip(steer / sc.max_steer, -1.0, 1.0), self.desired_speed(path, k * sc.dt)]
            v_next, omega = self.command(out[k], v)
            x += v_next * c * sc.dt
            y += v_next * s * sc.dt
            yaw += omega * sc.dt
            c, s = math.cos(yaw), math.sin(yaw)
            v = v_next
        return out.astype(np.float32)


__all__ = ["ArmServo", "PurePursuit", "path_point_at", "static_transform", "transform_to_list"]
