"""Which inputs belong together, and how they are handed on: pure Python (no rclpy), tested on
a fake clock (tests/test_input_sync.py, tests/test_perception_node.py).

The inputs come on separate topics, and DDS orders nothing between topics: the colour image of
one instant can be handled before the depth image and joint state of that same instant, while
the previous instant's are still the latest. Pairing the frame with "the latest" then feeds
the policy an observation it was never trained on: this instant's picture with the last
instant's depth and proprio (in the sim graph that cost the driving policy 7 points of
success, in lane changes). So each frame is paired by header stamp.

- StampedBuffer (the policy node, through control/policy_loop.py; one per input topic): the
  sample of an input closest to a frame's stamp within a tolerance (an RGB-D camera stamps its
  aligned depth with the colour image's stamp; joint states usually come faster than frames),
  waiting while that sample may still arrive. The policy node asks on its chunk schedule, may
  ask twice about one frame (a new instruction) and can run without depth or joints, so it
  looks samples up.
- ApproxTimeSync (the perception node): emits each complete colour + depth + CameraInfo set
  once and discards it, a hand-off to one worker. ``message_filters`` (ROS's
  ApproximateTimeSynchronizer) is not on PyPI, hence our own: each stream keeps its last few
  messages; whenever a message arrives, the newest colour frame that has a depth frame and a
  CameraInfo within ``slop_s`` of its stamp is emitted with them, and everything up to it is
  discarded (an older frame never follows a newer one).
- LatestSlot: a one-slot hand-off to a worker thread that drops rather than queues (both
  nodes' inference workers).
- PromptHolder: the perception node's prompt and its expiry.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any


class StampedBuffer:
    """The last few (stamp, value) samples of one input, in arrival order."""

    def __init__(self, size: int = 8):
        if size < 1:
            raise ValueError(f"size={size} must be >= 1")
        self._items: collections.deque = collections.deque(maxlen=size)

    def add(self, stamp: float, value: Any) -> None:
        self._items.append((float(stamp), value))

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def latest(self):
        return self._items[-1][1] if self._items else None

    def match(self, stamp: float, tolerance_s: float) -> tuple[str, Any]:
        """The sample for a frame stamped `stamp`:

        - ("ok", value): the sample closest to `stamp`, no further than `tolerance_s`;
        - ("wait", None): none that close yet, and none stamped later than `stamp` +
          `tolerance_s` either, so the matching one may still come (ask again when it does);
        - ("closest", value): none within the tolerance and a later one already here, so
          none ever will: the closest sample, for the caller to use and count;
        - ("empty", None): no sample at all.
        """
        if not self._items:
            return "empty", None
        best_stamp, best = min(self._items, key=lambda item: abs(item[0] - stamp))
        if abs(best_stamp - stamp) <= tolerance_s:
            return "ok", best
        if max(s for s, _ in self._items) < stamp + tolerance_s:
            return "wait", None
        return "closest", best


#: What ApproxTimeSync matches: colour, depth and CameraInfo.
STREAMS = ("rgb", "depth", "info")


class ApproxTimeSync:
    """Match colour, depth and CameraInfo by stamp (seconds); see the module docstring."""

    def __init__(self, slop_s: float = 0.02, queue_size: int = 5):
        if not slop_s >= 0:
            raise ValueError(f"slop_s={slop_s} must be >= 0")
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size} must be >= 1")
        self.slop_s = float(slop_s)
        self._queues: dict[str, collections.deque] = {s: collections.deque(maxlen=queue_size) for s in STREAMS}
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
