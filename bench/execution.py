#!/usr/bin/env python3
"""Execution strategies under latency: success and smoothness per strategy x latency x world,
paired on the same unseen seeds.

    python bench/execution.py [--quick] [--json PATH] [--png PATH] [--episodes 200]
        [--splits validation test] [--strategies replace early ...]
        [--latencies 0 0.1 0.2 0.4 lognormal] [--worlds tabletop driving]
        [--graph-only] [--graph-episodes 200] [--graph-first-seed 800000] [--cache DIR]
        [--decode-only]

The shipped model drives both worlds offline (sim/train/rollouts.py with an ``Execution``):
chunks are executed by the policy node's ChunkScheduler and output limiter (control/) on
simulated time, and the answer to the observation at step t is executed from step
t + floor(latency / period) on (control/latency.py), while the world keeps stepping with what
the strategy commands. The latencies: 0, 100, 200 and 400 ms and the Jetson Orin log-normal
(p50 170 ms, p99 600 ms), with `deadline_s` DEADLINE_S for all (a 400 ms answer must not be
dropped; no command is ever older than it: checked). Every condition runs the same seeds:
the unseen test seeds from 800000 (what the docs report; a block no earlier choice has seen:
the earlier blocks, 100000, 600000 and 700000, reported earlier versions of the limiter,
docs/experiments.md)
and the validation seeds from 300000 (what chose the node's default
strategy and the limiter's limits).

Figures per world, strategy and latency: success with its Wilson 95% interval; the paired
difference to the same strategy at 0 ms and to ``replace`` at the same latency, each with its
95% interval (Wald on the paired differences) and exact McNemar p (bench/paired_success.py);
and the smoothness of the commands the robot executed at the control rate. Jerk is the change
of acceleration per second: for the arm the second difference of the commanded end-effector
velocity over the period squared; for the car the first difference of the acceleration
vector (dv / dt along, v * omega across) over the period, both in m/s^3. ``boundary`` is the
largest jerk at the steps where a new chunk takes over (the two second differences that span
the hand-over), ``step`` the change of command there (m/s; the car: [v m/s, omega rad/s]).
The same jerk of the motion the simulator measured (the fingertip's velocity; the car's speed
and yaw rate) is ``measured``. Per-episode peaks are averaged over episodes; the boundary peak
of each strategy is also given as a ratio to ``replace``'s on the same seeds (with a bootstrap
95% interval over seeds). Two small sections: success through the ROS graph (sim bridge +
policy node over DDS, lockstep) with raw images and with image_transport's compressed colour
(JPEG, PNG) and compressedDepth, paired on the same seeds (``--graph-first-seed``, default the
test block; ``--graph-only`` runs only that and the decode cost); and the decode cost of
compressed camera images (nodes/conversions.py; ``--decode-only`` runs only that).

Runs are resumable: each finished condition is appended to ``<cache>/<model>/<code>/<split>.jsonl``
(``<model>``: the shipped model's name and weights digest; ``<code>``: a digest of the control and
rollout source files, EXECUTION_SOURCES) and
skipped when the command runs again (Ctrl-C loses at most the condition in progress).

JSON keys (flat): ``<split>_<world>_<strategy>_<latency>_<figure>`` with figure one of
success, ci95, episodes, diff_vs_0ms, diff_vs_0ms_ci95, diff_vs_0ms_mcnemar_p,
diff_vs_replace, diff_vs_replace_ci95, diff_vs_replace_mcnemar_p, jerk_mean, jerk_peak,
boundary_jerk_peak, boundary_ratio_vs_replace, boundary_ratio_ci95, boundary_step,
measured_jerk_mean, measured_jerk_peak, max_command_age_s, held_share, late_results;
latency keys ``0ms``, ``100ms``, ``200ms``, ``400ms``, ``lognormal``; also
``default_strategy``, ``deadline_s``, the strategies' settings under ``strategy_settings``;
``graph_first_seed``, ``graph_<world>_<raw|jpeg|png>_{success,ci95,episodes,rejected}`` and
``graph_<world>_<jpeg|png>_vs_raw{,_ci95,_mcnemar_p}``; ``decode_<kind>_<size>_{ms,bytes}``;
``max_command_age_s`` and ``commands_within_deadline`` over every condition; ``wall_s`` (this
invocation's: a resumed run counts only what it ran).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from paired_success import mcnemar_exact, paired_interval
from tqdm import tqdm

import benchlib

#: deadline_s of every condition (s): a 400 ms answer and the log-normal's tail must not be
#: dropped for lateness, and no executed command may be older than this.
DEADLINE_S = 1.0
LATENCIES = ("0", "0.1", "0.2", "0.4", "lognormal")
FIRST_SEED = {"test": 800_000, "validation": 300_000}
#: The strategies compared: name -> policy node settings (control/policy_loop.PolicyLoopConfig)
#: per world. The limiter's limits are per embodiment (the arm's m/s, the car's speed and yaw
#: rate), chosen on the validation seeds (docs/policy_node.md).
ARM_LIMITS = {"limit_accel": 2.0, "limit_jerk": 12.0}
#: the car's: its speed's jerk and its yaw rate's change (lateral jerk = v * d omega / dt), with
#: the one-step hand-over blend; a tighter yaw-rate limit lags the lane changes; the speed's jerk
#: is 8 m/s^3 since 12 left the 100 ms hand-overs at half of replace's (docs/experiments.md)
CAR_LIMITS = {"limit_jerk": 8.0, "limit_angular_accel": 2.5, "blend_steps": 1}
STRATEGIES: dict[str, dict[str, dict]] = {
    name: {"tabletop": {"execution": name}, "driving": {"execution": name}}
    for name in ("replace", "early", "ensemble", "delay_aware", "auto")}
STRATEGIES["auto+limiter"] = {"tabletop": {"execution": "auto", **ARM_LIMITS},
                              "driving": {"execution": "auto", **CAR_LIMITS}}
#: the hand-over blend (control/chunk_scheduler.py): a new chunk's first action half-way from
#: the last command
STRATEGIES["auto+blend"] = {w: {"execution": "auto", "blend_steps": 1} for w in ("tabletop", "driving")}
#: longer blends, run on request (``--strategies``): they cost success (docs/experiments.md)
EXTRA_STRATEGIES = ("auto+blend2", "auto+blend3", "auto+blend+limiter", "auto+limiter20", "auto+limiter12")
STRATEGIES["auto+blend2"] = {w: {"execution": "auto", "blend_steps": 2} for w in ("tabletop", "driving")}
STRATEGIES["auto+blend3"] = {w: {"execution": "auto", "blend_steps": 3} for w in ("tabletop", "driving")}
STRATEGIES["auto+blend+limiter"] = {"tabletop": {"execution": "auto", "blend_steps": 1, **ARM_LIMITS},
                                    "driving": {"execution": "auto", **CAR_LIMITS}}  # (the car's has the blend)
#: the car's limits with another speed jerk: 20 m/s^3, what a backend as slow as the Orin
#: log-normal leaves room for (docs/policy_node.md); 12 m/s^3, the earlier limit, compared with
#: 8 on the validation seeds (docs/experiments.md)
for _jerk in (20, 12):
    STRATEGIES[f"auto+limiter{_jerk}"] = {"tabletop": {"execution": "auto", **ARM_LIMITS},
                                          "driving": {"execution": "auto", **CAR_LIMITS, "limit_jerk": float(_jerk)}}
#: the policy node's default (control/policy_loop.PolicyLoopConfig.execution)
DEFAULT_STRATEGY = "auto"
#: the package files whose change invalidates cached conditions
EXECUTION_SOURCES = ("control/chunk_scheduler.py", "control/smoothing.py", "control/policy_loop.py",
                     "control/latency.py", "control/commands.py", "sim/train/rollouts.py")
#: the graph section's compressed colour formats (image_transport's `compressed`): what a network
#: camera sends (JPEG, OpenCV quality 95, 4:4:4: control/image_codecs.encode_color says why)
#: and lossless PNG
GRAPH_FORMATS = ("jpeg", "png")


def latency_key(spec: str) -> str:
    return "lognormal" if spec == "lognormal" else f"{float(spec) * 1e3:.0f}ms"


# --- smoothness --------------------------------------------------------------------------------

def accelerations(values: np.ndarray, embodiment: str, dt: float) -> np.ndarray:
    """(n, d) velocities -> (n - 1, k) accelerations (m/s^2): the arm's velocity difference;
    the car's [dv / dt, v * omega] from [v, omega] (a measured [speed, yaw rate] alike)."""
    if embodiment == "arm":
        return np.diff(values, axis=0) / dt
    v, omega = values[:, 0], values[:, 1]
    return np.stack([np.diff(v) / dt, v[1:] * omega[1:]], axis=1)


