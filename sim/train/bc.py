"""Behaviour cloning of the ElasticVLA from the scripted experts, with elastic distillation.

This is the warm start (DESIGN §6) and how the shipped default model is made:

    python -m embodied_stack.sim.train.bc --out runs/bc            # train (resumable)
    python -m embodied_stack.sim.train.bc --out runs/bc --export models/default_vla

Read top to bottom: demonstrations (sim/train/demos.py) -> phase 1, the full model learns the
expert's action bins by cross-entropy -> importance ranking on calibration batches and the
nested permutation (models/elastic/submodels.py) -> phase 2, each step also trains one
sampled submodel by forward KL from the full model (Nemotron Elastic's distillation) plus its
own cross-entropy -> held-out evaluation of full and 1/2.

Every hyper-parameter is in BCConfig. Checkpoints are written atomically (temp + rename) every
`checkpoint_every` steps and at the end; an interrupted run resumes from the last one. They
hold only tensors and plain numbers and are read back with torch.load(weights_only=True).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from embodied_stack.models.files import atomic_write_json
from embodied_stack.models.elastic.submodels import NAMED_SUBMODELS, calibrate_and_permute, \
    elastic_distillation_loss
from embodied_stack.models.policy.elastic_vla import ElasticVLA
from embodied_stack.models.policy.elastic_vla_config import ElasticVLAConfig
from embodied_stack.models.policy.interface import Observation
from embodied_stack.models.policy.tokenizer import InstructionTokenizer
from embodied_stack.sim.train import demos

EMBODIMENT = demos.EMBODIMENT


@dataclass
class BCConfig:
    # --- data ---
    worlds: tuple[str, ...] = ("tabletop", "driving")  #: worlds to imitate
    episodes: dict = field(default_factory=lambda: {"tabletop": 2000, "driving": 600})
    #: expert episodes per world (tabletop episodes are short, ~12 steps; driving ~70)
    first_seed: int = 0  #: demo seeds start here; evaluation uses seeds >= 100000
    noise_std: float = 0.3  #: DART noise on executed expert actions
    noisy_share: float = 0.5  #: share of noisy demo episodes
    # --- optimisation ---
    steps: int = 6000  #: total optimiser steps (phase 1 + phase 2)
    elastic_from: float = 0.5  #: fraction of `steps` after which phase 2 (elastic KD) starts
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 5e-5  #: cosine decay floor
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    label_smoothing: float = 0.05  #: on the action-bin cross-entropy
    # --- elastic distillation (phase 2) ---
    submodel_probs: dict = field(default_factory=lambda: {"3/4": 0.2, "1/2": 0.5, "1/4": 0.3})
    #: which submodel is trained each step; weighted toward the small ones, which need it most
    kd_weight: float = 1.0  #: weight of KL(full || submodel)
    student_ce_weight: float = 0.5  #: weight of the submodel's own cross-entropy
    calibration_batches: int = 8  #: batches for the importance ranking
    # --- bookkeeping ---
    checkpoint_every: int = 500
    eval_episodes: int = 30  #: held-out episodes per world per submodel at the end
    seed: int = 0
    threads: int = 0  #: torch threads (0 = torch's default)
    device: str = "cpu"  #: cpu | cuda | cuda:N (the model trains there; demos stay on the CPU)
    demos_dir: str = ""  #: existing demonstrations (default: <run dir>/demos, collected if absent)
    model: dict = field(default_factory=dict)  #: ElasticVLAConfig overrides

    def __post_init__(self):
        for w in self.worlds:
            if w not in EMBODIMENT:
                raise ValueError(f"world {w!r} not in {sorted(EMBODIMENT)}")
        if not 0.0 <= self.elastic_from <= 1.0:
            raise ValueError(f"elastic_from={self.elastic_from} must be in [0, 1]")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps={self.steps}, batch_size={self.batch_size} must be >= 1")
        unknown = set(self.submodel_probs) - set(NAMED_SUBMODELS)
        if unknown:
            raise ValueError(f"submodel_probs names {sorted(unknown)}; known: {list(NAMED_SUBMODELS)}")


class DemoBatches:
    """Uniform minibatches over all worlds' demonstration steps.

    Every step is turned into model inputs once, through the model's own `obs_to_batch` and
    `actions_to_tokens`, and kept on the training device (pixels as float16: 32 KB a step), so
    a minibatch is one gather, with no per-step Python work."""

    def __init__(self, data: dict[str, dict[str, np.ndarray]], model: ElasticVLA, seed: int,
                 device: str = "cpu", chunk: int = 1024):
        A = model.config.max_action_dim
        parts = []
        for world, d in data.items():
            for start in tqdm(range(0, len(d["rgb"]), chunk), desc=f"tensors {world}",
                              unit="chunk", leave=False):
                idx = range(start, min(start + chunk, len(d["rgb"])))
                batch = model.obs_to_batch([Observation(
                    rgb=d["rgb"][i], instruction=str(d["instruction"][i]),
                    proprio=d["proprio"][i], embodiment=EMBODIMENT[world],
                    depth=d["depth"][i].astype(np.float32)) for i in idx])
                T, a = d["chunk"].shape[1:]
                chunks = np.zeros((len(idx), T, A), np.float32)
                chunks[:, :, :a] = d["chunk"][start: start + len(idx)]
                steps = np.repeat(d["chunk_mask"][start: start + len(idx), :, None], A, axis=2)
                batch["targets"] = model.actions_to_tokens(chunks)
                # A token counts when the embodiment uses its dim and its step is in the episode.
                batch["loss_mask"] = batch["action_mask"] & torch.from_numpy(
                    steps.reshape(len(idx), -1))
                batch["pixels"] = batch["pixels"].half()
                parts.append(batch)
        self.tensors = {k: torch.cat([p[k] for p in parts]).to(device) for k in parts[0]}
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __len__(self):
        return len(self.tensors["targets"])

    def sample(self, batch_size: int):
        idx = torch.randint(0, len(self), (batch_size,), device=self.generator.device,
                            generator=self.generator)
        batch = {k: v[idx] for k, v in self.tensors.items()}
        batch["pixels"] = batch["pixels"].float()
        return batch, batch.pop("targets")


def instruction_tokenizer(data: dict[str, dict[str, np.ndarray]]) -> InstructionTokenizer:
    """The default words plus every word of the demonstrations' instructions."""
    from embodied_stack.models.policy.tokenizer import DEFAULT_WORDS, split_words

    words = set(DEFAULT_WORDS)
    for d in data.values():
        for text in np.unique(d["instruction"]):
            words.update(split_words(str(text)))
    return InstructionTokenizer.from_words(sorted(words))


