#!/usr/bin/env python3
"""Elastic submodels under a changing compute budget: fixed full vs fixed smallest vs elastic.

The default policy (ElasticVLA, ONNX Runtime on the CPU, as the policy node runs it; with
`--device cuda`, torch on the GPU with the node's CUDA settings) drives
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
  normal task, the budget reader included, gets to run), its CPU time does;
- `--load gpu` (`--device cuda`): a compute hog in a process of its own that keeps the GPU
  busy with matrix products for `--gpu-busy` of every `--gpu-period-ms` (bench/gpu_loads.py);
  the decision loop reads the budget from NVML, as the elastic node does on a GPU, and learns
  the slowdown from the latencies the policy reports.

The world (physics and camera rendering) runs in a process of its own, started before any
load, so a quota limits the policy's process (and the elastic decision loop's) and not the
world, as on a robot; the control loop receives each observation and sends each action
through a pipe, as the policy node receives frames and publishes commands.

The same schedule runs three times:

- fixed `full`, fixed smallest (`1/4`): the submodel never changes;
- elastic: the elastic node's decision loop (ElasticControl: CPU budget source,
  Selector with this machine's latency table, online correction from the measured latencies)
  polled at twice the control rate (or `--poll-rate`; every `--idle-poll-s` while the policy runs
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
        [--table now|config/latency_tables.json] [--calibration-s S]
    python bench/elastic_budget.py --device cuda [--load gpu] [--precision fp32] [--cuda-graph]

JSON keys: elastic_miss_rate, fixed_full_miss_rate, fixed_smallest_miss_rate,
fixed_full_success, fixed_smallest_success, elastic_success, switches, reaction_s,
reaction_periods, world, rate_hz, deadline_ms, load, burners, quota_cpus, quota_period_us,
rt_busy, rt_period_ms, gpu_busy, gpu_period_ms, runtime,
threads, seconds_per_mode, repeats, idle_poll_s,
episodes_<run>, page_faults_<run> (the control loop's minor page faults), <run>_p50_ms,
<run>_p99_ms, <run>_miss_rate_under_load, elastic_slowdown_load_{off,on}_{p50,p90} (the
slowdown the decision loop read with the load off and on), command.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import resource
import sys
import time

import numpy as np
from elastic_calibration import Calibration, calibrate
from gpu_loads import GpuHog
from tqdm import tqdm

from embodied_stack.control.elastic.latency_table import device_key
from embodied_stack.control.elastic.selector import SelectorConfig
from embodied_stack.models.files import atomic_write_bytes
from embodied_stack.models.policy.interface import ExecutionMode, Observation
from embodied_stack.sim.train.rollouts import success_interval

import benchlib
from cpu_loads import WORLD_RT_PRIORITY, make_load, rt_permitted
from elastic_procs import ElasticPoller, World


def schedule(seconds: float) -> list[tuple[float, bool]]:
    """(start time, load on) phases in shares of `seconds`: quiet 10%, load 35%, quiet 15%,
    load 35%, quiet 5% (load 70% of the time)."""
    shares = [(0.0, False), (0.10, True), (0.45, False), (0.60, True), (0.95, False)]
    return [(s * seconds, on) for s, on in shares]


def run(policy, mode: str, seconds: float, rate: float, margin_s: float, load,
        table: dict, smallest: str, bar, seed0: int, dwell_s: float, world: str, env: World,
        poller: ElasticPoller | None, poll_rate: float | None = None,
        idle_poll_s: float = 0.1, threads: int = 2, phases: list | None = None,
        device: str = "cpu", max_s: float | None = None, stop_after: int | None = None):
    """One real-time run of the schedule (or of `phases`: (start s, load on) pairs) in `env`
    (a World of `world`); `poller` runs the elastic decision loop (mode "elastic" only).
    `stop_after`: stop once this many inferences are in, or `max_s` after the start (probes).
    Returns per-inference and per-tick records."""
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
                     threads, 1.0 / (poll_rate or POLLS_PER_PERIOD * rate), idle_poll_s, device)
    else:
        policy.set_submodel("full" if mode == "full" else smallest)
    phases = phases or schedule(seconds)
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
        if t >= seconds or (stop_after is not None and len(infer) >= stop_after) or (max_s is not None and t >= max_s):
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
        if bar is not None and k % max(1, int(rate)) == 0:
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


#: The loads' calibration ranges, in their own units: (lightest, heaviest, integer).
LEVEL_RANGE = {"rt": (0.05, 0.93, False), "quota": (2.0, 0.05, False), "burners": (0, None, True),
               "gpu": (0.05, 0.95, False)}
#: Elastic decision polls per control period by default. A load step shows in the CPU source's
#: busy share diluted at the first poll after it (the share is over the interval since the poll
#: before) and in full at the second, so polling once per period reacts in 1-2 periods; the
#: elastic node's own default polls 5 times per period (50 Hz at 10 Hz). A poll costs about
#: 0.1 ms of CPU here (bench/elastic_poll_cost.py), and while the policy runs the smallest
#: submodel the loop polls only every --idle-poll-s.
POLLS_PER_PERIOD = 2
#: The policy node's intra-op threads (its `intra_op_threads` default).
NODE_THREADS = 2
#: How a calibration that found no level begins its reason.
NOT_SEPARATED = "no load level separates full and the smallest submodel: "
#: Lower control rates the calibration may fall back to (the policy node's own defaults are
#: 10-30 Hz), when no load level separates the submodels at the requested rate.
FALLBACK_RATES = (30.0, 20.0, 10.0)


def build_parser():
    parser = benchlib.parser(__doc__, quick="reduced run (~60 s after the calibration), same code path")
    parser.add_argument("--png", metavar="PATH", help="timeline PNG (default next to --json)")
    parser.add_argument("--world", default="driving", choices=["driving", "tabletop"],
                        help="world (default driving)")
    parser.add_argument("--rate", type=float, default=100.0, help="control rate Hz (default 100)")
    parser.add_argument("--min-rate", type=float, default=10.0,
                        help="the calibration may lower the rate to this (default 10 Hz: the "
                             "policy node's defaults are 10-30 Hz); --min-rate = --rate keeps it")
    parser.add_argument("--margin-ms", type=float, default=1.0, help="deadline margin (default 1)")
    parser.add_argument("--device", default="cpu",
                        help="where the policy runs: cpu (ONNX Runtime, default) or cuda[:N] "
                             "(torch, as the policy node with device:=cuda)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="--device cuda: weights' precision (default fp32, the node's default)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="--device cuda: replay a CUDA graph per submodel (node default: off)")
    parser.add_argument("--load", default="auto", choices=["auto", "burners", "quota", "rt", "gpu"],
                        help="what the schedule switches on: auto (default: on a GPU the GPU hog; "
                             "on the CPU real-time burners where this process may run them, else "
                             "burner processes), CPU burner processes, a CPU quota on this "
                             "process's cgroup (root), real-time burners in phase on every CPU "
                             "(root), or a GPU compute hog (--device cuda)")
    parser.add_argument("--burners", type=int, default=None,
                        help="--load burners: burner processes (default: calibrated)")
    parser.add_argument("--quota", type=float, default=None,
                        help="--load quota: CPUs this process may use while loaded (default: calibrated)")
    parser.add_argument("--quota-period-us", type=int, default=4100,
                        help="--load quota: the quota's period in us (default 4100)")
    parser.add_argument("--rt-busy", type=float, default=None,
                        help="--load rt: share of each period the burners hold (default: calibrated)")
    parser.add_argument("--rt-period-ms", type=float, default=1.0,
                        help="--load rt: the burners' period in ms (default 1)")
    parser.add_argument("--gpu-busy", type=float, default=None,
                        help="--load gpu: share of each period the hog holds the GPU (default: calibrated)")
    parser.add_argument("--gpu-period-ms", type=float, default=5.0,
                        help="--load gpu: the hog's period in ms (default 5)")
    parser.add_argument("--calibration-s", type=float, default=None,
                        help="most seconds the calibration may take over all its rates and thread "
                             "counts (default 420, --quick 300); when spent, it stops and says so")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per mode, all repeats (default 100, --quick 20)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="load schedules per mode, interleaved (default 5, --quick 1: every load "
                             "step costs the elastic loop about one late inference before it "
                             "switches, so short schedules would measure mostly those)")
    parser.add_argument("--headline", type=int, default=1, metavar="N",
                        help="N independent runs after one calibration, each with its own figures "
                             "and intervals; every one must meet the targets (default 1)")
    parser.add_argument("--check", nargs="*", type=float, metavar="HZ", default=None,
                        help="does elastic switching help here, and at which rates: calibrate and "
                             "run (--quick) at each control rate given (default 100 30 20 10), no "
                             "fallback, and print a verdict per rate")
    parser.add_argument("--model", default="", help="model directory (default: the shipped model); "
                        "its latency table is measured here when this machine has none")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads of the policy (default: 2, as the node; "
                             "the calibration may fall back to 1 at a rate where 2 do not separate "
                             "the submodels, before it lowers the rate; under --load rt it tries 1 "
                             "first); giving it pins the count")
    parser.add_argument("--poll-rate", type=float, default=None,
                        help="elastic decision polls per second (default: twice the control rate; "
                             "the elastic node's own default is 50, five times its 10 Hz)")
    parser.add_argument("--idle-poll-s", type=float, default=0.1,
                        help="elastic: poll at most this often while the policy runs the "
                             "smallest submodel (default 0.1, as the node)")
    parser.add_argument("--dwell", type=float, default=2.0,
                        help="elastic dwell s: least time between a switch and a step up, and how long "
                             "a miss holds the selector (default 2, the elastic node's dwell_s)")
    parser.add_argument("--table", default="now",
                        help="latency table the elastic loop selects with: now (default: measured "
                             "before the runs, for this model on the world's embodiment, on the "
                             "CPU as on a GPU), or a table file (this machine's entry is used, or "
                             "measured and cached)")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    seconds = args.seconds or (20.0 if args.quick else 100.0)
    args.repeats = args.repeats or (1 if args.quick else 5)
    on_gpu = args.device.startswith("cuda")
    if not on_gpu and args.device != "cpu":
        sys.exit(f"error: --device {args.device!r}: cpu or cuda[:N]")
    if args.load == "auto":
        args.load = "gpu" if on_gpu else "rt" if rt_permitted() else "burners"
    if (args.load == "gpu") != on_gpu:
        sys.exit(f"error: --load {args.load} with --device {args.device}: the GPU hog loads a GPU "
                 "policy, the CPU loads a CPU policy")
    if not on_gpu and (args.precision != "fp32" or args.cuda_graph):
        sys.exit("error: --precision and --cuda-graph apply to --device cuda")
    fixed_level = {"rt": args.rt_busy, "quota": args.quota, "burners": args.burners,
                   "gpu": args.gpu_busy}[args.load]
    if args.check is not None and fixed_level is not None:
        sys.exit("error: --check calibrates the load: leave --rt-busy / --quota / --burners / "
                 "--gpu-busy out")
    args.calibration_s = args.calibration_s or (300.0 if args.quick else 420.0)

    from embodied_stack.control.elastic.latency_table import load_table, measure_policy_table
    from embodied_stack.models.policy.backends import load_backend
    from embodied_stack.models.runtime import make_runtime
    from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

    key = device_key(args.device)
    if on_gpu:  # as the policy node builds it with device:=cuda (CUDA graphs captured here)
        policy = load_backend("vla", args.model, args.device, "torch", args.precision, args.cuda_graph)
    else:
        policy = load_backend("vla", args.model, "cpu")
    threads_given = args.threads is not None
    args.threads = args.threads or NODE_THREADS

    def use_threads(n: int):
        """The policy on an ONNX Runtime session with `n` intra-op threads."""
        rt = make_runtime("onnxruntime", policy, providers=["CPUExecutionProvider"], intra_op_threads=n)
        policy.use_runtime(rt)
        return rt

    runtime = policy.runtime if on_gpu else use_threads(args.threads)
    if on_gpu or args.table == "now":  # the policy as built, on this world's embodiment, here
        table, bad = measure_policy_table(policy, policy.runtime_description, rounds=5, iters=100,
                                          embodiment=EMBODIMENT_OF_WORLD[args.world])
        print(f"latency table: measured now on {key} for {args.world} ({policy.runtime_description}"
              + ("" if on_gpu else f", {args.threads} threads") + ")"
              + (f"; not monotone: {bad}" if bad else ""))
    else:
        table, origin = load_table(args.table, "cpu", "onnxruntime", True, args.model, print)
        print(f"latency table: {origin}")
    smallest = min(table, key=lambda n: table[n].get("params", table[n]["p50_ms"]))
    cores = len(os.sched_getaffinity(0))
    with contextlib.ExitStack() as children:  # closed in reverse order, also on an error
        # before the load: it must not start in the quota's cgroup
        env = World(args.world, rt_priority=WORLD_RT_PRIORITY if args.load == "rt" else None)
        children.callback(env.close)
        lightest, heaviest, integer = LEVEL_RANGE[args.load]
        heaviest = heaviest if heaviest is not None else 4 * cores
        start = fixed_level if fixed_level is not None else heaviest
        if args.load == "gpu":
            load = GpuHog(start, args.gpu_period_ms, args.device)
            print(f"GPU hog: {load.side}x{load.side} bf16 products of {load.product_s * 1e3:.3f} ms, "
                  f"every {args.gpu_period_ms:g} ms")
        else:
            load = make_load(args.load, burners=int(start), quota=start,
                             quota_period_us=args.quota_period_us, rt_busy=start,
                             rt_period_ms=args.rt_period_ms, most_burners=4 * cores)
        children.callback(load.close)
        poller = ElasticPoller()  # after the load: under a quota it shares the policy's cgroup
        children.callback(poller.close)
        # As run_node does for the nodes: everything built so far lives for the whole run, so
        # a cyclic-GC pass never walks it in the middle of an inference.
        gc.collect()
        gc.freeze()
        bench = Bench(args, policy, runtime, table, smallest, env, load, poller, seconds)

        def calibrated(rates) -> Calibration:
            """Rate by rate: the node's thread count, then (unless --threads was given) one
            intra-op thread, before the next lower rate. Under a load that holds every CPU at
            once, two threads wait on each other at every operator: on a 2-CPU VM that
            alone can push the smallest submodel's tail past the deadline."""
            reasons: list[str] = []
            probes: list = []
            seconds = 0.0
            options = [args.threads] + ([1] if args.threads > 1 and not threads_given else [])
            if args.load == "rt":
                # real-time burners hold every CPU at once, in phase: one thread first (see above)
                options = options[::-1]
            if on_gpu:
                options = [None]  # ONNX Runtime's thread count: not the GPU's question
            t_end = time.monotonic() + args.calibration_s
            for rate in rates:
                for n in options:
                    if n is not None and bench.runtime.intra_op_threads != n:
                        bench.runtime = use_threads(n)
                    cal = calibrate(bench.measure, load, [rate], args.margin_ms * 1e-3, smallest,
                                    lightest, heaviest, integer, quick=args.quick,
                                    measure_switched=functools.partial(bench.measure, switched=True),
                                    until=t_end)
                    for p in cal.probes:
                        p.threads = n
                    probes += cal.probes
                    seconds += cal.seconds
                    cal.threads, cal.probes, cal.seconds = n, probes, seconds
                    if cal.separated:
                        if reasons:
                            cal.reason += "; first tried: " + "; ".join(reasons)
                        return cal
                    reasons.append((f"{n} thread{'s' if n > 1 else ''}: " if n else "")
                                   + cal.reason.removeprefix(NOT_SEPARATED))
                    if cal.out_of_time:
                        break
                if "even the heaviest load" in cal.reason or cal.out_of_time:
                    break  # lower rates only lengthen the deadline: full would miss less still
            cal.reason = NOT_SEPARATED + "; ".join(reasons)
            return cal

        if args.check is not None:
            return check(bench, args, [float(r) for r in (args.check or (100, 30, 20, 10))], calibrated)
        if fixed_level is not None:
            cal = Calibration(load=type(load).__name__, level_name=load.level_name, separated=True,
                              rate_hz=args.rate, deadline_ms=(1 / args.rate - args.margin_ms * 1e-3) * 1e3,
                              level=fixed_level, reason="level given on the command line: not calibrated",
                              threads=None if on_gpu else args.threads)
        else:
            rates = [args.rate] + [r for r in FALLBACK_RATES if args.min_rate <= r < args.rate]
            print(f"calibrating the {args.load} load at {', '.join(f'{r:g}' for r in rates)} Hz ...")
            cal = calibrated(rates)
            print(f"calibration ({cal.seconds:.0f} s): {cal.reason}")
        common = {**cal.figures(), "requested_rate_hz": args.rate, "device": key, "quick": args.quick,
                  "runtime": getattr(policy, "runtime_description", type(runtime).__name__),
                  "command": benchlib.command_line(__file__, argv)}
        if not cal.separated:
            out = {**common, "met": False}
            benchlib.write_json(args.json, out, digits=6)
            print(f"error: {cal.reason}", file=sys.stderr)
            raise SystemExit(2)
        load.set_level(cal.level)
        common["latency_table"] = bench.match_table()
        results = [bench.compare(cal.rate_hz, k, args.headline) for k in range(args.headline)]
    out = {**results[0]["figures"], **common}
    if args.headline > 1:
        for k, res in enumerate(results, 1):
            out.update({f"run{k}_{name}": value for name, value in res["figures"].items()
                        if name in HEADLINE_KEYS})
        out["runs"] = args.headline
        out["met"] = all(r["figures"]["met"] for r in results)
    for k, res in enumerate(results, 1):
        print_table(res["figures"], f"run {k} of {len(results)}" if len(results) > 1 else "")
        print_switches(res, table)
    png = args.png or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
    if png:
        timeline_png(results[0]["runs"], results[0]["figures"]["deadline_ms"], png)
    benchlib.write_json(args.json, out, digits=6)  # NaN (e.g. no load step needed a switch) -> null
    print("targets met" if out["met"] else "targets NOT met", "(elastic <= 1% missed where fixed full >= 20%, "
          "success >= fixed smallest's, reaction <= 2 control periods)")
    return out


