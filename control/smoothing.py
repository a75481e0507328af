"""An acceleration and jerk limiter on the commands that go out: pure Python, no rclpy, tested
on a fake clock (tests/test_execution.py).

Commands are velocities (an arm's end-effector m/s, a vehicle's [v m/s, omega rad/s]), so the
first difference of consecutive commands over the control period is an acceleration and the
second a jerk. A new chunk's first action can differ from the last one of its predecessor by
the whole action range: the step that makes an arm sway or jerk when the queue refills
(lerobot #2938, #3794). The limiter moves each component toward the wanted command with
|acceleration| <= ``accel`` and |change of acceleration per second| <= ``jerk`` (0: that limit
off), and brakes its approach so that it can meet the wanted value without overshooting it:
|acceleration| <= sqrt(2 * jerk * |error|).

Only healthy commands pass through it. PolicyLoop hands it the command it wants to send, the
safety supervisor then passes the limited command or replaces it with a stop, and whatever
went out is recorded here (``record``, or ``reset`` for a stop): a stop is never delayed or
smoothed, and after one the limiter starts again from the stop, at rest. Before anything has
gone out (the node's first command) it starts from the robot's measured motion, at constant
velocity, when the caller knows it (``measured``: an arm's end-effector velocity, a vehicle's
odometry [speed, yaw rate]): passed unlimited, a first chunk's full steer would reach a moving
car as a step, and the limiter would then slow the policy's own correction of it, the lag that
loses lane changes (docs/experiments.md). A robot executes one
command per control period: a command within half a period of the previous one replaces it (a
fresh chunk's first action goes out as soon as it is ready), so it is limited against the
commands before that one.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LimiterConfig:
    """Per-component limits of one command layout (0 = no limit on that component)."""

    accel: tuple[float, ...] = (0.0,)  #: |d command / dt| per component (units / s^2)
    jerk: tuple[float, ...] = (0.0,)  #: |d^2 command / dt^2| per component (units / s^3)
    period_s: float = 0.1  #: the control period the robot executes commands at

    def __post_init__(self):
        if len(self.accel) != len(self.jerk):
            raise ValueError(f"accel {self.accel} and jerk {self.jerk} need one limit per component")
        if min(self.accel + self.jerk) < 0 or not self.period_s > 0:
            raise ValueError(f"limits accel={self.accel}, jerk={self.jerk} must be >= 0 and "
                             f"period_s={self.period_s} > 0")

    @property
    def active(self) -> bool:
        return any(v > 0 for v in self.accel + self.jerk)


class CommandLimiter:
    """Limits the healthy commands of one output (module docstring). Not thread-safe:
    PolicyLoop calls it under its lock."""

    def __init__(self, config: LimiterConfig):
        self.config = config
        self._sent: collections.deque = collections.deque(maxlen=3)  # (time, command) out

    def reconfigure(self, config: LimiterConfig) -> None:
        """New limits (the history of what went out is kept)."""
        self.config = config

    def record(self, command: np.ndarray, now: float) -> None:
        """A healthy `command` went out at `now` (one within half a period of the last
        replaces it: the robot executes one per period)."""
        if self._sent and now - self._sent[-1][0] < 0.5 * self.config.period_s:
            self._sent.pop()
        self._sent.append((now, np.asarray(command, np.float64).copy()))

    def reset(self, command: np.ndarray, now: float) -> None:
        """A stop went out at `now`: the next healthy command starts from it, at rest."""
        self._sent.clear()
        self.record(command, now)

    def limit(self, command: np.ndarray, now: float, measured: np.ndarray | None = None) -> np.ndarray:
        """`command` with its acceleration and jerk limited against what went out before, or
        when nothing has, against `measured` (the robot's motion in command units, if known)."""
        cfg = self.config
        command = np.asarray(command, np.float64)
        period = cfg.period_s
        # What the robot executes: the last command of each period; one sent within half a
        # period of now is replaced by this one.
        before = [(t, c) for t, c in self._sent if now - t >= 0.5 * period]
        if not before and not self._sent and measured is not None:
            before = [(now - period, np.asarray(measured, np.float64))]
        if not cfg.active or not before or before[-1][1].shape != command.shape:
            return command
        t1, c1 = before[-1]
        # The acceleration the robot has now: none once the last command has been held for
        # want of a new one, or when nothing went out in the period before it.
        held = now - t1 > 1.5 * period
        c2 = before[-2][1] if len(before) > 1 and not held and t1 - before[-2][0] <= 1.5 * period else c1
        accel_before = (c1 - c2) / period
        error = command - c1
        accel = error / period
        out = command.copy()
        for i in range(len(command)):
            a_max, j_max = cfg.accel[min(i, len(cfg.accel) - 1)], cfg.jerk[min(i, len(cfg.jerk) - 1)]
            a = accel[i]
            if j_max > 0:  # brake early enough to meet the wanted value, then bound the change
                a = np.sign(a) * min(abs(a), np.sqrt(2.0 * j_max * abs(error[i])))
                a = np.clip(a, accel_before[i] - j_max * period, accel_before[i] + j_max * period)
            if a_max > 0:
                a = np.clip(a, -a_max, a_max)
            out[i] = c1[i] + a * period
        return out
