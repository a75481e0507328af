#!/usr/bin/env python3
"""Perception accuracy: the geometric backend on seeded Tabletop scenes, clean and noisy depth.

Primitives (the world's default objects). For each scene (seeds 0..N-1, the world's first
frame) the backend reconstructs every object (no prompt). Predictions are matched to
ground-truth objects greedily by centre distance (within 4 cm). Per matched object: 3D box
IoU (oriented boxes; for balls and cylinders, whose box yaw is arbitrary, the true box takes
the predicted yaw), centroid error (box centres), Chamfer distance between the reconstructed
mesh's surface and the true primitive's surface (2000 samples each). Recall counts the
objects at least 30% visible (visible pixels over the pixels the object covers when rendered
alone). Time per frame is the backend's wall time. Every frame is also reconstructed with
completion off (the observed points' box and hull), so the gain of amodal completion is
measured on the same segmentation.

Procedural shapes (``objects="shapes"``: mugs, L-blocks, tori, ellipsoids, cones, bananas,
bottles, plates; 1-5 per scene, occluding each other where they happen to). Scenes from seed
30000 on until every family has 40 objects (the thresholds were chosen on seeds 20000-20199,
which this bench never uses), at 320x240, clean and noisy depth. Every object is
reconstructed from a pixel prompt at the centroid of its visible mask and from a mask prompt
(its visible mask); found when at least half the returned mask is on the object. Per object:
centre error, box IoU, Chamfer (mesh surface against the true mesh surface), volume IoU on
5 mm voxels over the union of both boxes (the solids themselves: holes and concavities
count), the share of each named cavity left empty (a torus's hole, a mug's handle gap and
cavity, an L's inner corner, the space beside a bottle's neck, a plate's well; kept when at
least half is empty), whether a mug's handle with 50 or more visible pixels is there (half
its voxels within one voxel of the prediction), and whether the label names the family.
Medians per family; whole scenes (no prompt) timed per frame.

    python bench/perception_accuracy.py [--quick] [--json PATH] [--png PATH] [--shape-seeds N]

JSON keys: box_iou, centroid_err_cm, chamfer_cm, recall, ms_per_frame (clean, 320x240,
p50), the same with _noisy, *_visible (completion off), *_640 (640x480 subset); for the
shapes shapes[_noisy]_<pixel|mask>_<family>_<measure> and shapes[_noisy]_ms_per_frame[_p95];
and the exact command.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
from tqdm import tqdm

from embodied_stack.models.files import atomic_write_bytes
from embodied_stack.models.perception import CameraIntrinsics, Prompt, matrix_from_quaternion
from embodied_stack.models.perception.geometric import GeometricBackend, GeometricConfig
from embodied_stack.models.perception.metrics import (
    box_iou,
    chamfer,
    covered_share,
    empty_share,
    mesh_inside,
    sample_mesh_surface,
    sample_primitive_surface,
    union_grid,
    volume_iou,
)
from embodied_stack.models.perception.shapes import yaw_matrix
from embodied_stack.sim.worlds.procedural_objects import FAMILIES
from embodied_stack.sim.worlds.tabletop import TabletopEnv

import benchlib

MATCH_M = 0.04
MIN_VISIBLE = 0.3
SAMPLES = 2000
#: The shape scenes' first seed, and the seed block the thresholds were chosen on (never
#: used here).
SHAPE_SEEDS = 30000
TUNING_SEEDS = "20000-20199"


def alone_pixels(env: TabletopEnv) -> np.ndarray:
    """Pixels each object covers when rendered without the others and the fingertip."""
    m = env.model
    shown = [env.object_geom(i) for i in range(len(env.privileged_state["classes"]))]
    finger = int(np.flatnonzero(m.geom_bodyid == m.body("fingertip").id)[0])
    saved = m.geom_group.copy()
    counts = np.zeros(len(shown))
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


# --- procedural shapes -----------------------------------------------------------------------

#: Families whose box yaw is arbitrary (solids of revolution): the true box takes the predicted yaw.
ROUND_FAMILIES = ("torus", "cone", "bottle", "plate")
#: The label word that names each family (labels name the family, not the object).
FAMILY_LABELS = {"mug": ("mug", "cup"), "l_block": ("l-block",), "torus": ("torus",),
                 "ellipsoid": ("ellipsoid", "ball"), "cone": ("cone",), "banana": ("curved",),
                 "bottle": ("bottle",), "plate": ("plate",)}
#: The worst value of a per-family measure over the families.
WORST = {"recall": min, "centre_err_cm": max, "box_iou": min, "chamfer_cm": max, "volume_iou": min,
         "label_accuracy": min, "hole_kept": min, "handle_gap_kept": min, "handle_kept": min}
#: A mug's handle counts as visible from this many pixels on (the issue's bar).
HANDLE_PIXELS = 50
#: Share of a part's (cavity's) voxels that must be there (empty) for it to count as kept.
KEPT_SHARE = 0.5


def _world_box(o, R_wc, t_wc):
    return R_wc @ o.box_center + t_wc, o.box_extent, R_wc @ o.box_rotation


def _corners(center, extent, R):
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    return center + (signs * (np.asarray(extent) / 2)) @ np.asarray(R).T


def evaluate_shape(o, shape, g, T_wc, rng, hull) -> dict:
    """One reconstructed procedural object against its truth: box IoU, centre error,
    Chamfer, volume IoU on 5 mm voxels over both boxes, the named cavities' empty share and
    the parts' presence."""
    R_wc, t_wc = T_wc[:3, :3], T_wc[:3, 3]
    c_p, e_p, R_p = _world_box(o, R_wc, t_wc)
    R_o, p_o = matrix_from_quaternion(g["quaternion"]), np.asarray(g["position"])
    R_gt = R_o
    if g["class"] in ROUND_FAMILIES:
        R_gt = yaw_matrix(float(np.arctan2(R_p[1, 0], R_p[0, 0])))
    iou = box_iou(c_p, e_p, R_p, p_o, g["size"], R_gt)
    grid = union_grid(_corners(c_p, e_p, R_p), _corners(p_o, g["size"], R_o))
    local = (grid.points - p_o) @ R_o  # object frame
    true = shape.occupancy(local)
    verts_w = o.vertices @ R_wc.T + t_wc
    pred = mesh_inside(verts_w, o.triangles, grid.points)
    true_surface = sample_mesh_surface(shape.vertices @ R_o.T + p_o, shape.triangles, SAMPLES, rng)
    pred_surface = sample_mesh_surface(verts_w, o.triangles, SAMPLES, rng)
    out = {
        "iou": iou, "centre_err": float(np.linalg.norm(c_p - p_o)),
        "chamfer": chamfer(pred_surface, true_surface), "volume_iou": volume_iou(pred, true),
        "label_ok": o.shape in FAMILY_LABELS.get(g["class"], ()),
        "concavity_kept": empty_share(pred, mesh_inside(hull[0], hull[1], local) & ~true),
    }
    for name, region in shape.cavities.items():
        out[f"cavity_{name}"] = empty_share(pred, region(local))
    for name, part in shape.parts.items():
        out[f"part_{name}"] = covered_share(pred, part(local) < 0, grid.shape)
    return out


