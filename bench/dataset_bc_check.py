#!/usr/bin/env python3
"""Why BC from a recorded dataset trails BC from the live expert (bench/dataset_bc.py): are the
labels right, and which starts do the two policies fail?

1. Labels: every frame of the bag the dataset came from, its recorded action against the
   expert's action for that very frame (``sim/expert_action``, stamped with it).
2. Starts: for a Meta-World drawer world, the handle's x (the start's one varying
   coordinate) of each evaluation seed, and per policy the largest x it solves and the
   smallest it fails.

    python bench/dataset_bc_check.py --work runs/dsbc_dc_2k_s0 [--bag runs/dsbc_dc/dataset.mcap]
        [--world metaworld_drawer_close] [--json PATH]

JSON keys: ``frames``, ``late_frames``, ``labels_equal_expert`` (share within 1e-3),
``label_error_max``, and per run (``dataset``, ``expert``): ``failed``,
``max_x_solved``, ``min_x_failed``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import benchlib


def main(argv=None) -> int:
    parser = benchlib.parser(__doc__, quick=None)
    parser.add_argument("--work", type=Path, required=True, help="a bench/dataset_bc.py work folder")
    parser.add_argument("--bag", type=Path, default=None, help="the recorded bag (default <work>/dataset.mcap)")
    parser.add_argument("--world", default="metaworld_drawer_close")
    args = parser.parse_args(argv)
    from rosbags.highlevel import AnyReader

    from embodied_stack.sim.datasets.from_bag import ConversionReport, episodes_from_bag
    from embodied_stack.sim.worlds import make_world

    bag = args.bag or args.work / "dataset.mcap"
    report = ConversionReport(dataset=args.work / "dataset")
    frames = list(episodes_from_bag(bag, args.world, report=report))
    stamps = [s for episode in report.stamps for s in episode]
    actions = np.concatenate([f["action"] for f, _ in frames])
    expert = {}
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if c.topic.endswith("/sim/expert_action")]
        for c, _, raw in reader.messages(connections=conns):
            m = reader.deserialize(raw, c.msgtype)
            values = list(m.position) if hasattr(m, "position") else [  # (bags from before: a TwistStamped)
                m.twist.linear.x, m.twist.linear.y, m.twist.linear.z, m.twist.angular.x,
                m.twist.angular.y, m.twist.angular.z]
            expert[m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec] = values
    wanted = np.array([expert[s][: actions.shape[1]] for s in stamps])
    error = np.abs(actions - wanted).max(axis=1)
    figures = {"frames": len(stamps), "late_frames": len(report.late_stamps),
               "labels_equal_expert": float(np.mean(error < 1e-3)), "label_error_max": float(error.max())}
    env = make_world(args.world, 64, 64)
    env.skip_render = True
    handle_x = {}
    for name in ("dataset", "expert_dart", "expert"):
        path = args.work / f"eval_{name}.json"
        if not path.exists():
            continue
        ev = json.loads(path.read_text())
        failed = set(ev["details"][f"full_{args.world}"]["failed_seeds"])
        for seed in range(ev["first_seed"], ev["first_seed"] + ev["episodes"]):
            if seed not in handle_x:
                env.reset(seed=seed)
                handle_x[seed] = float(env.unwrapped._flat[4])
        solved = [x for s, x in handle_x.items() if s not in failed]
        lost = [x for s, x in handle_x.items() if s in failed]
        figures[name] = {"failed": len(failed), "max_x_solved": max(solved, default=None),
                         "min_x_failed": min(lost, default=None)}
    env.close()
    benchlib.print_table(f"{args.work}: labels and failed starts", ("what", "value"),
                         [(k, json.dumps(v)) for k, v in figures.items()])
    benchlib.write_json(args.json, figures, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
