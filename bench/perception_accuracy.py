#!/usr/bin/env python3
"""Perception accuracy: the geometric backend on seeded Tabletop scenes, clean and noisy depth.

For each scene (seeds 0..N-1, the world's first frame) the backend reconstructs every object
(no prompt). Predictions are matched to ground-truth objects greedily by centre distance
(within 4 cm). Per matched object: 3D box IoU (oriented boxes; for balls and cylinders, whose
box yaw is arbitrary, the true box takes the predicted yaw), centroid error (box centres),
Chamfer distance between the reconstructed mesh's surface and the true primitive's surface
(2000 samples each). Recall counts the objects at least 30% visible (visible pixels over the
pixels the object covers when rendered alone). Time per frame is the backend's wall time.
Every frame is also reconstructed with completion off (the observed points' box and hull), so
the gain of amodal completion is measured on the same segmentation.

    python bench/perception_accuracy.py [--quick] [--json PATH] [--png PATH]

JSON keys: box_iou, centroid_err_cm, chamfer_cm, recall, ms_per_frame (clean,
320x240, p50), the same with _noisy, *_visible (completion off), *_640 (640x480 subset), and
the exact command.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
from tqdm import tqdm

from embodied_stack.models.files import atomic_write_bytes
from embodied_stack.models.perception import CameraIntrinsics, matrix_from_quaternion
from embodied_stack.models.perception.geometric import GeometricBackend, GeometricConfig
from embodied_stack.models.perception.metrics import box_iou, chamfer, sample_mesh_surface, sample_primitive_surface
from embodied_stack.models.perception.shapes import yaw_matrix
from embodied_stack.sim.worlds.tabletop import TabletopEnv

import benchlib

MATCH_M = 0.04
MIN_VISIBLE = 0.3
SAMPLES = 2000


def alone_pixels(env: TabletopEnv) -> np.ndarray:
    """Pixels each object covers when rendered without the others and the fingertip."""
    m = env.model
    shown = [int(env._slot_geoms[i, env._slot_shown[i]]) for i in range(env._n)]
    finger = int(np.flatnonzero(m.geom_bodyid == m.body("fingertip").id)[0])
    saved = m.geom_group.copy()
    counts = np.zeros(env._n)
    try:
        m.geom_group[finger] = 4
        for g in shown:
            m.geom_group[g] = 4
        for i, g in enumerate(shown):
            m.geom_group[g] = 0
            _, _, geom_ids = env.renderer.render(env.data, segmentation=True)
            counts[i] = np.count_nonzero(geom_ids == g)
            m.geom_group[g] = 4
    finally:
        m.geom_group[:] = saved
    return counts


def evaluate(objects, info, T_wc, rng) -> dict:
    """Match predictions to the ground truth and measure each match."""
    gt = info["objects"]
    seg = info["segmentation"]
    R_wc, t_wc = T_wc[:3, :3], T_wc[:3, 3]
    centers = np.array([R_wc @ o.box_center + t_wc for o in objects]).reshape(-1, 3)
    pairs = sorted((float(np.linalg.norm(centers[p] - g["position"])), p, k)
                   for p in range(len(objects)) for k, g in enumerate(gt))
    used_p, matched = set(), {}
    for dist, p, k in pairs:
        if dist <= MATCH_M and p not in used_p and k not in matched:
            used_p.add(p)
            matched[k] = p
    per_object = []
    for k, g in enumerate(gt):
        if k not in matched:
            per_object.append({"id": k, "class": g["class"], "matched": False,
                               "visible_px": int(np.count_nonzero(seg == k))})
            continue
        o = objects[matched[k]]
        R_pred = R_wc @ o.box_rotation
        R_gt = matrix_from_quaternion(g["quaternion"])
        if g["class"] in ("ball", "cylinder"):  # rotation-symmetric about z: yaw is arbitrary
            R_gt = yaw_matrix(float(np.arctan2(R_pred[1, 0], R_pred[0, 0])))
        iou = box_iou(centers[matched[k]], o.box_extent, R_pred, g["position"], g["size"],
                      R_gt)
        true_surface = sample_primitive_surface(g["class"], g["size"], g["position"],
                                                matrix_from_quaternion(g["quaternion"]),
                                                SAMPLES, rng)
        pred_surface = sample_mesh_surface(o.vertices, o.triangles, SAMPLES, rng) @ R_wc.T + t_wc
        per_object.append({
            "id": k, "class": g["class"], "matched": True, "iou": iou,
            "centroid_err": float(np.linalg.norm(centers[matched[k]] - g["position"])),
            "chamfer": chamfer(pred_surface, true_surface), "shape": o.shape,
            "visible_px": int(np.count_nonzero(seg == k)),
        })
    return {"objects": per_object, "false_positives": len(objects) - len(matched)}


def summarise(records: list[dict], ms: list[float]) -> dict:
    objs = [o for r in records for o in r["objects"]]
    eligible = [o for o in objs if o["visible"] >= MIN_VISIBLE]
    hits = [o for o in eligible if o["matched"]]
    m = [o for o in objs if o["matched"]]
    mean = lambda key: float(np.mean([o[key] for o in m])) if m else float("nan")  # noqa: E731
    shape_ok = [o for o in m if o["shape"] in (o["class"], "cube" if o["class"] == "cube" else "")]
    return {
        "box_iou": mean("iou"), "centroid_err_cm": 100 * mean("centroid_err"),
        "chamfer_cm": 100 * mean("chamfer"),
        "recall": len(hits) / len(eligible) if eligible else float("nan"),
        "ms_per_frame": float(np.percentile(ms, 50)), "ms_per_frame_p95": float(np.percentile(ms, 95)),
        "shape_accuracy": len(shape_ok) / len(m) if m else float("nan"),
        "false_positives_per_frame": float(np.mean([r["false_positives"] for r in records])),
        "objects": len(objs), "eligible": len(eligible),
    }


def run(seeds, width, height, noise, rng, keep_frames=0):
    env = TabletopEnv(width=width, height=height, depth_noise=noise)
    complete, visible = GeometricBackend(), GeometricBackend(GeometricConfig(complete=False))
    out = {"complete": ([], []), "visible": ([], [])}
    frames = []
    label = f"{width}x{height} {'noisy' if noise else 'clean'}"
    for seed in tqdm(seeds, desc=label, unit="scene", leave=False):
        obs, info = env.reset(seed=seed)
        cam = info["camera"]
        intr = CameraIntrinsics(cam["K"], cam["width"], cam["height"])
        alone = alone_pixels(env)
        for name, backend in (("complete", complete), ("visible", visible)):
            t = time.perf_counter()
            objects = backend(obs["rgb"], obs["depth"], intr)
            out[name][1].append(1e3 * (time.perf_counter() - t))
            rec = evaluate(objects, info, cam["T_world_camera"], rng)
            for o in rec["objects"]:
                o["visible"] = o["visible_px"] / max(1.0, alone[o["id"]])
            out[name][0].append(rec)
            if name == "complete" and len(frames) < keep_frames:
                frames.append((obs["rgb"], objects, info))
    env.close()
    return {k: summarise(*v) for k, v in out.items()}, frames


# --- figure ------------------------------------------------------------------------------

def _draw_mesh(canvas, objects, K, T_view_cam):
    """Flat-shaded painter's rendering of the meshes (camera frame) seen from a view whose
    pose relative to the camera is T_view_cam (4x4, view optical frame <- camera frame)."""
    h, w = canvas.shape[:2]
    light = np.array([0.3, -0.8, -0.5])
    light /= np.linalg.norm(light)
    tris_all = []
    for o in objects:
        v = o.vertices @ T_view_cam[:3, :3].T + T_view_cam[:3, 3]
        for tri in o.triangles:
            p = v[tri]
            if np.any(p[:, 2] <= 0.05):
                continue
            n = np.cross(p[1] - p[0], p[2] - p[0])
            if np.linalg.norm(n) == 0 or n @ p.mean(axis=0) >= 0:  # back face
                continue
            shade = 0.45 + 0.55 * abs(n @ light) / np.linalg.norm(n)
            col = o.vertex_colors[tri].mean(axis=0) * shade
            uv = p[:, :2] / p[:, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
            tris_all.append((p[:, 2].mean(), uv, col))
    for _, uv, col in sorted(tris_all, key=lambda t: -t[0]):
        cv2.fillConvexPoly(canvas, np.round(uv * 4).astype(np.int32),
                           tuple(int(255 * c) for c in col[::-1]), cv2.LINE_AA, shift=2)
    return canvas


def figure(frames, path):
    rows = []
    for rgb, objects, info in frames:
        cam = info["camera"]
        K, T_wc = cam["K"], cam["T_world_camera"]
        same = _draw_mesh(np.full(rgb.shape, 40, np.uint8), objects, K, np.eye(4))
        # The view from the far side of the table (camera orbited 180 degrees about the
        # table's vertical axis): the backs the camera never saw.
        orbit = np.eye(4)
        orbit[:3, :3] = yaw_matrix(np.pi)
        T_w_view = orbit @ T_wc
        T_view_cam = np.linalg.inv(T_w_view) @ T_wc
        back = _draw_mesh(np.full(rgb.shape, 40, np.uint8), objects, K, T_view_cam)
        for img, text in ((same, "reconstruction"), (back, "seen from behind")):
            cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        rows.append(np.hstack([rgb[..., ::-1], same, back]))
    ok, png = cv2.imencode(".png", np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    atomic_write_bytes(path, png.tobytes())


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="fewer scenes (< 60 s here)")
    parser.add_argument("--png", metavar="PATH", help="write a figure of a few reconstructions")
    args = parser.parse_args(argv)
    n_small, n_large = (12, 3) if args.quick else (100, 20)
    rng = np.random.default_rng(0)
    results = {}
    table_rows = []
    configs = [("", 320, 240, False, n_small), ("_noisy", 320, 240, True, n_small),
               ("_640", 640, 480, False, n_large)]
    frames = []
    for suffix, w, h, noise, n in tqdm(configs, desc="perception accuracy", unit="config"):
        summary, kept = run(range(n), w, h, noise, rng, keep_frames=3 if suffix == "" else 0)
        frames += kept
        for variant, s in summary.items():
            key_suffix = suffix + ("_visible" if variant == "visible" else "")
            if variant == "visible":  # no shape is fitted without completion
                s = {k: v for k, v in s.items() if k != "shape_accuracy"}
            for key, value in s.items():
                results[key + key_suffix] = round(value, 4) if isinstance(value, float) else value
            table_rows.append((f"{w}x{h}", "noisy" if noise else "clean", variant, n, s))
    results["scenes"], results["scenes_640"] = n_small, n_large
    results["cpu_count"] = os.cpu_count()
    results["quick"] = args.quick
    results["command"] = benchlib.command_line(__file__, argv)

    benchlib.print_table(
        "Perception accuracy, Tabletop (targets clean 320x240: IoU >= 0.6, centroid <= 1.5 cm, "
        "Chamfer <= 1 cm, recall >= 0.9, <= 100 ms; noisy IoU >= 0.5)",
        ("image", "depth", "completion", "scenes", "box IoU", "centroid cm", "Chamfer cm", "recall",
         "shape acc", "ms p50", "ms p95"),
        [(res, depth, "on" if variant == "complete" else "off", n, f"{s['box_iou']:.3f}",
          f"{s['centroid_err_cm']:.2f}", f"{s['chamfer_cm']:.2f}", f"{s['recall']:.3f}",
          f"{s['shape_accuracy']:.2f}" if "shape_accuracy" in s else "-", f"{s['ms_per_frame']:.1f}",
          f"{s['ms_per_frame_p95']:.1f}") for res, depth, variant, n, s in table_rows],
        left=3, width=130)
    if args.png and frames:
        figure(frames, args.png)
    return benchlib.write_json(args.json, results)


if __name__ == "__main__":
    main()
