#!/usr/bin/env python3
"""Trainer comparison: BC, BC+DAgger, GRPO, ADPO, EntroPIC, ADPO+EntroPIC and a
Stable-Baselines3 PPO baseline from pixels, on the same env-step budget and seeds.

Every method starts from the same point and gets the same number of training iterations of
matched episode counts (so about the same env steps; the table reports the steps each really
used): BC collects fresh expert demonstrations and retrains, BC+DAgger runs more DAgger
iterations, the RL losses run group-RL iterations (sim/train/trainer.py), all from the models a
full training run leaves behind (``--start``: <run>/model_after_bc, <run>/model_after_dagger).
SB3 PPO (``CnnPolicy`` on the 64x64 RGB image, what a user would otherwise reach for) trains
from scratch on each world for the same env steps. Each method runs with ``--seeds`` training
seeds; success is measured on validation seeds (300000+) after every iteration.

    python bench/train_compare.py --start runs/default [--seeds 3] [--iterations 2]
        [--quick] [--json bench/results/train_compare_entropy.json] [--png bench/results/train_compare_entropy.png]

Runs are kept under ``--work`` (default runs/compare) and resume: an interrupted comparison
continues where it stopped. JSON keys: ``<method>_success_<world>`` (mean over seeds, final),
``<method>_env_steps``, ``<method>_steps_per_s``, ``<method>_wall_s``, ``rl_steps_per_s``
(the RL trainer's rollout+update throughput, mean over RL methods), ``sb3_ppo_steps_per_s``,
``entropy_target`` (mean of the RL runs' own targets: EntroPIC target 0 = the entropy each run
measures when its rl stage starts, as its controller measures entropy: on the fixed probe
states), ``<method>_entropy_last``, ``<method>_entropy_within_10pct`` (share of the
iterations after the first third whose mean entropy lies within +-10% of the run's target),
and per run and iteration ``<method>_entropy_per_iteration``,
``<method>_entropy_batch_per_iteration`` (the update batches' own entropy: what the paper's
controller would see), ``<method>_kl_ref_per_iteration`` and, for EntroPIC methods,
``<method>_alpha_per_iteration`` and ``<method>_high_prob_fraction_per_iteration``. Every RL method logs the same
probe entropy, so GRPO's drift and EntroPIC's hold are measured alike.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from embodied_stack.models.files import atomic_write_json

import benchlib

RL_METHODS = ("grpo", "adpo", "entropic", "adpo+entropic")
METHODS = ("bc", "bc+dagger") + RL_METHODS + ("sb3_ppo",)
WORLDS = ("tabletop", "driving")


def _log(run_dir: Path) -> list[dict]:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return json.loads(state["log"])


def _done(run_dir: Path) -> bool:
    if not (run_dir / "checkpoint.pt").exists():
        return False
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return json.loads(state["progress"])["stage"] == "done"


def run_trainer_method(method: str, seed: int, args, start: Path, work: Path,
                       entropy_target: float) -> Path:
    from embodied_stack.sim.train.trainer import TrainConfig, train

    out = work / f"{method.replace('+', '_')}_s{seed}"
    if _done(out):
        return out
    its = args.iterations
    common = dict(seed=seed, threads=args.threads, eval_episodes=args.eval_episodes,
                  eval_submodels=("full",), pool_size=8, model={}, elastic_every=3,
                  world_weights={"tabletop": 0.65, "driving": 0.35})
    if method == "bc":
        cfg = TrainConfig(stages=("bc",), init_from=str(start / "model_after_bc"),
                          demo_episodes={"tabletop": 32 * its, "driving": 16 * its},
                          bc_steps=args.supervised_steps * its, warmup_steps=10,
                          lr=1e-4, **common)
    elif method == "bc+dagger":
        cfg = TrainConfig(stages=("dagger",), init_from=str(start / "model_after_dagger"),
                          dagger_iterations=its, dagger_beta=0.0,
                          dagger_episodes={"tabletop": 32, "driving": 16},
                          dagger_steps=args.supervised_steps, warmup_steps=10, lr=1e-4,
                          **common)
    else:
        cfg = TrainConfig(stages=("rl",), init_from=str(start / "model_after_dagger"),
                          loss=method, rl_iterations=its, group_size=8,
                          rl_groups={"tabletop": 4, "driving": 2}, bc_anchor=0.0,
                          rl_lr=args.rl_lr, keypoint_lr_scale=args.rl_keypoint_lr_scale,
                          rl_epochs=args.rl_epochs, entropy_target=0.0,
                          # the comparison's own settings (the trainer's defaults follow the
                          # default recipe, which differs): no screening, success reward, frontier
                          rl_screen=1, reward="success", frontier=True, **common)
    train(cfg, out, resume=(out / "checkpoint.pt").exists())
    return out


def _env_steps(entry: dict, world: str | None = None) -> int:
    """Env steps an entry of a trainer log accounts for: RL rollouts, DAgger states, demos."""
    worlds = (world,) if world else WORLDS
    total = 0
    for w in worlds:
        for key in (f"env_steps_{w}", f"states_{w}", f"demo_states_{w}"):
            total += int(entry.get(key, 0))
    return total


def summarize_trainer_run(method: str, out: Path, entropy_target: float) -> dict:
    log = _log(out)
    curve, steps = [], 0
    for e in log:
        steps += _env_steps(e)
        if any(k.startswith("success_full_") for k in e):
            curve.append((steps, {w: e[f"success_full_{w}"] for w in WORLDS
                                  if f"success_full_{w}" in e}))
    final = curve[-1][1] if curve else {}
    rl_iters = [e for e in log if "rl_steps_per_s" in e]
    ent = [e["entropy"] for e in log if "entropy" in e]
    ent_batch = [e["entropy_batch"] for e in log if "entropy_batch" in e]
    kl_ref = [e["kl_ref"] for e in log if "kl_ref" in e]
    alpha = [e["alpha"] for e in log if "alpha" in e]
    high_prob = [e["high_prob_fraction"] for e in log if "high_prob_fraction" in e]
    # The run's own EntroPIC target: the entropy it measured on its first update, the way
    # the controller measures it (executed tokens); every RL method logs it.
    targets = [e["entropy_target"] for e in log if "entropy_target" in e]
    if targets:
        entropy_target = targets[0]
    warm = ent[len(ent) // 3:]
    return {
        "success": {w: final.get(w, float("nan")) for w in WORLDS},
        "env_steps": steps,
        "env_steps_per_world": {w: sum(_env_steps(e, w) for e in log) for w in WORLDS},
        "wall_s": sum(e["wall_s"] for e in rl_iters) if rl_iters else float("nan"),
        "curve": curve, "entropy": ent, "entropy_target": entropy_target,
        "entropy_batch": ent_batch, "kl_ref": kl_ref, "alpha": alpha,
        "high_prob_fraction": high_prob,
        "entropy_within_10pct": (float(np.mean([abs(h - entropy_target) <= 0.1 * entropy_target
                                                for h in warm])) if warm else float("nan")),
    }


def run_sb3_ppo(world: str, seed: int, env_steps: int, eval_episodes: int) -> dict:
    """SB3 PPO CnnPolicy from the 64x64 RGB image (no instruction: PPO has no text input)."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    import embodied_stack.sim  # noqa: F401
    from embodied_stack.sim import WORLD_IDS

    class Pixels(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = env.observation_space["rgb"]

        def observation(self, obs):
            return obs["rgb"]

    env = Pixels(gym.make(WORLD_IDS[world], width=64, height=64, with_segmentation=False))
    model = PPO("CnnPolicy", env, n_steps=512, batch_size=128, n_epochs=4, seed=seed,
                verbose=0, device="cpu")
    t0 = time.perf_counter()
    model.learn(total_timesteps=env_steps)
    wall = time.perf_counter() - t0
    wins = 0
    for k in range(eval_episodes):
        obs, info = env.reset(seed=300_000 + k)
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        wins += bool(info["is_success"])
    env.close()
    return {"success": wins / eval_episodes, "env_steps": env_steps, "wall_s": wall}


def plot(results: dict, entropy_target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, world in zip(axes[:2], WORLDS):
        for method, runs in results.items():
            if method == "sb3_ppo":
                xs = [r["env_steps"] for r in runs[world]]
                ys = [r["success"] for r in runs[world]]
                ax.scatter(xs, ys, marker="x", label="sb3_ppo (pixels, from scratch)")
                continue
            for j, r in enumerate(runs):
                pts = [(x, s[world]) for x, s in r["curve"] if world in s]
                if pts:
                    x, y = zip(*pts)
                    ax.plot(x, y, marker="o", alpha=0.7, color=f"C{list(results).index(method)}",
                            label=method if j == 0 else None)
        if not ax.lines and not ax.collections:
            ax.text(0.5, 0.5, "no validation episodes (--eval-episodes 0)", ha="center",
                    transform=ax.transAxes)
        ax.set_title(f"{world}: validation success (full) vs env steps")
        ax.set_xlabel("env steps (this method's training)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    ax = axes[2]
    for method in RL_METHODS:
        for j, r in enumerate(results.get(method, [])):
            color = f"C{list(results).index(method)}"
            if r["entropy"]:
                ax.plot(r["entropy"], marker="o", color=color, alpha=0.7,
                        label=f"{method} (probe states)" if j == 0 else None)
            if r.get("entropy_batch"):
                ax.plot(r["entropy_batch"], ls=":", lw=1, color=color, alpha=0.6,
                        label=f"{method}: update batch's own" if j == 0 else None)
    ax.axhline(entropy_target, color="k", ls="--", label="EntroPIC target (mean of runs')")
    ax.axhspan(0.9 * entropy_target, 1.1 * entropy_target, color="k", alpha=0.08)
    ax.set_title("token entropy per RL iteration (shaded: target +-10%)")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="1 seed, 1 iteration, 20 supervised steps, 4 eval episodes")
    parser.add_argument("--start", default="runs/default",
                        help="a finished `embodied-stack train` run (its model_after_* folders)")
    parser.add_argument("--work", default="runs/compare", help="where the runs are kept")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per method")
    parser.add_argument("--iterations", type=int, default=2, help="iterations per method")
    parser.add_argument("--supervised-steps", type=int, default=100,
                        help="optimiser steps per BC/DAgger iteration")
    parser.add_argument("--eval-episodes", type=int, default=20,
                        help="validation episodes per world after each iteration")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--sb3-steps", type=int, nargs=2, metavar=("TABLETOP", "DRIVING"),
                        help="SB3 PPO env steps per world (default: the RL methods' mean)")
    parser.add_argument("--rl-lr", type=float, default=1e-5,
                        help="learning rate of RL methods (the shipped recipe's)")
    parser.add_argument("--rl-epochs", type=int, default=2,
                        help="passes of the RL methods over each iteration's rollouts (more "
                             "passes at a high lr is where GRPO's entropy drifts here)")
    parser.add_argument("--rl-keypoint-lr-scale", type=float, default=1.0,
                        help="the RL methods' lr multiplier on the target keypoint's layers (at "
                             "lr 5e-5 and the trainer's default 10 one iteration moves the "
                             "policy ~2 nats per token from where it started)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--png", default="", help="write the plots here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.iterations, args.supervised_steps, args.eval_episodes = 1, 1, 20, 4
        args.work = str(Path(args.work) / "quick")
    start, work = Path(args.start), Path(args.work)
    trainer_methods = [m for m in args.methods if m != "sb3_ppo"]
    entropy_target = float("nan")  # each RL run measures its own (EntroPIC target 0)
    if trainer_methods:
        for stage in ("bc", "dagger"):
            if not (start / f"model_after_{stage}" / "config.json").exists():
                parser.error(f"{start}/model_after_{stage} is missing: run `embodied-stack "
                             f"train --out {start}` first")

    results: dict = {}
    figures: dict = {"entropy_target": entropy_target, "seeds": args.seeds,
                     "iterations": args.iterations}
    for method in args.methods:
        if method == "sb3_ppo":
            continue
        runs = []
        for seed in range(args.seeds):
            out = run_trainer_method(method, seed, args, start, work, entropy_target)
            runs.append(summarize_trainer_run(method, out, entropy_target))
        results[method] = runs
    if "sb3_ppo" in args.methods:
        # The RL methods' own per-world env steps (2048 a world when none ran).
        budget = {w: int(np.mean([r["env_steps_per_world"][w] for m in RL_METHODS
                                  for r in results.get(m, [])] or [2048])) for w in WORLDS}
        if args.sb3_steps:
            budget = dict(zip(WORLDS, args.sb3_steps))
        sb3_file = work / "sb3_ppo.json"
        sb3 = json.loads(sb3_file.read_text()) if sb3_file.exists() else {w: [] for w in WORLDS}
        for world in WORLDS:
            while len(sb3[world]) < args.seeds:
                sb3[world].append(run_sb3_ppo(world, len(sb3[world]), max(512, budget[world]),
                                              args.eval_episodes))
                atomic_write_json(sb3_file, sb3)
        results["sb3_ppo"] = sb3

    rows = []
    rl_rates = []
    for method, runs in results.items():
        key = method.replace("+", "_")
        if method == "sb3_ppo":
            succ = {w: float(np.mean([r["success"] for r in runs[w]])) for w in WORLDS}
            steps = float(np.mean([r["env_steps"] for w in WORLDS for r in runs[w]]))
            rate = float(np.sum([r["env_steps"] for w in WORLDS for r in runs[w]])
                         / np.sum([r["wall_s"] for w in WORLDS for r in runs[w]]))
            within = float("nan")
            figures["sb3_ppo_steps_per_s"] = rate
        else:
            succ = {w: float(np.nanmean([r["success"][w] for r in runs])) for w in WORLDS}
            steps = float(np.mean([r["env_steps"] for r in runs]))
            walls = [r["wall_s"] for r in runs]
            rate = float(np.sum([r["env_steps"] for r in runs]) / np.sum(walls)) \
                if np.all(np.isfinite(walls)) else float("nan")
            within = float(np.nanmean([r["entropy_within_10pct"] for r in runs])) \
                if method in RL_METHODS else float("nan")
            if method in RL_METHODS:
                rl_rates.append(rate)
                figures[f"{key}_entropy_last"] = float(np.mean([r["entropy"][-1] for r in runs
                                                                if r["entropy"]] or [np.nan]))
                figures[f"{key}_entropy_within_10pct"] = within
                figures[f"{key}_entropy_per_iteration"] = [r["entropy"] for r in runs]
                # The update batch's own entropy (what the paper's controller would see) and
                # how far the policy moved from its start, per run and iteration.
                figures[f"{key}_entropy_batch_per_iteration"] = [r["entropy_batch"] for r in runs]
                figures[f"{key}_kl_ref_per_iteration"] = [r["kl_ref"] for r in runs]
                if any(r["alpha"] for r in runs):  # EntroPIC: the controller's output and
                    # the share of tokens its term acts on (pi > entropy_high_prob)
                    figures[f"{key}_alpha_per_iteration"] = [r["alpha"] for r in runs]
                    figures[f"{key}_high_prob_fraction_per_iteration"] = [
                        r["high_prob_fraction"] for r in runs]
        for w in WORLDS:
            figures[f"{key}_success_{w}"] = succ[w]
            if method != "sb3_ppo":
                figures[f"{key}_success_{w}_per_seed"] = [r["success"][w] for r in runs]
        figures[f"{key}_env_steps"] = steps
        figures[f"{key}_steps_per_s"] = rate
        rows.append((method, f"{succ['tabletop']:.0%}", f"{succ['driving']:.0%}", f"{steps:,.0f}",
                     "-" if not np.isfinite(rate) else f"{rate:,.0f}",
                     "-" if not np.isfinite(within) else f"{within:.0%}"))
    if rl_rates:
        figures["rl_steps_per_s"] = float(np.mean(rl_rates))
    run_targets = [r["entropy_target"] for m in RL_METHODS for r in results.get(m, [])]
    if run_targets:
        entropy_target = figures["entropy_target"] = float(np.nanmean(run_targets))
    benchlib.print_table("Trainer comparison (validation success of full, mean over seeds)",
                         ("method", "tabletop", "driving", "env steps", "env steps/s", "entropy in ±10%"),
                         rows, width=120)
    figures["quick"] = args.quick
    figures = benchlib.write_json(args.json, figures, __file__, argv)
    if args.png:
        plot(results, entropy_target, Path(args.png))
        print(f"wrote {args.png}")
    return figures


if __name__ == "__main__":
    main()
