#!/usr/bin/env python3
"""Renders every results table in the docs from the JSON files it is measured in.

A table lives in README.md, docs/*.md or the model card between two markers:

    <!-- table: NAME -->
    ... (written by this script; do not edit by hand)
    <!-- /table -->

and its spec (which file, which keys, column titles, formats) is ``TABLES[NAME]`` below.

    python bench/doc_tables.py            # rewrite every block in place
    python bench/doc_tables.py --check    # exit 1 naming each block that differs from its JSON

A cell is a template: ``<var>`` is replaced by the row's variables first (``<file>``, the
cited path; ``<machine>``, the machine kind the file was measured on; ``<met>``, yes/no from
the row's target check; and the row's own), then ``{key:format}`` by the file's figures
(``str.format``, plus the formats ``ci`` / ``ci.1``: a [low, high] interval in percent, and
``yn``: yes/no). ``{a[b]}`` reads nested values. A key that is missing is an error.

tests/test_doc_tables.py runs the check, and also checks that every file in bench/results/
is cited by README.md, docs/*.md or the model card, and that every bench/results/ path they
cite exists (``git show REV:bench/results/...`` cites history and is not checked).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import re
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = "bench/results"
MODEL_EVAL = "models/default_vla/eval.json"
MODEL_CARD = "models/default_vla/README.md"
#: The MT10 run quoted in the headline and in docs/benchmarks.md (bench/metaworld_mt10.py).
METAWORLD_MT10 = "metaworld_mt10_bc_amd_epyc.json"
#: The markdown files that hold tables and cite results.
DOC_GLOBS = ("README.md", "docs/*.md")
MARKER = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
#: A cited results path; not one after ``git show REV:`` (that cites the history).
CITED = re.compile(r"(?<![:\w/])bench/results/[\w.*/-]*")

# --- machines --------------------------------------------------------------------------------

XEON = "noisy 2-core Xeon VM"
EPYC = "quiet 2-core AMD EPYC VM"
H100 = "H100 machine, 16 CPU cores"
ANY = "any (seeded, not timed)"
#: Files whose figures do not depend on the machine (seeded evaluations, not timed).
NOT_TIMED = ("push_failures", "driving_failures", "eval_default_test_block", "rl_vs_bc_dagger_test_block",
             "recipe_vs_previous_test_block", "eval", "robustness", "robustness_vs_previous",
             "recipe_run1_validation", "recipe_run2_validation", "recipe_seed1_test_block")
#: The model the benches below ran on before the recipe's model replaced it.
PREVIOUS_DEFAULT = "The previous default model (`models/default_vla` at commit 66232ac)"
#: Files named for what they hold rather than their machine: the machine of their timed part
#: (execution, execution_graph: the decode cost; their success figures are seeded, not timed;
#: ros_graph_success_test_seeds: realtime episodes keep the wall clock's pace).
NAMED_MACHINE = {"execution": "2-core AMD EPYC VM", "execution_graph": "2-core AMD EPYC VM",
                 "ros_graph_success_test_seeds": EPYC}


#: Prefixes of more files that are seeded and not timed (the scripted experts).
NOT_TIMED_PREFIXES = ("metaworld_expert", "expert_delay")


def machine(file: str) -> str:
    """The machine kind a results file was measured on, from its name: ``_amd_epyc`` the
    quiet 2-core AMD EPYC VM, ``_h100`` the lent H100 machine, none the noisy 2-core Xeon VM."""
    stem = Path(file).stem
    if stem in NOT_TIMED or stem.startswith(NOT_TIMED_PREFIXES):
        return ANY
    if stem in NAMED_MACHINE:
        return NAMED_MACHINE[stem]
    if stem.endswith("_amd_epyc"):
        return EPYC
    if "_h100" in stem:
        return H100
    return XEON


# --- specs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One table row from one JSON file (repo-relative, or a name under bench/results/);
    `vars` fill the cells' <var> placeholders; `met` checks the row's target."""

    file: str
    vars: dict = field(default_factory=dict)
    met: Callable[[dict], bool] | None = None

    @property
    def path(self) -> str:
        return self.file if "/" in self.file else f"{RESULTS}/{self.file}"


@dataclass(frozen=True)
class Table:
    """Column titles, one cell template per column, the rows; `derive(figures)` adds computed
    figures to a file's before the cells are filled; `note` is printed under the table."""

    columns: tuple[str, ...]
    cells: tuple[str, ...]
    rows: tuple[Row, ...]
    derive: Callable[[dict], dict] | None = None
    note: str = ""


def wilson(p: float | None, n: int) -> str:
    """`p` of `n` with its Wilson 95% interval, e.g. "64% of 315 [59, 70]"."""
    if p is None or not n:
        return "-"
    z, k = 1.959964, round(p * n)
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return f"{p:.0%} of {n:,} [{100 * (centre - half):.0f}, {100 * (centre + half):.0f}]"


def elastic_derive(d: dict) -> dict:
    load = d.get("load", "burners")
    if load == "rt":
        words = f"real-time burners {d['rt_busy']:.0%} of every {d['rt_period_ms']:g} ms"
    elif load == "quota":
        words = f"CPU quota {d['quota_cpus']:g} CPUs (period {d['quota_period_us'] / 1000:g} ms)"
    else:
        words = f"{d['burners']} burners"
    out = {"load_words": words + (", `--quick`" if d.get("quick") else "")}
    for mode in ("full", "smallest", "elastic"):
        rate = d["elastic_success" if mode == "elastic" else f"fixed_{mode}_success"]
        out[f"success_{mode}"] = wilson(rate, d[f"episodes_{mode}"])
    out["reaction"] = ("no load step needed a switch" if d.get("reaction_periods") is None else
                       f"{d['reaction_s'] * 1e3:.1f} ms = {d['reaction_periods']:.2f} periods "
                       f"({d['reaction_steps']} steps)")
    return out


def elastic_runs_derive(d: dict) -> dict:
    """elastic_derive's words and, for a run's figures (prefix "" or "run<k>_"), each cell as text;
    a file whose calibration found no level has "-" and the calibration's reason instead."""

    def ci(v, digits=1):
        return f"[{100 * v[0]:.{digits}f}%, {100 * v[1]:.{digits}f}%]"

    out: dict = {}
    if d.get("calibration_separated") is False:
        why = d["calibration_reason"].removeprefix("no load level separates full and the smallest submodel: ")
        return {"calibration_words": f"none found in {d['calibration_seconds']:.0f} s: {why}",
                **{f"{k}_text": "-" for k in ("full", "small", "elastic", "success", "reaction")},
                "met_text": "no"}
    out.update(elastic_derive(d))
    out["calibration_words"] = (f"{d['calibration_rate_hz']:g} Hz, {d['calibration_threads']}, "
                                f"{out['load_words']}")
    for p in ("", *(f"run{k}_" for k in range(1, d.get("runs", 0) + 1))):
        if f"{p}elastic_miss_rate" not in d:
            continue
        out[f"{p}full_text"] = f"{d[f'{p}fixed_full_miss_rate']:.1%}"
        out[f"{p}small_text"] = f"{d[f'{p}fixed_smallest_miss_rate']:.2%} {ci(d[f'{p}fixed_smallest_miss_ci95'])}"
        out[f"{p}elastic_text"] = f"{d[f'{p}elastic_miss_rate']:.2%} {ci(d[f'{p}elastic_miss_ci95'])}"
        small, el = (f"{d[f'{p}{k}_success']:.0%} {ci(d[f'{p}{k}_success_ci95'], 0)}"
                     for k in ("fixed_smallest", "elastic"))
        out[f"{p}success_text"] = f"{small} / {el}"
        react = d.get(f"{p}reaction_periods")
        out[f"{p}reaction_text"] = "no step needed a switch" if react is None else f"{react:.2f} periods"
        out[f"{p}met_text"] = "yes" if d[f"{p}met"] else "no"
    return out


def graph_derive(d: dict) -> dict:
    return {f"run{k}_over_model_ms": d[f"15hz_64x64_procs_run{k}_p99_ms"] - d[f"15hz_64x64_procs_run{k}_model_p50_ms"]
            for k in (1, 2, 3) if f"15hz_64x64_procs_run{k}_p99_ms" in d}


def checks_derive(d: dict) -> dict:
    checks = d.get("checks", {})
    return {"checks_passed": sum(bool(v) for v in checks.values()), "checks_total": len(checks),
            "checks_words": ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in checks.items())}


#: The elastic headline: three runs after one calibration (bench/elastic_budget.py --headline 3).
ELASTIC_HEADLINE = "elastic_budget_headline_amd_epyc.json"
#: Three `--quick` runs in a row, each with its own calibration.
ELASTIC_QUICK = tuple(f"elastic_budget_quick{k}_amd_epyc.json" for k in (1, 2, 3))


