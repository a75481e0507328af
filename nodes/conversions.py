"""ROS message <-> NumPy conversion, and the boundary where malformed messages are rejected.

Every function that reads a message either returns clean values or raises `MessageRejected`
with a one-line reason; the node logs the reason (throttled), reports it on /diagnostics and
keeps its last good state (docs/architecture.md, safety rules). The functions that build
messages (images, commands, plans) take plain values; the perception node's objects are in
nodes/object_msgs.py. Nothing here holds node state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray

from embodied_stack.control.image_codecs import (
    MAX_IMAGE_SIDE,
    MessageRejected,
    decode_color,
    decode_depth,
    encode_color,
    encode_depth,
)

#: Longest instruction accepted, in characters (a 1 MB string is rejected, not truncated).
MAX_INSTRUCTION_CHARS = 512

_COLOR_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    sec = math.floor(seconds)
    return Time(sec=int(sec), nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def _check_geometry(msg: Image, bytes_per_pixel: int) -> None:
    if msg.width == 0 or msg.height == 0:
        raise MessageRejected(f"image is empty ({msg.width}x{msg.height})")
    if msg.width > MAX_IMAGE_SIDE or msg.height > MAX_IMAGE_SIDE:
        raise MessageRejected(f"image {msg.width}x{msg.height} exceeds {MAX_IMAGE_SIDE} px a side")
    if msg.step < msg.width * bytes_per_pixel:
        raise MessageRejected(
            f"step {msg.step} < width {msg.width} x {bytes_per_pixel} bytes/pixel ({msg.encoding})"
        )
    if len(msg.data) != msg.step * msg.height:
        raise MessageRejected(
            f"data has {len(msg.data)} bytes, expected step {msg.step} x height {msg.height}"
        )


def _rows(msg: Image, dtype, channels: int) -> np.ndarray:
    """View the payload as (H, W, C) of dtype, dropping per-row padding beyond width."""
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    raw = np.ascontiguousarray(raw[:, : msg.width * channels * dtype.itemsize])
    return raw.view(dtype).astype(dtype.newbyteorder("="), copy=False).reshape(
        msg.height, msg.width, channels)


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8) -> (H, W, 3) uint8 RGB."""
    channels = _COLOR_ENCODINGS.get(msg.encoding)
    if channels is None:
        raise MessageRejected(
            f"colour encoding {msg.encoding!r} not supported (use one of {sorted(_COLOR_ENCODINGS)})"
        )
    _check_geometry(msg, channels)
    pixels = _rows(msg, np.uint8, channels)
    if msg.encoding.startswith("bgr"):
        pixels = pixels[..., 2::-1] if channels == 3 else pixels[..., [2, 1, 0]]
    return np.ascontiguousarray(pixels[..., :3])


def image_to_depth(msg: Image, max_depth_m: float = 100.0) -> np.ndarray:
    """sensor_msgs/Image depth (32FC1 metres or 16UC1 millimetres) -> (H, W) float32 metres.

    0 means no return. NaN and +-inf pixels are valid "no return" / out-of-range readings
    (REP 118: the sky, far range) and become 0, as do pixels beyond `max_depth_m`. A frame in
    which negative values (no sensor writes those) make up more than half the pixels is
    rejected as corrupt; isolated negative pixels become 0.
    """
    if msg.encoding == "32FC1":
        _check_geometry(msg, 4)
        depth = _rows(msg, np.float32, 1)[..., 0].astype(np.float32, copy=True)
    elif msg.encoding == "16UC1":
        _check_geometry(msg, 2)
        depth = _rows(msg, np.uint16, 1)[..., 0].astype(np.float32) * np.float32(1e-3)
    else:
        raise MessageRejected(f"depth encoding {msg.encoding!r} not supported (32FC1 or 16UC1)")
    finite = np.isfinite(depth)
    negative = finite & (depth < 0)
    if negative.mean() > 0.5:
        raise MessageRejected(f"depth frame is {negative.mean():.0%} negative values")
    depth[~finite | negative | (depth > max_depth_m)] = 0.0
    return depth


