#!/usr/bin/env python3
"""How the tabletop policy fails its push tasks, next to the scripted expert on the same seeds.

A push task succeeds when the named object has moved PUSH_DISTANCE (6 cm) along the
instruction's direction and no other object was touched. Each push episode (greedy, chunks
executed as `embodied-stack eval` and the policy node execute them) is classified:

- ``wrong_touch``: the fingertip touched an object that is not a target (the episode ends);
- ``timeout``: the time ran out; ``moved_cm`` says how far the target got along the
  direction (0 = never pushed, close to 6 = nearly done);
- ``success``.

The expert runs the same seeds, so a failure that the expert also has is the world's, not
the policy's.

    python bench/push_failures.py [--quick] [--model DIR] [--episodes 300] [--first-seed 101000]
        [--submodel full] [--json PATH]

JSON keys: episodes (seeds tried), push_episodes, policy_push_success, expert_push_success,
failures ({wrong_touch, timeout}), timeout_moved_cm (quartiles of the distance the target
moved in timed-out episodes), by_direction ({word: {episodes, success}}), failed (one row
per failed episode: seed, instruction, direction, failure, moved_cm, steps), model, submodel, command.
Seeds from 100000 are never used in training.
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
from embodied_stack.sim.experts import make_expert
from embodied_stack.sim.worlds.tabletop import DIRECTIONS

import benchlib


def target_positions(info: dict) -> np.ndarray:
    by_id = {o["id"]: o["position"] for o in info["objects"]}
    return np.array([by_id[i] for i in info["target_ids"]])


def run_episode(env, seed: int, act) -> dict | None:
    """One episode of seed with `act(obs, info, first_obs) -> action`; None when the seed's
    task is not a push. Read from the world's info only: an episode that ends before its
    time without success ended on a wrong touch (the world's only other way to terminate)."""
    obs, info = env.reset(seed=seed)
    first, start = obs, target_positions(info)
    if info["task"] != "push":
        return None
    direction = next(w for w, v in DIRECTIONS.items() if np.allclose(v, info["direction"]))
    done, steps = False, 0
    while not done:
        obs, _, terminated, truncated, info = env.step(act(obs, info, first))
        done, steps = terminated or truncated, steps + 1
    success = bool(info["is_success"])
    failure = None if success else ("wrong_touch" if terminated else "timeout")
    moved = float(((target_positions(info) - start) @ info["direction"]).max())
    return {"seed": seed, "instruction": str(first["instruction"]), "direction": direction,
            "success": success, "failure": failure, "moved_cm": round(100 * moved, 2),
            "steps": steps}


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="20 seeds (< 60 s here), same code path")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="tabletop seeds tried (about 40%% are pushes; default 300, --quick 20)")
    parser.add_argument("--first-seed", type=int, default=101_000)
    parser.add_argument("--submodel", default="full", choices=list(SUBMODEL_KEY))
    args = parser.parse_args(argv)
    args.episodes = args.episodes or (20 if args.quick else 300)
    if args.episodes < 1:
        parser.error(f"--episodes {args.episodes}: need at least 1")

    policy = load_default_policy(args.model)
    policy.set_submodel(args.submodel)
    mode = ExecutionMode(policy.config.chunk_length)  # as `embodied-stack eval` and the node
    env = gym.make(WORLD_IDS["tabletop"], width=policy.config.image_size,
                   height=policy.config.image_size, with_segmentation=False)
    expert = make_expert(env)
    queue: list = []

    def policy_act(obs, info, first):
        if not queue:
            queue.extend(policy.select_action(Observation(
                rgb=obs["rgb"], instruction=str(first["instruction"]), proprio=obs["proprio"],
                embodiment="arm", depth=obs["depth"], reference_rgb=first["rgb"],
                reference_depth=first["depth"])).chunk[: mode.steps_per_inference])
        return np.asarray(queue.pop(0), np.float32)

    mine, theirs = [], []
    try:
        for seed in tqdm(range(args.first_seed, args.first_seed + args.episodes), desc="push",
                         unit="seed", mininterval=1.0):
            queue.clear()
            ep = run_episode(env, seed, policy_act)
            if ep is None:
                continue
            mine.append(ep)
            expert.reset()
            theirs.append(run_episode(env, seed, lambda o, i, f: expert(o, i)))
    finally:
        env.close()
    fails = [e for e in mine if not e["success"]]
    kinds = collections.Counter(e["failure"] for e in fails)
    moved = [e["moved_cm"] for e in fails if e["failure"] == "timeout"]
    by_dir: dict = collections.defaultdict(list)
    for e in mine:
        by_dir[e["direction"]].append(e["success"])
    out = {
        "episodes": args.episodes, "first_seed": args.first_seed,
        "model": args.model or "models/default_vla", "submodel": args.submodel,
        "push_episodes": len(mine),
        "policy_push_success": round(float(np.mean([e["success"] for e in mine])), 4) if mine else None,
        "expert_push_success": round(float(np.mean([e["success"] for e in theirs])), 4) if theirs else None,
        "failures": {k: kinds.get(k, 0) for k in ("wrong_touch", "timeout")},
        "timeout_moved_cm": [round(float(q), 2) + 0.0 for q in np.percentile(moved, [25, 50, 75])] if moved else None,
        "by_direction": {d: {"episodes": len(v), "success": round(float(np.mean(v)), 4)}
                         for d, v in sorted(by_dir.items())},
        "failed": fails,
        "command": benchlib.command_line(__file__, argv),
    }
    rows = [("policy", len(mine), f"{100 * (out['policy_push_success'] or 0):.0f}%"),
            ("expert, same seeds", len(theirs), f"{100 * (out['expert_push_success'] or 0):.0f}%")]
    rows += [(f"policy, {d}", v["episodes"], f"{100 * v['success']:.0f}%") for d, v in out["by_direction"].items()]
    benchlib.print_table(f"Tabletop push tasks, {args.submodel} ({len(mine)} episodes)",
                         ("", "episodes", "success"), rows,
                         footer=f"policy failures: {out['failures']}; timed-out episodes moved the target "
                                f"{out['timeout_moved_cm']} cm (quartiles) of the 6 cm needed")
    return benchlib.write_json(args.json, out)


if __name__ == "__main__":
    main()