def elastic_headline_derive(d: dict) -> dict:
    """The worst of a --headline file's runs, and elastic_derive's load words."""
    runs = range(1, d["runs"] + 1)
    return {**elastic_derive(d),
            "worst_elastic_miss": max(d[f"run{k}_elastic_miss_rate"] for k in runs),
            "least_full_miss": min(d[f"run{k}_fixed_full_miss_rate"] for k in runs),
            "worst_reaction": max(d[f"run{k}_reaction_periods"] or math.inf for k in runs),
            "success_ok": sum(d[f"run{k}_elastic_success"] >= d[f"run{k}_fixed_smallest_success"] for k in runs)}


EXECUTION = "execution.json"
EXECUTION_GRAPH_FILE = "execution_graph.json"  # bench/execution.py --graph-only
EXECUTION_STRATEGIES = ("replace", "early", "ensemble", "delay_aware", "auto", "auto+limiter", "auto+blend")
EXECUTION_LATENCIES = (("0 ms", "0ms"), ("100 ms", "100ms"), ("200 ms", "200ms"), ("400 ms", "400ms"),
                       ("log-normal", "lognormal"))


def execution_derive(d: dict) -> dict:
    """The boundary jerk ratios' intervals as text (they are ratios, not shares)."""
    return {k + "_text": f"[{v[0]:.2f}, {v[1]:.2f}]" if isinstance(v, list) else ""
            for k, v in d.items() if k.endswith("boundary_ratio_ci95")}


def _execution_met(d: dict) -> bool:
    """At 200 ms the default keeps success within 5 points of 0 ms in both worlds (the paired
    difference's 95% interval not below -5 points) where replace loses more."""
    return all(d[f"test_{w}_auto_200ms_diff_vs_0ms_ci95"][0] >= -0.05
               and d[f"test_{w}_replace_200ms_diff_vs_0ms"] <= d[f"test_{w}_auto_200ms_diff_vs_0ms"]
               for w in ("tabletop", "driving"))


def headline(what: str, file: str, figure: str, target: str, met: Callable[[dict], bool]) -> Row:
    return Row(file, {"what": what, "figure": figure, "target": target}, met)


HEADLINE = Table(
    ("what", "figure", "target", "met", "machine", "file"),
    ("<what>", "<figure>", "<target>", "<met>", "<machine>", "<file>"),
    (
        headline("simulation throughput, 64x64 RGB-D, one core", "sim_throughput.json",
                 "tabletop {tabletop_steps_per_s:,.0f}, driving {driving_steps_per_s:,.0f} env steps/s",
                 "≥ 1,000 env steps/s", lambda d: min(d["tabletop_steps_per_s"], d["driving_steps_per_s"]) >= 1000),
        headline("own VLA `select_action`, full, ONNX Runtime on the CPU", "policy_latency_amd_epyc.json",
                 "{ort_full_p50_ms:.2f} ms p50", "≤ 5 ms p50", lambda d: d["ort_full_p50_ms"] <= 5),
        headline("smallest submodel vs full (torch eager)", "policy_latency_amd_epyc.json",
                 "{smallest_over_full:.2f}x", "≤ 0.35x", lambda d: d["smallest_over_full"] <= 0.35),
        headline("smallest submodel vs full, ONNX Runtime, a vehicle (the graph without the keypoint)",
                 "policy_latency_amd_epyc.json", "{ort_vehicle_smallest_over_full:.2f}x", "≤ 0.35x",
                 lambda d: d["ort_vehicle_smallest_over_full"] <= 0.35),
        headline("submodel switch", "policy_latency_amd_epyc.json",
                 "{switch_ms:.2f} ms, +{switch_extra_mb:.0f} MB weights", "≤ 1 ms, no extra weight memory",
                 lambda d: d["switch_ms"] <= 1 and d["switch_extra_mb"] == 0),
        headline("ONNX Runtime vs torch eager, full", "policy_latency_amd_epyc.json",
                 "{ort_speedup:.2f}x faster, max abs diff {ort_max_abs_diff:.1e}", "≥ 1.5x, max abs diff ≤ 1e-4",
                 lambda d: d["ort_speedup"] >= 1.5 and d["ort_max_abs_diff"] <= 1e-4),
        headline("own VLA on a CUDA GPU, full, batch 1 (the previous default model: same architecture)",
                 "policy_latency_cuda_h100_quick.json",
                 "{cuda_graph_p50_ms:.2f} ms p50 (bf16, CUDA graph)", "≤ 0.3 ms with CUDA graphs",
                 lambda d: d["cuda_graph_p50_ms"] <= 0.3),
        headline("own VLA on a CUDA GPU, batch 256 (the previous default model)", "policy_latency_cuda_h100_quick.json",
                 "{cuda_b256_obs_per_s:,.0f} obs/s", "≥ 100,000 obs/s", lambda d: d["cuda_b256_obs_per_s"] >= 1e5),
        headline("camera → command in the sim graph, 15 Hz, 3 runs of ≥ 600 frames",
                 "graph_latency_headline_amd_epyc.json",
                 "p99 at most {worst_p99_over_model_ms:.1f} ms over model p50, {missed_ticks} missed ticks",
                 "p99 ≤ model + 20 ms, no missed ticks",
                 lambda d: d["worst_p99_over_model_ms"] <= 20 and d["missed_ticks"] == 0),
        headline("perception, 320x240 RGB-D frame, all objects", "perception_accuracy_amd_epyc.json",
                 "{ms_per_frame:.0f} ms p50; box IoU {box_iou:.2f} ({box_iou_noisy:.2f} noisy); centroid "
                 "{centroid_err_cm:.2f} cm; Chamfer {chamfer_cm:.2f} cm; recall {recall:.2f}",
                 "≤ 100 ms; IoU ≥ 0.6 (≥ 0.5 noisy); centroid ≤ 1.5 cm; Chamfer ≤ 1 cm; recall ≥ 0.9",
                 lambda d: (d["ms_per_frame"] <= 100 and d["box_iou"] >= 0.6 and d["box_iou_noisy"] >= 0.5
                            and d["centroid_err_cm"] <= 1.5 and d["chamfer_cm"] <= 1 and d["recall"] >= 0.9)),
        headline("perception of other shapes (mugs, L-blocks, tori, ellipsoids, cones, bananas, bottles, plates), "
                 "320x240, pixel prompt, worst family", "perception_accuracy_amd_epyc.json",
                 "box IoU {shapes_pixel_worst_box_iou:.2f} ({shapes_noisy_pixel_worst_box_iou:.2f} noisy); volume IoU "
                 "{shapes_pixel_worst_volume_iou:.2f}; centre {shapes_pixel_worst_centre_err_cm:.2f} cm; Chamfer "
                 "{shapes_pixel_worst_chamfer_cm:.2f} cm; recall {shapes_pixel_worst_recall:.2f}; whole scene "
                 "{shapes_ms_per_frame_p95:.0f} ms p95",
                 "IoU ≥ 0.7 (≥ 0.6 noisy); volume IoU ≥ 0.6; centre ≤ 1 cm; Chamfer ≤ 0.6 cm; recall ≥ 0.95; "
                 "≤ 100 ms p95",
                 lambda d: (d["shapes_pixel_worst_box_iou"] >= 0.7 and d["shapes_noisy_pixel_worst_box_iou"] >= 0.6
                            and d["shapes_pixel_worst_volume_iou"] >= 0.6 and d["shapes_pixel_worst_centre_err_cm"] <= 1
                            and d["shapes_pixel_worst_chamfer_cm"] <= 0.6 and d["shapes_pixel_worst_recall"] >= 0.95
                            and d["shapes_ms_per_frame_p95"] <= 100)),
        headline("default policy, `full`, 100 unseen seeds per world", MODEL_EVAL,
                 "tabletop {success_full_tabletop:.0%} {ci95_full_tabletop:ci}, driving {success_full_driving:.0%} "
                 "{ci95_full_driving:ci}", "≥ 90% per world",
                 lambda d: min(d["success_full_tabletop"], d["success_full_driving"]) >= 0.9),
        headline("Meta-World MT10: one policy for the ten tasks, 50 unseen starts per task",
                 METAWORLD_MT10, "{success:.1%} {ci95:ci} of {eval_episodes} starts, all ten tasks", "≥ 85%",
                 lambda d: d["success"] >= 0.85),
        headline("default policy, `1/2`, 100 unseen seeds per world", MODEL_EVAL,
                 "tabletop {success_half_tabletop:.0%} {ci95_half_tabletop:ci}, driving {success_half_driving:.0%} "
                 "{ci95_half_driving:ci}", "≥ 80% per world",
                 lambda d: min(d["success_half_tabletop"], d["success_half_driving"]) >= 0.8),
        headline("elastic node under load steps, load calibrated on the machine, 3 runs",
                 ELASTIC_HEADLINE,
                 "worst run: elastic {worst_elastic_miss:.2%} missed where fixed `full` {least_full_miss:.1%}; "
                 "reaction ≤ {worst_reaction:.2f} periods; success ≥ fixed `1/4` in {success_ok} of {runs} "
                 "(calibrated: {calibration_rate_hz:g} Hz, {calibration_threads} thread(s), {load_words})",
                 "≤ 1% where fixed `full` misses ≥ 20%; ≤ 2 periods; success ≥ fixed smallest's",
                 lambda d: bool(d["met"])),
        headline("the machine's own noise (context for the tail targets)", "machine_noise_amd_epyc.json",
                 "identical work p99 − p50 {fixed_work_p99_minus_p50_ms:.2f} ms; `1/4` over 9 ms on "
                 "{model_1_4_share_over_9ms:.2%} of calls", "p99 − p50 well under 20 ms (< 5 ms); ≤ 1% of calls",
                 lambda d: d["fixed_work_p99_minus_p50_ms"] < 5 and d["model_1_4_share_over_9ms"] <= 0.01),
        headline("elastic node's budget sources, read live", "budget_sources_live_h100.json",
                 "{checks_passed} of {checks_total} checks passed", "each source sees each load it can",
                 lambda d: all(d["checks"].values())),
        headline("execution under 200 ms of added latency (default `auto`), 200 unseen seeds per world, paired",
                 EXECUTION,
                 "vs 0 ms: tabletop {test_tabletop_auto_200ms_diff_vs_0ms:+.1%} "
                 "{test_tabletop_auto_200ms_diff_vs_0ms_ci95:ci.2} (`replace` "
                 "{test_tabletop_replace_200ms_diff_vs_0ms:+.1%}), driving {test_driving_auto_200ms_diff_vs_0ms:+.1%} "
                 "{test_driving_auto_200ms_diff_vs_0ms_ci95:ci.2} (`replace` "
                 "{test_driving_replace_200ms_diff_vs_0ms:+.1%})",
                 "within 5 points (interval ≥ −5), where `replace` loses more", _execution_met),
        headline("RL trainer throughput", "train_compare_entropy.json",
                 "{rl_steps_per_s:.0f} env steps/s vs SB3 PPO {sb3_ppo_steps_per_s:.0f}", "≥ SB3 PPO's",
                 lambda d: d["rl_steps_per_s"] >= d["sb3_ppo_steps_per_s"]),
    ),
    derive=lambda d: (checks_derive(d) if "checks" in d else
                      elastic_headline_derive(d) if "run1_elastic_miss_rate" in d else execution_derive(d)),
    note="One row per target, each on the machine that measured it best; every machine's figures are in "
         "`docs/benchmarks.md`.",
)

