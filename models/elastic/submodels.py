"""Nested elastic submodels (docs/architecture.md, elastic submodels): specs, slicing rules,
calibration and permutation.

A submodel is a prefix of the parent along four axes: hidden width, attention heads, FFN width
and depth. Rounding rules (`resolve`, round half up, clamped to [one unit, parent size]):
heads = round(heads_frac * n_heads) whole heads (a multiple of the GQA group size when
kv_heads < heads), so the attention width is heads * head_dim; hidden width is rounded to a
multiple of `hidden_multiple` (default: the head dim); FFN width to a multiple of 8;
layers = round(depth_frac * n_layers), the most important ones (stored order) run in their
original order. A fraction of exactly 1 always keeps the whole axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SubmodelSpec:
    """Fractions of the parent kept along each elastic axis, each in (0, 1]."""

    name: str
    hidden_frac: float = 1.0
    heads_frac: float = 1.0
    ffn_frac: float = 1.0
    depth_frac: float = 1.0

    def __post_init__(self) -> None:
        for field in ("hidden_frac", "heads_frac", "ffn_frac", "depth_frac"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not (0.0 < float(value) <= 1.0):
                raise ValueError(
                    f"SubmodelSpec {self.name!r}: {field}={value!r} is outside the allowed range (0, 1]"
                )


#: The named family, largest first. Names are approximate shares of the parent's parameters:
#: a layer's weights scale with hidden x heads (attention) and hidden x ffn (SwiGLU), so
#: "3/4" keeps the width and trims heads/FFN (~0.79 of ElasticVLA's parameters), "1/2" trims
#: every axis to 3/4 (~0.49) and "1/4" keeps 3/4 of the width, half the heads and FFN and one
#: layer in four (~0.22). The smallest is the emergency fallback: at batch 1 on a CPU a layer's
#: cost is largely per-op overhead, so depth is what buys latency (target: <= 0.35x full, docs/benchmarks.md).
NAMED_SUBMODELS: dict[str, SubmodelSpec] = {
    "full": SubmodelSpec("full"),
    "3/4": SubmodelSpec("3/4", hidden_frac=1.0, heads_frac=0.75, ffn_frac=0.75, depth_frac=1.0),
    "1/2": SubmodelSpec("1/2", hidden_frac=0.75, heads_frac=0.75, ffn_frac=0.75, depth_frac=0.75),
    "1/4": SubmodelSpec("1/4", hidden_frac=0.75, heads_frac=0.5, ffn_frac=0.5, depth_frac=0.25),
}


# --------------------------------------------------------------------------------------------
# Resolving a spec to whole units
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmodelShape:
    """A spec resolved against one parent: the active unit counts (all prefixes)."""

    name: str
    spec: SubmodelSpec
    hidden: int  #: active residual-stream width
    heads: int  #: active query heads (whole heads)
    kv_heads: int  #: active key/value heads (== heads without GQA)
    head_dim: int  #: unchanged by slicing
    ffn: int  #: active FFN inner width
    layers: int  #: number of layers run (the most important ones, in original order)

    @property
    def attn_width(self) -> int:
        return self.heads * self.head_dim


def _round_units(frac: float, total: int, multiple: int) -> int:
    """Round frac*total to a multiple of `multiple`, at least one multiple, at most total.
    frac == 1 always gives `total` (even when total is not a multiple)."""
    if frac >= 1.0:
        return total
    multiple = max(1, min(multiple, total))
    n = int(math.floor(frac * total / multiple + 0.5)) * multiple
    return max(multiple, min(total, n))


def resolve(
    spec: SubmodelSpec,
    *,
    hidden: int,
    heads: int,
    head_dim: int,
    ffn: int,
    layers: int,
    kv_heads: int | None = None,
    hidden_multiple: int | None = None,
    ffn_multiple: int = 8,
) -> SubmodelShape:
    """Turn fractions into whole units of a parent model.

    Rounding (round half up, then clamped to [one unit, parent size]):
    * heads: whole heads; with GQA (kv_heads < heads) to a multiple of the group size
      heads/kv_heads so key/value heads stay whole too;
    * hidden: a multiple of ``hidden_multiple`` (default: the head dim), so widths stay
      aligned with heads and SIMD lanes;
    * ffn: a multiple of ``ffn_multiple`` (8);
    * layers: at least one.
    """
    kv_heads = heads if kv_heads is None else kv_heads
    if heads % kv_heads:
        raise ValueError(f"heads={heads} must be a multiple of kv_heads={kv_heads}")
    group = heads // kv_heads
    n_heads = _round_units(spec.heads_frac, heads, group)
    return SubmodelShape(
        name=spec.name,
        spec=spec,
        hidden=_round_units(spec.hidden_frac, hidden, hidden_multiple or head_dim),
        heads=n_heads,
        kv_heads=n_heads // group,
        head_dim=head_dim,
        ffn=_round_units(spec.ffn_frac, ffn, ffn_multiple),
        layers=_round_units(spec.depth_frac, layers, 1),
    )


# --------------------------------------------------------------------------------------------
# Knowledge distillation for elastic training (docs/architecture.md, elastic submodels)
# --------------------------------------------------------------------------------------------


def elastic_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Forward KL(teacher || student) over the action bins, mean over (unmasked) tokens.

    student_logits, teacher_logits: (..., bins); the teacher is detached. mask: (...) bool/float,
    True for tokens that count (e.g. ``batch["action_mask"]``). With temperature T the KL of the
    softened distributions is scaled by T^2 (Hinton et al.) so gradients keep their size.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} differ")
    t = float(temperature)
    log_s = torch.log_softmax(student_logits.float() / t, dim=-1)
    log_t = torch.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1) * (t * t)
    if mask is None:
        return kl.mean()
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------
# Zero-copy accounting
# --------------------------------------------------------------------------------------------


def is_view_of(view: torch.Tensor, parent: torch.Tensor) -> bool:
    """True when `view` reads memory inside `parent`'s storage (no copy)."""
    if view.untyped_storage().data_ptr() != parent.untyped_storage().data_ptr():
        return False
    lo = parent.data_ptr()
    hi = lo + parent.numel() * parent.element_size()
    return lo <= view.data_ptr() < hi


