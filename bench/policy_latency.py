#!/usr/bin/env python3
"""Policy latency: ElasticVLA select_action per named submodel and runtime.

For every named submodel: p50/p95 of ``select_action`` at batch 1 (torch eager, ONNX Runtime;
torch CUDA eager and CUDA graphs when a GPU is present), throughput at batch 32 (batch 256 on
CUDA), active parameter count and weight memory; the submodel switch time and the weight
memory a switch adds; ORT vs torch agreement. Runtimes are measured interleaved (round robin,
several rounds) so background load hits them alike and their ratios stay fair.

    python bench/policy_latency.py [--quick] [--json out.json] [--table latency_table.json]

--table measures the elastic node's latency table for this machine (p50/p95/p99 per submodel,
interleaved rounds, re-measured while not monotone) and merges it into the file.

JSON keys (docs/benchmarks.md): full_p50_ms, smallest_over_full, switch_ms, switch_extra_mb,
ort_speedup (full, batch 1), ort_max_abs_diff (max over the exported submodels),
reference_decoder_p50_ms and full_over_reference (a plain 4-layer d=128 decoder timed
interleaved with the full model: a load gauge for a shared machine), plus
<runtime>_<submodel>_{p50_ms,p95_ms,b32_obs_per_s} and <submodel>_{params,weight_mb}
(submodel names with "/" written "_": 3_4, 1_2, 1_4); ort_smallest_over_full; for a model
with a target keypoint that vehicles do not use, ort_vehicle_<submodel>_{p50_ms,p95_ms} and
ort_vehicle_smallest_over_full (a vehicle's observation: the graph without the keypoint,
timed in the same rounds); ort_paced_<submodel>_{p50_ms,p95_ms}: the same calls with
CONTROL_PAUSE_S between them, as a control loop makes them and the latency table is timed;
on CUDA cuda_graph_p50_ms and
cuda_b256_obs_per_s. --quick exports/measures ORT for full and the smallest submodel only
(ONNX exports are cached in --cache-dir, so later runs skip them).
"""

from __future__ import annotations

import copy
import gc
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from embodied_stack.control.elastic.latency_table import (
    CONTROL_PAUSE_S,
    device_key,
    measure_policy_table,
    write_latency_table,
)
from embodied_stack.models.elastic.submodels import NAMED_SUBMODELS, resident_weight_bytes
from embodied_stack.models.policy.elastic_vla import ElasticVLA
from embodied_stack.models.policy.interface import Observation
from embodied_stack.models.runtime import default_cache_dir
from embodied_stack.models.runtime.profiling import measure_latency, percentiles, rss_bytes
from embodied_stack.models.runtime.torch_runtime import TorchRuntime

import benchlib

MB = 1 << 20


def key(name: str) -> str:
    return name.replace("/", "_")


