"""StampedBuffer: which depth image / joint state goes with a camera frame (control/input_sync.py)."""

import pytest

from embodied_stack.control.input_sync import StampedBuffer


def test_the_sample_of_the_frames_instant_wins_over_the_latest():
    buf = StampedBuffer()
    buf.add(1.0, "a")
    buf.add(1.1, "b")
    assert buf.match(1.0, 0.02) == ("ok", "a")  # not "b", the latest
    assert buf.match(1.105, 0.02) == ("ok", "b")
    assert buf.latest == "b"


def test_wait_while_the_matching_sample_may_still_come():
    buf = StampedBuffer()
    buf.add(1.0, "a")
    assert buf.match(1.1, 0.02) == ("wait", None)  # the frame came before its depth
    buf.add(1.1, "b")
    assert buf.match(1.1, 0.02) == ("ok", "b")


def test_closest_when_the_match_can_no_longer_come():
    buf = StampedBuffer()
    buf.add(1.0, "a")
    buf.add(1.25, "c")  # later than the frame: nothing stamped 1.1 will follow
    assert buf.match(1.1, 0.02) == ("closest", "a")
    assert buf.match(1.24, 0.0) == ("closest", "c")


def test_empty_and_bounded():
    buf = StampedBuffer(size=2)
    assert buf.match(0.0, 1.0) == ("empty", None)
    for k in range(5):
        buf.add(float(k), k)
    assert len(buf) == 2 and buf.match(0.0, 0.5) == ("closest", 3)
    with pytest.raises(ValueError, match="size=0"):
        StampedBuffer(size=0)
