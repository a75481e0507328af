"""Byte-level codecs of image_transport's `compressed` and `compressedDepth` payloads: JPEG /
PNG colour and compressed_depth_image_transport's header + 16-bit PNG depth, both ways.

Pure (numpy + OpenCV, no rclpy): nodes/conversions.py wraps them around
sensor_msgs/CompressedImage, and anything that holds the bytes (a bag reader, a test) can use
them directly. Malformed payloads raise MessageRejected with the reason.
"""

from __future__ import annotations

import math

import numpy as np

#: Largest image side accepted (raw or compressed), in pixels.
MAX_IMAGE_SIDE = 8192
#: Largest compressed payload accepted, in bytes.
MAX_COMPRESSED_BYTES = 64 << 20
#: compressed_depth_image_transport's header before the PNG: int32 format (0: inverse depth),
#: float32 depthQuantA, float32 depthQuantB, little-endian (its ConfigHeader struct).
DEPTH_HEADER = np.dtype([("format", "<i4"), ("quant_a", "<f4"), ("quant_b", "<f4")])
#: JPEG chroma subsampling by name (OpenCV's sampling factors).
JPEG_SUBSAMPLING = {"444": "IMWRITE_JPEG_SAMPLING_FACTOR_444", "422": "IMWRITE_JPEG_SAMPLING_FACTOR_422",
                    "420": "IMWRITE_JPEG_SAMPLING_FACTOR_420"}


class MessageRejected(ValueError):
    """A message failed validation; str(exc) is the reason, fit for logs and diagnostics."""


