"""Two real rclpy nodes in two processes exchange sensor_msgs/Image over DDS."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros
PEER = os.path.join(os.path.dirname(__file__), "dds_image_peer.py")


@pytest.mark.parametrize("width,height", [(64, 48), (640, 480)])
def test_image_crosses_processes(width, height):
    count = 20
    topic = f"dds_test/image_{width}x{height}"
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("dds_image_sink", context=context)
    received = []
    node.create_subscription(
        Image, topic, received.append,
        QoSProfile(depth=count, reliability=ReliabilityPolicy.RELIABLE),
    )
    peer = subprocess.Popen([sys.executable, PEER, topic, str(count), str(width), str(height)],
                            stderr=subprocess.PIPE, text=True)
    try:
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 30.0
        while len(received) < count and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert peer.wait(timeout=30) == 0, peer.stderr.read()
    finally:
        if peer.poll() is None:
            peer.kill()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert len(received) == count
    for i, msg in enumerate(received):
        assert msg.header.frame_id == f"frame_{i}"
        assert (msg.width, msg.height, msg.encoding, msg.step) == (width, height, "rgb8", width * 3)
        pixels = np.frombuffer(bytes(msg.data), dtype=np.uint8)
        assert pixels.size == width * height * 3 and np.all(pixels == i)
