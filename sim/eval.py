"""Evaluate a policy in the worlds: success rate and outcome counts on held-out seeds.

    python -m embodied_stack.sim.eval --model PATH [--worlds tabletop driving]
        [--submodels full 1/2] [--episodes 50] [--first-seed 100000] [--json out.json]

Training uses seeds from 0 upwards; evaluation defaults to seeds from 100000, so the scenes
are held out. JSON keys: success_<submodel>_<world> (DESIGN §9 names success_full_<world>
and success_half_<world>; "1/2" is written as "half").
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from tqdm import tqdm

from embodied_stack.models.files import atomic_write_json

from embodied_stack.models.policy.interface import Observation, Policy

EMBODIMENT = {"tabletop": "arm", "driving": "vehicle"}
EVAL_FIRST_SEED = 100_000
SUBMODEL_KEY = {"full": "full", "3/4": "three_quarter", "1/2": "half", "1/4": "quarter"}


def to_observation(obs: dict, world: str, stamp: float = 0.0) -> Observation:
    return Observation(rgb=obs["rgb"], instruction=str(obs["instruction"]),
                       proprio=obs["proprio"], embodiment=EMBODIMENT[world],
                       depth=obs["depth"], stamp=stamp)


def evaluate(policy: Policy, world: str, episodes: int, first_seed: int = EVAL_FIRST_SEED,
             execute_steps: int = 0, progress: bool = True) -> dict:
    """Run `episodes` episodes, executing each action chunk open-loop for `execute_steps`
    steps (0 = the whole chunk) before asking again, as the policy node does."""
    import gymnasium as gym

    import embodied_stack.sim  # noqa: F401
    from embodied_stack.sim import WORLD_IDS

    env = gym.make(WORLD_IDS[world], width=64, height=64, with_segmentation=False)
    outcomes = collections.Counter()
    successes = []
    lengths = []
    bar = tqdm(range(episodes), desc=f"eval {world} {policy.submodel}", unit="episode",
               disable=not progress)
    for e in bar:
        obs, info = env.reset(seed=first_seed + e)
        policy.reset()
        done, steps = False, 0
        while not done:
            chunk = policy.select_action(to_observation(obs, world, steps)).chunk
            for action in chunk[: execute_steps or len(chunk)]:
                obs, _, terminated, truncated, info = env.step(np.asarray(action, np.float32))
                steps += 1
                done = terminated or truncated
                if done:
                    break
        successes.append(bool(info["is_success"]))
        outcomes[str(info["outcome"]).split(":")[0]] += 1
        lengths.append(steps)
        bar.set_postfix_str(f"success {np.mean(successes):.0%}")
    env.close()
    return {"success": float(np.mean(successes)), "episodes": episodes,
            "mean_steps": float(np.mean(lengths)), "outcomes": dict(outcomes)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model directory (default: shipped model)")
    parser.add_argument("--worlds", nargs="+", default=["tabletop", "driving"],
                        choices=sorted(EMBODIMENT))
    parser.add_argument("--submodels", nargs="+", default=["full", "1/2"])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=EVAL_FIRST_SEED)
    parser.add_argument("--execute-steps", type=int, default=0)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    from embodied_stack.models.policy import load_default_policy

    policy = load_default_policy(args.model or None)
    results = {}
    for submodel in args.submodels:
        policy.set_submodel(submodel)
        for world in args.worlds:
            r = evaluate(policy, world, args.episodes, args.first_seed, args.execute_steps)
            results[f"success_{SUBMODEL_KEY.get(submodel, submodel)}_{world}"] = r["success"]
            print(f"{submodel:5s} {world:9s} success {r['success']:.0%} "
                  f"outcomes {r['outcomes']} mean steps {r['mean_steps']:.1f}")
    if args.json:
        atomic_write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
