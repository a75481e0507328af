#!/usr/bin/env python3
"""Training runs side by side, from what each recorded: the settings in which they differ, the
logged training figures at chosen steps, and every validation result (success on validation
seeds 300000+ after a stage or iteration). Nothing is trained or evaluated: it reads each
run's checkpoint (``<run>/checkpoint.pt``: its log and progress) and ``train_config.json``,
so it costs seconds, also while the runs are still going.

    python bench/run_logs.py RUN [RUN ...] [--steps 100 300 1000] [--figures ce_full keypoint_err_px]
        [--json PATH]

JSON keys, per run name (the directory's name): ``settings`` (the train_config fields that
differ between the runs), ``run_info`` (its command, code commit, start and machine),
``progress`` (stage, global step, wall seconds), ``at_<step>`` (the
logged training figures of the entry nearest to that global step: ``global_step`` and each of
``--figures``) and ``validation`` (every validation entry: stage, global step and its
``success_<submodel>_<world>`` figures); plus ``runs`` (the paths) and ``command``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import benchlib

FIGURES = ("ce_full", "keypoint_acc", "keypoint_err_px", "keypoint_aux")


def read_run(run: Path) -> tuple[dict, list[dict], dict]:
    """(train_config, log entries, progress) of a run directory; ValueError naming what is
    missing."""
    import torch

    ckpt, cfg = run / "checkpoint.pt", run / "train_config.json"
    for path in (ckpt, cfg):
        if not path.exists():
            raise ValueError(f"{run}: no {path.name} (not a training run directory, or it has not "
                             "written its first checkpoint)")
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    return json.loads(cfg.read_text()), json.loads(state["log"]), json.loads(state["progress"])


def differing(configs: list[dict]) -> list[str]:
    """The config fields whose values are not the same in every run."""
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def main(argv=None) -> dict:
    p = benchlib.parser(__doc__, quick=None)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (embodied-stack train --out)")
    p.add_argument("--steps", nargs="+", type=int, default=[100, 300, 1000],
                   help="global steps to read the training figures at (nearest logged entry)")
    p.add_argument("--figures", nargs="+", default=list(FIGURES), help="logged training figures to read")
    args = p.parse_args(argv)
    try:
        runs = {run.name: read_run(run) for run in args.runs}
    except ValueError as exc:
        p.error(str(exc))
    keys = differing([cfg for cfg, _, _ in runs.values()])
    out: dict = {"runs": [str(r) for r in args.runs]}
    rows = []
    for name, (cfg, log, progress) in runs.items():
        train = [e for e in log if args.figures[0] in e]
        info = next(r for r in args.runs if r.name == name) / "run_info.json"
        entry: dict = {"settings": {k: cfg.get(k) for k in keys},
                       "run_info": json.loads(info.read_text()) if info.exists() else None,
                       "progress": {k: progress.get(k) for k in ("stage", "global_step", "wall_s")},
                       "validation": [e for e in log if any(k.startswith("success_") for k in e)]}
        for step in args.steps:
            if train:
                nearest = min(train, key=lambda e: abs(e["global_step"] - step))
                entry[f"at_{step}"] = {"global_step": nearest["global_step"],
                                       **{f: nearest.get(f) for f in args.figures}}
        out[name] = entry
        last = entry["validation"][-1] if entry["validation"] else {}
        rows.append([name, *(f"{entry[f'at_{s}'][args.figures[0]]:.3f}" if f"at_{s}" in entry else "-"
                             for s in args.steps),
                     ", ".join(f"{k.removeprefix('success_')} {v:.0%}" for k, v in last.items()
                               if k.startswith("success_")) or "-"])
    benchlib.print_table(f"runs: {args.figures[0]} at steps, last validation", ["run", *map(str, args.steps),
                                                                                 "last validation"], rows)
    if keys:
        print("settings that differ:", ", ".join(keys))
    return benchlib.write_json(args.json, out, __file__, argv)


if __name__ == "__main__":
    main()
    sys.exit(0)
