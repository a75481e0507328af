"""Message boundary: good messages convert exactly, every malformed case is rejected with a reason."""

import numpy as np
import pytest
from sensor_msgs.msg import Image

from embodied_stack.nodes.conversions import (
    K_to_camera_info,
    MessageRejected,
    camera_info_to_K,
    check_instruction,
    depth_to_image,
    image_to_depth,
    image_to_rgb,
    rgb_to_image,
    seconds_to_stamp,
    stamp_to_seconds,
)

STAMP = seconds_to_stamp(12.25)


def test_rgb_and_bgr_round_trip_with_row_padding():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, STAMP, "cam")
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    padded = Image(height=6, width=5, encoding="bgr8", step=20)
    rows = np.zeros((6, 20), np.uint8)
    rows[:, :15] = rgb[..., ::-1].reshape(6, 15)
    padded.data = rows.tobytes()
    np.testing.assert_array_equal(image_to_rgb(padded), rgb)


def test_depth_encodings_and_invalid_pixels():
    depth = np.full((4, 4), 1.5, np.float32)
    depth[0, 0], depth[0, 1], depth[0, 2] = np.nan, np.inf, -1.0
    out = image_to_depth(depth_to_image(depth, STAMP, "cam"))
    assert out[0, :3].tolist() == [0.0, 0.0, 0.0] and out[1, 1] == pytest.approx(1.5)
    mm = Image(height=2, width=2, encoding="16UC1", step=4,
               data=np.array([[1000, 0], [2500, 65535]], np.uint16).tobytes())
    np.testing.assert_allclose(image_to_depth(mm), [[1.0, 0.0], [2.5, 65.535]])
    big = Image(height=1, width=1, encoding="16UC1", step=2, is_bigendian=1,
                data=np.array([1500], ">u2").tobytes())
    assert image_to_depth(big)[0, 0] == pytest.approx(1.5)


@pytest.mark.parametrize("make,reason", [
    (lambda: Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)), "encoding"),
    (lambda: Image(height=4, width=4, encoding="rgb8", step=10, data=bytes(40)), "step"),
    (lambda: Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(10)), "bytes"),
    (lambda: Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "empty"),
])
def test_malformed_colour_rejected(make, reason):
    with pytest.raises(MessageRejected, match=reason):
        image_to_rgb(make())


def test_all_nan_depth_is_valid_no_return_but_negative_frames_are_rejected():
    """REP-118: NaN is "no return" (sky, far range): a vehicle camera seeing mostly sky must
    not be stopped. Negative depth is written by no sensor: a mostly negative frame is corrupt."""
    msg = depth_to_image(np.full((4, 4), np.nan, np.float32), STAMP, "cam")
    np.testing.assert_array_equal(image_to_depth(msg), np.zeros((4, 4), np.float32))
    msg = depth_to_image(np.full((4, 4), -1.0, np.float32), STAMP, "cam")
    with pytest.raises(MessageRejected, match="negative"):
        image_to_depth(msg)


def test_camera_info():
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 31.5], [0, 0, 1]])
    np.testing.assert_allclose(camera_info_to_K(K_to_camera_info(K, 64, 64, STAMP, "cam")), K)
    bad = K_to_camera_info(K * np.array([[0], [1], [1]]), 64, 64, STAMP, "cam")
    with pytest.raises(MessageRejected, match="focal"):
        camera_info_to_K(bad)
    with pytest.raises(MessageRejected, match="empty"):
        camera_info_to_K(K_to_camera_info(K, 0, 0, STAMP, "cam"))


def test_instruction_limits():
    assert check_instruction("  touch   the red cube ") == "touch the red cube"
    with pytest.raises(MessageRejected, match="characters"):
        check_instruction("x" * 1_000_000)
    with pytest.raises(MessageRejected, match="empty"):
        check_instruction("   ")
    with pytest.raises(MessageRejected, match="non-printable"):
        check_instruction("go\x00left")


def test_stamp_round_trip():
    assert stamp_to_seconds(STAMP) == pytest.approx(12.25)
    assert seconds_to_stamp(1.9999999999).nanosec <= 999_999_999
