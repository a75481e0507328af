"""The policy node's answer messages: a backend's plan as nav_msgs/Path and its target point as
geometry_msgs/PointStamped, stamped with the image the answer is about."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped, PoseStamped
from nav_msgs.msg import Path

from embodied_stack.nodes.conversions import seconds_to_stamp


def plan_to_path(plan: np.ndarray, stamp: Time, frame_id: str) -> Path:
    """(N, 2) or (N, 3) waypoints -> nav_msgs/Path (identity orientations)."""
    path = Path()
    path.header.stamp, path.header.frame_id = stamp, frame_id
    for point in np.asarray(plan):
        pose = PoseStamped()
        pose.header = path.header
        pose.pose.position.x, pose.pose.position.y = float(point[0]), float(point[1])
        pose.pose.position.z = float(point[2]) if len(point) > 2 else 0.0
        pose.pose.orientation.w = 1.0
        path.poses.append(pose)
    return path


def point_stamped(point: np.ndarray, stamp: Time, frame_id: str) -> PointStamped:
    msg = PointStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.point.x, msg.point.y, msg.point.z = (float(v) for v in np.asarray(point, np.float64)[:3])
    return msg


def answer_msgs(action, obs_stamp: float, base_frame: str) -> tuple[Path | None, PointStamped | None]:
    """A backend answer's `plan` (Path in the base frame) and `target_point` (PointStamped in
    metres, the camera frame of the image the answer is about), each None when the answer has
    none; stamped with that image's stamp."""
    stamp = seconds_to_stamp(obs_stamp)
    path = plan_to_path(action.plan, stamp, base_frame) if action.plan is not None else None
    point = None
    if action.target_point is not None:
        extras = action.extras if isinstance(action.extras, dict) else {}
        point = point_stamped(action.target_point, stamp,
                              extras.get("frame_id") or "camera_color_optical_frame")
    return path, point
