"""TrainConfig: every hyper-parameter of `embodied-stack train` in one dataclass, each documented
once, here, and checked in ``__post_init__``; and the seed layout that keeps a run's seeds apart
by purpose.

Each field is also a command-line flag (``--dagger-iterations 4``; dicts as JSON) and a key of
the YAML file ``--config`` reads; a run writes its config to ``<out>/train_config.json``, which
``--resume`` reads back.

Recipes: ``config/train/<name>.yaml`` (``--recipe <name>``). ``default`` is the recipe meant
to rebuild the shipped model from scratch, and the dataclass's defaults below equal it
(tests/test_recipe.py), so a flag changes one thing against the recipe. ``scaled`` shrinks a
recipe's amounts of work (steps, episodes, iterations) for a smoke run of the same stages.

Seed layout (disjoint by purpose; `embodied-stack eval` tests on 100_000+, never seen here):
demonstrations from 0, DAgger from 10_000, RL from 20_000, the EntroPIC entropy probe from
290_000, periodic validation from 300_000. DAgger and RL give each iteration its own block of
SEEDS_PER_WORLD seeds per world: iteration i, world w of n starts at base + 500 (max(2, n) i + w)
(1000 i + 500 w for this stack's two worlds).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from embodied_stack.models.elastic.submodels import NAMED_SUBMODELS
from embodied_stack.sim.train import losses
from embodied_stack.sim.train.demos import dagger_shards, dataset_action_range, dataset_world
from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD
from embodied_stack.sim.worlds.registry import world_spec

STAGES = ("bc", "dagger", "rl")
SEED_BASE = {"demo": 0, "dagger": 10_000, "rl": 20_000, "probe": 290_000, "val": 300_000}
#: DAgger and RL iterations each own a block of this many seeds per world
SEEDS_PER_WORLD = 500
#: Per-world counts a world spec's train_defaults fills in for a world the config leaves out.
PER_WORLD_FIELDS = ("demo_episodes", "dagger_episodes", "rl_groups", "entropy_probe_episodes")
#: ... and their value when the spec says nothing either.
PER_WORLD_FALLBACK = {"demo_episodes": 100, "dagger_episodes": 32, "rl_groups": 4,
                      "entropy_probe_episodes": 4}
#: The entropy probe's seeds of world w start at SEED_BASE["probe"] + w * this.
PROBE_SEEDS_PER_WORLD = 50

#: Fields that earlier versions had, for reading their configs (``--resume`` of an older run, an
#: older YAML file): a renamed field -> its name now; a removed one -> None (dropped: it only
#: weighed the pointing head, which ElasticVLAConfig.REMOVED_FIELDS tells about).
RENAMED_FIELDS = {"readout_teacher_forcing": "keypoint_teacher_forcing", "point_weight": None}


def world_stride(worlds: int) -> int:
    """Seed blocks per iteration: one per world, at least two (the layout of the two worlds
    this stack began with, kept for one world too)."""
    return max(2, int(worlds))


def iteration_seeds(purpose: str, it: int, w: int, n: int, worlds: int = 2) -> list[int]:
    """The first n seeds of world w's block (of `worlds` trained together) in iteration it of
    a DAgger ("dagger") or RL ("rl") stage."""
    first = SEED_BASE[purpose] + (it * world_stride(worlds) + w) * SEEDS_PER_WORLD
    return list(range(first, first + n))


def probe_seeds(w: int, n: int) -> list[int]:
    """The first n seeds of world w for the entropy probe."""
    first = SEED_BASE["probe"] + w * PROBE_SEEDS_PER_WORLD
    return list(range(first, first + n))


def validation_seeds(n: int) -> range:
    """The periodic validation's seeds (the same in every world)."""
    return range(SEED_BASE["val"], SEED_BASE["val"] + n)


#: The recipes' folder: config/train in a checkout, share/embodied_stack/config/train installed.
def recipe_dirs() -> list[Path]:
    here = Path(__file__).resolve().parents[2]  # the package root (the repository in a checkout)
    dirs = [here / "config" / "train"]
    for prefix in {sys.prefix, sys.base_prefix}:
        dirs.append(Path(prefix) / "share" / "embodied_stack" / "config" / "train")
    return dirs


