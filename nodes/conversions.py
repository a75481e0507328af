"""ROS message <-> NumPy conversion, and the boundary where malformed messages are rejected.

Every `*_to_numpy` function either returns a clean array or raises `MessageRejected` with a
one-line reason; the node logs the reason (throttled), reports it on /diagnostics and keeps
its last good state (docs/architecture.md, safety rules). Nothing here holds node state.
"""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image

#: Longest instruction accepted, in characters (a 1 MB string is rejected, not truncated).
MAX_INSTRUCTION_CHARS = 512
#: Largest image side accepted, in pixels.
MAX_IMAGE_SIDE = 8192

_COLOR_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}


class MessageRejected(ValueError):
    """A message failed validation; str(exc) is the reason, fit for logs and diagnostics."""


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
