#!/usr/bin/env python3
"""The elastic node's budget sources read live, against loads we know: each source the
machine has (NVML, torch.cuda, CPU; the automatic choice too) is read while idle, while
another process holds a known amount of GPU memory, while another process keeps the GPU busy
with matrix products, and while CPU burners run. A source passes when it sees each load it can
see: the memory hog's size in free memory (within 10% plus the hog's CUDA context), the GPU's
utilisation near 100% under the compute hog, a CPU slowdown above 1.5 with two burners per core.

    python bench/budget_sources_live.py --json bench/results/budget_sources_live_h100.json

Needs a CUDA GPU for the GPU sources (without one they are reported as not available and only
the CPU source is checked). JSON keys: auto_source, auto_notes, <source>_available,
<source>_idle_free_mb, <source>_hog_free_mb, <source>_hog_drop_mb, nvml_util_idle,
nvml_util_busy, nvml_sm_mhz_busy, nvml_throttle_busy, cpu_slowdown_idle, cpu_slowdown_burners,
hog_mb, checks (name -> passed), device, command.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from embodied_stack.control.elastic.budget import BudgetSourceError, make_budget_source
from embodied_stack.models.runtime.profiling import cpu_name

import benchlib
from cpu_loads import Burners

CONTEXT_MB = 1024  # a CUDA context and allocator slack the hog adds beyond its tensor


def _gpu_hog(kind: str, mb: int, ready, stop) -> None:
    """Another process: hold `mb` of GPU memory, or keep the GPU busy, until `stop`."""
    import torch

    if kind == "memory":
        held = torch.empty(mb * 2**20, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        ready.set()
        stop.wait()
        del held
        return
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ready.set()
    while not stop.is_set():
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()


class GpuHog:
    def __init__(self, kind: str, mb: int = 0):
        ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        self.ready, self.stop = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=_gpu_hog, args=(kind, mb, self.ready, self.stop),
                                daemon=True)

    def __enter__(self):
        self.proc.start()
        if not self.ready.wait(120):
            raise RuntimeError("the GPU hog did not start within 120 s")
        time.sleep(1.0)  # utilisation is averaged over the last sample period
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()


def reads(source, n: int = 3, gap: float = 0.3):
    out = []
    for _ in range(n):
        out.append(source.read())
        time.sleep(gap)
    return out


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick=None)
    parser.add_argument("--hog-mb", type=int, default=8192, help="GPU memory hog (default 8192)")
    args = parser.parse_args(argv)
    res: dict = {"hog_mb": args.hog_mb, "cpu": cpu_name(), "checks": {}}
    try:
        import torch

        has_cuda = torch.cuda.is_available()
        res["device"] = torch.cuda.get_device_name() if has_cuda else "cpu"
    except ImportError:
        has_cuda, res["device"] = False, "cpu"
    auto, notes = make_budget_source("auto", "cuda" if has_cuda else "cpu")
    res["auto_source"], res["auto_notes"] = auto.description, notes
    print(f"automatic choice: {auto.description}" + (f" ({'; '.join(notes)})" if notes else ""))
    auto.close()

    gpu_sources = {}
    for kind in ("nvml", "torch.cuda"):
        try:
            gpu_sources[kind] = make_budget_source(kind, "cuda")[0]
            res[f"{kind}_available"] = True
        except BudgetSourceError as exc:
            res[f"{kind}_available"] = False
            res[f"{kind}_error"] = str(exc)
            print(f"{kind}: not available ({exc})")
    for kind, src in gpu_sources.items():
        idle = reads(src)
        res[f"{kind}_idle_free_mb"] = round(min(b.free_mem_mb for b in idle), 1)
        if kind == "nvml":
            res["nvml_util_idle"] = idle[-1].detail.get("util_gpu")
            res["nvml_idle"] = idle[-1].describe() + f" {idle[-1].detail}"
    if gpu_sources:
        with GpuHog("memory", args.hog_mb):
            for kind, src in gpu_sources.items():
                hog = reads(src)
                free = max(b.free_mem_mb for b in hog)
                drop = res[f"{kind}_idle_free_mb"] - free
                res[f"{kind}_hog_free_mb"] = round(free, 1)
                res[f"{kind}_hog_drop_mb"] = round(drop, 1)
                res["checks"][f"{kind}_sees_memory_hog"] = bool(
                    0.9 * args.hog_mb <= drop <= 1.1 * args.hog_mb + CONTEXT_MB)
        if "nvml" in gpu_sources:
            with GpuHog("compute"):
                busy = reads(gpu_sources["nvml"], n=5)
            res["nvml_util_busy"] = max(b.detail.get("util_gpu") or 0 for b in busy)
            res["nvml_sm_mhz_busy"] = busy[-1].detail.get("sm_mhz")
            res["nvml_throttle_busy"] = busy[-1].detail.get("throttle")
            res["nvml_slowdown_busy"] = busy[-1].slowdown
            res["checks"]["nvml_sees_compute_hog"] = res["nvml_util_busy"] >= 90
        for src in gpu_sources.values():
            src.close()

    cpu, _ = make_budget_source("cpu", "cpu", threads=2)
    res["cpu_slowdown_idle"] = round(max(b.slowdown for b in reads(cpu, n=4)), 3)
    cores = os.cpu_count() or 1
    load = Burners(2 * cores)
    try:
        load.on()
        time.sleep(1.0)
        res["cpu_slowdown_burners"] = round(reads(cpu, n=4)[-1].slowdown, 3)  # window filled
    finally:
        load.close()
    res["cpu_burners"] = 2 * cores
    res["checks"]["cpu_sees_burners"] = res["cpu_slowdown_burners"] >= 1.5
    cpu.close()
    res["command"] = benchlib.command_line(__file__, argv)

    benchlib.print_table(f"Budget sources read live ({res['device']}, {res['cpu']})", ("figure", "value"),
                         [(k, v) for k, v in res.items() if k not in ("checks", "command")], left=2)
    benchlib.print_table("Checks (each source sees each load it can)", ("check", "result"),
                         [(name, "PASS" if ok else "FAIL") for name, ok in res["checks"].items()])
    benchlib.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