#: Per-run keys a --headline JSON keeps for every run (run<k>_<key>).
HEADLINE_KEYS = ("elastic_miss_rate", "fixed_full_miss_rate", "fixed_smallest_miss_rate",
                 "elastic_miss_ci95", "fixed_full_miss_ci95", "fixed_smallest_miss_ci95",
                 "elastic_success", "fixed_smallest_success", "fixed_full_success",
                 "elastic_success_ci95", "fixed_smallest_success_ci95", "episodes_elastic",
                 "episodes_smallest", "reaction_periods", "switches", "met")


class Bench:
    """The run loop's fixed parts, shared by the calibration's probes and the comparisons."""

    def __init__(self, args, policy, runtime, table, smallest, env, load, poller, seconds):
        self.args, self.policy, self.runtime, self.table = args, policy, runtime, table
        self.smallest, self.env, self.load, self.poller = smallest, env, load, poller
        self.seconds = seconds
        # the threads the table was measured with (measured now: the runtime's; tables on
        # file: the node's count)
        self.table_threads = (self.threads if args.device.startswith("cuda") or args.table == "now"
                              else NODE_THREADS)

    def match_table(self) -> dict:
        """The latency table the elastic loop plans with, measured again here (load off) when the
        calibration chose another intra-op thread count than the table was measured with: at one
        thread `full` is slower than a two-thread table says, and the selector would plan with
        the wrong tails until its online correction caught up. Returns the table's p50/p99."""
        from embodied_stack.control.elastic.latency_table import measure_policy_table
        from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

        if self.threads != self.table_threads:
            print(f"latency table: measuring it again at {self.threads} intra-op thread(s) "
                  f"(the table was measured at {self.table_threads})")
            self.table, bad = measure_policy_table(self.policy, self.policy.runtime_description,
                                                   rounds=5, iters=100,
                                                   embodiment=EMBODIMENT_OF_WORLD[self.args.world])
            if bad:
                print(f"latency table not monotone: {bad}")
            self.table_threads = self.threads
        return {"threads": self.table_threads,
                **{f"{n}_{q}_ms": round(e[f"{q}_ms"], 3) for n, e in self.table.items() for q in ("p50", "p99")}}

    @property
    def threads(self) -> int | None:
        """The policy's ONNX Runtime intra-op threads (None: torch on a GPU)."""
        return getattr(self.runtime, "intra_op_threads", None)

    def _run(self, mode, rate, seconds, bar, seed0, phases=None, max_s=None, stop_after=None):
        a = self.args
        return run(self.policy, mode, seconds, rate, a.margin_ms * 1e-3, self.load, self.table,
                   self.smallest, bar, seed0=seed0, dwell_s=a.dwell, world=a.world, env=self.env,
                   poller=self.poller if mode == "elastic" else None, poll_rate=a.poll_rate,
                   idle_poll_s=a.idle_poll_s, threads=self.threads or NODE_THREADS, phases=phases,
                   device=a.device, max_s=max_s, stop_after=stop_after)

    def measure(self, submodel: str, rate: float, level: float, n: int, switched: bool = False,
                max_s: float | None = None) -> np.ndarray:
        """Latencies (s) of n inferences of `submodel` at `rate` with the load at `level`: on
        throughout, or (`switched`) on and off as the run's schedule switches it; fewer when
        `max_s` seconds pass first."""
        self.load.set_level(level)
        mode = "full" if submodel == "full" else "smallest"
        # An inference per chunk, not per tick: run until n are in (each stretch sized by the
        # ticks per inference seen so far), so the probe's count is what the caller sized it for.
        lat: list[float] = []
        seconds, per_tick = 0.0, 1.0
        t_end = time.monotonic() + max_s if max_s is not None else float("inf")
        with tqdm(total=n, desc=f"calibrate {submodel}", unit="inference", leave=False,
                  file=sys.stderr) as bar:
            while len(lat) < n and time.monotonic() < t_end:
                stretch = max(1.0, (n - len(lat)) / (rate * per_tick))
                if switched:  # whole schedules, so the probe sees the load's steps
                    res = self._run(mode, rate, stretch, None, seed0=900_000 + len(lat),
                                    phases=schedule(stretch), max_s=t_end - time.monotonic())
                else:
                    res = self._run(mode, rate, stretch, None, seed0=900_000 + len(lat),
                                    phases=[(0.0, True)], max_s=t_end - time.monotonic(),
                                    stop_after=n - len(lat))
                got = [x for _, _, x, _ in res["infer"]]
                lat += got
                bar.update(len(got))
                seconds += stretch
                per_tick = max(len(lat) / (seconds * rate), 0.05)
        self.load.off()
        return np.array(lat[:n])

    def compare(self, rate: float, index: int = 0, of: int = 1) -> dict:
        """Fixed full, fixed smallest and elastic under the load schedule, interleaved over
        repeats; the figures and the merged records."""
        a = self.args
        modes = ("full", "smallest", "elastic")
        segment = self.seconds / a.repeats
        parts: dict[str, list] = {m: [] for m in modes}
        desc = "elastic budget" + (f" {index + 1}/{of}" if of > 1 else "")
        with tqdm(total=int(3 * self.seconds), desc=desc, unit="s", file=sys.stderr) as bar:
            # Interleaved: each repeat runs the whole load schedule once per mode, the order of
            # the modes rotated from one repeat to the next, so a change in the background load
            # of a shared machine (or a place in the sequence) hits the three alike.
            for rep in range(a.repeats):
                for mode in modes[rep % 3:] + modes[:rep % 3]:
                    bar.set_postfix_str(f"{mode} {rep + 1}/{a.repeats}")
                    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    parts[mode].append(self._run(mode, rate, segment, bar,
                                                 seed0=200_000 + 100_000 * index + 1000 * rep))
                    parts[mode][-1]["page_faults"] = (
                        resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
        runs = {m: merge(parts[m], segment) for m in modes}
        return {"runs": runs, "figures": figures(runs, parts, self, rate)}


def figures(runs: dict, parts: dict, bench: Bench, rate: float) -> dict:
    """The flat JSON figures of one comparison."""
    a, table = bench.args, bench.table

    def misses(res):
        return int(sum(m for *_, m in res["infer"])), len(res["infer"])

    def rate_of(k, n):
        return k / n if n else float("nan")

    react = reaction(runs["elastic"], {n: table[n].get("params", table[n]["p50_ms"]) for n in table})
    deadline_ms = (1.0 / rate - a.margin_ms * 1e-3) * 1e3
    out: dict = {}
    for mode, label in (("elastic", "elastic"), ("full", "fixed_full"), ("smallest", "fixed_smallest")):
        k, n = misses(runs[mode])
        out[f"{label}_miss_rate"] = rate_of(k, n)
        out[f"{label}_miss_ci95"] = list(success_interval(k, n))
        wins, eps = runs[mode]["successes"], runs[mode]["episodes"]
        out[f"{label}_success"] = rate_of(wins, eps)
        out[f"{label}_success_ci95"] = list(success_interval(wins, eps))
    out.update({
        "switches": len(runs["elastic"]["switch_log"]),
        "reaction_s": max(react) if react else float("nan"),
        "reaction_periods": max(react) * rate if react else float("nan"),
        "reaction_steps": len(react), "reaction_each_s": [round(x, 4) for x in react],
        "world": a.world, "rate_hz": rate, "deadline_ms": deadline_ms, "load": a.load,
        "burners": int(bench.load.level) if a.load == "burners" else 0,
        "quota_cpus": bench.load.level if a.load == "quota" else None,
        "quota_period_us": a.quota_period_us if a.load == "quota" else None,
        "rt_busy": bench.load.level if a.load == "rt" else None,
        "rt_period_ms": a.rt_period_ms if a.load == "rt" else None,
        "seconds_per_mode": bench.seconds, "repeats": a.repeats,
        "gpu_busy": bench.load.level if a.load == "gpu" else None,
        "gpu_period_ms": a.gpu_period_ms if a.load == "gpu" else None,
        "threads": bench.threads, "smallest": bench.smallest,
        "poll_rate_hz": a.poll_rate or POLLS_PER_PERIOD * rate, "idle_poll_s": a.idle_poll_s,
    })
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
    # What the decision loop read: its slowdown with the load off and on (a slowdown above 1
    # with the load off steps the loop down for nothing; docs/elastic.md)
    budget = runs["elastic"]["budget"]
    for state, key in ((False, "off"), (True, "on")):
        seen = [sd for t, sd in budget if _load_on(runs["elastic"], t) == state]
        out[f"elastic_slowdown_load_{key}_p50"] = float(np.percentile(seen, 50)) if seen else None
        out[f"elastic_slowdown_load_{key}_p90"] = float(np.percentile(seen, 90)) if seen else None
    el = runs["elastic"]["infer"]
    for name in table:
        mine = [x for x in el if x[1] == name]
        out[f"elastic_share_{name.replace('/', '_')}"] = len(mine) / len(el) if el else 0.0
        out[f"elastic_misses_{name.replace('/', '_')}"] = sum(x[3] for x in mine)
    out["met"] = bool(out["fixed_full_miss_rate"] >= 0.2 and out["elastic_miss_rate"] <= 0.01
                      and out["elastic_success"] >= out["fixed_smallest_success"]
                      and react and out["reaction_periods"] <= 2)
    return out


def check(bench: Bench, args, rates: list[float], calibrated) -> dict:
    """`--check`: for each control rate, calibrate there (no fallback) and, where a load level
    separates full and the smallest, run the comparison; a verdict per rate."""
    out: dict = {"check_rates_hz": rates, "device": device_key(args.device), "load": args.load,
                 "command": benchlib.command_line(__file__, None)}
    rows = []
    for rate in rates:
        tag = f"check_{rate:g}hz"
        cal = calibrated([rate])
        out.update({f"{tag}_{k}": v for k, v in cal.figures().items() if k != "calibration_probes"})
        if not cal.separated:
            rows.append((f"{rate:g}", "-", "-", "-", "-", "-", "-", "cannot tell: " + cal.reason))
            continue
        bench.load.set_level(cal.level)
        bench.match_table()
        f = bench.compare(rate)["figures"]
        out.update({f"{tag}_{k}": f[k] for k in HEADLINE_KEYS})
        verdict = ("helps: elastic meets the targets" if f["met"] else
                   "elastic misses more than 1%" if f["elastic_miss_rate"] > 0.01 else
                   "does not meet every target")
        rows.append((f"{rate:g}", f"{cal.threads}", f"{cal.level:g}", f"{f['fixed_full_miss_rate']:.1%}",
                     f"{f['fixed_smallest_miss_rate']:.2%}", f"{f['elastic_miss_rate']:.2%}",
                     f"{f['elastic_success']:.0%} vs {f['fixed_smallest_success']:.0%}", verdict))
    benchlib.print_table(f"does elastic switching help here? ({out['device']}, {args.load} load)",
                         ("rate Hz", "threads", bench.load.level_name, "fixed full missed", "fixed smallest missed",
                          "elastic missed", "success elastic vs smallest", "verdict"), rows, width=160)
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
    if out.get("load") == "gpu":
        return f"GPU hog {out['gpu_busy']:.0%} of every {out['gpu_period_ms']:g} ms"
    return f"{out['burners']} burners"


def print_switches(res: dict, table: dict) -> None:
    out = res["figures"]
    key = {n: n.replace("/", "_") for n in table}
    print("elastic: " + ", ".join(
        f"{n} {out['elastic_share_' + key[n]]:.0%} of inferences, "
        f"{out['elastic_misses_' + key[n]]} missed" for n in table))
    for t, name, why in res["runs"]["elastic"]["switch_log"]:
        print(f"  switch at {t:6.2f} s -> {name}: {why}")


def print_table(out: dict, title: str = "") -> None:
    names = {"full": "fixed full", "smallest": f"fixed {out['smallest']}", "elastic": "elastic"}
    rows = []
    for mode, label in names.items():
        miss = out["elastic_miss_rate" if mode == "elastic" else f"fixed_{mode}_miss_rate"]
        succ = out["elastic_success" if mode == "elastic" else f"fixed_{mode}_success"]
        rows.append((label, f"{miss:.2%}", f"{out[f'{mode}_miss_rate_under_load']:.2%}",
                     f"{out[f'{mode}_p50_ms']:.2f}", f"{out[f'{mode}_p99_ms']:.2f}",
                     f"{succ:.2f}", str(out[f"episodes_{mode}"])))
    benchlib.print_table(
        f"elastic budget{' ' + title if title else ''}: {out['rate_hz']:.0f} Hz, deadline {out['deadline_ms']:.2f} ms, "
        f"{_load_words(out)}, {out['seconds_per_mode']:.0f} s per mode",
        ("run", "miss rate", "miss rate under load", "p50 ms", "p99 ms", "success", "episodes"),
        rows,
        footer=f"switches {out['switches']} | reaction {out['reaction_s'] * 1e3:.1f} ms = "
               f"{out['reaction_periods']:.2f} control periods (max over {out['reaction_steps']} "
               "load steps)")


if __name__ == "__main__":
    main()
