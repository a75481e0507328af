"""Latency and memory measurement, and the per-device latency table the elastic node reads.

Latency table file (JSON), keyed by a device string::

    {
      "cpu:AMD EPYC": {
        "full": {"p50_ms": 3.1, "p95_ms": 3.9, "weight_mb": 3.9, "params": 1028864, "runtime": "torch"},
        "1/2":  {...}, ...
      },
      "cuda:NVIDIA H200": {...}
    }

``write_latency_table`` merges one device's entry into the file (other devices are kept) and
writes atomically; ``read_latency_table`` returns one device's entry.
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
    """"cpu:<cpu model name>" or "cuda:<gpu name>" (the latency table's key)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{cpu_name()}"


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
    """One device's {submodel: entry}; device None = this machine's CPU key, else the only entry."""
    table = json.loads(Path(path).read_text())
    if device is None:
        device = device_key("cpu")
        if device not in table and len(table) == 1:
            device = next(iter(table))
    if device not in table:
        raise KeyError(f"{path}: no latency entry for {device!r}; devices: {sorted(table)}")
    return table[device]
