"""`embodied-stack train`: behaviour cloning -> DAgger -> group RL (GRPO / ADPO / EntroPIC) of
the ElasticVLA in the simulation worlds, elastic-aware, resumable.

    embodied-stack train --out runs/default                     # all stages, defaults below
    embodied-stack train --out runs/default --config my.yaml    # a YAML file of TrainConfig fields
    embodied-stack train --out runs/default --resume            # continue a killed run
    embodied-stack train --out runs/x --stages rl --init-from runs/default/model --loss grpo

Read top to bottom:
1. ``bc``: expert demonstrations (sim/train/demos.py: DART noise, look-ahead chunk labels), then
   cross-entropy on the expert's action bins, plus two training-only heads fitted to
   privileged simulator features: where the target is relative to the robot (aux) and which
   image patch holds the named target (pointing: grounding the words in the image). Every
   step also trains one sampled nested submodel by forward KL from the full model plus its own
   cross-entropy (Nemotron Elastic).
2. ``dagger``: roll the learner out as the policy node executes it (ExecutionMode), label every
   visited state with the expert's chunk, aggregate, retrain (Ross et al. 2011). A chunk is
   executed from the expert with probability beta (decaying per iteration).
3. ``rl``: G rollouts per initial state (the same seed), sampled from the policy; reward =
   success; group-relative advantages; the selected loss (sim/train/losses.py); token entropy
   held near a target by EntroPIC's PI controller (measured on a fixed probe of states, see
   ``entropy_measure``); a sampled submodel follows the full model by forward KL on the
   rollouts' states, so 1/2 keeps up with full.

Every hyper-parameter is in TrainConfig (one dataclass; flags and a YAML file override it).
Seeds are disjoint by purpose: demos from 0, DAgger from 10_000, RL from 20_000, the entropy
probe from 290_000, periodic validation from 300_000; `embodied-stack eval` tests on 100_000+ (never seen in training).
The model after each stage is kept in <out>/model_after_<stage>; the final one in <out>/model.
A checkpoint (model, optimizer, RNG states, stage progress, EntroPIC integral, log) is written
atomically at the end of every iteration and every ``checkpoint_every`` steps; the DAgger
buffer lives in shards on disk. `--resume` continues from the last checkpoint and gives the
same parameters as a run that was never interrupted. TensorBoard logs go to <out>/tb.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from embodied_stack.models.elastic.submodels import NAMED_SUBMODELS, elastic_distillation_loss
from embodied_stack.models.files import atomic_write_bytes, atomic_write_json, atomic_write_npz
from embodied_stack.models.policy.elastic_vla import ElasticVLA
from embodied_stack.models.policy.elastic_vla_config import ElasticVLAConfig
from embodied_stack.models.policy.interface import ExecutionMode, Observation
from embodied_stack.models.policy.tokenizer import DEFAULT_WORDS, InstructionTokenizer, split_words
from embodied_stack.sim import WORLD_IDS
from embodied_stack.sim.train import demos, losses
from embodied_stack.sim.train.rollouts import LocalRollouts
from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

STAGES = ("bc", "dagger", "rl")
SEED_BASE = {"demo": 0, "dagger": 10_000, "rl": 20_000, "probe": 290_000, "val": 300_000}
#: DAgger and RL iterations each own a block of this many seeds per world (two worlds)
SEEDS_PER_WORLD = 500


def iteration_seeds(purpose: str, it: int, w: int, n: int) -> list[int]:
    """The first n seeds of world w's block in iteration it of a DAgger or RL stage."""
    first = SEED_BASE[purpose] + (it * 2 + w) * SEEDS_PER_WORLD
    return list(range(first, first + n))


def _iteration_limit(purpose: str, following: str) -> int:
    """Iterations whose seed blocks fit before the next purpose's seeds."""
    return (SEED_BASE[following] - SEED_BASE[purpose]) // (2 * SEEDS_PER_WORLD)