def _handle_pixels(env, k, depth, seg, info):
    """Visible pixels of object k's handle: its pixels whose depth back-projects onto it."""
    shape = env.shapes[k]
    if "handle" not in shape.parts:
        return 0
    cam = info["camera"]
    K, T = cam["K"], cam["T_world_camera"]
    vs, us = np.nonzero((seg == k) & (depth > 0))
    z = depth[vs, us]
    p_c = np.column_stack([(us - K[0, 2]) * z / K[0, 0], (vs - K[1, 2]) * z / K[1, 1], z])
    g = info["objects"][k]
    local = (p_c @ T[:3, :3].T + T[:3, 3] - g["position"]) @ matrix_from_quaternion(g["quaternion"])
    return int(np.count_nonzero(shape.parts["handle"](local) < 0.002))


def _true_hull(shape):
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(shape.vertices),
                                     o3d.utility.Vector3iVector(shape.triangles))
    hull, _ = mesh.compute_convex_hull()
    return np.asarray(hull.vertices), np.asarray(hull.triangles)


def shape_scenes(first_seed: int, per_family: int, max_scenes: int):
    """Seeds from `first_seed` on, until every family has `per_family` objects (or
    `max_scenes` scenes): the same scenes for every configuration."""
    counts = {f: 0 for f in FAMILIES}
    seeds = []
    env = TabletopEnv(width=8, height=8, objects="shapes")
    seed = first_seed
    with tqdm(total=per_family * len(FAMILIES), desc="choosing shape scenes", unit="object", leave=False) as bar:
        while min(counts.values()) < per_family and len(seeds) < max_scenes:
            env.reset(seed=seed)
            for c in env.privileged_state["classes"]:
                counts[c] += 1
            bar.update(sum(min(v, per_family) for v in counts.values()) - bar.n)
            seeds.append(seed)
            seed += 1
    env.close()
    return seeds


