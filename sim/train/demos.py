"""Expert demonstrations for behaviour cloning (the warm start before group RL).

Each world's scripted expert labels every visited state with its action chunk: what it would
do over the next T steps from that state (simulated ahead, then restored). A share of the
episodes is *executed* with Gaussian noise added to the expert's action while the label stays
the clean expert chunk (DART, Laskey et al. 2017): the policy then sees, and learns to recover
from, the states its own small errors lead to.

Demonstrations are written in shards of `shard_episodes` episodes (NumPy .npz, no pickle),
each written atomically (temp file + rename), so an interrupted collection resumes where it
stopped and never leaves a half-written shard. DAgger's learner episodes, labelled by the
expert, are kept in the same layout, one shard per iteration and world
(``<run>/dagger/iter_NNN_<world>.npz``: ``dagger_shard``, ``dagger_shards``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from embodied_stack.sim.worlds.registry import make_world, make_world_expert, world_spec


@dataclass
class DemoConfig:
    # --- what to collect ---
    world: str = "tabletop"  #: a registered world with an expert (tabletop, driving, ...)
    episodes: int = 200  #: expert episodes to record
    first_seed: int = 0  #: episode k uses seed first_seed + k (keep eval seeds disjoint)
    width: int = 64  #: camera image width (px)
    height: int = 64  #: camera image height (px)
    # --- DART exploration noise ---
    noise_std: float = 0.3  #: std of the Gaussian added to executed actions, in [0, 1]
    noisy_share: float = 0.5  #: share of episodes executed with noise, in [0, 1]
    # --- labels and storage ---
    chunk_length: int = 4  #: future expert actions stored per step (the policy's chunk T)
    shard_episodes: int = 25  #: episodes per shard file (the unit of resumption)
    # --- robustness (sim/train/config.py's fields of the same names) ---
    shift: str = ""  #: the world's randomisation, ``key=value,...`` of sim/worlds/shift.Shift; "" = none
    paraphrase_share: float = 0.0  #: share of episodes whose stored instruction is a paraphrase

    def __post_init__(self):
        if not world_spec(self.world).has_expert:
            raise ValueError(f"world {self.world!r} has no scripted expert: no demonstrations "
                             "to record (train from a dataset, or RL only)")
        if self.episodes < 1 or self.shard_episodes < 1 or self.chunk_length < 1:
            raise ValueError(f"episodes={self.episodes}, shard_episodes={self.shard_episodes}, "
                             f"chunk_length={self.chunk_length} must all be >= 1")
        if not 0 <= self.noise_std <= 1 or not 0 <= self.noisy_share <= 1:
            raise ValueError(f"noise_std={self.noise_std} and noisy_share={self.noisy_share} "
                             "must be in [0, 1]")


def _record_episode(env, expert, seed: int, noise_std: float, rng: np.random.Generator,
                    chunk_length: int, rewrite=None):
    """One expert episode: frames, chunk labels (n, T, A) with masks (n, T), instruction, success.

    Each state's label is the expert's own clean chunk from that state (look-ahead in the
    simulator, ``sim.experts.expert_chunk``), not the next T labels of the executed (noisy)
    trajectory: a chunk never contains corrections to noise it did not cause. `rewrite(seed,
    instruction)`: the instruction stored (the expert acts on the world's task either way)."""
    from embodied_stack.sim.experts import expert_chunk, expert_features

    obs, info = env.reset(seed=seed)
    instruction = str(obs["instruction"])
    if rewrite is not None:
        instruction = rewrite(seed, instruction)
    expert.reset()
    frames, chunks, masks = [], [], []
    done = False
    while not done:
        label = np.asarray(expert(obs, info), np.float32)
        features = expert_features(expert)
        chunk, mask = expert_chunk(env, expert, chunk_length, first_action=label)
        frames.append((obs["rgb"], obs["depth"].astype(np.float16), obs["proprio"], features))
        chunks.append(chunk)
        masks.append(mask)
        executed = label
        if noise_std > 0:
            executed = np.clip(label + rng.normal(0, noise_std, label.shape), -1, 1)
        obs, _, terminated, truncated, info = env.step(executed.astype(np.float32))
        done = terminated or truncated
    return frames, np.stack(chunks), np.stack(masks), instruction, bool(info["is_success"])


def _record_shard(config: DemoConfig, out: Path, k: int, env=None, expert=None, bar=None) -> None:
    """Record shard k (episodes k*shard_episodes...) and write it atomically."""
    own = env is None
    if own:
        env = make_world_for(config)
        expert = make_world_expert(env)
    rewrite = None
    if config.paraphrase_share:
        from embodied_stack.sim.worlds.paraphrase import TrainingParaphraser

        rewrite = TrainingParaphraser(config.world, config.paraphrase_share)
    try:
        first = k * config.shard_episodes
        count = min(config.shard_episodes, config.episodes - first)
        cols: dict[str, list[Any]] = {n: [] for n in ("rgb", "depth", "proprio", "aux", "chunk", "chunk_mask",
                                "episode", "instruction")}
        successes = []
        for e in range(first, first + count):
            seed = config.first_seed + e
            rng = np.random.default_rng(seed + 7919)
            noisy = rng.random() < config.noisy_share
            frames, chunk, mask, instruction, success = _record_episode(
                env, expert, seed, config.noise_std if noisy else 0.0, rng, config.chunk_length, rewrite)
            cols["rgb"] += [f[0] for f in frames]
            cols["depth"] += [f[1] for f in frames]
            cols["proprio"] += [f[2] for f in frames]
            cols["aux"] += [f[3] for f in frames]
            cols["chunk"].append(chunk)
            cols["chunk_mask"].append(mask)
            cols["episode"] += [e] * len(frames)
            cols["instruction"] += [instruction] * len(frames)
            successes.append(success)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"expert success {np.mean(successes):.0%}")
        arrays = {
            "rgb": np.stack(cols["rgb"]), "depth": np.stack(cols["depth"]),
            "proprio": np.stack(cols["proprio"]).astype(np.float32),
            "aux": np.stack(cols["aux"]).astype(np.float32),
            "chunk": np.concatenate(cols["chunk"]).astype(np.float32),
            "chunk_mask": np.concatenate(cols["chunk_mask"]),
            "episode": np.asarray(cols["episode"], np.int32),
            "instruction": np.asarray(cols["instruction"], dtype=f"<U{96}"),
            "episode_success": np.asarray(successes),
        }
        from embodied_stack.models.files import atomic_write_npz

        atomic_write_npz(out / f"shard_{k:04d}.npz", arrays)  # rendered scenes compress ~50x
    finally:
        if own:
            env.close()


