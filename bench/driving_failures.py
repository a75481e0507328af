#!/usr/bin/env python3
"""Where the driving policy fails its lane changes, by start and target lane.

A lane change ends in, or starts from, the middle lane (three lanes; lane 0 is the
rightmost). Seen from the middle lane with "change to the left lane", the same camera image
and proprio call for opposite actions: go left (the episode started in the middle) or stay
(it started on the right and has already changed). The policy is a function of the current
observation only (no memory of the start lane), so it can only guess in these states. This
bench measures how much of the driving failure rate that accounts for.

For each lane-change episode (greedy, chunks executed as `embodied-stack eval` and the
policy node execute them: the next chunk when one action remains) it records the start,
target and final lane and classifies a failure:

- ``no_change``: ended (or collided) in the start lane, having never reached the target;
- ``overshoot``: reached the target lane and went on into the next one;
- ``other``: anything else (a collision in the target lane, off the road, ...).

    python bench/driving_failures.py [--quick] [--model DIR] [--episodes 300] [--first-seed 100000]
        [--submodels full 1/2] [--json PATH]

JSON keys: per submodel (``full``, ``half``): ``<sub>_lane_change_episodes``,
``<sub>_lane_change_success``, ``<sub>_failures`` ({no_change, overshoot, other}), and
``<sub>_by_lanes`` ({"change_left 1->2": {"episodes", "success", "failures"}, ...}); plus
episodes, first_seed, model, command. Seeds from 100000 are never used in training.
"""

from __future__ import annotations

import collections

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import embodied_stack.sim  # noqa: F401  (registers the worlds)
from embodied_stack.models.policy import load_default_policy
from embodied_stack.models.policy.interface import ExecutionMode, Observation
from embodied_stack.sim import WORLD_IDS
from embodied_stack.sim.eval import SUBMODEL_KEY
from embodied_stack.sim.worlds import driving as world

import benchlib

LANE_CHANGES = ("change_left", "change_right")


def lane_of(d: float) -> int:
    """Lane index (0 = rightmost) of a lateral offset d (m, positive = left)."""
    return int(np.clip(round(d / world.LANE_WIDTH + 1.0), 0, world.NUM_LANES - 1))


def run_episode(policy, env, seed: int, mode: ExecutionMode) -> dict | None:
    """One greedy episode, each chunk executed for mode.steps_per_inference actions before
    re-planning on the newest frame; None when the seed's task is not a lane change."""
    obs, info = env.reset(seed=seed)
    first = obs  # the reference frame (models with reference_frame)
    w = env.unwrapped
    if w.task not in LANE_CHANGES:
        return None
    start, target = int(w.start_lane), int(w.target_lane)
    reached = False
    queue: list = []
    done = False
    while not done:
        if not queue:
            queue = list(policy.select_action(Observation(
                rgb=obs["rgb"], instruction=obs["instruction"], proprio=obs["proprio"],
                embodiment="vehicle", depth=obs["depth"], reference_rgb=first["rgb"],
                reference_depth=first["depth"])).chunk[: mode.steps_per_inference])
        obs, _, terminated, truncated, info = env.step(np.asarray(queue.pop(0), np.float32))
        done = terminated or truncated
        reached = reached or lane_of(w.ego_d) == target
    final = lane_of(w.ego_d)
    success = bool(info["is_success"])
    kind = None
    if not success:
        if final == start and not reached:
            kind = "no_change"
        elif reached and final != target and (final - target) * (target - start) > 0:
            kind = "overshoot"
        else:
            kind = "other"
    return {"task": w.task, "start": start, "target": target, "final": final,
            "success": success, "failure": kind, "outcome": str(info["outcome"])}


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="10 seeds (< 60 s here), same code path")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="seeds tried (about half are lane changes; default 300, --quick 10)")
    parser.add_argument("--first-seed", type=int, default=100_000)
    parser.add_argument("--submodels", nargs="+", default=["full", "1/2"],
                        choices=list(SUBMODEL_KEY))
    args = parser.parse_args(argv)
    args.episodes = args.episodes or (10 if args.quick else 300)
    if args.episodes < 1:
        parser.error(f"--episodes {args.episodes}: need at least 1")

    policy = load_default_policy(args.model)
    mode = ExecutionMode(policy.config.chunk_length)  # as `embodied-stack eval` and the node
    env = gym.make(WORLD_IDS["driving"], width=policy.config.image_size,
                   height=policy.config.image_size, with_segmentation=False)
    out: dict = {"episodes": args.episodes, "first_seed": args.first_seed,
                 "model": args.model or "models/default_vla"}
    rows = []
    try:
        for sub in args.submodels:
            policy.set_submodel(sub)
            key = SUBMODEL_KEY[sub]
            groups: dict = collections.defaultdict(list)
            seeds = range(args.first_seed, args.first_seed + args.episodes)
            for seed in tqdm(seeds, desc=f"driving {sub}", unit="seed", mininterval=1.0):
                ep = run_episode(policy, env, seed, mode)
                if ep is not None:
                    groups[f"{ep['task']} {ep['start']}->{ep['target']}"].append(ep)
            eps = [e for g in groups.values() for e in g]
            fails = collections.Counter(e["failure"] for e in eps if not e["success"])
            out[f"{key}_lane_change_episodes"] = len(eps)
            out[f"{key}_lane_change_success"] = round(float(np.mean([e["success"] for e in eps])), 4) if eps else None
            out[f"{key}_failures"] = {k: fails.get(k, 0) for k in ("no_change", "overshoot", "other")}
            by = {}
            for name in sorted(groups):
                g = groups[name]
                f = collections.Counter(e["failure"] for e in g if not e["success"])
                by[name] = {"episodes": len(g), "success": round(float(np.mean([e["success"] for e in g])), 4),
                            "failures": {k: f.get(k, 0) for k in ("no_change", "overshoot", "other")}}
                rows.append((sub, name, len(g), f"{100 * by[name]['success']:.0f}%",
                             *(by[name]["failures"][k] for k in ("no_change", "overshoot", "other"))))
            out[f"{key}_by_lanes"] = by
    finally:
        env.close()
    out["command"] = benchlib.command_line(__file__, argv)
    benchlib.print_table("Driving lane changes by start -> target lane (0 = rightmost)",
                         ("submodel", "lanes", "episodes", "success", "no change", "overshoot", "other"),
                         rows, left=2, width=100)
    return benchlib.write_json(args.json, out)


if __name__ == "__main__":
    main()
