"""Peer process for test_ros_dds: publishes N numbered sensor_msgs/Image once a subscriber
has matched, then exits. Usage: python dds_image_peer.py TOPIC N WIDTH HEIGHT"""

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def main():
    topic, count, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rclpy.init()
    node = rclpy.create_node("dds_image_peer")
    qos = QoSProfile(depth=count, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, topic, qos)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if pub.get_subscription_count() == 0:
        print("no subscriber matched", file=sys.stderr)
        sys.exit(3)
    for i in range(count):
        msg = Image()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = f"frame_{i}"
        msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
        # Pixel values encode the sequence number so the receiver can check the content.
        msg.data = np.full((height, width, 3), i % 256, dtype=np.uint8).tobytes()
        pub.publish(msg)
        time.sleep(1.0 / 30.0)
    time.sleep(1.0)  # let reliable delivery finish before tearing down
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
