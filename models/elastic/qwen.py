"""Zero-shot elastic slicing of a Hugging Face Qwen2 / Qwen2.5-VL text decoder
(docs/architecture.md, elastic submodels).

This makes a *trained* checkpoint such as MiMo-Embodied-7B (a ``Qwen2_5_VLForConditionalGeneration``)
elastic without retraining: rank the units on calibration prompts, permute the weights so
every prefix holds the most important units, then run any ``SubmodelSpec`` as slices (views)
of the parent weights. Without the distillation training of Nemotron Elastic the small
submodels of a real checkpoint lose quality; ``submodel_kl`` measures how much.

Steps
-----
1. ``collect_importance`` — forward hooks over calibration batches (``models/elastic/importance.py``
   does the scoring; padding tokens, where an ``attention_mask`` is given, are excluded):

   - FFN neuron i of each layer: summed ``|X W_gate_i|``, the gate projection output (the input
     of the SwiGLU non-linearity).
   - Attention heads: summed query magnitude ``||Q_h||`` per query head (the ``q_proj`` output,
     before RoPE; RoPE is a rotation, so the norm is the same after it).
   - Hidden channels: summed ``|RMSNorm(X)|`` over every RMSNorm of the decoder (both norms of
     every layer and the final norm).
   - Layers: normalised logit MSE ``sum((M_full - M_-j)^2) / sum(M_full^2)`` with layer j alone
     replaced by the identity, summed over all calibration tokens.

2. ``permute_by_importance`` — reorders hidden channels, heads and FFN neurons in place. This
   is function-preserving for the full model (RMSNorm is permutation-equivariant, RoPE acts on
   every head alike, the SwiGLU is element-wise), which the tests check.

   **GQA choice.** Qwen2 uses grouped-query attention: query head h reads KV head h // G.
   We rank *KV groups* (a KV head plus its G query heads) by the summed importance of their
   query heads, and inside each group order the query heads by their own score. A submodel
   keeps whole groups (heads_frac of the query heads rounded to a multiple of G). Slicing whole groups is
   the only choice that (a) keeps every submodel a contiguous prefix of ``q_proj``/``k_proj``/
   ``v_proj``/``o_proj`` -- so it can be a view -- and (b) keeps ``num_key_value_groups``
   unchanged, so Hugging Face's ``repeat_kv`` / SDPA-GQA path stays valid; it also shrinks the
   KV cache in proportion. (Keeping all KV heads and dropping query heads inside each group
   would need a non-contiguous gather, i.e. a copy.) The cost is coarse granularity: a
   checkpoint with 4 KV heads has 4 head settings.

3. ``ElasticQwen.apply(spec)`` — swaps each sliced weight of the decoder for an
   ``nn.Parameter`` that is a *view* of the parent tensor (same storage; no copy, no reload);
   skipped layers are replaced by an identity module. ``apply("full")`` puts the original
   Parameter objects back. Rounding is ``models/elastic/submodels.resolve``: query heads in whole
   KV groups (as above); hidden width a multiple of the head dim; FFN width a multiple of 8;
   the number of layers rounded half up, taken in importance order, except that layer 0 is always
   kept (Hugging Face caches read the sequence length from layer 0's KV cache, so generation
   with a cache breaks if layer 0 is skipped).

Limits (say them out loud)
--------------------------
- Inference only: the views are detached from autograd; training a submodel would need the
  slicing inside the forward instead.
- While a submodel is active, ``model.state_dict()`` shows the sliced tensors: switch back to
  "full" before saving.
- The vision tower is not sliced; only the merger's output rows follow the text hidden width.
- Hidden-width slicing changes the RMSNorm mean to the kept channels (as Minitron / Nemotron
  Elastic do); it is the least accurate axis zero-shot.
- On the tiny random test model the KL numbers are a smoke signal only (random weights have no
  structure to rank). Whether the ranking helps on MiMo-Embodied-7B is unverified until the
  real checkpoint runs on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .importance import (
    attention_head_importance,
    channel_importance,
    ffn_neuron_importance,
    layer_removal_importance,
    ranking,
)
from .submodels import NAMED_SUBMODELS, SubmodelSpec, resolve

# ----------------------------------------------------------------------------------------------
# Locating the parts of a Qwen2 / Qwen2.5-VL model
# ----------------------------------------------------------------------------------------------

#: A Hugging Face (transformers) module reached by attribute: its submodules (``.layers``,
#: ``.self_attn.q_proj``, ``.mlp.gate_proj``, ...) and config are dynamic attributes the torch
#: stubs type as ``Tensor | Module`` (``nn.Module.__getattr__``), so they are ``Any`` here.
_HFModule = Any


@dataclass
class QwenParts:
    """The modules of the text decoder that elastic slicing touches."""

    model: nn.Module  #: the top-level model (its forward returns ``.logits``)
    text_model: _HFModule  #: has .embed_tokens, .layers, .norm
    lm_head: nn.Linear
    merger_out: nn.Linear | None  #: Qwen2.5-VL visual merger's last Linear (its rows = text hidden)

    @property
    def layers(self) -> _HFModule:
        """The decoder layers (an ``nn.ModuleList`` of Hugging Face decoder layers)."""
        return self.text_model.layers

    @property
    def num_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def num_kv_heads(self) -> int:
        return int(getattr(self.text_config, "num_key_value_heads", None) or self.num_heads)

    @property
    def head_dim(self) -> int:
        return int(self.layers[0].self_attn.head_dim)

    @property
    def hidden_size(self) -> int:
        return int(self.text_model.embed_tokens.weight.shape[1])

    @property
    def text_config(self):
        return self.text_model.config


def find_parts(model: nn.Module) -> QwenParts:
    """Locate the decoder of a ``Qwen2ForCausalLM`` or ``Qwen2_5_VLForConditionalGeneration``
    (transformers 4.5x and 5.x layouts)."""
    lm_head = getattr(model, "lm_head", None)
    if not isinstance(lm_head, nn.Linear):
        raise TypeError(f"{type(model).__name__} has no lm_head Linear; pass the *ForCausalLM / "
                        "*ForConditionalGeneration model")
    inner = getattr(model, "model", None)
    text_model = None
    for cand in (getattr(inner, "language_model", None), inner):
        if cand is not None and hasattr(cand, "layers") and hasattr(cand, "embed_tokens"):
            text_model = cand
            break
    if text_model is None:
        raise TypeError(f"cannot find a Qwen2 text decoder (.layers, .embed_tokens) in {type(model).__name__}")
    merger_out = None
    visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
    merger = getattr(visual, "merger", None)
    if merger is not None and isinstance(getattr(merger, "mlp", None), nn.Sequential):
        last = merger.mlp[-1]
        if isinstance(last, nn.Linear) and last.out_features == text_model.embed_tokens.weight.shape[1]:
            merger_out = last
    layer0 = text_model.layers[0]
    for name in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"):
        if not hasattr(layer0, name):
            raise TypeError(f"decoder layer {type(layer0).__name__} lacks .{name}; not a Qwen2 layer")
    return QwenParts(model, text_model, lm_head, merger_out)


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------


@dataclass
class QwenImportance:
    """Importance scores of one Qwen2 decoder (larger = more important)."""

    channel: torch.Tensor  #: (D,) hidden channels
    heads: list[torch.Tensor]  #: per layer, (H,) query heads
    ffn: list[torch.Tensor]  #: per layer, (F,) FFN neurons
    layers: torch.Tensor  #: (L,) normalised logit MSE with that layer removed
    num_tokens: int = 0


class _SkippedLayer(nn.Module):
    """A decoder layer removed from the submodel: the residual stream passes through."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states

    def extra_repr(self) -> str:
        return f"skipped layer {self.index}"