def recipe_path(recipe: str) -> Path:
    """A recipe's YAML file: a name of config/train/<name>.yaml, or a path to a YAML file."""
    if recipe.endswith((".yaml", ".yml")) or os.sep in recipe:
        path = Path(recipe)
        if not path.is_file():
            raise ValueError(f"recipe {recipe!r}: no such file")
        return path
    for d in recipe_dirs():
        if (d / f"{recipe}.yaml").is_file():
            return d / f"{recipe}.yaml"
    known = sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise ValueError(f"recipe {recipe!r} not found; known recipes: {known} (or pass a .yaml path)")


#: Amounts of work that ``scaled`` multiplies: counts of steps, episodes and iterations.
SCALED_FIELDS = ("bc_steps", "dagger_iterations", "dagger_steps", "rl_iterations", "warmup_steps",
                 "demo_episodes", "dagger_episodes", "rl_groups", "eval_episodes",
                 "entropy_probe_episodes", "checkpoint_every")


def scaled(data: dict, scale: float) -> dict:
    """A recipe's fields with every amount of work in SCALED_FIELDS times `scale` (0 < scale <=
    1), each kept >= 1 where the recipe's was >= 1: the same stages and losses, minutes of work
    (CI runs ``--recipe default --scale 0.01``)."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale={scale} must be in (0, 1]")
    if scale == 1:
        return dict(data)
    defaults = vars(TrainConfig())
    out = dict(data)

    def shrink(n: int) -> int:
        return max(1, round(n * scale)) if n >= 1 else n

    for name in SCALED_FIELDS:
        value = out.get(name, defaults[name])
        out[name] = ({k: shrink(v) for k, v in value.items()} if isinstance(value, dict)
                     else shrink(value))
    return out


def _iteration_limit(purpose: str, following: str, worlds: int = 2) -> int:
    """Iterations whose seed blocks fit before the next purpose's seeds."""
    return (SEED_BASE[following] - SEED_BASE[purpose]) // (world_stride(worlds) * SEEDS_PER_WORLD)


