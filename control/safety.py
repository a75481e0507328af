"""Safety supervisor for command outputs: pure Python, no rclpy, so it is tested
directly and the node only wires it to topics.

Rules:
- Inputs are judged by the node's clock: a message stamped more than `max_future_s` ahead of
  it, or already older than `stale_after_s`, is rejected and does not refresh its source; an
  accepted stamp counts at most as "now" (a slightly early clock buys no extra time).
- Any active fault — stale sensor input (older than `stale_after_s`), a missed deadline, a
  backend exception, or e-stop — replaces the policy's command with a stop.
- Arms stop at once (zero twist). Vehicles ramp down like Autoware's emergency stop:
  deceleration limited to `decel_mps2` (2.5 m/s^2) reached with jerk `jerk_mps3` (1.5 m/s^3),
  keeping the last path curvature so the car does not swerve; then they publish zero for
  `hold_zero_s` (1 s) and go quiet (`None`: publish nothing).
- E-stop is latched: it stays until an explicit release (e-stop false).
- Every command that goes out is clamped to the configured limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SafetyConfig:
    """Limits and timings. `kind` picks the command layout:
    "arm": [vx, vy, vz] end-effector m/s; "vehicle": [v m/s, omega rad/s] (REP-103);
    "joints": `joint_dims` joint commands (a world spec's embodiment; its stop is zeros)."""

    kind: str = "arm"
    joint_dims: int = 1  #: joints: command entries
    gripper: int = -1  #: joints: the gripper channel (-1: none); a stop holds its last command
    # --- staleness ---
    stale_after_s: float = 0.5  #: an input older than this is stale
    #: clock-skew tolerance: an input stamped further than this ahead of the node's clock
    #: is rejected (a skewed camera clock must not keep the robot moving on old frames)
    max_future_s: float = 0.1
    # --- clamps ---
    max_linear: float = 0.25  #: |v| limit, m/s (arm: per axis; vehicle: forward speed)
    max_reverse: float = 0.0  #: vehicle: most negative speed allowed, m/s (>= 0)
    max_angular: float = 1.0  #: vehicle |omega| limit, rad/s
    # --- vehicle emergency ramp (Autoware emergency stop) ---
    decel_mps2: float = 2.5
    jerk_mps3: float = 1.5
    hold_zero_s: float = 1.0  #: publish zero this long after stopping, then go quiet

    def __post_init__(self):
        if self.kind not in ("arm", "vehicle", "joints"):
            raise ValueError(f"kind {self.kind!r} not in ('arm', 'vehicle', 'joints')")
        if self.joint_dims < 1 or not -1 <= self.gripper < self.joint_dims:
            raise ValueError(f"joint_dims={self.joint_dims} must be >= 1 and gripper={self.gripper} "
                             f"in [-1, {self.joint_dims})")
        for name in ("stale_after_s", "max_future_s", "max_linear", "max_angular", "decel_mps2",
                     "jerk_mps3"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.max_reverse < 0 or self.hold_zero_s < 0:
            raise ValueError(f"max_reverse={self.max_reverse}, hold_zero_s={self.hold_zero_s} "
                             "must be >= 0")


@dataclass
class _Ramp:
    speed: float
    accel: float
    curvature: float
    zero_since: float | None = None


@dataclass
class SafetySupervisor:
    config: SafetyConfig
    _inputs: dict[str, float] = field(default_factory=dict)
    _faults: dict[str, str] = field(default_factory=dict)
    _estop: bool = False
    _last_out: np.ndarray | None = None
    _last_time: float | None = None
    _ramp: _Ramp | None = None

    # --- inputs ------------------------------------------------------------------------
    def watch(self, source: str, now: float) -> None:
        """Declare a required input; it counts as stale until its first message."""
        self._inputs.setdefault(source, -float("inf"))
        self._last_time = self._last_time if self._last_time is not None else now

    def note_input(self, source: str, stamp: float, now: float) -> str | None:
        """A good message from `source` stamped `stamp` arrived at `now` (the node's clock).
        Returns None when it counts, else why not (it then does not refresh `source`)."""
        cfg = self.config
        if stamp > now + cfg.max_future_s:
            return (f"stamped {stamp - now:.3f} s ahead of this node's clock "
                    f"(> {cfg.max_future_s} s): clock skew or a bad driver")
        if now - stamp > cfg.stale_after_s:
            return (f"stamped {now - stamp:.3f} s in the past (> stale_after_s "
                    f"{cfg.stale_after_s} s): clock skew or a late message")
        self._inputs[source] = max(min(stamp, now), self._inputs.get(source, -float("inf")))
        return None

    def reconfigure(self, **changes) -> None:
        """New limits or timings at run time (validated; faults and inputs are kept)."""
        import dataclasses

        self.config = dataclasses.replace(self.config, **changes)

    def set_estop(self, engaged: bool) -> None:
        self._estop = bool(engaged)

    def report_fault(self, cause: str, detail: str) -> None:
        """Raise a fault (e.g. cause='backend', 'deadline'); it holds until clear_fault."""
        self._faults[cause] = detail

    def clear_fault(self, cause: str) -> None:
        self._faults.pop(cause, None)

    # --- state -------------------------------------------------------------------------
    def active_faults(self, now: float) -> dict[str, str]:
        faults = dict(self._faults)
        if self._estop:
            faults["estop"] = "e-stop engaged"
        for source, stamp in self._inputs.items():
            age = now - stamp
            if age > self.config.stale_after_s:
                faults[f"stale:{source}"] = (
                    "no message yet" if stamp == -float("inf")
                    else f"last message {age:.2f} s old (> {self.config.stale_after_s} s)"
                )
        return faults

    def clamp(self, command: np.ndarray) -> np.ndarray:
        c = np.asarray(command, dtype=np.float64).copy()
        if not np.all(np.isfinite(c)):
            c[:] = 0.0
        cfg = self.config
        if cfg.kind == "arm":
            return np.clip(c, -cfg.max_linear, cfg.max_linear)
        if cfg.kind == "joints":  # (bounded by the command scale already)
            return c
        c[0] = np.clip(c[0], -cfg.max_reverse, cfg.max_linear)
        c[1] = np.clip(c[1], -cfg.max_angular, cfg.max_angular)
        return c

    # --- the filter ----------------------------------------------------------------------
    def filter(self, now: float, command: np.ndarray | None):
        """Return (command to publish or None for 'publish nothing', active faults).

        `command` is what the policy wants this tick (None if it has nothing)."""
        faults = self.active_faults(now)
        dt = 0.0 if self._last_time is None else max(0.0, now - self._last_time)
        self._last_time = now
        if not faults:
            self._ramp = None
            if command is None:
                return None, faults
            out = self.clamp(command)
            self._last_out = out
            return out, faults
        out = self._stop(now, dt)
        return out, faults

    def _stop(self, now: float, dt: float):
        cfg = self.config
        if cfg.kind in ("arm", "joints"):
            self._ramp = self._ramp or _Ramp(0.0, 0.0, 0.0, zero_since=now)
            assert self._ramp.zero_since is not None  # (an arm's stop is zero from its first tick)
            zero = np.zeros(3 if cfg.kind == "arm" else cfg.joint_dims)
            if cfg.kind == "joints" and cfg.gripper >= 0 and self._last_out is not None:
                zero[cfg.gripper] = self._last_out[cfg.gripper]  # (a gripper never opens by itself)
            return self._hold_or_quiet(now, zero, self._ramp.zero_since)
        if self._ramp is None:
            v0, w0 = (self._last_out if self._last_out is not None else np.zeros(2))
            kappa = w0 / v0 if abs(v0) > 1e-3 else 0.0
            self._ramp = _Ramp(float(v0), 0.0, float(kappa),
                               zero_since=now if abs(v0) < 1e-6 else None)
        r = self._ramp
        if r.zero_since is None:
            # Jerk-limited deceleration toward -decel, then speed toward 0.
            r.accel = max(-cfg.decel_mps2, r.accel - cfg.jerk_mps3 * dt)
            step = r.accel * dt
            if r.speed > 0:
                r.speed = max(0.0, r.speed + step)
            else:
                r.speed = min(0.0, r.speed - step)
            if r.speed == 0.0:
                r.zero_since = now
        out = np.array([r.speed, r.speed * r.curvature])
        self._last_out = out
        if r.zero_since is None:
            return out
        return self._hold_or_quiet(now, np.zeros(2), r.zero_since)

    def _hold_or_quiet(self, now: float, zero: np.ndarray, zero_since: float):
        self._last_out = zero
        if now - zero_since <= self.config.hold_zero_s:
            return zero
        return None
