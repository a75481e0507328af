"""The group-RL stage: GRPO / ADPO (Agent0) / EntroPIC (Tencent) on the policy's action tokens.

One iteration, read top to bottom:
1. seeds: this iteration's block (sim/train/config.py), optionally screened with the greedy
   policy so the groups go to the seeds it fails (``rl_screen``);
2. groups: G rollouts per seed (the same initial state), each action token sampled from the
   policy, executed as the policy node executes chunks;
3. rewards and advantages: one reward per rollout (``reward``, or ADPO's majority-vote
   pseudo-reward) and the group-relative advantage
   A_i = (r_i - mean_g) / (std_g + 1e-6) on every executed action token of rollout i;
4. the update (``rl_epochs`` passes over minibatches of decisions):
   L = L_policy + kd_weight * KL(pi_full || pi_sub) + bc_anchor * CE(pi_full, a*),
   L_policy the chosen loss of sim/train/losses.py (equations there), the second term keeping
   a sampled nested submodel on the full model, the third a cross-entropy anchor on the
   labelled states of the supervised stages. EntroPIC's controller holds the token entropy,
   measured on a fixed probe of states (``entropy_measure``), near its target.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from embodied_stack.models.elastic.submodels import elastic_distillation_loss
from embodied_stack.models.policy.elastic_vla import ElasticVLA
from embodied_stack.models.policy.interface import Observation
from embodied_stack.sim.train import losses
from embodied_stack.sim.train.config import TrainConfig, iteration_seeds, probe_seeds
from embodied_stack.sim.worlds import EMBODIMENT_OF_WORLD

if TYPE_CHECKING:
    from embodied_stack.sim.train.run import Run

#: The observation tensors of a decision (ElasticVLA.obs_to_batch's keys).
#: The batch keys the network reads (instruction_embedding: only a model that reads one has it).
OBSERVATION_KEYS = ("pixels", "tokens", "proprio", "embodiment", "action_mask", "instruction_embedding")


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


# ------------------------------------------------------------------------------------------
# 1. Seeds
# ------------------------------------------------------------------------------------------


def rl_seeds(cfg: TrainConfig, it: int, w: int) -> list[int]:
    """This iteration's candidate seeds of world w (rl_screen per group)."""
    return iteration_seeds("rl", it, w, cfg.rl_groups[cfg.worlds[w]] * cfg.rl_screen, len(cfg.worlds))


def screen_seeds(run: Run, world: str, candidates: list[int], n: int) -> tuple[list[int], dict]:
    """The n seeds to roll groups out on: those the greedy policy fails first, then the rest in
    seed order. Groups on seeds the policy always solves have zero variance (no signal)."""
    if len(candidates) == n:
        return candidates, {}
    bar = tqdm(total=len(candidates), desc=f"rl {world} screening", unit="episode")
    greedy = run.rollouts(run.model, world, candidates, run.mode, rewrite=run.paraphraser(world),
                          progress=bar.update)
    bar.close()
    failed = [s for s, ep in zip(candidates, greedy) if not ep.success]
    solved = [s for s, ep in zip(candidates, greedy) if ep.success]
    chosen = (failed + solved)[:n]
    return sorted(chosen), {f"screen_failed_{world}": len(failed) / len(candidates),
                            f"screen_env_steps_{world}": sum(ep.steps for ep in greedy)}


# ------------------------------------------------------------------------------------------
# 2. Groups
# ------------------------------------------------------------------------------------------


def collect_groups(run: Run) -> tuple[list, dict]:
    """G sampled rollouts per seed, per world: episodes grouped by (world, seed); and the
    screening's figures (rl_screen > 1)."""
    cfg, model = run.cfg, run.model
    it = run.progress["iteration"]
    model.set_submodel("full")
    groups, screen = [], {}
    for w, world in enumerate(cfg.worlds):
        seeds, st = screen_seeds(run, world, rl_seeds(cfg, it, w), cfg.rl_groups[world])
        screen.update(st)
        plan = [s for s in seeds for _ in range(cfg.group_size)]
        bar = tqdm(total=len(plan), desc=f"rl {it} {world} rollouts", unit="episode")
        eps = run.rollouts(model, world, plan, run.mode, sample=True,
                           stream_seed=cfg.seed * 7919 + 100_000 + it, keep_decisions=True,
                           rewrite=run.paraphraser(world), progress=bar.update)
        bar.close()
        for g in range(len(seeds)):
            groups.append(eps[g * cfg.group_size:(g + 1) * cfg.group_size])
    return groups, screen


# ------------------------------------------------------------------------------------------
# 3. Rewards and advantages
# ------------------------------------------------------------------------------------------


def rollout_reward(ep, kind: str) -> float:
    """One rollout's reward: success (1/0), the world's shaped return, or success + 0.1 x
    return (dense, success-led: rollouts of a group that all succeed or all fail still rank)."""
    return {"success": float(ep.success), "return": ep.ret,
            "success+return": float(ep.success) + 0.1 * ep.ret}[kind]


