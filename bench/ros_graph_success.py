#!/usr/bin/env python3
"""Success through the ROS 2 graph (sim bridge + policy node over DDS) next to the offline
figure of the same model, per world and bridge mode.

    python bench/ros_graph_success.py [--episodes 20] [--modes realtime lockstep]
        [--worlds tabletop driving] [--model DIR] [--quick] [--json PATH]

`realtime`: the bridge steps on its own 10 Hz timer and applies the latest command, as a robot
would (the policy node's timing, the executor and the machine's load all matter); `lockstep`:
the bridge steps once per received command (the graph paced by the policy). Offline figures:
the model folder's eval.json (`embodied-stack eval`, 100 seeds from 100000) and, on the very
seeds the graph runs (1000+, the demo's), `sim.eval.evaluate`. JSON keys:
``<mode>_success_<world>``, ``<mode>_ci95_<world>``, ``offline_success_<world>``,
``offline_ci95_<world>``, ``offline_same_seeds_success_<world>``,
``<mode>_within_offline_ci_<world>``, ``<mode>_latency_p95_ms_<world>``,
``<mode>_failed_seeds_<world>``, ``offline_failed_seeds_<world>`` and
``<mode>_agrees_with_offline_<world>`` (seeds with the same outcome in the graph and offline).
"""

from __future__ import annotations

import json
from pathlib import Path

from embodied_stack.models.policy import DEFAULT_MODEL_DIR
from embodied_stack.sim.train.rollouts import success_interval

import benchlib


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="3 episodes per world and mode")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["realtime", "lockstep"],
                        choices=["realtime", "lockstep"])
    parser.add_argument("--worlds", nargs="+", default=["tabletop", "driving"],
                        choices=["tabletop", "driving"])
    parser.add_argument("--model", default="", help="model folder (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes = 3
    from embodied_stack.nodes.demo import run_world

    model_dir = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    offline = json.loads((model_dir / "eval.json").read_text()) \
        if (model_dir / "eval.json").exists() else {}
    figures: dict = {"episodes": args.episodes, "first_seed": args.seed}
    rows = []
    for world in args.worlds:
        off = offline.get(f"success_full_{world}")
        off_ci = offline.get(f"ci95_full_{world}")
        figures[f"offline_success_{world}"] = off
        figures[f"offline_ci95_{world}"] = off_ci
        from embodied_stack.models.policy import load_default_policy
        from embodied_stack.sim.eval import evaluate

        offline_same = evaluate(load_default_policy(args.model or None), world, args.episodes,
                                args.seed, progress=False)
        same = offline_same["success"]
        figures[f"offline_same_seeds_success_{world}"] = same
        figures[f"offline_failed_seeds_{world}"] = offline_same["failed_seeds"]
        for mode in args.modes:
            run = run_world(world, args.episodes, args.seed, "vla", args.model, "full", None,
                            mode=mode, timeout_s=60.0 * args.episodes, runtime="onnxruntime")
            wins = sum(e["success"] for e in run.episodes)
            rate = wins / len(run.episodes)
            ci = list(success_interval(wins, len(run.episodes)))
            within = off_ci is not None and off_ci[0] <= rate <= off_ci[1]
            figures[f"{mode}_success_{world}"] = rate
            figures[f"{mode}_ci95_{world}"] = ci
            figures[f"{mode}_within_offline_ci_{world}"] = bool(within)
            figures[f"{mode}_latency_p95_ms_{world}"] = run.summary["latency_p95_ms"]
            figures[f"{mode}_missed_ticks_{world}"] = run.summary["missed_ticks"]
            # sim steps that reused the previous command / commands no step ever used
            figures[f"{mode}_repeated_commands_{world}"] = run.summary["missed_commands"]
            figures[f"{mode}_overwritten_commands_{world}"] = run.summary["overwritten_commands"]
            figures[f"{mode}_steps_{world}"] = run.summary["steps"]
            failed = [e["seed"] for e in run.episodes if not e["success"]]
            figures[f"{mode}_failed_seeds_{world}"] = failed
            # seeds on which the graph and the offline eval agree (both won or both lost)
            figures[f"{mode}_agrees_with_offline_{world}"] = len(run.episodes) - len(
                set(failed) ^ set(offline_same["failed_seeds"]))
            rows.append((world, mode, f"{rate:.0%} ({len(run.episodes)})", f"[{ci[0]:.0%}, {ci[1]:.0%}]",
                         "-" if off is None else f"{off:.0%}",
                         "-" if off_ci is None else f"[{off_ci[0]:.0%}, {off_ci[1]:.0%}]",
                         "yes" if within else "no", f"{same:.0%}", f"{run.summary['latency_p95_ms']:.1f}"))
    benchlib.print_table("Success through the ROS 2 graph vs offline (full submodel)",
                         ("world", "mode", "graph success", "95% CI", "offline", "offline 95% CI",
                          "within", "offline, same seeds", "p95 ms"), rows, left=2, width=120)
    figures["command"] = benchlib.command_line(__file__, argv)
    return benchlib.write_json(args.json, figures)


if __name__ == "__main__":
    main()
