"""A training run's state and its directory: the model it trains (new, or warm-started from a
saved one), the optimiser and random streams, checkpoints, the log and TensorBoard.

    <out>/train_config.json   the TrainConfig (``--resume`` reads it back)
    <out>/run_info.json       the command, the code's commit and, when done, the wall time
    <out>/checkpoint.pt       model, optimizer, RNG states, EntroPIC integral, stage progress, log
    <out>/demos/, dagger/     demonstrations and DAgger shards (sim/train/demos.py)
    <out>/tb/                 TensorBoard
    <out>/model_after_<stage>/, model/   the model after each stage, and the final one

The checkpoint is written atomically (temp file + rename) at the end of every iteration and
every ``checkpoint_every`` optimiser steps; a run resumed from it gives exactly the parameters
of an uninterrupted one.

A warm start (``init_from``) loads a saved model and may change only fields that keep its
weights meaningful: input preprocessing, training-scaffold heads (which start fresh), and
fields that widen an acting layer's input (its new inputs get zero weights, so the model acts
exactly as before until trained).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from embodied_stack.models.files import atomic_write_bytes, atomic_write_json
from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig, InstructionTokenizer
from embodied_stack.models.policy.elastic_vla.tokenizer import DEFAULT_WORDS, split_words
from embodied_stack.models.policy.interface import ExecutionMode
from embodied_stack.sim.train import losses
from embodied_stack.sim.train.config import TrainConfig, validation_seeds
from embodied_stack.sim.train.rollouts import LocalRollouts
from embodied_stack.sim.train.supervised import StateBuffer

if TYPE_CHECKING:
    from embodied_stack.sim.train.distributed import ProcessRollouts, RayRollouts

#: Config fields that only change how observations are turned into tensors: a warm start may
#: change them (the weights still fit).
#: (``action_range``: how actions map to the bins, set from a dataset's statistics.)
PREPROCESSING_FIELDS = ("depth_encoding", "depth_max_m", "depth_min_m", "rgb_normalization",
                        "proprio_inputs", "action_range")
#: Config fields a warm start may add, change or drop (training-scaffold heads), and the
#: modules that then start fresh.
SCAFFOLD_FIELDS = {"aux_dim": ("aux_head", "keypoint_aux"),
                   "target_keypoint": ("keypoint", "keypoint_in", "keypoint_aux", "keypoint_proj",
                                       "keypoint_words")}
#: Config fields a warm start may add that widen an acting layer's input: their module starts
#: fresh and the widened layer gets zero weights on the new inputs, so the warm-started model
#: acts exactly as before until trained.
WIDENING_FIELDS = {"keypoint_instruction": ("keypoint_words",), "reference_frame": (),
                   "instruction_embedding": ("sentence_proj", "keypoint_sentence", "keypoint.sentence")}
#: Parameters that learn at lr x keypoint_lr_scale: the target keypoint's MLP and projection.
FAST_PARAMETERS = ("keypoint_in.", "keypoint_aux.", "keypoint_proj.", "keypoint_words.", "keypoint_sentence.")


def instruction_tokenizer(worlds, paraphrases: bool = False) -> InstructionTokenizer:
    """The default words plus every word the given worlds' instructions can use (each world
    spec's vocabulary, or the words of its fixed instruction); with `paraphrases`, also the
    paraphrase generator's words for those worlds (sim/worlds/paraphrase.py)."""
    from embodied_stack.sim.worlds.paraphrase import paraphrase_words
    from embodied_stack.sim.worlds.registry import world_spec

    words = set(DEFAULT_WORDS)
    for world in worlds:
        words |= world_spec(world).words() | (paraphrase_words(world) if paraphrases else set())
    return InstructionTokenizer.from_words(sorted(w for w in words if split_words(w) == [w]))


def model_fields_for_worlds(worlds, model: dict) -> dict:
    """ElasticVLAConfig fields of a new model for `worlds`: the embodiments of worlds that the
    default model lacks are added with their action dims (from their specs), max_action_dim
    widened to fit, and their proprio_inputs from the specs' train_defaults (a config that
    names ``embodiments`` itself keeps them); proprio_dim widens to the widest world's proprio."""
    from embodied_stack.sim.worlds.registry import world_spec

    default = dict(ElasticVLAConfig().embodiments)
    specs = [world_spec(w) for w in worlds]
    new = {s.embodiment.name: s.embodiment.dims for s in specs
           if s.embodiment.name not in default}
    out = dict(model)
    width = max(s.proprio_width for s in specs)
    if width > int(model.get("proprio_dim", ElasticVLAConfig().proprio_dim)):
        out["proprio_dim"] = width  # (a world with more proprio entries than 8: as wide as it)
    if not new or "embodiments" in model:
        return out
    out["embodiments"] = {**default, **new}
    out["max_action_dim"] = max(int(model.get("max_action_dim", ElasticVLAConfig().max_action_dim)),
                                *new.values())
    inputs = dict(model.get("proprio_inputs") or {})
    for s in specs:
        if s.embodiment.name in new and "proprio_inputs" in s.train_defaults:
            inputs.setdefault(s.embodiment.name, list(s.train_defaults["proprio_inputs"]))
    if inputs:
        out["proprio_inputs"] = inputs
    return out


