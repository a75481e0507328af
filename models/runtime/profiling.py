"""Latency and memory measurement, and the per-device latency table the elastic node reads.

Latency table file (JSON), keyed by a device string::

    {
      "cpu:AMD EPYC 7763 (8 cpus)": {
        "full": {"p50_ms": 3.1, "p95_ms": 3.9, "weight_mb": 3.9, "params": 1028864, "runtime": "torch"},
        "1/2":  {...}, ...
      },
      "cuda:NVIDIA H200": {...}
    }

``write_latency_table`` merges one device's entry into the file (other devices are kept) and
writes atomically; ``read_latency_table`` returns one device's entry, and never another
device's: a missing device is a KeyError (measure it: ``measure_policy_table``).

``measure_latency_table`` makes the numbers trustworthy on a machine that is not idle: the
submodels are timed interleaved (round robin, the order rotated each round, so a burst of
background load hits them alike), in several rounds, with p50/p95/p99 over all rounds; a table
that is not monotone (a smaller submodel slower than a larger one beyond a tolerance) is
re-measured, and one that stays non-monotone is marked so.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import atomic_write_bytes


def percentiles(samples_s, qs=(50, 95)) -> dict[str, float]:
    """p<q>_ms for each q, plus mean_ms, from samples in seconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    out = {f"p{q}_ms": float(np.percentile(a, q)) for q in qs}
    out["mean_ms"] = float(a.mean())
    return out


def measure_latency(fn: Callable[[], object], iters: int = 100, warmup: int = 10, sync: Callable | None = None):
    """Run fn warmup + iters times; return the per-call wall times (s) of the timed calls."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_key(device: str | torch.device = "cpu") -> str:
    """"cpu:<cpu model name> (<n> cpus)" or "cuda:<gpu name>" (the latency table's key).
    The CPU count is part of the key: virtual machines often report a generic model name
    ("Intel(R) Xeon(R) Processor" on a 2-core and on a 16-core one alike), and a table measured
    on one must never be read on the other. n = the CPUs this process may run on."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return f"cpu:{cpu_name()} ({n} cpus)"


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def write_latency_table(path: str | os.PathLike, device: str, entries: dict[str, dict]) -> Path:
    """Merge `entries` ({submodel: {"p50_ms", "p95_ms", "weight_mb", ...}}) as `device`."""
    path = Path(path)
    table = {}
    if path.is_file():
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError:
            table = {}
    for name, e in entries.items():
        for k in ("p50_ms", "p95_ms", "weight_mb"):
            if not isinstance(e.get(k), (int, float)):
                raise ValueError(f"latency table entry {name!r} needs a number {k!r}, got {e.get(k)!r}")
    table[device] = entries
    return atomic_write_bytes(path, (json.dumps(table, indent=2, sort_keys=True) + "\n").encode())


def read_latency_table(path: str | os.PathLike, device: str | None = None) -> dict[str, dict]:
    """One device's {submodel: entry}; device None = this machine's CPU key. Another device's
    entry is never used in its place (latencies do not carry over between devices)."""
    table = json.loads(Path(path).read_text())
    if device is None:
        device = device_key("cpu")
    if device not in table:
        raise KeyError(f"{path}: no latency entry for {device!r}; devices: {sorted(table)}")
    return table[device]


def monotonicity_violations(entries: dict[str, dict], order, tolerance: float = 0.05,
                            keys=("p50_ms", "p99_ms")) -> list[str]:
    """Where a smaller submodel (earlier in `order`, smallest first) is slower than a larger
    one by more than `tolerance` (relative), for each of `keys` present: readable lines."""
    bad = []
    for key in keys:
        for small, large in zip(order, order[1:]):
            a, b = entries[small].get(key), entries[large].get(key)
            if a is not None and b is not None and a > b * (1 + tolerance):
                bad.append(f"{key}: {small} {a:.3f} ms > {large} {b:.3f} ms")
    return bad


def measure_latency_table(run: Callable[[str], object], order, rounds: int = 10,
                          iters: int = 100, warmup: int = 20, tolerance: float = 0.05,
                          attempts: int = 3, progress: Callable[[str], None] | None = None):
    """Time run(submodel) for every submodel in `order` (smallest first), interleaved.

    Returns ({submodel: {"p50_ms", "p95_ms", "p99_ms", "mean_ms", "samples", "attempts",
    "monotone"}}, violations of the last attempt). Re-measures up to `attempts` times while
    the table is not monotone."""
    order = list(order)
    for name in order:
        measure_latency(lambda n=name: run(n), iters=0, warmup=warmup)
    for attempt in range(1, attempts + 1):  # noqa: B007  (the last value is recorded below)
        samples = {n: [] for n in order}
        for r in range(rounds):
            k = r % len(order)
            for name in order[k:] + order[:k]:
                samples[name] += measure_latency(lambda n=name: run(n), iters=iters, warmup=1)
                if progress:
                    progress(name)
        entries = {n: {**percentiles(samples[n], (50, 95, 99)), "samples": len(samples[n])}
                   for n in order}
        bad = monotonicity_violations(entries, order, tolerance)
        if not bad:
            break
    for e in entries.values():
        e.update(attempts=attempt, monotone=not bad)
    return entries, bad


def measure_policy_table(policy, runtime_description: str, rounds: int = 10, iters: int = 100,
                         attempts: int = 3, progress=None):
    """A latency table for an ElasticVLA-like policy (select_action at batch 1 on a blank
    observation) as it runs now, every submodel, smallest first by active parameters.
    Returns (entries, violations); entries also carry weight_mb, params and runtime."""
    from . import example_observation

    obs = example_observation(policy)
    before = policy.submodel
    sizes = {}
    for name in policy.submodel_names:
        policy.set_submodel(name)
        sizes[name] = policy.active_parameter_count()
    order = sorted(sizes, key=sizes.get)

    def run(name):
        if policy.submodel != name:
            policy.set_submodel(name)
        policy.select_action(obs)

    try:
        entries, bad = measure_latency_table(run, order, rounds, iters, attempts=attempts,
                                             progress=progress)
    finally:
        policy.set_submodel(before)
    for name, e in entries.items():
        e.update(params=sizes[name], weight_mb=sizes[name] * 4 / 2**20,
                 runtime=runtime_description,
                 measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return entries, bad
