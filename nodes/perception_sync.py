"""Timing logic of the perception node, in plain Python (no rclpy) so it is tested on a fake
clock: an approximate-time synchroniser for colour + depth + CameraInfo, a one-slot frame
hand-off that drops rather than queues, and the prompt's expiry.

``message_filters`` (ROS's ApproximateTimeSynchronizer) is not on PyPI, hence our own: each
stream keeps its last few messages; whenever a message arrives, the newest colour frame that
has a depth frame and a CameraInfo within ``slop_s`` of its stamp is emitted with them, and
everything up to it is discarded (an older frame never follows a newer one).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

STREAMS = ("rgb", "depth", "info")


class ApproxTimeSync:
    """Match colour, depth and CameraInfo by stamp (seconds); see the module docstring."""

    def __init__(self, slop_s: float = 0.02, queue_size: int = 5):
        if not slop_s >= 0:
            raise ValueError(f"slop_s={slop_s} must be >= 0")
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size} must be >= 1")
        self.slop_s = float(slop_s)
        self._queues = {s: deque(maxlen=queue_size) for s in STREAMS}
        self.matched = 0
        self.unmatched_dropped = 0  # colour frames discarded without a partner

    def add(self, stream: str, stamp: float, payload) -> tuple[float, dict] | None:
        """Add one message; returns (colour stamp, {stream: payload}) when a set is complete."""
        queue = self._queues[stream]
        if queue and stamp < queue[-1][0]:  # out of order: an older frame after a newer one
            return None
        if stream == "rgb" and len(queue) == queue.maxlen:
            self.unmatched_dropped += 1
        queue.append((stamp, payload))
        return self._match()

    def _closest(self, stream: str, stamp: float):
        best = None
        for i, (s, p) in enumerate(self._queues[stream]):
            if abs(s - stamp) <= self.slop_s and (best is None or abs(s - stamp) < best[0]):
                best = (abs(s - stamp), i, s, p)
        return best

    def _match(self):
        rgb = self._queues["rgb"]
        for k in range(len(rgb) - 1, -1, -1):
            stamp, colour = rgb[k]
            depth = self._closest("depth", stamp)
            info = self._closest("info", stamp)
            if depth is None or info is None:
                continue
            # Emit, and drop everything up to the matched messages.
            self.unmatched_dropped += k
            for _ in range(k + 1):
                rgb.popleft()
            for stream, hit in (("depth", depth), ("info", info)):
                for _ in range(hit[1] + 1):
                    self._queues[stream].popleft()
            self.matched += 1
            return stamp, {"rgb": colour, "depth": depth[3], "info": info[3]}
        return None


class LatestSlot:
    """Hands the newest item to one worker thread; an item not yet taken is replaced (and
    counted as dropped), never queued. ``take`` waits until an item is there and at least
    ``min_period_s`` has passed since the previous take (by ``clock``)."""

    def __init__(self, min_period_s: float, clock):
        self.min_period_s = float(min_period_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._item = None
        self._last_take = None
        self._closed = False
        self.dropped = 0
        self.offered = 0

    def offer(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.offered += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_time(self) -> float:
        """Seconds until the next take is allowed (0 when it is)."""
        if self._last_take is None:
            return 0.0
        return max(0.0, self._last_take + self.min_period_s - self._clock())

    def take(self, timeout: float | None = None):
        """The newest item, or None when closed or on timeout."""
        with self._cond:
            while not self._closed:
                wait = self.wait_time()
                if self._item is not None and wait <= 0:
                    item, self._item = self._item, None
                    self._last_take = self._clock()
                    return item
                if not self._cond.wait(timeout=wait if self._item is not None else timeout):
                    if self._item is None:
                        return None
            return None


@dataclass
class PromptHolder:
    """The latest prompt and when it arrived (node clock); it expires after ``ttl_s``
    (0: never)."""

    ttl_s: float = 1.0
    _prompt: object = None
    _since: float = field(default=-float("inf"))

    def set(self, prompt, now: float) -> None:
        self._prompt, self._since = prompt, now

    def clear(self) -> None:
        self._prompt = None

    def current(self, now: float):
        if self._prompt is None:
            return None
        if self.ttl_s > 0 and now - self._since > self.ttl_s:
            return None
        return self._prompt
