#!/usr/bin/env python3
"""Resident memory of each node of the simulation graph, each in its own process.

The sim bridge (Driving world), the policy node (vla backend, ONNX Runtime, as launched), the
elastic node and the perception node are started as `sim.launch.py` starts them, one process
each, over DDS on this host. Once every node is up (seen in the ROS graph) and the graph has run
for a while, each process's resident memory (VmRSS) and its peak (VmHWM) are read from
/proc/<pid>/status. A node that loads what it does not need (the elastic node once imported
torch to read a latency table) shows here.

    python bench/node_footprint.py [--quick] [--json PATH] [--settle 10]

JSON keys: `<node>_rss_mb`, `<node>_peak_mb` (node: policy_node, elastic_node,
perception_node, sim_bridge), `settle_s`, `command`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tqdm import tqdm

from embodied_stack.nodes.demo import configure_dds_environment

import benchlib

NODES = {
    "sim_bridge": ("embodied_stack.nodes.sim_bridge_node", ["world:=driving", "episodes:=0"]),
    "policy_node": ("embodied_stack.nodes.policy_node", ["embodiment:=vehicle"]),
    "elastic_node": ("embodied_stack.nodes.elastic_node", []),
    "perception_node": ("embodied_stack.nodes.perception_node", []),
}


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def wait_for_nodes(names, timeout_s: float) -> set[str]:
    """Node names seen in the ROS graph within `timeout_s` (from a listener of our own)."""
    import rclpy

    rclpy.init()
    listener = rclpy.create_node("footprint_listener")
    seen: set[str] = set()
    end = time.monotonic() + timeout_s
    try:
        while time.monotonic() < end and not set(names) <= seen:
            rclpy.spin_once(listener, timeout_sec=0.2)
            seen = set(listener.get_node_names())
    finally:
        listener.destroy_node()
        rclpy.shutdown()
    return seen


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="settle 3 s instead of 10 (< 60 s here), same code path")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds the graph runs before memory is read (default 10, --quick 3)")
    args = parser.parse_args(argv)
    settle = args.settle if args.settle is not None else (3.0 if args.quick else 10.0)
    configure_dds_environment()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, (module, params) in NODES.items():
            ros_args = [a for p in params for a in ("-p", p)]
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", module, "--ros-args", *ros_args],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        with tqdm(total=2, desc="node footprint", unit="step", file=sys.stderr) as bar:
            seen = wait_for_nodes(NODES, timeout_s=120)
            missing = [n for n in NODES if n not in seen]
            dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if missing or dead:
                errors = {n: procs[n].stderr.read()[-800:] for n in dead}
                sys.exit(f"error: nodes not up: {missing}; exited: {dead}\n{errors}")
            bar.update(1)
            time.sleep(settle)  # the graph runs: frames flow, the elastic node polls
            bar.update(1)
        out: dict[str, object] = {"settle_s": settle}
        for name, proc in procs.items():
            mem = status_mb(proc.pid)
            out[f"{name}_rss_mb"] = round(mem["VmRSS"], 1)
            out[f"{name}_peak_mb"] = round(mem["VmHWM"], 1)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    benchlib.print_table(f"resident memory after start-up and {settle:g} s of the graph",
                         ("node", "RSS MB", "peak MB"),
                         [(n, f"{out[f'{n}_rss_mb']:.1f}", f"{out[f'{n}_peak_mb']:.1f}") for n in NODES],
                         width=80)
    return benchlib.write_json(args.json, out, __file__, argv)


if __name__ == "__main__":
    main()