def _tensors_of(model: torch.nn.Module):
    for m in model.modules():
        yield from m.parameters(recurse=False)
        yield from m.buffers(recurse=False)
        for v in vars(m).values():  # cached views and other plain tensor attributes
            if isinstance(v, torch.Tensor):
                yield v


def resident_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the unique storages behind every tensor the model holds: parameters, buffers
    and cached submodel views. Switching submodels must leave this unchanged."""
    seen: dict[tuple, int] = {}
    for t in _tensors_of(model):
        s = t.untyped_storage()
        seen[(t.device.type, s.data_ptr())] = s.nbytes()
    return sum(seen.values())


# --------------------------------------------------------------------------------------------
# Calibration and permutation of ElasticVLA (importance ranking)
# --------------------------------------------------------------------------------------------


def _permute_(param: torch.Tensor, perm: torch.Tensor, dim: int) -> None:
    """Reorder `param` along `dim` in place (same storage, so existing views stay valid)."""
    with torch.no_grad():
        param.copy_(param.index_select(dim, perm.to(param.device)))


def _head_index(perm: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (perm[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


@torch.no_grad()
def calibrate_and_permute(model, calibration_batches, permute: bool = True) -> dict:
    """Score every elastic unit of an ElasticVLA on calibration data and permute its weights in
    place so that every prefix holds the most important units.

    calibration_batches: iterable of dicts with the model's input tensors (``obs_to_batch``).
    Scores (models.elastic.importance): FFN neuron i by sum |X W1_i| on the SwiGLU gate input,
    heads by query magnitude, hidden channels by sum |RMSNorm(X)| over every decoder norm,
    layers by the normalised logit MSE of removing each layer alone. The full model's function
    is unchanged (up to float summation order); the layer order is stored in
    ``model.layer_rank``. Returns the scores.
    """
    from . import importance as imp

    cfg = model.config
    previous = model.submodel_shape.spec
    was_training = model.training
    model.eval()
    model.set_submodel("full")
    layers = list(model.layers)
    ffn_scores = [torch.zeros(cfg.ffn_size) for _ in layers]
    head_scores = [torch.zeros(cfg.num_heads) for _ in layers]
    chan_scores = torch.zeros(cfg.hidden_size)
    hooks = []

    def add(store, idx, fn):
        def hook(_module, _inputs, output):
            store[idx] += fn(output).cpu()

        return hook

    chan_box = [chan_scores]
    for i, layer in enumerate(layers):
        hooks.append(layer.gate_proj.register_forward_hook(add(ffn_scores, i, imp.ffn_neuron_importance)))
        hooks.append(
            layer.q_proj.register_forward_hook(
                add(head_scores, i, lambda q: imp.attention_head_importance(q, cfg.num_heads))
            )
        )
        for norm in (layer.attn_norm, layer.mlp_norm):
            hooks.append(norm.register_forward_hook(add(chan_box, 0, imp.channel_importance)))
    hooks.append(model.final_norm.register_forward_hook(add(chan_box, 0, imp.channel_importance)))

    batches = [{k: v for k, v in b.items()} for b in calibration_batches]
    if not batches:
        raise ValueError("calibrate_and_permute needs at least one calibration batch")
    try:
        full_logits = [model.batch_logits(b) for b in batches]
    finally:
        for h in hooks:
            h.remove()
    chan_scores = chan_box[0]
    full = torch.cat([x.reshape(-1) for x in full_logits])
    layer_scores = torch.zeros(len(layers), dtype=torch.float64)
    all_layers = list(range(len(layers)))
    try:
        for j in all_layers:
            model._active_layers = [i for i in all_layers if i != j]
            ablated = torch.cat([model.batch_logits(b).reshape(-1) for b in batches])
            layer_scores[j] = imp.layer_removal_importance(full, ablated)
    finally:
        model._active_layers = all_layers

    if permute:
        hd = cfg.head_dim
        p_h = imp.ranking(chan_scores)
        _permute_(model.proj_out.weight, p_h, 0)
        _permute_(model.proj_out.bias, p_h, 0)
        _permute_(model.proprio_proj.weight, p_h, 0)
        _permute_(model.proprio_proj.bias, p_h, 0)
        for emb in (model.tok_embed, model.embodiment_embed, model.action_queries):
            _permute_(emb, p_h, 1)
        _permute_(model.final_norm.weight, p_h, 0)
        _permute_(model.action_head.weight, p_h, 1)
        if model.aux_head is not None:
            _permute_(model.aux_head.weight, p_h, 1)
        if model.keypoint_proj is not None:
            _permute_(model.keypoint_proj.weight, p_h, 0)
            _permute_(model.keypoint_proj.bias, p_h, 0)
        for i, layer in enumerate(layers):
            _permute_(layer.attn_norm.weight, p_h, 0)
            _permute_(layer.mlp_norm.weight, p_h, 0)
            p_a = _head_index(imp.ranking(head_scores[i]), hd)
            for lin in (layer.q_proj, layer.k_proj, layer.v_proj):
                _permute_(lin.weight, p_h, 1)
                _permute_(lin.weight, p_a, 0)
            _permute_(layer.o_proj.weight, p_a, 1)
            _permute_(layer.o_proj.weight, p_h, 0)
            p_f = imp.ranking(ffn_scores[i])
            for lin in (layer.gate_proj, layer.up_proj):
                _permute_(lin.weight, p_h, 1)
                _permute_(lin.weight, p_f, 0)
            _permute_(layer.down_proj.weight, p_f, 1)
            _permute_(layer.down_proj.weight, p_h, 0)
        model.layer_rank.copy_(imp.ranking(layer_scores.float()).to(model.layer_rank.device))
    model.refresh_views()
    model.set_submodel(previous)
    model.train(was_training)
    return {
        "ffn": ffn_scores,
        "heads": head_scores,
        "channels": chan_scores,
        "layers": layer_scores,
        "layer_rank": model.layer_rank.tolist(),
    }
