"""Latency and memory measurement of models: time a callable (``measure_latency``), its
percentiles, the CPU's name, this process's resident memory.

The latency table (``device_key``, ``read_latency_table``, ``write_latency_table``,
``monotonicity_violations``, ``measure_latency_table``, ``measure_policy_table``) moved to
``embodied_stack.control.elastic.latency_table``; importing those names from here still works
for one release, with a DeprecationWarning.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import numpy as np


def percentiles(samples_s, qs=(50, 95)) -> dict[str, float]:
    """p<q>_ms for each q, plus mean_ms, from samples in seconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    out = {f"p{q}_ms": float(np.percentile(a, q)) for q in qs}
    out["mean_ms"] = float(a.mean())
    return out


def measure_latency(fn: Callable[[], object], iters: int = 100, warmup: int = 10, sync: Callable | None = None,
                    pause_s: float = 0.0):
    """Run fn warmup + iters times; return the per-call wall times (s) of the timed calls.
    `pause_s`: sleep this long before each timed call (not timed), as a control loop that
    calls once per period leaves the runtime's threads asleep and its caches cold."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(iters):
        if pause_s > 0:
            time.sleep(pause_s)
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


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


#: Names that moved to embodied_stack.control.elastic.latency_table (served here for one release).
MOVED_TO_LATENCY_TABLE = ("device_key", "read_latency_table", "write_latency_table",
                          "monotonicity_violations", "measure_latency_table", "measure_policy_table")


def __getattr__(name: str):
    if name in MOVED_TO_LATENCY_TABLE:
        import warnings

        from embodied_stack.control.elastic import latency_table

        warnings.warn(f"embodied_stack.models.runtime.profiling.{name} moved to "
                      f"embodied_stack.control.elastic.latency_table.{name}; the old path goes in "
                      "the next release", DeprecationWarning, stacklevel=2)
        return getattr(latency_table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