# --- compressed images (image_transport's `compressed` and `compressedDepth` transports) ------
# The byte-level codecs are control/image_codecs.py's; these wrap them around the message.


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (image_transport `compressed`) -> (H, W, 3) uint8 RGB
    (control/image_codecs.decode_color)."""
    return decode_color(bytes(msg.data), msg.format)


def compressed_depth_to_depth(msg: CompressedImage, max_depth_m: float = 100.0) -> np.ndarray:
    """sensor_msgs/CompressedImage (image_transport `compressedDepth`) -> (H, W) float32
    metres, 0 = no return, like image_to_depth (control/image_codecs.decode_depth)."""
    return decode_depth(bytes(msg.data), msg.format, max_depth_m)


#: image_transport transports a node may subscribe to: name -> (topic suffix, message type,
#: conversion), for colour and for depth.
COLOR_TRANSPORTS = {"raw": ("", Image, image_to_rgb),
                    "compressed": ("/compressed", CompressedImage, compressed_to_rgb)}
DEPTH_TRANSPORTS = {"raw": ("", Image, image_to_depth),
                    "compressedDepth": ("/compressedDepth", CompressedImage, compressed_depth_to_depth)}


def camera_transport(base_topic: str, transport: str, depth: bool = False):
    """(topic, message type, conversion) of `transport` for the image topic `base_topic`, as
    image_transport names them (`<base>/compressed`, `<base>/compressedDepth`); ValueError
    naming the allowed ones otherwise."""
    table = DEPTH_TRANSPORTS if depth else COLOR_TRANSPORTS
    if transport not in table:
        raise ValueError(f"{'depth' if depth else 'color'}_transport {transport!r} not in {sorted(table)}")
    suffix, msg_type, convert = table[transport]
    return base_topic + suffix, msg_type, convert


def rgb_to_compressed(rgb: np.ndarray, stamp: Time, frame_id: str, fmt: str = "jpeg",
                      jpeg_quality: int = 95, jpeg_subsampling: str = "444") -> CompressedImage:
    """(H, W, 3) uint8 RGB -> CompressedImage as compressed_image_transport publishes it
    (control/image_codecs.encode_color)."""
    msg_format, data = encode_color(rgb, fmt, jpeg_quality, jpeg_subsampling)
    msg = CompressedImage(format=msg_format, data=data)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


def depth_to_compressed_depth(depth: np.ndarray, stamp: Time, frame_id: str,
                              depth_max: float = 100.0, quantization: float = 100.0) -> CompressedImage:
    """(H, W) float32 metres -> CompressedImage as compressed_depth_image_transport publishes
    32FC1 (control/image_codecs.encode_depth)."""
    msg_format, data = encode_depth(depth, depth_max, quantization)
    msg = CompressedImage(format=msg_format, data=data)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


def rgb_to_image(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding, msg.is_bigendian, msg.step = "rgb8", 0, rgb.shape[1] * 3
    msg.data = rgb.tobytes()
    return msg


def depth_to_image(depth: np.ndarray, stamp: Time, frame_id: str) -> Image:
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width = depth.shape
    msg.encoding, msg.is_bigendian, msg.step = "32FC1", 0, depth.shape[1] * 4
    msg.data = depth.tobytes()
    return msg


def camera_info_to_K(msg: CameraInfo) -> np.ndarray:
    """CameraInfo -> 3x3 intrinsics; rejects zero/negative/non-finite focal lengths."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise MessageRejected("camera_info K has NaN/inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise MessageRejected(f"camera_info focal length fx={K[0, 0]}, fy={K[1, 1]} must be > 0")
    if msg.width == 0 or msg.height == 0:
        raise MessageRejected(f"camera_info size {msg.width}x{msg.height} is empty")
    return K


def K_to_camera_info(K: np.ndarray, width: int, height: int, stamp: Time,
                     frame_id: str) -> CameraInfo:
    msg = CameraInfo()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(v) for v in np.asarray(K, dtype=np.float64).reshape(9)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:3, :3] = K
    msg.p = [float(v) for v in P.reshape(12)]
    return msg


def check_instruction(text: str) -> str:
    """Normalise an instruction; rejects empty, oversized or control-character text."""
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise MessageRejected(
            f"instruction has {len(text)} characters (limit {MAX_INSTRUCTION_CHARS})"
        )
    cleaned = " ".join(text.split())
    if not cleaned:
        raise MessageRejected("instruction is empty")
    if any(not ch.isprintable() for ch in cleaned):
        raise MessageRejected("instruction has non-printable characters")
    return cleaned


