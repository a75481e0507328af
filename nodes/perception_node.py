"""perception_node: colour + depth + CameraInfo in, whole 3D objects out.

Subscribes `camera/color/image_raw`, `camera/depth/image_raw`, `camera/color/camera_info`
(approximately time-synchronised, nodes/perception_sync.py), and the optional prompts
`target_point` (geometry_msgs/PointStamped, metres in the camera optical frame, as the policy
node publishes it) and `objects/prompt_box` (sensor_msgs/RegionOfInterest, pixels). A prompt
holds for `prompt_timeout_s`; without one, every object is reconstructed.

Publishes, stamped with the frame they come from and in its optical frame:
`objects/markers` (visualization_msgs/MarkerArray: a TRIANGLE_LIST mesh with vertex colours,
a LINE_LIST box outline and a TEXT_VIEW_FACING label per object; RViz2 and Foxglove draw
them), `objects/cloud` (sensor_msgs/PointCloud2, x y z rgb: the observed points),
`objects/poses` (geometry_msgs/PoseArray: each object's box pose), and `/diagnostics`
(per-frame latency, processing time, dropped frames, rejected messages, the last reason for
an empty result).

Reconstruction runs on its own worker thread at most at `rate_hz`; a frame that arrives while
the worker is busy replaces the waiting one (dropped, counted), so results are never late by a
queue. Malformed messages are rejected with a reason and never stop the node; bad input that
passes the message checks (sizes that disagree, all-NaN depth, a prompt outside the image)
gives an empty result whose reason is reported.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped, Pose, PoseArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from embodied_stack.models.perception import BACKENDS, CameraIntrinsics, Prompt, make_backend
from embodied_stack.nodes.conversions import (
    MessageRejected,
    camera_info_to_K,
    image_to_depth,
    image_to_rgb,
    stamp_to_seconds,
)
from embodied_stack.nodes.perception_sync import ApproxTimeSync, LatestSlot, PromptHolder
from embodied_stack.nodes.policy_node import QOS_NAMES, _fixed, _float, _kind, sensor_qos
from embodied_stack.nodes.safety import SafetyConfig, SafetySupervisor


def _ro_float(desc, lo, hi):
    """A float parameter with a range, read once at start-up (a later set is refused)."""
    d = _float(desc + " (read-only: set it at launch)", lo, hi)
    d.read_only = True
    return d


#: Box edges as corner index pairs (corner bits: x 1, y 2, z 4; ObjectModel.box_corners).
BOX_EDGES = [(a, b) for a in range(8) for b in range(8) if a < b and bin(a ^ b).count("1") == 1]


class PerceptionNode(Node):
    def __init__(self, backend=None, **node_kwargs):
        self._worker = None  # (destroy_node must work whatever __init__ got to)
        self._slot = None
        self.backend = None
        super().__init__("perception_node", **node_kwargs)
        p = self.declare_parameter
        p("backend", "geometric", _fixed(f"reconstruction backend: {', '.join(BACKENDS)}"))
        p("complete", True, _fixed("geometric backend: complete the unseen parts by fitting "
                                   "primitives (false: the observed points' box only)"))
        p("sam3d_repo", "", _fixed("sam3d backend: clone of facebookresearch/sam-3d-objects "
                                   "(default: $SAM3D_REPO)"))
        p("sam3d_python", "", _fixed("sam3d backend: interpreter of its environment "
                                     "(default: $SAM3D_PYTHON)"))
        p("rate_hz", 5.0, _ro_float("most reconstructions per second", 0.1, 100.0))
        p("sync_slop_s", 0.02, _ro_float("colour, depth and camera info match when their stamps "
                                      "differ by at most this (s)", 0.0, 1.0))
        p("max_age_s", 1.0, _ro_float("skip a frame older than this (s) when the worker gets to "
                                   "it; inputs stamped further in the past are rejected", 0.05, 60.0))
        p("max_clock_skew_s", 0.1, _ro_float("reject inputs stamped further than this (s) ahead "
                                          "of this node's clock", 0.001, 5.0))
        p("prompt_timeout_s", 1.0, _ro_float("a prompt holds this long (s) after it arrives; 0 = "
                                          "until replaced", 0.0, 3600.0))
        p("sensor_qos", "sensor_data", _fixed(f"camera QoS: {', '.join(QOS_NAMES)}"))
        p("max_depth_m", 10.0, _ro_float("depth beyond this is no return", 0.1, 1000.0))
        g = lambda n: self.get_parameter(n).value  # noqa: E731

        if backend is None:
            name = g("backend")
            if name == "geometric":
                backend = make_backend("geometric", complete=g("complete"))
            else:
                backend = make_backend(name, repo_dir=g("sam3d_repo"), python=g("sam3d_python"))
        self.backend = backend
        self.max_age_s = g("max_age_s")
        self.max_depth_m = g("max_depth_m")
        self.stamps = SafetySupervisor(SafetyConfig(stale_after_s=g("max_age_s"),
                                                    max_future_s=g("max_clock_skew_s")))
        self.sync = ApproxTimeSync(g("sync_slop_s"))
        self.prompt = PromptHolder(g("prompt_timeout_s"))
        self._lock = threading.Lock()
        self.rejections: dict[str, tuple[int, str]] = {}
        self.stats = {"frames_synced": 0, "frames_processed": 0, "frames_stale": 0,
                      "worker_errors": 0, "last_objects": 0}
        self.latencies = deque(maxlen=200)  # frame stamp -> published (node clock), s
        self.proc_times = deque(maxlen=200)  # backend wall time, s
        self.last_reason = ""
        self.last_error = ""

        qos = sensor_qos(g("sensor_qos"))
        self.create_subscription(Image, "camera/color/image_raw", self._on_rgb, qos)
        self.create_subscription(Image, "camera/depth/image_raw", self._on_depth, qos)
        self.create_subscription(CameraInfo, "camera/color/camera_info", self._on_info, qos)
        self.create_subscription(PointStamped, "target_point", self._on_target_point, 10)
        self.create_subscription(RegionOfInterest, "objects/prompt_box", self._on_box, 10)
        self.marker_pub = self.create_publisher(MarkerArray, "objects/markers", 10)
        self.cloud_pub = self.create_publisher(PointCloud2, "objects/cloud", 10)
        self.pose_pub = self.create_publisher(PoseArray, "objects/poses", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)

        self._slot = LatestSlot(1.0 / g("rate_hz"), time.monotonic)
        self._worker = threading.Thread(target=self._worker_loop, name="perception_worker",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(f"perception backend={getattr(backend, 'name', backend)} "
                               f"rate<={g('rate_hz')} Hz")

    # --- helpers ------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _reject(self, source: str, reason: str) -> None:
        with self._lock:
            count, last = self.rejections.get(source, (0, ""))
            self.rejections[source] = (count + 1, reason)
        self.get_logger().warning(f"rejected {source}: {reason}", throttle_duration_sec=2.0)
        if count == 0 or _kind(reason) != _kind(last):
            self._publish_diagnostics()

    def _accept(self, source: str, msg, convert):
        try:
            value = convert(msg)
        except MessageRejected as exc:
            self._reject(source, str(exc))
            return None
        stamp = stamp_to_seconds(msg.header.stamp)
        reason = self.stamps.note_input(source, stamp, self._now())
        if reason is not None:
            self._reject(source, reason)
            return None
        return stamp, value

    # --- inputs -------------------------------------------------------------------------
    def _on_rgb(self, msg: Image) -> None:
        got = self._accept("camera/color/image_raw", msg, image_to_rgb)
        if got is not None:
            self._add("rgb", got[0], (got[1], msg.header.frame_id, msg.header.stamp))

    def _on_depth(self, msg: Image) -> None:
        got = self._accept("camera/depth/image_raw", msg,
                           lambda m: image_to_depth(m, self.max_depth_m))
        if got is not None:
            self._add("depth", *got)

    def _on_info(self, msg: CameraInfo) -> None:
        got = self._accept("camera/color/camera_info", msg,
                           lambda m: CameraIntrinsics(camera_info_to_K(m), m.width, m.height))
        if got is not None:
            self._add("info", *got)

    def _add(self, stream: str, stamp: float, payload) -> None:
        with self._lock:
            synced = self.sync.add(stream, stamp, payload)
            if synced is None:
                return
            self.stats["frames_synced"] += 1
        self._slot.offer(synced)

    def _on_target_point(self, msg: PointStamped) -> None:
        p = (msg.point.x, msg.point.y, msg.point.z)
        if not all(np.isfinite(p)):
            return self._reject("target_point", f"point {p} has NaN/inf")
        self.prompt.set(("point", p, msg.header.frame_id), self._now())

    def _on_box(self, msg: RegionOfInterest) -> None:
        if msg.width == 0 or msg.height == 0:  # an empty box clears the prompt
            self.prompt.clear()
            return
        box = (msg.x_offset, msg.y_offset, msg.x_offset + msg.width - 1,
               msg.y_offset + msg.height - 1)
        self.prompt.set(("box", box, ""), self._now())

    # --- the worker ---------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            item = self._slot.take(timeout=0.5)
            if item is None:
                if self._slot.closed:
                    return
                continue
            try:
                self._process(*item)
            except Exception as exc:  # never die silently: log, report, carry on
                with self._lock:
                    self.stats["worker_errors"] += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(f"perception worker failed: {exc!r}\n"
                                        f"{traceback.format_exc(limit=4)}",
                                        throttle_duration_sec=2.0)

    def _prompt_for(self, frame_id: str) -> Prompt:
        held = self.prompt.current(self._now())
        if held is None:
            return Prompt.none()
        kind, value, prompt_frame = held
        if kind == "point":
            if prompt_frame and frame_id and prompt_frame != frame_id:
                self._reject("target_point", f"frame {prompt_frame!r} is not the camera's "
                                             f"{frame_id!r} (no TF lookup here)")
                self.prompt.clear()
                return Prompt.none()
            return Prompt.point(*value)
        return Prompt.box(*value)

    def _process(self, stamp: float, frame: dict) -> None:
        now = self._now()
        if now - stamp > self.max_age_s:
            with self._lock:
                self.stats["frames_stale"] += 1
            return
        rgb, frame_id, header_stamp = frame["rgb"]
        prompt = self._prompt_for(frame_id)
        t0 = time.perf_counter()
        result = self.backend(rgb, frame["depth"], frame["info"], prompt)
        proc = time.perf_counter() - t0
        self.marker_pub.publish(markers_msg(result, header_stamp, frame_id))
        self.cloud_pub.publish(cloud_msg(result, header_stamp, frame_id))
        self.pose_pub.publish(poses_msg(result, header_stamp, frame_id))
        with self._lock:
            self.stats["frames_processed"] += 1
            self.stats["last_objects"] = len(result)
            self.proc_times.append(proc)
            self.latencies.append(self._now() - stamp)
            new_reason = result.reason and result.reason != self.last_reason
            self.last_reason = result.reason
        if new_reason:
            self.get_logger().warning(f"empty result: {result.reason}",
                                      throttle_duration_sec=2.0)
            self._publish_diagnostics()

    # --- diagnostics --------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        with self._lock:
            lat = np.array(self.latencies) * 1e3
            proc = np.array(self.proc_times) * 1e3
            stats = dict(self.stats)
            rejections = dict(self.rejections)
            reason, error = self.last_reason, self.last_error
        slot = self._slot
        status = DiagnosticStatus(name=f"{self.get_name()}: perception",
                                  hardware_id=str(getattr(self.backend, "name", "backend")))
        status.level = (DiagnosticStatus.ERROR if error else DiagnosticStatus.WARN
                        if (rejections or reason) else DiagnosticStatus.OK)
        status.message = error or (f"empty result: {reason}" if reason else "running")
        pct = lambda a, q: f"{np.percentile(a, q):.1f}" if a.size else "nan"  # noqa: E731
        values = {
            "latency_p50_ms": pct(lat, 50), "latency_p95_ms": pct(lat, 95),
            "processing_p50_ms": pct(proc, 50), "processing_p95_ms": pct(proc, 95),
            "frames_dropped": str(slot.dropped if slot else 0),
            "frames_unmatched": str(self.sync.unmatched_dropped),
            **{k: str(v) for k, v in stats.items()},
            "last_empty_reason": reason or "none",
        }
        for source, (count, why) in rejections.items():
            values[f"rejected.{source}"] = f"{count}x, last: {why}"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def destroy_node(self):
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        if self.backend is not None and hasattr(self.backend, "close"):
            self.backend.close()
        return super().destroy_node()


# --- message building (plain functions: tested without a node) --------------------------

def _point(v) -> Point:
    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def markers_msg(objects, stamp, frame_id: str) -> MarkerArray:
    """DELETEALL, then per object a mesh, a box outline and a label."""
    out = MarkerArray()
    clear = Marker(action=Marker.DELETEALL)
    clear.header.stamp, clear.header.frame_id = stamp, frame_id
    out.markers.append(clear)
    for i, o in enumerate(objects):
        def marker(ns, kind, i=i):
            m = Marker(ns=ns, id=i, type=kind, action=Marker.ADD)
            m.header.stamp, m.header.frame_id = stamp, frame_id
            m.pose.orientation.w = 1.0
            return m

        mesh = marker("mesh", Marker.TRIANGLE_LIST)
        mesh.scale.x = mesh.scale.y = mesh.scale.z = 1.0
        idx = np.asarray(o.triangles).reshape(-1)
        mesh.points = [_point(v) for v in o.vertices[idx]]
        mesh.colors = [ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=1.0)
                       for c in o.vertex_colors[idx]]
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
        pose = Pose()
        pose.position = _point(o.translation)
        w, x, y, z = o.rotation  # ours: w, x, y, z; ROS: x, y, z, w fields
        pose.orientation.w, pose.orientation.x = float(w), float(x)
        pose.orientation.y, pose.orientation.z = float(y), float(z)
        msg.poses.append(pose)
    return msg


def main(args=None) -> None:
    from embodied_stack.nodes.executor import run_node

    run_node(PerceptionNode, args)


if __name__ == "__main__":
    main()