SIM_THROUGHPUT = Table(
    ("configuration", "tabletop steps/s", "driving steps/s"),
    ("<config>", "{tabletop_<key>_steps_per_s:,.0f}", "{driving_<key>_steps_per_s:,.0f}"),
    tuple(Row("sim_throughput.json", {"config": c, "key": k}) for c, k in (
        ("64x64 RGB-D, one core", "64x64"), ("64x64 RGB-D + segmentation, one core", "64x64_seg"),
        ("320x240 RGB-D, one core", "320x240"), ("64x64 RGB-D, 2-process vector env", "64x64_vec2"))),
)

POLICY_FILES = ("policy_latency.json", "policy_latency_amd_epyc.json", "policy_latency_cuda_h100_quick.json")
POLICY_LATENCY = Table(
    ("machine", "ORT full p50", "torch full p50", "ORT speed-up", "ORT max abs diff", "ORT `1/4` p50",
     "smallest / full (torch)", "switch", "switch extra weights", "file"),
    ("<machine>", "{ort_full_p50_ms:.2f} ms", "{full_p50_ms:.2f} ms", "{ort_speedup:.2f}x", "{ort_max_abs_diff:.1e}",
     "{ort_1_4_p50_ms:.2f} ms", "{smallest_over_full:.2f}", "{switch_ms:.3f} ms", "{switch_extra_mb:.0f} MB",
     "<file>"),
    tuple(Row(f) for f in POLICY_FILES),
    note="The H100 machine's row is its CPU (2 threads), from a `--quick` run.",
)

POLICY_EMBODIMENT = Table(
    ("submodel", "an arm (with the target keypoint)", "a vehicle (the graph without it)", "vehicle / arm"),
    ("<s>", "{ort_<k>_p50_ms:.2f} ms", "{ort_vehicle_<k>_p50_ms:.2f} ms", "{vehicle_over_arm_<k>:.2f}"),
    tuple(Row("policy_latency_amd_epyc.json", {"s": s, "k": k})
          for s, k in (("full", "full"), ("3/4", "3_4"), ("1/2", "1_2"), ("1/4", "1_4"))),
    derive=lambda d: {f"vehicle_over_arm_{k}": d[f"ort_vehicle_{k}_p50_ms"] / d[f"ort_{k}_p50_ms"]
                      for k in ("full", "3_4", "1_2", "1_4") if f"ort_vehicle_{k}_p50_ms" in d},
    note="ONNX Runtime, 2 threads, `select_action` p50 at batch 1, both timed in the same interleaved "
         "rounds; smallest / full: arm {ort_smallest_over_full:.2f}, vehicle "
         "{ort_vehicle_smallest_over_full:.2f}.",
)

POLICY_CUDA = Table(
    ("machine", "full, bf16 CUDA graph p50", "graph replay alone p50", "eager bf16 p50", "batch 256, graph",
     "argmax agreement with fp32 CPU", "file"),
    ("<machine>", "{cuda_graph_p50_ms:.2f} ms", "{cuda_graph_forward_p50_ms:.2f} ms", "{cuda_eager_p50_ms:.2f} ms",
     "{cuda_b256_obs_per_s:,.0f} obs/s", "{cuda_graph_full_argmax_agreement:.1%}", "<file>"),
    (Row("policy_latency_cuda_h100_quick.json"),),
)

GRAPH_FILES = (("graph_latency_headline.json", 3), ("graph_latency_headline_amd_epyc.json", 3),
               ("graph_latency_cuda_h100.json", 1))
GRAPH_LATENCY = Table(
    ("machine", "policy", "run", "frames", "p50", "p99", "model p50", "p99 over model p50", "max",
     "max in node", "missed ticks", "dropped", "file"),
    ("<machine>", "{runtime} on the {policy_on}", "<k>", "{15hz_64x64_procs_run<k>_frames}",
     "{15hz_64x64_procs_run<k>_p50_ms:.1f} ms", "{15hz_64x64_procs_run<k>_p99_ms:.1f} ms",
     "{15hz_64x64_procs_run<k>_model_p50_ms:.2f} ms", "{run<k>_over_model_ms:.1f} ms",
     "{15hz_64x64_procs_run<k>_max_ms:.1f} ms", "{15hz_64x64_procs_run<k>_node_max_ms:.1f} ms",
     "{15hz_64x64_procs_run<k>_missed}", "{15hz_64x64_procs_run<k>_dropped}", "<file>"),
    tuple(Row(f, {"k": k}) for f, runs in GRAPH_FILES for k in range(1, runs + 1)),
    derive=lambda d: {**graph_derive(d),
                      "policy_on": "GPU" if str(d.get("device", "cpu")).startswith("cuda") else "CPU"},
    note="15 Hz, 64x64, sim bridge and policy node in separate processes.",
)

PERCEPTION = Table(
    ("image", "depth", "completion", "scenes", "box IoU", "centroid (cm)", "Chamfer (cm)", "recall",
     "shape correct", "ms/frame p50", "p95"),
    ("<image>", "<depth>", "<completion>", "{<scenes>}", "{box_iou<k>:.3f}", "{centroid_err_cm<k>:.2f}",
     "{chamfer_cm<k>:.2f}", "{recall<k>:.2f}", "<shape>", "{ms_per_frame<k>:.0f}", "{ms_per_frame_p95<k>:.0f}"),
    tuple(Row("perception_accuracy_amd_epyc.json", {
        "image": image, "depth": depth, "completion": "on" if on else "off", "k": k + ("" if on else "_visible"),
        "scenes": "scenes_640" if k == "_640" else "scenes",
        "shape": f"{{shape_accuracy{k}:.2f}}" if on else "-"})
        for image, depth, k in (("320x240", "clean", ""), ("320x240", "noisy", "_noisy"), ("640x480", "clean", "_640"))
        for on in (True, False)),
)