def build_model(cfg: TrainConfig) -> ElasticVLA:
    """A new model (``init_from: ""``), or a saved one with ``cfg.model``'s overrides. A new
    model acts for every trained world's embodiment (model_fields_for_worlds); a saved one
    must already have them."""
    if not cfg.init_from:
        return ElasticVLA(ElasticVLAConfig(**model_fields_for_worlds(cfg.worlds, cfg.model)),
                          instruction_tokenizer(cfg.worlds, paraphrases=cfg.paraphrase_share > 0))
    from embodied_stack.models.policy import load_default_policy

    model = load_default_policy(None if cfg.init_from == "default" else cfg.init_from)
    from embodied_stack.sim.worlds.registry import world_spec

    missing = sorted({world_spec(w).embodiment.name for w in cfg.worlds} - set(model.config.embodiments))
    if missing:
        raise ValueError(f"init_from={cfg.init_from!r}: the model acts for embodiments "
                         f"{sorted(model.config.embodiments)}, not {missing} of worlds "
                         f"{list(cfg.worlds)}; train a new model with init_from: ''")
    wide = {w: world_spec(w).proprio_width for w in cfg.worlds
            if world_spec(w).proprio_width > model.config.proprio_dim}
    if wide:
        raise ValueError(f"init_from={cfg.init_from!r}: the model reads {model.config.proprio_dim} "
                         f"proprio entries, worlds {wide} give more; train a new model with init_from: ''")
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
    # warm-started weights; only the modules whose field changed start fresh.
    warm = ElasticVLA(dataclasses.replace(model.config, **changed), model.tokenizer)
    fresh = [f"{module}." for fields in (SCAFFOLD_FIELDS, WIDENING_FIELDS)
             for name, modules in fields.items() if name in changed for module in modules]

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


def make_rollouts(cfg: TrainConfig) -> LocalRollouts | ProcessRollouts | RayRollouts:
    """Where the run's episodes are stepped: on Ray actors (``ray_address``), in worker
    processes (``workers``) or in this process; all give the same episodes for the same seeds.
    Their worlds are randomised as ``cfg.shift`` says."""
    if cfg.ray_address:
        from embodied_stack.sim.train.distributed import RayRollouts

        return RayRollouts(cfg.ray_address, cfg.ray_workers, cfg.worlds, cfg.pool_size, shift=cfg.shift)
    if cfg.workers > 0:
        from embodied_stack.sim.train.distributed import ProcessRollouts

        return ProcessRollouts(cfg.workers, cfg.worlds, cfg.pool_size, shift=cfg.shift)
    return LocalRollouts(cfg.worlds, cfg.pool_size, cfg.shift)


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


def machine_description(device: str) -> str:
    """Where a run trains, for its record: the CPU (model name and usable cores) and the device."""
    from embodied_stack.control.elastic.latency_table import device_key

    cpu = device_key("cpu").removeprefix("cpu:")
    return cpu if not device.startswith("cuda") else f"{cpu}, {device_key(device).removeprefix('cuda:')}"