def observations(n: int, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    words = ["touch the red cube", "push the blue ball to the left", "keep the lane", "change to the left lane"]
    out = []
    for i in range(n):
        emb = "arm" if i % 2 == 0 else "vehicle"
        out.append(
            Observation(
                rgb=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                depth=(rng.random((64, 64), dtype=np.float32) * 3.0),
                instruction=words[i % len(words)],
                proprio=rng.standard_normal(8).astype(np.float32),
                embodiment=emb,
                stamp=float(i),
            )
        )
    return out


def timed_select(model: ElasticVLA, runtime, obs: Observation, n: int, pause_s: float = 0.0) -> list[float]:
    model.use_runtime(runtime)
    return measure_latency(lambda: model.select_action(obs), iters=n, warmup=0, pause_s=pause_s)


def interleaved_latency(model, jobs, obs, rounds: int, per_round: int, warmup: int, bar,
                        obs_of: dict | None = None, pause_of: dict | None = None) -> dict:
    """jobs: {(runtime_name, submodel): runtime or None}, each on `obs` (or on
    ``obs_of[runtime_name]``), each call after a pause of ``pause_of[runtime_name]`` s (none
    by default). Round robin; returns samples."""
    obs_of, pause_of = obs_of or {}, pause_of or {}
    samples = {j: [] for j in jobs}
    for (rt_name, sub), rt in jobs.items():
        model.set_submodel(sub)
        timed_select(model, rt, obs_of.get(rt_name, obs), warmup)
    for _ in range(rounds):
        for (rt_name, sub), rt in jobs.items():
            model.set_submodel(sub)
            samples[(rt_name, sub)] += timed_select(model, rt, obs_of.get(rt_name, obs), per_round,
                                                    pause_of.get(rt_name, 0.0))
            bar.update(1)
    model.use_runtime(None)
    return samples


class ReferenceDecoder(torch.nn.Module):
    """A yardstick: a plain 4-layer d=128 pre-norm decoder over 80 tokens (fused QKV,
    SwiGLU 512, no rotary). Timed interleaved with the full model, it tells how loaded the
    machine is right now."""

    def __init__(self, d: int = 128, heads: int = 4, ffn: int = 512, layers: int = 4):
        super().__init__()
        nn = torch.nn
        self.heads = heads
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(n1=nn.RMSNorm(d), qkv=nn.Linear(d, 3 * d, bias=False), o=nn.Linear(d, d, bias=False),
                               n2=nn.RMSNorm(d), g=nn.Linear(d, ffn, bias=False), u=nn.Linear(d, ffn, bias=False),
                               dn=nn.Linear(ffn, d, bias=False)))
            for _ in range(layers)
        )

    def forward(self, x):
        b, n, d = x.shape
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["n1"](x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            x = x + blk["o"](a.transpose(1, 2).reshape(b, n, d))
            h = blk["n2"](x)
            x = x + blk["dn"](torch.nn.functional.silu(blk["g"](h)) * blk["u"](h))
        return x


def reference_vs_full(model, obs, rounds: int, per_round: int) -> dict:
    ref, x = ReferenceDecoder().eval(), torch.randn(1, 80, 128)
    model.set_submodel("full")
    t_ref, t_full = [], []
    with torch.inference_mode():
        for _ in range(rounds):
            for _ in range(per_round):
                t0 = time.perf_counter()
                ref(x)
                t_ref.append(time.perf_counter() - t0)
            t_full += timed_select(model, None, obs, per_round)
    r, f = float(np.median(t_ref) * 1e3), float(np.median(t_full) * 1e3)
    return {"reference_decoder_p50_ms": r, "full_over_reference": f / r}


def throughput(run, batch, iters: int, sync=None) -> float:
    run(batch)
    if sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        run(batch)
    if sync:
        sync()
    return iters * batch["pixels"].shape[0] / (time.perf_counter() - t0)


def measure_switch(model: ElasticVLA, names: list[str], cycles: int) -> dict:
    gc.collect()
    model.set_submodel("full")
    weights0, rss0 = resident_weight_bytes(model), rss_bytes()
    t0 = time.perf_counter()
    for name in names:  # first switch into each submodel builds its views (metadata only)
        model.set_submodel(name)
    first_ms = (time.perf_counter() - t0) / len(names) * 1e3
    times = []
    for _ in range(cycles):
        for name in names:
            t = time.perf_counter()
            model.set_submodel(name)
            times.append(time.perf_counter() - t)
    weights1, rss1 = resident_weight_bytes(model), rss_bytes()
    model.set_submodel("full")
    return {
        "switch_ms": float(np.median(times) * 1e3),
        "switch_p95_ms": float(np.percentile(times, 95) * 1e3),
        "switch_first_ms": first_ms,
        "switch_extra_mb": (weights1 - weights0) / MB,
        "switch_rss_delta_mb": (rss1 - rss0) / MB,
    }


def ort_max_diff(model, ort, names, batch) -> dict[str, float]:
    out = {}
    with torch.inference_mode():
        for name in names:
            model.set_submodel(name)
            ref = model.batch_logits(batch)
            out[name] = float((ref - ort.run(batch, name)).abs().max())
    model.set_submodel("full")
    return out


def cuda_figures(model, names, obs_list, quick: bool, bar, compile: bool = True) -> tuple[dict, dict]:
    """Torch on CUDA: eager with bf16 autocast, and bf16 weights (torch.compile'd unless
    --no-compile) replayed as CUDA graphs.

    cuda_*_p50_ms / cuda_graph_*_p50_ms time the whole select_action (host preprocessing, copies,
    argmax, device->host); cuda_graph_*_forward_p50_ms times the graph replay alone."""
    res, table = {}, {}
    eager_model, graph_model = copy.deepcopy(model), copy.deepcopy(model)
    eager = TorchRuntime(eager_model, device="cuda", precision="bf16")
    sync = torch.cuda.synchronize
    b1 = graph_model.obs_to_batch(obs_list[:1], device="cuda")
    b256 = graph_model.obs_to_batch([obs_list[i % len(obs_list)] for i in range(256)], device="cuda")
    t0 = time.perf_counter()
    try:
        graph = TorchRuntime(graph_model, device="cuda", precision="bf16", cast=True, cuda_graph=True, compile=compile)
        graph.prepare(names, b1)
        graph.prepare(names, b256)
    except Exception as e:  # noqa: BLE001 - e.g. no Triton / C compiler for Inductor
        if not compile:
            raise
        print(f"torch.compile failed ({type(e).__name__}: {e}); CUDA graphs without it", file=sys.stderr)
        graph_model = copy.deepcopy(model)
        graph = TorchRuntime(graph_model, device="cuda", precision="bf16", cast=True, cuda_graph=True)
        graph.prepare(names, b1)
        graph.prepare(names, b256)
    res["cuda_graph_prepare_s"] = time.perf_counter() - t0
    res["cuda_graph_runtime"] = graph.description
    iters = 200 if quick else 1000
    for name in names:
        for label, m, rt in (("cuda", eager_model, eager), ("cuda_graph", graph_model, graph)):
            m.set_submodel(name)
            m.use_runtime(rt)
            for _ in range(20):
                m.select_action(obs_list[0])
            sync()
            t = []
            for _ in range(iters):
                t0 = time.perf_counter()
                m.select_action(obs_list[0])  # ends in .cpu(): synchronous
                t.append(time.perf_counter() - t0)
            m.use_runtime(None)
            p = percentiles(t)
            res[f"{label}_{key(name)}_p50_ms"] = p["p50_ms"]
            res[f"{label}_{key(name)}_p95_ms"] = p["p95_ms"]
            if label == "cuda_graph":
                table[name] = {"p50_ms": p["p50_ms"], "p95_ms": p["p95_ms"], "runtime": graph.description}
        fwd = []
        for _ in range(iters):
            t0 = time.perf_counter()
            graph.run(b1, name)
            sync()
            fwd.append(time.perf_counter() - t0)
        res[f"cuda_graph_{key(name)}_forward_p50_ms"] = percentiles(fwd)["p50_ms"]
        res[f"cuda_graph_{key(name)}_b256_obs_per_s"] = throughput(
            lambda b, n=name: graph.run(b, n), b256, 20 if quick else 100, sync
        )
        res[f"cuda_{key(name)}_b256_obs_per_s"] = throughput(
            lambda b, n=name: eager.run(b, n), b256, 20 if quick else 100, sync
        )
        # Parity with the CPU fp32 reference on the same 256 observations: bf16 logits differ
        # by rounding, so the figure of merit is how often the chosen action bin agrees.
        model.set_submodel(name)
        with torch.inference_mode():
            ref = model.batch_logits({k: v.cpu() for k, v in b256.items()}).float()
        got = graph.run(b256, name).float().cpu()
        res[f"cuda_graph_{key(name)}_max_abs_logit_diff"] = float((got - ref).abs().max())
        res[f"cuda_graph_{key(name)}_argmax_agreement"] = float(
            (got.argmax(-1) == ref.argmax(-1)).float().mean())
        model.set_submodel("full")
        bar.update(1)
    res["cuda_graph_p50_ms"] = res["cuda_graph_full_p50_ms"]
    res["cuda_graph_forward_p50_ms"] = res["cuda_graph_full_forward_p50_ms"]
    res["cuda_eager_p50_ms"] = res["cuda_full_p50_ms"]
    res["cuda_b256_obs_per_s"] = res["cuda_graph_full_b256_obs_per_s"]
    res["cuda_device"] = torch.cuda.get_device_name()
    return res, table


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__)
    parser.add_argument("--table", metavar="PATH", help="merge this device's latency table into PATH")
    parser.add_argument("--table-runtime", choices=("torch", "onnxruntime"), default="torch",
                        help="which CPU runtime's numbers go into --table (default torch eager)")
    parser.add_argument("--model", metavar="DIR",
                        help="ElasticVLA.from_pretrained folder (default: random init, seed 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch / ORT intra-op threads (default 2)")
    parser.add_argument("--cache-dir", default=None,
                        help="ONNX export cache (default models.runtime.default_cache_dir())")
    parser.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--no-cuda", action="store_true", help="skip CUDA even when available")
    parser.add_argument("--no-compile", action="store_true", help="CUDA graphs without torch.compile")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ElasticVLA.from_pretrained(args.model) if args.model else ElasticVLA()
    model.eval()
    names = list(NAMED_SUBMODELS)
    smallest = names[-1]
    obs_list = observations(32)
    obs = obs_list[0]
    cache_dir = args.cache_dir or str(default_cache_dir())

    rounds, per_round, warmup = (5, 20, 10) if args.quick else (10, 60, 30)
    b32_iters = 5 if args.quick else 20
    ort_names = [] if args.no_ort else (["full", smallest] if args.quick else names)
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    steps = len(ort_names) + rounds * (len(names) + 3 * len(ort_names)) + 2 + (len(names) if use_cuda else 0)
    bar = tqdm(total=steps, desc="policy latency", unit="step", file=sys.stderr)

    res: dict[str, object] = {"threads": args.threads, "cpu": device_key("cpu"), "quick": args.quick}
    ort = None
    if ort_names:
        from embodied_stack.models.runtime.onnx_runtime import OnnxRuntime

        ort = OnnxRuntime(model, cache_dir=cache_dir, submodels=[], intra_op_threads=args.threads)
        for name in ort_names:
            bar.set_postfix_str(f"ONNX export/load {name}")
            t0 = time.perf_counter()
            ort.prepare([name])
            res[f"ort_{key(name)}_prepare_s"] = time.perf_counter() - t0
            bar.update(1)
        res["ort_opset"] = ort.opset
        res["ort_version"] = ort._ort.__version__
    bar.set_postfix_str("batch-1 latency")
    jobs = {("torch", n): None for n in names}
    jobs.update({("ort", n): ort for n in ort_names})
    # A vehicle does not use the target keypoint: select_action runs the graph without it
    # (ElasticVLA.uses_keypoint), timed in the same rounds as the arm's
    vehicle = next((o for o in obs_list if o.embodiment == "vehicle"), None)
    lean = (ort is not None and vehicle is not None and model.keypoint is not None
            and not model.uses_keypoint("vehicle"))
    if lean:
        jobs.update({("ort_vehicle", n): ort for n in ort_names})
    # ... and paced as a control loop calls it (the latency table's way: CONTROL_PAUSE_S
    # between calls, its pool threads asleep in between)
    jobs.update({("ort_paced", n): ort for n in ort_names})
    samples = interleaved_latency(model, jobs, obs, rounds, per_round, warmup, bar,
                                  obs_of={"ort_vehicle": vehicle}, pause_of={"ort_paced": CONTROL_PAUSE_S})

    bar.set_postfix_str("batch-32 throughput")
    b32 = model.obs_to_batch(obs_list)
    torch_rt = TorchRuntime(model)
    resident = resident_weight_bytes(model)
    table_entries = {}
    for name in names:
        model.set_submodel(name)
        params = model.active_parameter_count()
        res[f"{key(name)}_params"] = params
        res[f"{key(name)}_decoder_params"] = model.active_parameter_count(decoder_only=True)
        res[f"{key(name)}_weight_mb"] = params * 4 / MB
        for rt_name in ("torch", "ort", "ort_vehicle", "ort_paced"):
            if (rt_name, name) not in samples:
                continue
            p = percentiles(samples[(rt_name, name)])
            res[f"{rt_name}_{key(name)}_p50_ms"] = p["p50_ms"]
            res[f"{rt_name}_{key(name)}_p95_ms"] = p["p95_ms"]
            if rt_name in ("ort_vehicle", "ort_paced"):
                continue
            rt = torch_rt if rt_name == "torch" else ort
            res[f"{rt_name}_{key(name)}_b32_obs_per_s"] = throughput(
                lambda b, r=rt, n=name: r.run(b, n), b32, b32_iters)
        src = "ort" if args.table_runtime == "onnxruntime" and ("ort", name) in samples else "torch"
        table_entries[name] = {
            "p50_ms": res[f"{src}_{key(name)}_p50_ms"],
            "p95_ms": res[f"{src}_{key(name)}_p95_ms"],
            "weight_mb": res[f"{key(name)}_weight_mb"],
            "resident_mb": resident / MB,
            "params": params,
            "runtime": "torch:cpu:fp32" if src == "torch" else ort.description,
        }
    model.set_submodel("full")
    bar.update(1)

    bar.set_postfix_str("reference")
    res.update(reference_vs_full(model, obs, rounds, per_round))
    bar.set_postfix_str("switch")
    res.update(measure_switch(model, names, 200 if args.quick else 1000))
    res["resident_weight_mb"] = resident / MB
    res["total_params"] = model.parameter_count()
    res["full_p50_ms"] = res["torch_full_p50_ms"]
    res["smallest_submodel"] = smallest
    res["smallest_over_full"] = res[f"torch_{key(smallest)}_p50_ms"] / res["torch_full_p50_ms"]
    if ort is not None:
        diffs = ort_max_diff(model, ort, ort_names, model.obs_to_batch(obs_list[:8]))
        for name, d in diffs.items():
            res[f"ort_{key(name)}_max_abs_diff"] = d
            res[f"ort_{key(name)}_speedup"] = res[f"torch_{key(name)}_p50_ms"] / res[f"ort_{key(name)}_p50_ms"]
        res["ort_max_abs_diff"] = max(diffs.values())
        res["ort_speedup"] = res["ort_full_speedup"]
        res["ort_smallest_over_full"] = res[f"ort_{key(ort_names[-1])}_p50_ms"] / res["ort_full_p50_ms"]
        if lean:
            res["ort_vehicle_smallest_over_full"] = (res[f"ort_vehicle_{key(ort_names[-1])}_p50_ms"]
                                                     / res["ort_vehicle_full_p50_ms"])
    bar.update(1)

    cuda_table = {}
    if use_cuda:
        bar.set_postfix_str("cuda")
        cuda_res, cuda_table = cuda_figures(model, names, obs_list, args.quick, bar, compile=not args.no_compile)
        for name in cuda_table:
            cuda_table[name]["weight_mb"] = res[f"{key(name)}_weight_mb"]
            cuda_table[name]["params"] = res[f"{key(name)}_params"]
        res.update(cuda_res)
    bar.close()

    print_table(res, names, ort_names, use_cuda)
    if args.table:
        # The table the elastic node reads: measured on its own, interleaved over several
        # rounds, re-measured while not monotone (control/elastic/latency_table.py).
        table_rt = "torch:cpu:fp32"
        if args.table_runtime == "onnxruntime" and ort is not None:
            ort.prepare(names)
            model.use_runtime(ort)
            table_rt = ort.description
        t_rounds, t_iters = (4, 50) if args.quick else (10, 200)
        entries, bad = measure_policy_table(model, table_rt,
                                            rounds=t_rounds, iters=t_iters)
        model.use_runtime(None)
        for name, e in entries.items():
            e["resident_mb"] = table_entries[name]["resident_mb"]
        if bad:
            print(f"warning: latency table still not monotone after {entries[names[0]]['attempts']}"
                  f" attempts: {bad}", file=sys.stderr)
        write_latency_table(args.table, device_key("cpu"), entries)
        if cuda_table:
            write_latency_table(args.table, device_key("cuda"), cuda_table)
    res["command"] = benchlib.command_line(__file__, argv)
    benchlib.write_json(args.json, res, digits=6)
    return res


