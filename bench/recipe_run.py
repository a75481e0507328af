#!/usr/bin/env python3
"""A training run judged against the shipped model on validation seeds: is it good enough to
ship, and which of its stages helped?

    python bench/recipe_run.py --run runs/default [--baseline DIR] [--episodes 300]
        [--first-seed 300000] [--quick] [--json PATH]

Evaluates, on the same validation seeds (300000+ by default: never trained on, and kept apart
from the test seeds a final claim uses once), the run's final model, its model after each
stage (``model_after_<stage>``) and the baseline (default: the shipped model), as
`embodied-stack eval` runs them (greedy, the policy node's execution), and pairs each with the
baseline seed by seed (bench/paired_success.py: the seeds only one solves, exact McNemar).
Adds what the run recorded: its command, code, machine, wall time over all its sessions, any
settings changed on resume (run_info.json) and its per-iteration validation curve (the
checkpoint's log).

Resumable: each evaluation is cached as ``<cache>/<model id>_<first seed>_<episodes>.json``
and reused while the model's weights are unchanged (benchlib.model_id).

JSON keys: ``run``, ``baseline``, ``episodes``, ``first_seed``, ``run_info``, ``train_config``,
``curve`` (validation entries of the run's log), and per model ``final``, ``after_<stage>``,
``baseline``: ``success_<sub>_<world>`` with ``ci95_...``; per compared model
``<model>_vs_baseline``: bench/paired_success.py's figures per ``<sub>_<world>``; among them
``new_within_base_ci95``, whether its success lies inside the baseline's 95% interval: what the
recipe asks of a second run with another training seed, judged on the first run's test block
(``--first-seed 102000 --episodes 500``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from paired_success import compare

import benchlib


def evaluate(directory: Path, episodes: int, first_seed: int, threads: int, cache: Path) -> dict:
    """`embodied-stack eval` of one model folder (cached per weights and seeds)."""
    from embodied_stack.sim.eval import main as eval_main

    path = cache / f"{benchlib.model_id(directory)}_{first_seed}_{episodes}.json"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        eval_main(["--model", str(directory), "--episodes", str(episodes), "--first-seed", str(first_seed),
                   "--submodels", "full", "1/2", "--threads", str(threads), "--json", str(path)])
    return json.loads(path.read_text())


def run_record(run: Path) -> tuple[dict, dict, list[dict]]:
    """The run's run_info.json, train_config.json and the validation entries of its log."""
    import torch

    info = json.loads((run / "run_info.json").read_text()) if (run / "run_info.json").exists() else {}
    config = json.loads((run / "train_config.json").read_text())
    curve = []
    if (run / "checkpoint.pt").exists():
        log = json.loads(torch.load(run / "checkpoint.pt", weights_only=True)["log"])
        curve = [e for e in log if any(k.startswith("success_full_") for k in e)]
    return info, config, curve


def main(argv=None) -> int:
    parser = benchlib.parser(__doc__, quick="40 seeds per world")
    parser.add_argument("--run", type=Path, required=True, help="an `embodied-stack train` run folder")
    parser.add_argument("--baseline", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--episodes", type=int, default=300, help="validation seeds per world (default 300)")
    parser.add_argument("--first-seed", type=int, default=300_000,
                        help="first seed (default 300000: the validation block)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--cache", type=Path, default=Path("runs/recipe_run_cache"), help="finished evaluations")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes = 40
    from embodied_stack.models.policy import DEFAULT_MODEL_DIR

    baseline = args.baseline or Path(DEFAULT_MODEL_DIR)
    if not (args.run / "model" / "model.safetensors").exists():
        parser.error(f"{args.run} has no final model (finish or resume the run first)")
    info, config, curve = run_record(args.run)
    models = {"final": args.run / "model"}
    for stage in config["stages"][:-1]:  # (the last stage's model is the final one)
        if (args.run / f"model_after_{stage}" / "model.safetensors").exists():
            models[f"after_{stage}"] = args.run / f"model_after_{stage}"
    evals = {name: evaluate(d, args.episodes, args.first_seed, args.threads, args.cache) for name, d in
             {**models, "baseline": baseline}.items()}
    figures: dict = {"run": str(args.run), "baseline": str(baseline), "episodes": args.episodes,
                     "first_seed": args.first_seed, "run_info": info, "train_config": config, "curve": curve}
    rows = []
    for name, ev in evals.items():
        figures[name] = {k: v for k, v in ev.items() if k.startswith(("success_", "ci95_"))}
        paired = compare(evals["baseline"], ev) if name != "baseline" else {}
        if paired:
            figures[f"{name}_vs_baseline"] = paired
        for key in ("full_tabletop", "full_driving", "half_tabletop", "half_driving"):
            p = paired.get(key)
            rows.append((name, key, f"{ev[f'success_{key}']:.1%}",
                         "-" if p is None else f"{100 * (p['new'] - p['base']):+.1f}",
                         "-" if p is None else f"{p['new_solves_base_fails']} / {p['base_solves_new_fails']}",
                         "-" if p is None else f"{p['mcnemar_p']:.3f}",
                         "-" if p is None else ("yes" if p["new_within_base_ci95"] else "no")))
    benchlib.print_table(f"{args.run} against {baseline}: {args.episodes} seeds per world from "
                         f"{args.first_seed}, paired", ("model", "submodel_world", "success", "vs baseline (pts)",
                                                        "only it / only baseline", "McNemar p",
                                                        "in baseline's 95%"), rows, left=2)
    if "wall_s" in info:
        print(f"training wall time {info['wall_s'] / 60:.0f} min on {info.get('machine', '?')}")
    benchlib.write_json(args.json, figures, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