def jerks(values: np.ndarray, embodiment: str, dt: float) -> np.ndarray:
    """|jerk| (m/s^3) at steps 2 .. n - 1 of (n, d) velocities (nothing for n < 3)."""
    if len(values) < 3:
        return np.zeros(0)
    return np.linalg.norm(np.diff(accelerations(values, embodiment, dt), axis=0), axis=1) / dt


def episode_smoothness(ep, embodiment: str, dt: float, blend_steps: int = 0) -> dict:
    """Per-episode figures from an Episode recorded with Execution(record=True). A hand-over's
    jerk is the largest of the jerks that span it; with a blend that spreads it over
    ``blend_steps`` more steps, those steps' too."""
    commands = np.asarray(ep.commands, np.float64)
    serials = np.asarray(ep.chunk_serials)
    j = jerks(commands, embodiment, dt)  # j[k - 2]: the jerk spanning commands k - 2 .. k
    # a hand-over: a step whose chunk differs from the last chunk executed before it (the
    # steps between may hold that chunk's last command for want of a new one)
    boundaries, last = [], -1
    for k, serial in enumerate(serials):
        if serial >= 0:
            if last >= 0 and serial != last:
                boundaries.append(k)
            last = serial
    at_boundary = [max((j[i] for i in range(k - 2, k + blend_steps) if 0 <= i < len(j)), default=0.0)
                   for k in boundaries if len(j)]
    steps = [float(np.linalg.norm(commands[k] - commands[k - 1])) for k in boundaries]
    measured = jerks(np.asarray(ep.motion, np.float64), embodiment, dt)
    ages = np.asarray(ep.command_ages, np.float64)
    return {
        "jerk_mean": float(j.mean()) if j.size else 0.0,
        "jerk_peak": float(j.max()) if j.size else 0.0,
        "boundary_jerk_peak": max(at_boundary, default=0.0),
        "boundary_step": float(np.mean(steps)) if steps else 0.0,
        "boundaries": len(boundaries),
        "measured_jerk_mean": float(measured.mean()) if measured.size else 0.0,
        "measured_jerk_peak": float(measured.max()) if measured.size else 0.0,
        "max_command_age_s": float(np.nanmax(ages)) if np.isfinite(ages).any() else 0.0,
        "held_steps": int(np.sum(serials < 0)),
        "steps": len(serials),
    }


