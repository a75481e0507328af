"""The per-device latency table the elastic node reads: its file, its key, how it is measured,
and where the node finds one (the table file, then the cache, then a measurement made now).

Table file (JSON), keyed by a device string::

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
re-measured, and one that stays non-monotone is marked so. Timing one callable
(``measure_latency``, ``percentiles``) stays in models/runtime/profiling.py.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from embodied_stack.models.files import atomic_write_bytes, default_cache_dir
from embodied_stack.models.runtime.profiling import cpu_name, measure_latency, percentiles

# No torch at import: the elastic node reads tables and polls budgets in a small process;
# torch comes in only to measure a table or to name a CUDA device.


def device_key(device="cpu") -> str:
    """"cpu:<cpu model name> (<n> cpus)" or "cuda:<gpu name>" (the latency table's key) for a
    device name ("cpu", "cuda", "cuda:1") or a torch.device.
    The CPU count is part of the key: virtual machines often report a generic model name
    ("Intel(R) Xeon(R) Processor" on a 2-core and on a 16-core one alike), and a table measured
    on one must never be read on the other. n = the CPUs this process may run on."""
    if str(device).startswith("cuda"):
        import torch

        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return f"cpu:{cpu_name()} ({n} cpus)"


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
                          attempts: int = 3, progress: Callable[[str], None] | None = None,
                          pause_s: float = 0.0):
    """Time run(submodel) for every submodel in `order` (smallest first), interleaved; each
    timed call after a pause of `pause_s` (measure_latency).

    Returns ({submodel: {"p50_ms", "p95_ms", "p99_ms", "mean_ms", "samples", "attempts",
    "monotone"}}, violations of the last attempt). Re-measures up to `attempts` times while
    the table is not monotone."""
    order = list(order)
    for name in order:
        measure_latency(functools.partial(run, name), iters=0, warmup=warmup)
    for attempt in range(1, attempts + 1):  # noqa: B007  (the last value is recorded below)
        samples: dict[str, list[float]] = {n: [] for n in order}
        for r in range(rounds):
            k = r % len(order)
            for name in order[k:] + order[:k]:
                samples[name] += measure_latency(functools.partial(run, name), iters=iters, warmup=1,
                                                 pause_s=pause_s)
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


#: Seconds between two timed calls of the policy's latency table. A control loop calls the
#: policy once per chunk, never back to back: in between, the runtime's pool threads sleep
#: (ONNX Runtime's spinning is off) and its caches cool. On the 2-core AMD EPYC VM, 2 threads,
#: `1/4` took 1.18 ms back to back and 1.73 ms with these pauses, `full` 3.06 and 3.86 ms, in
#: the same rounds (bench/policy_latency.py: `ort_*` and `ort_paced_*` in
#: bench/results/policy_latency_amd_epyc.json): a table timed back to back understated each
#: submodel by about the same time, so the online correction learned on `1/4` (a ratio that
#: time makes large) overstated `full` and held the loop on `1/4` with nothing else running.
CONTROL_PAUSE_S = 0.005


def measure_policy_table(policy, runtime_description: str, rounds: int = 10, iters: int = 100,
                         attempts: int = 3, progress=None, embodiment: str | None = None,
                         pause_s: float = CONTROL_PAUSE_S):
    """A latency table for an ElasticVLA-like policy (select_action at batch 1 on a blank
    observation of `embodiment`, default the model's first) as it runs now, every submodel,
    smallest first by active parameters, each call `pause_s` after the one before (as in a
    control loop: CONTROL_PAUSE_S). Returns (entries, violations); entries also carry
    weight_mb, params, runtime and pause_ms. The embodiment matters: one that does not use the
    target keypoint runs a cheaper graph (ElasticVLA.uses_keypoint)."""
    from embodied_stack.models.runtime import example_observation

    obs = example_observation(policy, embodiment)
    before = policy.submodel
    sizes = {}
    for name in policy.submodel_names:
        policy.set_submodel(name)
        sizes[name] = policy.active_parameter_count()
    order = sorted(sizes, key=lambda name: sizes[name])

    def run(name):
        if policy.submodel != name:
            policy.set_submodel(name)
        policy.select_action(obs)

    try:
        entries, bad = measure_latency_table(run, order, rounds, iters, attempts=attempts,
                                             progress=progress, pause_s=pause_s)
    finally:
        policy.set_submodel(before)
    for name, e in entries.items():
        e.update(params=sizes[name], weight_mb=sizes[name] * 4 / 2**20,
                 runtime=runtime_description, pause_ms=pause_s * 1e3,
                 measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return entries, bad


# --- where the elastic node finds its table ------------------------------------------------

def default_table_path() -> Path:
    """The shipped table: config/latency_tables.json of the source tree."""
    return Path(__file__).resolve().parents[2] / "config" / "latency_tables.json"


def runtime_matches(entries: dict, runtime: str) -> bool:
    """Whether a table's entries were measured with the runtime the policy uses."""
    want = "onnxruntime" if runtime in ("onnxruntime", "ort") else runtime
    return all(str(e.get("runtime", "")).startswith(want) for e in entries.values())


def load_table(path: str, device: str, runtime: str, measure: bool, model_path: str,
               log) -> tuple[dict, str]:
    """(entries, where they came from) for `device` + `runtime`: the table file, then the
    cache, then (when `measure`) a measurement made now and cached."""
    key = device_key(device)
    cache = default_cache_dir() / "latency_tables.json"
    tried = []
    for candidate in (Path(path) if path else default_table_path(), cache):
        try:
            entries = read_latency_table(candidate, key)
        except FileNotFoundError:
            tried.append(f"{candidate}: no file")
            continue
        except KeyError:
            tried.append(f"{candidate}: no entry for {key!r}")
            continue
        if not runtime_matches(entries, runtime):
            tried.append(f"{candidate}: {key!r} measured with another runtime")
            continue
        return entries, f"{candidate} [{key}]"
    if not measure:
        raise ValueError(f"no latency table for {key!r} with runtime {runtime!r} "
                         f"({'; '.join(tried)}); measure it (bench/policy_latency.py --table) "
                         f"or set measure_if_missing:=true")
    from embodied_stack.models.policy.backends import load_backend

    log(f"no latency table for {key!r} ({'; '.join(tried)}): measuring it now")
    policy = load_backend("vla", model_path, device, runtime)
    entries, bad = measure_policy_table(policy, policy.runtime_description, rounds=5, iters=100)
    if bad:
        log(f"latency table still not monotone after re-measuring: {bad}")
    write_latency_table(cache, key, entries)
    return entries, f"measured now, cached in {cache} [{key}]"
