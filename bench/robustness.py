#!/usr/bin/env python3
"""Robustness of a policy to the shifts a real robot brings: success per shift axis and
magnitude, per world and submodel, each paired with the unshifted run on the same seeds.

    python bench/robustness.py [--quick] [--json PATH] [--png PATH] [--model DIR]
        [--episodes 500] [--first-seed 100000] [--worlds tabletop driving]
        [--submodels full 1/2] [--cells none camera_2cm_2deg ...] [--cache DIR]
    python bench/robustness.py --compare OLD.json NEW.json [--json PATH]   # two models, paired

The axes (``CELLS``; sim/worlds/shift.py, each magnitude exact): the camera moved 2 / 5 / 10 cm
in a random direction and turned 2 / 5 / 10 degrees about a random axis; every light x0.3 /
x0.5 / x1.5 / x2; a colour shift (object colours within their class, table or road colours);
1 / 2 / 3 distractors the instruction does not name; the instruction in other words
(bench/data/paraphrases.json, kept apart from every training generator); actions one control
step late; Gaussian RGB noise sigma 8. Episodes run as ``embodied-stack eval`` runs them
(sim/eval.py: greedy, the policy node's execution), on the eval's unseen test seeds (from
100000: never used in training or to choose between models). A shift draws from its own
generator, so every cell sees the same scenes: each shifted cell is a paired comparison with
the unshifted one, the difference with its 95% interval (Wald on the paired differences) and
the exact McNemar p of the seeds where they disagree (bench/execution.py, paired_success.py).

Resumable: each finished cell is appended to ``<cache>/<model>_<first seed>_<episodes>.jsonl``
and skipped when the command runs again (an interruption loses at most the cell in progress).

JSON keys: ``model``, ``episodes``, ``first_seed``, ``seed_block``, ``cells`` (key -> axis,
magnitude, shift), and per ``<submodel>_<world>_<cell>`` (submodel ``full``, ``half`` ...):
``_success``, ``_ci95``, ``_failed_seeds``; for shifted cells also ``_diff`` (shifted minus
unshifted), ``_diff_ci95``, ``_mcnemar_p``, ``_only_shifted`` and ``_only_unshifted`` (seeds
solved by one of the pair alone); ``wall_s``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from execution import paired_difference, wilson
from tqdm import tqdm

import benchlib

#: The paraphrase list: apart from the worlds' grammars and every training generator.
PARAPHRASES = benchlib.REPO / "bench" / "data" / "paraphrases.json"
#: key -> (axis, magnitude in words, Shift string or "paraphrase"); "none" is the pairing base.
CELLS: dict[str, tuple[str, str, str]] = {
    "none": ("none (as trained)", "-", "none"),
    "camera_2cm_2deg": ("camera moved and turned", "2 cm, 2°", "camera_offset_m=0.02,camera_rotation_deg=2"),
    "camera_5cm_5deg": ("camera moved and turned", "5 cm, 5°", "camera_offset_m=0.05,camera_rotation_deg=5"),
    "camera_10cm_10deg": ("camera moved and turned", "10 cm, 10°", "camera_offset_m=0.1,camera_rotation_deg=10"),
    "light_030": ("every light", "×0.3", "light_scale=0.3"),
    "light_050": ("every light", "×0.5", "light_scale=0.5"),
    "light_150": ("every light", "×1.5", "light_scale=1.5"),
    "light_200": ("every light", "×2", "light_scale=2"),
    "colour": ("colours", "objects ±0.1, surfaces ±0.15 per channel", "object_color=0.1,surface_color=0.15"),
    "distractors_1": ("distractors", "1", "distractors=1"),
    "distractors_2": ("distractors", "2", "distractors=2"),
    "distractors_3": ("distractors", "3", "distractors=3"),
    "paraphrase": ("instruction in other words", "bench/data/paraphrases.json", "paraphrase"),
    "delay_1": ("control delay", "1 step (100 ms)", "control_delay=1"),
    "rgb_noise_8": ("RGB noise", "σ 8 levels", "rgb_noise=8"),
}
SUBMODEL_KEYS = {"full": "full", "3/4": "three_quarter", "1/2": "half", "1/4": "quarter"}


def load_cache(path: Path) -> dict:
    """(world, submodel, cell) -> failed seeds, of every cell finished before."""
    return {(r["world"], r["submodel"], r["cell"]): r for r in benchlib.read_records(path)}


def cell_figures(key: str, episodes: int, first_seed: int, failed: list[int],
                 base_failed: list[int] | None) -> dict:
    """The figures of one cell: success with its Wilson interval, and against the unshifted
    cell on the same seeds (`base_failed`; None: this is it) the paired difference."""
    seeds = range(first_seed, first_seed + episodes)
    fail = set(failed)
    ok = [s not in fail for s in seeds]
    out = {f"{key}_success": float(np.mean(ok)), f"{key}_ci95": wilson(sum(ok), episodes),
           f"{key}_failed_seeds": sorted(fail)}
    if base_failed is not None:
        base_fail = set(base_failed)
        base = [s not in base_fail for s in seeds]
        d = paired_difference(base, ok)
        out.update({f"{key}_diff": d["diff"], f"{key}_diff_ci95": d["ci95"], f"{key}_mcnemar_p": d["mcnemar_p"],
                    f"{key}_only_shifted": len(base_fail - fail), f"{key}_only_unshifted": len(fail - base_fail)})
    return out


def run_cell(model, world: str, cell: str, episodes: int, first_seed: int) -> list[int]:
    """One cell as `embodied-stack eval` runs it: the seeds that failed."""
    from embodied_stack.sim.eval import Paraphraser, evaluate

    spec = CELLS[cell][2]
    shift = None if spec in ("none", "paraphrase") else spec
    rewrite = Paraphraser(PARAPHRASES)(world) if spec == "paraphrase" else None
    r = evaluate(model, world, episodes, first_seed, progress=False, shift=shift, rewrite=rewrite)
    return [int(s) for s in r["failed_seeds"]]


def compare_runs(old: dict, new: dict) -> dict:
    """Two models' robustness results on the same seeds, cell by cell: new - old success with
    its paired 95% interval and McNemar p, per ``<submodel>_<world>_<cell>`` both hold."""
    for key in ("episodes", "first_seed"):
        if old.get(key) != new.get(key):
            raise ValueError(f"the two results differ in {key}: {old.get(key)} vs {new.get(key)}; "
                             "a paired comparison needs the same seeds")
    seeds = range(new["first_seed"], new["first_seed"] + new["episodes"])
    out: dict = {"episodes": new["episodes"], "first_seed": new["first_seed"], "cells": new["cells"],
                 "old_model": old.get("model"), "new_model": new.get("model")}
    for key in sorted(k[: -len("_failed_seeds")] for k in new if k.endswith("_failed_seeds")):
        if f"{key}_failed_seeds" not in old:
            continue
        old_fail, new_fail = set(old[f"{key}_failed_seeds"]), set(new[f"{key}_failed_seeds"])
        d = paired_difference([s not in old_fail for s in seeds], [s not in new_fail for s in seeds])
        out.update({f"{key}_old": old[f"{key}_success"], f"{key}_new": new[f"{key}_success"],
                    f"{key}_diff": d["diff"], f"{key}_diff_ci95": d["ci95"], f"{key}_mcnemar_p": d["mcnemar_p"]})
    return out


def plot(path: str, figures: dict, worlds, submodels, cells) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(worlds), 1, figsize=(13, 4.2 * len(worlds)), squeeze=False)
    x = np.arange(len(cells))
    width = 0.8 / len(submodels)
    for r, world in enumerate(worlds):
        ax = axes[r, 0]
        for n, sub in enumerate(submodels):
            k = [f"{SUBMODEL_KEYS[sub]}_{world}_{c}" for c in cells]
            succ = np.array([figures[f"{q}_success"] for q in k])
            lo = np.array([figures[f"{q}_ci95"][0] for q in k])
            hi = np.array([figures[f"{q}_ci95"][1] for q in k])
            ax.bar(x + (n - (len(submodels) - 1) / 2) * width, 100 * succ, width,
                   yerr=[100 * (succ - lo), 100 * (hi - succ)], capsize=2, label=sub)
        ax.axhline(100 * figures[f"full_{world}_none_success"], color="k", lw=0.8, ls="--")
        ax.set_xticks(x, [f"{CELLS[c][0]}\n{CELLS[c][1]}" if c != "paraphrase" else "paraphrase"
                          for c in cells], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("success (%), Wilson 95%")
        ax.set_ylim(0, 100)
        ax.set_title(f"{world}: {figures['episodes']} seeds from {figures['first_seed']}, same seeds in every cell")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    from embodied_stack.sim.eval import EVAL_FIRST_SEED

    parser = benchlib.parser(__doc__, quick="16 seeds per world, every cell, `full` only")
    parser.add_argument("--model", default="", help="model directory (default: the shipped model)")
    parser.add_argument("--episodes", type=int, default=500, help="seeds per world, the same in every cell")
    parser.add_argument("--first-seed", type=int, default=EVAL_FIRST_SEED,
                        help=f"first seed (default {EVAL_FIRST_SEED}: the eval's unseen test block)")
    parser.add_argument("--worlds", nargs="+", default=["tabletop", "driving"], choices=["tabletop", "driving"])
    parser.add_argument("--submodels", nargs="+", default=["full", "1/2"], choices=list(SUBMODEL_KEYS))
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS),
                        help="which shifts (the unshifted cell always runs: it is the pairing base)")
    parser.add_argument("--cache", default="runs/robustness", help="finished cells (resume)")
    parser.add_argument("--png", metavar="PATH", help="success per cell, world and submodel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                        help="run nothing: compare two models' result files on the same seeds, cell by cell")
    args = parser.parse_args(argv)
    if args.compare:
        old, new = (json.loads(Path(f).read_text()) for f in args.compare)
        try:
            result = compare_runs(old, new)
        except ValueError as e:
            parser.error(str(e))
        rows = [(k[: -len("_diff")], f"{result[k[:-5] + '_old']:.0%}", f"{result[k[:-5] + '_new']:.0%}",
                 f"{100 * result[k]:+.0f} [{100 * result[k + '_ci95'][0]:+.0f}, {100 * result[k + '_ci95'][1]:+.0f}]",
                 f"{result[k[:-5] + '_mcnemar_p']:.2g}") for k in result if k.endswith("_diff")]
        benchlib.print_table(f"{args.compare[1]} vs {args.compare[0]} (same seeds)",
                             ("submodel_world_cell", "old", "new", "new - old [95%]", "McNemar p"), rows)
        return benchlib.write_json(args.json, {"old": args.compare[0], "new": args.compare[1], **result},
                                   __file__, argv)
    if args.quick:
        args.episodes, args.submodels = 16, ["full"]
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    cells = ["none"] + [c for c in args.cells if c != "none"]
    start = time.monotonic()
    import torch

    from embodied_stack.models.policy import DEFAULT_MODEL_DIR, load_default_policy

    torch.set_num_threads(args.threads)
    directory = Path(args.model) if args.model else Path(DEFAULT_MODEL_DIR)
    model = load_default_policy(args.model or None)
    cache = Path(args.cache) / f"{benchlib.model_id(directory)}_{args.first_seed}_{args.episodes}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = load_cache(cache)
    todo = [(w, s, c) for s in args.submodels for w in args.worlds for c in cells if (w, s, c) not in done]
    with tqdm(total=len(todo) * args.episodes, desc="robustness", unit="episode", file=sys.stderr,
              mininterval=1.0) as bar:
        for world, sub, cell in todo:
            bar.set_postfix_str(f"{world} {sub} {cell}")
            model.set_submodel(sub)
            failed = run_cell(model, world, cell, args.episodes, args.first_seed)
            done[(world, sub, cell)] = {"world": world, "submodel": sub, "cell": cell, "failed_seeds": failed}
            with cache.open("a") as f:
                f.write(json.dumps(done[(world, sub, cell)]) + "\n")
            bar.update(args.episodes)
    last = args.first_seed + args.episodes - 1
    block = f"{args.first_seed}-{last}"
    figures: dict = {
        "model": args.model or "models/default_vla (shipped)", "episodes": args.episodes,
        "first_seed": args.first_seed,
        "seed_block": block + (": the eval's unseen test block (training uses seeds below 100000, validation "
                               "300000+)" if args.first_seed == EVAL_FIRST_SEED else ""),
        "cells": {c: {"axis": CELLS[c][0], "magnitude": CELLS[c][1], "shift": CELLS[c][2]} for c in cells},
    }
    rows = []
    for sub in args.submodels:
        for world in args.worlds:
            base = done[(world, sub, "none")]["failed_seeds"]
            for cell in cells:
                key = f"{SUBMODEL_KEYS[sub]}_{world}_{cell}"
                f = cell_figures(key, args.episodes, args.first_seed, done[(world, sub, cell)]["failed_seeds"],
                                 None if cell == "none" else base)
                figures.update(f)
                ci = f[f"{key}_ci95"]
                paired = ("-" if cell == "none" else
                          f"{f[f'{key}_diff']:+.1%} [{f[f'{key}_diff_ci95'][0]:+.1%}, {f[f'{key}_diff_ci95'][1]:+.1%}]")
                rows.append((sub, world, CELLS[cell][0], CELLS[cell][1] if cell != "paraphrase" else "list",
                             f"{f[f'{key}_success']:.0%} [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]", paired,
                             "-" if cell == "none" else f"{f[f'{key}_mcnemar_p']:.2g}"))
    benchlib.print_table(f"Robustness: {args.episodes} seeds per world from {args.first_seed}, paired with the "
                         f"unshifted run", ("submodel", "world", "axis", "magnitude", "success [95%]",
                                            "shifted - unshifted [95%]", "McNemar p"), rows, left=4, width=160)
    if args.png:
        plot(args.png, figures, args.worlds, args.submodels, cells)
        print(f"wrote {args.png}")
    figures["wall_s"] = round(time.monotonic() - start, 1)
    return benchlib.write_json(args.json, figures, __file__, argv)


if __name__ == "__main__":
    main()