def run_shapes(seeds, noise: bool, rng, backend, label: str, keep_frames: int = 0):
    """Every object of every scene reconstructed from a pixel prompt (its visible mask's
    centroid) and from a mask prompt, and every scene whole (no prompt, timed)."""
    env = TabletopEnv(width=320, height=240, objects="shapes", depth_noise=noise)
    records: dict[str, list] = {"pixel": [], "mask": []}
    scene_ms, frames = [], []
    for seed in tqdm(seeds, desc=label, unit="scene", leave=False):
        obs, info = env.reset(seed=seed)
        cam = info["camera"]
        intr = CameraIntrinsics(cam["K"], cam["width"], cam["height"])
        seg = info["segmentation"]
        t = time.perf_counter()
        whole = backend(obs["rgb"], obs["depth"], intr)
        scene_ms.append(1e3 * (time.perf_counter() - t))
        if len(frames) < keep_frames and len(info["objects"]) >= 3:
            frames.append((obs["rgb"], whole, info))
        alone = alone_pixels(env)
        clean_depth = env.renderer.render(env.data)[1] if noise else obs["depth"]
        for k, g in enumerate(info["objects"]):
            visible = seg == k
            n_vis = int(visible.sum())
            base = {"family": g["class"], "seed": seed, "visible": n_vis / max(1.0, alone[k]),
                    "visible_px": n_vis, "handle_px": _handle_pixels(env, k, clean_depth, seg, info),
                    "objects_in_scene": len(info["objects"])}
            hull = _true_hull(env.shapes[k])
            for kind in ("pixel", "mask"):
                rec = dict(base, found=False)
                if n_vis:
                    if kind == "pixel":
                        vs, us = np.nonzero(visible)
                        prompt = Prompt.pixel(float(np.round(us.mean())), float(np.round(vs.mean())))
                    else:
                        prompt = Prompt.mask(visible)
                    objects = backend(obs["rgb"], obs["depth"], intr, prompt)
                    if objects and objects[0].mask is not None:
                        m = objects[0].mask
                        rec["found"] = bool(np.count_nonzero(m & visible) >= 0.5 * max(1, m.sum()))
                    if rec["found"]:
                        rec.update(evaluate_shape(objects[0], env.shapes[k], g, cam["T_world_camera"],
                                                  rng, hull))
                        rec["parts"] = len(objects[0].parts)
                records[kind].append(rec)
    env.close()
    return records, scene_ms, frames