PERCEPTION_FAMILIES = ("mug", "l_block", "torus", "ellipsoid", "cone", "banana", "bottle", "plate")
PERCEPTION_SHAPES = Table(
    ("family", "objects", "recall", "centre (cm)", "box IoU", "Chamfer (cm)", "volume IoU", "cavities kept",
     "label names the family", "noisy: box IoU / volume IoU", "mask prompt: box IoU / volume IoU"),
    ("<f>", "{shapes_pixel_<f>_objects}", "{shapes_pixel_<f>_recall:.2f}", "{shapes_pixel_<f>_centre_err_cm:.2f}",
     "{shapes_pixel_<f>_box_iou:.2f}", "{shapes_pixel_<f>_chamfer_cm:.2f}", "{shapes_pixel_<f>_volume_iou:.2f}",
     "{shapes_pixel_<f>_cavities_kept:.0%}", "{shapes_pixel_<f>_label_accuracy:.0%}",
     "{shapes_noisy_pixel_<f>_box_iou:.2f} / {shapes_noisy_pixel_<f>_volume_iou:.2f}",
     "{shapes_mask_<f>_box_iou:.2f} / {shapes_mask_<f>_volume_iou:.2f}"),
    tuple(Row("perception_accuracy_amd_epyc.json", {"f": f}) for f in PERCEPTION_FAMILIES),
    note="{shapes_scenes} scenes from seed {shapes_first_seed} (thresholds tuned on seeds {shapes_tuning_seeds}), "
         "320x240, pixel prompt at the centroid of each object's visible mask; medians per family.",
)

PERCEPTION_SHAPES_CHECKS = Table(
    ("depth", "tori whose hole is kept", "mugs whose handle gap is kept", "visible handles (≥ 50 px) kept",
     "objects partly hidden: share, recall, box IoU", "whole scene, no prompt: ms p50 / p95"),
    ("<depth>", "{<p>_pixel_torus_hole_kept:.0%}", "{<p>_pixel_mug_handle_gap_kept:.0%}",
     "{<p>_pixel_mug_handle_kept:.0%} of {<p>_pixel_mug_handles_visible}",
     "{<p>_occluded_share:.0%}, {<p>_occluded_recall:.2f}, {<p>_occluded_box_iou:.2f}",
     "{<p>_ms_per_frame:.0f} / {<p>_ms_per_frame_p95:.0f}"),
    (Row("perception_accuracy_amd_epyc.json", {"depth": "clean", "p": "shapes"}),
     Row("perception_accuracy_amd_epyc.json", {"depth": "noisy", "p": "shapes_noisy"})),
    note="Kept: at least half the hole's (gap's) voxels empty, at least half the handle's voxels within a voxel "
         "of the reconstruction (5 mm voxels). Partly hidden: under 90% of the object's pixels visible.",
)

ELASTIC = Table(
    ("machine", "load", "rate, deadline, threads", "fixed full missed (under load)", "fixed 1/4 missed",
     "elastic missed (under load)", "success full / 1/4 / elastic (episodes, 95% interval)", "switches",
     "reaction, max over load steps", "file"),
    ("<machine>", "{load_words}", "{rate_hz:g} Hz, {deadline_ms:g} ms, {threads}",
     "{fixed_full_miss_rate:.1%} ({full_miss_rate_under_load:.1%})", "{fixed_smallest_miss_rate:.2%}",
     "{elastic_miss_rate:.2%} ({elastic_miss_rate_under_load:.2%})",
     "{success_full} / {success_smallest} / {success_elastic}", "{switches}", "{reaction}", "<file>"),
    (Row(ELASTIC_HEADLINE), Row("elastic_budget.json"), Row("elastic_budget_quick_h100.json")),
    derive=elastic_derive,
    note="Missed deadlines are over the whole schedule (load on 70% of the time); \"under load\" counts only the "
         "inferences while the load was on. The AMD EPYC row is the first of its three headline runs.",
)

ELASTIC_RUNS = Table(
    ("run", "calibrated: rate, threads, load", "fixed full missed", "fixed 1/4 missed [95%]",
     "elastic missed [95%]", "success fixed 1/4 / elastic [95%]", "reaction", "met", "file"),
    ("<run>", "{calibration_words}", "{<p>full_text}", "{<p>small_text}", "{<p>elastic_text}",
     "{<p>success_text}", "{<p>reaction_text}", "{<p>met_text}", "<file>"),
    tuple(Row(ELASTIC_HEADLINE, {"run": f"headline {k} of 3", "p": f"run{k}_"}) for k in (1, 2, 3))
    + tuple(Row(f, {"run": f"`--quick` {k} of 3", "p": ""}) for k, f in enumerate(ELASTIC_QUICK, 1)),
    derive=elastic_runs_derive,
    note="Targets: elastic ≤ 1% missed where fixed `full` misses ≥ 20%, success no worse than fixed `1/4`, "
         "reaction ≤ 2 control periods. Headline: one calibration, then three runs of 100 s per mode (5 "
         "interleaved schedules); `--quick`: three runs in a row, each with its own calibration, then 20 s per "
         "mode. A calibration that found no level ends the run (exit status 2): its row gives the reason.",
)


def elastic_one(file: str) -> Table:
    return Table(ELASTIC.columns[1:], ELASTIC.cells[1:], (Row(file),), ELASTIC.derive, ELASTIC.note)


NODE_FOOTPRINT = Table(
    ("node", "resident after start-up", "peak", "file"),
    ("`<node>`", "{<node>_rss_mb:.0f} MB", "{<node>_peak_mb:.0f} MB", "<file>"),
    tuple(Row("node_footprint_amd_epyc.json", {"node": n})
          for n in ("sim_bridge", "policy_node", "elastic_node", "perception_node")),
    note="Each node in its own process, started as `sim.launch.py` starts them, read from /proc once the "
         "graph had run for `settle_s`.",
)

POLL_COST = Table(
    ("machine", "polls per s", "loop, CPU per poll", "share of one CPU", "of a 0.2-CPU quota",
     "read after a sleep", "without per-CPU time", "read back to back", "decide", "file"),
    ("<machine>", "{rate_hz:g}", "{loop_us:.0f} µs", "{loop_cpu_share:.1%}", "{loop_share_of_quota_0_2:.1%}",
     "{read_us:.0f} µs", "{read_without_cpu_time_us:.0f} µs", "{read_warm_us:.1f} µs", "{decide_us:.0f} µs",
     "<file>"),
    (Row("elastic_poll_cost_amd_epyc.json"),),
)

MACHINE_NOISE = Table(
    ("machine", "fixed work p50 / p99", "p99 − p50", "full model p50 / p99", "1/4 p50 / p99",
     "1/4 calls over 9 ms", "wake-up p99 late", "CPU steal", "file"),
    ("<machine>", "{fixed_work_p50_ms:.2f} / {fixed_work_p99_ms:.2f} ms", "{fixed_work_p99_minus_p50_ms:.2f} ms",
     "{model_full_p50_ms:.2f} / {model_full_p99_ms:.2f} ms", "{model_1_4_p50_ms:.2f} / {model_1_4_p99_ms:.2f} ms",
     "{model_1_4_share_over_9ms:.2%}", "{wakeup_p99_ms:.2f} ms", "{steal_pct:.3f}%", "<file>"),
    (Row("machine_noise.json"), Row("machine_noise_amd_epyc.json")),
)

BUDGET_SOURCES = Table(
    ("machine", "automatic choice", "8 GiB hog: NVML free drop", "torch.cuda free drop", "compute hog: NVML util",
     "SM clock, slowdown", "CPU slowdown, 2 burners per core", "checks", "file"),
    ("<machine>", "{auto_source}", "{nvml_hog_drop_mb:,.0f} MB", "{torch.cuda_hog_drop_mb:,.0f} MB",
     "{nvml_util_busy}%", "{nvml_sm_mhz_busy} MHz, x{nvml_slowdown_busy:.2f}", "x{cpu_slowdown_burners:.2f}",
     "{checks_words}", "<file>"),
    (Row("budget_sources_live_h100.json"),),
    derive=checks_derive,
)

NODE_BACKEND = Table(
    ("configuration", "runtime", "p50", "p99", "chunk equal to fp32's", "max action difference"),
    ("<label>", "{<k>_runtime}", "{<k>_p50_ms:.2f} ms", "{<k>_p99_ms:.2f} ms", "<agree>", "<diff>"),
    tuple(Row("node_backend_cuda_h100.json", {
        "label": label, "k": k, "agree": "-" if k == "fp32" else f"{{{k}_chunk_agreement:.1%}}",
        "diff": "-" if k == "fp32" else f"{{{k}_max_action_diff:.2f}}"})
        for label, k in (("fp32 eager", "fp32"), ("fp32, CUDA graph", "fp32_graph"), ("bf16 eager", "bf16"),
                         ("bf16, CUDA graph", "bf16_graph"))),
    note="H100 machine, `select_action` on 405 real frames of both worlds.",
)