def joint_state_to_proprio(msg: JointState, names) -> np.ndarray:
    """joint_states -> the (8,) float32 proprio vector: position of `names[k]` at k (names
    starting with "unused" may be absent: zero). Rejects a message lacking a name, with
    mismatched lengths or with NaN/inf in the entries used."""
    if len(msg.position) != len(msg.name):
        raise MessageRejected(f"{len(msg.name)} names but {len(msg.position)} positions")
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names[:8] if not n.startswith("unused") and n not in index]
    if missing:
        raise MessageRejected(f"missing proprio entries {missing} (have {list(msg.name)[:12]}); "
                              "set proprio_names")
    values = np.zeros(8, np.float32)
    for k, name in enumerate(names[:8]):
        if name in index:
            values[k] = msg.position[index[name]]
    if not np.all(np.isfinite(values)):
        raise MessageRejected("NaN/inf in proprio entries")
    return values


def odometry_motion(msg: Odometry) -> tuple[float, float]:
    """Odometry -> (forward speed m/s, yaw rate rad/s): twist.linear.x and twist.angular.z;
    rejects NaN/inf."""
    v, omega = msg.twist.twist.linear.x, msg.twist.twist.angular.z
    if not (math.isfinite(v) and math.isfinite(omega)):
        raise MessageRejected("NaN/inf speed or yaw rate")
    return float(v), float(omega)


def command_topic(kind: str, stamped: bool) -> tuple[type, str]:
    """(message type, topic) of a command layout (control/policy_loop.py's kind): an arm's
    servo/delta_twist_cmds (TwistStamped), a vehicle's cmd_vel (TwistStamped or Twist), a
    world spec's joints on joint_commands (Float64MultiArray, one entry per action name)."""
    if kind == "joints":
        return Float64MultiArray, "joint_commands"
    if kind == "arm":
        return TwistStamped, "servo/delta_twist_cmds"
    return (TwistStamped if stamped else Twist), "cmd_vel"


def command_msg(command: np.ndarray, embodiment: str, stamped: bool, stamp: Time,
                frame_id: str) -> Twist | TwistStamped | Float64MultiArray:
    """An arm's [vx, vy, vz] m/s or a vehicle's [v m/s, omega rad/s] -> Twist, or TwistStamped
    stamped `stamp` in `frame_id`; `embodiment` "joints": the joint commands as a
    Float64MultiArray (unstamped: std_msgs has no stamped array)."""
    if embodiment == "joints":
        return Float64MultiArray(data=[float(v) for v in command])
    twist = Twist()
    if embodiment == "arm":
        twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in command[:3])
    else:
        twist.linear.x, twist.angular.z = float(command[0]), float(command[1])
    if not stamped:
        return twist
    msg = TwistStamped(twist=twist)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


def expert_action_msg(action: np.ndarray, names: Sequence[str], stamp: Time,
                      topic: str = "sim/expert_action") -> JointState:
    """The simulator expert's normalised action as sim/expert_action: a JointState stamped
    with the frame it answers, one entry per action dim (`names`: the embodiment's action
    names), the value in `position`. Any number of dims (a 7-DoF arm, a hand). The same
    layout carries its privileged features on sim/expert_features (`topic`, for the error)."""
    action = np.asarray(action, np.float64).reshape(-1)
    if action.size != len(names):
        raise ValueError(f"{topic}: {action.size} values for {len(names)} names {list(names)}")
    msg = JointState(name=list(names), position=[float(v) for v in action])
    msg.header.stamp, msg.header.frame_id = stamp, "base_link"
    return msg


def expert_action_values(msg: JointState, dims: int) -> np.ndarray:
    """The action in a sim/expert_action message (expert_action_msg's inverse); a message
    with another number of values or a non-finite one is rejected with the reason."""
    values = np.asarray(msg.position, np.float64)
    if values.size != dims:
        raise MessageRejected(f"sim/expert_action carries {values.size} values {list(msg.name)}, "
                              f"the policy acts on {dims} action dims")
    if not np.all(np.isfinite(values)):
        raise MessageRejected(f"sim/expert_action has non-finite values {values.tolist()}")
    return values


#: DiagnosticStatus levels by name.
LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


def status_name(node, task: str) -> str:
    """A /diagnostics status name: the node's full name without the leading slash, then the task
    ("car1/policy_node: policy"; "policy_node: policy" at the root), so that the robots sharing
    the global /diagnostics stay apart."""
    return f"{node.get_fully_qualified_name().lstrip('/')}: {task}"


def diagnostics_msg(name: str, hardware_id: str, level: str, message: str, values: dict,
                    stamp: Time) -> DiagnosticArray:
    """One status for /diagnostics: `level` "ok", "warn" or "error"; `values` key -> value
    (each shown as str)."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, level=LEVELS[level],
                              message=message,
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg
