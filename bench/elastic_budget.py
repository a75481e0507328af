#!/usr/bin/env python3
"""Elastic submodels under a changing CPU budget: fixed full vs fixed smallest vs elastic.

The default policy (ElasticVLA, ONNX Runtime on the CPU, as the policy node runs it) drives
the Driving world (default; --world tabletop) at a fixed control rate in real time, executing its action chunks as the
policy node does (the next chunk is asked for when `refill_at` actions remain). Every
inference has a deadline of 1/rate - margin; a late result is dropped and that tick's command
is a stop (as the node's safety supervisor does). A load generator changes the budget on a
schedule, one of:

- `--load burners` (default): CPU burner processes, started and stopped at once (they are
  forked beforehand and wait on an event, so a load step is a step);
- `--load quota` (root): this process's cgroup CPU quota cut to `--quota` CPUs and lifted
  again, as `docker update --cpus` does to a running container;
- `--load rt` (root): one real-time (SCHED_FIFO) burner per CPU, all in phase, that holds
  its CPU for `--rt-busy` of every `--rt-period-ms` (a driver or perception thread at a
  higher priority than the policy, woken by a timer). The policy runs in what is left, on
  every core at once; the runnable count never sees such a burner (it sleeps whenever a
  normal task, the budget reader included, gets to run), its CPU time does.

The world (physics and camera rendering) runs in a process of its own, started before any
load, so a quota limits the policy's process (and the elastic decision loop's) and not the
world, as on a robot; the control loop receives each observation and sends each action
through a pipe, as the policy node receives frames and publishes commands.

The same schedule runs three times:

- fixed `full`, fixed smallest (`1/4`): the submodel never changes;
- elastic: the elastic node's decision loop (ElasticControl: CPU budget source,
  Selector with this machine's latency table, online correction from the measured latencies)
  polled at the control rate (or `--poll-rate`; every `--idle-poll-s` while the policy runs
  the smallest submodel, as the node does) in a process of its own (a fresh interpreter in
  the policy's cgroup, so under `--load quota` it spends the policy's quota), as the node
  runs; the control loop applies a decision before its next inference with
  ``policy.set_submodel`` (the node sends it through the policy node's SetParameters service
  instead: tests/test_elastic_node.py covers that path).

Figures: missed deadlines (share of inferences later than the deadline), success in the world
(episodes that end in success / episodes finished), switches, reaction time (from a load step
to the elastic loop's switch down; the maximum over load steps), and a PNG timeline.

Layout: this script is the command line (``main``) and the run loop (``run``; ``reaction`` and
``merge`` turn its records into figures, ``timeline_png`` draws them); the loads are in
bench/cpu_loads.py, the world's and the decision loop's processes in bench/elastic_procs.py.

    python bench/elastic_budget.py [--quick] [--json out.json] [--png timeline.png]
        [--world driving] [--rate 100] [--margin-ms 1] [--threads 2]
        [--load burners --burners 3 | --load quota --quota 0.25 | --load rt --rt-busy 0.65]
        [--table config/latency_tables.json]

JSON keys: elastic_miss_rate, fixed_full_miss_rate, fixed_smallest_miss_rate,
fixed_full_success, fixed_smallest_success, elastic_success, switches, reaction_s,
reaction_periods, world, rate_hz, deadline_ms, load, burners, quota_cpus, quota_period_us,
rt_busy, rt_period_ms,
threads, seconds_per_mode, repeats, idle_poll_s,
episodes_<run>, page_faults_<run> (the control loop's minor page faults), <run>_p50_ms,
<run>_p99_ms, <run>_miss_rate_under_load, command.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
import time

import numpy as np
from tqdm import tqdm

from embodied_stack.control.elastic.latency_table import device_key
from embodied_stack.control.elastic.selector import SelectorConfig
from embodied_stack.models.files import atomic_write_bytes
from embodied_stack.models.policy.interface import ExecutionMode, Observation

import benchlib
from cpu_loads import WORLD_RT_PRIORITY, make_load
from elastic_procs import ElasticPoller, World


def schedule(seconds: float) -> list[tuple[float, bool]]:
    """(start time, load on) phases in shares of `seconds`: quiet 10%, load 35%, quiet 15%,
    load 35%, quiet 5% (load 70% of the time)."""
    shares = [(0.0, False), (0.10, True), (0.45, False), (0.60, True), (0.95, False)]
    return [(s * seconds, on) for s, on in shares]


def run(policy, mode: str, seconds: float, rate: float, margin_s: float, load,
        table: dict, smallest: str, bar, seed0: int, dwell_s: float, world: str, env: World,
        poller: ElasticPoller | None, poll_rate: float | None = None,
        idle_poll_s: float = 0.1, threads: int = 2):
    """One real-time run of the schedule in `env` (a World of `world`); `poller` runs the
    elastic decision loop (mode "elastic" only). Returns per-inference and per-tick
    records."""
    from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

    embodiment = EMBODIMENT_OF_WORLD[world]
    dims = env.dims
    period = 1.0 / rate
    deadline = period - margin_s
    emode = ExecutionMode(policy.config.chunk_length)
    if mode == "elastic":
        policy.set_submodel("full")
        poller.start(table, SelectorConfig(rate_hz=rate, margin_s=margin_s, dwell_s=dwell_s,
                                           miss_hold_s=dwell_s),
                     threads, 1.0 / (poll_rate or rate), idle_poll_s)
    else:
        policy.set_submodel("full" if mode == "full" else smallest)
    phases = schedule(seconds)
    seed = seed0
    obs = env.reset(seed)
    instruction, reference = str(obs["instruction"]), obs  # the episode's first frame
    chunk, pos = None, 0
    episodes = successes = 0
    infer = []  # (t, submodel, latency_s, missed)
    ticks = []  # (t, submodel, load on)
    steps_at = []  # (t of load step, on)
    t_start = time.perf_counter()
    phase_i = -1
    k = 0
    while True:
        t_tick = t_start + k * period
        now = time.perf_counter()
        if t_tick > now:
            time.sleep(t_tick - now)
        now = time.perf_counter()
        t = now - t_start
        if t >= seconds:
            break
        while phase_i + 1 < len(phases) and t >= phases[phase_i + 1][0]:
            phase_i += 1
            (load.on if phases[phase_i][1] else load.off)()
            steps_at.append((t, phases[phase_i][1]))  # this tick: its record shows the outcome
        if poller is not None and (want := poller.take()) is not None:
            policy.set_submodel(want)  # between inferences, as the policy node does
            poller.applied(want)
        action = None
        if chunk is None:
            o = Observation(rgb=obs["rgb"], instruction=instruction, proprio=obs["proprio"],
                            embodiment=embodiment, depth=obs["depth"],
                            reference_rgb=reference["rgb"], reference_depth=reference["depth"])
            t0 = time.perf_counter()
            result = policy.select_action(o)
            lat = time.perf_counter() - t0
            missed = lat > deadline
            infer.append((t0 - t_start, policy.submodel, lat, missed))
            if poller is not None:
                poller.observe(policy.submodel, lat)
            if not missed:
                chunk, pos = np.asarray(result.chunk), 0
        if chunk is not None:
            action = chunk[pos]
            pos += 1
            if pos >= emode.steps_per_inference:
                chunk = None
        if action is None:
            action = np.zeros(dims, np.float32)  # a dropped result: the safety stop
        obs, done, success = env.step(np.asarray(action, np.float32)[:dims])
        ticks.append((t, policy.submodel, phases[phase_i][1]))
        if done:
            episodes += 1
            successes += int(success)
            seed += 1
            obs = env.reset(seed)
            instruction, reference = str(obs["instruction"]), obs
            chunk = None
        k += 1
        if k % int(rate) == 0:
            bar.update(1)
    switch_log, budget_log, _ = poller.stop() if poller is not None else ([], [], 0.0)
    load.off()
    return {"infer": infer, "ticks": ticks, "steps": steps_at, "episodes": episodes,
            "successes": successes, "switch_log": switch_log,
            "budget": [(t - t_start, slowdown) for t, slowdown in budget_log],
            "t_start": t_start, "deadline": deadline}


def reaction(res: dict, size: dict) -> list[float]:
    """Seconds from each load-on step to the elastic loop's first switch to a smaller
    submodel after it (steps after which it did not need to switch down are not counted)."""
    out = []
    log = [(t - res["t_start"], name) for t, name, _ in res["switch_log"]]
    for i, (t_step, on) in enumerate(res["steps"]):
        if not on:
            continue
        t_end = res["steps"][i + 1][0] if i + 1 < len(res["steps"]) else float("inf")
        before = [x[1] for x in res["ticks"] if x[0] < t_step]
        current = before[-1] if before else "full"
        down = [t for t, name in log if t_step - 1e-3 <= t < t_end and size[name] < size[current]]
        if down:
            out.append(down[0] - t_step)
    return out


def merge(parts: list[dict], segment: float) -> dict:
    """One record of several runs, each shifted by its place in the sequence of repeats."""
    out = {"infer": [], "ticks": [], "steps": [], "switch_log": [], "budget": [], "episodes": 0,
           "successes": 0, "t_start": 0.0, "deadline": parts[0]["deadline"]}
    for i, res in enumerate(parts):
        dt = i * segment
        out["infer"] += [(t + dt, *rest) for t, *rest in res["infer"]]
        out["ticks"] += [(t + dt, *rest) for t, *rest in res["ticks"]]
        out["steps"] += [(t + dt, on) for t, on in res["steps"]]
        out["budget"] += [(t + dt, slowdown) for t, slowdown in res["budget"]]
        out["switch_log"] += [(t - res["t_start"] + dt, n, why) for t, n, why in res["switch_log"]]
        out["episodes"] += res["episodes"]
        out["successes"] += res["successes"]
    return out


def timeline_png(runs: dict, deadline_ms: float, path: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = {"1/4": 0, "1/2": 1, "3/4": 2, "full": 3}
    fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True, dpi=80)
    for name, res in runs.items():
        inf = np.array([(t, lat * 1e3) for t, _, lat, _ in res["infer"]])
        if inf.size:
            axes[0].plot(inf[:, 0], inf[:, 1], ".", ms=1.5, label=name, alpha=0.6)
    axes[0].axhline(deadline_ms, color="k", lw=1, ls="--", label="deadline")
    axes[0].set_ylabel("inference ms")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7, markerscale=5, loc="upper right")
    el = runs["elastic"]
    ticks = el["ticks"]
    tt = np.array([x[0] for x in ticks])
    axes[1].step(tt, [order.get(x[1], -1) for x in ticks], where="post", color="C2")
    axes[1].set_yticks(list(order.values()), list(order))
    axes[1].set_ylabel("elastic submodel")
    axes[2].step(tt, [x[2] for x in ticks], where="post", color="C3", label="load on")
    if el["budget"]:
        bt, slow = zip(*el["budget"])
        axes[2].plot(bt, slow, color="C4", lw=0.8, label="budget slowdown")
    axes[2].set_ylabel("budget")
    axes[2].set_xlabel("s")
    axes[2].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="reduced run (~60 s), same code path")
    parser.add_argument("--png", metavar="PATH", help="timeline PNG (default next to --json)")
    parser.add_argument("--world", default="driving", choices=["driving", "tabletop"],
                        help="world (default driving)")
    parser.add_argument("--rate", type=float, default=100.0, help="control rate Hz (default 100)")
    parser.add_argument("--margin-ms", type=float, default=1.0, help="deadline margin (default 1)")
    parser.add_argument("--load", default="burners", choices=["burners", "quota", "rt"],
                        help="what the schedule switches on: CPU burner processes (default), "
                             "a CPU quota on this process's cgroup (root), or real-time "
                             "burners in phase on every CPU (root)")
    parser.add_argument("--burners", type=int, default=3, help="CPU burner processes (default 3)")
    parser.add_argument("--quota", type=float, default=0.25,
                        help="--load quota: CPUs this process may use while loaded (default 0.25)")
    parser.add_argument("--quota-period-us", type=int, default=4100,
                        help="--load quota: the quota's period in us (default 4100)")
    parser.add_argument("--rt-busy", type=float, default=0.65,
                        help="--load rt: share of each period the burners hold (default 0.65)")
    parser.add_argument("--rt-period-ms", type=float, default=1.0,
                        help="--load rt: the burners' period in ms (default 1)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per mode, all repeats (default 100, --quick 20)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="load schedules per mode, interleaved (default 5, --quick 2)")
    parser.add_argument("--threads", type=int, default=2,
                        help="ONNX Runtime intra-op threads of the policy (default 2, as the node)")
    parser.add_argument("--poll-rate", type=float, default=None,
                        help="elastic decision polls per second (default: the control rate; "
                             "the elastic node's own default is 50)")
    parser.add_argument("--idle-poll-s", type=float, default=0.1,
                        help="elastic: poll at most this often while the policy runs the "
                             "smallest submodel (default 0.1, as the node)")
    parser.add_argument("--dwell", type=float, default=1.0, help="elastic dwell s (default 1)")
    parser.add_argument("--table", default=str(benchlib.LATENCY_TABLE),
                        help="latency table (this machine's entry is required)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (20.0 if args.quick else 100.0)
    args.repeats = args.repeats or (2 if args.quick else 5)

    from embodied_stack.models.policy import load_default_policy
    from embodied_stack.models.runtime import make_runtime

    key = device_key("cpu")
    table = benchlib.this_machines_table(args.table, key)
    policy = load_default_policy(None)
    runtime = make_runtime("onnxruntime", policy, providers=["CPUExecutionProvider"],
                           intra_op_threads=args.threads)
    policy.use_runtime(runtime)
    smallest = min(table, key=lambda n: table[n].get("params", table[n]["p50_ms"]))
    modes = ("full", "smallest", "elastic")
    segment = seconds / args.repeats
    parts = {m: [] for m in modes}
    with contextlib.ExitStack() as children:  # closed in reverse order, also on an error
        # before the load: it must not start in the quota's cgroup
        env = World(args.world, rt_priority=WORLD_RT_PRIORITY if args.load == "rt" else None)
        children.callback(env.close)
        load = make_load(args.load, burners=args.burners, quota=args.quota,
                         quota_period_us=args.quota_period_us, rt_busy=args.rt_busy,
                         rt_period_ms=args.rt_period_ms)
        children.callback(load.close)
        poller = ElasticPoller()  # after the load: under a quota it shares the policy's cgroup
        children.callback(poller.close)
        # As run_node does for the nodes: everything built so far lives for the whole run, so
        # a cyclic-GC pass never walks it in the middle of an inference.
        gc.collect()
        gc.freeze()
        bar = children.enter_context(tqdm(total=int(3 * seconds), desc="elastic budget",
                                          unit="s", file=sys.stderr))
        # Interleaved: each repeat runs the whole load schedule once per mode, the order of
        # the modes rotated from one repeat to the next, so a change in the background load
        # of a shared machine (or a place in the sequence) hits the three alike.
        for rep in range(args.repeats):
            for mode in modes[rep % 3:] + modes[:rep % 3]:
                bar.set_postfix_str(f"{mode} {rep + 1}/{args.repeats}")
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                parts[mode].append(run(policy, mode, segment, args.rate, args.margin_ms * 1e-3,
                                       load, table, smallest, bar, seed0=200_000 + 1000 * rep,
                                       dwell_s=args.dwell, world=args.world, env=env,
                                       poller=poller if mode == "elastic" else None,
                                       poll_rate=args.poll_rate, idle_poll_s=args.idle_poll_s,
                                       threads=runtime.intra_op_threads))
                parts[mode][-1]["page_faults"] = (
                    resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    runs = {m: merge(parts[m], segment) for m in modes}

    def miss_rate(res):
        return float(np.mean([m for *_, m in res["infer"]])) if res["infer"] else float("nan")

    def success(res):
        return res["successes"] / res["episodes"] if res["episodes"] else float("nan")

    react = reaction(runs["elastic"], {n: table[n].get("params", table[n]["p50_ms"]) for n in table})
    deadline_ms = (1.0 / args.rate - args.margin_ms * 1e-3) * 1e3
    out = {
        "elastic_miss_rate": miss_rate(runs["elastic"]),
        "fixed_full_miss_rate": miss_rate(runs["full"]),
        "fixed_smallest_miss_rate": miss_rate(runs["smallest"]),
        "fixed_full_success": success(runs["full"]),
        "fixed_smallest_success": success(runs["smallest"]),
        "elastic_success": success(runs["elastic"]),
        "switches": len(runs["elastic"]["switch_log"]),
        "reaction_s": max(react) if react else float("nan"),
        "reaction_periods": max(react) * args.rate if react else float("nan"),
        "reaction_steps": len(react), "reaction_each_s": [round(x, 4) for x in react],
        "world": args.world, "rate_hz": args.rate, "deadline_ms": deadline_ms, "load": args.load,
        "burners": args.burners if args.load == "burners" else 0,
        "quota_cpus": args.quota if args.load == "quota" else None,
        "quota_period_us": args.quota_period_us if args.load == "quota" else None,
        "rt_busy": args.rt_busy if args.load == "rt" else None,
        "rt_period_ms": args.rt_period_ms if args.load == "rt" else None,
        "seconds_per_mode": seconds, "repeats": args.repeats,
        "threads": runtime.intra_op_threads, "smallest": smallest,
        "poll_rate_hz": args.poll_rate or args.rate, "idle_poll_s": args.idle_poll_s,
        "device": key, "quick": args.quick,
        "command": benchlib.command_line(__file__, argv),
    }
    for mode, res in runs.items():
        # the control loop's own minor page faults (its time, in the inference's budget)
        out[f"page_faults_{mode}"] = sum(p["page_faults"] for p in parts[mode])
        out[f"episodes_{mode}"] = res["episodes"]
        out[f"inferences_{mode}"] = len(res["infer"])
        lat = np.array([x[2] for x in res["infer"]]) * 1e3
        out[f"{mode}_p50_ms"] = float(np.percentile(lat, 50))
        out[f"{mode}_p99_ms"] = float(np.percentile(lat, 99))
        on = [x for x in res["infer"] if _load_on(res, x[0])]
        out[f"{mode}_miss_rate_under_load"] = float(np.mean([x[3] for x in on])) if on else 0.0
    el = runs["elastic"]["infer"]
    for name in table:
        mine = [x for x in el if x[1] == name]
        out[f"elastic_share_{name.replace('/', '_')}"] = len(mine) / len(el) if el else 0.0
        out[f"elastic_misses_{name.replace('/', '_')}"] = sum(x[3] for x in mine)
    print_table(out)
    key = {n: n.replace("/", "_") for n in table}
    print("elastic: " + ", ".join(
        f"{n} {out['elastic_share_' + key[n]]:.0%} of inferences, "
        f"{out['elastic_misses_' + key[n]]} missed" for n in table))
    for t, name, why in runs["elastic"]["switch_log"]:
        print(f"  switch at {t:6.2f} s -> {name}: {why}")
    png = args.png or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
    if png:
        timeline_png(runs, deadline_ms, png)
    # NaN (e.g. no load step needed a switch) -> null
    benchlib.write_json(args.json, out, digits=6)
    return out


def _load_on(res, t) -> bool:
    on = False
    for t_step, state in res["steps"]:
        if t_step <= t:
            on = state
    return on


def _load_words(out: dict) -> str:
    if out.get("load") == "quota":
        return f"CPU quota {out['quota_cpus']:g} CPUs / {out['quota_period_us']} us"
    if out.get("load") == "rt":
        return (f"real-time burners {out['rt_busy']:.0%} of every {out['rt_period_ms']:g} ms "
                "on every CPU")
    return f"{out['burners']} burners"


def print_table(out: dict) -> None:
    names = {"full": "fixed full", "smallest": f"fixed {out['smallest']}", "elastic": "elastic"}
    rows = []
    for mode, label in names.items():
        miss = out["elastic_miss_rate" if mode == "elastic" else f"fixed_{mode}_miss_rate"]
        succ = out["elastic_success" if mode == "elastic" else f"fixed_{mode}_success"]
        rows.append((label, f"{miss:.2%}", f"{out[f'{mode}_miss_rate_under_load']:.2%}",
                     f"{out[f'{mode}_p50_ms']:.2f}", f"{out[f'{mode}_p99_ms']:.2f}",
                     f"{succ:.2f}", str(out[f"episodes_{mode}"])))
    benchlib.print_table(
        f"elastic budget: {out['rate_hz']:.0f} Hz, deadline {out['deadline_ms']:.2f} ms, "
        f"{_load_words(out)}, {out['seconds_per_mode']:.0f} s per mode ({out['device']})",
        ("run", "miss rate", "miss rate under load", "p50 ms", "p99 ms", "success", "episodes"),
        rows,
        footer=f"switches {out['switches']} | reaction {out['reaction_s'] * 1e3:.1f} ms = "
               f"{out['reaction_periods']:.2f} control periods (max over {out['reaction_steps']} "
               "load steps)")


if __name__ == "__main__":
    main()
