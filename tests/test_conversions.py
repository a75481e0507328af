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
    odometry_motion,
    rgb_to_image,
    seconds_to_stamp,
    stamp_to_seconds,
)

STAMP = seconds_to_stamp(12.25)


def test_odometry_gives_speed_and_yaw_rate_and_rejects_nan():
    from nav_msgs.msg import Odometry

    msg = Odometry()
    msg.twist.twist.linear.x, msg.twist.twist.angular.z = 8.5, -0.25
    assert odometry_motion(msg) == (8.5, -0.25)
    msg.twist.twist.angular.z = float("nan")
    with pytest.raises(MessageRejected, match="NaN"):
        odometry_motion(msg)


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


# --- compressed images (image_transport's compressed / compressedDepth) -----------------------

def _compressed(image_bgr, ext, fmt):
    import cv2
    from sensor_msgs.msg import CompressedImage

    ok, buf = cv2.imencode(ext, image_bgr)
    assert ok
    return CompressedImage(format=fmt, data=buf.tobytes())


def test_compressed_colour_follows_the_format_string_and_round_trips():
    from embodied_stack.nodes.conversions import compressed_to_rgb, rgb_to_compressed

    rgb = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    msg = rgb_to_compressed(rgb, STAMP, "cam", "png")
    assert msg.format == "rgb8; png compressed bgr8" and msg.header.frame_id == "cam"
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)
    # a payload stored in RGB order says so ("compressed rgb8"); a bare "png" is BGR (older
    # compressed_image_transport); a mono image becomes grey RGB
    np.testing.assert_array_equal(compressed_to_rgb(_compressed(rgb, ".png", "rgb8; png compressed rgb8")), rgb)
    np.testing.assert_array_equal(compressed_to_rgb(_compressed(rgb[..., ::-1], ".png", "png")), rgb)
    grey = compressed_to_rgb(_compressed(rgb[..., 0], ".png", "mono8; png compressed mono8"))
    assert grey.shape == (12, 10, 3) and np.array_equal(grey[..., 1], rgb[..., 0])
    smooth = np.tile(np.linspace(0, 255, 10, dtype=np.uint8)[None, :, None], (12, 1, 3))
    jpeg = rgb_to_compressed(smooth, STAMP, "cam", "jpeg")
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(compressed_to_rgb(jpeg).astype(int) - smooth).max() <= 8
    # 4:4:4 (the default) keeps the colour of a small object that 4:2:0 smears over its
    # neighbours: a 2x2 red square on grey, as small as a far cube at the policy's 64x64
    spot = np.full((16, 16, 3), 128, np.uint8)
    spot[7:9, 7:9] = (220, 30, 30)
    error = {sub: np.abs(compressed_to_rgb(rgb_to_compressed(spot, STAMP, "cam", "jpeg", jpeg_subsampling=sub))
                         [7:9, 7:9].astype(int) - spot[7:9, 7:9]).max() for sub in ("444", "420")}
    assert error["444"] <= 20 < 40 < error["420"], error
    with pytest.raises(ValueError, match="jpeg_subsampling"):
        rgb_to_compressed(spot, STAMP, "cam", "jpeg", jpeg_subsampling="411")


