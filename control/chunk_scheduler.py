"""When policy_node asks for a chunk and which action it executes: pure Python (no rclpy), so
the timing rules are tested on a fake clock (tests/test_chunk_scheduler.py). PolicyLoop
(control/policy_loop.py) drives it, with control/safety.py, and the node only wires ROS to
that. The offline evaluation (sim/train/rollouts.py) drives the same class on simulated time,
so what bench/execution.py measures is what the node runs.

Chunks live on a time line: action k of a chunk answering the observation stamped ``s`` is the
command for the control step at ``s + k / rate_hz`` (its *origin* is ``s``; a delay-aware
request moves it later, below). At any time ``now`` the action due is the one whose step has
come: ``floor((now - origin) * rate_hz)``. So a slow answer never replays the past: the actions
whose time has passed are skipped, whenever the answer lands.

Rules:
- A chunk of T actions is executed one action per control period (1 / ``rate_hz``). The next
  chunk is requested when at most ``request threshold`` actions remain (``refill_at`` plus what
  the strategy adds, below); one request is in flight at a time, and only for a frame not asked
  about yet.
- A result is judged by the age of the observation it answers: older than ``deadline_s`` when
  it is ready -> dropped (never executed). No action is ever executed once its chunk's
  observation is older than ``deadline_s`` either: a chunk counts as used up there, so the
  refill is asked for before then.
- Instruction epochs: a new instruction starts a new epoch and clears the chunks; a result of
  an older epoch (an inference that was in flight when the instruction changed) is discarded.
- ``execute_steps`` > 0 cuts every chunk to its first actions (receding horizon).
- Actions go out on the node's control timer at ``rate_hz``, plus one exception that keeps
  the camera -> command latency at the model's: a fresh chunk's first due action goes out the
  moment the result is ready. A tick within half a period of the last action executes nothing
  (timer jitter must not run the chunk early).

Execution strategies (``strategy``; docs/policy_node.md has the measurements that chose the
default):
- ``replace``: the next chunk is asked for when ``refill_at`` actions remain and replaces the
  rest on arrival (the node's rule before strategies existed). Under latency the refill can
  come after the chunk ran out: the robot then gets nothing new until it does.
- ``early``: the same, but asked for ``k - 1`` steps earlier, where k = floor(L * rate_hz) is
  the number of control steps that pass before an answer lands and L the measured latency
  (the ``latency_quantile`` of the recent observation ages at arrival): the successor is ready
  when the chunk runs out. With L under two periods this is ``replace`` exactly.
- ``ensemble``: temporal ensembling (ACT): a chunk is asked for at every new frame while none
  is in flight, and every chunk still inside its deadline that has an action for this step
  votes; the votes are averaged with weights halving every ``ensemble_halflife_s`` of a
  chunk's age relative to the newest (0: the newest alone, which is ``early`` with requests as
  often as possible).
- ``delay_aware``: the request is conditioned on the actions still to run (VLASH): the k steps
  the answer is expected to take are played from the current chunk, the caller rolls the
  observation's robot state forward through them (``pending_actions``; control/commands.py),
  and the answer's origin is moved k steps on, so its first action is executed first instead
  of skipped. It is asked for k steps earlier than ``replace`` would. With L under one period
  (k = 0) this is ``replace`` exactly.

Hand-over blend (``blend_steps`` n > 0, any strategy but ``ensemble``, which averages anyway):
the first n actions a new chunk contributes are cross-faded from the last command executed
before it, ``w a_new + (1 - w) a_last`` with ``w = (i + 1) / (n + 1)`` for its i-th executed
step. A jump between two chunks' plans then reaches the robot in n + 1 steps instead of one,
so the jerk at a hand-over falls to about 1 / (n + 1). Only a command executed on the step
before is blended from: after ``clear`` (a stop) or a gap of more than 1.5 periods, the new
chunk goes out as it is. ``pending_actions``
(what delay_aware rolls the state through) gives the chunks' own actions, without the blend.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: The execution strategies and what each does (module docstring).
STRATEGIES = {
    "replace": "a new chunk replaces the rest on arrival; asked for at refill_at",
    "early": "as replace, asked for early enough to cover the measured latency",
    "ensemble": "every chunk inside its deadline votes on each step (ACT temporal ensembling)",
    "delay_aware": "the request is conditioned on the actions still to run (state rolled "
                   "forward), and its first action is executed first",
}
#: ``auto``, the policy node's default: the strategy per embodiment that kept success best
#: under latency on the validation seeds (bench/execution.py; docs/policy_node.md). An arm's
#: next motion follows from its state (the fingertip against a target that stays put), so
#: rolling the state forward helps it; a car's lane position is only in the image, which
#: cannot be rolled forward, and there the rolled state hurt.
AUTO_STRATEGY = {"arm": "delay_aware", "vehicle": "early",
                 # joints (a world spec's own embodiment): no model of the state to roll forward
                 "joints": "replace"}
#: Fraction of a period a time may fall short of a control step and still count as it
#: (floating-point time; the node's ticks fall mid-way between steps).
STEP_EPS = 1e-3
#: Observation ages at arrival kept for the latency estimate.
LATENCY_WINDOW = 32


@dataclass(frozen=True)
class SchedulerConfig:
    rate_hz: float = 10.0  #: control (command) rate, Hz, in (0, 1000]
    deadline_s: float = 0.3  #: no result or action whose observation is older than this (s), > 0
    refill_at: int = 1  #: request the next chunk when this many actions remain, >= 0
    execute_steps: int = 0  #: execute only the first N actions of each chunk (0 = all), >= 0
    strategy: str = "replace"  #: a key of STRATEGIES
    #: ensemble: a chunk's vote halves for every this many seconds it is older than the newest
    ensemble_halflife_s: float = 0.1
    #: early / delay_aware: the quantile of the recent latencies that sets how early to ask
    latency_quantile: float = 0.9
    #: cross-fade a new chunk's first this many executed actions from the last command (0 = off)
    blend_steps: int = 0

    def __post_init__(self):
        if not 0 < self.rate_hz <= 1000:
            raise ValueError(f"rate_hz={self.rate_hz} outside (0, 1000]")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s={self.deadline_s} must be > 0")
        if self.refill_at < 0 or self.execute_steps < 0:
            raise ValueError(f"refill_at={self.refill_at}, execute_steps={self.execute_steps} "
                             "must be >= 0")
        if not 0 <= self.blend_steps <= 64:
            raise ValueError(f"blend_steps={self.blend_steps} outside [0, 64]")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} not in {sorted(STRATEGIES)}")
        if not self.ensemble_halflife_s >= 0 or not 0.5 <= self.latency_quantile <= 1.0:
            raise ValueError(f"ensemble_halflife_s={self.ensemble_halflife_s} must be >= 0 and "
                             f"latency_quantile={self.latency_quantile} in [0.5, 1.0]")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class TimedChunk:
    """A queued answer: action k is for the control step at ``origin + k`` periods."""

    actions: np.ndarray  #: (T, action dim)
    stamp: float  #: the observation it answers (its age decides the deadline)
    origin: float  #: the time of action 0 (the stamp, or later for a delay-aware request)
    serial: int  #: counts chunks queued, so a caller can tell where one chunk hands over


class Due(NamedTuple):
    """The action to execute now and where it comes from."""

    action: np.ndarray
    stamp: float  #: the observation of the chunk it comes from (the newest voting one)
    serial: int  #: that chunk's serial


class ChunkScheduler:
    """The chunk time line of policy_node. Not thread-safe: PolicyLoop calls it under its lock."""

    def __init__(self, config: SchedulerConfig | None = None):
        self.config = config or SchedulerConfig()
        self.epoch = 0  #: instruction epoch; results of older epochs are discarded
        self.chunks: list[TimedChunk] = []  #: queued chunks, oldest first
        self.inflight = False
        self.last_requested_stamp: float | None = None
        self.last_exec = -float("inf")
        self.started = False  # a chunk has been executed since the last reset
        #: observation age at arrival of the recent results (the latency the strategies plan for)
        self.ages: collections.deque = collections.deque(maxlen=LATENCY_WINDOW)
        self._serial = 0
        self._next_index = 0  # the newest chunk's first action not executed yet
        # hand-over blend: the last command executed, its chunk, and the blend in progress
        # (the command it fades from, and how many of the new chunk's steps have gone out)
        self._last_action: np.ndarray | None = None
        self._last_serial = -1
        self._blend_from: np.ndarray | None = None
        self._blend_done = 0

    def reconfigure(self, **changes) -> None:
        """New rate, deadline, refill_at, execute_steps or strategy settings (validated; the
        chunks are kept)."""
        self.config = dataclasses.replace(self.config, **changes)

    # --- events ----------------------------------------------------------------------
    def new_instruction(self) -> None:
        self.epoch += 1
        self.clear()
        self.last_requested_stamp = None
        self.started = False

    def clear(self) -> None:
        """Drop the queued actions (e-stop, fault); a later chunk is not blended from a command
        before the stop."""
        self.chunks.clear()
        self._next_index = 0
        self._last_action = self._blend_from = None
        self._last_serial = -1

    def wants_request(self, frame_stamp: float | None, now: float | None = None) -> bool:
        """Whether to ask the backend for a chunk on the frame stamped `frame_stamp` at `now`
        (default: the frame's stamp)."""
        if self.inflight or frame_stamp is None:
            return False
        now = frame_stamp if now is None else now
        if self.remaining(now) > self.request_threshold():
            return False
        return frame_stamp != self.last_requested_stamp

    def start_request(self, frame_stamp: float) -> int:
        """Mark a request as sent; returns the epoch to hand back with its result."""
        self.inflight = True
        self.last_requested_stamp = frame_stamp
        return self.epoch

    def finish(self, chunk, obs_stamp: float, epoch: int, now: float,
               origin: float | None = None) -> tuple[str, float]:
        """A result arrived: ("queued" | "superseded" | "late", observation age in s).
        `origin`: the time of its first action (default the observation's stamp;
        `request_origin` for a delay-aware request)."""
        self.inflight = False
        age = max(0.0, now - obs_stamp)  # (input stamps are bounded to the clock upstream)
        if epoch != self.epoch:
            return "superseded", age
        self.ages.append(age)
        if age > self.config.deadline_s:
            self.clear()
            return "late", age
        actions = np.asarray(chunk, np.float64)
        if self.config.execute_steps:
            actions = actions[: self.config.execute_steps]
        self._serial += 1
        self.chunks.append(TimedChunk(actions, obs_stamp, obs_stamp if origin is None else origin,
                                      self._serial))
        self._next_index = 0
        self._forget(now)
        return "queued", age

    def failed(self) -> None:
        """The backend raised: nothing in flight, nothing queued."""
        self.inflight = False
        self.clear()

    # --- what the strategies plan with --------------------------------------------------
    def latency_estimate(self) -> float:
        """The `latency_quantile` of the recent observation ages at arrival (0 before any)."""
        if not self.ages:
            return 0.0
        return float(np.quantile(np.asarray(self.ages), self.config.latency_quantile))

    def lead_steps(self) -> int:
        """Control steps that pass before an answer asked for now lands: an answer that comes
        within the period it was asked in still makes the robot's next step (0 for a fast
        model), one that comes after k steps is first executed at the (k + 1)-th."""
        return max(0, math.floor(self.latency_estimate() * self.config.rate_hz + STEP_EPS))

    def request_threshold(self) -> int:
        """Ask for the next chunk when at most this many actions remain."""
        c, lead = self.config, self.lead_steps()
        if c.strategy == "ensemble":
            return 1 << 30  # at every new frame while none is in flight
        if c.strategy == "early":
            return c.refill_at + max(0, lead - 1)
        if c.strategy == "delay_aware":
            return c.refill_at + self.shift_steps()
        return c.refill_at

    def shift_steps(self) -> int:
        """delay_aware: how many steps a request's answer is moved on (the lead, at most to
        where two of its actions are still inside the deadline); 0 for the others."""
        if self.config.strategy != "delay_aware":
            return 0
        inside = math.floor(self.config.deadline_s * self.config.rate_hz + STEP_EPS)
        return min(self.lead_steps(), max(0, inside - 1))

    def request_origin(self, frame_stamp: float) -> float:
        """Where the answer to a request made now on `frame_stamp` starts: delay_aware moves it
        to the step the answer is expected at; the others keep the frame's stamp."""
        return frame_stamp + self.shift_steps() * self.config.period_s

    def pending_actions(self, now: float, steps: int) -> list[np.ndarray]:
        """The actions due at now, now + 1 period, ... (`steps` of them, fewer where the chunks
        run out): what runs while a request made now is answered (delay_aware rolls the
        observation's state forward through them). Changes nothing."""
        out = []
        for k in range(steps):
            due = self._due(now + k * self.config.period_s)
            if due is None:
                break
            out.append(due.action)
        return out

    def remaining(self, now: float) -> int:
        """Actions of the newest chunk not executed yet whose time has not passed and whose
        observation will still be within the deadline (the queue left)."""
        if not self.chunks:
            return 0
        c = self.chunks[-1]
        usable = min(len(c.actions), self._index(c, c.stamp + self.config.deadline_s) + 1)
        return max(0, usable - max(self._next_index, self._index(c, now), 0))

    # --- the control decision ---------------------------------------------------------
    def next_action(self, now: float, from_result: bool) -> Due | None:
        """The action to execute now (and the chunk it comes from), or None."""
        if not from_result and now - self.last_exec < 0.5 * self.config.period_s:
            return None  # a tick right after an action: timer jitter, not a slot
        due = self._due(now)
        if due is None:
            return None
        if self.chunks and due.serial == self.chunks[-1].serial:
            self._next_index = max(self._next_index, self._index(self.chunks[-1], now) + 1)
        due = self._blended(due, now)
        self.last_exec = now
        self.started = True
        return due

    def missed_tick(self, now: float) -> bool:
        """A chunk has run and no action went out for more than 1.5 periods."""
        return self.started and now - self.last_exec > 1.5 * self.config.period_s

    # --- internals ------------------------------------------------------------------------
    def _blended(self, due: Due, now: float) -> Due:
        """The hand-over blend (module docstring) applied to the action about to go out at
        `now`: only from a command that went out on the step before (the robot still doing it)."""
        n = self.config.blend_steps
        if due.serial != self._last_serial:  # a hand-over (or the first chunk after a stop)
            last = self._last_action
            moving = now - self.last_exec <= 1.5 * self.config.period_s
            self._blend_from = (last if n and moving and self.config.strategy != "ensemble"
                                and last is not None and last.shape == np.shape(due.action) else None)
            self._blend_done = 0
        self._last_serial = due.serial
        if self._blend_from is not None and self._blend_done < n:
            w = (self._blend_done + 1) / (n + 1)
            self._blend_done += 1
            due = due._replace(action=w * np.asarray(due.action) + (1.0 - w) * self._blend_from)
        self._last_action = np.array(due.action, np.float64)
        return due

    def _index(self, chunk: TimedChunk, t: float) -> int:
        return math.floor((t - chunk.origin) * self.config.rate_hz + STEP_EPS)

    def _usable(self, chunk: TimedChunk, t: float) -> int | None:
        """The index of `chunk`'s action for time `t`, or None (not started, run out, or its
        observation older than the deadline)."""
        k = self._index(chunk, t)
        if k < 0 or k >= len(chunk.actions) or t - chunk.stamp > self.config.deadline_s + 1e-9:
            return None
        return k

    def _due(self, t: float) -> Due | None:
        if self.config.strategy == "ensemble":
            return self._vote(t)
        # The newest chunk that has started governs (a delay-aware answer may wait for its
        # origin while the chunk before it plays the steps it was conditioned on).
        for c in reversed(self.chunks):
            if self._index(c, t) >= 0:
                k = self._usable(c, t)
                return None if k is None else Due(c.actions[k], c.stamp, c.serial)
        return None

    def _vote(self, t: float) -> Due | None:
        votes = [(c, k) for c in self.chunks if (k := self._usable(c, t)) is not None]
        if not votes:
            return None
        newest = votes[-1][0]
        half = self.config.ensemble_halflife_s
        if half <= 0:
            return Due(newest.actions[votes[-1][1]], newest.stamp, newest.serial)
        weights = np.array([0.5 ** ((newest.stamp - c.stamp) / half) for c, _ in votes])
        action = np.einsum("n,na->a", weights / weights.sum(), np.stack([c.actions[k] for c, k in votes]))
        return Due(action, newest.stamp, newest.serial)

    def _forget(self, now: float) -> None:
        """Drop chunks that can vote no more: older than the deadline, run out, or (except
        for an ensemble) replaced by a newer chunk that has started."""
        keep = [c for c in self.chunks if now - c.stamp <= self.config.deadline_s + 1e-9
                and self._index(c, now) < len(c.actions)]
        if self.config.strategy != "ensemble":
            started = [i for i, c in enumerate(keep) if self._index(c, now) >= 0]
            keep = keep[started[-1]:] if started else keep
        self.chunks = keep or self.chunks[-1:]
