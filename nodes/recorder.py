"""bag_recorder: records topics to an MCAP rosbag2 (viewable in Foxglove, `ros2 bag play`).

Messages are taken serialised (raw CDR) from DDS and written as they are, with rosbags'
rosbag2 writer (storage `mcap`, metadata version 9), so no ROS 2 install is needed to record
and the messages are byte-identical to what `ros2 bag record` stores. Each is logged at its
publish time (the DDS source timestamp), so the bag keeps the order the graph published in.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

#: topic -> (message type, QoS kind) recorded by the demo and `embodied-stack record`
#: (policy_node/command_source pairs each command with the frame it answers: sim/datasets/from_bag.py).
DEMO_TOPICS = {
    "camera/color/image_raw": ("sensor_msgs/msg/Image", "sensor"),
    "camera/depth/image_raw": ("sensor_msgs/msg/Image", "sensor"),
    "camera/color/camera_info": ("sensor_msgs/msg/CameraInfo", "sensor"),
    "joint_states": ("sensor_msgs/msg/JointState", "reliable"),
    "odom": ("nav_msgs/msg/Odometry", "reliable"),
    "instruction": ("std_msgs/msg/String", "latched"),
    "estop": ("std_msgs/msg/Bool", "latched"),
    "cmd_vel": ("geometry_msgs/msg/TwistStamped", "reliable"),
    "servo/delta_twist_cmds": ("geometry_msgs/msg/TwistStamped", "reliable"),
    "joint_commands": ("std_msgs/msg/Float64MultiArray", "reliable"),
    "gripper_command": ("std_msgs/msg/Float64", "reliable"),
    "plan": ("nav_msgs/msg/Path", "reliable"),
    "target_point": ("geometry_msgs/msg/PointStamped", "reliable"),
    "policy_node/command_source": ("std_msgs/msg/Header", "reliable"),
    "sim/expert_action": ("sensor_msgs/msg/JointState", "reliable"),
    "sim/expert_features": ("sensor_msgs/msg/JointState", "reliable"),
    "/diagnostics": ("diagnostic_msgs/msg/DiagnosticArray", "reliable"),
    "/clock": ("rosgraph_msgs/msg/Clock", "reliable"),
}


#: Whether this rclpy gives subscription callbacks the message info, with the DDS publish
#: time of each message (Jazzy's and Kilted's do; without it, arrival times are logged).
_MESSAGE_INFO = hasattr(Subscription, "CallbackType")


def _qos(kind: str) -> QoSProfile:
    if kind == "sensor":
        # Best effort, as the camera publishes, but a deep queue: a lockstep sim sends frames
        # in bursts faster than one executor thread may take them, and a recorder that drops a
        # frame leaves a hole in a dataset.
        return QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
    if kind == "latched":
        return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def _import_type(name: str):
    package, _, cls = name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), cls)


class BagRecorder(Node):
    """Subscribes raw to `topics` and writes every message into an MCAP rosbag2 at `path`."""

    def __init__(self, path: str | Path, topics: dict = DEMO_TOPICS, **node_kwargs):
        super().__init__("bag_recorder", **node_kwargs)
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists; choose a new path")
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        typestore = get_typestore(Stores.ROS2_KILTED)
        for topic, (msgtype, kind) in topics.items():
            full = topic if topic.startswith("/") else "/" + topic
            conn = self._writer.add_connection(full, msgtype, typestore=typestore)
            if _MESSAGE_INFO:  # rclpy hands (message, info) to a two-argument callback
                def callback(data, info, c=conn, t=full):
                    self._write(c, t, data, info)
            else:
                def callback(data, c=conn, t=full):
                    self._write(c, t, data)
            self.create_subscription(_import_type(msgtype), topic, callback, _qos(kind), raw=True)

    def _write(self, connection, topic: str, data: bytes, info=None) -> None:
        # The log time is when the message was published (DDS source timestamp, where this
        # rclpy hands it to the callback), else when it arrived: across topics, publish order
        # is what pairs a command with the frame it answers (sim/datasets/from_bag.py), and
        # arrival order under load need not keep it.
        stamp = int(info["source_timestamp"]) if info and info.get("source_timestamp") else 0
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(connection, stamp or self.get_clock().now().nanoseconds, data)
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