@dataclass
class TrainConfig:
    # --- run ---
    stages: tuple = STAGES  #: stages to run, in order (a subset of bc, dagger, rl)
    worlds: tuple = ("tabletop", "driving")  #: worlds trained together (one model serves both)
    init_from: str = "default"  #: "default" = the shipped model, a model directory, or "" (new)
    model: dict = field(default_factory=lambda: {
        "depth_encoding": "log", "depth_max_m": 100.0, "aux_dim": 6, "target_keypoint": True,
        "keypoint_instruction": True,
        # arm: fingertip position and contact; vehicle: speed (no velocities or last commands)
        "proprio_inputs": {"arm": [0, 1, 2, 6], "vehicle": [0]}})
    #: ElasticVLAConfig overrides; with init_from only input-preprocessing fields may change
    seed: int = 0  #: seeds every random choice of the run (batches, sampling, DAgger mixture)
    device: str = "cpu"  #: cpu | cuda | cuda:N (rollouts always step the worlds on the CPU)
    threads: int = 0  #: torch CPU threads (0 = torch's default)
    # --- execution, as the policy node runs chunks (models/policy/interface.ExecutionMode) ---
    refill_at: int = 1  #: next chunk requested when this many actions remain
    execute_steps: int = 0  #: cut chunks to this many actions (0 = whole chunk)
    pool_size: int = 16  #: worlds stepped together per world type (one batched forward each tick)
    workers: int = 0  #: processes that record demos and step rollouts (0 = this process;
    #: on a many-core GPU machine, one per spare core keeps the GPU fed)
    ray_address: str = ""  #: "" = rollouts on this machine (see workers); "local" = a private Ray cluster
    #: here; "auto" / "ray://host:port" = rollout workers on an existing Ray cluster
    ray_workers: int = 2  #: Ray rollout actors (one CPU each)
    # --- supervised optimisation (bc, dagger) ---
    batch_size: int = 64  #: states per step, split over the worlds by world_weights
    world_weights: dict = field(default_factory=dict)  #: world -> share of each batch
    #: (empty = equal shares: driving episodes are long and would drown the tabletop's)
    lr: float = 3e-4  #: peak learning rate (AdamW) of bc and dagger
    min_lr: float = 3e-5  #: cosine floor
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    label_smoothing: float = 0.0  #: CE smoothing; 0 keeps the policy sharp for RL sampling
    # --- elastic training (every stage) ---
    submodel_probs: dict = field(default_factory=lambda: {"1/2": 0.6, "3/4": 0.2, "1/4": 0.2})
    #: which nested submodel is trained alongside the full model at each step
    aux_weight: float = 1.0  #: weight of the auxiliary head's loss (models with aux_dim > 0)
    point_weight: float = 1.0  #: weight of the pointing head's loss (models with point_head)
    keypoint_weight: float = 1.0  #: weight of the target keypoint's loss (models with target_keypoint)
    #: the keypoint MLP and its projection learn at lr x this: they must learn a camera's
    #: geometry (weights of order 1), which AdamW steps of ~lr would take thousands of steps
    keypoint_lr_scale: float = 10.0
    #: models with point_readout or target_keypoint: share of training samples whose readout
    #: or keypoint is handed the true target position instead of the model's own (teacher
    #: forcing), so the action queries learn to use the position before the model finds it
    #: well; acting never is
    readout_teacher_forcing: float = 0.5
    elastic_every: int = 1  #: train a sampled submodel every N-th supervised step
    kd_weight: float = 1.0  #: weight of KL(full || submodel)
    student_ce_weight: float = 0.5  #: weight of the submodel's own CE (bc, dagger)
    # --- bc ---
    demo_episodes: dict = field(default_factory=lambda: {"tabletop": 600, "driving": 150})
    noise_std: float = 0.3  #: DART noise on executed expert actions
    noisy_share: float = 0.5  #: share of noisy demo episodes
    bc_steps: int = 1000  #: optimiser steps of the bc stage
    # --- dagger ---
    dagger_iterations: int = 6
    dagger_episodes: dict = field(default_factory=lambda: {"tabletop": 120, "driving": 32})
    #: learner episodes per world per iteration (driving episodes are ~6x longer)
    dagger_beta: float = 0.3  #: share of expert-executed chunks in the first iteration
    dagger_beta_decay: float = 0.5  #: beta multiplier per iteration
    dagger_steps: int = 300  #: optimiser steps per iteration, on the whole aggregate
    #: run directories whose DAgger shards join this run's aggregate from the start (a
    #: warm-started run keeps the states earlier runs' learners visited, with their labels)
    dagger_from: tuple = ()
    # --- rl ---
    rl_iterations: int = 10
    loss: str = "adpo+entropic"  #: grpo | adpo | entropic | adpo+entropic (sim/train/losses.py)
    group_size: int = 8  #: G rollouts per initial state
    rl_groups: dict = field(default_factory=lambda: {"tabletop": 8, "driving": 4})
    #: initial states (seeds) per world per iteration
    rl_screen: int = 1  #: screening: try rl_screen x rl_groups seeds once with the greedy policy
    #: and give the groups to the seeds it failed first (then the rest, in seed order), so
    #: fewer groups are all-success and carry no signal; 1 = no screening
    rl_lr: float = 2e-5  #: learning rate of the rl stage (constant)
    rl_epochs: int = 2  #: passes over each iteration's rollouts
    rl_minibatch: int = 128  #: decisions per gradient step
    reward: str = "success"  #: per rollout: "success" (1/0), "return" (the world's shaped
    #: episode return), or "success+return" (success + 0.1 * return: dense, success-led)
    pseudo_reward: bool = False  #: ADPO without ground truth: reward = agrees with majority
    frontier: bool = True  #: ADPO: drop groups whose majority share is outside [0.3, 0.8]
    entropy_target: float = 0.0  #: EntroPIC target token entropy (nats); 0 = the entropy of
    #: the policy the rl stage starts from (on its first update's tokens, as the controller
    #: measures it); < 0 disables
    entropy_kp: float = 1.0  #: EntroPIC proportional gain
    entropy_ki: float = 0.01  #: EntroPIC integral gain; the integral advances by the entropy
    #: error once per optimiser step (each minibatch here is one step, no micro-batching)
    entropy_high_prob: float = 0.95  #: EntroPIC acts on tokens whose probability exceeds this
    entropy_measure: str = "probe"  #: the entropy EntroPIC holds (and the log's "entropy"):
    #: "probe" = token-mean entropy on a fixed set of states (greedy rollouts of the starting
    #: policy on held-out seeds), "batch" = on each update minibatch (the paper's form; here the
    #: minibatches are a few groups' states and their entropy swings +-30% while the policy
    #: barely moves, so the controller would chase the batch's make-up)
    entropy_probe_episodes: dict = field(default_factory=lambda: {"tabletop": 8, "driving": 4})
    #: probe episodes per world ("probe" measure)
    bc_anchor: float = 0.1  #: weight of CE on the DAgger aggregate during rl (0 = pure RL)
    # --- evaluation and bookkeeping ---
    eval_episodes: int = 40  #: validation episodes per world after each iteration (0 = none)
    eval_submodels: tuple = ("full", "1/2")
    checkpoint_every: int = 200  #: optimiser steps between checkpoints inside a stage

    def __post_init__(self):
        self.stages, self.worlds = tuple(self.stages), tuple(self.worlds)
        self.eval_submodels = tuple(self.eval_submodels)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"stages={self.stages!r}: each must be one of {STAGES}")
        for w in self.worlds:
            if w not in EMBODIMENT_OF_WORLD:
                raise ValueError(f"world {w!r} not in {sorted(EMBODIMENT_OF_WORLD)}")
        if self.loss not in losses.LOSS_KINDS:
            raise ValueError(f"loss={self.loss!r} not in {losses.LOSS_KINDS}")
        unknown = set(self.submodel_probs) - set(NAMED_SUBMODELS)
        if unknown:
            raise ValueError(f"submodel_probs names {sorted(unknown)}; known: {list(NAMED_SUBMODELS)}")
        for name in ("batch_size", "group_size", "pool_size", "rl_minibatch", "elastic_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers} must be >= 0")
        for name in ("aux_weight", "point_weight", "keypoint_weight", "keypoint_lr_scale", "kd_weight",
                     "student_ce_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.readout_teacher_forcing <= 1.0:
            raise ValueError(f"readout_teacher_forcing={self.readout_teacher_forcing} must be in [0, 1]")
        # Seed blocks per iteration (SEED_BASE): wider ones would reuse another block's seeds.
        for name, limit in (("dagger_episodes", SEEDS_PER_WORLD), ("rl_groups", SEEDS_PER_WORLD)):
            big = {w: n for w, n in getattr(self, name).items() if not 0 <= n <= limit}
            if big:
                raise ValueError(f"{name}={big}: each must be in [0, {limit}] per world")
        if not 1 <= self.rl_screen <= 50:
            raise ValueError(f"rl_screen={self.rl_screen} must be in [1, 50]")
        wide = {w: n * self.rl_screen for w, n in self.rl_groups.items()
                if n * self.rl_screen > SEEDS_PER_WORLD}
        if wide:
            raise ValueError(f"rl_groups x rl_screen={wide}: each must be <= {SEEDS_PER_WORLD} per world "
                             f"(rl_screen={self.rl_screen})")
        # ... and more iterations would run into the next block (dagger -> rl -> probe).
        for name, limit in (("dagger_iterations", _iteration_limit("dagger", "rl")),
                            ("rl_iterations", _iteration_limit("rl", "probe"))):
            if getattr(self, name) > limit:
                raise ValueError(f"{name}={getattr(self, name)} must be <= {limit} "
                                 "(its seed block would overlap the next one)")
        for name in ("bc_steps", "dagger_iterations", "dagger_steps", "rl_iterations",
                     "rl_epochs", "eval_episodes", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("lr", "rl_lr"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in (0, 1)")
        for name in ("dagger_beta", "dagger_beta_decay", "noise_std", "noisy_share",
                     "label_smoothing"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.entropy_measure not in ("probe", "batch"):
            raise ValueError(f"entropy_measure={self.entropy_measure!r}: allowed 'probe', 'batch'")
        if self.entropy_measure == "probe" and (
                not any(self.entropy_probe_episodes.get(w, 0) for w in self.worlds)
                or any(not 0 <= n <= 50 for n in self.entropy_probe_episodes.values())):
            raise ValueError(f"entropy_probe_episodes={self.entropy_probe_episodes}: each in "
                             "[0, 50], and at least one episode in a trained world")
        if not 0 < self.entropy_high_prob < 1:
            raise ValueError(f"entropy_high_prob={self.entropy_high_prob} must be in (0, 1)")
        for run_dir in self.dagger_from:
            if not dagger_shards(run_dir):
                raise ValueError(f"dagger_from: {run_dir!r} holds no DAgger shards "
                                 "(expected <run>/dagger/iter_NNN_<world>.npz)")
        if self.reward not in ("success", "return", "success+return"):
            raise ValueError(f"reward={self.reward!r} not in ('success', 'return', 'success+return')")
        if self.group_size < 2 and self.loss != "grpo":
            raise ValueError(f"loss={self.loss!r} compares rollouts: group_size must be >= 2")

    @classmethod
    def from_yaml(cls, path, **overrides) -> "TrainConfig":
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of TrainConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        data.update(overrides)
        return cls(**data)


# ------------------------------------------------------------------------------------------
# The model and the data
# ------------------------------------------------------------------------------------------

#: Config fields that only change how observations are turned into tensors: a warm start may
#: change them (the weights still fit).
PREPROCESSING_FIELDS = ("depth_encoding", "depth_max_m", "depth_min_m", "proprio_inputs")
#: Config fields a warm start may add, change or drop (training-scaffold heads), and the
#: modules that then start fresh.
SCAFFOLD_FIELDS = {"aux_dim": ("aux_head", "keypoint_aux"), "point_head": ("point_head",),
                   "point_readout": ("point_norm", "readout_embed"),
                   "target_keypoint": ("keypoint", "keypoint_in", "keypoint_aux", "keypoint_proj",
                                       "keypoint_words")}
#: Config fields a warm start may add that widen an acting layer's input: their module starts
#: fresh and the widened layer gets zero weights on the new inputs, so the warm-started model
#: acts exactly as before until trained.
WIDENING_FIELDS = {"keypoint_instruction": ("keypoint_words",), "reference_frame": ()}


def instruction_tokenizer(worlds) -> InstructionTokenizer:
    """The default words plus every word the worlds' instruction grammars can emit."""
    from embodied_stack.sim.worlds import driving, tabletop

    words = set(DEFAULT_WORDS) | set(tabletop.instruction_vocabulary())
    words |= set(driving.instruction_vocabulary())
    return InstructionTokenizer.from_words(sorted(w for w in words if split_words(w) == [w]))


def build_model(cfg: TrainConfig) -> ElasticVLA:
    if not cfg.init_from:
        return ElasticVLA(ElasticVLAConfig(**cfg.model), instruction_tokenizer(cfg.worlds))
    from embodied_stack.models.policy import load_default_policy

    model = load_default_policy(None if cfg.init_from == "default" else cfg.init_from)
    changed = {k: v for k, v in cfg.model.items() if getattr(model.config, k) != v}
    shape_changes = sorted(set(changed) - set(PREPROCESSING_FIELDS) - set(SCAFFOLD_FIELDS)
                           - set(WIDENING_FIELDS))
    if shape_changes:
        raise ValueError(f"init_from={cfg.init_from!r}: model overrides {shape_changes} change "
                         f"the weights' shapes; only {PREPROCESSING_FIELDS}, "
                         f"{sorted(SCAFFOLD_FIELDS)} and {sorted(WIDENING_FIELDS)} may "
                         "change on a warm start (or set init_from: '' to train a new model)")
    if not changed:
        return model
    # A model built for the new config (its derived tables follow the config), carrying the
    # warm-started weights; only the scaffold heads whose field changed start fresh.
    warm = ElasticVLA(dataclasses.replace(model.config, **changed), model.tokenizer)
    fresh = [f"{module}." for fields in (SCAFFOLD_FIELDS, WIDENING_FIELDS)
             for field, modules in fields.items() if field in changed for module in modules]

    def is_fresh(key: str) -> bool:
        return any(key.startswith(prefix) for prefix in fresh)

    target = warm.state_dict()
    weights = {}
    for k, v in model.state_dict().items():
        if is_fresh(k):
            continue
        if k in target and target[k].shape != v.shape:
            # A widened input (a linear layer's features, a convolution's channels): the old
            # weights on the old inputs, zeros on the new ones.
            new = target[k]
            if (new.dim() != v.dim() or new.dim() not in (2, 4) or new.shape[0] != v.shape[0]
                    or new.shape[1] < v.shape[1] or new.shape[2:] != v.shape[2:]):
                raise ValueError(f"warm start: {k} changes shape {tuple(v.shape)} -> {tuple(new.shape)}")
            v = torch.cat([v, v.new_zeros(v.shape[0], new.shape[1] - v.shape[1], *v.shape[2:])],
                          dim=1)
        weights[k] = v
    missing, unexpected = warm.load_state_dict(weights, strict=False)
    if unexpected or any(not is_fresh(k) for k in missing):
        raise ValueError(f"warm start: unexpected {unexpected}, missing {missing}")
    return warm


def target_image_position(world: str, d: dict[str, np.ndarray], rows: slice) -> np.ndarray:
    """(n, 2) image position (u / width, v / height) of the expert's target centre for the
    given rows of recorded states; NaN where there is none (worlds without a target, rows
    outside the image). Read from the recorded features (aux[6:8]) or, for data recorded
    before they carried it, projected from aux[:3] (target - fingertip, dm) with the world's
    fixed camera."""
    n = rows.stop - rows.start
    out = np.full((n, 2), np.nan, np.float32)
    aux = d.get("aux")
    if aux is None or EMBODIMENT_OF_WORLD[world] != "arm":
        return out
    aux = aux[rows]
    if aux.shape[1] >= 8:
        uv = aux[:, 6:8]
    else:
        cam = _world_camera(world)
        target = d["proprio"][rows, :3] + aux[:, :3] / 10.0
        pc = (np.linalg.inv(cam["T_world_camera"]) @ np.c_[target, np.ones(n)].T)[:3]
        uvw = cam["K"] @ pc
        uv = np.stack([(uvw[0] / uvw[2] + 0.5) / cam["width"], (uvw[1] / uvw[2] + 0.5) / cam["height"]], 1)
    ok = np.all(np.isfinite(uv) & (uv >= 0) & (uv < 1), axis=1)
    out[ok] = uv[ok]
    return out


@functools.lru_cache(maxsize=None)
def _world_camera(world: str) -> dict:
    """The world's camera model (fixed per world) as its reset info reports it."""
    import gymnasium as gym

    env = gym.make(WORLD_IDS[world])
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
    minibatch is one gather. Pixels are kept as float16 (32 KB a state)."""

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
            batch["targets"] = model.actions_to_tokens(chunks)
            # A token counts when the embodiment uses its dim and its step is in the episode.
            batch["loss_mask"] = batch["action_mask"] & torch.from_numpy(
                steps.reshape(len(idx), -1))
            batch["pixels"] = batch["pixels"].half()
            # Auxiliary targets (privileged features); NaN where the data has none.
            aux = np.full((len(idx), model.config.aux_dim), np.nan, np.float32)
            if "aux" in d and model.config.aux_dim:
                n = min(model.config.aux_dim, d["aux"].shape[1])
                aux[:, :n] = d["aux"][start: start + len(idx), :n]
            batch["aux"] = torch.from_numpy(aux)
            # The target centre's (u, v) in [0, 1)^2, NaN = none: the pointing head's patch
            # (-1 = none) and the target keypoint are both trained on it.
            uv = target_image_position(world, d, slice(start, start + len(idx)))
            ok = np.isfinite(uv).all(axis=1)
            point = np.full(len(idx), -1, np.int64)
            if model.config.point_head:
                grid = model.config.image_size // model.config.patch_size
                cells = np.floor(np.nan_to_num(uv) * grid).astype(np.int64)
                point[ok] = cells[ok, 1] * grid + cells[ok, 0]
            batch["point"] = torch.from_numpy(point)
            if model.config.target_keypoint:
                batch["keypoint"] = torch.from_numpy(uv)
            self.parts.setdefault(world, []).append(batch)
        self.tensors.pop(world, None)

    def size(self, world: str) -> int:
        return sum(len(p["targets"]) for p in self.parts.get(world, []))

    def _world_tensors(self, world: str) -> dict[str, torch.Tensor]:
        if world not in self.tensors:
            parts = self.parts[world]
            self.tensors[world] = {k: torch.cat([p[k].to(self.device) for p in parts])
                                   for k in parts[0]}
            self.parts[world] = [self.tensors[world]]
        return self.tensors[world]

    def sample(self, batch_size: int, generator: torch.Generator, device: str,
               weights: dict | None = None):
        """A fixed share of the batch from each world (equal shares by default: driving
        episodes are long and would drown the tabletop's otherwise)."""
        worlds = [w for w in self.parts if self.parts[w]]
        share = np.array([float((weights or {}).get(w, 1.0)) for w in worlds])
        counts = np.floor(batch_size * share / share.sum()).astype(int)
        counts[: batch_size - counts.sum()] += 1
        pieces = []
        for world, n in zip(worlds, counts.tolist()):
            t = self._world_tensors(world)
            idx = torch.randint(0, len(t["targets"]), (n,), generator=generator).to(self.device)
            pieces.append({k: v[idx] for k, v in t.items()})
        batch = {k: torch.cat([p[k] for p in pieces]).to(device) for k in pieces[0]}
        batch["pixels"] = batch["pixels"].float()
        return batch, batch.pop("targets")


def masked_cross_entropy(logits, targets, mask, smoothing):
    """Mean over counted tokens of CE(action bin)."""
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                           reduction="none", label_smoothing=smoothing)
    m = mask.flatten().float()
    return (ce * m).sum() / m.sum().clamp_min(1.0)


def cosine_lr(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _git_commit() -> str:
    """The commit of the code that trains (with "+dirty" for uncommitted changes)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "."],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


# ------------------------------------------------------------------------------------------
# Run state: checkpoint, resume, logging
# ------------------------------------------------------------------------------------------


class Run:
    """The run directory: config, checkpoint, DAgger shards, TensorBoard, the exported model."""

    def __init__(self, cfg: TrainConfig, out: str | os.PathLike, resume: bool):
        self.cfg, self.out = cfg, Path(out)
        self.ckpt_path = self.out / "checkpoint.pt"
        if self.ckpt_path.exists() and not resume:
            raise FileExistsError(f"{self.out} already holds a run: pass --resume to continue "
                                  "it, or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        if cfg.device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~free on Ampere+
            torch.backends.cudnn.allow_tf32 = True
        self.model = build_model(cfg).to(cfg.device)
        self.mode = ExecutionMode(self.model.config.chunk_length, cfg.refill_at,
                                  cfg.execute_steps)
        # The target keypoint's MLP and projection learn faster (keypoint_lr_scale).
        fast = [p for n, p in self.model.named_parameters()
                if n.startswith(("keypoint_in.", "keypoint_aux.", "keypoint_proj.", "keypoint_words."))]
        ids = {id(p) for p in fast}
        groups = [{"params": [p for p in self.model.parameters() if id(p) not in ids], "lr_scale": 1.0}]
        if fast:
            groups.append({"params": fast, "lr_scale": cfg.keypoint_lr_scale})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.controller = losses.EntropyPIController(cfg.entropy_target, cfg.entropy_kp,
                                                     cfg.entropy_ki)
        self.progress = {"stage": cfg.stages[0], "step": 0, "iteration": 0, "global_step": 0}
        self.log: list[dict] = []
        self.resumed = False
        if self.ckpt_path.exists():
            self._load()
        else:
            atomic_write_json(self.out / "train_config.json", dataclasses.asdict(cfg))
            argv = sys.argv[1:]
            if argv[:1] == ["train"]:  # `embodied-stack train ...` (not `python -m ...trainer`)
                argv = argv[1:]
            atomic_write_json(self.out / "run_info.json", {
                "command": "embodied-stack train " + shlex.join(argv),
                "commit": _git_commit(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.buffer = StateBuffer(self.model, cfg.device)
        self._tb = None

    # --- checkpoints ---
    def save(self) -> None:
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rng": json.dumps(self.rng.bit_generator.state),
            "controller": json.dumps(self.controller.state_dict()),
            "progress": json.dumps(self.progress), "log": json.dumps(self.log),
            "model_config": json.dumps(self.model.config.to_dict()),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.ckpt_path, buf.getvalue())

    def _load(self) -> None:
        state = torch.load(self.ckpt_path, weights_only=True, map_location=self.cfg.device)
        config = ElasticVLAConfig.from_dict(json.loads(state["model_config"]))
        if config != self.model.config:
            raise ValueError(f"{self.ckpt_path} holds a model configured as {config}, but this "
                             f"run's settings build {self.model.config}: resume with the "
                             "run's own model settings")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.controller.load_state_dict(json.loads(state["controller"]))
        self.progress = json.loads(state["progress"])
        self.log = json.loads(state["log"])
        self.resumed = True
        print(f"resumed {self.out}: stage {self.progress['stage']}, iteration "
              f"{self.progress['iteration']}, step {self.progress['step']}")

    # --- logging ---
    @property
    def tb(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tb"))
        return self._tb

    def record(self, values: dict, step: int | None = None) -> None:
        step = self.progress["global_step"] if step is None else step
        entry = {"stage": self.progress["stage"], "global_step": step, **values}
        self.log.append(entry)
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.tb.add_scalar(f"{self.progress['stage']}/{k}", v, step)

    def close(self):
        if self._tb is not None:
            self._tb.close()


# ------------------------------------------------------------------------------------------
# Supervised steps (bc, dagger) with elastic distillation
# ------------------------------------------------------------------------------------------


def _sample_submodel(cfg: TrainConfig, rng: np.random.Generator) -> str | None:
    if not cfg.submodel_probs:
        return None
    names, probs = zip(*cfg.submodel_probs.items())
    return str(rng.choice(names, p=np.asarray(probs, float) / sum(probs)))


def supervised_step(run: Run, lr: float) -> dict:
    cfg, model = run.cfg, run.model
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    batch, targets = run.buffer.sample(cfg.batch_size, run.generator, cfg.device,
                                       cfg.world_weights)
    aux_targets = batch.pop("aux")
    point_targets = batch.pop("point")
    kp_targets = batch.pop("keypoint", None)
    if model.config.point_readout and cfg.readout_teacher_forcing > 0:
        keep = torch.rand(len(point_targets), generator=run.generator) < cfg.readout_teacher_forcing
        batch["point_forced"] = torch.where(keep.to(point_targets.device), point_targets, -1)
    if kp_targets is not None and cfg.readout_teacher_forcing > 0:
        kp_forced = (torch.rand(len(kp_targets), generator=run.generator)
                     < cfg.readout_teacher_forcing).to(kp_targets.device)
        batch["keypoint_forced"] = torch.where(kp_forced.unsqueeze(-1), kp_targets, float("nan"))
    elif kp_targets is not None:
        kp_forced = torch.zeros(len(kp_targets), dtype=torch.bool, device=kp_targets.device)
    model.train()
    model.set_submodel("full")
    logits, aux, point, keypoint = model.forward_scaffold(batch)
    # L_full = CE(pi_full(a|o), a_expert) over counted action tokens.
    loss = masked_cross_entropy(logits, targets, batch["loss_mask"], cfg.label_smoothing)
    record = {"ce_full": float(loss.detach())}
    if point is not None and cfg.point_weight > 0:
        # L_point = CE(softmax over image tokens, the patch of the named target)
        have = point_targets >= 0
        if have.any():
            point_loss = torch.nn.functional.cross_entropy(point[have], point_targets[have])
            loss = loss + cfg.point_weight * point_loss
            record["point"] = float(point_loss.detach())
            record["point_acc"] = float((point[have].argmax(-1) == point_targets[have])
                                        .float().mean())
    if keypoint is not None and kp_targets is not None and cfg.keypoint_weight > 0:
        have = torch.isfinite(kp_targets).all(-1)
        if have.any():
            kp_logits, kp_uv, kp_aux = keypoint
            # L_kp = CE(cell scores, cell of the target) + G * |uv_hat - uv|_1 (soft-argmax, in
            # cells; not on the rows whose keypoint was teacher-forced)
            cells = model.keypoint.target_cells(kp_targets[have])
            kp_loss = torch.nn.functional.cross_entropy(kp_logits[have], cells)
            free = have & ~kp_forced
            if free.any():
                grid = model.keypoint.grid
                kp_err = (kp_uv[free] - kp_targets[free]).abs().sum(-1) * grid
                kp_loss = kp_loss + kp_err.mean()
                record["keypoint_err_px"] = float(kp_err.detach().mean()) * 2.0  # 2 px per cell
            if kp_aux is not None and cfg.aux_weight > 0:
                # L_kp_aux = Huber(aux(keypoint, proprio), privileged features) on those rows:
                # the keypoint MLP must work out where the target is relative to the robot.
                want = aux_targets[have]
                ok = torch.isfinite(want)
                if ok.any():
                    kp_aux_loss = torch.nn.functional.smooth_l1_loss(kp_aux[have][ok], want[ok])
                    loss = loss + cfg.aux_weight * kp_aux_loss
                    record["keypoint_aux"] = float(kp_aux_loss.detach())
            loss = loss + cfg.keypoint_weight * kp_loss
            record["keypoint"] = float(kp_loss.detach())
            record["keypoint_acc"] = float((kp_logits[have].argmax(-1) == cells).float().mean())
    if cfg.aux_weight <= 0:
        aux = None
    if aux is not None:
        # L_aux = Huber(aux(o), privileged features): where the target is, made explicit.
        have = torch.isfinite(aux_targets)
        if have.any():
            aux_loss = torch.nn.functional.smooth_l1_loss(aux[have], aux_targets[have])
            loss = loss + cfg.aux_weight * aux_loss
            record["aux"] = float(aux_loss.detach())
    name = None
    if run.progress["global_step"] % cfg.elastic_every == 0:
        name = _sample_submodel(cfg, run.rng)
    if name is not None:
        model.set_submodel(name)
        student = model.forward_batch(batch)
        # L_sub = KL(pi_full || pi_sub) + w * CE(pi_sub, a_expert)   (teacher detached)
        kd = elastic_distillation_loss(student, logits.detach(), batch["loss_mask"])
        ce_sub = masked_cross_entropy(student, targets, batch["loss_mask"], cfg.label_smoothing)
        loss = loss + cfg.kd_weight * kd + cfg.student_ce_weight * ce_sub
        model.set_submodel("full")
        record.update({"kd": float(kd.detach()), "ce_sub": float(ce_sub.detach())})
    apply_gradients(run, loss)
    return record


def apply_gradients(run: Run, loss: torch.Tensor) -> None:
    """One clipped AdamW step; the elastic views are rebuilt on the updated weights."""
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.optimizer.step()
    run.model.refresh_views()
    run.model.eval()


def train_steps(run: Run, total: int, lr_of_step, desc: str) -> None:
    """Run supervised steps from run.progress['step'] to `total`, checkpointing."""
    bar = tqdm(total=total, initial=run.progress["step"], desc=desc, unit="step")
    recent: list[dict] = []
    while run.progress["step"] < total:
        record = supervised_step(run, lr_of_step(run.progress["step"]))
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
        if cfg_checkpoint_due(run):
            run.save()
    bar.close()


def cfg_checkpoint_due(run: Run) -> bool:
    every = run.cfg.checkpoint_every
    return bool(every) and run.progress["step"] % every == 0


# ------------------------------------------------------------------------------------------
# Data: demonstrations and DAgger shards
# ------------------------------------------------------------------------------------------


def load_demos(run: Run) -> None:
    cfg = run.cfg
    for world in cfg.worlds:
        path = demos.collect(demos.DemoConfig(
            world=world, episodes=cfg.demo_episodes[world], first_seed=SEED_BASE["demo"],
            noise_std=cfg.noise_std, noisy_share=cfg.noisy_share,
            chunk_length=run.model.config.chunk_length), run.out / "demos", workers=cfg.workers)
        data = demos.load(path)
        run.buffer.add(world, data)
        if not any(f"demo_states_{world}" in e for e in run.log):
            run.record({f"demo_states_{world}": len(data["rgb"])})
        print(f"{world}: {len(data['rgb'])} demo states from {len(data['episode_success'])} "
              f"episodes (expert success {data['episode_success'].mean():.0%})")


def episodes_to_arrays(episodes) -> dict[str, np.ndarray]:
    """DAgger episodes -> the demo shard layout (one row per labelled state)."""
    rows = [(f, lab, m, ep.instruction, n, x) for n, ep in enumerate(episodes)
            for f, lab, m, x in zip(ep.frames, ep.labels, ep.label_masks, ep.aux)]
    return {
        "aux": np.stack([r[5] for r in rows]).astype(np.float32),
        "rgb": np.stack([r[0][0] for r in rows]), "depth": np.stack([r[0][1] for r in rows]),
        "proprio": np.stack([r[0][2] for r in rows]).astype(np.float32),
        "chunk": np.stack([r[1] for r in rows]).astype(np.float32),
        "chunk_mask": np.stack([r[2] for r in rows]),
        "episode": np.asarray([r[4] for r in rows], np.int32),
        "instruction": np.asarray([r[3] for r in rows], dtype="<U96"),
        "episode_success": np.asarray([ep.success for ep in episodes]),
    }


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


def validate(run: Run, label: str) -> dict:
    """Greedy success per world and submodel on validation seeds (disjoint from training
    and from the test seeds of `embodied-stack eval`)."""
    cfg, model = run.cfg, run.model
    if not cfg.eval_episodes:
        return {}
    out = {}
    seeds = range(SEED_BASE["val"], SEED_BASE["val"] + cfg.eval_episodes)
    for submodel in cfg.eval_submodels:
        model.set_submodel(submodel)
        for world in cfg.worlds:
            eps = run.rollouts(model, world, seeds, run.mode)
            out[f"success_{submodel.replace('/', '_')}_{world}"] = float(
                np.mean([e.success for e in eps]))
    model.set_submodel("full")
    print(f"[{label}] validation: " + " ".join(f"{k} {v:.0%}" for k, v in out.items()))
    return out


# ------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------


def stage_bc(run: Run) -> None:
    cfg = run.cfg
    train_steps(run, cfg.bc_steps, lambda s: cosine_lr(s, cfg.bc_steps, cfg), "bc")
    run.record(validate(run, "bc"))


def dagger_shards(run_dir: Path) -> list[Path]:
    """A run's DAgger shards, <run>/dagger/iter_NNN_<world>.npz, in order."""
    return sorted((Path(run_dir) / "dagger").glob("iter_*_*.npz"))


def load_dagger_shards(run: Run, below: int) -> None:
    """This run's shards of iterations < below, and every shard of the dagger_from runs."""
    imported = [p for d in run.cfg.dagger_from for p in dagger_shards(d)]
    for path in imported + dagger_shards(run.out):
        iteration, world = int(path.stem.split("_")[1]), path.stem.split("_", 2)[2]
        if (path in imported or iteration < below) and world in run.cfg.worlds:
            data = dict(np.load(path, allow_pickle=False))
            run.buffer.add(world, data)
    if imported:
        print(f"dagger_from: {len(imported)} shards from {len(run.cfg.dagger_from)} earlier runs")


def stage_dagger(run: Run) -> None:
    cfg = run.cfg
    while run.progress["iteration"] < cfg.dagger_iterations:
        it = run.progress["iteration"]
        beta = cfg.dagger_beta * cfg.dagger_beta_decay ** it
        # 1. Learner rollouts labelled by the expert (the shard is the unit of resumption:
        #    an iteration killed while training reuses its rollouts).
        stats = {"beta": beta}
        for w, world in enumerate(cfg.worlds):
            path = run.out / "dagger" / f"iter_{it:03d}_{world}.npz"
            if not path.exists():
                n = cfg.dagger_episodes[world]
                bar = tqdm(total=n, desc=f"dagger {it} {world} rollouts", unit="episode")
                run.model.set_submodel("full")
                eps = run.rollouts(run.model, world, iteration_seeds("dagger", it, w, n), run.mode,
                                   label=True, beta=beta, stream_seed=cfg.seed * 7919 + it,
                                   progress=bar.update)
                bar.close()
                atomic_write_npz(path, episodes_to_arrays(eps))
            data = dict(np.load(path, allow_pickle=False))
            stats[f"rollout_success_{world}"] = float(data["episode_success"].mean())
            stats[f"states_{world}"] = len(data["rgb"])
            run.buffer.add(world, data)  # (earlier iterations' shards are in it already)
        print(f"[dagger {it}] beta {beta:.3f} " + " ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))
        # 2. Retrain on the aggregate.
        if run.progress["step"] == 0:
            run.record(stats)
        train_steps(run, cfg.dagger_steps,
                    lambda s: cosine_lr(s, cfg.dagger_steps, cfg), f"dagger {it}")
        run.record(validate(run, f"dagger {it}"))
        run.progress.update(iteration=it + 1, step=0)
        run.save()


def episode_decisions(ep, chunk_length: int, k: int, A: int) -> tuple[list, list]:
    """An RL episode's decisions as policy Observations, and per decision the (T*A,) mask of
    the action tokens that were executed (only those had consequences)."""
    ref = ep.reference  # the episode's first frame
    obs = [Observation(rgb=o[0], instruction=ep.instruction, proprio=o[2],
                       embodiment=EMBODIMENT_OF_WORLD[ep.world], depth=o[1].astype(np.float32),
                       reference_rgb=ref[0], reference_depth=ref[1])
           for o in ep.obs]
    executed = [np.repeat(np.arange(chunk_length) < min(ex, k), A) for ex in ep.executed]
    return obs, executed


def _rl_seeds(cfg: TrainConfig, it: int, w: int) -> list[int]:
    """This iteration's candidate seeds of world w (rl_screen per group)."""
    return iteration_seeds("rl", it, w, cfg.rl_groups[cfg.worlds[w]] * cfg.rl_screen)


def screen_seeds(run: Run, world: str, candidates: list[int], n: int) -> tuple[list[int], dict]:
    """The n seeds to roll groups out on: those the greedy policy fails first, then the rest in
    seed order. Groups on seeds the policy always solves have zero variance (no signal)."""
    if len(candidates) == n:
        return candidates, {}
    bar = tqdm(total=len(candidates), desc=f"rl {world} screening", unit="episode")
    greedy = run.rollouts(run.model, world, candidates, run.mode, progress=bar.update)
    bar.close()
    failed = [s for s, ep in zip(candidates, greedy) if not ep.success]
    solved = [s for s, ep in zip(candidates, greedy) if ep.success]
    chosen = (failed + solved)[:n]
    return sorted(chosen), {f"screen_failed_{world}": len(failed) / len(candidates),
                            f"screen_env_steps_{world}": sum(ep.steps for ep in greedy)}


def collect_groups(run: Run) -> tuple[list, dict]:
    """G sampled rollouts per seed, per world: episodes grouped by (world, seed); and the
    screening's figures (rl_screen > 1)."""
    cfg, model = run.cfg, run.model
    it = run.progress["iteration"]
    model.set_submodel("full")
    groups, screen = [], {}
    for w, world in enumerate(cfg.worlds):
        seeds, st = screen_seeds(run, world, _rl_seeds(cfg, it, w), cfg.rl_groups[world])
        screen.update(st)
        plan = [s for s in seeds for _ in range(cfg.group_size)]
        bar = tqdm(total=len(plan), desc=f"rl {it} {world} rollouts", unit="episode")
        eps = run.rollouts(model, world, plan, run.mode, sample=True,
                           stream_seed=cfg.seed * 7919 + 100_000 + it, keep_decisions=True,
                           progress=bar.update)
        bar.close()
        for g in range(len(seeds)):
            groups.append(eps[g * cfg.group_size:(g + 1) * cfg.group_size])
    return groups, screen


def rl_batch(run: Run, groups) -> dict:
    """Decisions of every rollout with their advantages, p-hat, masks, tensors."""
    cfg, model = run.cfg, run.model
    k = run.mode.steps_per_inference
    A = model.config.max_action_dim
    outcomes = [ep.outcome for g in groups for ep in g]
    group_index = [gi for gi, g in enumerate(groups) for _ in g]
    p_hat, _ = losses.group_majority(outcomes, group_index)
    if cfg.pseudo_reward:
        rewards = losses.pseudo_rewards(outcomes, group_index)
    else:
        rollouts = [ep for g in groups for ep in g]
        rewards = torch.tensor([
            {"success": float(ep.success), "return": ep.ret,
             "success+return": float(ep.success) + 0.1 * ep.ret}[cfg.reward]
            for ep in rollouts])
    adv, zero_var, n_groups = losses.group_advantages(rewards, torch.tensor(group_index))
    keep = np.ones(len(outcomes), bool)
    if cfg.loss.startswith("adpo") and cfg.frontier:
        keep = np.asarray(losses.adpo_frontier(p_hat), bool)
    observations, tokens, logp, step_mask, row_adv, row_p, row_rollout = [], [], [], [], [], [], []
    for r, ep in enumerate(ep for g in groups for ep in g):
        if not keep[r] or float(adv[r]) == 0.0:
            continue  # no signal: a zero advantage adds nothing but cost
        obs, executed = episode_decisions(ep, model.config.chunk_length, k, A)
        observations += obs
        step_mask += executed
        tokens += ep.tokens
        logp += ep.logp
        row_adv += [float(adv[r])] * len(obs)
        row_p += [float(p_hat[r])] * len(obs)
        row_rollout += [r] * len(obs)
    stats = {
        "success": float(np.mean([ep.success for g in groups for ep in g])),
        "return": float(np.mean([ep.ret for g in groups for ep in g])),
        "zero_variance_groups": zero_var / max(1, n_groups),
        "frontier_kept": float(np.mean(keep)),
        "p_hat_mean": float(np.mean(p_hat)),
        "decisions": len(observations),
    }
    for w in cfg.worlds:
        stats[f"success_{w}"] = float(np.mean([ep.success for g in groups for ep in g
                                               if ep.world == w]))
    run.tb.add_histogram("rl/p_hat", np.asarray(p_hat), run.progress["global_step"])
    if not observations:
        return {"stats": stats}
    batch = model.obs_to_batch(observations)
    batch["pixels"] = batch["pixels"].half()
    batch.update(action_tokens=torch.from_numpy(np.stack(tokens)),
                 logp_old=torch.from_numpy(np.stack(logp)),
                 token_mask=batch["action_mask"] & torch.from_numpy(np.stack(step_mask)),
                 adv=torch.tensor(row_adv), p_hat=torch.tensor(row_p),
                 rollout=torch.tensor(row_rollout))
    return {"stats": stats, "batch": batch}


def rl_update(run: Run, data: dict, probe: dict | None = None) -> dict:
    cfg, model = run.cfg, run.model
    batch = data["batch"]
    n = len(batch["adv"])
    for group in run.optimizer.param_groups:
        group["lr"] = cfg.rl_lr * group["lr_scale"]
    stats_sum: dict[str, list] = {}
    for _ in range(cfg.rl_epochs):
        order = torch.randperm(n, generator=run.generator)
        for start in range(0, n, cfg.rl_minibatch):
            idx = order[start:start + cfg.rl_minibatch]
            mb = {k: v[idx].to(cfg.device) for k, v in batch.items()}
            obs_batch = {k: mb[k] for k in ("pixels", "tokens", "proprio", "embodiment",
                                            "action_mask")}
            obs_batch["pixels"] = obs_batch["pixels"].float()
            model.train()
            model.set_submodel("full")
            logits = model.forward_batch(obs_batch).float()
            logp_all = torch.log_softmax(logits, -1)
            logp_new = logp_all.gather(-1, mb["action_tokens"].unsqueeze(-1)).squeeze(-1)
            mask = mb["token_mask"].float()
            entropy = -(logp_all.exp() * logp_all).sum(-1)
            h_batch = float(losses.token_entropy_mean(entropy.detach(), mask))
            if probe is None:
                h = h_batch
            else:
                with torch.no_grad():
                    h = float(losses.token_entropy_mean(model.entropy(probe["batch"]),
                                                        probe["mask"]))
            if cfg.entropy_target == 0 and "entropy_target" not in run.progress:
                # Hold the entropy the RL stage starts from (EntroPIC's usual choice), measured
                # as the controller measures it (the probe, or this update's tokens).
                run.progress["entropy_target"] = run.controller.target = h
                print(f"[rl] EntroPIC target: {h:.3f} nats (the starting policy's entropy, "
                      f"measured on the {cfg.entropy_measure})")
            loss, st = losses.policy_loss(
                cfg.loss, logp_new, mb["logp_old"], mb["adv"], mask, mb["rollout"],
                p_hat_row=mb["p_hat"],
                controller=run.controller, entropy_mean=h, batch_fraction=1.0,
                high_prob=cfg.entropy_high_prob)
            st["entropy"], st["entropy_batch"] = h, h_batch
            st["entropy_target"] = run.controller.target
            # KL(pi_old || pi_new) on the taken tokens, k3 estimator (Schulman).
            log_r = (logp_new - mb["logp_old"]).detach()
            st["kl_old"] = float((((log_r.exp() - 1) - log_r) * mask).sum() / mask.sum().clamp_min(1))
            name = _sample_submodel(cfg, run.rng)
            if name is not None:  # the sampled submodel follows the full model on these states
                model.set_submodel(name)
                student = model.forward_batch(obs_batch)
                kd = elastic_distillation_loss(student, logits.detach(), obs_batch["action_mask"])
                loss = loss + cfg.kd_weight * kd
                model.set_submodel("full")
                st["kd"] = float(kd.detach())
            if cfg.bc_anchor > 0 and any(run.buffer.parts.values()):
                anchor, targets = run.buffer.sample(cfg.batch_size, run.generator, cfg.device,
                                                    cfg.world_weights)
                ce = masked_cross_entropy(model.forward_batch(anchor), targets,
                                          anchor["loss_mask"], 0.0)
                loss = loss + cfg.bc_anchor * ce
                st["anchor_ce"] = float(ce.detach())
            apply_gradients(run, loss)
            run.progress["global_step"] += 1
            for k, v in st.items():
                if isinstance(v, (int, float)):
                    stats_sum.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in stats_sum.items()}


@torch.no_grad()
def rollout_token_stats(run: Run, groups, reference: ElasticVLA | None) -> dict:
    """On the executed tokens of these rollouts: the full model's token-mean entropy, and the
    KL from the policy that sampled them to the reference policy (the one the rl stage
    started from; k3 estimator, Schulman 2020)."""
    model, k = run.model, run.mode.steps_per_inference
    A = model.config.max_action_dim
    ent_sum = kl_sum = count = 0.0
    for g in groups:
        for ep in g:
            obs, executed = episode_decisions(ep, model.config.chunk_length, k, A)
            if not obs:
                continue
            batch = model.obs_to_batch(obs, device=run.cfg.device)
            mask = (batch["action_mask"]
                    & torch.from_numpy(np.stack(executed)).to(batch["action_mask"].device)).float()
            ent_sum += float((model.entropy(batch) * mask).sum())
            count += float(mask.sum())
            if reference is not None:
                tokens = torch.from_numpy(np.stack(ep.tokens)).to(mask.device)
                log_r = reference.log_probs(batch, tokens) - torch.from_numpy(
                    np.stack(ep.logp)).to(mask.device)
                kl_sum += float((((log_r.exp() - 1) - log_r) * mask).sum())
    count = max(count, 1.0)
    return {"entropy_rollouts": ent_sum / count,
            **({"kl_ref": kl_sum / count} if reference is not None else {})}


@torch.no_grad()
def entropy_probe(run: Run, reference: ElasticVLA) -> dict | None:
    """Fixed states on which the entropy the EntroPIC controller holds is measured: the
    executed decisions of greedy rollouts of the starting policy on held-out seeds (rebuilt
    identically on --resume). None when the run measures on the update batch instead."""
    cfg = run.cfg
    if cfg.entropy_measure != "probe":
        return None
    k, A = run.mode.steps_per_inference, reference.config.max_action_dim
    obs, executed = [], []
    for w, world in enumerate(cfg.worlds):
        n = cfg.entropy_probe_episodes.get(world, 0)
        first = SEED_BASE["probe"] + w * 50
        for ep in run.rollouts(reference, world, list(range(first, first + n)), run.mode,
                               keep_decisions=True):
            ep_obs, ep_executed = episode_decisions(ep, reference.config.chunk_length, k, A)
            obs += ep_obs
            executed += ep_executed
    batch = run.model.obs_to_batch(obs, device=cfg.device)
    mask = (batch["action_mask"] & torch.from_numpy(np.stack(executed)).to(cfg.device)).float()
    print(f"[rl] entropy probe: {len(obs)} decisions from "
          f"{sum(cfg.entropy_probe_episodes.get(w, 0) for w in cfg.worlds)} greedy episodes")
    return {"batch": batch, "mask": mask}


def rl_reference(run: Run) -> ElasticVLA:
    """The policy the rl stage started from, kept in <out>/rl_reference (so a resumed run
    measures its KL against the same one)."""
    path = run.out / "rl_reference"
    if not (path / "config.json").exists():
        run.model.save_pretrained(path)
    reference = ElasticVLA.from_pretrained(path, device=run.cfg.device)
    reference.set_submodel("full")
    return reference


def stage_rl(run: Run) -> None:
    cfg = run.cfg
    reference = rl_reference(run)
    probe = entropy_probe(run, reference) if run.progress["iteration"] < cfg.rl_iterations \
        else None
    while run.progress["iteration"] < cfg.rl_iterations:
        it = run.progress["iteration"]
        t0 = time.time()
        groups, screen = collect_groups(run)
        token_stats = rollout_token_stats(run, groups, reference)
        # Env steps include the screening's greedy episodes (they are part of the budget).
        per_world = {f"env_steps_{w}": sum(ep.steps for g in groups for ep in g if ep.world == w)
                     + screen.get(f"screen_env_steps_{w}", 0) for w in cfg.worlds}
        env_steps = sum(per_world.values())
        data = rl_batch(run, groups)
        stats = dict(data["stats"], **token_stats,
                     **{k: v for k, v in screen.items() if k.startswith("screen_failed")})
        if "batch" in data:
            stats.update(rl_update(run, data, probe))
        wall = time.time() - t0
        stats.update(env_steps=env_steps, rl_steps_per_s=env_steps / wall, wall_s=wall,
                     **per_world)
        run.record(stats)
        print(f"[rl {it}] " + " ".join(f"{k} {v:.3g}" for k, v in stats.items()
                                       if isinstance(v, (int, float))))
        run.record(validate(run, f"rl {it}"))
        run.progress.update(iteration=it + 1, step=0)
        run.save()


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool = False) -> ElasticVLA:
    run = Run(cfg, out, resume)
    if cfg.ray_address:
        from embodied_stack.sim.train.distributed import RayRollouts

        run.rollouts = RayRollouts(cfg.ray_address, cfg.ray_workers, cfg.worlds, cfg.pool_size)
    elif cfg.workers > 0:
        from embodied_stack.sim.train.distributed import ProcessRollouts

        run.rollouts = ProcessRollouts(cfg.workers, cfg.worlds, cfg.pool_size)
    else:
        run.rollouts = LocalRollouts(cfg.worlds, cfg.pool_size)
    start = time.time()
    try:
        stages = list(cfg.stages)
        first = stages.index(run.progress["stage"]) if run.progress["stage"] in stages else 0
        for stage in stages[first:]:
            if run.progress["stage"] != stage:
                run.progress.update(stage=stage, step=0, iteration=0)
                run.save()
            if stage in ("bc", "dagger", "rl") and not any(run.buffer.parts.values()):
                if "bc" in stages or stage == "bc":
                    load_demos(run)
                load_dagger_shards(run, below=(run.progress["iteration"] if stage == "dagger"
                                               else 10**9))
            {"bc": stage_bc, "dagger": stage_dagger, "rl": stage_rl}[stage](run)
            # Each stage's result, for comparisons (bench/train_compare.py) and fallbacks.
            run.model.save_pretrained(run.out / f"model_after_{stage}")
        run.progress["stage"] = "done"
        run.save()
    finally:
        run.rollouts.close()
        run.close()
    run.model.set_submodel("full")
    run.model.to("cpu")
    run.model.save_pretrained(run.out / "model")
    minutes = (time.time() - start) / 60
    print(f"done in {minutes:.1f} min; model in {run.out / 'model'}")
    return run.model


def _parse_bool(text: str) -> bool:
    """A BOOL flag's value; anything but the usual spellings is an error, not False."""
    value = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false, yes/no, 1/0, on/off)")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="embodied-stack train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--config", help="YAML file of TrainConfig fields")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, f in fields.items():
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            parser.add_argument(flag, type=_parse_bool, metavar="BOOL", help=f"default {default}")
        elif isinstance(default, (int, float, str)):
            parser.add_argument(flag, type=type(default), help=f"default {default!r}")
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", help=f"default {' '.join(default)}")
        else:
            parser.add_argument(flag, type=json.loads, metavar="JSON",
                                help="JSON object (see TrainConfig)")
    args = parser.parse_args(argv)
    overrides = {n: getattr(args, n) for n in fields if getattr(args, n, None) is not None}
    out = Path(args.out)
    if args.resume and (out / "train_config.json").exists():
        saved = json.loads((out / "train_config.json").read_text())
        saved.update(overrides)
        cfg = TrainConfig(**saved)
    elif args.config:
        cfg = TrainConfig.from_yaml(args.config, **overrides)
    else:
        cfg = TrainConfig(**overrides)
    try:
        train(cfg, out, resume=args.resume)
    except KeyboardInterrupt:
        if (out / "checkpoint.pt").exists():
            print(f"\ninterrupted: the last checkpoint in {out} is intact; continue with "
                  f"embodied-stack train --out {out} --resume", file=sys.stderr)
        else:
            print(f"\ninterrupted before the first checkpoint; collected demonstrations in "
                  f"{out / 'demos'} are kept for the next run", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