# --- paired statistics ----------------------------------------------------------------------

def paired_difference(base: list[bool], new: list[bool]) -> dict:
    """new - base success on the same seeds: the difference, its Wald 95% interval on the
    paired differences, and the exact McNemar p of the disagreeing seeds."""
    b = np.asarray(base, bool)
    n = np.asarray(new, bool)
    new_only, base_only = int(np.sum(n & ~b)), int(np.sum(b & ~n))
    return {"diff": (new_only - base_only) / len(n), "ci95": paired_interval(new_only, base_only, len(n)),
            "mcnemar_p": mcnemar_exact(new_only, base_only)}


def ratio_interval(new: np.ndarray, base: np.ndarray, draws: int = 2000, seed: int = 0) -> list[float]:
    """Bootstrap 95% interval over seeds of mean(new) / mean(base)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(new), size=(draws, len(new)))
    ratios = new[idx].mean(axis=1) / np.maximum(base[idx].mean(axis=1), 1e-12)
    return [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))]


def wilson(k: int, n: int) -> list[float]:
    from embodied_stack.sim.train.rollouts import success_interval

    return list(success_interval(k, n))


# --- running the conditions -------------------------------------------------------------------

def resolved(world: str, strategy: str) -> str:
    """A condition's settings as the node resolves them (auto by embodiment): strategies that
    resolve alike share their runs."""
    from embodied_stack.control.policy_loop import PolicyLoopConfig
    from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

    settings = dict(STRATEGIES[strategy][world])
    settings["execution"] = PolicyLoopConfig(embodiment=EMBODIMENT_OF_WORLD[world],
                                             execution=settings["execution"]).strategy
    return json.dumps(settings, sort_keys=True)


def run_condition(model, world: str, strategy: str, latency: str, seeds: list[int],
                  pool_size: int = 16, bar=None) -> dict:
    """One condition: per-seed success and smoothness."""
    from embodied_stack.control.latency import AddedLatency
    from embodied_stack.models.policy.interface import ExecutionMode
    from embodied_stack.sim.train.rollouts import Execution, WorldPool, run_episodes
    from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

    embodiment = EMBODIMENT_OF_WORLD[world]
    pool = WorldPool(world, min(pool_size, len(seeds)))
    try:
        rate = float(pool.envs[0].metadata["render_fps"])
        execution = Execution({"deadline_s": DEADLINE_S, **STRATEGIES[strategy][world]},
                              AddedLatency.parse(latency), latency_seed=7, record=True)
        eps = run_episodes(model, pool, seeds, ExecutionMode(model.config.chunk_length),
                           execution=execution, progress=bar.update if bar is not None else None)
    finally:
        pool.close()
    blend = int(STRATEGIES[strategy][world].get("blend_steps", 0))
    rows = [{"seed": e.seed, "success": bool(e.success), **episode_smoothness(e, embodiment, 1.0 / rate, blend)}
            for e in eps]
    return {"world": world, "settings": resolved(world, strategy), "latency": latency, "episodes": rows}


def load_cache(path: Path) -> dict:
    """(world, settings, latency, seeds) -> record, of every condition finished before."""
    return {(r["world"], r["settings"], r["latency"], tuple(e["seed"] for e in r["episodes"])): r
            for r in benchlib.read_records(path)}


def summarize(split: str, results: dict, worlds, strategies, latencies, seeds) -> tuple[dict, list]:
    """Flat figures and table rows from the per-condition records."""
    figures: dict = {}
    rows = []

    def get(world, strategy, latency):
        return results[(world, resolved(world, strategy), latency, tuple(seeds))]["episodes"]

    for world in worlds:
        for strategy in strategies:
            for latency in latencies:
                r = get(world, strategy, latency)
                base0 = get(world, strategy, latencies[0])
                repl = get(world, "replace", latency) if "replace" in strategies else None
                k = f"{split}_{world}_{strategy}_{latency_key(latency)}"
                ok = [e["success"] for e in r]
                f = {"success": float(np.mean(ok)), "ci95": wilson(sum(ok), len(ok)), "episodes": len(ok)}
                d0 = paired_difference([e["success"] for e in base0], ok)
                f.update(diff_vs_0ms=d0["diff"], diff_vs_0ms_ci95=d0["ci95"], diff_vs_0ms_mcnemar_p=d0["mcnemar_p"])
                for name in ("jerk_mean", "jerk_peak", "boundary_jerk_peak", "boundary_step",
                             "measured_jerk_mean", "measured_jerk_peak"):
                    f[name] = float(np.mean([e[name] for e in r]))
                f["max_command_age_s"] = float(max(e["max_command_age_s"] for e in r))
                f["held_share"] = float(sum(e["held_steps"] for e in r) / max(1, sum(e["steps"] for e in r)))
                ratio = "-"
                if repl is not None:
                    dr = paired_difference([e["success"] for e in repl], ok)
                    f.update(diff_vs_replace=dr["diff"], diff_vs_replace_ci95=dr["ci95"],
                             diff_vs_replace_mcnemar_p=dr["mcnemar_p"])
                    new = np.array([e["boundary_jerk_peak"] for e in r])
                    base = np.array([e["boundary_jerk_peak"] for e in repl])
                    if base.mean() > 0:  # (replace executed no hand-over: nothing to compare)
                        f["boundary_ratio_vs_replace"] = float(new.mean() / base.mean())
                        f["boundary_ratio_ci95"] = ratio_interval(new, base)
                        ratio = f"{f['boundary_ratio_vs_replace']:.2f}"
                    else:
                        f["boundary_ratio_vs_replace"] = f["boundary_ratio_ci95"] = None
                figures.update({f"{k}_{n}": v for n, v in f.items()})
                rows.append((split, world, strategy, latency_key(latency),
                             f"{f['success']:.1%} [{f['ci95'][0]:.0%}, {f['ci95'][1]:.0%}]",
                             f"{d0['diff']:+.1%} [{d0['ci95'][0]:+.1%}, {d0['ci95'][1]:+.1%}] p={d0['mcnemar_p']:.2g}",
                             "-" if repl is None else f"{f['diff_vs_replace']:+.1%}",
                             f"{f['jerk_mean']:.2f}", f"{f['boundary_jerk_peak']:.1f}", ratio,
                             f"{f['measured_jerk_peak']:.1f}", f"{f['max_command_age_s']:.2f}"))
    return figures, rows


# --- compressed images: decode cost -----------------------------------------------------------

def decode_cost(quick: bool) -> dict:
    """ms per image to decode compressed colour (JPEG, PNG) and depth (compressedDepth PNG) at
    64x64 (the worlds') and 640x480, median of repeated decodes (nodes/conversions.py)."""
    from embodied_stack.nodes.conversions import (
        compressed_depth_to_depth,
        compressed_to_rgb,
        depth_to_compressed_depth,
        rgb_to_compressed,
    )
    from embodied_stack.nodes.conversions import seconds_to_stamp as stamp

    rng = np.random.default_rng(0)
    out = {}
    for w, h in ((64, 64), (640, 480)):
        # a smooth scene with texture, like a camera's (noise alone would make PNG pathological)
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (w + h))], axis=2).astype(np.uint8)
        rgb = np.clip(rgb + rng.integers(0, 8, rgb.shape), 0, 255).astype(np.uint8)
        depth = (0.5 + 0.5 * yy / h + 0.01 * rng.random((h, w))).astype(np.float32)
        msgs = {"jpeg": rgb_to_compressed(rgb, stamp(0.0), "cam", "jpeg"),
                "png": rgb_to_compressed(rgb, stamp(0.0), "cam", "png"),
                "depth_png": depth_to_compressed_depth(depth, stamp(0.0), "cam")}
        reps = 20 if quick else 200
        for name, msg in msgs.items():
            decode = compressed_depth_to_depth if name.startswith("depth") else compressed_to_rgb
            decode(msg)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                decode(msg)
                times.append(time.perf_counter() - t0)
            out[f"decode_{name}_{w}x{h}_ms"] = float(np.median(times) * 1e3)
            out[f"decode_{name}_{w}x{h}_bytes"] = len(msg.data)
    return out


