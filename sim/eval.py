"""`embodied-stack eval`: success of a policy in the worlds on held-out seeds, as deployed.

    embodied-stack eval [--model DIR] [--worlds tabletop driving] [--world-file FILE.py]
        [--submodels full 1/2]
        [--episodes 100] [--first-seed 100000] [--refill-at 1] [--execute-steps 0]
        [--execution auto] [--latency 0] [--deadline-s 0.3] [--shift KEY=VALUE,...]
        [--paraphrases FILE] [--json out.json]

Chunks are executed as the policy node executes them (its ChunkScheduler on simulated time,
sim/train/rollouts.py: the next chunk is asked for when ``refill_at`` actions remain, by the
node's execution strategy, ``auto`` by default), greedily, with the torch model batched over
several worlds (ONNX Runtime, the node's default, matches it within 1e-4 on the logits).
``--latency`` puts latency in the loop (control/latency.py: seconds, or ``lognormal`` for
the Jetson Orin figures): the answer to the frame of step t is executed from step
t + latency / period while the world steps on; give ``--deadline-s`` above it. Without
latency every strategy but ``ensemble`` executes exactly what ``replace`` does.
Training uses seeds below 100000 and validates on 300000+; evaluation defaults to seeds from
100000, never seen in training. Prints, per world and submodel, the success rate with its
Wilson 95% interval, the mean return and mean episode length, and success/outcome counts per
task template. JSON keys: ``success_<submodel>_<world>`` (``full``, ``half`` for 1/2,
``three_quarter``, ``quarter``), ``ci95_<submodel>_<world>`` ([low, high]),
``return_<submodel>_<world>``, ``episodes``, ``execution``, ``latency``, ``deadline_s``, and
per-task details under ``details``.

``--shift`` runs the worlds randomised (sim/worlds/shift.py, e.g.
``camera_offset_m=0.05,camera_rotation_deg=5``; docs/simulation.md) and ``--paraphrases FILE``
gives the policy each instruction in other words (:class:`Paraphraser`, e.g.
bench/data/paraphrases.json); the scenes and seeds stay the same, so the result pairs with an
unshifted run seed by seed (bench/robustness.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from embodied_stack.control.chunk_scheduler import STRATEGIES
from embodied_stack.control.latency import AddedLatency
from embodied_stack.control.policy_loop import PolicyLoopConfig
from embodied_stack.models.files import atomic_write_json
from embodied_stack.models.policy.interface import ExecutionMode
from embodied_stack.sim.worlds.registry import ENV_VAR, load_world_files, world_spec

if TYPE_CHECKING:
    from embodied_stack.sim.train.rollouts import Execution

EVAL_FIRST_SEED = 100_000
SUBMODEL_KEY = {"full": "full", "3/4": "three_quarter", "1/2": "half", "1/4": "quarter"}


class Paraphraser:
    """Each instruction in other words, from a JSON file of phrasings kept apart from the
    worlds' grammars (bench/data/paraphrases.json): per world, templates per task; tabletop
    templates take ``{color}``, ``{noun}`` and ``{direction}``, with synonyms per noun and
    phrasings per direction. The phrasing of an episode is drawn from its seed, so a rerun
    gives the same words. ``paraphraser(world)`` is run_episodes' `rewrite` for that world."""

    _TABLETOP = re.compile(r"^(touch|push) the (\S+) (\S+)(?: (.+))?$")

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.data = json.loads(Path(path).read_text())

    #: the worlds whose instruction grammar it parses (a task per phrasing)
    GRAMMARS = ("tabletop", "driving")

    def __call__(self, world: str):
        return lambda seed, instruction: self.rewrite(world, seed, instruction)

    def check(self, world: str) -> None:
        """ValueError unless it can rephrase `world`'s instructions."""
        if world not in self.GRAMMARS or world not in self.data:
            covered = [w for w in self.GRAMMARS if w in self.data]
            raise ValueError(f"--paraphrases {self.path} rephrases the instructions of {covered}, "
                             f"not of world {world!r}")

    def rewrite(self, world: str, seed: int, instruction: str) -> str:
        rng = np.random.default_rng([int(seed), 0x9A4A])
        pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
        data = self.data[world]
        if world == "driving":
            from embodied_stack.sim.worlds.driving import INSTRUCTIONS

            task = next(t for t, texts in INSTRUCTIONS.items() if instruction in texts)
            return str(pick(data[task]))
        from embodied_stack.sim.worlds.tabletop import DIRECTION_PHRASES

        m = self._TABLETOP.match(instruction)
        if m is None:
            raise ValueError(f"not an instruction of the tabletop grammar: {instruction!r}")
        task, color, noun, phrase = m.groups()
        template = pick(data[task])
        direction = ""
        if phrase is not None:
            word = next(w for w, p in DIRECTION_PHRASES.items() if p == phrase)
            direction = pick(data["directions"][word])
        return template.format(color=color, noun=pick(data["nouns"].get(noun, [noun])),
                               direction=direction)


