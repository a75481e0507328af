"""Group-RL losses (sim/train/losses.py), pinned on hand-computed numbers."""

import math

import numpy as np
import pytest
import torch

from embodied_stack.sim.train.losses import (
    LOSS_KINDS,
    EntropyPIController,
    adpo_eps_high,
    adpo_frontier,
    adpo_loss,
    adpo_scale,
    entropic_term,
    group_advantages,
    group_majority,
    grpo_loss,
    majority_share,
    policy_loss,
    pseudo_rewards,
    token_entropy_mean,
)

EPS = 1e-6


def approx(x, rel=1e-5, abs=1e-6):
    return pytest.approx(x, rel=rel, abs=abs)


def logs(ratios):
    """logp_new with logp_old = 0, so that exp(logp_new - logp_old) is the given ratio."""
    return torch.tensor(ratios, dtype=torch.float64).log()


# ---------------------------------------------------------------- group advantages

def test_group_of_four():
    # mean 0.5, population std sqrt(4 * 0.25 / 4) = 0.5 -> A = +-0.5 / (0.5 + eps) ~ +-1
    adv, zero_var, groups = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]),
                                             torch.tensor([3, 3, 3, 3]))
    a = 0.5 / (0.5 + EPS)
    assert adv.tolist() == approx([a, -a, -a, a]) and (zero_var, groups) == (0, 1)


def test_group_of_one_uses_mean_0_std_1():
    adv, zero_var, groups = group_advantages(torch.tensor([0.7]), torch.tensor([0]))
    assert adv.tolist() == approx([0.7 / (1 + EPS)]) and (zero_var, groups) == (0, 1)


def test_zero_variance_group_is_zero_and_counted():
    adv, zero_var, groups = group_advantages(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0, 0, 0]))
    assert adv.tolist() == [0.0, 0.0, 0.0] and (zero_var, groups) == (1, 1)
    # 0.1 three times: float noise must not turn "all equal" into a huge advantage.
    adv, zero_var, _ = group_advantages(torch.tensor([0.1, 0.1, 0.1]), torch.tensor([0, 0, 0]))
    assert adv.tolist() == [0.0, 0.0, 0.0] and zero_var == 1


def test_mixed_groups_in_shuffled_order():
    rewards = torch.tensor([1.0, 5.0, 0.0, 3.0, 2.0, 2.0, 7.0])
    group = torch.tensor([10, 4, 10, 4, 8, 8, 1])
    adv, zero_var, groups = group_advantages(rewards, group)
    # g10: [1, 0] mean 0.5 std 0.5 -> +-0.5/(0.5+eps); g4: [5, 3] mean 4 std 1 -> +-1/(1+eps)
    # g8: [2, 2] zero variance -> 0, 0;  g1: [7] alone -> 7/(1+eps)
    a, b = 0.5 / (0.5 + EPS), 1 / (1 + EPS)
    assert adv.tolist() == approx([a, b, -a, -b, 0.0, 0.0, 7 * b])
    assert (zero_var, groups) == (1, 4)


# ---------------------------------------------------------------- majority / pseudo-labels

def test_majority_share_and_ties():
    assert majority_share(["a", "a", "b", "c"]) == (0.5, "a")      # 2 of 4 agree with "a"
    assert majority_share(["b", "a", "a", "b"]) == (0.5, "b")      # tie: "b" appears first
    assert majority_share(["c", "a", "b"]) == (pytest.approx(1 / 3), "c")
    assert majority_share(["x"]) == (1.0, "x")
    with pytest.raises(ValueError):
        majority_share([])


def test_group_majority_and_pseudo_rewards_on_two_interleaved_groups():
    outcomes = ["a", "y", "b", "x", "a", "y"]
    group = [0, 1, 0, 1, 0, 1]
    # g0: a, b, a -> "a", 2/3;  g1: y, x, y -> "y", 2/3
    p_hat, majority = group_majority(outcomes, group)
    np.testing.assert_allclose(p_hat, [2 / 3] * 6)
    assert majority == ["a", "y", "a", "y", "a", "y"]
    assert pseudo_rewards(outcomes, group).tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    # A tied group ["p", "q"]: "p" comes first -> rewards [1, 0], p_hat 0.5.
    p_hat, _ = group_majority(["q", "p"], [5, 5])
    assert p_hat.tolist() == [0.5, 0.5]
    assert pseudo_rewards(["p", "q"], [5, 5]).tolist() == [1.0, 0.0]


# ---------------------------------------------------------------- ADPO schedules

