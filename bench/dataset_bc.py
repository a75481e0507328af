#!/usr/bin/env python3
"""BC from a recorded LeRobotDataset vs BC from the live expert on the same episodes, paired
on unseen seeds (issue 33's dataset acceptance, at the scale given).

1. ``embodied-stack record`` drives ``--episodes`` episodes of ``--world`` (default driving;
   any registered world with an expert, e.g. ``metaworld_reach``; seeds 0..N-1) through the
   ROS graph with the expert backend (lockstep) and writes a LeRobotDataset v3 (AV1 video).
2. Two models (new ones by default, or both from ``--init-from``; the default TrainConfig model
   plus ``reference_frame``, the same seed) get ``--bc-steps`` of bc:
   ``dataset``: from the dataset alone (``--dataset``: recorded actions, bins over its action
   min/max, the training-only heads' targets from its ``observation.privileged``, which a
   recording of the sim graph has); ``expert``: from the live expert's demonstrations on the
   same seeds, without DART noise (so the same trajectories), as ``embodied-stack train`` records them,
   with the same action bins (the dataset's min/max): the two differ only in where the data came from.
   ``--expert-dart``: the live expert with the trainer's DART noise instead (as ``train`` runs
   bc; the recorded episodes are not the expert's closed-loop ones either: in the graph its
   chunks run open-loop between answers, which widens the states they visit).
3. Both are evaluated greedily on ``--eval-episodes`` unseen seeds from 100000 and compared seed
   by seed (bench/paired_success.py: the seeds only one solves, exact McNemar).

    python bench/dataset_bc.py [--world driving] [--episodes 100] [--bc-steps 1000]
        [--eval-episodes 500] [--work runs/dataset_bc] [--quick] [--json bench/results/dataset_bc.json]

Work is kept under ``--work`` and reused (the dataset, each finished run, each evaluation). On
two cores: ``--part dataset`` (records first) and ``--part expert`` side by side with
``--threads 1``, then ``--part eval-dataset`` and ``--part eval-expert`` side by side, then
``--part all`` compares them and writes the JSON.
JSON keys: ``world``, ``episodes``, ``bc_steps``, ``seed``, ``elastic_every``, ``eval_episodes``, ``init_from``,
``dataset_frames``,
``success_dataset``, ``success_expert``, ``ci95_dataset``, ``ci95_expert``,
``dataset_solves_expert_fails``, ``expert_solves_dataset_fails``, ``mcnemar_p``, ``action_range``
(the bins both runs used),
``codec`` (the dataset's video codec, as its info names it),
``difference_points`` (dataset - expert, percentage points), ``difference_ci95_points`` (its
paired 95% interval), ``dataset_privileged`` (the dataset has the expert's privileged features),
``record_s``, ``train_dataset_s``,
``train_expert_s``, ``expert_noise`` (none, or the DART noise of ``--expert-dart``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from paired_success import compare

from embodied_stack.sim.datasets.lerobot_v3 import CODECS

import benchlib


def _train(out: Path, **fields) -> float:
    from embodied_stack.sim.train.config import TrainConfig
    from embodied_stack.sim.train.trainer import train

    if (out / "model" / "config.json").exists():
        return json.loads((out / "wall_s.json").read_text())["wall_s"]
    start = time.time()
    train(TrainConfig(**fields), out, resume=(out / "checkpoint.pt").exists())
    wall = time.time() - start
    (out / "wall_s.json").write_text(json.dumps({"wall_s": wall}))
    return wall


def _eval(model: Path, world: str, out: Path, episodes: int, threads: int) -> dict:
    from embodied_stack.sim.eval import main as eval_main

    if not out.exists():
        eval_main(["--model", str(model), "--worlds", world, "--submodels", "full",
                   "--episodes", str(episodes), "--threads", str(threads), "--json", str(out)])
    return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = benchlib.parser(__doc__)
    parser.add_argument("--world", default="driving",
                        help="a registered world with an expert (default driving)")
    parser.add_argument("--episodes", type=int, default=100, help="recorded episodes (default 100)")
    parser.add_argument("--bc-steps", type=int, default=1000, help="bc optimiser steps (default 1000)")
    parser.add_argument("--eval-episodes", type=int, default=500,
                        help="unseen seeds from 100000 (default 500)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed of both runs (default 0): another seed shows how far "
                             "equal runs differ")
    parser.add_argument("--init-from", default="", help="both runs start from this model "
                        "('' = a new model, the default; 'default' = the shipped one: fine-tuning)")
    parser.add_argument("--work", type=Path, default=Path("runs/dataset_bc"))
    parser.add_argument("--elastic-every", type=int, default=1,
                        help="a sampled submodel every Nth bc step (default 1, as the committed "
                             "driving results were made; the recipe uses 2)")
    parser.add_argument("--part", choices=("all", "dataset", "expert", "eval-dataset", "eval-expert"),
                        default="all",
                        help="train only that run, or evaluate only that trained run, and stop "
                             "(two processes, one per core; the dataset is recorded first), then "
                             "'all' reuses what they left (default all)")
    parser.add_argument("--codec", default="av1", choices=sorted(CODECS),
                        help="the dataset's video codec (default av1, lossy 4:2:0 as lerobot's default; "
                             "h264-lossless: the frames exactly)")
    parser.add_argument("--expert-dart", action="store_true",
                        help="the live expert's demonstrations with the trainer's DART noise "
                             "(default: none, the expert's own trajectories)")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.bc_steps, args.eval_episodes = 4, 20, 4
        args.work = args.work.with_name(args.work.name + "_quick")
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "dataset"
    if not data.exists():
        from embodied_stack.nodes.record import record

        start = time.time()
        record(args.world, args.episodes, 0, data, bag=args.work / "dataset.mcap", codec=args.codec)
        (args.work / "record_s.json").write_text(json.dumps({"record_s": time.time() - start}))
    timing = args.work / "record_s.json"  # (absent: recorded before it was kept)
    record_s = json.loads(timing.read_text())["record_s"] if timing.exists() else 0.0
    from embodied_stack.sim.datasets.lerobot_v3 import LeRobotDataset

    dataset = LeRobotDataset(data)
    frames, privileged = dataset.num_frames, "observation.privileged" in dataset.features
    codec = dataset.features["observation.images.color"].get("info", {}).get("video.codec")
    from embodied_stack.sim.train.config import TrainConfig

    # A new model with the task memory lane changes need (the reference frame, as shipped).
    model = {**TrainConfig().model, "reference_frame": True}
    common = dict(stages=("bc",), init_from=args.init_from, bc_steps=args.bc_steps, eval_episodes=0,
                  threads=args.threads, seed=args.seed, model=model, elastic_every=args.elastic_every)
    expert = "expert_dart" if args.expert_dart else "expert"
    runs = {"dataset": "dataset", "expert": expert}  # name -> run folder under --work

    def evaluate(name: str) -> dict:
        run = runs[name]
        return _eval(args.work / f"from_{run}" / "model", args.world, args.work / f"eval_{run}.json",
                     args.eval_episodes, args.threads)
    if args.part.startswith("eval-"):  # (the run --part dataset / expert trained)
        evaluate(args.part.removeprefix("eval-"))
        return 0
    if args.part in ("all", "dataset"):
        train_dataset_s = _train(args.work / "from_dataset", dataset=str(data), **common)
    if args.part == "dataset":
        return 0
    # The same bins as the dataset run (which sets them from the dataset's statistics).
    from embodied_stack.sim.train.demos import dataset_action_range
    from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

    bins = {EMBODIMENT_OF_WORLD[args.world]: dataset_action_range(data)}
    defaults = TrainConfig()
    noise = (dict(noise_std=defaults.noise_std, noisy_share=defaults.noisy_share) if args.expert_dart
             else dict(noise_std=0.0, noisy_share=0.0))
    train_expert_s = _train(args.work / f"from_{expert}", worlds=(args.world,),
                            demo_episodes={args.world: args.episodes}, **noise,
                            **{**common, "model": {**model, "action_range": bins}})
    if args.part == "expert":
        return 0
    evals = {name: evaluate(name) for name in runs}
    cell = f"full_{args.world}"
    paired = compare(evals["expert"], evals["dataset"])[cell]
    figures = {
        "world": args.world, "episodes": args.episodes, "bc_steps": args.bc_steps, "seed": args.seed,
        "elastic_every": args.elastic_every, "eval_episodes": args.eval_episodes,
        "init_from": args.init_from or "new model", "action_range": bins,
        "dataset_frames": frames, "dataset_privileged": privileged,
        "codec": codec,
        "success_dataset": paired["new"], "success_expert": paired["base"],
        "ci95_dataset": evals["dataset"][f"ci95_{cell}"],
        "ci95_expert": evals["expert"][f"ci95_{cell}"],
        "dataset_solves_expert_fails": paired["new_solves_base_fails"],
        "expert_solves_dataset_fails": paired["base_solves_new_fails"],
        "mcnemar_p": paired["mcnemar_p"],
        "difference_points": round(100 * (paired["new"] - paired["base"]), 1),
        "difference_ci95_points": [round(100 * v, 1) for v in paired["difference_ci95"]],
        "record_s": round(record_s, 1), "train_dataset_s": round(train_dataset_s, 1),
        "train_expert_s": round(train_expert_s, 1),
        "expert_noise": (f"DART sigma {noise['noise_std']:g} on {noise['noisy_share']:.0%} of episodes"
                         if args.expert_dart else "none"),
    }
    benchlib.print_table(
        f"{args.world}, BC on {args.episodes} episodes ({frames} frames), {args.bc_steps} steps, "
        f"{args.eval_episodes} unseen seeds (paired)",
        ("trained from", "success", "95% CI", "seeds only it solves"),
        [("dataset (record -> LeRobot v3)", f"{paired['new']:.1%}",
          str(evals["dataset"][f"ci95_{cell}"]), paired["new_solves_base_fails"]),
         ("live expert (same seeds)", f"{paired['base']:.1%}",
          str(evals["expert"][f"ci95_{cell}"]), paired["base_solves_new_fails"])])
    low, high = figures["difference_ci95_points"]
    print(f"difference {figures['difference_points']:+.1f} points [{low:+.1f}, {high:+.1f}], "
          f"McNemar p {paired['mcnemar_p']:.3f}")
    benchlib.write_json(args.json, figures, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
