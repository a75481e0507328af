#!/usr/bin/env python3
"""The scripted experts under a one-step control delay: success, steps and how often an action
flips sign from one step to the next, next to the same seeds undelayed.

Training data is labelled by these experts, so a delay in the worlds' randomisation
(``--shift control_delay=1``) is only as good as their labels under it. The tabletop expert
plans from where the pending action leaves the fingertip (``plan_through_delay``, a Smith
predictor); the row ``measured fingertip`` is the same expert planning from where the
fingertip is, as it did before. The driving expert has no such step: it steers smoothly and
needs none.

    python bench/expert_delay.py [--quick] [--episodes 100] [--first-seed 5000] [--json PATH]

JSON keys, per row ``<world>_<variant>`` (variants: ``undelayed``, ``delayed`` and, for the
tabletop, ``delayed_measured_fingertip``): ``_success``, ``_ci95``, ``_mean_steps``,
``_sign_flips`` (share of action dims whose sign flips between consecutive steps), plus
episodes, first_seed, command.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from embodied_stack.sim.experts.driving import DrivingExpert
from embodied_stack.sim.experts.tabletop import TabletopExpert
from embodied_stack.sim.train.rollouts import success_interval
from embodied_stack.sim.worlds.driving import DrivingEnv
from embodied_stack.sim.worlds.tabletop import TabletopEnv

from benchlib import parser, print_table, write_json

#: (row, world class, expert factory, shift)
VARIANTS = (
    ("tabletop_undelayed", TabletopEnv, TabletopExpert, None),
    ("tabletop_delayed", TabletopEnv, TabletopExpert, {"control_delay": 1}),
    ("tabletop_delayed_measured_fingertip", TabletopEnv,
     lambda env: TabletopExpert(env, plan_through_delay=False), {"control_delay": 1}),
    ("driving_undelayed", DrivingEnv, DrivingExpert, None),
    ("driving_delayed", DrivingEnv, DrivingExpert, {"control_delay": 1}),
)


def run(env, expert, seeds) -> dict:
    """Success count, steps and sign flips of the expert over `seeds` (rendering off)."""
    solved, steps, flips, dims = 0, 0, 0, 0
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        expert.reset()
        previous, done = None, False
        while not done:
            action = np.asarray(expert(obs, info), np.float32)
            if previous is not None:
                flips += int(np.sum(np.sign(action) * np.sign(previous) < 0))
                dims += action.size
            previous = action
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            done = terminated or truncated
        solved += bool(info["is_success"])
    n = len(seeds)
    return {"success": solved / n, "ci95": list(success_interval(solved, n)),
            "mean_steps": steps / n, "sign_flips": flips / max(dims, 1)}


def main(argv=None) -> dict:
    p = parser(__doc__)
    p.add_argument("--episodes", type=int, default=100, help="seeds per row (default 100)")
    p.add_argument("--first-seed", type=int, default=5000, help="first seed (default 5000)")
    args = p.parse_args(argv)
    episodes = 10 if args.quick else args.episodes
    if episodes < 1:
        p.error(f"--episodes {episodes}: must be at least 1")
    seeds = np.arange(args.first_seed, args.first_seed + episodes)
    figures: dict = {"episodes": episodes, "first_seed": args.first_seed}
    rows = []
    for name, world, make_expert, shift in tqdm(VARIANTS, desc="expert_delay", unit="row"):
        env = world(shift=shift)
        env.skip_render = True  # the experts read the simulator's state, not the images
        try:
            r = run(env, make_expert(env), seeds)
        finally:
            env.close()
        figures.update({f"{name}_{k}": v for k, v in r.items()})
        rows.append([name, f"{r['success']:.0%}", f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]",
                     f"{r['mean_steps']:.1f}", f"{r['sign_flips']:.3f}"])
    print_table(f"Scripted experts under a one-step control delay ({episodes} seeds from {args.first_seed})",
                ["row", "success", "95% CI", "steps", "sign flips"], rows)
    return write_json(args.json, figures, __file__, argv, digits=4)


if __name__ == "__main__":
    main()