def make_world_for(config: DemoConfig):
    """The world the demonstrations are recorded in, randomised as ``config.shift`` says."""
    return make_world(config.world, config.width, config.height, shift=config.shift or None)


def collect(config: DemoConfig, out_dir: str | os.PathLike, workers: int = 0) -> Path:
    """Record the demonstrations into `out_dir/<world>/shard_XXXX.npz`; resumes if present.

    `workers` > 1 records shards in that many processes (each shard depends only on its
    seeds, so the files are the same either way)."""
    out = Path(out_dir) / config.world
    out.mkdir(parents=True, exist_ok=True)
    shards = math.ceil(config.episodes / config.shard_episodes)
    todo = [k for k in range(shards) if not (out / f"shard_{k:04d}.npz").exists()]
    if not todo:
        return out
    bar = tqdm(total=config.episodes, initial=(shards - len(todo)) * config.shard_episodes,
               desc=f"demos {config.world}", unit="episode")
    try:
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
                futures = {pool.submit(_record_shard, config, out, k): k for k in todo}
                for fut in as_completed(futures):
                    fut.result()
                    k = futures[fut]
                    bar.update(min(config.shard_episodes, config.episodes - k * config.shard_episodes))
        else:
            env = make_world_for(config)
            try:
                expert = make_world_expert(env)
                for k in todo:
                    _record_shard(config, out, k, env, expert, bar)
            finally:
                env.close()
    finally:
        bar.close()
    from embodied_stack.models.files import atomic_write_json

    atomic_write_json(out / "config.json", asdict(config))
    return out


