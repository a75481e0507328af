"""The supervised stages: behaviour cloning on expert demonstrations, then DAgger.

Read top to bottom:
1. the labelled states: demonstrations and DAgger shards (sim/train/demos.py) as model-ready
   tensors in a StateBuffer, each with its privileged targets (where the target is, for the
   model's training-only heads) and its episode's first frame (``reference_frame``);
2. one supervised step: the model's own loss (``ElasticVLA.forward``: action cross-entropy
   plus the privileged heads' losses) and, every ``elastic_every`` steps, a sampled nested
   submodel distilled from the full model (Nemotron Elastic);
3. ``bc``: those steps on the demonstrations (DART noise, look-ahead chunk labels);
4. ``dagger`` (Ross et al. 2011): roll the learner out as the policy node executes it, label
   every visited state with the expert's chunk, aggregate, retrain. A chunk is executed from
   the expert with probability beta, decaying per iteration.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from embodied_stack.models.elastic.submodels import elastic_distillation_loss
from embodied_stack.models.files import atomic_write_npz
from embodied_stack.models.policy.interface import Observation
from embodied_stack.sim.train import demos
from embodied_stack.sim.train.config import SEED_BASE, TrainConfig, iteration_seeds
from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

if TYPE_CHECKING:
    from embodied_stack.models.policy.elastic_vla import ElasticVLA
    from embodied_stack.sim.train.run import Run


# ------------------------------------------------------------------------------------------
# Labelled states
# ------------------------------------------------------------------------------------------


def target_image_position(world: str, d: dict[str, np.ndarray], rows: slice) -> np.ndarray:
    """(n, 2) image position (u / width, v / height) of the expert's target centre for the
    given rows of recorded states; NaN where there is none (worlds without a target, rows
    outside the image). Read from the recorded features (aux[6:8]) or, for data recorded
    before they carried it, projected from aux[:3] (target - fingertip, dm) with the world's
    fixed camera."""
    n = rows.stop - rows.start
    out = np.full((n, 2), np.nan, np.float32)
    aux = d.get("aux")
    if aux is None:
        return out
    aux = aux[rows]
    if aux.shape[1] >= 8:  # any world whose expert gives it (NaN: none)
        uv = aux[:, 6:8]
    elif EMBODIMENT_OF_WORLD[world] != "arm":
        return out
    else:
        cam = _world_camera(world)
        target = d["proprio"][rows, :3] + aux[:, :3] / 10.0
        pc = (np.linalg.inv(cam["T_world_camera"]) @ np.c_[target, np.ones(n)].T)[:3]
        uvw = cam["K"] @ pc
        uv = np.stack([(uvw[0] / uvw[2] + 0.5) / cam["width"], (uvw[1] / uvw[2] + 0.5) / cam["height"]], 1)
    ok = np.all(np.isfinite(uv) & (uv >= 0) & (uv < 1), axis=1)
    out[ok] = uv[ok]
    return out


def effector_image_position(world: str, d: dict[str, np.ndarray], rows: slice) -> np.ndarray:
    """(n, 2) image position of the end effector for the given rows of recorded states, from
    the recorded features (aux[8:10]); NaN where there is none (data recorded without it,
    worlds without an effector in view, rows outside the image)."""
    out = np.full((rows.stop - rows.start, 2), np.nan, np.float32)
    aux = d.get("aux")
    if aux is None or aux.shape[1] < 10:
        return out
    uv = aux[rows, 8:10]
    ok = np.all(np.isfinite(uv) & (uv >= 0) & (uv < 1), axis=1)
    out[ok] = uv[ok]
    return out


@functools.lru_cache(maxsize=None)
def _world_camera(world: str) -> dict:
    """The world's camera model (fixed per world) as its reset info reports it."""
    from embodied_stack.sim.worlds.registry import make_world

    env = make_world(world)
    try:
        return env.reset(seed=0)[1]["camera"]
    finally:
        env.close()