def test_compressed_depth_decodes_both_encodings_from_the_documented_layout():
    import cv2

    from embodied_stack.control.image_codecs import DEPTH_HEADER
    from embodied_stack.nodes.conversions import compressed_depth_to_depth, depth_to_compressed_depth

    depth = np.random.default_rng(2).uniform(0.2, 80.0, (9, 7)).astype(np.float32)
    depth[0, 0], depth[0, 1], depth[0, 2] = 0.0, np.nan, 150.0  # no return, NaN, beyond depth_max
    msg = depth_to_compressed_depth(depth, STAMP, "cam", depth_max=100.0, quantization=100.0)
    assert msg.format == "32FC1; compressedDepth png" and DEPTH_HEADER.itemsize == 12
    header = np.frombuffer(bytes(msg.data)[:12], DEPTH_HEADER)[0]
    assert header["format"] == 0 and header["quant_a"] == pytest.approx(10100.0)
    out = compressed_depth_to_depth(msg)
    assert out.dtype == np.float32 and list(out[0, :3]) == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(out.ravel()[3:], depth.ravel()[3:], rtol=1e-2)  # d / a per unit
    mm = np.array([[0, 500], [1234, 65000]], np.uint16)  # 16UC1: millimetres in the PNG
    ok, png = cv2.imencode(".png", mm)
    from sensor_msgs.msg import CompressedImage

    raw16 = CompressedImage(format="16UC1; compressedDepth png",
                            data=np.zeros(1, DEPTH_HEADER).tobytes() + png.tobytes())
    np.testing.assert_allclose(compressed_depth_to_depth(raw16), [[0.0, 0.5], [1.234, 65.0]], rtol=1e-6)


@pytest.mark.parametrize("fmt,data,words", [
    ("rgb8; jpeg compressed bgr8", b"", "empty data"),
    ("rgb8; jpeg compressed bgr8", b"\xff\xd8\xff garbage", "not a decodable JPEG or PNG"),
    ("rgb8; theora", b"\x00" * 32, "not supported"),
    ("16UC1; compressedDepth png", b"\x00" * 10, "12-byte header"),
    ("16UC1; compressedDepth rvl", b"\x00" * 40, "RVL"),
    ("8UC3; compressedDepth png", b"\x00" * 40, "encoding '8UC3'"),
    ("16UC1", b"\x00" * 40, "not image_transport's compressedDepth"),
])
def test_malformed_compressed_payloads_are_rejected_with_a_reason(fmt, data, words):
    from sensor_msgs.msg import CompressedImage

    from embodied_stack.nodes.conversions import compressed_depth_to_depth, compressed_to_rgb

    convert = compressed_depth_to_depth if fmt.startswith(("16UC1", "8UC3")) else compressed_to_rgb
    with pytest.raises(MessageRejected, match=words):
        convert(CompressedImage(format=fmt, data=data))


def test_a_depth_png_of_8_bit_colour_is_rejected():
    from embodied_stack.control.image_codecs import DEPTH_HEADER
    from embodied_stack.nodes.conversions import compressed_depth_to_depth

    msg = _compressed(np.zeros((4, 4, 3), np.uint8), ".png", "32FC1; compressedDepth png")
    msg.data = np.array([(0, 10100.0, -100.0)], DEPTH_HEADER).tobytes() + bytes(msg.data)
    with pytest.raises(MessageRejected, match="expected one 16-bit channel"):
        compressed_depth_to_depth(msg)


@pytest.mark.parametrize("dims", [2, 3, 4, 7, 24])
def test_expert_action_round_trips_every_dim(dims):
    """sim/expert_action carries a car's 2, an arm's 3, Meta-World's 4 (gripper included), a
    7-DoF arm's or a hand's dims, named; a message that does not fit the policy is rejected."""
    from embodied_stack.nodes.conversions import (
        MessageRejected,
        expert_action_msg,
        expert_action_values,
        seconds_to_stamp,
    )

    action = np.linspace(-0.9, 0.7, dims)
    names = [f"a{i}" for i in range(dims)]
    msg = expert_action_msg(action, names, seconds_to_stamp(1.5))
    assert list(msg.name) == names and msg.header.stamp.sec == 1
    np.testing.assert_allclose(expert_action_values(msg, dims), action)
    with pytest.raises(MessageRejected, match=f"carries {dims} values .* acts on {dims + 1}"):
        expert_action_values(msg, dims + 1)
    msg.position[0] = float("nan")
    with pytest.raises(MessageRejected, match="non-finite"):
        expert_action_values(msg, dims)
    with pytest.raises(ValueError, match=f"{dims} values for {dims + 1} names"):
        expert_action_msg(action, names + ["extra"], seconds_to_stamp(0.0))
