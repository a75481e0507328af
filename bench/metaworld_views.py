#!/usr/bin/env python3
"""How well one camera image can locate each Meta-World MT10 task's target and goal in 3-D.

The policy sees MT10 through one 64x64 camera (sim/worlds/metaworld_mt10.py: ``corner3``) and
the hand's position; the object's and the goal's positions it must read from the image. For
each task, ``--starts`` seeded starts (seeds from 0, as training draws them) give the target
(the object; for reach, the goal) and the goal; each is projected into the observed image
(``MetaWorldEnv.image_position``). The best any estimate from the pixel alone can do is the
mean position of the starts seen at (nearly) the same pixel: this script measures that
estimate's 3-D error, per task and point, with a pixel tolerance of ``--pixel`` (default
0.5 px: a sub-pixel localiser). A point that varies in 3-D (reach's and pick-place's goals
float between 5 and 30 cm above the table) is ambiguous along the camera's ray; a point on
the table is not. The image's apparent size of the marker is ignored (at 64x64 it changes by
well under a pixel), so these are upper bounds for a policy that reads positions from the
image alone, not predictions of any policy's success.

    python bench/metaworld_views.py [--starts 3000] [--pixel 0.5] [--width 64] [--json PATH]

JSON keys: ``starts``, ``pixel``, ``width``, ``camera``, ``tasks`` ({task: {point: {"varies_cm":
[dx, dy, dz], "pixels": [du, dv] (its extent in the image), "median_cm", "p90_cm",
"within_5cm"}}}).
"""

from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

import benchlib


def pixel_only_error(points: np.ndarray, uv: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Per point, the distance (m) from it to the mean of all points seen within `tolerance_px`
    of its pixel: the error of the best estimate that knows only the pixel."""
    from scipy.spatial import cKDTree

    tree = cKDTree(uv)
    return np.array([np.linalg.norm(points[tree.query_ball_point(p, tolerance_px)].mean(0) - x)
                     for p, x in zip(uv, points)])


def main(argv=None) -> int:
    parser = benchlib.parser(__doc__)
    parser.add_argument("--starts", type=int, default=3000, help="seeded starts per task (default 3000)")
    parser.add_argument("--pixel", type=float, default=0.5, help="pixel tolerance (default 0.5)")
    parser.add_argument("--width", type=int, default=64, help="image side (default 64, the policy's)")
    args = parser.parse_args(argv)
    if args.quick:
        args.starts = 200
    if args.starts < 10 or args.pixel <= 0:
        parser.error(f"--starts must be >= 10 and --pixel > 0, got {args.starts}, {args.pixel}")
    from embodied_stack.sim.worlds.metaworld_mt10 import CAMERA, TASK_NAMES, MetaWorldEnv

    tasks: dict = {}
    rows = []
    for task in tqdm(TASK_NAMES, desc="tasks", unit="task"):
        env = MetaWorldEnv(width=args.width, height=args.width, tasks=(task,))
        xyz_seen, uv_seen = [], []  # per start: (target, goal) in the world and in the image
        for seed in range(args.starts):
            env.reset(seed=seed)
            flat = env._flat
            assert flat is not None  # (set by reset)
            points = np.stack([flat[36:39] if task == "reach-v3" else flat[4:7], flat[36:39]])
            xyz_seen.append(points)
            uv_seen.append(env.image_position(points) * args.width)
        all_xyz, all_uv = np.array(xyz_seen), np.array(uv_seen)
        entry = {}
        for k, point in enumerate(("target", "goal")):
            xyz, uv = all_xyz[:, k], all_uv[:, k]
            err = pixel_only_error(xyz, uv, args.pixel)
            entry[point] = {"varies_cm": (100 * np.ptp(xyz, 0)).round(1).tolist(),
                            "pixels": np.ptp(uv, 0).round(1).tolist(),
                            "median_cm": round(100 * float(np.median(err)), 2),
                            "p90_cm": round(100 * float(np.quantile(err, 0.9)), 2),
                            "within_5cm": round(float((err < 0.05).mean()), 4)}
            rows.append((task.removesuffix("-v3"), point, " x ".join(f"{v:g}" for v in entry[point]["varies_cm"]),
                         " x ".join(f"{v:g}" for v in entry[point]["pixels"]),
                         entry[point]["median_cm"], entry[point]["p90_cm"], f"{entry[point]['within_5cm']:.0%}"))
        tasks[task.removesuffix("-v3")] = entry
        env.close()
    benchlib.print_table(
        f"pixel-only 3-D estimate, {args.starts} starts per task, {args.width}x{args.width} {CAMERA}, "
        f"{args.pixel} px", ("task", "point", "varies (cm)", "extent (px)", "median err (cm)",
                             "p90 err (cm)", "within 5 cm"), rows)
    benchlib.write_json(args.json, {"starts": args.starts, "pixel": args.pixel, "width": args.width,
                                    "camera": CAMERA, "tasks": tasks}, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