def rl_batch(run: Run, groups) -> dict:
    """Decisions of every rollout with their advantages, p-hat, masks, tensors."""
    cfg, model = run.cfg, run.model
    k = run.mode.steps_per_inference
    A = model.config.max_action_dim
    rollouts = [ep for g in groups for ep in g]
    outcomes = [ep.outcome for ep in rollouts]
    group_index = [gi for gi, g in enumerate(groups) for _ in g]
    p_hat, _ = losses.group_majority(outcomes, group_index)
    if cfg.pseudo_reward:  # ADPO without ground truth: agreeing with the group's majority
        rewards = losses.pseudo_rewards(outcomes, group_index)
    else:
        rewards = torch.tensor([rollout_reward(ep, cfg.reward) for ep in rollouts])
    # A_i = (r_i - mean_g) / (std_g + 1e-6), on every executed token of rollout i
    adv, zero_var, n_groups = losses.group_advantages(rewards, torch.tensor(group_index))
    keep = np.ones(len(outcomes), bool)
    if cfg.loss.startswith("adpo") and cfg.frontier:
        keep = np.asarray(losses.adpo_frontier(p_hat), bool)
    observations, tokens, logp, step_mask, row_adv, row_p, row_rollout = [], [], [], [], [], [], []
    for r, ep in enumerate(rollouts):
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
        "success": float(np.mean([ep.success for ep in rollouts])),
        "return": float(np.mean([ep.ret for ep in rollouts])),
        "zero_variance_groups": zero_var / max(1, n_groups),
        "frontier_kept": float(np.mean(keep)),
        "p_hat_mean": float(np.mean(p_hat)),
        "decisions": len(observations),
    }
    for w in cfg.worlds:
        stats[f"success_{w}"] = float(np.mean([ep.success for ep in rollouts if ep.world == w]))
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


# ------------------------------------------------------------------------------------------
# 4. The update
# ------------------------------------------------------------------------------------------


def rl_update(run: Run, data: dict, probe: dict | None = None) -> dict:
    """``rl_epochs`` passes of minibatch steps over the iteration's decisions; the mean of each
    logged figure."""
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
            obs_batch = {k: mb[k] for k in OBSERVATION_KEYS if k in mb}
            obs_batch["pixels"] = obs_batch["pixels"].float()
            model.train()
            model.set_submodel("full")
            logits = model.batch_logits(obs_batch).float()
            logp_all = torch.log_softmax(logits, -1)
            logp_new = logp_all.gather(-1, mb["action_tokens"].unsqueeze(-1)).squeeze(-1)
            mask = mb["token_mask"].float()
            entropy = -(logp_all.exp() * logp_all).sum(-1)
            # H, the entropy EntroPIC's controller holds: on the probe (fixed states) or this batch
            h_batch = float(losses.token_entropy_mean(entropy.detach(), mask))
            if probe is None:
                h = h_batch
            else:
                with torch.no_grad():
                    h = float(losses.token_entropy_mean(model.entropy(probe["batch"]), probe["mask"]))
            if cfg.entropy_target == 0 and "entropy_target" not in run.progress:
                # Hold the entropy the RL stage starts from (EntroPIC's usual choice), measured
                # as the controller measures it (the probe, or this update's tokens).
                run.progress["entropy_target"] = run.controller.target = h
                print(f"[rl] EntroPIC target: {h:.3f} nats (the starting policy's entropy, "
                      f"measured on the {cfg.entropy_measure})")
            # L = L_policy                                  (losses.policy_loss: GRPO / ADPO / EntroPIC)
            loss, st = losses.policy_loss(
                cfg.loss, logp_new, mb["logp_old"], mb["adv"], mask, mb["rollout"],
                p_hat_row=mb["p_hat"],
                controller=run.controller, entropy_mean=h, batch_fraction=1.0,
                high_prob=cfg.entropy_high_prob)
            st["entropy"], st["entropy_batch"] = h, h_batch
            st["entropy_target"] = run.controller.target
            # KL(pi_old || pi_new) on the taken tokens, k3 estimator (Schulman): logged only.
            log_r = (logp_new - mb["logp_old"]).detach()
            st["kl_old"] = float((((log_r.exp() - 1) - log_r) * mask).sum() / mask.sum().clamp_min(1))
            name = run.sample_submodel()
            if name is not None:
                #   + kd_weight * KL(pi_full || pi_sub)      the sampled submodel follows the full model
                model.set_submodel(name)
                student = model.batch_logits(obs_batch)
                kd = elastic_distillation_loss(student, logits.detach(), obs_batch["action_mask"])
                loss = loss + cfg.kd_weight * kd
                model.set_submodel("full")
                st["kd"] = float(kd.detach())
            if cfg.bc_anchor > 0 and len(run.buffer):
                #   + bc_anchor * CE(pi_full, a*)            on the supervised stages' labelled states
                anchor = run.buffer.sample(cfg.batch_size, run.generator, cfg.device, cfg.world_weights)
                ce = model.action_cross_entropy(model.batch_logits(anchor), anchor)
                loss = loss + cfg.bc_anchor * ce
                st["anchor_ce"] = float(ce.detach())
            run.apply_gradients(loss)
            run.progress["global_step"] += 1
            for k, v in st.items():
                if isinstance(v, (int, float)):
                    stats_sum.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in stats_sum.items()}


# ------------------------------------------------------------------------------------------
# Measurements: token statistics, the entropy probe, the reference policy
# ------------------------------------------------------------------------------------------


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
        seeds = probe_seeds(w, cfg.entropy_probe_episodes.get(world, 0))
        for ep in run.rollouts(reference, world, seeds, run.mode, keep_decisions=True,
                               rewrite=run.paraphraser(world)):
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


# ------------------------------------------------------------------------------------------
# The stage
# ------------------------------------------------------------------------------------------


def stage_rl(run: Run) -> None:
    """``rl_iterations`` iterations of seeds -> groups -> advantages -> update (module docstring)."""
    cfg = run.cfg
    reference = rl_reference(run)
    probe = entropy_probe(run, reference) if run.progress["iteration"] < cfg.rl_iterations else None
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
        run.record(run.validate(f"rl {it}"))
        run.progress.update(iteration=it + 1, step=0)
        run.save()
