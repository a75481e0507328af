"""A pointed-at pixel -> a 3D point in metres, by depth back-projection (NumPy only).

The MiMo backend answers "where" in camera pixels; the robot needs metres. With a depth image
registered to the colour image (metres along the optical axis, 0 = no return; the policy node
turns NaN/inf into 0, REP-118) and the CameraInfo intrinsics K (pixel-index coordinates, as
ROS uses), the pixel (u, v) becomes the point

    z = robust depth around (u, v),  x = (u - cx) z / fx,  y = (v - cy) z / fy

in the camera optical frame (x right, y down, z forward; REP-103 ``*_optical_frame``).

Robust depth: the median of the valid pixels in a (2r+1)^2 window around the pixel, the
window growing up to ``max_radius_px`` until ``min_valid`` pixels are found. Where the window
straddles an object's edge (a near and a far surface), the median is taken over the surface
the pixel itself lies on when that pixel is valid (depths within ``edge_tolerance_m`` of it),
so a point on an object does not jump to the table behind it. No valid depth -> ``None`` and
a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Backprojection:
    """The result of :func:`backproject_pixel`: ``point`` (3,) metres in the camera optical
    frame, or None with ``reason``; ``depth_m`` the depth used, ``valid_px`` how many pixels
    it came from, ``radius_px`` the window radius that found them."""

    point: np.ndarray | None
    reason: str = ""
    depth_m: float = float("nan")
    valid_px: int = 0
    radius_px: int = 0

    @property
    def ok(self) -> bool:
        return self.point is not None


def backproject_pixel(uv, depth: np.ndarray | None, K: np.ndarray | None, *, radius_px: int = 2,
                      max_radius_px: int = 6, min_valid: int = 3,
                      edge_tolerance_m: float = 0.03) -> Backprojection:
    """(u, v) camera pixel -> (x, y, z) metres in the camera optical frame (see the module
    docstring). Never raises on bad data: returns ``Backprojection(None, reason)``."""
    if depth is None:
        return Backprojection(None, "no depth image (use_depth off, or depth not registered "
                                    "to the colour image)")
    if K is None:
        return Backprojection(None, "no camera intrinsics (camera_info) yet")
    K = np.asarray(K, np.float64)
    depth = np.asarray(depth)
    if depth.ndim != 2 or K.shape != (3, 3) or not (K[0, 0] > 0 and K[1, 1] > 0):
        return Backprojection(None, f"unusable depth {depth.shape} or K {K.shape}")
    u, v = (float(c) for c in np.asarray(uv, np.float64).reshape(-1)[:2])
    h, w = depth.shape
    if not (np.isfinite(u) and np.isfinite(v)) or not (-0.5 <= u < w - 0.5 and -0.5 <= v < h - 0.5):
        return Backprojection(None, f"pixel ({u:.1f}, {v:.1f}) outside the {w}x{h} depth image")
    iu, iv = int(round(u)), int(round(v))
    centre = float(depth[iv, iu])
    centre_ok = np.isfinite(centre) and centre > 0
    r = max(0, int(radius_px))
    while True:
        patch = np.asarray(depth[max(0, iv - r): iv + r + 1, max(0, iu - r): iu + r + 1], np.float64)
        valid = patch[np.isfinite(patch) & (patch > 0)]
        if centre_ok:
            same = valid[np.abs(valid - centre) <= edge_tolerance_m]
            valid = same if same.size else valid
        if valid.size >= min_valid or (valid.size and r >= max_radius_px):
            break
        if r >= max_radius_px:
            return Backprojection(None, f"no valid depth within {max_radius_px} px of pixel "
                                        f"({u:.1f}, {v:.1f}) (NaN/zero: no return)",
                                  radius_px=r)
        r += 1
    z = float(np.median(valid))
    point = np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])
    return Backprojection(point, "", z, int(valid.size), r)


__all__ = ["Backprojection", "backproject_pixel"]
