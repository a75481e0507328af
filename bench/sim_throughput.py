#!/usr/bin/env python3
"""Simulation throughput: env steps per second for each world.

Configurations: 64x64 (the policy resolution) with and without the segmentation pass, 320x240
(the perception resolution), each in one process, and 64x64 in a Gymnasium AsyncVectorEnv over
2 worker processes. Random actions from a seeded action space; episodes reset when they end
(resets are counted in the time, as in training). Single-process rows run pinned to one core
with Mesa's llvmpipe single-threaded (LP_NUM_THREADS=0); the vector env uses both cores.

    python bench/sim_throughput.py [--quick] [--json out.json]

JSON keys (docs/benchmarks.md): tabletop_steps_per_s, driving_steps_per_s (64x64 RGB-D, segmentation
off, one process) plus <world>_<config>_steps_per_s for every row of the table.
"""

from __future__ import annotations

import os
import time

# One core means one core: Mesa's llvmpipe rasteriser otherwise spreads each frame over
# threads on every core. Set before any GL context exists (the worlds import MuJoCo lazily).
os.environ.setdefault("LP_NUM_THREADS", "0")

import gymnasium as gym  # noqa: E402
from tqdm import tqdm  # noqa: E402

import embodied_stack.sim  # noqa: E402,F401  (registers the worlds)
from embodied_stack.sim import WORLD_IDS  # noqa: E402

import benchlib  # noqa: E402


def run_single(world: str, width: int, height: int, segmentation: bool, steps: int) -> float:
    env = gym.make(WORLD_IDS[world], width=width, height=height, with_segmentation=segmentation)
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(20):  # warm-up: GL context, caches
        env.step(env.action_space.sample())
    env.reset(seed=1)
    start = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset(seed=2 + i)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def _make_env(world: str):
    def thunk():

        return gym.make(WORLD_IDS[world], width=64, height=64, with_segmentation=False)

    return thunk


def run_vector(world: str, workers: int, steps: int) -> float:
    envs = gym.vector.AsyncVectorEnv([_make_env(world) for _ in range(workers)],
                                     context="forkserver")
    envs.action_space.seed(0)
    envs.reset(seed=0)
    for _ in range(10):
        envs.step(envs.action_space.sample())
    start = time.perf_counter()
    rounds = max(1, steps // workers)
    for _ in range(rounds):  # vector envs autoreset finished sub-environments
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return rounds * workers / elapsed


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="fewer steps (< 60 s here)")
    parser.add_argument("--worlds", nargs="+", default=sorted(WORLD_IDS), choices=sorted(WORLD_IDS))
    args = parser.parse_args(argv)

    steps = 1000 if args.quick else 5000
    configs = [
        ("64x64", 64, 64, False),
        ("64x64_seg", 64, 64, True),
        ("320x240", 320, 240, False),
    ]
    jobs = [(w, *c) for w in args.worlds for c in configs] + [(w, "64x64_vec2", 0, 0, False)
                                                             for w in args.worlds]
    results: dict[str, float] = {}
    rows = []
    all_cores = os.sched_getaffinity(0)
    for world, name, width, height, seg in tqdm(jobs, desc="sim throughput", unit="config"):
        if name.endswith("vec2"):
            os.sched_setaffinity(0, all_cores)  # the workers inherit it: one core each
            rate = run_vector(world, 2, steps)
        else:
            os.sched_setaffinity(0, {min(all_cores)})  # "per core": pinned to one
            n = steps if width <= 64 else max(200, steps // 5)
            rate = run_single(world, width, height, seg, n)
        results[f"{world}_{name}_steps_per_s"] = round(rate, 1)
        rows.append((world, name, rate))
    os.sched_setaffinity(0, all_cores)
    for world in args.worlds:
        results[f"{world}_steps_per_s"] = results[f"{world}_64x64_steps_per_s"]
    results["cpu_count"] = os.cpu_count()
    results["lp_num_threads"] = os.environ["LP_NUM_THREADS"]
    results["quick"] = args.quick

    benchlib.print_table("Simulation throughput (env steps/s; target >= 1000 at 64x64 RGB-D)",
                         ("world", "config", "steps/s", "ms/step"),
                         [(world, name, f"{rate:,.0f}", f"{1e3 / rate:.3f}") for world, name, rate in rows],
                         width=110)
    return benchlib.write_json(args.json, results, __file__, argv)


if __name__ == "__main__":
    main()
