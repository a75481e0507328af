"""`embodied-stack train`: behaviour cloning -> DAgger -> group RL (GRPO / ADPO / EntroPIC) of
the ElasticVLA in the simulation worlds, elastic-aware, resumable.

    embodied-stack train --recipe default --out runs/default   # a new model, from scratch
    embodied-stack train --recipe default --scale 0.01 --out runs/smoke   # the same, minutes
    embodied-stack train --recipe my.yaml --out runs/mine      # a YAML file of TrainConfig fields
    embodied-stack train --out runs/default --resume           # continue a killed run
    embodied-stack train --out runs/x --stages rl --init-from runs/default/model --loss grpo

TrainConfig's defaults are the ``default`` recipe (config/train/default.yaml), so ``--recipe
default`` and no recipe train the same; flags override the recipe field by field.

The stages, in order (each optional, ``--stages``):
1. ``bc``: cross-entropy on expert demonstrations (DART noise, look-ahead chunk labels), plus
   the model's training-only heads fitted to privileged simulator features;
2. ``dagger``: the learner drives as the policy node executes it, the expert labels every
   visited state, the aggregate is retrained;
3. ``rl``: group RL, G sampled rollouts per initial state, group-relative advantages, the
   chosen loss (GRPO, ADPO, EntroPIC or ADPO+EntroPIC).
Every step of every stage also trains one sampled nested submodel by forward KL from the full
model (Nemotron Elastic), so 1/2 keeps up with full.

The files of sim/train/, in the order a run uses them:
- ``config.py``: TrainConfig, every hyper-parameter (each also a flag here), and the seed layout;
- ``run.py``: the run directory, the model (new or warm-started), checkpoints, TensorBoard;
- ``demos.py``: expert demonstrations and DAgger shards on disk;
- ``supervised.py``: the ``bc`` and ``dagger`` stages (the model's own loss is ElasticVLA.forward,
  models/policy/elastic_vla/modeling_elastic_vla.py);
- ``rl.py`` with ``losses.py``: the ``rl`` stage and its losses;
- ``rollouts.py`` / ``distributed.py``: batched rollouts in this process, in worker processes
  or on Ray;
- ``export.py``: a finished run as a model folder with its model card.

This file runs the stages in order (below) and is the command line. The model after each stage
is kept in <out>/model_after_<stage>, the final one in <out>/model. `--resume` continues from
the last checkpoint and gives the same parameters as a run that was never interrupted; Ctrl-C
leaves the last checkpoint intact.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from embodied_stack.models.files import atomic_write_json
from embodied_stack.models.policy.elastic_vla import ElasticVLA
from embodied_stack.sim.train.config import TrainConfig, read_yaml, recipe_path, scaled
from embodied_stack.sim.train.rl import stage_rl
from embodied_stack.sim.train.run import Run, machine_description
from embodied_stack.sim.train.supervised import load_dagger_shards, load_demos, stage_bc, stage_dagger

STAGE_FUNCTIONS = {"bc": stage_bc, "dagger": stage_dagger, "rl": stage_rl}


def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool = False) -> ElasticVLA:
    """Run (or, with `resume`, continue) the configured stages in `out`; the trained model."""
    run = Run(cfg, out, resume)
    start = time.time()
    finished_before = run.progress["stage"] == "done"
    try:
        stages = list(cfg.stages)
        if finished_before:  # a finished run resumed: nothing left to train
            first = len(stages)
        else:
            first = stages.index(run.progress["stage"]) if run.progress["stage"] in stages else 0
        for stage in stages[first:]:
            if run.progress["stage"] != stage:
                run.progress.update(stage=stage, step=0, iteration=0)
                run.save()
            if not len(run.buffer):
                # The labelled states every stage trains on (rl: its CE anchor): the
                # demonstrations when the run has a bc stage, and the DAgger aggregate so far.
                if "bc" in stages:
                    load_demos(run)
                load_dagger_shards(run, below=(run.progress["iteration"] if stage == "dagger"
                                               else 10**9))
            STAGE_FUNCTIONS[stage](run)
            # Each stage's result, for comparisons (bench/train_compare.py) and fallbacks.
            run.model.save_pretrained(run.out / f"model_after_{stage}")
        if not finished_before:
            run.progress["stage"] = "done"
            run.save()
    finally:
        run.close()
    run.model.set_submodel("full")
    run.model.to("cpu")
    if not finished_before:  # (a finished run resumed keeps the model it wrote)
        run.model.save_pretrained(run.out / "model")
    minutes = (time.time() - start) / 60
    info_path = run.out / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    # The training time over every session of the run, up to its last checkpoint.
    wall_s = run.wall_before if finished_before else run.progress["wall_s"]
    if not finished_before or "wall_s" not in info:
        info.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), wall_s=round(wall_s, 1))
        info.setdefault("machine", machine_description(cfg.device))  # (runs begun before it was kept)
        atomic_write_json(info_path, info)
    print(f"done in {minutes:.1f} min ({wall_s / 60:.1f} min over all sessions of the run); "
          f"model in {run.out / 'model'}")
    return run.model


def _parse_bool(text: str) -> bool:
    """A BOOL flag's value; anything but the usual spellings is an error, not False."""
    value = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false, yes/no, 1/0, on/off)")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="embodied-stack train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--recipe", help="a recipe: the name of config/train/<name>.yaml "
                        "('default': the default model's recipe) or a YAML file of TrainConfig fields")
    parser.add_argument("--config", help="YAML file of TrainConfig fields (as --recipe FILE)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="times every amount of work of the recipe (steps, episodes, "
                        "iterations; each >= 1): a smoke run of the same stages, e.g. 0.01")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, f in fields.items():
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            parser.add_argument(flag, type=_parse_bool, metavar="BOOL", help=f"default {default}")
        elif isinstance(default, (int, float, str)):
            parser.add_argument(flag, type=type(default), help=f"default {default!r}")
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", help=f"default {' '.join(default)}")
        else:
            parser.add_argument(flag, type=json.loads, metavar="JSON",
                                help="JSON object (see TrainConfig); it replaces the recipe's "
                                     "whole value" + (" (name every model field you want)"
                                                      if name == "model" else ""))
    args = parser.parse_args(argv)
    overrides = {n: getattr(args, n) for n in fields if getattr(args, n, None) is not None}
    out = Path(args.out)
    if args.recipe and args.config:
        parser.error("--recipe and --config both name a recipe: pass one")
    try:
        if args.resume and (out / "train_config.json").exists():
            saved = json.loads((out / "train_config.json").read_text())
            cfg = TrainConfig.from_dict({**saved, **overrides}, source=str(out / "train_config.json"))
        else:
            source = args.recipe or args.config
            path = recipe_path(source) if source else None
            data = read_yaml(path) if path else {}
            cfg = TrainConfig.from_dict({**scaled(data, args.scale), **overrides},
                                        source=str(path or "flags"))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        train(cfg, out, resume=args.resume)
    except KeyboardInterrupt:
        if (out / "checkpoint.pt").exists():
            print(f"\ninterrupted: the last checkpoint in {out} is intact; continue with "
                  f"embodied-stack train --out {out} --resume", file=sys.stderr)
        else:
            print(f"\ninterrupted before the first checkpoint; collected demonstrations in "
                  f"{out / 'demos'} are kept for the next run", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:  # a model, dataset or world that does not fit
        if (out / "checkpoint.pt").exists():  # (mid-run: where it happened matters)
            import traceback

            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
