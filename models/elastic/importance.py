"""Importance scores for nested submodels, as Nemotron Elastic / Minitron define them
(docs/architecture.md, "Elastic submodels"). Each function takes activations gathered on
calibration data and returns one score per unit; a larger score means more important. Sorting
units by descending score and permuting the weights accordingly makes every prefix the best
submodel of its size.

These work on any transformer (our ElasticVLA, or a Hugging Face Qwen2 decoder): the caller
collects the activations with forward hooks.
"""

from __future__ import annotations

import torch


def ffn_neuron_importance(ffn_pre_activation: torch.Tensor) -> torch.Tensor:
    """FFN neuron i: sum over tokens of |X W1_i|.

    ffn_pre_activation: (..., F) = X @ W1^T, the input to the FFN non-linearity (for SwiGLU,
    the gate projection). Returns (F,).
    """
    return ffn_pre_activation.detach().abs().reshape(-1, ffn_pre_activation.shape[-1]).sum(0).float()


def attention_head_importance(queries: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Attention head h: summed query activation magnitude, sum over tokens of ||Q_h||_2.

    queries: (..., num_heads * head_dim), the query projection output. Returns (num_heads,).
    """
    q = queries.detach().reshape(-1, num_heads, queries.shape[-1] // num_heads).float()
    return q.norm(dim=-1).sum(0)


def channel_importance(normed_hidden: torch.Tensor) -> torch.Tensor:
    """Hidden (embedding) channel j: sum over tokens of |LayerNorm(X)_j|.

    normed_hidden: (..., D), the output of a normalisation layer (RMSNorm here). Callers sum
    the scores of every norm layer in the model. Returns (D,).
    """
    return normed_hidden.detach().abs().reshape(-1, normed_hidden.shape[-1]).sum(0).float()


def layer_removal_importance(full_logits: torch.Tensor, ablated_logits: torch.Tensor) -> float:
    """Layer j: normalised logit MSE when layer j alone is removed,
    sum((M_full - M_-j)^2) / sum(M_full^2)."""
    full = full_logits.detach().double()
    diff = full - ablated_logits.detach().double()
    return float(diff.pow(2).sum() / full.pow(2).sum().clamp_min(1e-30))


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """Unit indices from most to least important (a stable sort, so ties keep their order)."""
    return torch.sort(scores, descending=True, stable=True).indices
