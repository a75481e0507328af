"""Group-RL policy losses: GRPO, ADPO (Agent0) and the EntroPIC entropy controller.

Pure torch, no environment code. One "row" is one decision (step) of one rollout; its action
is a sequence of K tokens. Inputs are per token: ``logp_new``/``logp_old`` (N, K) log pi of the
taken tokens under the current / behaviour policy, ``mask`` (N, K) 1 where a token counts,
``advantages`` (N,) per row (broadcast over the row's tokens) and ``rollout_index`` (N,) the
rollout a row belongs to. Every loss is averaged over a rollout's counted tokens first and then
over rollouts, so a long rollout does not outweigh a short one.

    group advantage   A_i = (r_i - mean_g) / (std_g + eps)           (population std)
    ratio             r_t = exp(logp_new_t - logp_old_t)
    GRPO              L = -mean_rollouts mean_tokens min(r A, clip(r, 1-eps, 1+eps) A)
    ADPO              p = majority share of the group (pseudo-label confidence)
                      s(p) = s_min + (1 - s_min) clip((p - 0.3) / 0.5, 0, 1),   A' = s(p) A
                      eps_high(p) = 0.2 + 0.1 clip((0.8 - p) / 0.5, 0, 1),     eps_low = 0.2
                      L = -mean_rollouts mean_tokens min(r A', clip(r, 1-eps_low, 1+eps_high) A')
                      tasks with p outside [0.3, 0.8] are dropped (adpo_frontier)
    EntroPIC          e = H - H_target,  alpha = clip(kp e + ki I, -1, 1),  I += e * batch_fraction
                      L = L_policy + alpha * mean_{pi(token) > 0.95} (-r |A|)

References:
    Agent0: "Agent0: Unleashing Self-Evolving Agents from Zero Data via Tool-Integrated
        Reasoning" (ADPO, ambiguity-dynamic policy optimization), closed form of its code.
    EntroPIC: "Towards stable long-term training of LLMs via entropy stabilization with
        proportional-integral control" (Tencent), in the form of its official code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

LOSS_KINDS = ("grpo", "adpo", "entropic", "adpo+entropic")


# ----------------------------------------------------------------------------------------------
# Group advantages
# ----------------------------------------------------------------------------------------------

def group_advantages(rewards: Tensor, group_index: Tensor, eps: float = 1e-6
                     ) -> tuple[Tensor, int, int]:
    """A = (r - mean_g) / (std_g + eps), std the population std (unbiased=False).

    A group of one uses mean 0, std 1 (so A = r / (1 + eps)): there is nothing to compare it
    with, and its raw reward is the only signal. A group of two or more whose rewards are all
    equal has no signal at all: A = 0 for its members, and it is counted in
    ``zero_variance_groups``. Returns (advantages (R,), zero_variance_groups, groups).
    """
    rewards = torch.as_tensor(rewards)
    if not rewards.is_floating_point():
        rewards = rewards.float()
    group_index = torch.as_tensor(group_index, device=rewards.device).long()
    if rewards.shape != group_index.shape or rewards.dim() != 1:
        raise ValueError(f"rewards {tuple(rewards.shape)} and group_index "
                         f"{tuple(group_index.shape)} must be the same 1-D shape")
    if rewards.numel() == 0:
        return rewards.clone(), 0, 0
    _, inv = torch.unique(group_index, return_inverse=True)
    groups = int(inv.max()) + 1
    r = rewards.double()  # statistics in float64: sums of many rewards stay exact enough
    n = torch.zeros(groups, dtype=r.dtype, device=r.device).index_add(0, inv, torch.ones_like(r))
    mean = torch.zeros_like(n).index_add(0, inv, r) / n
    var = torch.zeros_like(n).index_add(0, inv, (r - mean[inv]) ** 2) / n
    std = var.sqrt()
    # "all rewards equal" by max == min, not std == 0: float noise can leave std at 1e-17.
    rmax = torch.full_like(n, -torch.inf).scatter_reduce(0, inv, r, "amax")
    rmin = torch.full_like(n, torch.inf).scatter_reduce(0, inv, r, "amin")
    single = n == 1
    flat = (rmax == rmin) & ~single
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    adv = (r - mean[inv]) / (std[inv] + eps)
    adv = torch.where(flat[inv], torch.zeros_like(adv), adv)
    return adv.to(rewards.dtype), int(flat.sum()), groups


# ----------------------------------------------------------------------------------------------
# Majority vote (ADPO's pseudo-labels)
# ----------------------------------------------------------------------------------------------

def majority_share(outcomes: Sequence[str]) -> tuple[float, str]:
    """p_hat = share of the group's rollouts that agree with the majority outcome.

    Ties go to the outcome that appears first in the list (deterministic, order = sampling order).
    """
    if len(outcomes) == 0:
        raise ValueError("majority_share needs at least one outcome")
    counts = Counter(outcomes)
    best = max(counts.values())
    majority = next(o for o in outcomes if counts[o] == best)  # first in list among the tied
    return best / len(outcomes), majority


def group_majority(outcomes: Sequence[str], group_index: Sequence[int]
                   ) -> tuple[np.ndarray, list[str]]:
    """majority_share per group, spread back to each rollout: (p_hat (R,), majority per rollout)."""
    group_index = [int(g) for g in np.asarray(group_index).reshape(-1)]
    if len(outcomes) != len(group_index):
        raise ValueError(f"{len(outcomes)} outcomes but {len(group_index)} group indices")
    members: dict[int, list[str]] = {}
    for o, g in zip(outcomes, group_index):
        members.setdefault(g, []).append(o)  # keeps list order, so ties break as above
    per_group = {g: majority_share(os) for g, os in members.items()}
    p_hat = np.array([per_group[g][0] for g in group_index], dtype=np.float64)
    return p_hat, [per_group[g][1] for g in group_index]


def pseudo_rewards(outcomes: Sequence[str], group_index: Sequence[int]) -> Tensor:
    """Reward 1.0 where a rollout's outcome equals its group's majority outcome, else 0.0 (R,)."""
    _, majority = group_majority(outcomes, group_index)
    return torch.tensor([1.0 if o == m else 0.0 for o, m in zip(outcomes, majority)],
                        dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# ADPO schedules (Agent0)
# ----------------------------------------------------------------------------------------------

def _clip01(x):
    if isinstance(x, Tensor):
        return x.clamp(0.0, 1.0)
    if isinstance(x, np.ndarray):
        return np.clip(x, 0.0, 1.0)
    return min(max(float(x), 0.0), 1.0)


def adpo_scale(p_hat, s_min: float = 0.6):
    """s = s_min + (1 - s_min) clip((p_hat - 0.3) / 0.5, 0, 1).

    Why: a pseudo-label agreed on by few rollouts is likely wrong, so its advantage is shrunk.
    Works on floats, numpy arrays and tensors.
    """
    return s_min + (1.0 - s_min) * _clip01((p_hat - 0.3) / 0.5)


def adpo_eps_high(p_hat):
    """eps_high = 0.2 + 0.1 clip((0.8 - p_hat) / 0.5, 0, 1); eps_low stays 0.2.

    Why: on ambiguous tasks, let the policy raise low-probability tokens further (exploration).
    """
    return 0.2 + 0.1 * _clip01((0.8 - p_hat) / 0.5)


def adpo_frontier(p_hat, low: float = 0.3, high: float = 0.8):
    """True where low <= p_hat <= high: tasks outside are dropped from the update.

    Why: below `low` the pseudo-label is noise, above `high` the task is already solved.
    """
    return (p_hat >= low) & (p_hat <= high)


# ----------------------------------------------------------------------------------------------
# Clipped surrogate, shared by GRPO and ADPO
# ----------------------------------------------------------------------------------------------

def _ratio(logp_new: Tensor, logp_old: Tensor, mask: Tensor) -> Tensor:
    """r = exp(logp_new - logp_old), 1 on tokens that do not count.

    Why the where: padded tokens may hold -inf log-probs; exp(-inf - -inf) would be nan and a nan
    poisons the gradient even when multiplied by a zero mask.
    """
    diff = torch.where(mask.bool(), logp_new - logp_old.detach(), torch.zeros_like(logp_new))
    return diff.exp()


def _rollout_mean(values: Tensor, mask: Tensor, rollout_index: Tensor) -> Tensor:
    """Mean over each rollout's counted tokens, then mean over rollouts that have any."""
    m = mask.bool()
    if values.numel() == 0 or not m.any():
        return values.sum() * 0.0  # zero that keeps the graph, so backward() still works
    _, inv = torch.unique(rollout_index.to(values.device), return_inverse=True)
    rollouts = int(inv.max()) + 1
    w = m.to(values.dtype)
    sums = values.new_zeros(rollouts).index_add(0, inv, torch.where(m, values, 0.0).sum(1))
    counts = values.new_zeros(rollouts).index_add(0, inv, w.sum(1))
    has = counts > 0
    return (sums[has] / counts[has]).mean()


