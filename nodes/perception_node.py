"""perception_node: colour + depth + CameraInfo in, whole 3D objects out.

Subscribes `camera/color/image_raw`, `camera/depth/image_raw`, `camera/color/camera_info`
(approximately time-synchronised, control/input_sync.py), and the optional prompts
`target_point` (geometry_msgs/PointStamped, metres in the camera optical frame, as the policy
node publishes it) and `objects/prompt_box` (sensor_msgs/RegionOfInterest, pixels). A prompt
holds for `prompt_timeout_s`; without one, every object is reconstructed.

Publishes, stamped with the frame they come from and in its optical frame:
`objects/markers` (visualization_msgs/MarkerArray: a TRIANGLE_LIST mesh with vertex colours,
a LINE_LIST box outline and a TEXT_VIEW_FACING label per object, and a CUBE per part of an
object such as a mug's handle, namespace `part`; RViz2 and Foxglove draw them),
`objects/cloud` (sensor_msgs/PointCloud2, x y z rgb: the observed points),
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
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, RegionOfInterest
from visualization_msgs.msg import MarkerArray

from embodied_stack.control.input_sync import ApproxTimeSync, LatestSlot, PromptHolder
from embodied_stack.control.safety import SafetyConfig, SafetySupervisor
from embodied_stack.models.perception import BACKENDS, CameraIntrinsics, Prompt, make_backend
from embodied_stack.nodes.conversions import (
    MessageRejected,
    camera_info_to_K,
    diagnostics_msg,
    image_to_depth,
    image_to_rgb,
    stamp_to_seconds,
    status_name,
)
from embodied_stack.nodes.object_msgs import cloud_msg, markers_msg, poses_msg
from embodied_stack.nodes.params import QOS_NAMES, read_only, read_only_range, rejection_kind, sensor_qos


class PerceptionNode(Node):
    def __init__(self, backend=None, **node_kwargs):
        self._worker = None  # (destroy_node must work whatever __init__ got to)
        self._slot = None
        self.backend = None
        super().__init__("perception_node", **node_kwargs)
        p = self.declare_parameter
        p("backend", "geometric", read_only(f"reconstruction backend: {', '.join(BACKENDS)}"))
        p("complete", True, read_only("geometric backend: complete the unseen parts (primitives, "
                                      "or the voxel completion for any other shape; false: the "
                                      "observed points' box only)"))
        p("sam3d_repo", "", read_only("sam3d backend: clone of facebookresearch/sam-3d-objects "
                                      "(default: $SAM3D_REPO)"))
        p("sam3d_python", "", read_only("sam3d backend: interpreter of its environment "
                                        "(default: $SAM3D_PYTHON)"))
        p("rate_hz", 5.0, read_only_range("most reconstructions per second", 0.1, 100.0))
        p("sync_slop_s", 0.02, read_only_range("colour, depth and camera info match when their "
                                               "stamps differ by at most this (s)", 0.0, 1.0))
        p("max_age_s", 1.0, read_only_range("skip a frame older than this (s) when the worker gets "
                                            "to it; inputs stamped further in the past are "
                                            "rejected", 0.05, 60.0))
        p("max_clock_skew_s", 0.1, read_only_range("reject inputs stamped further than this (s) "
                                                   "ahead of this node's clock", 0.001, 5.0))
        p("prompt_timeout_s", 1.0, read_only_range("a prompt holds this long (s) after it "
                                                   "arrives; 0 = until replaced", 0.0, 3600.0))
        p("sensor_qos", "sensor_data", read_only(f"camera QoS: {', '.join(QOS_NAMES)}"))
        p("max_depth_m", 10.0, read_only_range("depth beyond this is no return", 0.1, 1000.0))
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
        if count == 0 or rejection_kind(reason) != rejection_kind(last):
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
        level = "error" if error else "warn" if (rejections or reason) else "ok"
        message = error or (f"empty result: {reason}" if reason else "running")
        self.diag_pub.publish(diagnostics_msg(
            status_name(self, "perception"), str(getattr(self.backend, "name", "backend")), level,
            message, values, self.get_clock().now().to_msg()))

    def destroy_node(self):
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        if self.backend is not None and hasattr(self.backend, "close"):
            self.backend.close()
        return super().destroy_node()


def main(args=None) -> None:
    from embodied_stack.nodes.executor import run_node

    run_node(PerceptionNode, args)


if __name__ == "__main__":
    main()
