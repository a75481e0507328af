"""`embodied-stack` command line: the entry point the README's first command runs.

    embodied-stack demo [--episodes N] [--worlds tabletop driving] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args) -> int:
    import gymnasium as gym
    from tqdm import tqdm

    import embodied_stack.sim  # noqa: F401  (registers the worlds)
    from embodied_stack.sim import WORLD_IDS
    from embodied_stack.sim.experts import make_expert

    print("embodied_stack demo: scripted experts in each world (the ROS graph demo replaces "
          "this once the policy node lands)")
    failed = False
    for world in args.worlds:
        env = gym.make(WORLD_IDS[world], width=64, height=64, with_segmentation=False)
        expert = make_expert(env)
        successes, steps, start = 0, 0, time.perf_counter()
        for episode in tqdm(range(args.episodes), desc=world, unit="episode"):
            obs, info = env.reset(seed=args.seed + episode)
            expert.reset()
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(expert(obs, info))
                steps += 1
                done = terminated or truncated
            successes += bool(info["is_success"])
        env.close()
        rate = successes / args.episodes
        print(f"  {world:9s} success {successes}/{args.episodes} ({rate:.0%}), "
              f"{steps / (time.perf_counter() - start):,.0f} steps/s, last: "
              f"{info['outcome']!r} for {obs['instruction']!r}")
        failed |= rate < 0.9
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="embodied-stack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the simulation demo and report success")
    demo.add_argument("--episodes", type=int, default=10, help="episodes per world (default 10)")
    demo.add_argument("--worlds", nargs="+", default=["tabletop", "driving"],
                      choices=["tabletop", "driving"], help="worlds to run")
    demo.add_argument("--seed", type=int, default=1000, help="first episode seed")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.episodes < 1:
            parser.error(f"--episodes must be >= 1, got {args.episodes}")
        return _demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
