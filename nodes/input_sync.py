"""Which depth image and joint state go with a camera frame: pure Python (no rclpy), tested in
tests/test_input_sync.py; policy_node keeps one buffer per input topic.

The inputs come on separate topics, and DDS orders nothing between topics: the colour image of
one instant can be handled before the depth image and joint state of that same instant, while
the previous instant's are still the latest. Pairing the frame with "the latest" then feeds
the policy an observation it was never trained on: this instant's picture with the last
instant's depth and proprio (in the sim graph that cost the driving policy 7 points of
success, in lane changes). So each frame is paired by header stamp: with the sample of each
input closest to the frame's stamp within a tolerance (an RGB-D camera stamps its aligned
depth with the colour image's stamp; joint states usually come faster than frames), waiting
while that sample may still arrive.

(The perception node's `perception_sync.ApproxTimeSync` emits each complete colour + depth +
CameraInfo set once and discards it: a hand-off to one worker. The policy node asks on its
chunk schedule, may ask twice about one frame (a new instruction) and can run without depth or
joints, so it looks samples up here instead.)
"""

from __future__ import annotations

import collections
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