def load(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """Concatenate a world's shards (allow_pickle stays off: plain arrays only)."""
    paths = sorted(Path(directory).glob("shard_*.npz"))
    if not paths:
        raise FileNotFoundError(f"no demonstration shards in {directory}")
    parts = [dict(np.load(p, allow_pickle=False)) for p in paths]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def dataset_world(path: str | os.PathLike) -> str:
    """The world a LeRobotDataset v3 was recorded in: its robot_type
    ``embodied_stack/<world>`` (``embodied-stack record`` writes it). Any other robot_type is
    an error: training acts in a world of this stack, whose embodiment must take the actions."""
    from embodied_stack.models.files import read_json

    info = read_json(Path(path) / "meta" / "info.json", "a LeRobotDataset info.json")
    robot = str(info.get("robot_type") or "")
    world = robot.split("/", 1)[1] if robot.startswith("embodied_stack/") else ""
    from embodied_stack.sim.worlds.registry import registered_worlds

    if world not in registered_worlds():
        raise ValueError(f"{path}: robot_type {robot!r}; training from a dataset needs one "
                         f"recorded in a registered world (robot_type embodied_stack/<world>, "
                         f"world in {registered_worlds()})")
    return world


def dataset_action_range(path: str | os.PathLike) -> list[list[float]]:
    """[low, high] of a dataset's actions, from its meta/stats.json min and max (a dim that
    never moved gets +-1e-3 around its value, so the range spans every dim)."""
    from embodied_stack.models.files import read_json

    stats = read_json(Path(path) / "meta" / "stats.json", "a LeRobotDataset stats.json")
    action = stats.get("action") if isinstance(stats, dict) else None
    if not isinstance(action, dict) or "min" not in action or "max" not in action:
        raise ValueError(f"{Path(path) / 'meta' / 'stats.json'}: no action min/max")
    low = np.asarray(action["min"], np.float64).reshape(-1)
    high = np.asarray(action["max"], np.float64).reshape(-1)
    still = high - low < 1e-6
    low[still] -= 1e-3
    high[still] += 1e-3
    return [low.tolist(), high.tolist()]


def action_chunks(actions: np.ndarray, episode: np.ndarray, chunk_length: int):
    """Chunk labels from recorded actions: state t is labelled with the actions its episode
    took at t, t+1, ..., t+T-1, masked past the episode's end. Returns (n, T, A), (n, T)."""
    n = len(actions)
    idx = np.arange(n)[:, None] + np.arange(chunk_length)[None, :]
    inside = idx < n
    idx = np.minimum(idx, n - 1)
    mask = inside & (episode[idx] == episode[:, None])
    chunks = np.where(mask[:, :, None], actions[idx], 0.0).astype(np.float32)
    return chunks, mask


def load_dataset(path: str | os.PathLike, world: str, chunk_length: int) -> dict[str, np.ndarray]:
    """A LeRobotDataset v3 recorded in `world` as labelled states in the shard layout
    (``load``'s), the labels chunks of the recorded actions (``action_chunks``). The model's
    training-only heads get their targets from ``observation.privileged`` where the dataset has
    it (recorded from the sim graph: the expert's features, sim/experts FEATURE_NAMES), and
    none otherwise (a robot's dataset)."""
    from embodied_stack.sim.datasets.lerobot_v3 import DatasetFormatError, LeRobotDataset
    from embodied_stack.sim.experts import FEATURE_NAMES
    from embodied_stack.sim.worlds import ACTION_NAMES, PROPRIO_NAMES

    ds = LeRobotDataset(path)
    needed = {"observation.images.color": ("video", None),
              "observation.state": (None, PROPRIO_NAMES[world]),
              "action": (None, ACTION_NAMES[world])}
    privileged = "observation.privileged" in ds.features
    if privileged:
        needed["observation.privileged"] = (None, FEATURE_NAMES)
    for key, (dtype, names) in needed.items():
        ft = ds.features.get(key)
        if ft is None or (dtype and ft["dtype"] != dtype):
            raise DatasetFormatError(f"{path}: feature {key!r} ({dtype or 'numeric'}) is needed to "
                                     f"train; the dataset has {sorted(ds.features)}")
        if names and ft.get("names") and list(ft["names"]) != names:
            raise DatasetFormatError(f"{path}: feature {key!r} names {ft['names']}; a {world} "
                                     f"policy reads {names}")
    cols: dict[str, list[Any]] = {n: [] for n in ("rgb", "depth", "proprio", "action", "episode",
                                                  "instruction") + (("aux",) if privileged else ())}
    for ep in tqdm(ds, total=ds.num_episodes, desc=f"dataset {Path(path).name}", unit="episode"):
        n = len(ep)
        cols["rgb"].append(ep.frames["observation.images.color"])
        depth = ep.frames.get("observation.depth")
        h, w = ep.frames["observation.images.color"].shape[1:3]
        cols["depth"].append(np.zeros((n, h, w), np.float16) if depth is None
                             else depth.reshape(n, h, w).astype(np.float16))
        cols["proprio"].append(ep.frames["observation.state"].astype(np.float32))
        cols["action"].append(ep.frames["action"].astype(np.float32))
        if privileged:
            cols["aux"].append(ep.frames["observation.privileged"].astype(np.float32))
        cols["episode"].append(np.full(n, ep.index, np.int32))
        cols["instruction"] += ep.tasks
    arrays = {k: np.concatenate(v) for k, v in cols.items() if k != "instruction"}
    arrays["instruction"] = np.asarray(cols["instruction"], dtype="<U96")
    arrays["chunk"], arrays["chunk_mask"] = action_chunks(arrays.pop("action"), arrays["episode"],
                                                          chunk_length)
    return arrays


def dagger_shard(run_dir: str | os.PathLike, iteration: int, world: str) -> Path:
    """Where a run keeps the expert-labelled states of one DAgger iteration in one world."""
    return Path(run_dir) / "dagger" / f"iter_{iteration:03d}_{world}.npz"


def dagger_shards(run_dir: str | os.PathLike) -> list[Path]:
    """A run's DAgger shards, <run>/dagger/iter_NNN_<world>.npz, in order."""
    return sorted((Path(run_dir) / "dagger").glob("iter_*_*.npz"))


def episodes_to_arrays(episodes) -> dict[str, np.ndarray]:
    """DAgger episodes (sim/train/rollouts.Episode, ``label=True``) -> the shard layout, one
    row per labelled state."""
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
