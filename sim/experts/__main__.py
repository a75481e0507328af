"""Success rate of the scripted experts: python -m embodied_stack.sim.experts [--episodes 100]
[--worlds tabletop driving] [--world-file FILE.py] [--json PATH] [--no-render]
[--episode-limit N]"""

import argparse

import numpy as np
from tqdm import tqdm

from embodied_stack.sim.worlds.registry import load_world_files, make_world, make_world_expert, world_spec

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--episodes", type=int, default=100)
parser.add_argument("--first-seed", type=int, default=0)
parser.add_argument("--worlds", "--world", nargs="+", default=["driving", "tabletop"])
parser.add_argument("--world-file", action="append", default=[], metavar="FILE.py",
                    help="an adapter file that registers worlds (repeatable)")
parser.add_argument("--json", metavar="PATH", help="write the success counts here")
parser.add_argument("--no-render", action="store_true",
                    help="skip rendering where the world can (the experts read privileged state)")
parser.add_argument("--episode-limit", type=int, default=None, metavar="N",
                    help="steps per episode instead of the world's episode_limit")
args = parser.parse_args()
try:
    load_world_files(args.world_file)
    lacking = [w for w in args.worlds if not world_spec(w).has_expert]
except (ValueError, FileNotFoundError) as exc:
    parser.error(str(exc))
if lacking:
    parser.error(f"{lacking} have no expert (their WorldSpec gives none)")
results = {}
for world in args.worlds:
    limit = {} if args.episode_limit is None else {"max_episode_steps": args.episode_limit}
    env = make_world(world, 64, 64, **limit)
    env.skip_render = args.no_render
    expert = make_world_expert(env)
    successes, steps = [], []
    for seed in tqdm(range(args.first_seed, args.first_seed + args.episodes), desc=world):
        obs, info = env.reset(seed=seed)
        expert.reset()
        done, n = False, 0
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs, info))
            done, n = terminated or truncated, n + 1
        successes.append(bool(info["is_success"]))
        steps.append(n)
    env.close()
    results[world] = {"episodes": len(successes), "successes": int(np.sum(successes)),
                      "first_seed": args.first_seed, "episode_limit": env.episode_limit,
                      "mean_steps_success": (round(float(np.mean([n for n, s in zip(steps, successes)
                                                                   if s])), 1)
                                             if any(successes) else None)}
    print(f"{world}: expert success {np.sum(successes)}/{len(successes)} "
          f"(seeds {args.first_seed}..{args.first_seed + args.episodes - 1})")
if args.json:
    import shlex
    import sys

    from embodied_stack.models.files import atomic_write_json

    atomic_write_json(args.json, {"command": shlex.join(["python", "-m", "embodied_stack.sim.experts",
                                                         *sys.argv[1:]]), "worlds": results})
