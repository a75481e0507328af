"""`embodied-stack eval`: success of a policy in the worlds on held-out seeds, as deployed.

    embodied-stack eval [--model DIR] [--worlds tabletop driving] [--submodels full 1/2]
        [--episodes 100] [--first-seed 100000] [--refill-at 1] [--execute-steps 0]
        [--json out.json]

Chunks are executed as the policy node executes them (``ExecutionMode``: the next chunk is
asked for when ``refill_at`` actions remain), greedily, with the torch model batched over
several worlds (ONNX Runtime, the node's default, matches it within 1e-4 on the logits).
Training uses seeds below 100000 and validates on 300000+; evaluation defaults to seeds from
100000, never seen in training. Prints, per world and submodel, the success rate with its
Wilson 95% interval, the mean return and mean episode length, and success/outcome counts per
task template. JSON keys: ``success_<submodel>_<world>`` (``full``, ``half`` for 1/2,
``three_quarter``, ``quarter``), ``ci95_<submodel>_<world>`` ([low, high]),
``return_<submodel>_<world>``, ``episodes``, and per-task details under ``details``.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import sys
from typing import Any

import numpy as np
from tqdm import tqdm

from embodied_stack.models.files import atomic_write_json
from embodied_stack.models.policy.interface import ExecutionMode
from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

EVAL_FIRST_SEED = 100_000
SUBMODEL_KEY = {"full": "full", "3/4": "three_quarter", "1/2": "half", "1/4": "quarter"}


def evaluate(model, world: str, episodes: int, first_seed: int = EVAL_FIRST_SEED,
             mode: ExecutionMode | None = None, pool_size: int = 16,
             progress: bool = True) -> dict:
    """Greedy episodes on seeds first_seed .. first_seed + episodes - 1 of one world."""
    from embodied_stack.sim.train.rollouts import WorldPool, run_episodes, success_interval

    mode = mode or ExecutionMode(model.config.chunk_length)
    pool = WorldPool(world, min(pool_size, episodes))
    bar = tqdm(total=episodes, desc=f"eval {world} {model.submodel}", unit="episode",
               disable=not progress)
    try:
        eps = run_episodes(model, pool, range(first_seed, first_seed + episodes), mode,
                           progress=bar.update)
    finally:
        bar.close()
        pool.close()
    wins = sum(e.success for e in eps)
    per_task: collections.defaultdict[str, dict[str, Any]] = collections.defaultdict(
        lambda: {"episodes": 0, "success": 0, "outcomes": collections.Counter()})
    for e in eps:
        t = per_task[e.task]
        t["episodes"] += 1
        t["success"] += int(e.success)
        t["outcomes"][e.outcome.split(":")[0]] += 1
    return {
        "success": wins / len(eps), "ci95": list(success_interval(wins, len(eps))),
        "episodes": len(eps), "mean_return": float(np.mean([e.ret for e in eps])),
        "mean_steps": float(np.mean([e.steps for e in eps])),
        "tasks": {k: {"episodes": v["episodes"], "success": v["success"] / v["episodes"],
                      "outcomes": dict(v["outcomes"])} for k, v in sorted(per_task.items())},
        "failed_seeds": [e.seed for e in eps if not e.success],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="embodied-stack eval",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model directory (default: the shipped model)")
    parser.add_argument("--worlds", nargs="+", default=["tabletop", "driving"],
                        choices=sorted(EMBODIMENT_OF_WORLD))
    parser.add_argument("--submodels", nargs="+", default=["full", "1/2"],
                        choices=list(SUBMODEL_KEY))
    parser.add_argument("--episodes", type=int, default=100, help="episodes per world (default 100)")
    parser.add_argument("--first-seed", type=int, default=EVAL_FIRST_SEED,
                        help=f"first seed (default {EVAL_FIRST_SEED}: never used in training)")
    parser.add_argument("--refill-at", type=int, default=1,
                        help="next chunk when this many actions remain (the node's default 1)")
    parser.add_argument("--execute-steps", type=int, default=0,
                        help="cut chunks to this many actions (0 = whole chunk)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--json", metavar="PATH", help="write the figures here (atomically)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    import torch

    from embodied_stack.models.policy import load_default_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_default_policy(args.model or None)
    mode = ExecutionMode(model.config.chunk_length, args.refill_at, args.execute_steps)
    results = {"model": args.model or "shipped default", "episodes": args.episodes,
               "first_seed": args.first_seed, "refill_at": args.refill_at,
               "execute_steps": args.execute_steps, "details": {},
               # the command that wrote these figures, as a user would type it
               "command": shlex.join(["embodied-stack", "eval",
                                      *(sys.argv[1:] if argv is None else argv)])}
    print(f"{'submodel':8s} {'world':9s} {'success':>8s} {'95% CI':>14s} {'return':>7s} "
          f"{'steps':>6s}  per task")
    for submodel in args.submodels:
        model.set_submodel(submodel)
        key = SUBMODEL_KEY[submodel]
        for world in args.worlds:
            r = evaluate(model, world, args.episodes, args.first_seed, mode)
            results[f"success_{key}_{world}"] = r["success"]
            results[f"ci95_{key}_{world}"] = r["ci95"]
            results[f"return_{key}_{world}"] = r["mean_return"]
            results["details"][f"{key}_{world}"] = r
            tasks = ", ".join(f"{t} {v['success']:.0%} of {v['episodes']}"
                              for t, v in r["tasks"].items())
            print(f"{submodel:8s} {world:9s} {r['success']:8.0%} "
                  f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] {r['mean_return']:7.2f} "
                  f"{r['mean_steps']:6.1f}  {tasks}")
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
