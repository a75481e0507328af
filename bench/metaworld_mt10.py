#!/usr/bin/env python3
"""Meta-World MT10: one multi-task policy from pixels + proprio, success per task on unseen starts.

1. ``embodied-stack train`` (the default recipe's model and bc, DART noise as the recipe sets
   it) on ``--demo-episodes`` scripted-expert episodes of ``metaworld_mt10`` (seeds 0..N-1:
   the seed picks the task, ``seed % 10``, so each task gets N/10), ``--bc-steps`` optimiser
   steps, the trainer's own check on 100 validation seeds (300000+; 10 with --quick) at the end;
2. ``embodied-stack eval`` of the full model on ``--eval-episodes`` seeds from 100000 (never
   drawn in training: new object and goal positions), greedy, 200-step episodes: with the
   default 500, 50 per task.

    python bench/metaworld_mt10.py [--bc-steps 2500] [--demo-episodes 500] [--eval-episodes 500]
        [--dagger-iterations 0] [--dagger-episodes 100] [--dagger-steps 1000]
        [--threads 1] [--work runs/mt10_bc] [--json bench/results/metaworld_mt10_bc.json]

``--dagger-iterations N`` adds the recipe's DAgger stage after bc: N rounds of
``--dagger-episodes`` learner rollouts (a tenth per task) relabelled by Meta-World's scripted
policies, ``--dagger-steps`` each on the growing aggregate.

Work under ``--work`` is reused: a finished training run (its train_config.json must match
the arguments, or the script stops), an interrupted one is resumed, a finished evaluation
kept. JSON keys: ``stages``, ``bc_steps``, ``demo_episodes``, ``dagger_iterations``, ``dagger_episodes``,
``dagger_steps``, ``eval_episodes``, ``first_seed``,
``success`` and ``ci95`` (all tasks), ``tasks`` ({task: {episodes, successes, success, ci95,
outcomes}}), ``train_s`` (wall time of the training run on this machine), ``machine``,
``model`` (the trained model's id).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import benchlib

WORLD = "metaworld_mt10"


def _stages(args) -> list[str]:
    return ["bc", "dagger"] if args.dagger_iterations else ["bc"]


def _train_args(args) -> list[str]:
    dagger = (["--dagger-iterations", str(args.dagger_iterations),
               "--dagger-episodes", json.dumps({WORLD: args.dagger_episodes}),
               "--dagger-steps", str(args.dagger_steps)] if args.dagger_iterations else [])
    return ["--recipe", "default", "--out", str(args.work), "--worlds", WORLD,
            "--stages", *_stages(args), "--bc-steps", str(args.bc_steps),
            "--demo-episodes", json.dumps({WORLD: args.demo_episodes}), *dagger,
            "--eval-episodes", "10" if args.quick else "100", "--threads", str(args.threads)]


def _check_run(args) -> None:
    """A reused run must be the one the arguments describe."""
    config = json.loads((args.work / "train_config.json").read_text())
    want = {"worlds": [WORLD], "stages": _stages(args), "bc_steps": args.bc_steps,
            "demo_episodes": {WORLD: args.demo_episodes}}
    if args.dagger_iterations:
        want.update(dagger_iterations=args.dagger_iterations, dagger_steps=args.dagger_steps,
                    dagger_episodes={WORLD: args.dagger_episodes})
    have = {k: config.get(k) for k in want}
    if have != want:
        raise SystemExit(f"{args.work} holds another run ({have}); expected {want}: "
                         f"choose another --work")


def main(argv=None) -> int:
    parser = benchlib.parser(__doc__)
    parser.add_argument("--bc-steps", type=int, default=2500, help="bc optimiser steps (default 2500)")
    parser.add_argument("--demo-episodes", type=int, default=500,
                        help="expert episodes, a tenth per task (default 500)")
    parser.add_argument("--eval-episodes", type=int, default=500,
                        help="unseen seeds from 100000, a tenth per task (default 500)")
    parser.add_argument("--dagger-iterations", type=int, default=0,
                        help="DAgger iterations after bc (default 0: bc alone, as the first run)")
    parser.add_argument("--dagger-episodes", type=int, default=100,
                        help="learner episodes the expert relabels per DAgger iteration (default 100)")
    parser.add_argument("--dagger-steps", type=int, default=1000,
                        help="optimiser steps per DAgger iteration (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--work", type=Path, default=Path("runs/mt10_bc"))
    args = parser.parse_args(argv)
    if args.quick:
        args.bc_steps, args.demo_episodes, args.eval_episodes = 20, 10, 10
        args.dagger_episodes, args.dagger_steps = 10, 10
        args.work = args.work.with_name(args.work.name + "_quick")
    for name in ("bc_steps", "demo_episodes", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    from embodied_stack.sim.eval import main as eval_main
    from embodied_stack.sim.train.rollouts import success_interval
    from embodied_stack.sim.train.trainer import main as train_main

    model = args.work / "model"
    if (args.work / "train_config.json").exists():
        _check_run(args)
    if not (model / "config.json").exists():
        train_main(_train_args(args) + (["--resume"] if (args.work / "checkpoint.pt").exists() else []))
    info = json.loads((args.work / "run_info.json").read_text())
    out = args.work / f"eval_unseen_{args.eval_episodes}.json"
    if not out.exists():
        eval_main(["--model", str(model), "--worlds", WORLD, "--submodels", "full",
                   "--episodes", str(args.eval_episodes), "--threads", str(args.threads),
                   "--json", str(out)])
    result = json.loads(out.read_text())
    from embodied_stack.sim.worlds.metaworld_mt10 import TASK_NAMES

    per_task = result["details"][f"full_{WORLD}"]["tasks"]
    tasks = {}
    for task, t in sorted(per_task.items(), key=lambda kv: TASK_NAMES.index(kv[0] + "-v3")):
        k = round(t["success"] * t["episodes"])
        tasks[task] = {"episodes": t["episodes"], "successes": k, "success": t["success"],
                       "ci95": [round(x, 4) for x in success_interval(k, t["episodes"])],
                       "outcomes": t["outcomes"]}
    figures = {
        "world": WORLD, "stages": _stages(args), "bc_steps": args.bc_steps, "demo_episodes": args.demo_episodes,
        "dagger_iterations": args.dagger_iterations,
        "dagger_episodes": args.dagger_episodes if args.dagger_iterations else 0,
        "dagger_steps": args.dagger_steps if args.dagger_iterations else 0,
        "eval_episodes": args.eval_episodes, "first_seed": result.get("first_seed", 100000),
        "success": result[f"success_full_{WORLD}"],
        "ci95": [round(x, 4) for x in result[f"ci95_full_{WORLD}"]],
        "tasks": tasks, "train_s": info.get("wall_s"), "train_command": info.get("command"),
        "train_commit": info.get("commit"), "machine": info.get("machine"),
        "model": benchlib.model_id(model), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    benchlib.print_table(
        f"{WORLD}: one policy, {args.demo_episodes} demonstrations, {args.bc_steps} bc steps, "
        f"{args.eval_episodes} unseen starts", ("task", "success", "95% CI", "episodes"),
        [(task, f"{t['success']:.0%}", str(t["ci95"]), t["episodes"]) for task, t in tasks.items()]
        + [("all", f"{figures['success']:.1%}", str(figures["ci95"]), args.eval_episodes)])
    benchlib.write_json(args.json, figures, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
