"""When policy_node asks for a chunk and which action it executes: pure Python (no rclpy), so
the timing rules are tested on a fake clock (tests/test_chunk_scheduler.py). PolicyLoop
(control/policy_loop.py) drives it, with control/safety.py, and the node only wires ROS to that.

Rules:
- A chunk of T actions is executed one action per control period (1 / ``rate_hz``). The next
  chunk is requested when ``refill_at`` actions remain, so it is usually ready before the queue
  runs dry; one request is in flight at a time, and only for a frame not asked about yet.
- A result is judged by the age of the observation it answers: older than ``deadline_s`` when
  it is ready -> dropped (never executed). Otherwise the actions whose time has already passed
  (age x rate of them, never the last) are skipped, so a slow answer does not replay the past.
- Instruction epochs: a new instruction starts a new epoch and clears the queue; a result of
  an older epoch (an inference that was in flight when the instruction changed) is discarded.
- ``execute_steps`` > 0 cuts every chunk to its first actions (receding horizon).
- Actions go out on the node's control timer at ``rate_hz``, plus one exception that keeps
  the camera -> command latency at the model's: a fresh chunk's first action goes out the
  moment the result is ready (the refill usually arrives before the old chunk's last action
  plays, and replaces it). So per chunk, T - refill_at - 1 actions go out on ticks plus the
  early first one: at most (T - refill_at) / (T - refill_at - 1) x ``rate_hz`` commands
  (1.5x for the default 4-action chunks refilled at 1), each answering the freshest frame.
  A tick within half a period of the last action executes nothing (timer jitter must not
  run the chunk early).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SchedulerConfig:
    rate_hz: float = 10.0  #: control (command) rate, Hz, in (0, 1000]
    deadline_s: float = 0.3  #: drop a result whose observation is older than this (s), > 0
    refill_at: int = 1  #: request the next chunk when this many actions remain, >= 0
    execute_steps: int = 0  #: execute only the first N actions of each chunk (0 = all), >= 0

    def __post_init__(self):
        if not 0 < self.rate_hz <= 1000:
            raise ValueError(f"rate_hz={self.rate_hz} outside (0, 1000]")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s={self.deadline_s} must be > 0")
        if self.refill_at < 0 or self.execute_steps < 0:
            raise ValueError(f"refill_at={self.refill_at}, execute_steps={self.execute_steps} "
                             "must be >= 0")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


class ChunkScheduler:
    """The chunk queue of policy_node. Not thread-safe: PolicyLoop calls it under its lock."""

    def __init__(self, config: SchedulerConfig | None = None):
        self.config = config or SchedulerConfig()
        self.epoch = 0  #: instruction epoch; results of older epochs are discarded
        self.queue: collections.deque = collections.deque()  # (action, observation stamp)
        self.inflight = False
        self.last_requested_stamp: float | None = None
        self.last_exec = -float("inf")
        self.started = False  # a chunk has been executed since the last reset

    def reconfigure(self, **changes) -> None:
        """New rate, deadline, refill_at or execute_steps (validated; the queue is kept)."""
        self.config = dataclasses.replace(self.config, **changes)

    # --- events ----------------------------------------------------------------------
    def new_instruction(self) -> None:
        self.epoch += 1
        self.queue.clear()
        self.last_requested_stamp = None
        self.started = False

    def clear(self) -> None:
        """Drop the queued actions (e-stop, fault)."""
        self.queue.clear()

    def wants_request(self, frame_stamp: float | None) -> bool:
        """Whether to ask the backend for a chunk on the frame stamped `frame_stamp`."""
        if self.inflight or frame_stamp is None:
            return False
        if len(self.queue) > self.config.refill_at:
            return False
        return frame_stamp != self.last_requested_stamp

    def start_request(self, frame_stamp: float) -> int:
        """Mark a request as sent; returns the epoch to hand back with its result."""
        self.inflight = True
        self.last_requested_stamp = frame_stamp
        return self.epoch

    def finish(self, chunk, obs_stamp: float, epoch: int, now: float) -> tuple[str, float]:
        """A result arrived: ("queued" | "superseded" | "late", observation age in s)."""
        self.inflight = False
        age = max(0.0, now - obs_stamp)  # (input stamps are bounded to the clock upstream)
        if epoch != self.epoch:
            return "superseded", age
        if age > self.config.deadline_s:
            self.queue.clear()
            return "late", age
        chunk = np.asarray(chunk, np.float64)
        if self.config.execute_steps:
            chunk = chunk[: self.config.execute_steps]
        skip = min(int(age * self.config.rate_hz), len(chunk) - 1)
        self.queue = collections.deque((a, obs_stamp) for a in chunk[skip:])
        return "queued", age

    def failed(self) -> None:
        """The backend raised: nothing in flight, nothing queued."""
        self.inflight = False
        self.queue.clear()

    # --- the control decision ---------------------------------------------------------
    def next_action(self, now: float, from_result: bool):
        """(action, observation stamp) to execute now, or None."""
        if not self.queue:
            return None
        if not from_result and now - self.last_exec < 0.5 * self.config.period_s:
            return None  # a tick right after an action: timer jitter, not a slot
        self.last_exec = now
        self.started = True
        return self.queue.popleft()

    def missed_tick(self, now: float) -> bool:
        """A chunk has run and no action went out for more than 1.5 periods."""
        return self.started and now - self.last_exec > 1.5 * self.config.period_s