def _as_kwargs(batch: Any) -> dict[str, Any]:
    if isinstance(batch, torch.Tensor):
        return {"input_ids": batch if batch.ndim == 2 else batch[None]}
    if isinstance(batch, Mapping):
        return dict(batch)
    raise TypeError(f"calibration batch must be a LongTensor of token ids or a dict of model "
                    f"inputs, got {type(batch).__name__}")


def _forward_logits(model: nn.Module, kwargs: dict[str, Any]) -> torch.Tensor:
    device = next(model.parameters()).device
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    kw.setdefault("use_cache", False)
    out = model(**kw)
    return out.logits if hasattr(out, "logits") else out[0]


def _token_mask(kwargs: dict[str, Any], shape: tuple[int, int]) -> torch.Tensor:
    mask = kwargs.get("attention_mask")
    if mask is None:
        return torch.ones(shape, dtype=torch.bool)
    return mask.bool()


@torch.no_grad()
def collect_importance(model: nn.Module, batches: Iterable[Any]) -> QwenImportance:
    """Score hidden channels, heads, FFN neurons and layers on calibration batches.

    ``batches``: LongTensors of token ids (1D or (B, T)) or dicts of model inputs (e.g. the
    processor output with ``pixel_values`` and ``image_grid_thw``). Costs ``L + 1`` forward
    passes per batch (the layer scores remove each layer in turn).
    """
    parts = find_parts(model)
    batches = [_as_kwargs(b) for b in batches]
    if not batches:
        raise ValueError("collect_importance needs at least one calibration batch")
    was_training = model.training
    model.eval()
    L, H = len(parts.layers), parts.num_heads
    D = parts.hidden_size
    dev = parts.lm_head.weight.device
    channel = torch.zeros(D, device=dev)
    heads = [torch.zeros(H, device=dev) for _ in range(L)]
    ffn = [torch.zeros(layer.mlp.gate_proj.out_features, device=dev) for layer in parts.layers]
    state: dict[str, Any] = {"on": False}

    def masked(t: torch.Tensor) -> torch.Tensor:
        m = state["mask"]
        if m.shape == t.shape[:2]:
            return t[m.to(t.device)]
        return t

    def on_norm(_mod, _inp, out):
        if state["on"]:
            channel.add_(channel_importance(masked(out)).to(dev))

    def on_q(i):
        def hook(_mod, _inp, out):
            if state["on"]:
                heads[i].add_(attention_head_importance(masked(out), H).to(dev))
        return hook

    def on_gate(i):
        def hook(_mod, _inp, out):
            if state["on"]:
                ffn[i].add_(ffn_neuron_importance(masked(out)).to(dev))
        return hook

    handles = [parts.text_model.norm.register_forward_hook(on_norm)]
    for i, layer in enumerate(parts.layers):
        handles += [
            layer.input_layernorm.register_forward_hook(on_norm),
            layer.post_attention_layernorm.register_forward_hook(on_norm),
            layer.self_attn.q_proj.register_forward_hook(on_q(i)),
            layer.mlp.gate_proj.register_forward_hook(on_gate(i)),
        ]
    # One batch at a time (only one batch's logits are held): the full pass feeds the hooks,
    # then each layer alone is replaced by the identity. num/den are summed over batches so
    # the layer score is the global ratio sum((M_full - M_-j)^2) / sum(M_full^2).
    num = torch.zeros(L, dtype=torch.float64)
    den = 0.0
    tokens = 0
    try:
        for kw in batches:
            ids = kw.get("input_ids")
            shape = tuple(ids.shape[:2]) if ids is not None else tuple(kw["inputs_embeds"].shape[:2])
            mask = _token_mask(kw, shape)
            state["mask"], state["on"] = mask, True
            tokens += int(mask.sum())
            logits = _forward_logits(model, kw)
            state["on"] = False
            full = logits[mask.to(logits.device)]
            d = float(full.double().pow(2).sum())
            den += d
            for j in range(L):
                original = parts.layers[j]
                parts.layers[j] = _SkippedLayer(j)
                try:
                    abl = _forward_logits(model, kw)[mask.to(logits.device)]
                finally:
                    parts.layers[j] = original
                num[j] += layer_removal_importance(full, abl) * d
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    layers = (num / max(den, 1e-30)).float()
    return QwenImportance(channel.cpu(), [h.cpu() for h in heads], [f.cpu() for f in ffn], layers, tokens)