def test_adpo_schedules():
    # s = 0.6 + 0.4 * clip((p - 0.3) / 0.5, 0, 1)
    assert adpo_scale(0.2) == approx(0.6)                 # clip(-0.2) = 0
    assert adpo_scale(0.55) == approx(0.6 + 0.4 * 0.5)    # (0.25 / 0.5) = 0.5 -> 0.8
    assert adpo_scale(0.9) == approx(1.0)                 # clip(1.2) = 1
    assert adpo_scale(0.2, s_min=0.8) == approx(0.8)
    # eps_high = 0.2 + 0.1 * clip((0.8 - p) / 0.5, 0, 1)
    assert adpo_eps_high(0.9) == approx(0.2)              # clip(-0.2) = 0
    assert adpo_eps_high(0.55) == approx(0.25)            # clip(0.5) -> 0.2 + 0.05
    assert adpo_eps_high(0.2) == approx(0.3)              # clip(1.2) = 1
    assert [bool(adpo_frontier(p)) for p in (0.29, 0.3, 0.8, 0.81)] == [False, True, True, False]
    # The same schedules on tensors and arrays.
    assert adpo_scale(torch.tensor([0.2, 0.55, 0.9])).tolist() == approx([0.6, 0.8, 1.0])
    assert adpo_frontier(np.array([0.29, 0.5, 0.81])).tolist() == [False, True, False]


# ---------------------------------------------------------------- GRPO

