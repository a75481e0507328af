"""Batched rollouts of an ElasticVLA in the worlds: the data source of DAgger, group RL and
evaluation (no rclpy).

One process holds a pool of worlds (in-process: on 2 cores a Gymnasium vector env's pipes cost
more than they save, see bench/sim_throughput.py) and steps them in lockstep. Every slot that
needs a new chunk at a tick is answered by ONE batched forward pass of the model, and the
chunk is executed as the policy node executes it (``ExecutionMode``: ``steps_per_inference``
actions, then re-plan on the newest frame), so what is trained is what runs in the ROS graph.

Modes (``run_episodes`` arguments):
- ``sample=False``: greedy (argmax) chunks, as deployed; ``sample=True``: each action token
  drawn from the policy's distribution, its log-probability kept for the RL ratio.
- ``label=True`` (DAgger): every visited state is stored with the expert's chunk from that
  state (``sim.experts.expert_chunk``); with ``beta`` > 0 a chunk is, with probability beta,
  executed from the expert instead of the learner (the DAgger mixture).
- Otherwise only decision states are rendered (frames inside a chunk are never looked at),
  which makes RL rollouts about 2x cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from embodied_stack.models.policy.interface import ExecutionMode, Observation
from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD


@dataclass
class Episode:
    """One rollout. Decision-level arrays have one row per chunk the learner chose; state-level
    arrays (DAgger) one row per visited state."""

    world: str
    seed: int
    instruction: str = ""
    task: str = ""  #: task template (task_template): touch, push_ambiguous, stop, ...
    success: bool = False
    outcome: str = "none"
    ret: float = 0.0
    steps: int = 0
    #: (rgb, depth float16, proprio) of the first frame: the reference frame of the episode
    reference: tuple | None = None
    # decisions (policy queries)
    obs: list = field(default_factory=list)  #: (rgb, depth float16, proprio) per decision
    tokens: list = field(default_factory=list)  #: (T*A,) int64 chosen action tokens
    logp: list = field(default_factory=list)  #: (T*A,) float32 log pi_old(token)
    executed: list = field(default_factory=list)  #: actions of the chunk actually executed
    from_expert: list = field(default_factory=list)  #: chunk executed from the expert (DAgger)
    # visited states with expert labels (label=True)
    frames: list = field(default_factory=list)  #: (rgb, depth float16, proprio) per state
    labels: list = field(default_factory=list)  #: (T, a) expert chunk per state
    aux: list = field(default_factory=list)  #: expert.features() per state (auxiliary targets)
    label_masks: list = field(default_factory=list)  #: (T,) bool per state


class WorldPool:
    """`size` instances of one world (64x64 RGB-D, no segmentation) with their experts."""

    def __init__(self, world: str, size: int, width: int = 64, height: int = 64):
        import gymnasium as gym

        import embodied_stack.sim  # noqa: F401  (registers the worlds)
        from embodied_stack.sim import WORLD_IDS
        from embodied_stack.sim.experts import make_expert

        if world not in EMBODIMENT_OF_WORLD:
            raise ValueError(f"world {world!r} not in {sorted(EMBODIMENT_OF_WORLD)}")
        self.world, self.embodiment = world, EMBODIMENT_OF_WORLD[world]
        self.envs = [gym.make(WORLD_IDS[world], width=width, height=height,
                              with_segmentation=False) for _ in range(size)]
        self.experts = [make_expert(env) for env in self.envs]

    def __len__(self):
        return len(self.envs)

    def close(self):
        for env in self.envs:
            env.close()


def task_template(info: dict) -> str:
    """The task family of an episode, from its reset info: the driving task, or the tabletop
    task with "_ambiguous" when several objects fit the instruction."""
    task = str(info.get("task", ""))
    if len(info.get("target_ids", ())) > 1:
        task += "_ambiguous"
    return task


@torch.no_grad()
def choose_chunks(model, observations: list[Observation], uniforms: np.ndarray | None = None):
    """One batched forward pass: (tokens (B, T*A) int64, logp (B, T*A) float32, actions
    (B, T, A) float32). Greedy (argmax per token) when `uniforms` is None; otherwise each
    token is drawn from the policy by inverse CDF with the given uniforms (B, T*A), so a
    rollout's draws depend on its own random stream only, not on what else is in the batch
    (the local and the Ray path then give the same rollouts)."""
    batch = model.obs_to_batch(observations, device=next(model.parameters()).device)
    logits = model.batch_logits(batch).float()
    logp_all = torch.log_softmax(logits, dim=-1).cpu()
    if uniforms is None:
        tokens = logp_all.argmax(-1)
    else:
        cdf = logp_all.double().exp().cumsum(-1)
        u = torch.from_numpy(uniforms).unsqueeze(-1) * cdf[..., -1:]
        tokens = (cdf < u).sum(-1).clamp_max(logits.shape[-1] - 1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    actions = model.tokens_to_actions(tokens, model.config.max_action_dim)
    return tokens.numpy(), logp.numpy().astype(np.float32), actions.cpu().numpy()


def _frame(obs: dict):
    return (obs["rgb"], obs["depth"].astype(np.float16), obs["proprio"].copy())


def run_episodes(model, pool: WorldPool, seeds, mode: ExecutionMode, *, sample: bool = False,
                 stream_seed: int = 0, keys=None, label: bool = False, beta: float = 0.0,
                 keep_decisions: bool = False, progress=None) -> list[Episode]:
    """Run one episode per seed (in order of `seeds`, several at once on the pool's worlds).

    Returns the episodes in the order of `seeds`. `sample`: draw actions from the policy (RL)
    instead of argmax. Every random choice of the episode with key k (action draws, DAgger's
    expert-or-learner coin) comes from its own stream ``default_rng([stream_seed, k])``, so
    an episode does not depend on which others share its batch or worker (keys default to
    positions in `seeds`; the Ray path passes the global ones).
    `keep_decisions` stores each decision's observation, tokens and log-probabilities (RL);
    `label` stores every visited state with the expert's chunk (DAgger). `progress`: a
    callable taking the number of finished episodes (e.g. a tqdm bar's update).
    """
    from embodied_stack.sim.experts import LookaheadWorld, expert_chunk

    if beta > 0 and not label:
        raise ValueError("beta > 0 (expert-executed chunks) needs label=True")
    k = mode.steps_per_inference
    T = model.config.chunk_length
    dims = model.config.embodiments[pool.embodiment]
    world = pool.world
    seeds = list(seeds)
    keys = list(range(len(seeds))) if keys is None else list(keys)
    queue = list(enumerate(seeds))
    results: list[Episode | None] = [None] * len(queue)
    # per slot: [episode index, Episode, obs, info, chunk (k, dims) or None, position in chunk,
    #            sampling stream, (while a chunk runs) whether the expert executes it]
    # (None: the slot is idle). Any: a slot is a heterogeneous record, and which slots are
    # set is known by index (``need``), which the type checker cannot follow.
    slots: list[Any] = [None] * len(pool)

    def start(i: int) -> None:
        if not queue:
            slots[i] = None
            return
        index, seed = queue.pop(0)
        env, expert = pool.envs[i], pool.experts[i]
        obs, info = env.reset(seed=int(seed))
        expert.reset()
        ep = Episode(world=world, seed=int(seed), instruction=str(obs["instruction"]),
                     task=task_template(info), reference=_frame(obs))
        stream = np.random.default_rng([stream_seed, keys[index]])
        slots[i] = [index, ep, obs, info, None, 0, stream]

    for i in range(len(pool)):
        start(i)
    while any(s is not None for s in slots):
        need = [i for i, s in enumerate(slots) if s is not None and s[4] is None]
        if need:
            observations = [Observation(rgb=slots[i][2]["rgb"], instruction=slots[i][1].instruction,
                                        proprio=slots[i][2]["proprio"], embodiment=pool.embodiment,
                                        depth=slots[i][2]["depth"],
                                        reference_rgb=slots[i][1].reference[0],
                                        reference_depth=slots[i][1].reference[1]) for i in need]
            uniforms = None
            if sample:
                uniforms = np.stack([slots[i][6].random(model.config.num_action_tokens)
                                     for i in need])
            tokens, logp, actions = choose_chunks(model, observations, uniforms)
            for j, i in enumerate(need):
                s = slots[i]
                s[4], s[5] = actions[j, :k, :dims].copy(), 0
                from_expert = bool(beta > 0 and s[6].random() < beta)
                s.append(from_expert)
                if keep_decisions:
                    ep = s[1]
                    ep.obs.append(_frame(s[2]))
                    ep.tokens.append(tokens[j])
                    ep.logp.append(logp[j])
                    ep.executed.append(0)
                    ep.from_expert.append(from_expert)
        for i, s in enumerate(slots):
            if s is None:
                continue
            index, ep, obs, info, chunk, pos = s[:6]
            from_expert = s[7]
            env, expert = pool.envs[i], pool.experts[i]
            action = chunk[pos]
            if label:
                first = np.asarray(expert(obs, info), np.float32)
                ep.aux.append(expert.features())
                labels, mask = expert_chunk(env, expert, T, first_action=first)
                ep.frames.append(_frame(obs))
                ep.labels.append(labels)
                ep.label_masks.append(mask)
                if from_expert:
                    action = first
            last_of_chunk = pos + 1 >= len(chunk)
            world_env = cast(LookaheadWorld, env.unwrapped)
            # Frames inside a chunk are never looked at unless every state is labelled.
            skip_render = not label and not last_of_chunk
            world_env._lookahead = skip_render
            try:  # (unwrapped while not rendering: the env checker would flag the empty obs)
                obs, reward, terminated, truncated, info = (world_env if skip_render else env).step(
                    np.asarray(action, np.float32))
            finally:
                world_env._lookahead = False
            ep.ret += float(reward)
            ep.steps += 1
            if keep_decisions:
                ep.executed[-1] += 1
            s[2], s[3], s[5] = obs, info, pos + 1
            if last_of_chunk:
                s[4] = None
                del s[7]
            if terminated or truncated:
                ep.success = bool(info["is_success"])
                ep.outcome = str(info["outcome"])
                results[index] = ep
                if progress is not None:
                    progress(1)
                start(i)
    return cast("list[Episode]", results)  # every episode has finished: no None left


def success_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a success rate (honest at 0% and 100%, unlike +-2 sigma)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


class LocalRollouts:
    """Rollouts in this process, on one WorldPool per world (the default backend)."""

    def __init__(self, worlds, pool_size: int):
        self.pools = {w: WorldPool(w, pool_size) for w in worlds}

    def __call__(self, model, world: str, seeds, mode: ExecutionMode, **kwargs) -> list[Episode]:
        return run_episodes(model, self.pools[world], seeds, mode, **kwargs)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