def _clipped_surrogate(ratio: Tensor, adv: Tensor, eps_low, eps_high, mask: Tensor,
                       rollout_index: Tensor) -> tuple[Tensor, dict]:
    """Objective (to maximise) mean_rollouts mean_tokens min(r A, clip(r, 1-eps_low, 1+eps_high) A).

    `adv` is per row (N,); `eps_low`/`eps_high` are floats or per-row (N,) tensors.
    """
    def per_row(x):
        x = torch.as_tensor(x, dtype=ratio.dtype, device=ratio.device)
        return x.reshape(-1, 1) if x.dim() == 1 else x

    a, lo, hi = per_row(adv), 1.0 - per_row(eps_low), 1.0 + per_row(eps_high)
    clipped = torch.minimum(torch.maximum(ratio, lo), hi)
    objective = torch.minimum(ratio * a, clipped * a)
    m = mask.bool()
    with torch.no_grad():
        # The clipped term is the active min (and differs) exactly here.
        is_clipped = ((a > 0) & (ratio > hi)) | ((a < 0) & (ratio < lo))
        counted = m.sum().clamp_min(1)
        stats = {"clip_fraction": float((is_clipped & m).sum() / counted),
                 "ratio_mean": float(torch.where(m, ratio, 0.0).sum() / counted)}
    return _rollout_mean(objective, mask, rollout_index), stats


