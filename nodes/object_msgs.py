"""The perception node's objects (models.perception ObjectModel lists) as ROS messages:
markers (mesh, box outline, label, part boxes), one point cloud and the poses
(docs/perception.md). Builders only: they take plain values and hold no state."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseArray
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

#: Box edges as corner index pairs (corner bits: x 1, y 2, z 4; ObjectModel.box_corners).
BOX_EDGES = [(a, b) for a in range(8) for b in range(8) if a < b and bin(a ^ b).count("1") == 1]


def _point(v) -> Point:
    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


#: A part's marker id: object index times this, plus the part's index (docs/perception.md).
PART_ID_STRIDE = 1000


def markers_msg(objects, stamp, frame_id: str) -> MarkerArray:
    """DELETEALL, then per object a mesh, a box outline and a label (namespaces ``mesh``,
    ``box``, ``label``, id: the object's index, as in ``objects/poses``), and per part of an
    object (a mug's handle) a CUBE in namespace ``part``, id ``PART_ID_STRIDE * object index
    + part index``, posed and sized as the part's box, its name in ``text``."""
    out = MarkerArray()
    clear = Marker(action=Marker.DELETEALL)
    clear.header.stamp, clear.header.frame_id = stamp, frame_id
    out.markers.append(clear)
    for i, o in enumerate(objects):
        def marker(ns, kind, marker_id=i):
            m = Marker(ns=ns, id=marker_id, type=kind, action=Marker.ADD)
            m.header.stamp, m.header.frame_id = stamp, frame_id
            m.pose.orientation.w = 1.0
            return m

        mesh = marker("mesh", Marker.TRIANGLE_LIST)
        mesh.scale.x = mesh.scale.y = mesh.scale.z = 1.0
        verts, tris, vcols = o.display_mesh()
        # One message object per vertex, shared by its triangles (building them is the cost).
        points = [_point(v) for v in verts]
        colors = [ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=1.0) for c in vcols]
        idx = np.asarray(tris).reshape(-1).tolist()
        mesh.points = [points[k] for k in idx]
        mesh.colors = [colors[k] for k in idx]
        mesh.color.a = 1.0
        box = marker("box", Marker.LINE_LIST)
        box.scale.x = 0.002
        corners = o.box_corners()
        box.points = [_point(corners[k]) for edge in BOX_EDGES for k in edge]
        box.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        label = marker("label", Marker.TEXT_VIEW_FACING)
        # Above the object as the image shows it (optical -y is up in the image).
        label.pose.position = _point(o.box_center - [0.0, 0.8 * o.box_extent.max(), 0.0])
        label.scale.z = 0.02
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        label.text = f"{o.label} {o.confidence:.2f}"
        out.markers += [mesh, box, label]
        for j, part in enumerate(o.parts):
            cube = marker("part", Marker.CUBE, PART_ID_STRIDE * i + j)
            cube.pose = _pose(part.translation, part.rotation)
            cube.scale.x, cube.scale.y, cube.scale.z = (float(v) for v in part.scale)
            cube.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=0.35)
            cube.text = part.name
            out.markers.append(cube)
    return out


def cloud_msg(objects, stamp, frame_id: str) -> PointCloud2:
    """The observed points of every object: x, y, z float32 and rgb packed as float32."""
    pts = [o.points for o in objects if len(o.points)]
    cols = [o.point_colors for o in objects if len(o.points)]
    xyz = np.vstack(pts).astype(np.float32) if pts else np.zeros((0, 3), np.float32)
    rgb = (np.clip(np.vstack(cols), 0, 1) * 255).astype(np.uint32) if cols else \
        np.zeros((0, 3), np.uint32)
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    data = np.empty(len(xyz), dtype=dtype)
    data["x"], data["y"], data["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    data["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    msg = PointCloud2()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width = 1, len(data)
    msg.fields = [PointField(name=n, offset=4 * k, datatype=PointField.FLOAT32, count=1)
                  for k, n in enumerate(("x", "y", "z", "rgb"))]
    msg.is_bigendian, msg.point_step = False, 16
    msg.row_step, msg.is_dense = 16 * len(data), True
    msg.data = data.tobytes()
    return msg


def poses_msg(objects, stamp, frame_id: str) -> PoseArray:
    msg = PoseArray()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    for o in objects:
        msg.poses.append(_pose(o.translation, o.rotation))
    return msg


def _pose(translation, rotation) -> Pose:
    """A Pose from a position and a quaternion (w, x, y, z; ROS orders the fields x, y, z, w)."""
    pose = Pose()
    pose.position = _point(translation)
    w, x, y, z = rotation
    pose.orientation.w, pose.orientation.x = float(w), float(x)
    pose.orientation.y, pose.orientation.z = float(y), float(z)
    return pose
