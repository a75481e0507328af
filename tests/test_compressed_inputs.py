"""Real camera inputs over DDS: the policy node subscribed to image_transport's `compressed`
colour topic (JPEG/PNG, `<base>/compressed`) and `compressedDepth` depth topic
(`color_transport`, `depth_transport`), a driver node publishing what a network camera would.
Decoded frames reach the policy (PNG colour exactly, quantised inverse depth within its
resolution), malformed payloads are rejected with a reason on /diagnostics and the node keeps
answering. The conversions themselves: tests/test_conversions.py; the sim graph end to end
with compressed streams: tests/test_sim_graph.py."""

import time

import numpy as np
import pytest
from ros_harness import wait_for
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header
from test_policy_node import Harness, ScriptedPolicy

from embodied_stack.control.image_codecs import DEPTH_HEADER
from embodied_stack.nodes.conversions import depth_to_compressed_depth
from embodied_stack.nodes.policy_node import PolicyNode

pytestmark = pytest.mark.ros

COMPRESSED = {"color_transport": "compressed", "depth_transport": "compressedDepth"}


class RecordingPolicy(ScriptedPolicy):
    """Keeps the images it was given."""

    def __init__(self):
        super().__init__()
        self.frames = []

    def select_action(self, obs):
        self.frames.append((obs.rgb.copy(), None if obs.depth is None else obs.depth.copy()))
        return super().select_action(obs)


def test_compressed_colour_and_depth_reach_the_policy():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    depth = np.linspace(0.4, 3.0, 256, dtype=np.float32).reshape(16, 16)
    depth[0, 0] = 0.0  # no return stays no return
    policy = RecordingPolicy()
    h = Harness(policy, **COMPRESSED)
    try:
        end = time.monotonic() + 10.0
        while time.monotonic() < end and not (policy.frames and h.moves_after(0.0)):
            h.send_frame(rgb=rgb, depth=depth)
            time.sleep(0.05)
        assert policy.frames and h.moves_after(0.0), h.node.loop.rejections
    finally:
        h.close()
    seen_rgb, seen_depth = policy.frames[-1]
    assert np.array_equal(seen_rgb, rgb)  # PNG is lossless, and BGR came back as RGB
    assert seen_depth[0, 0] == 0.0
    np.testing.assert_allclose(seen_depth[1:], depth[1:], rtol=2e-3)  # inverse-depth quantisation
    assert not h.node.loop.rejections


def _garbage_colour(stamp):
    return CompressedImage(header=Header(stamp=stamp, frame_id="cam"), format="rgb8; jpeg compressed bgr8",
                           data=b"definitely not a jpeg")


def _short_depth(stamp):
    return CompressedImage(header=Header(stamp=stamp, frame_id="cam"), format="32FC1; compressedDepth png",
                           data=b"\x00" * 5)


def _bad_quantisation(stamp):
    msg = depth_to_compressed_depth(np.ones((16, 16), np.float32), stamp, "cam")
    msg.data = np.array([(0, -1.0, 0.0)], DEPTH_HEADER).tobytes() + bytes(msg.data)[DEPTH_HEADER.itemsize:]
    return msg


BAD = {
    "undecodable colour": ("camera/color/image_raw/compressed", _garbage_colour, "not a decodable JPEG or PNG"),
    "truncated depth": ("camera/depth/image_raw/compressedDepth", _short_depth, "12-byte header"),
    "bad quantisation": ("camera/depth/image_raw/compressedDepth", _bad_quantisation, "quantisation"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_compressed_payloads_are_rejected_with_a_reason(case):
    topic, make, words = BAD[case]
    h = Harness(ScriptedPolicy(), **COMPRESSED)
    try:
        assert h.stream_until(lambda: h.moves_after(0.0))
        pub = h.rgb_pub if "color" in topic else h.depth_pub
        pub.publish(make(h.driver.get_clock().now().to_msg()))
        assert wait_for(lambda: h.diag_values(f"rejected.{topic}")), h.node.loop.rejections
        assert words in h.diag_values(f"rejected.{topic}")[-1]
        mark = time.monotonic()
        assert h.stream_until(lambda: h.moves_after(mark)), "node stopped answering"
    finally:
        h.close()


def test_an_unknown_transport_fails_at_start_up_naming_the_choices():
    import rclpy
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match=r"color_transport 'theora' not in \['compressed', 'raw'\]"):
            PolicyNode(policy=ScriptedPolicy(), context=context,
                       parameter_overrides=[Parameter("color_transport", value="theora")])
    finally:
        rclpy.shutdown(context=context)