# ----------------------------------------------------------------------------------------------
# GRPO and ADPO
# ----------------------------------------------------------------------------------------------

def grpo_loss(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor,
              rollout_index: Tensor, eps: float = 0.2) -> tuple[Tensor, dict]:
    """L = -mean_rollouts mean_tokens min(r A, clip(r, 1-eps, 1+eps) A)."""
    ratio = _ratio(logp_new, logp_old, mask)
    objective, stats = _clipped_surrogate(ratio, advantages, eps, eps, mask, rollout_index)
    return -objective, stats


def adpo_loss(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, p_hat_row: Tensor,
              mask: Tensor, rollout_index: Tensor, eps_low: float = 0.2, s_min: float = 0.6
              ) -> tuple[Tensor, dict]:
    """L = -mean_rollouts mean_tokens min(r A', clip(r, 1-eps_low, 1+eps_high(p)) A'), A' = s(p) A.

    `p_hat_row` (N,) is the majority share of each row's group. Dropping off-frontier tasks
    (adpo_frontier) is the caller's job: it decides which rows are in the batch at all.
    """
    p = torch.as_tensor(p_hat_row, dtype=logp_new.dtype, device=logp_new.device)
    adv = torch.as_tensor(advantages, dtype=logp_new.dtype, device=logp_new.device)
    scale, eps_high = adpo_scale(p, s_min), adpo_eps_high(p)
    ratio = _ratio(logp_new, logp_old, mask)
    objective, stats = _clipped_surrogate(ratio, scale * adv, eps_low, eps_high, mask,
                                          rollout_index)
    stats.update(scale_mean=float(scale.mean()) if scale.numel() else 0.0,
                 eps_high_mean=float(eps_high.mean()) if eps_high.numel() else 0.0)
    return -objective, stats


# ----------------------------------------------------------------------------------------------
# EntroPIC: PI control of the policy entropy
# ----------------------------------------------------------------------------------------------