# --- the plot ------------------------------------------------------------------------------------

def plot(path: str, figures: dict, split: str, worlds, strategies, latencies) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(worlds), figsize=(6 * len(worlds), 8), squeeze=False)
    x = np.arange(len(latencies))
    for c, world in enumerate(worlds):
        for n, s in enumerate(strategies):
            shift = 0.06 * (n - (len(strategies) - 1) / 2)  # (side by side: the intervals overlap)
            ks = [f"{split}_{world}_{s}_{latency_key(lat)}" for lat in latencies]
            succ = np.array([figures[f"{k}_success"] for k in ks])
            lo = np.array([figures[f"{k}_ci95"][0] for k in ks])
            hi = np.array([figures[f"{k}_ci95"][1] for k in ks])
            axes[0, c].errorbar(x + shift, 100 * succ, yerr=[100 * (succ - lo), 100 * (hi - succ)], marker="o",
                                capsize=3, label=s)
            axes[1, c].plot(x + shift, [figures[f"{k}_boundary_jerk_peak"] for k in ks], marker="o", label=s)
        for r, ylabel in ((0, "success (%), 95% interval"), (1, "peak commanded jerk at chunk boundaries (m/s³)")):
            axes[r, c].set_xticks(x, [latency_key(lat) for lat in latencies])
            axes[r, c].set_ylabel(ylabel)
            axes[r, c].set_title(f"{world}, {split} seeds")
            axes[r, c].grid(alpha=0.3)
        axes[0, c].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def graph_transport(episodes: int, worlds, cache: Path, bar=None, first_seed: int = FIRST_SEED["test"]) -> dict:
    """Success through the ROS graph (sim bridge + policy node over DDS, lockstep, the shipped
    model on ONNX Runtime) with raw images and with image_transport's compressed colour (each
    of GRAPH_FORMATS) and compressedDepth, on the same seeds: per-seed outcomes."""
    from embodied_stack.nodes.demo import run_world

    done = load_cache(cache)
    seeds = tuple(range(first_seed, first_seed + episodes))
    out = {}
    for world in worlds:
        for transport in ("raw", *GRAPH_FORMATS):
            key = (world, f"graph_{transport}", "0", seeds)
            if key not in done:
                params = {} if transport == "raw" else {
                    "bridge_params": {"compressed_format": transport},
                    "policy_params": {"color_transport": "compressed", "depth_transport": "compressedDepth"}}
                run = run_world(world, episodes, first_seed, "vla", "", "full", None, mode="lockstep",
                                timeout_s=60.0 * episodes, runtime="onnxruntime",
                                progress=(lambda n, _: bar.update(n)) if bar is not None else None, **params)
                done[key] = {"world": world, "settings": f"graph_{transport}", "latency": "0",
                             "rejected": int(run.policy_stats.get("rejected", 0)),
                             "episodes": [{"seed": e["seed"], "success": bool(e["success"])} for e in run.episodes]}
                with cache.open("a") as f:
                    f.write(json.dumps(done[key]) + "\n")
            elif bar is not None:
                bar.update(episodes)
            out[(world, transport)] = done[key]
    return out