def summarise_shapes(records: list[dict]) -> dict:
    """Per family: recall (objects at least MIN_VISIBLE visible), medians of the measures,
    the share of cavities kept and of visible handles kept."""
    out = {}
    for fam in FAMILIES:
        rs = [r for r in records if r["family"] == fam]
        eligible = [r for r in rs if r["visible"] >= MIN_VISIBLE]
        found = [r for r in rs if r["found"]]
        def med(key, found=found):
            return float(np.nanmedian([r[key] for r in found])) if found else float("nan")

        d = {"objects": len(rs), "recall": (sum(r["found"] for r in eligible) / len(eligible)
                                            if eligible else float("nan")),
             "centre_err_cm": 100 * med("centre_err"), "box_iou": med("iou"),
             "chamfer_cm": 100 * med("chamfer"), "volume_iou": med("volume_iou"),
             "label_accuracy": float(np.mean([r["label_ok"] for r in found])) if found else float("nan")}
        cav = [v for r in found for k, v in r.items() if k.startswith("cavity_") and np.isfinite(v)]
        d["cavities_kept"] = float(np.mean([v >= KEPT_SHARE for v in cav])) if cav else float("nan")
        d["cavity_empty_share"] = float(np.median(cav)) if cav else float("nan")
        for name in ("hole", "handle_gap"):
            vals = [r[f"cavity_{name}"] for r in found if np.isfinite(r.get(f"cavity_{name}", np.nan))]
            if vals:
                d[f"{name}_kept"] = float(np.mean([v >= KEPT_SHARE for v in vals]))
        handles = [r for r in rs if r["handle_px"] >= HANDLE_PIXELS]
        if handles:
            d["handle_kept"] = float(np.mean([r["found"] and r.get("part_handle", 0) >= KEPT_SHARE
                                              for r in handles]))
            d["handles_visible"] = len(handles)
        out[fam] = d
    return out


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
    parser.add_argument("--shape-seeds", type=int, default=SHAPE_SEEDS, metavar="N",
                        help=f"first seed of the shape scenes (default {SHAPE_SEEDS}; the "
                             f"thresholds were tuned on {TUNING_SEEDS})")
    args = parser.parse_args(argv)
    n_small, n_large = (12, 3) if args.quick else (100, 20)
    per_family = 2 if args.quick else 40
    rng = np.random.default_rng(0)
    results = {}
    table_rows = []
    configs = [("", 320, 240, False, n_small), ("_noisy", 320, 240, True, n_small),
               ("_640", 640, 480, False, n_large)]
    frames = []
    for suffix, w, h, noise, n in tqdm(configs, desc="perception accuracy: primitives", unit="config"):
        summary, kept = run(range(n), w, h, noise, rng, keep_frames=2 if suffix == "" else 0)
        frames += kept
        for variant, s in summary.items():
            key_suffix = suffix + ("_visible" if variant == "visible" else "")
            if variant == "visible":  # no shape is fitted without completion
                s = {k: v for k, v in s.items() if k != "shape_accuracy"}
            for key, value in s.items():
                results[key + key_suffix] = round(value, 4) if isinstance(value, float) else value
            table_rows.append((f"{w}x{h}", "noisy" if noise else "clean", variant, n, s))
    results["scenes"], results["scenes_640"] = n_small, n_large

    seeds = shape_scenes(args.shape_seeds, per_family, max_scenes=40 * per_family)
    results["shapes_first_seed"], results["shapes_scenes"] = args.shape_seeds, len(seeds)
    results["shapes_tuning_seeds"] = TUNING_SEEDS
    shape_rows = []
    backend = GeometricBackend()
    for noise in tqdm((False, True), desc="perception accuracy: shapes", unit="config"):
        prefix = "shapes_noisy" if noise else "shapes"
        records, scene_ms, kept = run_shapes(seeds, noise, rng, backend, f"shapes {'noisy' if noise else 'clean'}",
                                             keep_frames=0 if noise else 3)
        frames += kept
        results[f"{prefix}_ms_per_frame"] = round(float(np.percentile(scene_ms, 50)), 1)
        results[f"{prefix}_ms_per_frame_p95"] = round(float(np.percentile(scene_ms, 95)), 1)
        results[f"{prefix}_objects_per_scene_max"] = int(max(r["objects_in_scene"] for r in records["pixel"]))
        # Occlusion: objects partly hidden (by another object, or cut by the image border).
        occluded = [r for r in records["pixel"] if r["visible"] < 0.9]
        results[f"{prefix}_occluded_share"] = round(len(occluded) / len(records["pixel"]), 4)
        eligible = [r for r in occluded if r["visible"] >= MIN_VISIBLE]
        results[f"{prefix}_occluded_recall"] = (round(float(np.mean([r["found"] for r in eligible])), 4)
                                                if eligible else None)
        found = [r for r in occluded if r["found"]]
        results[f"{prefix}_occluded_box_iou"] = (round(float(np.median([r["iou"] for r in found])), 4)
                                                 if found else None)
        for kind, recs in records.items():
            summary = summarise_shapes(recs)
            for fam, d in summary.items():
                for key, value in d.items():
                    results[f"{prefix}_{kind}_{fam}_{key}"] = round(value, 4) if isinstance(value, float) else value
                shape_rows.append(("noisy" if noise else "clean", kind, fam, d))
            # The worst family for each measure (what the per-family targets are held to).
            for key, worst in WORST.items():
                values = [d[key] for d in summary.values() if key in d and np.isfinite(d[key])]
                results[f"{prefix}_{kind}_worst_{key}"] = round(float(worst(values)), 4) if values else None

    results["cpu_count"] = os.cpu_count()
    results["quick"] = args.quick
    results["command"] = benchlib.command_line(__file__, argv)

    benchlib.print_table(
        "Perception accuracy, Tabletop primitives (targets clean 320x240: IoU >= 0.6, centroid <= 1.5 cm, "
        "Chamfer <= 1 cm, recall >= 0.9, <= 100 ms; noisy IoU >= 0.5)",
        ("image", "depth", "completion", "scenes", "box IoU", "centroid cm", "Chamfer cm", "recall",
         "shape acc", "ms p50", "ms p95"),
        [(res, depth, "on" if variant == "complete" else "off", n, f"{s['box_iou']:.3f}",
          f"{s['centroid_err_cm']:.2f}", f"{s['chamfer_cm']:.2f}", f"{s['recall']:.3f}",
          f"{s['shape_accuracy']:.2f}" if "shape_accuracy" in s else "-", f"{s['ms_per_frame']:.1f}",
          f"{s['ms_per_frame_p95']:.1f}") for res, depth, variant, n, s in table_rows],
        left=3, width=130)
    fmt = lambda v, f: "-" if v is None or not np.isfinite(v) else format(v, f)  # noqa: E731
    benchlib.print_table(
        f"Procedural shapes, 320x240, {len(seeds)} scenes from seed {args.shape_seeds} (targets per family, "
        "clean: recall >= 0.95, centre <= 1 cm, box IoU >= 0.7, Chamfer <= 0.6 cm, volume IoU >= 0.6; "
        "noisy: box IoU >= 0.6)",
        ("depth", "prompt", "family", "objects", "recall", "centre cm", "box IoU", "Chamfer cm", "volume IoU",
         "cavities kept", "label"),
        [(depth, kind, fam, d["objects"], fmt(d["recall"], ".2f"), fmt(d["centre_err_cm"], ".2f"),
          fmt(d["box_iou"], ".3f"), fmt(d["chamfer_cm"], ".2f"), fmt(d["volume_iou"], ".3f"),
          fmt(d["cavities_kept"], ".2f"), fmt(d["label_accuracy"], ".2f"))
         for depth, kind, fam, d in shape_rows],
        left=3, width=130,
        footer=(f"whole scenes, no prompt: clean {results['shapes_ms_per_frame']:.0f} ms p50, "
                f"{results['shapes_ms_per_frame_p95']:.0f} ms p95; noisy {results['shapes_noisy_ms_per_frame']:.0f} / "
                f"{results['shapes_noisy_ms_per_frame_p95']:.0f} ms"))
    if args.png and frames:
        figure(frames, args.png)
    return benchlib.write_json(args.json, results)


if __name__ == "__main__":
    main()