# ----------------------------------------------------------------------------------------------
# Permutation (function-preserving for the full model)
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _reorder(t: torch.Tensor, idx: torch.Tensor, dim: int) -> None:
    """In place: t = t.index_select(dim, idx), keeping t's storage (so tied weights and views
    stay tied)."""
    t.copy_(t.index_select(dim, idx.to(t.device)))


def head_order(head_scores: torch.Tensor, num_kv_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GQA-aware order. Returns ``(kv_order, q_order)``: KV groups by summed query-head score
    (descending), and query heads group by group in that order, each group's heads sorted by
    their own score. ``q_order[g*G:(g+1)*G]`` are the heads of KV group ``kv_order[g]``."""
    H = head_scores.numel()
    G = H // num_kv_heads
    per_group = head_scores.reshape(num_kv_heads, G)
    kv_order = ranking(per_group.sum(1))
    q_order = torch.cat([g * G + ranking(per_group[g]) for g in kv_order.tolist()])
    return kv_order, q_order


def _expand_heads(order: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (order[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


@torch.no_grad()
def permute_by_importance(model: nn.Module, imp: QwenImportance) -> dict[str, Any]:
    """Reorder hidden channels, heads and FFN neurons so each prefix is the most important one.
    In place; the full model's function is unchanged. Returns the orders used."""
    parts = find_parts(model)
    hd, n_kv = parts.head_dim, parts.num_kv_heads
    ch = ranking(imp.channel)
    seen: set[int] = set()

    def cols(p: torch.Tensor | None):
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            _reorder(p, ch, 1)

    def rows(p: torch.Tensor | None, idx: torch.Tensor = ch):
        if p is not None:
            _reorder(p, idx, 0)

    tm = parts.text_model
    cols(tm.embed_tokens.weight)
    cols(parts.lm_head.weight)  # skipped if tied to embed_tokens (same Parameter)
    rows(tm.norm.weight)
    if parts.merger_out is not None:
        rows(parts.merger_out.weight)
        rows(parts.merger_out.bias)
    orders: dict[str, Any] = {"channel": ch, "kv": [], "q": [], "ffn": []}
    for i, layer in enumerate(parts.layers):
        attn, mlp = layer.self_attn, layer.mlp
        rows(layer.input_layernorm.weight)
        rows(layer.post_attention_layernorm.weight)
        kv_order, q_order = head_order(imp.heads[i], n_kv)
        q_idx, kv_idx = _expand_heads(q_order, hd), _expand_heads(kv_order, hd)
        for proj, idx in ((attn.q_proj, q_idx), (attn.k_proj, kv_idx), (attn.v_proj, kv_idx)):
            _reorder(proj.weight, idx, 0)
            _reorder(proj.weight, ch, 1)
            if proj.bias is not None:
                _reorder(proj.bias, idx, 0)
        _reorder(attn.o_proj.weight, q_idx, 1)
        _reorder(attn.o_proj.weight, ch, 0)
        if attn.o_proj.bias is not None:
            _reorder(attn.o_proj.bias, ch, 0)
        f_order = ranking(imp.ffn[i])
        for proj in (mlp.gate_proj, mlp.up_proj):
            _reorder(proj.weight, f_order, 0)
            _reorder(proj.weight, ch, 1)
            if proj.bias is not None:
                _reorder(proj.bias, f_order, 0)
        _reorder(mlp.down_proj.weight, f_order, 1)
        _reorder(mlp.down_proj.weight, ch, 0)
        if mlp.down_proj.bias is not None:
            _reorder(mlp.down_proj.bias, ch, 0)
        orders["kv"].append(kv_order)
        orders["q"].append(q_order)
        orders["ffn"].append(f_order)
    return orders


# ----------------------------------------------------------------------------------------------
# Slicing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QwenSubmodelDims:
    hidden: int
    kv_heads: int
    q_heads: int
    ffn: int
    layers: tuple[int, ...]  #: indices of the kept decoder layers, in model order


class ElasticQwen:
    """A Qwen2 / Qwen2.5-VL model whose decoder can switch between nested submodels.

    Build with ``ElasticQwen.calibrate(model, batches)`` (ranks, permutes in place) or, for a
    model permuted earlier, ``ElasticQwen(model, layer_scores)``. ``apply(name_or_spec)``
    switches in place; ``apply("full")`` restores the parent exactly.
    """

    def __init__(self, model: nn.Module, layer_scores: torch.Tensor | None = None,
                 specs: Mapping[str, SubmodelSpec] | None = None, hidden_multiple: int | None = None,
                 ffn_multiple: int = 8, importance: QwenImportance | None = None):
        self.parts = find_parts(model)
        self.model = model
        self.specs: dict[str, SubmodelSpec] = dict(specs or NAMED_SUBMODELS)
        if "full" not in self.specs:
            self.specs = {"full": SubmodelSpec("full"), **self.specs}
        L = len(self.parts.layers)
        self.layer_scores = (torch.arange(L, 0, -1, dtype=torch.float32) if layer_scores is None
                             else torch.as_tensor(layer_scores, dtype=torch.float32))
        if self.layer_scores.numel() != L:
            raise ValueError(f"layer_scores has {self.layer_scores.numel()} entries, model has {L} layers")
        self.hidden_multiple = int(hidden_multiple or self.parts.head_dim)
        self.ffn_multiple = int(ffn_multiple)
        self.importance = importance
        self._layers = list(self.parts.layers)  # the parent's layer modules
        self._parent = self._collect_parent()
        self._active = "full"

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def calibrate(cls, model: nn.Module, batches: Iterable[Any], **kwargs) -> "ElasticQwen":
        """Rank on ``batches``, permute ``model`` in place, return the elastic wrapper."""
        imp = collect_importance(model, batches)
        permute_by_importance(model, imp)
        return cls(model, imp.layers, importance=imp, **kwargs)

    def _collect_parent(self) -> dict[tuple[int, str], tuple[nn.Module, str, nn.Parameter]]:
        """Every Parameter the slicing replaces, keyed by (id(module), attr)."""
        parent = {}

        def add(mod: nn.Module | None, *attrs: str):
            if mod is None:
                return
            for a in attrs:
                p = getattr(mod, a, None)
                if isinstance(p, nn.Parameter):
                    parent[(id(mod), a)] = (mod, a, p)

        p = self.parts
        add(p.text_model.embed_tokens, "weight")
        add(p.lm_head, "weight")
        add(p.text_model.norm, "weight")
        add(p.merger_out, "weight", "bias")
        for layer in self._layers:
            add(layer.input_layernorm, "weight")
            add(layer.post_attention_layernorm, "weight")
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                         layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                add(proj, "weight", "bias")
        return parent

    # -- specs --------------------------------------------------------------------------------

    @property
    def submodel_names(self) -> list[str]:
        return list(self.specs)

    @property
    def active(self) -> str:
        return self._active

    def spec(self, name_or_spec: str | SubmodelSpec) -> SubmodelSpec:
        if isinstance(name_or_spec, SubmodelSpec):
            return name_or_spec
        if name_or_spec not in self.specs:
            raise ValueError(f"unknown submodel {name_or_spec!r}; allowed: {list(self.specs)}")
        return self.specs[name_or_spec]

    def dims(self, name_or_spec: str | SubmodelSpec) -> QwenSubmodelDims:
        """Whole units of a spec, by ``submodels.resolve`` (heads in whole KV groups)."""
        s = self.spec(name_or_spec)
        p = self.parts
        L = len(self._layers)
        shape = resolve(s, hidden=p.hidden_size, heads=p.num_heads, head_dim=p.head_dim,
                        ffn=self._layers[0].mlp.gate_proj.out_features, layers=L,
                        kv_heads=p.num_kv_heads, hidden_multiple=self.hidden_multiple,
                        ffn_multiple=self.ffn_multiple)
        order = ranking(self.layer_scores).tolist()
        order = [0] + [j for j in order if j != 0]  # layer 0 always kept (see module doc)
        kept = tuple(sorted(order[:shape.layers]))
        return QwenSubmodelDims(hidden=shape.hidden, kv_heads=shape.kv_heads, q_heads=shape.heads,
                                ffn=shape.ffn, layers=kept)

    # -- switching ----------------------------------------------------------------------------

    def _set(self, mod: nn.Module | None, attr: str, index: tuple[slice, ...] | None) -> None:
        if mod is None:
            return
        entry = self._parent.get((id(mod), attr))
        if entry is None:
            return
        _, _, full = entry
        if index is None:
            setattr(mod, attr, full)
        else:
            setattr(mod, attr, nn.Parameter(full.detach()[index], requires_grad=False))

    @torch.no_grad()
    def apply(self, name_or_spec: str | SubmodelSpec) -> QwenSubmodelDims:
        """Switch the model to a submodel in place (views of the parent; nothing is copied)."""
        spec = self.spec(name_or_spec)
        d = self.dims(spec)
        p = self.parts
        full = d == self.dims("full")
        S = slice
        hd = p.head_dim
        nq, nkv, D, F = d.q_heads * hd, d.kv_heads * hd, d.hidden, d.ffn
        ix = (lambda *s: None) if full else (lambda *s: s)
        self._set(p.text_model.embed_tokens, "weight", ix(S(None), S(0, D)))
        self._set(p.lm_head, "weight", ix(S(None), S(0, D)))
        self._set(p.text_model.norm, "weight", ix(S(0, D)))
        self._set(p.merger_out, "weight", ix(S(0, D), S(None)))
        self._set(p.merger_out, "bias", ix(S(0, D)))
        for j, layer in enumerate(self._layers):
            a, m = layer.self_attn, layer.mlp
            self._set(layer.input_layernorm, "weight", ix(S(0, D)))
            self._set(layer.post_attention_layernorm, "weight", ix(S(0, D)))
            self._set(a.q_proj, "weight", ix(S(0, nq), S(0, D)))
            self._set(a.q_proj, "bias", ix(S(0, nq)))
            for proj in (a.k_proj, a.v_proj):
                self._set(proj, "weight", ix(S(0, nkv), S(0, D)))
                self._set(proj, "bias", ix(S(0, nkv)))
            self._set(a.o_proj, "weight", ix(S(0, D), S(0, nq)))
            self._set(a.o_proj, "bias", ix(S(0, D)))
            for proj in (m.gate_proj, m.up_proj):
                self._set(proj, "weight", ix(S(0, F), S(0, D)))
                self._set(proj, "bias", ix(S(0, F)))
            self._set(m.down_proj, "weight", ix(S(0, D), S(0, F)))
            self._set(m.down_proj, "bias", ix(S(0, D)))
            if hasattr(a, "num_heads"):
                a.num_heads = d.q_heads
            if hasattr(a, "num_key_value_heads"):
                a.num_key_value_heads = d.kv_heads
            p.layers[j] = layer if j in d.layers else _SkippedLayer(j)
        self._active = spec.name
        return d

    def active_tensors(self) -> dict[str, torch.Tensor]:
        """The decoder tensors the active submodel computes with (skipped layers excluded)."""
        out: dict[str, torch.Tensor] = {}
        for name, mod in (("embed_tokens", self.parts.text_model.embed_tokens),
                          ("lm_head", self.parts.lm_head), ("norm", self.parts.text_model.norm)):
            out[f"{name}.weight"] = mod.weight
        for j, layer in enumerate(self.parts.layers):
            if isinstance(layer, _SkippedLayer):
                continue
            for n, t in layer.named_parameters():
                out[f"layers.{j}.{n}"] = t
        return out

    def param_count(self, name_or_spec: str | SubmodelSpec | None = None) -> int:
        """Parameters of the text decoder (embeddings, lm_head, kept layers) of a submodel
        (default: the active one). Tied embeddings count once."""
        prev = self._active
        if name_or_spec is not None:
            self.apply(name_or_spec)
        try:
            seen, total = set(), 0
            for t in self.active_tensors().values():
                key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
                if key not in seen:  # a tied lm_head is the embedding: count it once
                    seen.add(key)
                    total += t.numel()
            return total
        finally:
            if name_or_spec is not None:
                self.apply(prev)

    def parent_storages(self) -> list[tuple[int, int]]:
        """(start, end) byte ranges of the parent tensors, for the no-copy check."""
        out = []
        for _, _, full in self._parent.values():
            start = full.untyped_storage().data_ptr()
            out.append((start, start + full.untyped_storage().nbytes()))
        return out


# ----------------------------------------------------------------------------------------------
# Quality report
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def submodel_kl(elastic: ElasticQwen, batches: Iterable[Any],
                names: Iterable[str | SubmodelSpec] | None = None) -> dict[str, float]:
    """Mean per-token KL(full || submodel) of the next-token distributions on ``batches``
    (padding excluded), for each named submodel. Leaves the active submodel as it was.
    On random weights this is a smoke signal only."""
    batches = [_as_kwargs(b) for b in batches]
    specs = [elastic.spec(n) for n in (names if names is not None else elastic.submodel_names)]
    prev = elastic.active
    model = elastic.model
    was_training = model.training
    model.eval()
    try:
        elastic.apply("full")
        full_logp = []
        masks = []
        for kw in batches:
            ids = kw.get("input_ids")
            shape = tuple(ids.shape[:2]) if ids is not None else tuple(kw["inputs_embeds"].shape[:2])
            m = _token_mask(kw, shape)
            lg = _forward_logits(model, kw)
            masks.append(m)
            full_logp.append(torch.log_softmax(lg[m.to(lg.device)].double(), -1))
        result = {}
        for spec in specs:
            elastic.apply(spec)
            total, count = 0.0, 0
            for kw, m, lp_full in zip(batches, masks, full_logp):
                lg = _forward_logits(model, kw)
                lp_sub = torch.log_softmax(lg[m.to(lg.device)].double(), -1)
                kl = (lp_full.exp() * (lp_full - lp_sub)).sum(-1)
                total += float(kl.sum())
                count += kl.numel()
            result[spec.name] = max(0.0, total / max(count, 1))
        return result
    finally:
        elastic.apply(prev)
        model.train(was_training)


__all__ = [
    "QwenParts", "find_parts", "QwenImportance", "collect_importance", "head_order",
    "permute_by_importance", "QwenSubmodelDims", "ElasticQwen", "submodel_kl",
]