PUSH_FAILURES = Table(
    ("model, submodel", "push episodes", "policy success", "expert success", "timeouts", "target moved in a "
     "timeout (quartiles)", "wrong touches", "backward / forward / left / right"),
    ("{model}, {submodel}", "{push_episodes}", "{policy_push_success:.0%}", "{expert_push_success:.0%}",
     "{failures[timeout]}", "{timeout_moved_cm[0]:.1f} / {timeout_moved_cm[1]:.1f} / {timeout_moved_cm[2]:.1f} cm",
     "{failures[wrong_touch]}", "{by_direction[backward][success]:.0%} / {by_direction[forward][success]:.0%} / "
     "{by_direction[left][success]:.0%} / {by_direction[right][success]:.0%}"),
    (Row("push_failures.json"),),
    note="Seeds 101000-101399 (the pushes among them); a push asks for 6 cm.",
)

DRIVING_FAILURES = Table(
    ("submodel", "lane-change episodes", "success", "no change", "overshoot", "other"),
    ("<sub>", "{<k>_lane_change_episodes}", "{<k>_lane_change_success:.0%}", "{<k>_failures[no_change]}",
     "{<k>_failures[overshoot]}", "{<k>_failures[other]}"),
    tuple(Row("driving_failures.json", {"sub": sub, "k": k}) for sub, k in (("full", "full"), ("1/2", "half"))),
    note="Seeds 100000-100299, the shipped model (an earlier one, before `reference_frame`, failed 16 of "
         "155 lane changes by never leaving its lane: `git show 66232ac:bench/results/driving_failures.json`).",
)

ROS_GRAPH = Table(
    ("world", "mode", "graph success (95% interval)", "same outcome as offline", "offline (model card)",
     "commands replaced before use"),
    ("<world>", "<mode>", "{<mode>_success_<world>:.0%} {<mode>_ci95_<world>:ci}",
     "{<mode>_agrees_with_offline_<world>} of {episodes}", "{offline_success_<world>:.0%} {offline_ci95_<world>:ci}",
     "{<mode>_overwritten_commands_<world>}"),
    tuple(Row("ros_graph_success_test_seeds.json", {"world": w, "mode": m})
          for w in ("tabletop", "driving") for m in ("realtime", "lockstep")),
    note="Seeds 100000-100099 (the model card's), `full`, ONNX Runtime.",
)

TRAIN_COMPARE = Table(
    ("method", "validation success tabletop / driving", "env steps", "env steps/s", "entropy within ±10% of target"),
    ("<m>", "{<k>_success_tabletop:.0%} / {<k>_success_driving:.0%}", "{<k>_env_steps:,.0f}",
     "{<k>_steps_per_s:.0f}", "<within>"),
    tuple(Row("train_compare_entropy.json", {"m": m, "k": k, "within": w}) for m, k, w in (
        ("GRPO", "grpo", "{grpo_entropy_within_10pct:.0%}"),
        ("EntroPIC", "entropic", "{entropic_entropy_within_10pct:.0%}"),
        ("SB3 PPO (pixels, from scratch)", "sb3_ppo", "-"))),
    note="3 training seeds x 6 iterations from the BC+DAgger model the previous default was trained from; 20 "
         "validation episodes per world and seed; `rl_steps_per_s` {rl_steps_per_s:.0f} (mean over RL methods).",
)

def dataset_bc_derive(d: dict) -> dict:
    """The paired difference's 95% interval in points, from the seeds only one run solves."""
    from paired_success import paired_interval

    low, high = paired_interval(d["dataset_solves_expert_fails"], d["expert_solves_dataset_fails"],
                                d["eval_episodes"])
    return {"difference_interval": f"[{100 * low:+.1f}, {100 * high:+.1f}]"}


DATASET_BC = Table(
    ("world", "recorded", "both runs start from", "BC from the dataset", "BC from the live expert",
     "difference (paired 95% interval)", "seeds only the dataset's solves", "seeds only the expert's solves",
     "McNemar p"),
    ("<world>", "{episodes} episodes ({dataset_frames:,} frames)", "<start> ({bc_steps} bc steps)",
     "{success_dataset:.1%} {ci95_dataset:ci.1}", "{success_expert:.1%} {ci95_expert:ci.1}",
     "{difference_points:+.1f} points {difference_interval}", "{dataset_solves_expert_fails}",
     "{expert_solves_dataset_fails}", "{mcnemar_p:.3f}"),
    (Row("dataset_bc_scratch_amd_epyc.json", {"world": "driving", "start": "a new model"}),
     Row("dataset_bc_finetune_amd_epyc.json", {"world": "driving", "start": "the shipped model"}),
     Row("dataset_bc_finetune_dart_amd_epyc.json",
         {"world": "driving", "start": "the shipped model, the expert with DART noise"}),
     Row("dataset_bc_scratch_300ep_amd_epyc.json",
         {"world": "driving", "start": "a new model, the expert with DART noise"}),
     Row("dataset_bc_drawer_close_amd_epyc.json",
         {"world": "Meta-World drawer-close", "start": "a new model, the expert with DART noise"}),
     Row("dataset_bc_drawer_close_seed1_amd_epyc.json",
         {"world": "Meta-World drawer-close",
          "start": "the same, the same dataset, training seed 1 for both runs"}),
     Row("dataset_bc_drawer_close_2000steps_amd_epyc.json",
         {"world": "Meta-World drawer-close",
          "start": "the same dataset, training seed 0, 2.5 times the steps"}),
     Row("dataset_bc_drawer_close_2000steps_seed1_amd_epyc.json",
         {"world": "Meta-World drawer-close",
          "start": "the same dataset, training seed 1, 2.5 times the steps"}),
     Row("dataset_bc_drawer_close_nodart_seed0_amd_epyc.json",
         {"world": "Meta-World drawer-close",
          "start": "the same dataset, training seed 0, the expert without DART noise"}),
     Row("dataset_bc_drawer_close_nodart_seed1_amd_epyc.json",
         {"world": "Meta-World drawer-close",
          "start": "the same dataset, training seed 1, the expert without DART noise"}),
     *(Row(f"dataset_bc_drawer_close_{kind}_seed{s}_amd_epyc.json",
           {"world": "Meta-World drawer-close",
            "start": f"a new recording {how}, training seed {s}, the expert without DART noise"})
       for kind, how, seeds in (("privileged", "with the privileged features (AV1)", (0, 1)),
                                ("lossless", "with the privileged features, lossless H.264", (0, 1, 2, 3)))
       for s in seeds),
     *(Row(f"dataset_bc_tabletop_seed{s}_amd_epyc.json",
           {"world": "tabletop", "start": f"a new model, lossless H.264 with the privileged features, training "
                                         f"seed {s}, the expert without DART noise"})
       for s in (0,))),
    derive=dataset_bc_derive,
    note="Episodes (seeds from 0) recorded through the ROS graph as a LeRobotDataset v3, and the live "
         "expert's demonstrations on the same seeds (without DART noise unless the row says so); bc only, "
         "batch 64; {eval_episodes} unseen seeds from 100000, paired.",
)


def dataset_bc_seeds_derive(d: dict) -> dict:
    """Per training seed "dataset% / live% (diff)", and the summary's interval in points."""
    low, high = d["difference_ci95_points"]
    return {"per_seed": "; ".join(f"seed {s}: {a:.1%} / {b:.1%} ({x:+.1f})" for s, a, b, x in zip(
                d["training_seeds"], d["success_dataset"], d["success_expert"], d["differences_points"])),
            "interval": f"[{low:+.1f}, {high:+.1f}]", "seeds": len(d["training_seeds"]),
            "kind": ("lossless H.264" if d["codec"] == "h264" else "AV1")
            + (", privileged features" if d["dataset_privileged"] else "")}


DATASET_BC_SEEDS = Table(
    ("world", "dataset", "per training seed: from the dataset / from the live expert (points)",
     "mean, dataset / live expert", "between-seed sd, dataset / live expert",
     "mean difference (t 95% interval over seeds)"),
    ("<world>", "{kind}", "{per_seed}", "{mean_dataset:.1%} / {mean_expert:.1%}",
     "{sd_dataset:.1%} / {sd_expert:.1%}", "{mean_difference_points:+.1f} points {interval}"),
    (Row("dataset_bc_drawer_close_lossless_seeds_amd_epyc.json", {"world": "Meta-World drawer-close"}),),
    derive=dataset_bc_seeds_derive,
    note="{episodes} recorded episodes, {bc_steps} bc steps from a new model, the live expert without DART "
         "noise; each run judged on {eval_episodes} unseen seeds from 100000; the interval is Student's t "
         "over the {seeds} training seeds' paired differences.",
)


