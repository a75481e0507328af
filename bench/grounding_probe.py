#!/usr/bin/env python3
"""Can the ElasticVLA find the named object? A short, side-by-side probe of what limits the
tabletop: the same model trained from scratch on the same tabletop demonstrations, with and
without a *pointing* loss (a per-image-token head that must pick the patch holding the named
target's centre, projected with the camera model), judged on held-out episodes by

- val_point_acc: share of states where the pointing head picks the target's patch,
- val_xy_rmse_cm: error of the auxiliary head's fingertip -> target offset (cm),
- val_ce: the action tokens' cross-entropy.

Both variants run at once (one thread each) for the same wall time, so they see the same
machine. A probe, not a recipe: it tells whether grounding is learnable at this scale.
`--variants pointing readout` compares the pointing loss alone with a *readout*: the pointing
head sits after half the decoder layers, a spatial soft-argmax of its logits gives the
target's image coordinates (the expected patch centre), and a linear embedding of them is
added to the action queries before the remaining layers (keypoints as in Levine et al.
2016's visuomotor policies): the queries are handed where the named object is.
`--variants baseline oracle` is the upper bound of any such readout: the action queries get
the *true* target patch centre (embedded the same way) at the input, in training and in
validation. If the oracle does not lower the action cross-entropy and the offset error much,
grounding is not what limits the tabletop.

    python bench/grounding_probe.py --minutes 14 --json bench/results/grounding_probe.json
    python bench/grounding_probe.py --minutes 14 --variants pointing readout \
        --json bench/results/grounding_probe_readout.json
    python bench/grounding_probe.py --minutes 14 --variants baseline oracle \
        --json bench/results/grounding_probe_oracle.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time

import numpy as np


def _target_patches(d: dict, grid: int) -> np.ndarray:
    """Patch index of the chosen target's centre in every recorded tabletop state."""
    from embodied_stack.sim.train.trainer import target_image_position

    uv = target_image_position("tabletop", d, slice(0, len(d["proprio"])))
    if not np.isfinite(uv).all():
        raise ValueError("a recorded target lies outside the camera image; the probe needs every one inside")
    cells = np.minimum(np.floor(uv * grid).astype(np.int64), grid - 1)
    return cells[:, 1] * grid + cells[:, 0]


