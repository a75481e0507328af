#!/usr/bin/env python3
"""The machine's own latency noise floor: the same work, repeated, in one quiet process.

The latency-tail targets (camera -> command p99 <= model p50 + 20 ms in
bench/graph_latency.py; <= 1% missed deadlines in bench/elastic_budget.py) assume a machine
on which identical work takes about the same time every time. This bench checks that
assumption before anyone tunes the stack against it. With nothing else of ours running, it
times, each as a control loop would (work, then sleep until the next period):

- ``fixed_work``: a fixed numpy computation (single-threaded 200x200 float32 matmuls, sized
  to about the model's latency), identical on every call;
- ``model_<submodel>``: the shipped policy's ``select_action`` on one fixed observation,
  through ONNX Runtime on the CPU as the policy node runs it (full and the smallest submodel);
- ``wakeup``: how late a ``time.sleep`` to the next 15 Hz period returns.

For each it reports p50, p99, max, the p99 - p50 gap, the share of calls slower than twice
the median, and the thread's CPU time over its wall time (1.0 = the thread was running the
whole time, i.e. the work itself got slower, not preempted by another thread of ours); plus
the CPU steal time over the run from /proc/stat (Linux; nan elsewhere). Garbage collection is
frozen and disabled while timing.

    python bench/machine_noise.py [--quick] [--calls 2000] [--json PATH]

JSON keys: <item>_{p50_ms,p99_ms,max_ms,p99_minus_p50_ms,share_over_2x_p50,cpu_over_wall},
model_<sub>_share_over_<deadline>ms (the elastic bench's 100 Hz deadline), steal_pct,
device, calls, command.
"""

from __future__ import annotations

import os

# Single-threaded numpy work: set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import gc  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import benchlib  # noqa: E402

PERIOD_S = 1.0 / 15.0  # the graph bench's control period
ELASTIC_DEADLINE_MS = 9.0  # bench/elastic_budget.py at 100 Hz: 10 ms - 1 ms margin


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat; None where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def fixed_work_fn(target_ms: float):
    """A numpy workload calibrated (median of 20) to about target_ms, identical per call."""
    a = np.random.default_rng(0).random((200, 200), dtype=np.float32)

    def one():
        return float((a @ a)[0, 0])

    t0 = time.perf_counter()
    for _ in range(20):
        one()
    reps = max(1, round(target_ms / ((time.perf_counter() - t0) / 20 * 1e3)))
    return lambda: [one() for _ in range(reps)]


def time_calls(fn, calls: int, desc: str, period_s: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Wall and thread-CPU ms of `calls` calls of fn, one per period (a warm-up 5% dropped)."""
    wall, cpu = [], []
    warm = max(1, calls // 20)
    for _ in tqdm(range(calls + warm), desc=desc, unit="call", leave=False,
                  mininterval=1.0):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        t1 = time.perf_counter()
        wall.append(t1 - t0)
        cpu.append(time.thread_time() - c0)
        time.sleep(max(0.0, period_s - (t1 - t0)))
    return np.array(wall[warm:]) * 1e3, np.array(cpu[warm:]) * 1e3


def wakeups(calls: int) -> np.ndarray:
    """Lateness (ms) of sleeping to each next 15 Hz period."""
    late, t = [], time.monotonic()
    for _ in tqdm(range(calls), desc="wakeup", unit="tick", leave=False, mininterval=1.0):
        t += PERIOD_S
        time.sleep(max(0.0, t - time.monotonic()))
        late.append(time.monotonic() - t)
    return np.array(late) * 1e3


def summary(wall: np.ndarray, cpu: np.ndarray | None = None) -> dict:
    p50 = float(np.percentile(wall, 50))
    out = {"p50_ms": p50, "p99_ms": float(np.percentile(wall, 99)), "max_ms": float(wall.max()),
           "share_over_2x_p50": float(np.mean(wall > 2 * p50))}
    out["p99_minus_p50_ms"] = out["p99_ms"] - p50
    if cpu is not None:
        out["cpu_over_wall"] = float(cpu.sum() / wall.sum())
    return out


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="400 calls per item (about 30 s)")
    parser.add_argument("--calls", type=int, default=None, help="calls per item (default 2000)")
    args = parser.parse_args(argv)
    calls = args.calls or (400 if args.quick else 2000)
    if calls < 100:
        parser.error(f"--calls {calls}: need at least 100 for a p99")

    from embodied_stack.control.elastic.latency_table import device_key
    from embodied_stack.models.elastic.submodels import NAMED_SUBMODELS
    from embodied_stack.models.policy import load_default_policy
    from embodied_stack.models.runtime import example_observation, make_runtime

    policy = load_default_policy(None)
    smallest = list(NAMED_SUBMODELS)[-1]
    policy.use_runtime(make_runtime("onnxruntime", policy, providers=["CPUExecutionProvider"],
                                    submodels=["full", smallest]))
    obs = example_observation(policy, "vehicle")
    policy.set_submodel("full")
    policy.select_action(obs)
    model_ms = float(np.median([policy.select_action(obs).latency_s for _ in range(50)])) * 1e3

    gc.collect()
    gc.freeze()
    gc.disable()
    steal0 = cpu_times()
    results: dict = {}
    rows = []
    try:
        items = [("fixed_work", fixed_work_fn(model_ms))]
        for sub in ("full", smallest):
            def run_model(sub=sub):
                if policy.submodel != sub:
                    policy.set_submodel(sub)
                policy.select_action(obs)
            items.append((f"model_{sub.replace('/', '_')}", run_model))
        for name, fn in tqdm(items, desc="machine noise", unit="item"):
            if name.startswith("model_"):  # switch once, outside the timed calls
                fn()
            wall, cpu = time_calls(fn, calls, name)
            s = summary(wall, cpu)
            if name.startswith("model_"):
                s[f"share_over_{ELASTIC_DEADLINE_MS:g}ms"] = float(np.mean(wall > ELASTIC_DEADLINE_MS))
            rows.append((name, s))
        rows.append(("wakeup", summary(wakeups(calls))))
    finally:
        gc.enable()
        gc.unfreeze()
    steal1 = cpu_times()
    for name, s in rows:
        for k, v in s.items():
            results[f"{name}_{k}"] = round(v, 4)
    steal = float("nan")
    if steal0 and steal1 and steal1[1] > steal0[1]:
        steal = 100.0 * (steal1[0] - steal0[0]) / (steal1[1] - steal0[1])
    results.update({"steal_pct": round(steal, 3), "device": device_key("cpu"), "calls": calls,
                    "command": benchlib.command_line(__file__, argv)})

    benchlib.print_table(
        f"Noise floor, one quiet process ({results['device']}; CPU steal {steal:.2f}%): identical "
        "work, timed per call",
        ("item", "p50 ms", "p99 ms", "max ms", "p99 - p50 ms", "> 2x p50", "cpu/wall"),
        [(name, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['max_ms']:.1f}",
          f"{s['p99_minus_p50_ms']:.1f}", f"{100 * s['share_over_2x_p50']:.1f}%",
          f"{s['cpu_over_wall']:.2f}" if "cpu_over_wall" in s else "-") for name, s in rows],
        width=100)
    return benchlib.write_json(args.json, results)


if __name__ == "__main__":
    main()