@dataclass
class TrainConfig:
    # --- run ---
    stages: tuple = STAGES  #: stages to run, in order (a subset of bc, dagger, rl)
    #: registered worlds trained together (one model serves them all; sim/worlds/registry.py)
    worlds: tuple = ("tabletop", "driving")
    #: adapter files that register worlds (sim/worlds/registry.py), loaded before ``worlds``
    world_files: tuple = ()
    init_from: str = ""  #: "" = a new model; "default" = the shipped model; or a model directory
    #: ElasticVLAConfig fields of the model; with init_from they are overrides, and only
    #: input-preprocessing, training-scaffold and widening fields may change (sim/train/run.py)
    model: dict = field(default_factory=lambda: {
        "depth_encoding": "log", "depth_max_m": 100.0, "aux_dim": 6, "target_keypoint": True,
        "keypoint_instruction": True, "reference_frame": True,
        # arm: fingertip position and contact; vehicle: speed (no velocities or last commands)
        "proprio_inputs": {"arm": [0, 1, 2, 6], "vehicle": [0]}})
    seed: int = 0  #: seeds every random choice of the run (batches, sampling, DAgger mixture)
    device: str = "cpu"  #: cpu | cuda | cuda:N (rollouts always step the worlds on the CPU)
    threads: int = 0  #: torch CPU threads (0 = torch's default)
    # --- execution, as the policy node runs chunks (models/policy/interface.ExecutionMode) ---
    refill_at: int = 1  #: next chunk requested when this many actions remain
    execute_steps: int = 0  #: cut chunks to this many actions (0 = whole chunk)
    pool_size: int = 16  #: worlds stepped together per world type (one batched forward each tick)
    #: processes that record demos and step rollouts (0 = this process; on a many-core GPU
    #: machine, one per spare core keeps the GPU fed)
    workers: int = 0
    #: "" = rollouts on this machine (see workers); "local" = a private Ray cluster here;
    #: "auto" / "ray://host:port" = rollout workers on an existing Ray cluster
    ray_address: str = ""
    ray_workers: int = 2  #: Ray rollout actors (one CPU each)
    # --- supervised optimisation (bc, dagger) ---
    batch_size: int = 64  #: states per step, split over the worlds by world_weights
    #: world -> share of each batch (empty = equal shares: driving episodes are long and would
    #: drown the tabletop's)
    world_weights: dict = field(default_factory=dict)
    lr: float = 3e-4  #: peak learning rate (AdamW) of bc and dagger
    min_lr: float = 3e-5  #: cosine floor
    warmup_steps: int = 100  #: linear warm-up steps of each bc / dagger cosine schedule
    weight_decay: float = 0.01  #: AdamW weight decay (every stage)
    grad_clip: float = 1.0  #: gradient norm clip (every stage)
    label_smoothing: float = 0.0  #: CE smoothing over the action bins; 0 keeps the policy sharp for RL sampling
    # --- the model's training-only losses (ElasticVLA.forward) ---
    aux_weight: float = 1.0  #: weight of the auxiliary head's loss and the keypoint MLP's (models with aux_dim > 0)
    keypoint_weight: float = 1.0  #: weight of the target keypoint's loss (models with target_keypoint)
    #: the keypoint MLP and its projection learn at lr x this: they must learn a camera's
    #: geometry (weights of order 1), which AdamW steps of ~lr would take thousands of steps
    keypoint_lr_scale: float = 10.0
    #: models with target_keypoint: share of training samples whose keypoint is handed the true
    #: target position instead of the model's own (teacher forcing), so the action queries
    #: learn to use the position before the model finds it well; acting never is
    keypoint_teacher_forcing: float = 0.5
    # --- elastic training (every stage; Nemotron Elastic) ---
    #: which nested submodel is trained alongside the full model at each step (probabilities)
    submodel_probs: dict = field(default_factory=lambda: {"1/2": 0.6, "3/4": 0.2, "1/4": 0.2})
    elastic_every: int = 2  #: train a sampled submodel every N-th supervised step
    kd_weight: float = 1.0  #: weight of KL(full || submodel)
    student_ce_weight: float = 0.5  #: weight of the submodel's own CE (bc, dagger)
    # --- bc ---
    #: a LeRobotDataset v3 folder (``embodied-stack record``): bc learns its recorded actions,
    #: binned over the dataset's action min/max (the model's ``action_range``), instead of
    #: recording the live expert; its world (robot_type) becomes ``worlds`` if left at the default
    dataset: str = ""
    demo_episodes: dict = field(default_factory=lambda: {"tabletop": 600, "driving": 150})  #: per world
    noise_std: float = 0.3  #: DART noise on executed expert actions
    noisy_share: float = 0.5  #: share of noisy demo episodes
    bc_steps: int = 4000  #: optimiser steps of the bc stage
    # --- dagger ---
    dagger_iterations: int = 8  #: rollout + retrain rounds
    #: learner episodes per world per iteration (driving episodes are ~6x longer)
    dagger_episodes: dict = field(default_factory=lambda: {"tabletop": 150, "driving": 100})
    dagger_beta: float = 0.3  #: share of expert-executed chunks in the first iteration
    dagger_beta_decay: float = 0.5  #: beta multiplier per iteration
    dagger_steps: int = 1000  #: optimiser steps per iteration, on the whole aggregate
    #: run directories whose DAgger shards join this run's aggregate from the start (a
    #: warm-started run keeps the states earlier runs' learners visited, with their labels)
    dagger_from: tuple = ()
    # --- rl ---
    rl_iterations: int = 10  #: rollout + update rounds
    loss: str = "adpo+entropic"  #: grpo | adpo | entropic | adpo+entropic (sim/train/losses.py)
    group_size: int = 8  #: G rollouts per initial state
    #: initial states (seeds) per world per iteration
    rl_groups: dict = field(default_factory=lambda: {"tabletop": 24, "driving": 8})
    #: screening: try rl_screen x rl_groups seeds once with the greedy policy and give the groups
    #: to the seeds it failed first (then the rest, in seed order), so fewer groups are
    #: all-success and carry no signal; 1 = no screening
    rl_screen: int = 10
    rl_lr: float = 3e-5  #: learning rate of the rl stage (constant)
    rl_epochs: int = 2  #: passes over each iteration's rollouts
    rl_minibatch: int = 128  #: decisions per gradient step
    #: per rollout: "success" (1/0), "return" (the world's shaped episode return), or
    #: "success+return" (success + 0.1 * return: dense, success-led)
    reward: str = "success+return"
    pseudo_reward: bool = False  #: ADPO without ground truth: reward = agrees with majority
    frontier: bool = False  #: ADPO: drop groups whose majority share is outside [0.3, 0.8]
    #: EntroPIC target token entropy (nats); 0 = the entropy of the policy the rl stage starts
    #: from (as the controller measures it, on its first update); < 0 disables
    entropy_target: float = 0.0
    entropy_kp: float = 1.0  #: EntroPIC proportional gain
    #: EntroPIC integral gain; the integral advances by the entropy error once per optimiser
    #: step (each minibatch here is one step, no micro-batching)
    entropy_ki: float = 0.01
    entropy_high_prob: float = 0.95  #: EntroPIC acts on tokens whose probability exceeds this
    #: the entropy EntroPIC holds (and the log's "entropy"): "probe" = token-mean entropy on a
    #: fixed set of states (greedy rollouts of the starting policy on held-out seeds), "batch" =
    #: on each update minibatch (the paper's form; here the minibatches are a few groups' states
    #: and their entropy swings +-30% while the policy barely moves, so the controller would
    #: chase the batch's make-up)
    entropy_measure: str = "probe"
    #: probe episodes per world ("probe" measure)
    entropy_probe_episodes: dict = field(default_factory=lambda: {"tabletop": 8, "driving": 4})
    bc_anchor: float = 0.5  #: weight of CE on the DAgger aggregate during rl (0 = pure RL)
    # --- robustness (every stage's episodes; validation stays on the plain worlds) ---
    #: the training worlds' randomisation, ``key=value,...`` of sim/worlds/shift.py's Shift (with
    #: ``ranges=true`` each magnitude is drawn per episode from none to the given one); "" = none
    shift: str = ""
    #: share of training episodes (demos, DAgger, RL) whose instruction is a phrasing from the
    #: paraphrase generator (sim/worlds/paraphrase.py), drawn per seed; a new model's vocabulary
    #: then includes the generator's words
    paraphrase_share: float = 0.0
    # --- evaluation and bookkeeping ---
    eval_episodes: int = 40  #: validation episodes per world after each iteration (0 = none)
    eval_submodels: tuple = ("full", "1/2")  #: submodels validated
    checkpoint_every: int = 200  #: optimiser steps between checkpoints inside a stage

    def __post_init__(self):
        self.stages, self.worlds = tuple(self.stages), tuple(self.worlds)
        self.world_files = tuple(str(p) for p in self.world_files)
        if self.world_files:
            from embodied_stack.sim.worlds.registry import load_world_files

            load_world_files(self.world_files)
        self.eval_submodels, self.dagger_from = tuple(self.eval_submodels), tuple(self.dagger_from)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"stages={self.stages!r}: each must be one of {STAGES}")
        if not self.worlds or len(set(self.worlds)) != len(self.worlds):
            raise ValueError(f"worlds={self.worlds!r}: one or more registered worlds, each once")
        for w in self.worlds:
            spec = world_spec(w)  # (an unknown world: the error lists the registered ones)
            for name in PER_WORLD_FIELDS:  # a world the dicts leave out: its spec's defaults
                if w not in getattr(self, name):
                    setattr(self, name, {**getattr(self, name),
                                         w: int(spec.train_defaults.get(name, PER_WORLD_FALLBACK[name]))})
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
        for name in ("aux_weight", "keypoint_weight", "keypoint_lr_scale", "kd_weight", "student_ce_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
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
        n = len(self.worlds)
        for name, limit in (("dagger_iterations", _iteration_limit("dagger", "rl", n)),
                            ("rl_iterations", _iteration_limit("rl", "probe", n))):
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
        if self.shift:
            from embodied_stack.sim.worlds.shift import Shift

            Shift.from_option(self.shift)  # (a bad key or value: its error names it and the range)
        if self.paraphrase_share:
            from embodied_stack.sim.worlds.paraphrase import PARAPHRASE_WORLDS

            other = [w for w in self.worlds if w not in PARAPHRASE_WORLDS]
            if other:
                raise ValueError(f"paraphrase_share={self.paraphrase_share}: worlds {other} have no paraphrase "
                                 f"generator (only {PARAPHRASE_WORLDS})")
        for name in ("dagger_beta", "dagger_beta_decay", "noise_std", "noisy_share",
                     "label_smoothing", "keypoint_teacher_forcing", "paraphrase_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.entropy_measure not in ("probe", "batch"):
            raise ValueError(f"entropy_measure={self.entropy_measure!r}: allowed 'probe', 'batch'")
        if self.entropy_measure == "probe" and (
                not any(self.entropy_probe_episodes.get(w, 0) for w in self.worlds)
                or any(not 0 <= n <= PROBE_SEEDS_PER_WORLD for n in self.entropy_probe_episodes.values())):
            raise ValueError(f"entropy_probe_episodes={self.entropy_probe_episodes}: each in "
                             f"[0, {PROBE_SEEDS_PER_WORLD}], and at least one episode in a trained world")
        if not 0 < self.entropy_high_prob < 1:
            raise ValueError(f"entropy_high_prob={self.entropy_high_prob} must be in (0, 1)")
        if self.dataset:
            world = dataset_world(self.dataset)
            if self.worlds == TrainConfig.__dataclass_fields__["worlds"].default:
                self.worlds = (world,)
            if self.worlds != (world,):
                raise ValueError(f"dataset {self.dataset!r} was recorded in {world!r}; train it with "
                                 f"worlds=({world!r},), not {self.worlds}")
            # The bins span the dataset's actions (its normalisation statistics).
            ranges = dict(self.model.get("action_range") or {})
            ranges.setdefault(EMBODIMENT_OF_WORLD[world], dataset_action_range(self.dataset))
            self.model = {**self.model, "action_range": ranges}
        no_expert = [w for w in self.worlds if not world_spec(w).has_expert]
        needs = [s for s in self.stages if s == "dagger" or (s == "bc" and not self.dataset)]
        if no_expert and needs:
            raise ValueError(f"worlds {no_expert} have no scripted expert: stages {needs} need one "
                             "(train bc from a dataset, or stages=('rl',))")
        for run_dir in self.dagger_from:
            if not dagger_shards(run_dir):
                raise ValueError(f"dagger_from: {run_dir!r} holds no DAgger shards "
                                 "(expected <run>/dagger/iter_NNN_<world>.npz)")
        if self.reward not in ("success", "return", "success+return"):
            raise ValueError(f"reward={self.reward!r} not in ('success', 'return', 'success+return')")
        if self.group_size < 2 and self.loss != "grpo":
            raise ValueError(f"loss={self.loss!r} compares rollouts: group_size must be >= 2")

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainConfig":
        """A TrainConfig from a mapping of its fields (earlier versions' names too, see
        RENAMED_FIELDS); an unknown field is an error naming the known ones."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of TrainConfig fields")
        data = dict(data)
        for old, new in RENAMED_FIELDS.items():
            if old in data:
                value = data.pop(old)
                if new is not None:
                    data.setdefault(new, value)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path, **overrides) -> "TrainConfig":
        """The fields in a YAML file, then `overrides` (the command line's flags)."""
        return cls.from_dict({**read_yaml(path), **overrides}, source=str(path))


def read_yaml(path) -> dict:
    """A YAML file's mapping of TrainConfig fields (not yet checked)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields")
    return data