def masked_cross_entropy(logits, targets, mask, smoothing):
    """Mean over counted tokens of CE(action bin)."""
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                           reduction="none", label_smoothing=smoothing)
    m = mask.flatten().float()
    return (ce * m).sum() / m.sum().clamp_min(1.0)


def lr_at(step: int, cfg: BCConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + np.cos(np.pi * min(1.0, t)))


def _save_checkpoint(path: Path, model, optimizer, step: int, permuted: bool, log: list) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "permuted": permuted, "log": json.dumps(log)}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(cfg: BCConfig, out_dir: str | os.PathLike) -> ElasticVLA:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bc_config.json", dataclasses.asdict(cfg))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.backends.cuda.matmul.allow_tf32 = True

    # 1. Demonstrations (cached, resumable).
    data = {}
    for world in cfg.worlds:
        path = demos.collect(demos.DemoConfig(
            world=world, episodes=cfg.episodes[world], first_seed=cfg.first_seed,
            noise_std=cfg.noise_std, noisy_share=cfg.noisy_share,
            chunk_length=ElasticVLAConfig(**cfg.model).chunk_length),
            cfg.demos_dir or out / "demos")
        data[world] = demos.load(path)
        print(f"{world}: {len(data[world]['rgb'])} demo steps from "
              f"{len(data[world]['episode_success'])} episodes "
              f"(expert success {data[world]['episode_success'].mean():.0%})")

    # 2. Model, optimiser, resume.
    model = ElasticVLA(ElasticVLAConfig(**cfg.model), instruction_tokenizer(data))
    model.to(cfg.device)
    batches = DemoBatches(data, model, cfg.seed, cfg.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = out / "checkpoint.pt"
    step, permuted, log = 0, False, []
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location=cfg.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, permuted, log = state["step"], state["permuted"], json.loads(state["log"])
        print(f"resumed from {ckpt} at step {step}")
    elastic_start = int(cfg.elastic_from * cfg.steps)
    names, probs = zip(*cfg.submodel_probs.items())
    rng = np.random.default_rng(cfg.seed + step)

    bar = tqdm(total=cfg.steps, initial=step, desc="bc", unit="step")
    model.train()
    while step < cfg.steps:
        # 3. At the phase boundary: rank units on calibration data, permute (function-
        # preserving), and restart the optimiser (its moments belong to the old order).
        if step >= elastic_start and not permuted and cfg.submodel_probs:
            model.eval()
            calib = [batches.sample(cfg.batch_size)[0] for _ in range(cfg.calibration_batches)]
            calibrate_and_permute(model, [{k: v for k, v in b.items() if k != "loss_mask"}
                                          for b in calib])
            permuted = True
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                          weight_decay=cfg.weight_decay)
            model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch, targets = batches.sample(cfg.batch_size)
        model.set_submodel("full")
        logits = model.forward_batch(batch)
        # L_full = CE(pi_full(a|o), a_expert) over counted action tokens.
        loss = masked_cross_entropy(logits, targets, batch["loss_mask"], cfg.label_smoothing)
        record = {"step": step, "ce_full": float(loss.detach())}
        if permuted:
            name = str(rng.choice(names, p=np.asarray(probs) / sum(probs)))
            model.set_submodel(name)
            student = model.forward_batch(batch)
            # L_sub = KL(pi_full || pi_sub) + w * CE(pi_sub, a_expert)   (teacher detached)
            kd = elastic_distillation_loss(student, logits.detach(), batch["loss_mask"])
            ce_sub = masked_cross_entropy(student, targets, batch["loss_mask"],
                                          cfg.label_smoothing)
            loss = loss + cfg.kd_weight * kd + cfg.student_ce_weight * ce_sub
            model.set_submodel("full")
            record.update({"submodel": name, "kd": float(kd.detach()), "ce_sub": float(ce_sub.detach())})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        model.refresh_views()
        step += 1
        log.append(record)
        bar.update(1)
        if step % 20 == 0:
            recent = log[-20:]
            bar.set_postfix_str(f"ce {np.mean([r['ce_full'] for r in recent]):.3f}"
                                + (f" kd {np.mean([r['kd'] for r in recent if 'kd' in r]):.3f}"
                                   if permuted else ""))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save_checkpoint(ckpt, model, optimizer, step, permuted, log)
    bar.close()
    model.eval()
    model.set_submodel("full")
    model.to("cpu")
    model.save_pretrained(out / "model")
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bc", help="run directory (resumes if present)")
    parser.add_argument("--steps", type=int, help="override BCConfig.steps")
    parser.add_argument("--episodes", type=int, nargs=2, metavar=("TABLETOP", "DRIVING"),
                        help="override demo episodes per world")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--demos", default="", help="existing demonstrations directory")
    parser.add_argument("--batch-size", type=int, help="override BCConfig.batch_size")
    parser.add_argument("--eval-episodes", type=int, help="override BCConfig.eval_episodes")
    parser.add_argument("--export", metavar="DIR",
                        help="after training, copy the model here (e.g. models/default_vla)")
    args = parser.parse_args(argv)
    cfg = BCConfig(threads=args.threads, device=args.device, demos_dir=args.demos)
    if args.batch_size:
        cfg.batch_size = args.batch_size
    if args.steps:
        cfg.steps = args.steps
    if args.episodes:
        cfg.episodes = dict(zip(("tabletop", "driving"), args.episodes))
    if args.eval_episodes is not None:
        cfg.eval_episodes = args.eval_episodes
    start = time.time()
    model = train(cfg, args.out)
    print(f"trained in {(time.time() - start) / 60:.1f} min")
    from embodied_stack.sim.eval import SUBMODEL_KEY, evaluate

    results = {}
    if cfg.eval_episodes:
        for submodel in ("full", "1/2"):
            model.set_submodel(submodel)
            for world in cfg.worlds:
                r = evaluate(model, world, cfg.eval_episodes)
                results[f"success_{SUBMODEL_KEY[submodel]}_{world}"] = r["success"]
                print(f"{submodel:5s} {world:9s} success {r['success']:.0%} {r['outcomes']}")
        model.set_submodel("full")
        atomic_write_json(Path(args.out) / "eval.json", results)
    if args.export:
        model.save_pretrained(args.export)
        print(f"exported to {args.export}")


if __name__ == "__main__":
    main()