def graph_figures(runs: dict, worlds) -> tuple[dict, list]:
    figures, rows = {}, []
    for world in worlds:
        raw = runs[(world, "raw")]
        by_seed = {e["seed"]: e["success"] for e in raw["episodes"]}
        for transport in ("raw", *GRAPH_FORMATS):
            r = runs[(world, transport)]
            ok = [e["success"] for e in r["episodes"]]
            k = f"graph_{world}_{transport}"
            figures.update({f"{k}_success": float(np.mean(ok)), f"{k}_ci95": wilson(sum(ok), len(ok)),
                            f"{k}_episodes": len(ok), f"{k}_rejected": r["rejected"]})
            if transport == "raw":
                continue
            paired = [(by_seed[e["seed"]], e["success"]) for e in r["episodes"] if e["seed"] in by_seed]
            d = paired_difference([a for a, _ in paired], [b for _, b in paired])
            figures.update({f"{k}_vs_raw": d["diff"], f"{k}_vs_raw_ci95": d["ci95"],
                            f"{k}_vs_raw_mcnemar_p": d["mcnemar_p"]})
            rows.append((world, transport, f"{figures[f'graph_{world}_raw_success']:.0%} ({len(raw['episodes'])})",
                         f"{figures[f'{k}_success']:.0%} ({len(ok)})",
                         f"{d['diff']:+.1%} [{d['ci95'][0]:+.1%}, {d['ci95'][1]:+.1%}]", f"{d['mcnemar_p']:.2g}",
                         r["rejected"]))
    return figures, rows


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="8 seeds per world, 0 and 200 ms, two strategies; 3 graph episodes "
                                            "of the first world")
    parser.add_argument("--episodes", type=int, default=200, help="seeds per world (paired over conditions)")
    parser.add_argument("--splits", nargs="+", choices=sorted(FIRST_SEED), default=["validation", "test"])
    parser.add_argument("--strategies", nargs="+", choices=list(STRATEGIES),
                        default=[k for k in STRATEGIES if k not in EXTRA_STRATEGIES])
    parser.add_argument("--latencies", nargs="+", default=list(LATENCIES))
    parser.add_argument("--worlds", nargs="+", default=["tabletop", "driving"], choices=["tabletop", "driving"])
    parser.add_argument("--graph-episodes", type=int, default=None,
                        help="seeds per world through the ROS graph, raw vs compressed (default: 200 with "
                             "--graph-only, else 0 = skip)")
    parser.add_argument("--graph-first-seed", type=int, default=FIRST_SEED["test"],
                        help="first seed of the graph section (default: the test block)")
    parser.add_argument("--graph-only", action="store_true", help="only the graph section and the decode cost")
    parser.add_argument("--cache", default="runs/execution_bench", help="finished conditions (resume)")
    parser.add_argument("--png", metavar="PATH", help="success and boundary jerk against latency")
    parser.add_argument("--decode-only", action="store_true", help="only the compressed-image decode cost")
    args = parser.parse_args(argv)
    start = time.monotonic()
    if args.quick:
        args.episodes, args.latencies, args.graph_episodes = 8, ["0", "0.2"], 3
        args.strategies = ["replace", DEFAULT_STRATEGY]
    figures: dict = {"deadline_s": DEADLINE_S, "default_strategy": DEFAULT_STRATEGY, "episodes": args.episodes,
                     "first_seeds": {k: FIRST_SEED[k] for k in args.splits}, "graph_formats": list(GRAPH_FORMATS),
                     "strategy_settings": {s: STRATEGIES[s] for s in args.strategies}}
    if args.graph_only:
        args.splits = []
    if args.graph_episodes is None:
        args.graph_episodes = 200 if args.graph_only else 0
    figures.update(decode_cost(args.quick))
    benchlib.print_table("Compressed image decode (nodes/conversions.py)", ("image", "ms", "bytes"),
                         [(k[len("decode_"):-3], f"{v:.3f}", figures[k[:-3] + "_bytes"])
                          for k, v in figures.items() if k.startswith("decode_") and k.endswith("_ms")])
    if not args.decode_only:
        import torch

        from embodied_stack.models.policy import DEFAULT_MODEL_DIR, load_default_policy

        torch.set_num_threads(1)
        model = load_default_policy()
        # Kept per model: a retrained default must not reuse the last one's episodes.
        figures["model"] = benchlib.model_id(DEFAULT_MODEL_DIR)
        # (and per version of the code that executes the chunks: a changed limiter or strategy
        # must not reuse the last one's episodes)
        code = benchlib.source_id(*EXECUTION_SOURCES)
        cache_dir = Path(args.cache) / figures["model"] / code / ("quick" if args.quick else "full")
        cache_dir.mkdir(parents=True, exist_ok=True)
        strategies = ["replace"] + [s for s in args.strategies if s != "replace"] \
            if "replace" in args.strategies else args.strategies
        rows = []
        for split in args.splits:
            seeds = list(range(FIRST_SEED[split], FIRST_SEED[split] + args.episodes))
            cache = cache_dir / f"{split}.jsonl"
            results = load_cache(cache)
            todo = list(dict.fromkeys((w, resolved(w, s), lat) for w in args.worlds for s in strategies
                                      for lat in args.latencies))
            todo = [c for c in todo if (*c, tuple(seeds)) not in results]
            first = {(w, resolved(w, s)): s for w in args.worlds for s in reversed(strategies)}
            with tqdm(total=len(todo) * len(seeds), desc=f"execution {split}", unit="episode",
                      file=sys.stderr, mininterval=1.0) as bar:
                for world, settings, latency in todo:
                    strategy = first[(world, settings)]
                    bar.set_postfix_str(f"{world} {strategy} {latency_key(latency)}")
                    r = run_condition(model, world, strategy, latency, seeds, bar=bar)
                    results[(world, settings, latency, tuple(seeds))] = r
                    with cache.open("a") as f:
                        f.write(json.dumps(r) + "\n")
            summary, split_rows = summarize(split, results, args.worlds, strategies, args.latencies, seeds)
            figures.update(summary)
            rows += split_rows
        if args.splits:
            # the guarantee under every strategy and latency: no executed command older than the deadline
            ages = [v for k, v in figures.items() if k.endswith("_max_command_age_s")]
            figures["max_command_age_s"] = max(ages, default=0.0)
            figures["commands_within_deadline"] = bool(figures["max_command_age_s"] <= DEADLINE_S + 1e-9)
            benchlib.print_table(
                f"Execution strategies under latency ({args.episodes} seeds per world and split, paired; "
                f"deadline {DEADLINE_S} s)",
                ("split", "world", "strategy", "latency", "success [95%]", "vs 0 ms (paired) [95%] McNemar",
                 "vs replace", "jerk mean", "boundary peak", "/ replace", "measured peak", "max age s"),
                rows, left=4, width=210)
        if args.png and args.splits:
            plot(args.png, figures, args.splits[-1], args.worlds, strategies, args.latencies)
            print(f"wrote {args.png}")
        if args.graph_episodes:
            graph_worlds = args.worlds[:1] if args.quick else args.worlds
            with tqdm(total=(1 + len(GRAPH_FORMATS)) * len(graph_worlds) * args.graph_episodes,
                      desc="graph raw vs compressed",
                      unit="episode", file=sys.stderr, mininterval=1.0) as bar:
                runs = graph_transport(args.graph_episodes, graph_worlds, cache_dir / "graph.jsonl", bar,
                                       args.graph_first_seed)
            graph, graph_rows = graph_figures(runs, graph_worlds)
            figures.update(graph, graph_first_seed=args.graph_first_seed)
            benchlib.print_table(
                f"Through the ROS graph (lockstep), raw vs compressed colour + compressedDepth, seeds from "
                f"{args.graph_first_seed}",
                ("world", "colour", "raw", "compressed", "compressed - raw (paired) [95%]", "McNemar p", "rejected"),
                graph_rows, left=2)
    figures["wall_s"] = round(time.monotonic() - start, 1)
    return benchlib.write_json(args.json, figures, __file__, argv)


if __name__ == "__main__":
    main()