def grpo_example():
    """Two rollouts of different lengths: rollout 7 has rows 0 and 1, rollout 3 has row 2."""
    logp_new = torch.stack([
        logs([1.1, 1.5, 0.5]),       # A = +1
        logs([0.7, 1.3, 9.0]),       # A = -1, last token masked
        logs([1.0, 0.9, 1.0]),       # A = +2, last token masked (padded with -inf below)
    ])
    logp_new[2, 2] = -math.inf
    logp_new.requires_grad_(True)
    logp_old = torch.zeros(3, 3, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    rollout = torch.tensor([7, 7, 3])
    return logp_new, logp_old, adv, mask, rollout


def test_grpo_hand_computed():
    logp_new, logp_old, adv, mask, rollout = grpo_example()
    loss, stats = grpo_loss(logp_new, logp_old, adv, mask, rollout, eps=0.2)
    # Row 0, A=+1: r=1.1 -> min(1.1, 1.1) = 1.1; r=1.5 -> min(1.5, 1.2) = 1.2 (clipped);
    #              r=0.5 -> min(0.5, 0.8) = 0.5 (A>0 and r low: unclipped term is the min)
    # Row 1, A=-1: r=0.7 -> min(-0.7, -0.8) = -0.8 (clipped); r=1.3 -> min(-1.3, -1.2) = -1.3
    # Rollout 7: (1.1 + 1.2 + 0.5 - 0.8 - 1.3) / 5 = 0.7 / 5 = 0.14
    # Row 2, A=+2: r=1.0 -> 2.0; r=0.9 -> 1.8.  Rollout 3: (2.0 + 1.8) / 2 = 1.9
    # Loss = -(0.14 + 1.9) / 2 = -1.02   (a flat token mean would give -(0.7 + 3.8) / 7)
    assert loss.item() == approx(-1.02)
    assert loss.item() != approx(-4.5 / 7)
    assert stats["clip_fraction"] == approx(2 / 7)       # r=1.5 (A>0) and r=0.7 (A<0)
    # mean ratio over the 7 counted tokens: (1.1+1.5+0.5+0.7+1.3+1.0+0.9) / 7 = 7 / 7
    assert stats["ratio_mean"] == approx(1.0)


def test_grpo_gradients_flow_and_padding_stays_finite():
    logp_new, logp_old, adv, mask, rollout = grpo_example()
    loss, _ = grpo_loss(logp_new, logp_old, adv, mask, rollout)
    loss.backward()
    g = logp_new.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # Clipped tokens and masked tokens get no gradient; r=1.1 of row 0 does:
    # d(-(1/2)(1/5) r A)/d logp = -(1/10) * r * A = -0.11
    assert g[0, 1] == 0 and g[1, 0] == 0 and g[1, 2] == 0 and g[2, 2] == 0
    assert g[0, 0].item() == approx(-0.11)


# ---------------------------------------------------------------- ADPO loss

def adpo_example():
    logp_new = torch.stack([logs([1.25, 1.4]), logs([1.1, 1.3])])
    logp_old = torch.zeros(2, 2, dtype=torch.float64)
    adv = torch.tensor([1.0, 2.0], dtype=torch.float64)
    p_hat = torch.tensor([0.2, 0.55], dtype=torch.float64)
    mask = torch.ones(2, 2, dtype=torch.bool)
    rollout = torch.tensor([0, 1])
    return logp_new, logp_old, adv, p_hat, mask, rollout


def test_adpo_hand_computed():
    logp_new, logp_old, adv, p_hat, mask, rollout = adpo_example()
    loss, stats = adpo_loss(logp_new, logp_old, adv, p_hat, mask, rollout)
    # Row 0: p=0.2 -> s=0.6, eps_high=0.3, A'=0.6.
    #   r=1.25: NOT clipped at 1.3 (would be at 1.2) -> 0.6 * 1.25 = 0.75
    #   r=1.4:  clipped at 1.3                       -> 0.6 * 1.3  = 0.78;  mean 0.765
    # Row 1: p=0.55 -> s=0.8, eps_high=0.25, A'=1.6.
    #   r=1.1 -> 1.76;  r=1.3 clipped at 1.25 -> 2.0;                        mean 1.88
    # Loss = -(0.765 + 1.88) / 2 = -1.3225
    assert loss.item() == approx(-1.3225)
    assert stats["clip_fraction"] == approx(2 / 4)
    # GRPO on the same tokens clips r=1.25 too (3 of 4) and has no scale:
    # row 0: (1.2 + 1.2) / 2 = 1.2; row 1: (2.2 + 2.4) / 2 = 2.3 -> -(1.2 + 2.3) / 2 = -1.75
    g_loss, g_stats = grpo_loss(logp_new, logp_old, adv, mask, rollout)
    assert g_stats["clip_fraction"] == approx(3 / 4) and g_loss.item() == approx(-1.75)


def test_adpo_eps_low_on_negative_advantage():
    # p=0.9: s=1, eps_high=0.2; A=-1, r=0.7 -> min(-0.7, -0.8) = -0.8 -> loss 0.8
    loss, stats = adpo_loss(logs([[0.7]]), torch.zeros(1, 1, dtype=torch.float64),
                            torch.tensor([-1.0]), torch.tensor([0.9]),
                            torch.ones(1, 1), torch.tensor([0]))
    assert loss.item() == approx(0.8) and stats["clip_fraction"] == approx(1.0)


# ---------------------------------------------------------------- EntroPIC

def test_entropy_pi_controller_sequence():
    c = EntropyPIController(target=1.0)
    assert c.alpha(1.5) == approx(0.5)          # e=0.5: 1*0.5 + 0.01*0; then I = 0.5
    assert c.integral == approx(0.5)
    assert c.alpha(0.5) == approx(-0.495)       # e=-0.5: -0.5 + 0.01*0.5; then I = 0.0
    assert c.integral == approx(0.0)


def test_entropy_pi_controller_batch_fraction_and_clip():
    c = EntropyPIController(target=1.0)
    assert c.alpha(1.5, batch_fraction=0.25) == approx(0.5)   # I = 0 + 0.5*0.25 = 0.125
    assert c.integral == approx(0.125)
    assert c.alpha(3.0, batch_fraction=0.25) == 1.0           # 2 + 0.00125 -> clip to 1
    assert c.integral == approx(0.625)                         # 0.125 + 2*0.25
    c = EntropyPIController(target=3.0)
    assert c.alpha(0.5) == -1.0                                # -2.5 -> clip to -1
    assert c.integral == approx(-2.5)                          # clipping does not stop I


def test_entropy_pi_controller_off_and_state_dict():
    off = EntropyPIController(target=-1.0, integral=0.3)
    assert off.alpha(5.0) == 0.0 and off.integral == 0.3
    c = EntropyPIController(target=1.0, kp=2.0, ki=0.1)
    c.alpha(1.5)
    state = c.state_dict()
    assert state == {"target": 1.0, "kp": 2.0, "ki": 0.1, "integral": 0.5}
    assert all(type(v) is float for v in state.values())
    d = EntropyPIController(target=0.0)
    d.load_state_dict(state)
    assert d == c and d.alpha(2.0) == c.alpha(2.0)


def entropic_example():
    ratio = torch.tensor([[1.1, 1.0, 0.9], [1.2, 1.0, 1.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([-2.0, 1.0, 3.0])
    probs = torch.tensor([[0.99, 0.5, 0.97], [0.96, 0.999, 0.1], [0.95, 0.2, 0.3]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=torch.bool)
    rollout = torch.tensor([0, 1, 1])
    return ratio, adv, probs, mask, rollout


def test_entropic_term_hand_computed():
    ratio, adv, probs, mask, rollout = entropic_example()
    term, stats = entropic_term(ratio, adv, probs, mask, rollout, alpha=0.5)
    # Counted tokens with prob > 0.95:
    #   row 0 (rollout 0): 0.99 and 0.97 -> -1.1*2, -0.9*2 -> mean -2.0
    #   row 1 (rollout 1): 0.96 -> -1.2*1 (0.999 is masked)
    #   row 2 (rollout 1): 0.95 is not > 0.95 -> none.    Rollout 1 mean: -1.2
    # term = 0.5 * (-2.0 + -1.2) / 2 = -0.8
    assert term.item() == approx(-0.8)
    assert stats["high_prob_fraction"] == approx(3 / 8)        # 3 of the 8 counted tokens
    none, stats = entropic_term(ratio, adv, probs * 0.5, mask, rollout, alpha=0.5)
    assert none.item() == 0.0 and stats["high_prob_fraction"] == 0.0


def test_entropic_term_threshold_is_a_parameter():
    ratio, adv, probs, mask, rollout = entropic_example()
    # high_prob=0.4: row 0 counts 0.99, 0.5, 0.97 -> -(1.1+1.0+0.9)*2/3 = -2.0;
    # rows 1-2 (rollout 1) count 0.96 (A=1) and 0.95 (A=3) -> (-1.2 - 3.0)/2 = -2.1
    # term = 0.5 * (-2.0 - 2.1) / 2 = -1.025
    term, stats = entropic_term(ratio, adv, probs, mask, rollout, alpha=0.5, high_prob=0.4)
    assert term.item() == approx(-1.025)
    assert stats["high_prob_fraction"] == approx(5 / 8)


def test_token_entropy_mean():
    entropy = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert token_entropy_mean(entropy, mask).item() == approx(2.0)   # (1 + 2 + 3) / 3


# ---------------------------------------------------------------- dispatcher

def test_policy_loss_dispatch():
    assert LOSS_KINDS == ("grpo", "adpo", "entropic", "adpo+entropic")
    logp_new, logp_old, adv, p_hat, mask, rollout = adpo_example()
    probs = logp_new.exp()  # 1.25, 1.4, 1.1, 1.3: every token is "high probability"
    ratio = probs           # logp_old = 0

    loss, _ = policy_loss("grpo", logp_new, logp_old, adv, mask, rollout)
    assert loss.item() == approx(-1.75)
    loss, _ = policy_loss("adpo", logp_new, logp_old, adv, mask, rollout, p_hat_row=p_hat)
    assert loss.item() == approx(-1.3225)

    # Entropic: H=1.5 vs target 1.0 -> alpha 0.5, I 0.5.
    # term = 0.5 * mean_rollouts(mean(-r|A|)): row 0 -(1.25+1.4)/2 = -1.325,
    #        row 1 -2*(1.1+1.3)/2 = -2.4 -> 0.5 * (-3.725 / 2) = -0.93125
    term, _ = entropic_term(ratio, adv, probs, mask, rollout, 0.5)
    assert term.item() == approx(-0.93125)
    c = EntropyPIController(target=1.0)
    loss, stats = policy_loss("entropic", logp_new, logp_old, adv, mask, rollout,
                              controller=c, entropy_mean=1.5)
    assert loss.item() == approx(-1.75 - 0.93125)
    assert stats["alpha"] == approx(0.5) and stats["integral"] == approx(0.5)
    assert stats["high_prob_fraction"] == 1.0 and "clip_fraction" in stats
    c = EntropyPIController(target=1.0)
    loss, stats = policy_loss("adpo+entropic", logp_new, logp_old, adv, mask, rollout,
                              p_hat_row=p_hat, controller=c, entropy_mean=torch.tensor(1.5))
    assert loss.item() == approx(-1.3225 - 0.93125)
    assert stats["alpha"] == approx(0.5) and stats["integral"] == approx(0.5)


def test_policy_loss_errors():
    logp_new, logp_old, adv, p_hat, mask, rollout = adpo_example()
    with pytest.raises(ValueError, match="grpo, adpo, entropic, adpo\\+entropic"):
        policy_loss("ppo", logp_new, logp_old, adv, mask, rollout)
    with pytest.raises(ValueError, match="p_hat_row"):
        policy_loss("adpo", logp_new, logp_old, adv, mask, rollout)
    with pytest.raises(ValueError, match="controller"):
        policy_loss("entropic", logp_new, logp_old, adv, mask, rollout, entropy_mean=1.0)