def first_rows(episode: np.ndarray) -> np.ndarray:
    """For each row of recorded states (episodes stored contiguously, in order), the row of
    its episode's first state: the reference frame of a model with ``reference_frame``."""
    episode = np.asarray(episode)
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    return starts[np.searchsorted(starts, np.arange(len(episode)), side="right") - 1]


class StateBuffer:
    """Labelled states (demos + DAgger aggregate) as model-ready tensors, per world, so a
    minibatch is one gather. Pixels are kept as float16 (32 KB a state). A minibatch holds
    what ``ElasticVLA.forward`` reads: the inputs, ``action_tokens`` (the expert's chunk),
    ``loss_mask``, ``aux_targets`` and, with ``target_keypoint``, ``keypoint_uv``."""

    def __init__(self, model: ElasticVLA, device: str = "cpu"):
        self.model, self.device = model, device  # minibatches are gathered on `device`
        self.parts: dict[str, list[dict]] = {}
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}

    def add(self, world: str, d: dict[str, np.ndarray], chunk: int = 1024) -> None:
        model, A = self.model, self.model.config.max_action_dim
        ref = first_rows(d["episode"]) if "episode" in d else np.arange(len(d["rgb"]))
        for start in range(0, len(d["rgb"]), chunk):
            idx = range(start, min(start + chunk, len(d["rgb"])))
            batch = model.obs_to_batch([Observation(
                rgb=d["rgb"][i], instruction=str(d["instruction"][i]), proprio=d["proprio"][i],
                embodiment=EMBODIMENT_OF_WORLD[world], depth=d["depth"][i].astype(np.float32),
                reference_rgb=d["rgb"][ref[i]], reference_depth=d["depth"][ref[i]])
                for i in idx])
            T, a = d["chunk"].shape[1:]
            chunks = np.zeros((len(idx), T, A), np.float32)
            chunks[:, :, :a] = d["chunk"][start: start + len(idx)]
            steps = np.repeat(d["chunk_mask"][start: start + len(idx), :, None], A, axis=2)
            batch["action_tokens"] = model.actions_to_tokens(chunks, EMBODIMENT_OF_WORLD[world])
            # A token counts when the embodiment uses its dim and its step is in the episode.
            batch["loss_mask"] = batch["action_mask"] & torch.from_numpy(
                steps.reshape(len(idx), -1))
            batch["pixels"] = batch["pixels"].half()
            # Privileged features for the auxiliary heads; NaN where the data has none.
            aux = np.full((len(idx), model.config.aux_dim), np.nan, np.float32)
            if "aux" in d and model.config.aux_dim:
                n = min(model.config.aux_dim, d["aux"].shape[1])
                aux[:, :n] = d["aux"][start: start + len(idx), :n]
            batch["aux_targets"] = torch.from_numpy(aux)
            if model.config.target_keypoint:
                # The target centre's (u, v) in [0, 1)^2, NaN = none.
                batch["keypoint_uv"] = torch.from_numpy(
                    target_image_position(world, d, slice(start, start + len(idx))))
            if model.config.effector_keypoint:
                batch["effector_uv"] = torch.from_numpy(
                    effector_image_position(world, d, slice(start, start + len(idx))))
            self.parts.setdefault(world, []).append(batch)
        self.tensors.pop(world, None)

    def size(self, world: str) -> int:
        """States of one world."""
        return sum(len(p["action_tokens"]) for p in self.parts.get(world, []))

    def __len__(self) -> int:
        """States of every world."""
        return sum(self.size(world) for world in self.parts)

    def _world_tensors(self, world: str) -> dict[str, torch.Tensor]:
        if world not in self.tensors:
            parts = self.parts[world]
            self.tensors[world] = {k: torch.cat([p[k].to(self.device) for p in parts])
                                   for k in parts[0]}
            self.parts[world] = [self.tensors[world]]
        return self.tensors[world]

    def sample(self, batch_size: int, generator: torch.Generator, device: str,
               weights: dict | None = None) -> dict[str, torch.Tensor]:
        """A minibatch with a fixed share from each world (equal shares by default: driving
        episodes are long and would drown the tabletop's otherwise)."""
        worlds = [w for w in self.parts if self.parts[w]]
        share = np.array([float((weights or {}).get(w, 1.0)) for w in worlds])
        counts = np.floor(batch_size * share / share.sum()).astype(int)
        counts[: batch_size - counts.sum()] += 1
        pieces = []
        for world, n in zip(worlds, counts.tolist()):
            t = self._world_tensors(world)
            idx = torch.randint(0, len(t["action_tokens"]), (n,), generator=generator).to(self.device)
            pieces.append({k: v[idx] for k, v in t.items()})
        batch = {k: torch.cat([p[k] for p in pieces]).to(device) for k in pieces[0]}
        batch["pixels"] = batch["pixels"].float()
        return batch


