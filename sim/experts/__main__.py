"""Success rate of the scripted experts: python -m embodied_stack.sim.experts [--episodes 100]"""

import argparse

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import embodied_stack.sim  # noqa: F401  (registers the worlds)
from embodied_stack.sim import WORLD_IDS
from embodied_stack.sim.experts import make_expert

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--episodes", type=int, default=100)
parser.add_argument("--first-seed", type=int, default=0)
parser.add_argument("--worlds", nargs="+", default=sorted(WORLD_IDS), choices=sorted(WORLD_IDS))
args = parser.parse_args()
for world in args.worlds:
    env = gym.make(WORLD_IDS[world], width=64, height=64, with_segmentation=False)
    expert = make_expert(env)
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
    print(f"{world}: expert success {np.sum(successes)}/{len(successes)} "
          f"(seeds {args.first_seed}..{args.first_seed + args.episodes - 1})")
