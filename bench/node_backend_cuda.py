"""The policy node's GPU backend path, without ROS: the shipped model loaded as policy_node
loads it (`load_default_policy` + `make_vla_runtime`, the code behind `device:=cuda
runtime:=torch precision:=... cuda_graph:=...`), driven through `select_action` one
observation at a time as the node's worker drives it.

Prints a table and writes JSON: per configuration the select_action p50/p99 latency (ms) and,
for reduced precision, the share of observations whose action chunk equals fp32's exactly and
the largest action difference. Observations: real frames of both worlds from `--observations`
(an .npz written by `--write-observations` on a machine with the simulator), else rendered
here.

    python bench/node_backend_cuda.py [--quick] --json bench/results/node_backend_cuda_h100.json
"""

from __future__ import annotations

import time

import numpy as np

import benchlib


def observations_from_sim(n: int):
    import gymnasium as gym

    import embodied_stack.sim  # noqa: F401
    from embodied_stack.sim import WORLD_IDS
    from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

    out = {k: [] for k in ("rgb", "depth", "proprio", "instruction", "embodiment")}
    for world, emb in EMBODIMENT_OF_WORLD.items():
        env = gym.make(WORLD_IDS[world])
        seed = 500_000
        while len([e for e in out["embodiment"] if e == emb]) < n // 2:
            obs, _ = env.reset(seed=seed)
            seed += 1
            for _ in range(8):
                out["rgb"].append(obs["rgb"])
                out["depth"].append(obs["depth"])
                out["proprio"].append(obs["proprio"])
                out["instruction"].append(str(obs["instruction"]))
                out["embodiment"].append(emb)
                obs, _, term, trunc, _ = env.step(env.action_space.sample())
                if term or trunc:
                    break
        env.close()
    return {k: np.asarray(v) for k, v in out.items()}


def main(argv=None) -> dict:
    parser = benchlib.parser(__doc__, quick="100 observations, same code path")
    parser.add_argument("--observations", help=".npz of observations (default: render them)")
    parser.add_argument("--write-observations", metavar="PATH", help="render, save, exit")
    parser.add_argument("--n", type=int, default=None, help="observations (default 400, --quick 100)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    args.n = args.n or (100 if args.quick else 400)
    if args.write_observations:
        np.savez_compressed(args.write_observations, **observations_from_sim(args.n))
        return {}
    import torch

    from embodied_stack.models.policy import load_default_policy
    from embodied_stack.models.policy.interface import Observation
    from embodied_stack.models.runtime import make_vla_runtime

    data = (dict(np.load(args.observations)) if args.observations
            else observations_from_sim(args.n))
    obs = [Observation(rgb=data["rgb"][i], depth=data["depth"][i], proprio=data["proprio"][i],
                       instruction=str(data["instruction"][i]),
                       embodiment=str(data["embodiment"][i]), stamp=0.0)
           for i in range(len(data["rgb"]))]
    configs = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    if not args.device.startswith("cuda"):
        configs = configs[:1]  # (a dry run of the code path; bf16 and graphs need CUDA)
    res = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "observations": len(obs), "torch": torch.__version__}
    chunks = {}
    for precision, graph in configs:
        policy = load_default_policy()
        rt = make_vla_runtime(policy, "torch", args.device, precision, graph)
        policy.use_runtime(rt)
        for o in obs[:20]:  # warm-up
            policy.select_action(o)
        lat, out = [], []
        for o in obs:
            t0 = time.perf_counter()
            out.append(policy.select_action(o).chunk)
            lat.append(time.perf_counter() - t0)
        key = f"{precision}{'_graph' if graph else ''}"
        lat = np.array(lat) * 1e3
        res[f"{key}_p50_ms"] = float(np.percentile(lat, 50))
        res[f"{key}_p99_ms"] = float(np.percentile(lat, 99))
        res[f"{key}_runtime"] = rt.description
        chunks[key] = out
    for key in chunks:
        if key == "fp32":
            continue
        same = [np.array_equal(a, b) for a, b in zip(chunks["fp32"], chunks[key])]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(chunks["fp32"], chunks[key]))
        res[f"{key}_chunk_agreement"] = float(np.mean(same))
        res[f"{key}_max_action_diff"] = diff
    res["quick"] = args.quick
    benchlib.print_table(
        f"The policy node's GPU backend, select_action ({res['device']}, {len(obs)} observations)",
        ("config", "runtime", "p50 ms", "p99 ms", "= fp32", "max diff"),
        [(key, res[key + "_runtime"], f"{res[key + '_p50_ms']:.3f}", f"{res[key + '_p99_ms']:.3f}",
          f"{res.get(key + '_chunk_agreement', 1.0):.1%}", f"{res.get(key + '_max_action_diff', 0.0):.4f}")
         for key in chunks], left=2)
    return benchlib.write_json(args.json, res, __file__, argv)


if __name__ == "__main__":
    main()