def load_demos(run: Run) -> None:
    """Record (or reuse) the expert demonstrations of every world into the buffer; with
    ``dataset``, the dataset's recorded episodes instead."""
    cfg = run.cfg
    if cfg.dataset:
        world = cfg.worlds[0]
        data = demos.load_dataset(cfg.dataset, world, run.model.config.chunk_length)
        run.buffer.add(world, data)
        if not any(f"dataset_states_{world}" in e for e in run.log):
            run.record({f"dataset_states_{world}": len(data["rgb"])})
        print(f"{world}: {len(data['rgb'])} states from {int(data['episode'].max()) + 1} "
              f"episodes of {cfg.dataset}")
        return
    for world in cfg.worlds:
        path = demos.collect(demos.DemoConfig(
            world=world, episodes=cfg.demo_episodes[world], first_seed=SEED_BASE["demo"],
            noise_std=cfg.noise_std, noisy_share=cfg.noisy_share,
            chunk_length=run.model.config.chunk_length, shift=cfg.shift,
            paraphrase_share=cfg.paraphrase_share), run.out / "demos", workers=cfg.workers)
        data = demos.load(path)
        run.buffer.add(world, data)
        if not any(f"demo_states_{world}" in e for e in run.log):
            run.record({f"demo_states_{world}": len(data["rgb"])})
        print(f"{world}: {len(data['rgb'])} demo states from {len(data['episode_success'])} "
              f"episodes (expert success {data['episode_success'].mean():.0%})")


def load_dagger_shards(run: Run, below: int) -> None:
    """This run's shards of iterations < below, and every shard of the dagger_from runs."""
    imported = [p for d in run.cfg.dagger_from for p in demos.dagger_shards(d)]
    for path in imported + demos.dagger_shards(run.out):
        iteration, world = int(path.stem.split("_")[1]), path.stem.split("_", 2)[2]
        if (path in imported or iteration < below) and world in run.cfg.worlds:
            run.buffer.add(world, dict(np.load(path, allow_pickle=False)))
    if imported:
        print(f"dagger_from: {len(imported)} shards from {len(run.cfg.dagger_from)} earlier runs")


# ------------------------------------------------------------------------------------------
# One supervised step
# ------------------------------------------------------------------------------------------


def supervised_step(run: Run, lr: float) -> dict:
    """One optimiser step on a minibatch of labelled states; returns what to log.

        L = L_full + kd_weight * KL(pi_full || pi_sub) + student_ce_weight * CE(pi_sub, a*)

    L_full is the full model's own loss (``ElasticVLA.forward``); the second and third terms,
    every ``elastic_every`` steps, train a sampled nested submodel (``submodel_probs``) with the
    full model's logits, detached, as its teacher (Nemotron Elastic)."""
    cfg, model = run.cfg, run.model
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    batch = run.buffer.sample(cfg.batch_size, run.generator, cfg.device, cfg.world_weights)
    if "keypoint_uv" in batch and cfg.keypoint_teacher_forcing > 0:
        target = batch["keypoint_uv"]
        forced = (torch.rand(len(target), generator=run.generator)
                  < cfg.keypoint_teacher_forcing).to(target.device)
        batch["keypoint_forced"] = torch.where(forced.unsqueeze(-1), target, float("nan"))
    model.train()
    model.set_submodel("full")
    loss, logs = model(batch, label_smoothing=cfg.label_smoothing, aux_weight=cfg.aux_weight,
                       keypoint_weight=cfg.keypoint_weight)
    teacher = logs.pop("action_logits")
    record = {"ce_full": logs.pop("ce"), **logs}
    name = run.sample_submodel() if run.progress["global_step"] % cfg.elastic_every == 0 else None
    if name is not None:
        model.set_submodel(name)
        student = model.batch_logits(batch)
        kd = elastic_distillation_loss(student, teacher, batch["loss_mask"])
        ce_sub = model.action_cross_entropy(student, batch, cfg.label_smoothing)
        loss = loss + cfg.kd_weight * kd + cfg.student_ce_weight * ce_sub
        model.set_submodel("full")
        record.update(kd=float(kd.detach()), ce_sub=float(ce_sub.detach()))
    run.apply_gradients(loss)
    return record