def recipe_run_derive(d: dict) -> dict:
    """Per model and submodel/world: success, and against the baseline (the shipped model) the
    paired difference in points with the McNemar p, e.g. "82.3% (-9.7, p < 0.001)"."""
    out = {"wall_min": round(d["run_info"].get("wall_s", 0) / 60),
           "machine": d["run_info"].get("machine", "?")}
    for model in ("baseline", "after_bc", "after_dagger", "final"):
        for k in ("full_tabletop", "full_driving", "half_tabletop", "half_driving"):
            if model not in d:
                out[f"{model}_{k}"] = "-"
                continue
            success = d[model][f"success_{k}"]
            paired = d.get(f"{model}_vs_baseline", {}).get(k)
            if paired is None:
                out[f"{model}_{k}"] = f"**{success:.1%}**"
                continue
            p = paired["mcnemar_p"]
            out[f"{model}_{k}"] = (f"{success:.1%} ({100 * (paired['new'] - paired['base']):+.1f}, "
                                   f"p {'< 0.001' if p < 0.001 else f'{p:.2g}'})")
    # the final model's success against the baseline's 95% interval (a second training seed)
    for k, paired in d.get("final_vs_baseline", {}).items():
        if "new_within_base_ci95" not in paired:  # (files from before paired_success gave it)
            continue
        low, high = d["baseline"][f"ci95_{k}"]
        out[f"within_{k}"] = ("inside" if paired["new_within_base_ci95"] else
                              "above" if paired["new"] > high else "below") + f" [{low:.1%}, {high:.1%}]"
    return out


def recipe_run_table(run: int | str, baseline: str, file: str = "", seeds: str = "validation",
                     within: bool = False) -> Table:
    """A recipe run against a baseline model on the same seeds (bench/recipe_run.py); ``within``:
    a last row with where the final model lies against the baseline's 95% interval."""
    models = ((baseline, "baseline"), (f"recipe run {run}, after bc", "after_bc"),
              (f"recipe run {run}, after dagger", "after_dagger"), (f"recipe run {run}, final (after rl)", "final"))
    file = file or f"recipe_run{run}_validation.json"
    rows = tuple(Row(file, {"label": label, "m": m}) for label, m in models)
    if within:
        rows += (Row(file, {"label": "final against the first row's 95% interval", "m": "within"}),)
    return Table(
        ("model", "tabletop, full", "driving, full", "tabletop, 1/2", "driving, 1/2"),
        ("<label>", "{<m>_full_tabletop}", "{<m>_full_driving}", "{<m>_half_tabletop}", "{<m>_half_driving}"),
        rows,
        derive=recipe_run_derive,
        note="{episodes} " + seeds + " seeds per world from {first_seed}, paired with the first row (points, "
             "exact McNemar p); the run trained {wall_min} min on {machine}.",
    )


RECIPE_RUN = recipe_run_table(1, "previous default (warm-start chain)")
RECIPE_RUN2 = recipe_run_table(2, "previous default (warm-start chain)")
RECIPE_SEED1 = recipe_run_table("seed 1", "shipped model (recipe, seed 0)", "recipe_seed1_test_block.json",
                                "test-block (the shipped model's)", within=True)

SUBMODEL_WORLDS = (("full, tabletop", "full_tabletop"), ("full, driving", "full_driving"),
                   ("1/2, tabletop", "half_tabletop"), ("1/2, driving", "half_driving"))


def _paired_table(file: str, base: str, new: str, note: str) -> Table:
    """bench/paired_success.py's result: two models on the same seeds, per submodel and world."""
    return Table(
        ("submodel, world", base, new, f"seeds only {new} solves", f"seeds only {base} solves", "McNemar p"),
        ("<label>", "{<k>[base]:.1%}", "{<k>[new]:.1%}", "{<k>[new_solves_base_fails]}",
         "{<k>[base_solves_new_fails]}", "{<k>[mcnemar_p]:.3f}"),
        tuple(Row(file, {"label": label, "k": k}) for label, k in SUBMODEL_WORLDS),
        note=note)


TEST_BLOCK = "A fresh block of {episodes} test seeds per world from {first_seed}, used once for this claim; paired."
RL_VS_BC = _paired_table("rl_vs_bc_dagger_test_block.json", "BC+DAgger (same run)", "+ RL (shipped)", TEST_BLOCK)
RECIPE_VS_PREVIOUS = _paired_table("recipe_vs_previous_test_block.json", "previous default",
                                   "recipe (shipped)", TEST_BLOCK)


EXECUTION_TEST = Table(
    ("world", "strategy", "latency", "success (95% interval)", "vs 0 ms, paired (95% interval; McNemar p)",
     "vs `replace`, paired", "jerk mean", "boundary jerk peak", "÷ `replace` (95%)", "measured jerk peak",
     "oldest command"),
    ("<world>", "`<strategy>`", "<lat>", "{<k>_success:.1%} {<k>_ci95:ci}",
     "{<k>_diff_vs_0ms:+.1%} {<k>_diff_vs_0ms_ci95:ci.1} (p {<k>_diff_vs_0ms_mcnemar_p:.2g})",
     "{<k>_diff_vs_replace:+.1%} {<k>_diff_vs_replace_ci95:ci.1}", "{<k>_jerk_mean:.1f} m/s³",
     "{<k>_boundary_jerk_peak:.1f} m/s³", "{<k>_boundary_ratio_vs_replace:.2f} {<k>_boundary_ratio_ci95_text}",
     "{<k>_measured_jerk_peak:.1f} m/s³", "{<k>_max_command_age_s:.1f} s"),
    tuple(Row(EXECUTION, {"world": w, "strategy": st, "lat": lat, "k": f"test_{w}_{st}_{key}"})
          for w in ("tabletop", "driving") for st in EXECUTION_STRATEGIES for lat, key in EXECUTION_LATENCIES),
    derive=execution_derive,
    note="Test seeds from {first_seeds[test]}, {episodes} per world, the same seeds in "
         "every row; `deadline_s` "
         "{deadline_s:g} s. Jerk: m/s³ of the commands at the control rate; the boundary peak is each episode's "
         "largest jerk where a new chunk takes over, averaged over episodes; the oldest command is the largest "
         "age of an executed command's observation.",
)

EXECUTION_VALIDATION = Table(
    ("world", "strategy", *(lat for lat, _ in EXECUTION_LATENCIES)),
    ("<world>", "`<strategy>`", *(f"{{validation_<world>_<strategy>_{key}_success:.0%}} "
                                  f"({{validation_<world>_<strategy>_{key}_diff_vs_0ms:+.0%}})"
                                  for _, key in EXECUTION_LATENCIES)),
    tuple(Row(EXECUTION, {"world": w, "strategy": st}) for w in ("tabletop", "driving")
          for st in EXECUTION_STRATEGIES),
    note="Success on the validation seeds from {first_seeds[validation]}, {episodes} per world "
         "(in brackets: the "
         "paired difference to the same strategy at 0 ms); `deadline_s` {deadline_s:g} s; `bench/execution.py`.",
)

EXECUTION_GRAPH = Table(
    ("world", "compressed colour", "raw images", "compressed colour and compressedDepth",
     "compressed − raw, paired (95% interval)", "McNemar p", "frames rejected"),
    ("<w>", "<fmt>", "{graph_<w>_raw_success:.0%} of {graph_<w>_raw_episodes} {graph_<w>_raw_ci95:ci}",
     "{graph_<w>_<f>_success:.0%} of {graph_<w>_<f>_episodes} {graph_<w>_<f>_ci95:ci}",
     "{graph_<w>_<f>_vs_raw:+.1%} {graph_<w>_<f>_vs_raw_ci95:ci.1}", "{graph_<w>_<f>_vs_raw_mcnemar_p:.2g}",
     "{graph_<w>_<f>_rejected}"),
    tuple(Row(EXECUTION_GRAPH_FILE, {"w": w, "f": f, "fmt": fmt}) for w in ("tabletop", "driving")
          for f, fmt in (("jpeg", "JPEG, quality 95, 4:4:4"), ("png", "PNG (lossless)"))),
    note=PREVIOUS_DEFAULT + "; through the ROS graph in `lockstep`, `full`, ONNX Runtime, unseen seeds from "
         "{graph_first_seed}; the "
         "same seeds in every row.",
)

EXECUTION_DECODE = Table(
    ("image", "size", "payload", "decode"),
    ("<what>", "<size>", "{decode_<k>_<size>_bytes:,} bytes", "{decode_<k>_<size>_ms:.2f} ms"),
    tuple(Row(EXECUTION, {"what": what, "k": k, "size": size})
          for size in ("64x64", "640x480")
          for what, k in (("colour, JPEG (quality 95)", "jpeg"), ("colour, PNG", "png"),
                          ("depth, compressedDepth (32FC1, PNG)", "depth_png"))),
    note="Median of repeated decodes of one synthetic image with camera-like texture (`nodes/conversions.py`, "
         "OpenCV).",
)


