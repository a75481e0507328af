#!/usr/bin/env python3
"""What the instruction encoder costs: cold load, per-instruction encode, cached lookup.

The policy will read a sentence embedding of its instruction (models/policy/elastic_vla/
instruction_encoder.py, the packaged Universal Sentence Encoder). An instruction changes
rarely and frames come at 10-20 Hz, so the encoder caches one vector per instruction string:
the cost that matters per frame is the cached lookup, and the per-instruction encode is paid
once when a new instruction arrives. Measured here, one thread (as the policy node runs):

- ``cold_load_s``: in a fresh process (a subprocess, nothing warm), the package's import, the
  weights, the 128k-piece vocabulary and the first sentence; ``package_import_s`` is the
  import of ``models.policy.elastic_vla`` before it (torch: paid by the policy anyway);
- the machine's 1-minute load average before and after: on a busy machine (a training run
  on both cores) every figure is an upper bound;
- ``encode_ms_p50`` / ``_p99``: encoding each of N distinct instructions (generator
  paraphrases of both worlds' tasks, sim/worlds/paraphrase.py), one call each, cache missed;
- ``lookup_us_p50`` / ``_p99``: ``encode`` of an instruction already in the cache.

    python bench/instruction_encoder.py [--quick] [--n 200] [--json PATH]
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import numpy as np

import benchlib

COLD = """
import time; t0 = time.perf_counter()
from embodied_stack.models.policy.elastic_vla.instruction_encoder import InstructionEncoder
t1 = time.perf_counter()
enc = InstructionEncoder(); enc.encode("touch the red cube")
print(t1 - t0, time.perf_counter() - t1)
"""


def distinct_instructions(n: int, seed: int = 0) -> list[str]:
    from embodied_stack.sim.worlds.paraphrase import paraphrase_instruction, task_prototypes

    rng = np.random.default_rng(seed)
    canon = {w: [t for ts in task_prototypes(w).values() for t in ts] for w in ("tabletop", "driving")}
    out: dict[str, None] = {}
    while len(out) < n:
        world = "tabletop" if rng.random() < 0.6 else "driving"
        text = canon[world][int(rng.integers(len(canon[world])))]
        out[paraphrase_instruction(world, text, rng)] = None
    return list(out)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__)
    p.add_argument("--n", type=int, default=200, help="distinct instructions to encode")
    p.add_argument("--cold-runs", type=int, default=3, help="fresh processes for the cold load")
    args = p.parse_args(argv)
    n = 50 if args.quick else args.n
    cold_runs = 1 if args.quick else args.cold_runs

    import torch  # noqa: F401  (imported by the stack anyway; keeps its thread pools small)

    torch.set_num_threads(1)
    from embodied_stack.models.policy.elastic_vla.instruction_encoder import (
        EMBEDDING_DIM,
        ENCODER_NAME,
        InstructionEncoder,
    )

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cold: list[float] = []
    imports: list[float] = []
    load_before = os.getloadavg()
    for _ in range(cold_runs):
        r = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, env=env,
                           check=True)
        imp, load = r.stdout.strip().splitlines()[-1].split()
        cold.append(float(load))
        imports.append(float(imp))

    texts = distinct_instructions(n)
    enc = InstructionEncoder(cache_size=4 * n)
    enc.load()
    enc.encode("warm up the encoder")  # first call: lazy tokenizer tables
    encode_s = []
    for t in texts:
        t0 = time.perf_counter()
        enc.encode(t)
        encode_s.append(time.perf_counter() - t0)
    lookups = []
    for _ in range(20):
        for t in texts:
            t0 = time.perf_counter()
            enc.encode(t)
            lookups.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    enc2 = InstructionEncoder(cache_size=4 * n, backend=enc._backend)
    enc2.encode_batch(texts)
    batch_s = time.perf_counter() - t0

    e = np.array(encode_s) * 1e3
    lk = np.array(lookups) * 1e6
    out = {
        "encoder": ENCODER_NAME, "embedding_dim": EMBEDDING_DIM, "cpu": cpu_name(),
        "threads": 1, "instructions": len(texts),
        "cold_load_s": float(np.median(cold)), "cold_load_s_runs": [round(c, 3) for c in cold],
        "package_import_s": float(np.median(imports)),
        "loadavg_1min_before": load_before[0], "loadavg_1min_after": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "encode_ms_p50": float(np.percentile(e, 50)), "encode_ms_p99": float(np.percentile(e, 99)),
        "encode_ms_mean": float(e.mean()),
        "batch_encode_ms_per_instruction": batch_s * 1e3 / len(texts),
        "lookup_us_p50": float(np.percentile(lk, 50)), "lookup_us_p99": float(np.percentile(lk, 99)),
        "lookups": len(lookups), "mean_words": float(np.mean([len(t.split()) for t in texts])),
        "quick": args.quick,
    }
    benchlib.print_table(
        f"instruction encoder ({ENCODER_NAME}, {EMBEDDING_DIM}-d) on {out['cpu']}, 1 thread",
        ("item", "p50", "p99"),
        [("import embodied_stack's elastic_vla (torch)", f"{out['package_import_s']:.2f} s", ""),
         ("cold load + first encode (fresh process)", f"{out['cold_load_s']:.2f} s", ""),
         (f"encode, {len(texts)} distinct instructions", f"{out['encode_ms_p50']:.2f} ms",
          f"{out['encode_ms_p99']:.2f} ms"),
         ("encode, one batch of all (per instruction)",
          f"{out['batch_encode_ms_per_instruction']:.2f} ms", ""),
         ("cached lookup (per frame)", f"{out['lookup_us_p50']:.2f} us", f"{out['lookup_us_p99']:.2f} us")])
    return benchlib.write_json(args.json, out, __file__, argv, digits=4)


if __name__ == "__main__":
    main()