class Run:
    """The run directory and everything a checkpoint restores (see the module docstring), and
    the rollouts the stages step (``make_rollouts``, started on first use)."""

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
        fast = [p for n, p in self.model.named_parameters() if n.startswith(FAST_PARAMETERS)]
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
        self._rollouts: LocalRollouts | ProcessRollouts | RayRollouts | None = None
        self._plain_rollouts: LocalRollouts | None = None  # validation's, when training is shifted
        if self.ckpt_path.exists():
            self._load()
            self._record_resume_changes()
        else:
            atomic_write_json(self.out / "train_config.json", dataclasses.asdict(cfg))
            argv = sys.argv[1:]
            if argv[:1] == ["train"]:  # `embodied-stack train ...` (not `python -m ...trainer`)
                argv = argv[1:]
            atomic_write_json(self.out / "run_info.json", {
                "command": "embodied-stack train " + shlex.join(argv),
                "commit": _git_commit(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "machine": machine_description(cfg.device)})
        self.buffer = StateBuffer(self.model, cfg.device)
        self._tb = None
        # Training wall time over every session of the run (kept in the checkpoint's progress);
        # wall_before: the sessions before this one.
        self._clock = time.monotonic()
        self.wall_before = float(self.progress.get("wall_s", self._wall_until_checkpoint()))

    def _wall_until_checkpoint(self) -> float:
        """A checkpoint written before progress kept wall_s: from the run's start to it."""
        info = self.out / "run_info.json"
        if not (self.resumed and info.exists()):
            return 0.0
        started = time.mktime(time.strptime(json.loads(info.read_text())["started"],
                                            "%Y-%m-%d %H:%M:%S"))
        return max(0.0, self.ckpt_path.stat().st_mtime - started)

    @property
    def wall_s(self) -> float:
        """Seconds this run has trained, over all its sessions (resumes)."""
        return self.wall_before + time.monotonic() - self._clock

    def _record_resume_changes(self) -> None:
        """A run resumed with flags that change its config (e.g. more DAgger iterations): the
        config file becomes what the run now trains with, and run_info lists each change with
        the stage and iteration it took effect at."""
        cfg_path, info_path = self.out / "train_config.json", self.out / "run_info.json"
        before = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        now = json.loads(json.dumps(dataclasses.asdict(self.cfg)))  # (tuples as lists)
        defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
        # (a field newer than the run's config file, at its default, is no change)
        changed = {k: {"was": before.get(k), "now": v} for k, v in now.items()
                   if before.get(k) != v and (k in before or v != defaults[k])}
        if not changed:
            return
        atomic_write_json(cfg_path, now)
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        info.setdefault("resumed_with_changes", []).append({
            "at": time.strftime("%Y-%m-%d %H:%M:%S"), "stage": self.progress["stage"],
            "iteration": self.progress["iteration"], "step": self.progress["step"],
            "changed": changed})
        atomic_write_json(info_path, info)
        print(f"resumed with changed settings: {sorted(changed)} (recorded in {info_path})")

    # --- checkpoints ---
    def save(self) -> None:
        self.progress["wall_s"] = round(self.wall_s, 1)
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

    def checkpoint_due(self) -> bool:
        """Every ``checkpoint_every`` optimiser steps inside a stage."""
        every = self.cfg.checkpoint_every
        return bool(every) and self.progress["step"] % every == 0

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

    # --- optimisation (every stage) ---
    def apply_gradients(self, loss: torch.Tensor) -> None:
        """One clipped AdamW step; the elastic views are rebuilt on the updated weights."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.model.refresh_views()
        self.model.eval()

    def sample_submodel(self) -> str | None:
        """The nested submodel trained beside the full model this step (submodel_probs)."""
        if not self.cfg.submodel_probs:
            return None
        names, probs = zip(*self.cfg.submodel_probs.items())
        return str(self.rng.choice(names, p=np.asarray(probs, float) / sum(probs)))

    # --- rollouts, evaluation and logging ---
    @property
    def rollouts(self) -> LocalRollouts | ProcessRollouts | RayRollouts:
        if self._rollouts is None:
            self._rollouts = make_rollouts(self.cfg)
        return self._rollouts

    @property
    def validation_rollouts(self) -> LocalRollouts | ProcessRollouts | RayRollouts:
        """The plain worlds: a run's curve is comparable with any other run's, shifted or not."""
        if not self.cfg.shift:
            return self.rollouts
        if self._plain_rollouts is None:
            self._plain_rollouts = LocalRollouts(self.cfg.worlds, self.cfg.pool_size)
        return self._plain_rollouts

    def paraphraser(self, world: str):
        """The `rewrite` of a training episode's instruction (``paraphrase_share``), or None."""
        if not self.cfg.paraphrase_share:
            return None
        from embodied_stack.sim.worlds.paraphrase import TrainingParaphraser

        return TrainingParaphraser(world, self.cfg.paraphrase_share)

    def validate(self, label: str) -> dict:
        """Greedy success per world and submodel on the validation seeds (disjoint from
        training and from the test seeds of `embodied-stack eval`)."""
        cfg, model = self.cfg, self.model
        if not cfg.eval_episodes:
            return {}
        out = {}
        for submodel in cfg.eval_submodels:
            model.set_submodel(submodel)
            for world in cfg.worlds:
                eps = self.validation_rollouts(model, world, validation_seeds(cfg.eval_episodes), self.mode)
                out[f"success_{submodel.replace('/', '_')}_{world}"] = float(
                    np.mean([e.success for e in eps]))
        model.set_submodel("full")
        print(f"[{label}] validation: " + " ".join(f"{k} {v:.0%}" for k, v in out.items()))
        return out

    @property
    def tb(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tb"))
        return self._tb

    def record(self, values: dict, step: int | None = None) -> None:
        """Append to the log (kept in the checkpoint) and write the numbers to TensorBoard."""
        step = self.progress["global_step"] if step is None else step
        entry = {"stage": self.progress["stage"], "global_step": step, **values}
        self.log.append(entry)
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.tb.add_scalar(f"{self.progress['stage']}/{k}", v, step)

    def close(self) -> None:
        """Stop the rollout workers and flush TensorBoard."""
        for rollouts in (self._rollouts, self._plain_rollouts):
            if rollouts is not None:
                rollouts.close()
        if self._tb is not None:
            self._tb.close()