#: bench/robustness.py's cells, in its order (the JSON names each one's axis and magnitude).
ROBUSTNESS_CELLS = ("none", "camera_2cm_2deg", "camera_5cm_5deg", "camera_10cm_10deg", "light_030", "light_050",
                    "light_150", "light_200", "colour", "distractors_1", "distractors_2", "distractors_3",
                    "paraphrase", "delay_1", "rgb_noise_8")
ROBUSTNESS_RUNS = ("full_tabletop", "full_driving", "half_tabletop", "half_driving")


def robustness_derive(d: dict) -> dict:
    """Per run and cell: "76% −15 [−19, −11] p 0.001" (success, then the paired difference to the
    unshifted run in points with its 95% interval and McNemar p), or the unshifted success with
    its Wilson interval."""
    out = {}
    for run in ROBUSTNESS_RUNS:
        for cell in ROBUSTNESS_CELLS:
            k = f"{run}_{cell}"
            if f"{k}_success" not in d:  # (a run of some submodels only)
                out[f"{k}_words"] = "-"
                continue
            if cell == "none":
                lo, hi = d[f"{k}_ci95"]
                out[f"{k}_words"] = f"**{d[f'{k}_success']:.0%}** [{100 * lo:.0f}, {100 * hi:.0f}]"
                continue
            out[f"{k}_words"] = f"{d[f'{k}_success']:.0%} ({paired_points(d, k)})"
    return out


def paired_points(d: dict, k: str) -> str:
    """A paired difference in points with its 95% interval and McNemar p: "-14 [-17, -10], p < 0.001"."""
    p = d[f"{k}_mcnemar_p"]
    diff, lo, hi = (round(100 * v) + 0 for v in (d[f"{k}_diff"], *d[f"{k}_diff_ci95"]))  # (+ 0: no "-0")
    return f"{diff:+d} [{lo:+d}, {hi:+d}], p {'< 0.001' if p < 0.001 else f'{p:.2g}'}"


def robustness_table(file: str, field: str, derive, note: str) -> Table:
    """One row per bench/robustness.py cell, one column per submodel and world: the derived
    ``<run>_<cell>_<field>``."""
    return Table(
        ("shift", "magnitude", "tabletop, full", "driving, full", "tabletop, 1/2", "driving, 1/2"),
        ("{cells[<c>][axis]}", "{cells[<c>][magnitude]}",
         *(f"{{{run}_<c>_{field}}}" for run in ROBUSTNESS_RUNS)),
        tuple(Row(file, {"c": c}) for c in ROBUSTNESS_CELLS), derive=derive, note=note)


ROBUSTNESS = robustness_table(
    "robustness.json", "words", robustness_derive,
    "Success on the same {episodes} seeds per world in every row ({seed_block}); in brackets the paired "
    "difference to the unshifted row in percentage points with its 95% interval, and the exact McNemar p.")


#: Meta-World's MT10 tasks: (task, world of the stack, Meta-World's env name).
MT10 = tuple((t, "metaworld_" + t.replace("-", "_"), t + "-v3") for t in (
    "reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
    "peg-insert-side", "window-open", "window-close"))


def metaworld_expert_derive(d: dict) -> dict:
    """Per world: "94% of 50 [84, 98]" (Wilson), and the whole benchmark's share."""
    worlds = d["worlds"]
    out = {f"ci_{w}": wilson(v["successes"] / v["episodes"], v["episodes"]) for w, v in worlds.items()}
    out.update({f"steps_{w}": f"{v['mean_steps_success']:.1f}" for w, v in worlds.items()})
    n, k = sum(v["episodes"] for v in worlds.values()), sum(v["successes"] for v in worlds.values())
    out.update(ci_all=wilson(k / n, n), steps_all="")
    return out


METAWORLD_EXPERT = Table(
    ("task", "expert success [95% interval]", "mean steps of its successes"),
    ("<task>", "{ci_<w>}", "{steps_<w>}"),
    tuple(Row("metaworld_expert.json", {"task": t, "w": w}) for t, w, _ in MT10)
    + (Row("metaworld_expert.json", {"task": "all ten", "w": "all"}),),
    derive=metaworld_expert_derive,
    note="Meta-World's scripted policies in the stack's worlds; seeds from 100000 (never used in "
         "training), 50 per task, 200-step episodes.",
)

#: Published Meta-World figures of other methods (bench/data/metaworld_published.json: the
#: numbers as printed, their source and setting).
METAWORLD_PUBLISHED = "bench/data/metaworld_published.json"


def metaworld_mt10_derive(d: dict) -> dict:
    """Per task: our success of its episodes with the Wilson interval, and the published
    mean±std of each peer; the last row: ours over all tasks, the peers' mean of the ten."""
    peers = figures(METAWORLD_PUBLISHED)
    out: dict = {}
    for task, _, _ in MT10:
        r = d["tasks"][task]
        out[f"ours_{task}"] = wilson(r["success"], r["episodes"])
        for method in peers["methods"]:
            mean, std = peers["tasks"][task][method]
            out[f"{method}_{task}"] = f"{mean}±{std}"
    out["ours_all"] = wilson(d["success"], sum(r["episodes"] for r in d["tasks"].values()))
    for method in peers["methods"]:
        means = [peers["tasks"][t][method][0] for t, _, _ in MT10]
        out[f"{method}_all"] = f"{sum(means) / len(means):.1f} (mean)"
    return out


def metaworld_mt10_table(file: str) -> Table:
    """One MT10 run of bench/metaworld_mt10.py beside the published per-task figures."""
    return Table(
        ("task", "this stack: one policy for all ten, success [95% interval]",
         "3D Diffusion Policy (one per task)", "Diffusion Policy, image (one per task)"),
        ("<task>", "{ours_<task>}", "{dp3_<task>}", "{diffusion_policy_<task>}"),
        tuple(Row(file, {"task": t}) for t, _, _ in MT10) + (Row(file, {"task": "all"}),),
        derive=metaworld_mt10_derive,
        note="This stack: {demo_episodes} scripted demonstrations in all ({bc_steps} bc steps, "
             "DART noise on half), one 64x64 RGB camera (`corner3`) and the hand's position and "
             "gripper, Meta-World v3 on MuJoCo 4.0; {eval_episodes} starts from seed {first_seed} "
             "(positions never drawn in training), greedy, 200-step episodes, the one final model. "
             "Peers (Ze et al. 2024, Table XVIII; bench/data/metaworld_published.json): one policy "
             "per task from 10 demonstrations, 84x84 depth as a point cloud (DP3) or RGB "
             "(Diffusion Policy), Meta-World v2 on MuJoCo 2.1, mean±std over 3 training seeds of "
             "each seed's 5 best evaluations of 20 episodes.",
    )


EXPERT_DELAY = Table(
    ("expert", "success [95% interval]", "mean steps", "action sign flips"),
    ("<label>", "{<r>_success:.0%} {<r>_ci95:ci}", "{<r>_mean_steps:.1f}", "{<r>_sign_flips:.1%}"),
    tuple(Row("expert_delay.json", {"label": label, "r": r}) for label, r in (
        ("tabletop, undelayed", "tabletop_undelayed"),
        ("tabletop, delayed, planning from the measured fingertip (before)", "tabletop_delayed_measured_fingertip"),
        ("tabletop, delayed, planning through the delay (now)", "tabletop_delayed"),
        ("driving, undelayed", "driving_undelayed"),
        ("driving, delayed", "driving_delayed"))),
    note="{episodes} seeds from {first_seed} per row; a one-step control delay (`control_delay=1`).",
)

METAWORLD_MUJOCO = Table(
    ("task", "mujoco 3.3.0 (Meta-World's pin), unpatched", "mujoco 4.0.0 + the weld fix"),
    ("<task>", "{runs[0][tasks][<e>][successes]} of {runs[0][tasks][<e>][episodes]}",
     "{runs[1][tasks][<e>][successes]} of {runs[1][tasks][<e>][episodes]}"),
    tuple(Row("metaworld_expert_mujoco3_vs_4.json", {"task": t, "e": e}) for t, _, e in MT10),
    note="{setting}.",
)


def robustness_vs_previous_derive(d: dict) -> dict:
    """Per run and cell: "48% -> 61% (+13 [+8, +18], p < 0.001)" (previous, this model, and the
    paired difference in points with its 95% interval and McNemar p)."""
    out = {}
    for run in ROBUSTNESS_RUNS:
        for cell in ROBUSTNESS_CELLS:
            k = f"{run}_{cell}"
            if f"{k}_diff" not in d:
                out[f"{k}_vs"] = "-"
                continue
            out[f"{k}_vs"] = f"{d[f'{k}_old']:.0%} → {d[f'{k}_new']:.0%} ({paired_points(d, k)})"
    return out