def cosine_lr(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine down to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def train_steps(run: Run, total: int, desc: str) -> None:
    """Supervised steps from run.progress['step'] to `total` on the cosine schedule, with a
    progress bar, the log every 20 steps and checkpoints."""
    bar = tqdm(total=total, initial=run.progress["step"], desc=desc, unit="step")
    recent: list[dict] = []
    while run.progress["step"] < total:
        record = supervised_step(run, cosine_lr(run.progress["step"], total, run.cfg))
        run.progress["step"] += 1
        run.progress["global_step"] += 1
        recent.append(record)
        bar.update(1)
        if len(recent) == 20 or run.progress["step"] == total:
            keys = dict.fromkeys(k for r in recent for k in r)  # every key, first-seen order
            mean = {k: float(np.mean([r[k] for r in recent if k in r])) for k in keys}
            run.record(mean)
            bar.set_postfix_str(" ".join(f"{k} {v:.3f}" for k, v in mean.items()))
            recent = []
        if run.checkpoint_due():
            run.save()
    bar.close()


# ------------------------------------------------------------------------------------------
# The stages
# ------------------------------------------------------------------------------------------


def stage_bc(run: Run) -> None:
    """Behaviour cloning: ``bc_steps`` supervised steps on the buffer (the demonstrations)."""
    train_steps(run, run.cfg.bc_steps, "bc")
    run.record(run.validate("bc"))


def stage_dagger(run: Run) -> None:
    """DAgger iterations: learner rollouts labelled by the expert join the aggregate, then
    ``dagger_steps`` supervised steps on all of it."""
    cfg = run.cfg
    while run.progress["iteration"] < cfg.dagger_iterations:
        it = run.progress["iteration"]
        beta = cfg.dagger_beta * cfg.dagger_beta_decay ** it
        # 1. Learner rollouts labelled by the expert (the shard is the unit of resumption:
        #    an iteration killed while training reuses its rollouts).
        stats = {"beta": beta}
        for w, world in enumerate(cfg.worlds):
            path = demos.dagger_shard(run.out, it, world)
            if not path.exists():
                n = cfg.dagger_episodes[world]
                bar = tqdm(total=n, desc=f"dagger {it} {world} rollouts", unit="episode")
                run.model.set_submodel("full")
                eps = run.rollouts(run.model, world, iteration_seeds("dagger", it, w, n, len(cfg.worlds)), run.mode,
                                   label=True, beta=beta, stream_seed=cfg.seed * 7919 + it,
                                   rewrite=run.paraphraser(world), progress=bar.update)
                bar.close()
                atomic_write_npz(path, demos.episodes_to_arrays(eps))
            data = dict(np.load(path, allow_pickle=False))
            stats[f"rollout_success_{world}"] = float(data["episode_success"].mean())
            stats[f"states_{world}"] = len(data["rgb"])
            run.buffer.add(world, data)  # (earlier iterations' shards are in it already)
        print(f"[dagger {it}] beta {beta:.3f} " + " ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))
        # 2. Retrain on the aggregate.
        if run.progress["step"] == 0:
            run.record(stats)
        train_steps(run, cfg.dagger_steps, f"dagger {it}")
        run.record(run.validate(f"dagger {it}"))
        run.progress.update(iteration=it + 1, step=0)
        run.save()