def run_variant(variant: str, minutes: float, train_dir: str, val_dir: str, seed: int, out):
    import torch
    import torch.nn.functional as F

    import embodied_stack.sim  # noqa: F401
    from embodied_stack.models.policy.elastic_vla import ElasticVLA
    from embodied_stack.models.policy.elastic_vla_config import ElasticVLAConfig
    from embodied_stack.sim.train import demos
    from embodied_stack.sim.train.trainer import StateBuffer, instruction_tokenizer, masked_cross_entropy

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = ElasticVLAConfig(depth_encoding="log", depth_max_m=100.0, aux_dim=6, vision_stem="conv",
                           proprio_inputs={"arm": [0, 1, 2, 6], "vehicle": [0]})
    model = ElasticVLA(cfg, instruction_tokenizer(("tabletop", "driving")))
    grid = cfg.image_size // cfg.patch_size
    n_img = cfg.num_image_tokens
    head = torch.nn.Linear(cfg.hidden_size, 1)  # the pointing head (probe only)
    # readout: normalise mid-decoder image states, soft-argmax, embed the (x, y) for the queries
    mid_norm = torch.nn.RMSNorm(cfg.hidden_size)
    coord_embed = torch.nn.Linear(2, cfg.hidden_size)
    cells = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    cell_xy = torch.stack(torch.meshgrid(cells, cells, indexing="xy"), -1).reshape(-1, 2)
    tensors = {}
    for name, path in (("train", train_dir), ("val", val_dir)):
        d = demos.load(path)
        buf = StateBuffer(model)
        buf.add("tabletop", d)
        t = buf._world_tensors("tabletop")
        t["point"] = torch.from_numpy(_target_patches(d, grid))
        tensors[name] = t
    extra = list(head.parameters()) + list(mid_norm.parameters()) + list(coord_embed.parameters())
    opt = torch.optim.AdamW(list(model.parameters()) + extra, lr=1e-3, weight_decay=0.01)

    def forward(batch):
        b = batch["pixels"].shape[0]
        x = model.patch_embed(batch["pixels"].float()).flatten(2).transpose(1, 2) + model.vision_pos
        img = model.proj_out(F.gelu(model.proj_in(model.vision_norm(x))))
        words = F.embedding(batch["tokens"], model.tok_embed)
        state = (F.embedding(batch["embodiment"], model.embodiment_embed)
                 + model.proprio_proj(batch["proprio"])).unsqueeze(1)
        queries = model.action_queries.unsqueeze(0).expand(b, -1, -1)
        if variant == "oracle":  # the true target patch centre, handed to the queries
            queries = queries + coord_embed(cell_xy[batch["point"]]).unsqueeze(1)
        x = torch.cat([img, words, state, queries], 1)
        layers = list(model._active_layers)
        point = None
        if variant == "readout":
            half = len(layers) // 2
            for i in layers[:half]:
                x = model.layers[i](x, model.rope_cos, model.rope_sin)
            point = head(mid_norm(x[:, :n_img])).squeeze(-1)
            xy = torch.softmax(point, -1) @ cell_xy  # expected target position, [0, 1]^2
            q_add = torch.zeros_like(x)
            q_add[:, -cfg.num_action_tokens:] = coord_embed(xy).unsqueeze(1)
            x = x + q_add
            layers = layers[half:]
        for i in layers:
            x = model.layers[i](x, model.rope_cos, model.rope_sin)
        x = model.final_norm(x)
        q = x[:, -cfg.num_action_tokens:]
        if point is None:
            point = head(x[:, :n_img]).squeeze(-1)
        return model.action_head(q), model.aux_head(q.mean(1)), point

    def evaluate(step, t0):
        v = tensors["val"]
        with torch.no_grad():
            logits, aux, point = forward(v)
        err = (aux - v["aux"]).numpy()[:, :2] * 10.0
        return {"variant": variant, "step": step, "seconds": round(time.time() - t0),
                "val_ce": float(masked_cross_entropy(logits, v["targets"], v["loss_mask"], 0.0)),
                "val_xy_rmse_cm": float(np.sqrt((err ** 2).sum(1).mean())),
                "val_point_acc": float((point.argmax(1) == v["point"]).float().mean())}

    tr = tensors["train"]
    g = torch.Generator().manual_seed(seed)
    t0, step, history = time.time(), 0, []
    while time.time() - t0 < minutes * 60:
        idx = torch.randint(0, len(tr["targets"]), (64,), generator=g)
        batch = {k: v[idx] for k, v in tr.items()}
        logits, aux, point = forward(batch)
        # L = CE(actions) + Huber(aux, privileged offsets) [+ CE(pointing, target patch)]
        loss = masked_cross_entropy(logits, batch["targets"], batch["loss_mask"], 0.0)
        loss = loss + F.smooth_l1_loss(aux, batch["aux"])
        if variant in ("pointing", "readout"):
            loss = loss + F.cross_entropy(point, batch["point"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.refresh_views()
        step += 1
        if step % 300 == 0:
            history.append(evaluate(step, t0))
            print(json.dumps(history[-1]), flush=True)
    history.append(evaluate(step, t0))
    out.put(history)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=14.0, help="training time per variant")
    parser.add_argument("--episodes", type=int, default=600, help="training demos (seeds 0+)")
    parser.add_argument("--val-episodes", type=int, default=40, help="held-out demos (300000+)")
    parser.add_argument("--data", default="runs/grounding_probe", help="demonstration cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs=2, default=["baseline", "pointing"],
                        choices=["baseline", "pointing", "readout", "oracle"],
                        help="the two variants run side by side")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    from embodied_stack.sim.train import demos

    train_dir = demos.collect(demos.DemoConfig(world="tabletop", episodes=args.episodes,
                                               shard_episodes=50), f"{args.data}/train", workers=2)
    val_dir = demos.collect(demos.DemoConfig(world="tabletop", episodes=args.val_episodes,
                                             first_seed=300_000, noisy_share=0.0,
                                             shard_episodes=args.val_episodes), f"{args.data}/val")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=run_variant, args=(v, args.minutes, str(train_dir), str(val_dir),
                                                   args.seed, queue))
             for v in args.variants]
    for p in procs:
        p.start()
    histories = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    final = {h[-1]["variant"]: h[-1] for h in histories}
    print(f"{'variant':<10} {'steps':>6} {'val CE':>8} {'xy RMSE cm':>11} {'point acc':>10}")
    for v in args.variants:
        f = final[v]
        print(f"{v:<10} {f['step']:>6} {f['val_ce']:8.3f} {f['val_xy_rmse_cm']:11.2f} "
              f"{f['val_point_acc']:10.1%}")
    res = {"final": final, "history": {h[-1]["variant"]: h for h in histories},
           "command": "python bench/grounding_probe.py " + " ".join(
               argv if argv is not None else sys.argv[1:])}
    if args.json:
        from embodied_stack.models.files import atomic_write_json

        atomic_write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