@dataclass
class EntropyPIController:
    """PI controller on the token entropy; its output alpha weighs entropic_term.

    e = H - H_target; alpha = clip(kp e + ki I, -1, 1) with I read before this step's update;
    then I += e * batch_fraction (micro/mini batch size, so one optimiser step adds e once).
    I is never reset (the integral is what removes the steady-state error). target < 0
    disables the controller: alpha = 0 and I untouched.
    """
    target: float
    kp: float = 1.0
    ki: float = 0.01
    integral: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.target >= 0

    def alpha(self, entropy: float, batch_fraction: float = 1.0) -> float:
        if not self.enabled:
            return 0.0
        error = float(entropy) - self.target
        alpha = min(max(self.kp * error + self.ki * self.integral, -1.0), 1.0)
        self.integral += error * float(batch_fraction)
        return alpha

    def state_dict(self) -> dict:
        return {k: float(v) for k, v in asdict(self).items()}

    def load_state_dict(self, state: dict) -> None:
        for k in ("target", "kp", "ki", "integral"):
            setattr(self, k, float(state[k]))


def entropic_term(ratio: Tensor, advantages_row: Tensor, probs_taken: Tensor, mask: Tensor,
                  rollout_index: Tensor, alpha: float, high_prob: float = 0.95
                  ) -> tuple[Tensor, dict]:
    """alpha * mean over counted tokens with pi(token) > high_prob of (-r |A|).

    Effect: below target entropy (alpha < 0) the term is +|alpha| r |A|, so minimising it lowers
    the probability of already confident tokens and entropy rises; above target (alpha > 0) it
    raises them and entropy falls. Averaged per rollout, then over rollouts that have such
    tokens; no such token at all -> 0.
    """
    m = mask.bool()
    high = (probs_taken.detach() > high_prob) & m
    a = torch.as_tensor(advantages_row, dtype=ratio.dtype, device=ratio.device).reshape(-1, 1)
    term = alpha * _rollout_mean(-ratio * a.abs(), high, rollout_index)
    stats = {"high_prob_fraction": float(high.sum() / m.sum().clamp_min(1))}
    return term, stats


def token_entropy_mean(entropy: Tensor, mask: Tensor) -> Tensor:
    """Token-mean entropy over counted tokens (the H the controller sees)."""
    m = mask.bool()
    return torch.where(m, entropy, 0.0).sum() / m.sum().clamp_min(1)


# ----------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------

def policy_loss(kind: str, logp_new: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor,
                rollout_index: Tensor, p_hat_row: Tensor | None = None,
                controller: EntropyPIController | None = None,
                entropy_mean: float | None = None, batch_fraction: float = 1.0,
                high_prob: float = 0.95) -> tuple[Tensor, dict]:
    """One entry point: kind in LOSS_KINDS.

    "entropic" = GRPO surrogate + entropic term; "adpo+entropic" = ADPO surrogate + entropic
    term. ADPO kinds need `p_hat_row`; entropic kinds need `controller` and `entropy_mean` (the
    alpha is computed here, which advances the controller's integral by
    entropy error * batch_fraction).
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; allowed: {', '.join(LOSS_KINDS)}")
    base, entropic = kind.split("+")[0], kind.endswith("entropic")
    if base == "entropic":
        base = "grpo"
    if base == "adpo":
        if p_hat_row is None:
            raise ValueError(f"loss kind {kind!r} needs p_hat_row")
        loss, stats = adpo_loss(logp_new, logp_old, advantages, p_hat_row, mask, rollout_index)
    else:
        loss, stats = grpo_loss(logp_new, logp_old, advantages, mask, rollout_index)
    if entropic:
        if controller is None or entropy_mean is None:
            raise ValueError(f"loss kind {kind!r} needs controller and entropy_mean")
        alpha = controller.alpha(float(entropy_mean), batch_fraction)
        term, term_stats = entropic_term(_ratio(logp_new, logp_old, mask), advantages,
                                         logp_new.detach().exp(), mask, rollout_index, alpha,
                                         high_prob)
        loss = loss + term
        stats.update(term_stats, alpha=alpha, integral=controller.integral,
                     entropic_term=float(term.detach()))
    return loss, stats