def evaluate(model, world: str, episodes: int, first_seed: int = EVAL_FIRST_SEED,
             mode: ExecutionMode | None = None, pool_size: int = 16,
             progress: bool = True, execution: Execution | None = None, shift=None,
             rewrite=None) -> dict:
    """Greedy episodes on seeds first_seed .. first_seed + episodes - 1 of one world;
    `execution`: the node's strategy and latency in the loop (sim/train/rollouts.Execution);
    `shift`: the worlds' randomisation (sim/worlds/shift.py); `rewrite(seed, instruction)`:
    the instruction the policy gets instead (a Paraphraser's)."""
    from embodied_stack.sim.train.rollouts import WorldPool, run_episodes, success_interval

    mode = mode or ExecutionMode(model.config.chunk_length)
    pool = WorldPool(world, min(pool_size, episodes), shift=shift)
    bar = tqdm(total=episodes, desc=f"eval {world} {model.submodel}", unit="episode",
               disable=not progress)
    try:
        eps = run_episodes(model, pool, range(first_seed, first_seed + episodes), mode,
                           progress=bar.update, execution=execution, rewrite=rewrite)
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
    parser.add_argument("--worlds", "--world", nargs="+", default=["tabletop", "driving"],
                        help="registered worlds (default tabletop driving; others from "
                             f"--world-file, {ENV_VAR} or the embodied_stack.worlds entry points)")
    parser.add_argument("--world-file", action="append", default=[], metavar="FILE.py",
                        help="an adapter file that registers worlds (repeatable)")
    parser.add_argument("--submodels", nargs="+", default=["full", "1/2"],
                        choices=list(SUBMODEL_KEY))
    parser.add_argument("--episodes", type=int, default=100, help="episodes per world (default 100)")
    parser.add_argument("--first-seed", type=int, default=EVAL_FIRST_SEED,
                        help=f"first seed (default {EVAL_FIRST_SEED}: never used in training)")
    parser.add_argument("--refill-at", type=int, default=1,
                        help="next chunk when this many actions remain (the node's default 1)")
    parser.add_argument("--execute-steps", type=int, default=0,
                        help="cut chunks to this many actions (0 = whole chunk)")
    parser.add_argument("--execution", default="auto", choices=["auto", *STRATEGIES],
                        help="the policy node's execution strategy (control/chunk_scheduler.py)")
    parser.add_argument("--latency", default="0",
                        help="latency in the loop: seconds, 'lognormal' or 'lognormal:P50:P99'")
    parser.add_argument("--deadline-s", type=float, default=PolicyLoopConfig.deadline_s,
                        help="the node's deadline_s: no answer or action older than this is executed")
    parser.add_argument("--shift", default="none",
                        help="randomise the worlds: key=value,... of sim/worlds/shift.py's Shift")
    parser.add_argument("--paraphrases", metavar="FILE",
                        help="give each instruction in other words from FILE (e.g. bench/data/paraphrases.json)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--json", metavar="PATH", help="write the figures here (atomically)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    try:
        load_world_files(args.world_file)
        for world in args.worlds:
            world_spec(world)
        latency = AddedLatency.parse(args.latency)
        PolicyLoopConfig(execution=args.execution, deadline_s=args.deadline_s)
        from embodied_stack.sim.worlds.shift import Shift

        shift = Shift.from_option(args.shift)
        paraphraser = Paraphraser(args.paraphrases) if args.paraphrases else None
        for world in args.worlds:
            if shift is not None and "shift" not in world_spec(world).options:
                raise ValueError(f"world {world!r} takes no --shift (its spec's options "
                                 f"{list(world_spec(world).options)} lack 'shift')")
            if paraphraser is not None:
                paraphraser.check(world)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    import torch

    from embodied_stack.models.policy import load_default_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_default_policy(args.model or None)
    for world in args.worlds:
        body = world_spec(world).embodiment.name
        if body not in model.config.embodiments:
            parser.error(f"the model acts for embodiments {sorted(model.config.embodiments)}, not "
                         f"{body!r} of world {world!r}: give --model a model trained for it "
                         f"(embodied-stack train --worlds {world} --init-from '')")
        if world_spec(world).proprio_width > model.config.proprio_dim:
            parser.error(f"world {world!r} gives {world_spec(world).proprio_width} proprio entries, the "
                         f"model reads {model.config.proprio_dim}: give --model a model trained for it")
    from embodied_stack.sim.train.rollouts import Execution

    mode = ExecutionMode(model.config.chunk_length, args.refill_at, args.execute_steps)
    execution = Execution({"execution": args.execution, "deadline_s": args.deadline_s}, latency)
    results = {"model": args.model or "shipped default", "episodes": args.episodes,
               "first_seed": args.first_seed, "refill_at": args.refill_at,
               "execute_steps": args.execute_steps, "execution": args.execution,
               "latency": args.latency, "deadline_s": args.deadline_s, "details": {},
               # the command that wrote these figures, as a user would type it
               "command": shlex.join(["embodied-stack", "eval",
                                      *(sys.argv[1:] if argv is None else argv)])}
    if shift is not None:
        results["shift"] = shift.describe()
    if paraphraser is not None:
        results["paraphrases"] = args.paraphrases
    print(f"{'submodel':8s} {'world':9s} {'success':>8s} {'95% CI':>14s} {'return':>7s} "
          f"{'steps':>6s}  per task")
    for world in args.worlds:
        if not world_spec(world).seed_fixes_start:
            print(f"note: {world}'s seeds do not fix its start states: a rerun or a paired "
                  "comparison does not see the same episodes", file=sys.stderr)
    for submodel in args.submodels:
        model.set_submodel(submodel)
        key = SUBMODEL_KEY[submodel]
        for world in args.worlds:
            r = evaluate(model, world, args.episodes, args.first_seed, mode, execution=execution,
                         shift=shift, rewrite=paraphraser(world) if paraphraser else None)
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
