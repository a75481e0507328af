#!/usr/bin/env python3
"""BC from a recorded dataset against BC from the live expert, over several training seeds.

One `bench/dataset_bc.py` pair trains each pipeline once (one training seed) and compares the
two models on the same unseen seeds; its interval covers the evaluation's noise only. Runs of
the same pipeline with another training seed can land far apart (on Meta-World drawer-close,
15 to 30 points), so whether the two pipelines give the same policy quality is a question
about the training seeds: this takes the pairs of several training seeds (the same dataset,
episodes, steps and evaluation seeds) and gives each pipeline's mean success over them, the
spread between its runs, and the mean paired difference with a Student-t 95% interval over
the training seeds.

    python bench/dataset_bc_seeds.py PAIR.json [PAIR.json ...] [--json PATH]

JSON keys: ``pairs`` (the files), ``world``, ``episodes``, ``bc_steps``, ``eval_episodes``,
``codec``, ``dataset_privileged``, ``training_seeds``, ``success_dataset`` and
``success_expert`` (per seed), ``mean_dataset``, ``mean_expert``, ``sd_dataset``, ``sd_expert``
(between training seeds), ``differences_points`` (per seed), ``mean_difference_points``,
``difference_ci95_points`` (t interval over the training seeds), ``within_5_points`` (the
interval inside [-5, +5]).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import benchlib

#: What every pair must share to be runs of the same comparison.
SAME = ("world", "episodes", "bc_steps", "eval_episodes", "elastic_every", "init_from", "expert_noise",
        "dataset_frames")


def summarise(pairs: list[dict], names: list[str]) -> dict:
    from scipy import stats

    for key in SAME:
        values = {json.dumps(p.get(key)) for p in pairs}
        if len(values) > 1:
            raise ValueError(f"the pairs differ in {key!r} ({sorted(values)}): they are not runs of one comparison")
    seeds = [p["seed"] for p in pairs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"training seeds repeat: {seeds}")
    if len(pairs) < 2:
        raise ValueError("give at least two pairs (two training seeds)")
    data = np.array([p["success_dataset"] for p in pairs])
    live = np.array([p["success_expert"] for p in pairs])
    diff = 100 * (data - live)
    n = len(diff)
    half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    low, high = diff.mean() - half, diff.mean() + half
    first = pairs[0]
    return {
        "pairs": names, **{k: first.get(k) for k in SAME},
        "codec": first.get("codec") or "av1 (before the key was kept)",
        "dataset_privileged": bool(first.get("dataset_privileged")),
        "training_seeds": seeds, "success_dataset": data.tolist(), "success_expert": live.tolist(),
        "mean_dataset": float(data.mean()), "mean_expert": float(live.mean()),
        "sd_dataset": float(data.std(ddof=1)), "sd_expert": float(live.std(ddof=1)),
        "differences_points": [round(float(d), 1) for d in diff],
        "mean_difference_points": round(float(diff.mean()), 1),
        "difference_ci95_points": [round(float(low), 1), round(float(high), 1)],
        "within_5_points": bool(low >= -5 and high <= 5),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", type=Path, help="bench/dataset_bc.py JSON files, one per training seed")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    figures = summarise([json.loads(p.read_text()) for p in args.pairs], [str(p) for p in args.pairs])
    benchlib.print_table(
        f"{figures['world']}: BC on {figures['episodes']} episodes, {figures['bc_steps']} steps, "
        f"{figures['eval_episodes']} unseen seeds per run",
        ("training seed", "from the dataset", "from the live expert", "difference (points)"),
        [(s, f"{d:.1%}", f"{e:.1%}", f"{x:+.1f}") for s, d, e, x in zip(
            figures["training_seeds"], figures["success_dataset"], figures["success_expert"],
            figures["differences_points"])]
        + [("mean", f"{figures['mean_dataset']:.1%}", f"{figures['mean_expert']:.1%}",
            f"{figures['mean_difference_points']:+.1f}")])
    low, high = figures["difference_ci95_points"]
    print(f"mean difference {figures['mean_difference_points']:+.1f} points, 95% interval over "
          f"{len(figures['training_seeds'])} training seeds [{low:+.1f}, {high:+.1f}]; between-seed sd: "
          f"dataset {100 * figures['sd_dataset']:.1f}, live expert {100 * figures['sd_expert']:.1f} points")
    benchlib.write_json(args.json, figures, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
