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
smoothed, and after one the limiter starts again from the robot's measured motion (a car still
braking from the stop) or, not knowing it, from the stop at rest. Before anything has
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
        self._wanted: collections.deque = collections.deque(maxlen=2)  # (time, command) asked for
        self._stopping = False  # _sent holds the measured motion during a stop

    def reconfigure(self, config: LimiterConfig) -> None:
        """New limits (the history of what went out is kept)."""
        self.config = config

    def record(self, command: np.ndarray, now: float) -> None:
        """A healthy `command` went out at `now` (one within half a period of the last
        replaces it: the robot executes one per period)."""
        self._stopping = False
        self._append(self._sent, command, now)

    def reset(self, command: np.ndarray, now: float, measured: np.ndarray | None = None) -> None:
        """A stop went out at `now`. The next healthy command starts from the robot's measured
        motion when the caller knows it, and from the stop at rest otherwise: a car keeps
        braking for a while after a stop, and the limiter carries that deceleration on rather
        than stepping out of it."""
        self._wanted.clear()
        if measured is None or not self._stopping:
            self._sent.clear()
        if measured is None:
            self._stopping = False
            self._append(self._sent, command, now)
        else:  # (the motion measured now is what the last period's command made)
            self._stopping = True
            self._append(self._sent, measured, now - self.config.period_s)

    def coast(self, now: float) -> np.ndarray | None:
        """While the robot waits for a late chunk: the command that eases its acceleration out
        at the jerk limit, never past zero velocity. A robot left alone holds its last command,
        which ends a ramp (a car braking at 3 m/s^2) at once: a jerk of 30 m/s^3 at 10 Hz. None
        when there is nothing to ease (no jerk limit, no acceleration, or nothing healthy went
        out in the period before): the robot's own hold is then as smooth."""
        cfg = self.config
        period = cfg.period_s
        before = self._executed(self._sent, now)
        if not cfg.active or self._stopping or len(before) < 2:
            return None
        (t2, c2), (t1, c1) = before[-2:]
        if now - t1 > 1.5 * period or t1 - t2 > 1.5 * period:
            return None
        accel = (c1 - c2) / period
        out = c1.copy()
        for i in range(len(c1)):
            j_max = cfg.jerk[min(i, len(cfg.jerk) - 1)]
            a = np.sign(accel[i]) * max(abs(accel[i]) - j_max * period, 0.0) if j_max > 0 else 0.0
            out[i] = c1[i] + a * period
            if out[i] * c1[i] < 0:  # ease to a stop, not into reverse
                out[i] = 0.0
        return None if np.allclose(out, c1) else out

    def _append(self, history: collections.deque, command: np.ndarray, now: float) -> None:
        """Record (now, command); one within half a period of the last replaces it."""
        if history and now - history[-1][0] < 0.5 * self.config.period_s:
            history.pop()
        history.append((now, np.asarray(command, np.float64).copy()))

    def _executed(self, history: collections.deque, now: float) -> list:
        """The entries of `history` a command at `now` does not replace."""
        return [(t, c) for t, c in history if now - t >= 0.5 * self.config.period_s]

    def limit(self, command: np.ndarray, now: float, measured: np.ndarray | None = None) -> np.ndarray:
        """`command` with its acceleration and jerk limited against what went out before, or
        when nothing has, against `measured` (the robot's motion in command units, if known)."""
        cfg = self.config
        command = np.asarray(command, np.float64)
        period = cfg.period_s
        # What the robot executes: the last command of each period; one sent within half a
        # period of now is replaced by this one.
        if measured is not None and (self._stopping or not self._sent):
            # after a stop, or before anything went out: start from the motion the robot has
            self._append(self._sent, measured, now - period)
            self._stopping = False
        before = self._executed(self._sent, now)
        wanted = self._executed(self._wanted, now)
        self._append(self._wanted, command, now)
        if not cfg.active or not before or before[-1][1].shape != command.shape:
            return command
        t1, c1 = before[-1]
        # The acceleration the robot has now: none once the last command has been held for
        # want of a new one, or when nothing went out in the period before it.
        held = now - t1 > 1.5 * period
        c2 = before[-2][1] if len(before) > 1 and not held and t1 - before[-2][0] <= 1.5 * period else c1
        accel_before = (c1 - c2) / period
        # The wanted commands' own rate (a chunk that ramps the speed down) from the one asked
        # for a period before: the limiter tracks that moving reference and brakes only its
        # approach to it. Against a fixed reference the braking term would cap a steady -3 m/s^2
        # ramp at sqrt(2 * jerk * 0.3 m/s), and the output would fall ever further behind it.
        rate = np.zeros_like(command)
        if wanted and wanted[-1][1].shape == command.shape and now - wanted[-1][0] <= 1.5 * period:
            rate = (command - wanted[-1][1]) / (now - wanted[-1][0])
        error = command - c1
        lag = error - rate * period  # how far behind the reference the output is
        out = command.copy()
        for i in range(len(command)):
            a_max, j_max = cfg.accel[min(i, len(cfg.accel) - 1)], cfg.jerk[min(i, len(cfg.jerk) - 1)]
            a = error[i] / period
            if j_max > 0:  # brake the approach early enough to meet the reference, then bound the change
                a = rate[i] + np.sign(lag[i]) * min(abs(lag[i]) / period, np.sqrt(2.0 * j_max * abs(lag[i])))
                a = np.clip(a, accel_before[i] - j_max * period, accel_before[i] + j_max * period)
            if a_max > 0:
                a = np.clip(a, -a_max, a_max)
            out[i] = c1[i] + a * period
        return out
