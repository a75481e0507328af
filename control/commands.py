"""Policy actions (normalised, in [-1, 1]) <-> physical commands on the standard topics.

- arm: action [vx, vy, vz] in [-1, 1]^3 -> end-effector linear velocity in m/s
  (`servo/delta_twist_cmds`, MoveIt Servo convention), scaled by `max_ee_speed`.
- vehicle: action [steer, accel] in [-1, 1]^2 -> `cmd_vel` [v m/s, omega rad/s] through the
  kinematic bicycle model: v = clip(speed + accel * max_accel * dt, 0, max_speed),
  omega = v * tan(steer * max_steer) / wheelbase. The sim bridge inverts this exactly to
  drive the world, so a policy sees the same action semantics on ROS as in Gymnasium.

Defaults equal the simulation worlds' constants; on a real robot they are node parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmScale:
    max_ee_speed: float = 0.25  #: m/s at |action| = 1 (Tabletop MAX_SPEED)

    def to_command(self, action: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(action, np.float64)[:3], -1, 1) * self.max_ee_speed

    def to_action(self, velocity: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(velocity, np.float64) / self.max_ee_speed, -1, 1)

    def roll_forward(self, proprio: np.ndarray, actions, dt: float) -> np.ndarray:
        """The proprio vector after `actions` (one per `dt` s), for a request conditioned on
        the actions still to run (control/chunk_scheduler.py, ``delay_aware``): the
        end-effector position (proprio[0:3], the base frame of the commands) moved by the
        commanded velocities, its velocity (proprio[3:6]) the last one; the rest kept."""
        out = np.array(proprio, np.float32, copy=True)
        for action in actions:
            velocity = self.to_command(action)
            out[0:3] += (velocity * dt).astype(np.float32)
            out[3:6] = velocity
        return out


@dataclass(frozen=True)
class VehicleScale:
    max_steer: float = 0.5  #: rad at |steer| = 1 (Driving MAX_STEER)
    max_accel: float = 3.0  #: m/s^2 at |accel| = 1 (Driving MAX_ACCEL)
    max_speed: float = 15.0  #: m/s (Driving MAX_SPEED)
    wheelbase: float = 2.7  #: m (Driving WHEELBASE)
    dt: float = 0.1  #: s, the control period the acceleration is integrated over

    def to_command(self, action: np.ndarray, speed: float) -> np.ndarray:
        steer, accel = np.clip(np.asarray(action, np.float64)[:2], -1, 1)
        v = float(np.clip(speed + accel * self.max_accel * self.dt, 0.0, self.max_speed))
        omega = v * math.tan(steer * self.max_steer) / self.wheelbase
        return np.array([v, omega])

    def roll_forward(self, proprio: np.ndarray, actions, dt: float) -> np.ndarray:
        """The proprio vector [speed, steer rad, yaw rate, accel, ...] (the driving world's
        layout) after `actions` (one per `dt` s) by the bicycle model above, for a request
        conditioned on the actions still to run (``delay_aware``); the rest kept."""
        out = np.array(proprio, np.float32, copy=True)
        for action in actions:
            steer, accel = np.clip(np.asarray(action, np.float64)[:2], -1, 1)
            v0 = float(out[0])
            v1 = float(np.clip(v0 + accel * self.max_accel * dt, 0.0, self.max_speed))
            omega = v1 * math.tan(steer * self.max_steer) / self.wheelbase
            out[0:4] = (v1, steer * self.max_steer, omega, (v1 - v0) / dt)
        return out

    def to_action(self, command: np.ndarray, speed: float) -> np.ndarray:
        v, omega = float(command[0]), float(command[1])
        accel = (v - speed) / (self.max_accel * self.dt)
        steer = math.atan(omega * self.wheelbase / v) / self.max_steer if v > 1e-3 else 0.0
        return np.clip(np.array([steer, accel]), -1, 1)


@dataclass(frozen=True)
class JointScale:
    """joints (any other embodiment): action in [-1, 1] per dim -> the command low + (a + 1) / 2
    * (high - low) per dim (a world spec's EmbodimentSpec bounds), published as
    std_msgs/Float64MultiArray; the sim bridge maps it back to the world's normalised action."""

    low: tuple = (-1.0,)
    high: tuple = (1.0,)

    def to_command(self, action: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        a = np.clip(np.asarray(action, np.float64)[: len(low)], -1, 1)
        return low + (a + 1.0) * 0.5 * (high - low)

    def to_action(self, command: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        c = np.asarray(command, np.float64)[: len(low)]
        return np.clip((c - low) / (high - low) * 2.0 - 1.0, -1, 1)

    def roll_forward(self, proprio: np.ndarray, actions, dt: float) -> np.ndarray:
        """No model of how a joint command moves the robot: the proprio vector as it is."""
        return np.array(proprio, np.float32, copy=True)