def _decode(data: bytes, flags: int, what: str) -> np.ndarray:
    import cv2

    if not data:
        raise MessageRejected(f"{what}: empty data")
    if len(data) > MAX_COMPRESSED_BYTES:
        raise MessageRejected(f"{what}: {len(data)} bytes exceeds {MAX_COMPRESSED_BYTES}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise MessageRejected(f"{what}: payload is not a decodable JPEG or PNG ({len(data)} bytes, "
                              f"starts {data[:8].hex()})")
    if image.shape[0] > MAX_IMAGE_SIDE or image.shape[1] > MAX_IMAGE_SIDE:
        raise MessageRejected(f"{what}: image {image.shape[1]}x{image.shape[0]} exceeds "
                              f"{MAX_IMAGE_SIDE} px a side")
    return image


def decode_color(data: bytes, format: str) -> np.ndarray:
    """A `compressed` payload (JPEG or PNG; `format` like "rgb8; jpeg compressed bgr8") ->
    (H, W, 3) uint8 RGB. As compressed_image_transport decodes: the payload's channels are BGR
    unless the format says "compressed rgb"; a bare "jpeg" / "png" (older publishers) is BGR;
    a mono image becomes grey RGB."""
    import cv2

    fmt = format.strip().lower()
    if "compresseddepth" in fmt:
        raise MessageRejected(f"format {format!r} is a depth transport; colour needs "
                              "`compressed` (jpeg or png)")
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise MessageRejected(f"format {format!r} not supported (jpeg or png)")
    image = _decode(data, cv2.IMREAD_UNCHANGED, "compressed colour")
    if image.dtype != np.uint8:
        raise MessageRejected(f"compressed colour: {image.dtype} pixels, expected 8-bit")
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.shape[2] not in (3, 4):
        raise MessageRejected(f"compressed colour: {image.shape[2]} channels, expected 1, 3 or 4")
    if "compressed rgb" in fmt:
        return np.ascontiguousarray(image[..., :3])
    return np.ascontiguousarray(image[..., 2::-1])  # BGR(A) -> RGB


def decode_depth(data: bytes, format: str, max_depth_m: float = 100.0) -> np.ndarray:
    """A `compressedDepth` payload (`format` "16UC1; compressedDepth png" or "32FC1;
    compressedDepth png") -> (H, W) float32 metres, 0 = no return. The payload is a 12-byte
    header (DEPTH_HEADER) and a 16-bit PNG: for 16UC1 the millimetres, for 32FC1 the quantised
    inverse depth q, depth = quant_a / (q - quant_b), with q = 0 meaning no return."""
    import cv2

    fmt = format.strip()
    encoding = fmt.split(";")[0].strip()
    if "compressedDepth" not in fmt:
        raise MessageRejected(f"format {fmt!r} is not image_transport's compressedDepth")
    if "rvl" in fmt.lower():
        raise MessageRejected(f"format {fmt!r}: RVL compressedDepth not supported (png)")
    if encoding not in ("16UC1", "32FC1"):
        raise MessageRejected(f"compressedDepth encoding {encoding!r} not supported (16UC1 or 32FC1)")
    if len(data) <= DEPTH_HEADER.itemsize:
        raise MessageRejected(f"compressedDepth: {len(data)} bytes, no room for the "
                              f"{DEPTH_HEADER.itemsize}-byte header and a PNG")
    header = np.frombuffer(data[:DEPTH_HEADER.itemsize], DEPTH_HEADER)[0]
    q = _decode(data[DEPTH_HEADER.itemsize:], cv2.IMREAD_UNCHANGED, "compressedDepth")
    if q.ndim != 2 or q.dtype != np.uint16:
        raise MessageRejected(f"compressedDepth: PNG of {q.dtype} x {q.shape[2] if q.ndim == 3 else 1} "
                              "channels, expected one 16-bit channel")
    if encoding == "16UC1":
        depth = q.astype(np.float32) * np.float32(1e-3)
    else:
        a, b = float(header["quant_a"]), float(header["quant_b"])
        if int(header["format"]) != 0 or not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
            raise MessageRejected(f"compressedDepth header: format {int(header['format'])}, "
                                  f"quantisation a={a}, b={b} (need format 0, finite a > 0)")
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = (np.float32(a) / (q.astype(np.float32) - np.float32(b))).astype(np.float32)
        depth[q == 0] = 0.0
    depth[~np.isfinite(depth) | (depth < 0) | (depth > max_depth_m)] = 0.0
    return depth


def encode_color(rgb: np.ndarray, fmt: str = "jpeg", jpeg_quality: int = 95,
                 jpeg_subsampling: str = "444") -> tuple[str, bytes]:
    """(H, W, 3) uint8 RGB -> (format, payload) as compressed_image_transport publishes it
    (BGR payload, format "rgb8; jpeg compressed bgr8" or "rgb8; png compressed bgr8").

    `jpeg_subsampling` defaults to 4:4:4 because the simulator renders at the policy's own
    input size (64x64): 4:2:0 would halve the colour resolution of that small frame, which a
    real camera's 4:2:0 at 640x480 (colour at 320x240, still five times the policy's input
    after resizing) does not do."""
    import cv2

    if fmt not in ("jpeg", "png"):
        raise ValueError(f"compressed format {fmt!r} not in ('jpeg', 'png')")
    if jpeg_subsampling not in JPEG_SUBSAMPLING:
        raise ValueError(f"jpeg_subsampling {jpeg_subsampling!r} not in {sorted(JPEG_SUBSAMPLING)}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
              getattr(cv2, JPEG_SUBSAMPLING[jpeg_subsampling])] if fmt == "jpeg" else \
        [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png",
                           np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return f"rgb8; {fmt} compressed bgr8", buf.tobytes()


def encode_depth(depth: np.ndarray, depth_max: float = 100.0,
                 quantization: float = 100.0) -> tuple[str, bytes]:
    """(H, W) float32 metres -> (format, payload) as compressed_depth_image_transport publishes
    32FC1 ("32FC1; compressedDepth png"): inverse depth quantised with a = quantization *
    (quantization + 1), b = 1 - a / depth_max, q = a / depth + b for 0 < depth < depth_max,
    0 otherwise (no return)."""
    import cv2

    depth = np.asarray(depth, np.float32)
    a = quantization * (quantization + 1.0)
    b = 1.0 - a / depth_max
    valid = np.isfinite(depth) & (depth > 0) & (depth < depth_max)
    q = np.zeros(depth.shape, np.float64)
    q[valid] = a / depth[valid] + b
    ok, buf = cv2.imencode(".png", np.clip(np.rint(q), 0, 65535).astype(np.uint16),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {depth.shape} depth image as PNG")
    return "32FC1; compressedDepth png", np.array([(0, a, b)], DEPTH_HEADER).tobytes() + buf.tobytes()
