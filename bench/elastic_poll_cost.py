#!/usr/bin/env python3
"""What the elastic decision loop costs in CPU time per poll, and so in share of a CPU quota.

The elastic loop polls its budget at the control rate so that it reacts to a load step
within two control periods. Under a tight CPU quota (a container's `--cpus`) that the loop
shares with the policy, every microsecond it spends counts against the policy's quota. This
bench measures, on this machine, with nothing else of ours running:

- ``loop``: the decision loop exactly as bench/elastic_budget.py runs it (CPU budget source,
  Selector with this device's latency table, ElasticControl; a process of its own, sleeping
  between polls), its CPU time per poll from that process's own CPU clock;
- ``read`` / ``decide``: the budget read (``CpuSource.read``) and the decision
  (``ElasticControl.poll`` less the read), each timed with the thread's CPU clock, once in a
  loop that sleeps a control period between calls (as polls run: on this VM a system call
  right after a sleep costs several times a warm one) and once back to back (``_warm``);
- ``read_without_cpu_time``: the same read without the per-CPU time (cgroup v1 cpuacct or
  /proc/stat) behind the hidden busy time. The three after a sleep (``read``, this one and
  the poll behind ``decide``) run in blocks of 50 calls taken in turn, so they are measured
  side by side.

The figures are for this machine only. It prints a table and writes JSON: <item>_us (CPU
microseconds per call, the mean), the loop's share of one CPU at the poll rate, and of a 0.2-
and a 0.25-CPU quota.

    python bench/elastic_poll_cost.py [--quick] [--rate 100] [--polls 1000] [--json PATH]
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embodied_stack.control.elastic.budget import CpuSource, cgroup_cpu_dirs
from embodied_stack.control.elastic.control import ElasticControl
from embodied_stack.control.elastic.latency_table import device_key
from embodied_stack.control.elastic.selector import Selector, SelectorConfig

import benchlib
from elastic_procs import ElasticPoller


def cpu_per_call(fns: dict, calls: int, period_s: float | None, bar, block: int = 50) -> dict:
    """Mean thread-CPU seconds per call of each of `fns`, `calls` each, sleeping `period_s`
    between calls (None: none), in blocks of `block` calls taken in turn (the order swapped
    every round), so that a change in the machine's speed hits them alike."""
    ts = {name: [] for name in fns}
    names = list(fns)
    for r in range(-(-calls // block)):
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(min(block, calls - r * block)):
                c0 = time.thread_time()
                fns[name]()
                ts[name].append(time.thread_time() - c0)
                if period_s:
                    time.sleep(period_s)
                bar.update(1)
    return {name: float(np.mean(v)) for name, v in ts.items()}


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="polls per second (default 100)")
    parser.add_argument("--polls", type=int, default=None,
                        help="polls per item (default 1000, --quick 200)")
    parser.add_argument("--table", default=str(benchlib.LATENCY_TABLE),
                        help="latency table (this machine's entry is required)")
    args = parser.parse_args(argv)
    args.polls = args.polls or (200 if args.quick else 1000)
    if args.rate <= 0 or args.polls < 10:
        sys.exit(f"error: --rate {args.rate} must be > 0 and --polls {args.polls} >= 10")
    key = device_key("cpu")
    table = benchlib.this_machines_table(args.table, key)
    period = 1.0 / args.rate

    config = SelectorConfig(rate_hz=args.rate, margin_s=0.4 * period)

    def control():
        ctl = ElasticControl(Selector(table, config, current="full"), CpuSource(threads=1))
        ctl.applied = "full"
        return ctl

    gc.collect()
    gc.freeze()
    out = {}
    n = args.polls
    bar = tqdm(total=5 * n, desc="poll cost", unit="call", file=sys.stderr)
    # 1. the loop as the elastic bench runs it, in its own process: its own CPU clock
    poller = ElasticPoller()
    try:
        poller.start(table, config, threads=1, period_s=period, idle_poll_s=period)
        for _ in range(n // 25):  # the bar moves every 25 periods; the loop polls meanwhile
            time.sleep(25 * period)
            bar.update(25)
        _, budget_log, cpu_s = poller.stop()
    finally:
        poller.close()
    out["loop_polls"] = len(budget_log)
    out["loop_us"] = cpu_s / max(1, len(budget_log)) * 1e6
    bar.update(n - bar.n)
    # 2. the parts, timed with the thread's CPU clock, sleeping between calls and not
    ctl = control()
    src = ctl.source
    dirs = cgroup_cpu_dirs(Path("/proc/self/cgroup").read_text())
    bare = CpuSource(threads=1, per_cpu_time=False)
    # after a sleep, interleaved: decide = poll - read is taken from one stretch of time
    timed = {**cpu_per_call({"read": src.read, "read_without_cpu_time": bare.read,
                             "poll": lambda: ctl.poll(time.perf_counter())}, n, period, bar),
             "read_warm": cpu_per_call({"read": src.read}, n, None, bar)["read"]}
    out.update({f"{name}_us": v * 1e6 for name, v in timed.items()})
    bar.close()
    src.close()
    bare.close()
    out["decide_us"] = out.pop("poll_us") - out["read_us"]
    share = out["loop_us"] * 1e-6 * args.rate
    out.update({
        "rate_hz": args.rate, "polls": n, "loop_cpu_share": share,
        "loop_share_of_quota_0_2": share / 0.2, "loop_share_of_quota_0_25": share / 0.25,
        "cgroup_folders": len(dirs), "device": key,
        "quick": args.quick, "command": benchlib.command_line(__file__, argv)})
    labels = (("loop", "loop, in its own process"), ("read", "read (after a sleep)"),
              ("read_without_cpu_time", "  without per-CPU time"), ("read_warm", "read (back to back)"),
              ("decide", "decide (after a sleep)"))
    benchlib.print_table(
        f"elastic decision loop at {args.rate:g} Hz on {key} ({len(dirs)} cgroup folder(s) on the path)",
        ("item", "CPU us per call"), [(label, f"{out[item + '_us']:.1f}") for item, label in labels],
        footer=f"loop: {share:.2%} of one CPU; {out['loop_share_of_quota_0_2']:.1%} of a 0.2-CPU "
               f"quota, {out['loop_share_of_quota_0_25']:.1%} of a 0.25-CPU quota")
    benchlib.write_json(args.json, out, digits=4)
    return out


if __name__ == "__main__":
    main()