ROBUSTNESS_VS_PREVIOUS = robustness_table(
    "robustness_vs_previous.json", "vs", robustness_vs_previous_derive,
    "Previous default → this model on the same {episodes} seeds per world from {first_seed} in every cell; "
    "in brackets the paired difference in points with its 95% interval, and the exact McNemar p.")


def _eval_table(file: str, digits: str) -> Table:
    return Table(
        ("submodel", "tabletop", "driving"),
        ("<sub>", "{success_<k>_tabletop:." + digits + "%} {ci95_<k>_tabletop:ci." + digits + "}",
         "{success_<k>_driving:." + digits + "%} {ci95_<k>_driving:ci." + digits + "}"),
        (Row(file, {"sub": "full", "k": "full"}), Row(file, {"sub": "1/2", "k": "half"})),
        note="Success with its Wilson 95% interval; seeds from {first_seed}, {episodes:,} per world.",
    )


TABLES: dict[str, Table] = {
    "headline": HEADLINE,
    "sim_throughput": SIM_THROUGHPUT,
    "metaworld_expert": METAWORLD_EXPERT,
    "metaworld_mt10": metaworld_mt10_table(METAWORLD_MT10),
    "expert_delay": EXPERT_DELAY,
    "metaworld_mujoco": METAWORLD_MUJOCO,
    "policy_latency": POLICY_LATENCY,
    "policy_latency_cuda": POLICY_CUDA,
    "graph_latency": GRAPH_LATENCY,
    "perception_accuracy": PERCEPTION,
    "perception_shapes": PERCEPTION_SHAPES,
    "perception_shapes_checks": PERCEPTION_SHAPES_CHECKS,
    "eval_default": _eval_table(MODEL_EVAL, "0"),
    "eval_test_block": _eval_table("eval_default_test_block.json", "1"),
    "rl_vs_bc_dagger": RL_VS_BC,
    "recipe_vs_previous": RECIPE_VS_PREVIOUS,
    "robustness_vs_previous": ROBUSTNESS_VS_PREVIOUS,
    "elastic_budget": ELASTIC,
    "elastic_amd_epyc": elastic_one(ELASTIC_HEADLINE),
    "elastic_runs": ELASTIC_RUNS,
    "elastic_xeon": elastic_one("elastic_budget.json"),
    "elastic_h100": elastic_one("elastic_budget_quick_h100.json"),
    "elastic_poll_cost": POLL_COST,
    "node_footprint": NODE_FOOTPRINT,
    "machine_noise": MACHINE_NOISE,
    "budget_sources_live": BUDGET_SOURCES,
    "node_backend_cuda": NODE_BACKEND,
    "push_failures": PUSH_FAILURES,
    "driving_failures": DRIVING_FAILURES,
    "ros_graph_success": ROS_GRAPH,
    "execution_test": EXECUTION_TEST,
    "execution_validation": EXECUTION_VALIDATION,
    "execution_graph": EXECUTION_GRAPH,
    "execution_decode": EXECUTION_DECODE,
    "train_compare": TRAIN_COMPARE,
    "dataset_bc": DATASET_BC,
    "dataset_bc_seeds": DATASET_BC_SEEDS,
    "policy_embodiment": POLICY_EMBODIMENT,
    "robustness": ROBUSTNESS,
    "recipe_run": RECIPE_RUN,
    "recipe_run2": RECIPE_RUN2,
    "recipe_seed1": RECIPE_SEED1,
}

# --- rendering -------------------------------------------------------------------------------


class _Formatter(string.Formatter):
    def format_field(self, value, spec: str):
        if spec in ("ci", "ci.0", "ci.1", "ci.2"):
            d = int(spec[-1]) if "." in spec else 0
            return f"[{100 * value[0]:.{d}f}%, {100 * value[1]:.{d}f}%]"
        if spec == "yn":
            return "yes" if value else "no"
        if value is None:
            return "-"
        return super().format_field(value, spec)

    def get_field(self, field_name, args, kwargs):
        # Keys hold dots ("torch.cuda_hog_drop_mb"); read the longest key that is present before
        # treating a dot or bracket as an attribute or index.
        m = re.match(r"[^\[]+", field_name)
        first = m.group(0) if m else field_name
        if first in kwargs:
            obj = kwargs[first]
            for idx in re.findall(r"\[([^\]]+)\]", field_name[len(first):]):
                obj = obj[int(idx)] if idx.isdigit() and isinstance(obj, list) else obj[idx]
            return obj, first
        return super().get_field(field_name, args, kwargs)


FMT = _Formatter()


@cache
def figures(path: str) -> dict:
    return json.loads((REPO / path).read_text())


def fill(template: str, figs: dict) -> str:
    return FMT.vformat(template, (), figs)


def render(name: str) -> str:
    """The body of block `name`: the markdown table, its note and the files it is from."""
    spec = TABLES[name]
    lines = ["| " + " | ".join(spec.columns) + " |", "|" + "---|" * len(spec.columns)]
    sources: list[str] = []
    for row in spec.rows:
        figs = dict(figures(row.path))
        if spec.derive:
            figs.update(spec.derive(figs))
        var = {"file": f"`{row.path}`", "machine": machine(row.path), **row.vars}
        if row.met is not None:
            var["met"] = "yes" if row.met(figs) else "**no**"
        cells = []
        for template in spec.cells:
            for k, v in var.items():
                template = template.replace(f"<{k}>", str(v))
            try:
                cells.append(fill(template, figs))
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise ValueError(f"table {name}: {row.path}: cannot fill {template!r}: "
                                 f"{type(exc).__name__}: {exc}") from None
        lines.append("| " + " | ".join(cells) + " |")
        if row.path not in sources:
            sources.append(row.path)
    out = "\n".join(lines) + "\n\n"
    if spec.note:
        note_figs = dict(figures(sources[0]))
        if spec.derive:
            note_figs.update(spec.derive(note_figs))
        out += fill(spec.note, note_figs) + " "
    out += "From " + ", ".join(f"`{s}` ({_about(s)})" for s in sources)
    out += "; generated by `python bench/doc_tables.py`.\n"
    return out


def _about(path: str) -> str:
    what = [] if machine(path) == ANY else [machine(path)]
    what.append("command inside" if "command" in figures(path) else "no command recorded")
    return ", ".join(what)


def docs() -> list[Path]:
    return sorted({p for g in DOC_GLOBS for p in REPO.glob(g)})


def table_docs() -> list[Path]:
    """The documents whose tables are generated: the docs and the model card."""
    return [*docs(), *([REPO / MODEL_CARD] if (REPO / MODEL_CARD).exists() else [])]


def update(check: bool) -> list[str]:
    """Rewrites (or with `check`, only compares) every block; returns the problems: blocks
    that differ, blocks with no spec, specs in no document."""
    problems, seen = [], set()
    for doc in table_docs():
        text = doc.read_text()

        def one(m: re.Match, doc: Path = doc) -> str:
            name = m.group("name")
            seen.add(name)
            if name not in TABLES:
                problems.append(f"{doc.relative_to(REPO)}: block {name!r} has no spec in bench/doc_tables.py")
                return m.group(0)
            try:
                body = render(name)
            except (ValueError, OSError) as exc:
                problems.append(f"{doc.relative_to(REPO)}: {exc}")
                return m.group(0)
            if body != m.group("body"):
                problems.append(f"{doc.relative_to(REPO)}: block {name!r} differs from its JSON")
            return m.group(1) + body + m.group(4)

        new = MARKER.sub(one, text)
        if not check and new != text:
            doc.write_text(new)
    problems += [f"table {name!r} is in no document (add <!-- table: {name} --> ... <!-- /table -->)"
                 for name in TABLES if name not in seen]
    if not check:  # rewritten: only what cannot be fixed by a rewrite remains
        problems = [p for p in problems if "differs" not in p]
    return problems


# --- references ------------------------------------------------------------------------------


def citing_texts() -> dict[str, str]:
    """The documents that cite results: README.md, docs/*.md, the model card."""
    return {str(p.relative_to(REPO)): p.read_text() for p in [*docs(), REPO / MODEL_CARD]}


def results_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / RESULTS).rglob("*") if p.is_file())


def unreferenced() -> list[str]:
    """Files in bench/results/ that no document cites by their path."""
    text = "\n".join(citing_texts().values())
    return [f for f in results_files() if f not in text]


def missing_citations() -> list[str]:
    """`doc: path` for every bench/results/ path a document cites that does not exist (a glob
    must match a file)."""
    out = []
    for doc, text in citing_texts().items():
        for cited in sorted(set(CITED.findall(text))):
            path = cited.rstrip(".")
            if not glob.glob(str(REPO / path)):
                out.append(f"{doc}: {path}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming each block that differs from its JSON")
    args = parser.parse_args(argv)
    problems = update(check=args.check)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
