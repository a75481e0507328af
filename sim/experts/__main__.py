"""Success rate of the scripted experts: python -m embodied_stack.sim.experts [--episodes 100]
[--worlds tabletop driving] [--world-file FILE.py] [--json PATH]"""

import argparse

import numpy as np
from tqdm import tqdm

from embodied_stack.sim.worlds.registry import load_world_file, make_world, make_world_expert, world_spec

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--episodes", type=int, default=100)
parser.add_argument("--first-seed", type=int, default=0)
parser.add_argument("--worlds", "--world", nargs="+", default=["driving", "tabletop"])
parser.add_argument("--world-file", action="append", default=[], metavar="FILE.py",
                    help="an adapter file that registers worlds (repeatable)")
parser.add_argument("--json", metavar="PATH", help="write the success counts here")
args = parser.parse_args()
for path in args.world_file:
    load_world_file(path)
results = {}
for world in args.worlds:
    world_spec(world)
    env = make_world(world, 64, 64)
    expert = make_world_expert(env)
    successes = []
    for seed in tqdm(range(args.first_seed, args.first_seed + args.episodes), desc=world):
        obs, info = env.reset(seed=seed)
        expert.reset()
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs, info))
            done = terminated or truncated
        successes.append(bool(info["is_success"]))
    env.close()
    results[world] = {"episodes": len(successes), "successes": int(np.sum(successes)),
                      "first_seed": args.first_seed}
    print(f"{world}: expert success {np.sum(successes)}/{len(successes)} "
          f"(seeds {args.first_seed}..{args.first_seed + args.episodes - 1})")
if args.json:
    import shlex
    import sys

    from embodied_stack.models.files import atomic_write_json

    atomic_write_json(args.json, {"command": shlex.join(["python", "-m", "embodied_stack.sim.experts",
                                                         *sys.argv[1:]]), "worlds": results})
