"""Batched rollouts of an ElasticVLA in the worlds: the data source of DAgger, group RL and
evaluation (no rclpy).

One process holds a pool of worlds (in-process: on 2 cores a Gymnasium vector env's pipes cost
more than they save, see bench/sim_throughput.py) and steps them in lockstep. Every slot that
needs a new chunk at a tick is answered by ONE batched forward pass of the model, and the
chunk is executed by the policy node's own ChunkScheduler (control/chunk_scheduler.py) on
simulated time, so what is trained and evaluated is what runs in the ROS graph. By default
that is the node's ``replace`` rule (``ExecutionMode``: ``steps_per_inference`` actions, then
re-plan on the newest frame); an ``Execution`` gives another strategy, the output limiter,
and latency in the loop (bench/execution.py, ``embodied-stack eval --latency``).

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

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from embodied_stack.control.chunk_scheduler import STEP_EPS, ChunkScheduler
from embodied_stack.control.commands import ArmScale, JointScale, VehicleScale
from embodied_stack.control.latency import AddedLatency
from embodied_stack.control.policy_loop import Controllers, PolicyLoopConfig
from embodied_stack.control.smoothing import CommandLimiter
from embodied_stack.models.policy.interface import ExecutionMode, Observation
from embodied_stack.sim.worlds.registry import make_world, world_spec


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
    # every step's command as the robot executed it (Execution.record)
    commands: list = field(default_factory=list)  #: the command (m/s, or [v, omega])
    chunk_serials: list = field(default_factory=list)  #: the chunk it came from (-1: held / stop)
    command_ages: list = field(default_factory=list)  #: its observation's age (s; NaN: held)
    motion: list = field(default_factory=list)  #: measured motion before each step, and at the end


class WorldPool:
    """`size` instances of one registered world (64x64, no segmentation; sim/worlds/registry.py)
    with their experts (None for a world without one); `shift`: the worlds' randomisation
    (sim/worlds/shift.py; None: none)."""

    def __init__(self, world: str, size: int, width: int = 64, height: int = 64, shift=None):
        from embodied_stack.sim.worlds.registry import make_world_expert

        self.spec = world_spec(world)
        self.world, self.embodiment = world, self.spec.embodiment.name
        self.kind = self.spec.embodiment.command_kind
        self.envs = [make_world(world, width, height, shift=shift) for _ in range(size)]
        self.experts = [make_world_expert(env) if self.spec.has_expert else None
                        for env in self.envs]

    def __len__(self):
        return len(self.envs)

    def close(self):
        for env in self.envs:
            env.close()


def task_template(info: dict, world: str | None = None) -> str:
    """The task family of an episode, from its reset info: the world spec's ``task_of`` (the
    driving task, or the tabletop task with "_ambiguous" when several objects fit the
    instruction), else info["task"]."""
    if world is not None:
        spec = world_spec(world)
        if spec.task_of is not None:
            return spec.task_of(info)
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
    actions = model.tokens_to_actions(tokens, model.config.max_action_dim,
                                      [o.embodiment for o in observations])
    return tokens.numpy(), logp.numpy().astype(np.float32), actions.cpu().numpy()


def _frame(obs: dict):
    return (obs["rgb"], obs["depth"].astype(np.float16), obs["proprio"].copy())


#: How long the robot keeps executing the last command when no new one comes, before a zero
#: command (the arm holds, the car brakes): the sim bridge's ``command_timeout_s`` default.
COMMAND_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Execution:
    """How chunks are executed beyond ``ExecutionMode``: the policy node's settings (`settings`:
    fields of control.policy_loop.PolicyLoopConfig such as ``execution``, ``deadline_s`` and the
    limiter's; the world sets the embodiment and the control rate, `mode` refill_at and
    execute_steps unless given) and latency in the loop. The default (`settings` None) is the
    node's ``replace`` rule with no latency, which is what training rolls out.

    With `latency`, the answer to the observation at step t is first executed at step
    t + floor(latency / period) of simulated time (the policy node executes an answer that
    lands within a period at the robot's next step), while the world keeps stepping with what
    the strategy commands; each draw comes from the episode's own stream, seeded by
    `latency_seed` and the episode's seed. With no action due the robot holds the last command
    (a car its velocity setpoint) for COMMAND_TIMEOUT_S, then a zero command, as the sim
    bridge does; a result dropped as
    late stops the robot until the next chunk (the node's safety stop; an arm's stop and a
    car's full brake here). `record` keeps every step's command, its chunk, its age and the
    measured motion in the Episode (bench/execution.py)."""

    settings: dict | None = None
    latency: AddedLatency = AddedLatency()
    latency_seed: int = 0
    record: bool = False


def loop_config(mode: ExecutionMode, embodiment: str, rate_hz: float,
                execution: Execution, world: str | None = None) -> PolicyLoopConfig:
    """The node settings the rollouts execute with: `execution.settings` on the world's
    embodiment and rate, or the ``replace`` rule of `mode` (its deadline long enough for the
    whole chunk: training cuts chunks by refill_at and execute_steps only). A `world` whose
    embodiment publishes joint commands sets ``command="joints"`` and its bounds."""
    base: dict[str, Any] = dict(embodiment=embodiment, control_rate_hz=rate_hz,
                                refill_at=mode.refill_at, execute_steps=mode.execute_steps)
    if world is not None and world_spec(world).embodiment.command_kind == "joints":
        body = world_spec(world).embodiment
        base.update(command="joints", joint_low=body.low, joint_high=body.high)
    if execution.settings is not None:
        return PolicyLoopConfig(**{**base, **execution.settings})
    return PolicyLoopConfig(**base, execution="replace",
                            deadline_s=max(PolicyLoopConfig.deadline_s, mode.chunk_length / rate_hz))


@dataclass
class _Slot:
    """One world of the pool while it runs an episode."""

    index: int  #: the episode's position in `seeds`
    ep: Episode
    obs: dict
    info: dict
    stream: np.random.Generator  #: the episode's sampling stream
    latency_stream: np.random.Generator
    scheduler: ChunkScheduler
    limiter: CommandLimiter
    step: int = 0
    #: requests in flight: (first step it can run at, observation stamp, epoch, origin, actions,
    #: from_expert)
    pending: list = field(default_factory=list)
    from_expert: dict = field(default_factory=dict)  #: chunk serial -> executed by the expert
    serial: int = 0  #: the chunk the last action came from (0: none)
    last_command: np.ndarray | None = None  #: what went out last (command units)
    held: int = 0  #: steps the last action has been repeated for want of a new one
    stopped: bool = False  #: a result came late: stop until the next chunk


def run_episodes(model, pool: WorldPool, seeds, mode: ExecutionMode, *, sample: bool = False,
                 stream_seed: int = 0, keys=None, label: bool = False, beta: float = 0.0,
                 keep_decisions: bool = False, progress=None,
                 execution: Execution | None = None,
                 rewrite: Callable[[int, str], str] | None = None) -> list[Episode]:
    """Run one episode per seed (in order of `seeds`, several at once on the pool's worlds).

    Returns the episodes in the order of `seeds`. `sample`: draw actions from the policy (RL)
    instead of argmax. Every random choice of the episode with key k (action draws, DAgger's
    expert-or-learner coin) comes from its own stream ``default_rng([stream_seed, k])``, so
    an episode does not depend on which others share its batch or worker (keys default to
    positions in `seeds`; the Ray path passes the global ones).
    `keep_decisions` stores each decision's observation, tokens and log-probabilities (RL),
    and how many steps ran after it; `label` stores every visited state with the expert's
    chunk (DAgger). `progress`: a callable taking the number of finished episodes (e.g. a
    tqdm bar's update). `execution`: the node's strategy, latency and recording (default: the
    node's replace rule of `mode`, no latency). Chunks are executed by the policy node's
    ChunkScheduler (control/chunk_scheduler.py) on simulated time, and commands pass its
    output limiter (control/smoothing.py) when that has limits. `rewrite(seed, instruction)`:
    the instruction the policy is given instead of the world's (a paraphrase, sim/eval.py).
    """
    from embodied_stack.sim.experts import expert_chunk, expert_features

    if beta > 0 and not label:
        raise ValueError("beta > 0 (expert-executed chunks) needs label=True")
    execution = execution or Execution()
    T = model.config.chunk_length
    if pool.embodiment not in model.config.embodiments:
        raise ValueError(f"the model acts for embodiments {sorted(model.config.embodiments)}, not "
                         f"{pool.embodiment!r} of world {pool.world!r}: train one for it "
                         f"(embodied-stack train --worlds {pool.world} --init-from '')")
    dims = model.config.embodiments[pool.embodiment]
    world, embodiment = pool.world, pool.embodiment
    kind = pool.kind  # the command layout: arm, vehicle or joints
    rate = float(pool.spec.control_rate_hz)
    period = 1.0 / rate
    config = loop_config(mode, embodiment, rate, execution, world)
    controllers = Controllers.of(config)
    scale: ArmScale | VehicleScale | JointScale = controllers.scale(kind)
    hold_steps = int(round(COMMAND_TIMEOUT_S * rate))
    limited = config.limiter_config().active
    seeds = list(seeds)
    keys = list(range(len(seeds))) if keys is None else list(keys)
    queue = list(enumerate(seeds))
    results: list[Episode | None] = [None] * len(queue)
    slots: list[_Slot | None] = [None] * len(pool)

    def start(i: int) -> None:
        if not queue:
            slots[i] = None
            return
        index, seed = queue.pop(0)
        env, expert = pool.envs[i], pool.experts[i]
        obs, info = env.reset(seed=int(seed))
        if expert is not None:
            expert.reset()
        instruction = str(obs["instruction"])
        if rewrite is not None:
            instruction = rewrite(int(seed), instruction)
        ep = Episode(world=world, seed=int(seed), instruction=instruction,
                     task=task_template(info, world), reference=_frame(obs))
        slots[i] = _Slot(index, ep, obs, info, np.random.default_rng([stream_seed, keys[index]]),
                         np.random.default_rng([execution.latency_seed, int(seed)]),
                         ChunkScheduler(config.scheduler_config()),
                         CommandLimiter(config.limiter_config()))

    def deliver(slot: _Slot, answer: tuple) -> None:
        _, stamp, epoch, origin, actions, from_expert = answer
        now = slot.step * period
        outcome, _ = slot.scheduler.finish(actions, stamp, epoch, now, origin)
        if outcome == "queued":
            slot.stopped = False
            slot.from_expert[slot.scheduler.chunks[-1].serial] = from_expert
        elif outcome == "late":
            slot.stopped = True

    def speed(slot: _Slot) -> float:
        return float(slot.obs["proprio"][0])  # (the driving world's proprio starts with it)

    def command_of(slot: _Slot, action: np.ndarray) -> np.ndarray:
        if kind == "vehicle":
            return cast(VehicleScale, scale).to_command(action, speed(slot))
        return cast("ArmScale | JointScale", scale).to_command(action)

    def action_of(slot: _Slot, command: np.ndarray) -> np.ndarray:
        if kind == "vehicle":
            return cast(VehicleScale, scale).to_action(command, speed(slot)).astype(np.float32)
        return cast("ArmScale | JointScale", scale).to_action(command).astype(np.float32)

    def choose(slot: _Slot) -> np.ndarray:
        """This step's action: the strategy's, or the last one held, or a stop."""
        now = slot.step * period
        due = None if slot.stopped else slot.scheduler.next_action(now, from_result=False)
        if due is not None:
            action, slot.serial, slot.held = np.asarray(due.action, np.float32), due.serial, 0
            if limited:  # (in command units, as the node limits them; from the measured motion
                # before anything went out, as the node's odometry / joint state give it)
                command = slot.limiter.limit(command_of(slot, action), now, _motion(kind, slot.obs["proprio"]))
                slot.limiter.record(command, now)
                action = action_of(slot, command)
        elif slot.last_command is not None and not slot.stopped and slot.held < hold_steps:
            # the robot holds the last command: a car its velocity setpoint (its speed held, as
            # a base's speed controller holds cmd_vel), not the acceleration that reached it
            eased = slot.limiter.coast(now) if limited else None  # (the node's limiter eases it out)
            action = action_of(slot, slot.last_command if eased is None else eased)
            slot.held += 1
            if limited:  # what the robot executes meanwhile
                slot.limiter.record(command_of(slot, action), now)
        else:  # nothing to execute: the arm holds still, the car brakes
            action = action_of(slot, np.zeros(config.action_dims))
            slot.limiter.reset(command_of(slot, action), now, _motion(kind, slot.obs["proprio"]))
        slot.last_command = command_of(slot, action)
        if execution.record:
            ep = slot.ep
            ep.commands.append(slot.last_command)
            ep.chunk_serials.append(slot.serial if due is not None else -1)
            ep.command_ages.append(now - due.stamp if due is not None else float("nan"))
            ep.motion.append(_motion(kind, slot.obs["proprio"]))
        return action

    for i in range(len(pool)):
        start(i)
    while any(s is not None for s in slots):
        active = [s for s in slots if s is not None]
        for slot in active:  # answers whose time has come
            ready = [a for a in slot.pending if a[0] <= slot.step]
            slot.pending = [a for a in slot.pending if a[0] > slot.step]
            for answer in ready:
                deliver(slot, answer)
        need = [i for i, s in enumerate(slots) if s is not None
                and s.scheduler.wants_request(s.step * period, s.step * period)]
        if need:
            observations = []
            for i in need:
                s = cast(_Slot, slots[i])
                proprio, now = s.obs["proprio"], s.step * period
                if s.scheduler.request_origin(now) > now:  # delay_aware: the state it starts from
                    pending = s.scheduler.pending_actions(now, s.scheduler.shift_steps())
                    proprio = scale.roll_forward(proprio, pending, period)
                reference = cast(tuple, s.ep.reference)  # (set at the episode's start)
                observations.append(Observation(
                    rgb=s.obs["rgb"], instruction=s.ep.instruction, proprio=proprio,
                    embodiment=embodiment, depth=s.obs["depth"], reference_rgb=reference[0],
                    reference_depth=reference[1]))
            uniforms = None
            if sample:
                uniforms = np.stack([cast(_Slot, slots[i]).stream.random(model.config.num_action_tokens)
                                     for i in need])
            tokens, logp, actions = choose_chunks(model, observations, uniforms)
            for j, i in enumerate(need):
                s = cast(_Slot, slots[i])
                now = s.step * period
                from_expert = bool(beta > 0 and s.stream.random() < beta)
                if keep_decisions:
                    s.ep.obs.append(_frame(s.obs))
                    s.ep.tokens.append(tokens[j])
                    s.ep.logp.append(logp[j])
                    s.ep.executed.append(0)
                    s.ep.from_expert.append(from_expert)
                latency = execution.latency.sample(s.latency_stream)
                answer = (s.step + math.floor(latency * rate + STEP_EPS), now,
                          s.scheduler.start_request(now), s.scheduler.request_origin(now),
                          actions[j, :T, :dims].copy(), from_expert)
                if answer[0] <= s.step:
                    deliver(s, answer)
                else:
                    s.pending.append(answer)
        for i, maybe in enumerate(slots):
            if maybe is None:
                continue
            s = maybe
            ep, obs, info = s.ep, s.obs, s.info
            env, expert = pool.envs[i], pool.experts[i]
            action = choose(s)
            if label:
                if expert is None:
                    raise ValueError(f"world {world!r} has no scripted expert: no DAgger labels")
                first = np.asarray(expert(obs, info), np.float32)
                ep.aux.append(expert_features(expert))
                labels, mask = expert_chunk(env, expert, T, first_action=first)
                ep.frames.append(_frame(obs))
                ep.labels.append(labels)
                ep.label_masks.append(mask)
                if s.from_expert.get(s.serial, False):
                    action = first
            s.step += 1
            # Frames nobody will look at are not rendered (2x cheaper RL): unless every state is
            # labelled, only a frame the next step will ask about (no answer pending). Every
            # step, rendered or not, goes through the world's wrappers (WorldEnv: time limit,
            # success termination).
            env.skip_render = not label and not s.pending and not s.scheduler.wants_request(
                s.step * period, s.step * period)
            try:
                obs, reward, terminated, truncated, info = env.step(np.asarray(action, np.float32))
            finally:
                env.skip_render = False
            ep.ret += float(reward)
            ep.steps += 1
            if keep_decisions:
                ep.executed[-1] += 1
            s.obs, s.info = obs, info
            if terminated or truncated:
                ep.success = bool(info["is_success"])
                ep.outcome = str(info["outcome"])
                if execution.record:
                    ep.motion.append(_motion(kind, obs["proprio"]))
                results[s.index] = ep
                if progress is not None:
                    progress(1)
                start(i)
    return cast("list[Episode]", results)  # every episode has finished: no None left


def _motion(kind: str, proprio: np.ndarray) -> np.ndarray:
    """What the simulator measured of the robot's motion: the fingertip's velocity (m/s), or
    the car's [speed m/s, yaw rate rad/s]; nothing for a joints embodiment."""
    if kind == "joints":
        return np.zeros(0, np.float64)
    return np.array(proprio[3:6] if kind == "arm" else proprio[[0, 2]], np.float64)


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
    """Rollouts in this process, on one WorldPool per world (the default backend); `shift`:
    the worlds' randomisation, ``key=value,...`` of sim/worlds/shift.Shift ("" = none)."""

    def __init__(self, worlds, pool_size: int, shift: str = ""):
        self.pools = {w: WorldPool(w, pool_size, shift=shift or None) for w in worlds}

    def __call__(self, model, world: str, seeds, mode: ExecutionMode, **kwargs) -> list[Episode]:
        return run_episodes(model, self.pools[world], seeds, mode, **kwargs)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