def print_table(res: dict, names, ort_names, use_cuda: bool) -> None:
    cols = ["submodel", "params", "weight MB", "torch p50", "torch p95", "torch b32 obs/s",
            "ORT p50", "ORT p95", "ORT b32 obs/s", "ORT x", "ORT max|diff|", "ORT vehicle p50"]
    if use_cuda:
        cols += ["CUDA p50", "graph p50", "graph fwd", "graph b256 obs/s"]
    rows = []
    for n in names:
        k = key(n)
        f = lambda name, fmt: (fmt.format(res[name]) if name in res else "-")  # noqa: E731
        row = [n, f(f"{k}_params", "{:,}"), f(f"{k}_weight_mb", "{:.2f}"), f(f"torch_{k}_p50_ms", "{:.2f} ms"),
               f(f"torch_{k}_p95_ms", "{:.2f} ms"), f(f"torch_{k}_b32_obs_per_s", "{:,.0f}"),
               f(f"ort_{k}_p50_ms", "{:.2f} ms"), f(f"ort_{k}_p95_ms", "{:.2f} ms"),
               f(f"ort_{k}_b32_obs_per_s", "{:,.0f}"), f(f"ort_{k}_speedup", "{:.2f}"),
               f(f"ort_{k}_max_abs_diff", "{:.1e}"), f(f"ort_vehicle_{k}_p50_ms", "{:.2f} ms")]
        if use_cuda:
            row += [f(f"cuda_{k}_p50_ms", "{:.3f} ms"), f(f"cuda_graph_{k}_p50_ms", "{:.3f} ms"),
                    f(f"cuda_graph_{k}_forward_p50_ms", "{:.3f} ms"), f(f"cuda_graph_{k}_b256_obs_per_s", "{:,.0f}")]
        rows.append(row)
    title = (f"ElasticVLA select_action, batch 1 ({res['threads']} threads, {res['cpu']}); targets: full <= 5 ms, "
             f"smallest/full <= 0.35, ORT >= 1.5x")
    summary = (f"full p50 {res['full_p50_ms']:.2f} ms | smallest/full {res['smallest_over_full']:.2f} | "
               f"switch {res['switch_ms'] * 1e3:.0f} us (first {res['switch_first_ms'] * 1e3:.0f} us), "
               f"+{res['switch_extra_mb']:.3f} MB weights, RSS {res['switch_rss_delta_mb']:+.2f} MB | "
               f"resident weights {res['resident_weight_mb']:.2f} MB for the whole family")
    summary += (f" | reference decoder {res['reference_decoder_p50_ms']:.2f} ms, "
                f"full = {res['full_over_reference']:.2f}x it")
    if "ort_speedup" in res:
        summary += f" | ORT speedup {res['ort_speedup']:.2f}x, max|diff| {res['ort_max_abs_diff']:.1e}"
    benchlib.print_table(title, cols, rows, width=200, footer=summary)


if __name__ == "__main__":
    main()
