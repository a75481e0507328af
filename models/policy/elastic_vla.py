"""ElasticVLA: the embedded MiMo-style vision-language-action policy (DESIGN §4, §5).

Architecture (all written here, no external model code):

* vision encoder: conv patchify (RGB + optional depth channel; ``vision_stem``: one linear patch
  convolution, or two 3x3 stride-2 convolutions before it) -> learned position embedding ->
  ``vision_depth`` pre-norm transformer blocks -> RMSNorm;
* MLP projector: Linear -> GELU -> Linear into the decoder width;
* decoder-only transformer (RMSNorm, SwiGLU, rotary attention through
  ``F.scaled_dot_product_attention``) over ``[image tokens, instruction tokens,
  embodiment+proprio token, action query tokens]``;
* an action head mapping every action query token to ``action_bins`` logits.

All ``chunk_length * max_action_dim`` action tokens of a chunk come out of ONE forward pass
(parallel decoding, OpenVLA-OFT style). Because nothing is generated autoregressively, the
decoder attends bidirectionally over the fixed-length sequence (instructions are padded with a
learned ``<pad>`` embedding to a fixed length), so every shape is static: good for ONNX, TensorRT
and CUDA graphs. Token ``t * A + a`` is action dimension ``a`` of chunk step ``t``; dimensions an
embodiment does not use (a vehicle's 3rd) are masked out of ``log_probs``/``entropy``.

Elastic submodels: every decoder weight is read through a prefix slice of its parent parameter
(``weight[:out_active, :in_active]``), a view with no copy. ``set_submodel`` only changes the
active sizes and rebuilds the (no-grad) view cache; skipped layers are identity residuals.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..elastic.submodels import NAMED_SUBMODELS, SubmodelShape, SubmodelSpec, resolve
from .elastic_vla_config import ElasticVLAConfig
from .interface import Action, Observation, Policy
from .tokenizer import InstructionTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
BATCH_KEYS = ("pixels", "tokens", "proprio", "embodiment")


# --------------------------------------------------------------------------------------------
# Elastic building blocks
# --------------------------------------------------------------------------------------------


class ElasticLinear(nn.Module):
    """A linear layer whose active part is the prefix ``weight[:out_active, :in_active]``.

    Under ``torch.no_grad``/``inference_mode`` it uses a cached view (built once per switch);
    with grad enabled it slices afresh every call so autograd sees a fresh graph. Either way the
    weight is a view of the parent parameter: no copy is made.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.in_active, self.out_active = in_features, out_features
        self.use_view_cache = True
        # (out_active, in_active) -> (weight view, bias view): views of the parameters, no copies
        self._views: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._w: torch.Tensor | None = None
        self._b: torch.Tensor | None = None
        nn.init.normal_(self.weight, std=0.02)
        self.refresh_views()

    def set_active(self, out_active: int, in_active: int) -> None:
        if not (0 < out_active <= self.out_features and 0 < in_active <= self.in_features):
            raise ValueError(
                f"active size ({out_active}, {in_active}) outside parent ({self.out_features}, {self.in_features})"
            )
        views = self._views.get((out_active, in_active))
        if views is None:
            with torch.no_grad():
                w = self.weight[:out_active, :in_active]
                b = None if self.bias is None else self.bias[:out_active]
            views = self._views[(out_active, in_active)] = (w, b)
        # plain __dict__ writes: nn.Module.__setattr__ costs ~5 us a call, switching must be fast
        d = self.__dict__
        d["out_active"], d["in_active"] = out_active, in_active
        d["_w"], d["_b"] = views

    def active_weight(self) -> torch.Tensor:
        return self.weight[: self.out_active, : self.in_active]

    def active_bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias[: self.out_active]

    def refresh_views(self) -> None:
        """Drop the cached views (the parameters were replaced) and rebuild the active one."""
        self.__dict__["_views"] = {}
        self.set_active(self.out_active, self.in_active)

    def active_params(self) -> int:
        return self.out_active * self.in_active + (self.out_active if self.bias is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_view_cache and not torch.is_grad_enabled():
            return F.linear(x, self._w, self._b)
        return F.linear(x, self.active_weight(), self.active_bias())

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half() replace the parameters
        out = super()._apply(fn, recurse)
        self.refresh_views()
        return out

    def _load_from_state_dict(self, *args, **kwargs):  # load_state_dict(assign=True) too
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh_views()

    # deepcopy/pickle: cached views would be copied as independent tensors (breaking the
    # aliasing); drop them and rebuild them on the copy's own parameters.
    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_views", "_w", "_b"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.refresh_views()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, active=({self.out_active}, {self.in_active})"


class RMSNorm(nn.Module):
    """RMSNorm over the active prefix of the channels; the weight is sliced too."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps, self.active = dim, eps, dim
        self.weight = nn.Parameter(torch.ones(dim))
        self.use_view_cache = True
        self._views: dict[int, torch.Tensor] = {}
        self._w: torch.Tensor | None = None
        self.refresh_views()

    def set_active(self, active: int) -> None:
        if not 0 < active <= self.dim:
            raise ValueError(f"active width {active} outside (0, {self.dim}]")
        w = self._views.get(active)
        if w is None:
            with torch.no_grad():
                w = self._views[active] = self.weight[:active]
        d = self.__dict__
        d["active"], d["_w"] = active, w

    def refresh_views(self) -> None:
        self.__dict__["_views"] = {}
        self.set_active(self.active)

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_views", "_w"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.refresh_views()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._w if (self.use_view_cache and not torch.is_grad_enabled()) else self.weight[: self.active]
        return F.rms_norm(x, (self.active,), w, self.eps)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.refresh_views()
        return out

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh_views()


def rotary_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (seq_len, head_dim) for rotate-half rotary embeddings."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Block(nn.Module):
    """Pre-norm transformer block: RMSNorm -> rotary MHA -> RMSNorm -> SwiGLU, both residual."""

    def __init__(self, dim: int, heads: int, ffn: int, eps: float):
        super().__init__()
        self.head_dim = dim // heads
        self.attn_norm = RMSNorm(dim, eps)
        self.q_proj = ElasticLinear(dim, heads * self.head_dim)
        self.k_proj = ElasticLinear(dim, heads * self.head_dim)
        self.v_proj = ElasticLinear(dim, heads * self.head_dim)
        self.o_proj = ElasticLinear(heads * self.head_dim, dim)
        self.mlp_norm = RMSNorm(dim, eps)
        self.gate_proj = ElasticLinear(dim, ffn)
        self.up_proj = ElasticLinear(dim, ffn)
        self.down_proj = ElasticLinear(ffn, dim)

    def set_active(self, hidden: int, heads: int, ffn: int) -> None:
        attn = heads * self.head_dim
        self.attn_norm.set_active(hidden)
        self.mlp_norm.set_active(hidden)
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            lin.set_active(attn, hidden)
        self.o_proj.set_active(hidden, attn)
        self.gate_proj.set_active(ffn, hidden)
        self.up_proj.set_active(ffn, hidden)
        self.down_proj.set_active(hidden, ffn)

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None) -> torch.Tensor:
        b, s, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, s, -1, self.head_dim).transpose(1, 2)
        if cos is not None:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, s, -1))
        h = self.mlp_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class ElasticVLA(Policy, nn.Module):
    """The embedded default policy; see the module docstring."""

    def __init__(self, config: ElasticVLAConfig | None = None, tokenizer: InstructionTokenizer | None = None):
        nn.Module.__init__(self)
        self.config = config = config or ElasticVLAConfig()
        self.tokenizer = tokenizer or InstructionTokenizer.default()
        if len(self.tokenizer) > config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(self.tokenizer)} words but config.vocab_size={config.vocab_size}; "
                "raise vocab_size"
            )
        c = config
        d = c.hidden_size
        # vision encoder (not elastic)
        if c.vision_stem == "conv":
            k = c.patch_size // 4
            self.patch_embed = nn.Sequential(
                nn.Conv2d(c.in_channels, 32, 3, stride=2, padding=1), nn.GELU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
                nn.Conv2d(64, c.vision_width, k, stride=k))
        else:
            self.patch_embed = nn.Conv2d(c.in_channels, c.vision_width, c.patch_size, stride=c.patch_size)
        self.vision_pos = nn.Parameter(torch.randn(c.num_image_tokens, c.vision_width) * 0.02)
        self.vision_blocks = nn.ModuleList(
            Block(c.vision_width, c.vision_heads, 2 * c.vision_width, c.norm_eps) for _ in range(c.vision_depth)
        )
        self.vision_norm = RMSNorm(c.vision_width, c.norm_eps)
        # projector: its output width is the (elastic) decoder width
        self.proj_in = nn.Linear(c.vision_width, d)
        self.proj_out = ElasticLinear(d, d, bias=True)
        # token embeddings: instruction words, embodiment + proprio, action queries
        self.tok_embed = nn.Parameter(torch.randn(c.vocab_size, d) * 0.02)
        self.embodiment_embed = nn.Parameter(torch.randn(len(c.embodiments), d) * 0.02)
        self.proprio_proj = ElasticLinear(c.proprio_dim, d, bias=True)
        self.action_queries = nn.Parameter(torch.randn(c.num_action_tokens, d) * 0.02)
        # decoder
        self.layers = nn.ModuleList(Block(d, c.num_heads, c.ffn_size, c.norm_eps) for _ in range(c.num_layers))
        self.final_norm = RMSNorm(d, c.norm_eps)
        self.action_head = ElasticLinear(d, c.action_bins, bias=True)
        # Training scaffold: reads the pooled action-query states (never used to act).
        self.aux_head = ElasticLinear(d, c.aux_dim, bias=True) if c.aux_dim else None
        # Training scaffold: one logit per image token, "the target is here".
        self.point_head = ElasticLinear(d, 1, bias=True) if c.point_head else None
        # Layer importance order written by calibrate_and_permute (most important first); a
        # submodel with k layers runs layer_rank[:k] in their original order.
        self.register_buffer("layer_rank", torch.arange(c.num_layers, dtype=torch.int64))
        scale = 0.02 / math.sqrt(2 * max(1, c.num_layers))
        for blk in list(self.layers) + list(self.vision_blocks):
            for lin in (blk.o_proj, blk.down_proj):
                nn.init.normal_(lin.weight, std=scale)
                lin.refresh_views()
        cos, sin = rotary_tables(c.seq_len, c.head_dim, c.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # action bins: uniform over [-1, 1], token value = bin centre
        self.register_buffer("bin_centres", self._bin_centres(c.action_bins), persistent=False)
        mask = torch.zeros(len(c.embodiments), c.num_action_tokens, dtype=torch.bool)
        for i, name in enumerate(c.embodiment_names):
            mask[i] = (torch.arange(c.max_action_dim) < c.embodiments[name]).repeat(c.chunk_length)
        self.register_buffer("embodiment_action_mask", mask, persistent=False)
        self._embodiment_index = {n: i for i, n in enumerate(c.embodiment_names)}
        # Proprio entries each embodiment must not read (config.proprio_inputs), built once:
        # _fill runs on every control tick.
        self._proprio_dropped = {}
        for name, keep in c.proprio_inputs.items():
            dropped = np.ones(c.proprio_dim, bool)
            dropped[list(keep)] = False
            self._proprio_dropped[name] = dropped
        self.submodel_names = list(NAMED_SUBMODELS)
        self._submodel_name = "full"
        self._shape: SubmodelShape | None = None
        self._active_layers: list[int] = list(range(c.num_layers))
        self._active_hidden = d
        self._plans: dict[str, tuple] = {}
        self._runtime = None
        self._single: dict | None = None
        self._token_cache: dict[str, np.ndarray] = {}
        self._resize_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.eval()
        self.set_submodel("full")

    @staticmethod
    def _bin_centres(bins: int) -> torch.Tensor:
        return ((torch.arange(bins, dtype=torch.float64) + 0.5) / bins * 2.0 - 1.0).float()

    # ---------------------------------------------------------------------- elastic switching
    def elastic_dims(self) -> dict[str, int]:
        c = self.config
        return dict(hidden=c.hidden_size, heads=c.num_heads, head_dim=c.head_dim, ffn=c.ffn_size, layers=c.num_layers)

    def resolve_submodel(self, name_or_spec: str | SubmodelSpec) -> SubmodelShape:
        if isinstance(name_or_spec, SubmodelSpec):
            spec = name_or_spec
        elif name_or_spec in NAMED_SUBMODELS:
            spec = NAMED_SUBMODELS[name_or_spec]
        else:
            raise ValueError(f"unknown submodel {name_or_spec!r}; allowed: {self.submodel_names} or a SubmodelSpec")
        return resolve(spec, **self.elastic_dims())

    @property
    def submodel(self) -> str:
        return self._submodel_name

    @property
    def submodel_shape(self) -> SubmodelShape:
        return self._shape

    def set_submodel(self, name_or_spec: str | SubmodelSpec) -> None:
        """Switch the active submodel: only slice sizes change; no weight is copied.

        Views are built once per submodel and kept (a view is metadata only, it holds no weight
        memory), so a later switch is a few dozen dictionary writes (~0.1 ms)."""
        plan = self._plans.get(name_or_spec) if isinstance(name_or_spec, str) else None
        if plan is None:
            shape = self.resolve_submodel(name_or_spec)
            h = shape.hidden
            with torch.no_grad():
                views = (self.tok_embed[:, :h], self.embodiment_embed[:, :h], self.action_queries[:, :h])
            layers = sorted(self.layer_rank.tolist()[: shape.layers])
            plan = (shape, views, layers)
            if isinstance(name_or_spec, str):
                self._plans[name_or_spec] = plan
        shape, views, layers = plan
        h, c = shape.hidden, self.config
        self.proj_out.set_active(h, c.hidden_size)
        self.proprio_proj.set_active(h, c.proprio_dim)
        for layer in self.layers:
            layer.set_active(h, shape.heads, shape.ffn)
        self.final_norm.set_active(h)
        self.action_head.set_active(c.action_bins, h)
        if self.aux_head is not None:
            self.aux_head.set_active(c.aux_dim, h)
        if self.point_head is not None:
            self.point_head.set_active(1, h)
        d = self.__dict__
        d["_tok_view"], d["_emb_view"], d["_query_view"] = views
        d["_active_layers"], d["_active_hidden"] = layers, h
        d["_shape"], d["_submodel_name"] = shape, shape.name

    def refresh_views(self) -> None:
        """Drop and rebuild every cached view (after weights were replaced, moved or permuted,
        or layer_rank changed)."""
        self.__dict__["_plans"] = {}
        for m in self.modules():
            if isinstance(m, (ElasticLinear, RMSNorm)):
                m.refresh_views()
        self.set_submodel(self._shape.spec if self._shape is not None else "full")

    def set_view_cache(self, enabled: bool) -> None:
        """Turn the no-grad view cache off (export/tracing) or on."""
        self._use_cache = enabled
        for m in self.modules():
            if isinstance(m, (ElasticLinear, RMSNorm)):
                m.use_view_cache = enabled

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if getattr(self, "_shape", None) is not None:
            self.refresh_views()
        return out

    _TRANSIENT = ("_plans", "_tok_view", "_emb_view", "_query_view", "_single", "_runtime")

    def __getstate__(self):
        """deepcopy/pickle: views, preallocated buffers and the runtime are not copied; the copy
        rebuilds its views on its own parameters (and runs eagerly until given a runtime)."""
        state = self.__dict__.copy()
        for name in self._TRANSIENT:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        d = self.__dict__
        d["_plans"], d["_single"], d["_runtime"] = {}, None, None
        self.set_submodel(self._shape.spec)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.refresh_views()  # layer_rank may have changed; assign=True replaces parameters
        return result

    def active_parameter_count(self, decoder_only: bool = False) -> int:
        """Parameters the active submodel reads (vision encoder and embeddings included unless
        ``decoder_only``)."""
        h = self._active_hidden
        dec = sum(
            sum(m.active_params() for m in blk.modules() if isinstance(m, ElasticLinear)) + 2 * h
            for i, blk in enumerate(self.layers)
            if i in self._active_layers
        )
        if decoder_only:
            return dec
        fixed = sum(p.numel() for p in self.patch_embed.parameters()) + self.vision_pos.numel()
        fixed += sum(p.numel() for p in self.vision_blocks.parameters()) + self.vision_norm.weight.numel()
        fixed += sum(p.numel() for p in self.proj_in.parameters())
        c = self.config
        other = self.proj_out.active_params() + self.proprio_proj.active_params() + self.action_head.active_params()
        other += (c.vocab_size + len(c.embodiments) + c.num_action_tokens + 1) * h  # +1: final norm
        return dec + fixed + other

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------------- forward
    def forward(
        self, pixels: torch.Tensor, tokens: torch.Tensor, proprio: torch.Tensor, embodiment: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, T*A, bins) for a batch (see :meth:`obs_to_batch` for the input layout)."""
        return self.action_head(self._action_states(pixels, tokens, proprio, embodiment))

    def _action_states(self, pixels, tokens, proprio, embodiment) -> torch.Tensor:
        """Final-norm decoder states of the action query tokens (B, T*A, active hidden)."""
        x = self._decode(pixels, tokens, proprio, embodiment)
        return self.final_norm(x[:, -self.config.num_action_tokens:])

    def _decode(self, pixels, tokens, proprio, embodiment) -> torch.Tensor:
        """Decoder output of every token before the final norm (B, sequence, active hidden);
        acting normalises only the action queries' rows."""
        cached = not torch.is_grad_enabled() and getattr(self, "_use_cache", True)
        h = self._active_hidden
        tok_w = self._tok_view if cached else self.tok_embed[:, :h]
        emb_w = self._emb_view if cached else self.embodiment_embed[:, :h]
        queries = self._query_view if cached else self.action_queries[:, :h]
        b = pixels.shape[0]
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2) + self.vision_pos
        for blk in self.vision_blocks:
            x = blk(x, None, None)
        img = self.proj_out(F.gelu(self.proj_in(self.vision_norm(x))))
        words = F.embedding(tokens, tok_w)
        state = (F.embedding(embodiment, emb_w) + self.proprio_proj(proprio)).unsqueeze(1)
        x = torch.cat([img, words, state, queries.unsqueeze(0).expand(b, -1, -1)], dim=1)
        cos, sin = self.rope_cos, self.rope_sin
        for i in self._active_layers:
            x = self.layers[i](x, cos, sin)
        return x

    def forward_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward(*(batch[k] for k in BATCH_KEYS))

    def forward_with_aux(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, auxiliary outputs (B, aux_dim)) for training; needs ``aux_dim`` > 0."""
        logits, aux, _ = self.forward_scaffold(batch)
        if aux is None:
            raise ValueError("this model has no auxiliary head (config.aux_dim = 0)")
        return logits, aux

    def forward_scaffold(self, batch: dict[str, torch.Tensor]):
        """Training outputs: (action logits, auxiliary outputs (B, aux_dim) or None, pointing
        logits over the image tokens (B, num_image_tokens) or None)."""
        x = self._decode(*(batch[k] for k in BATCH_KEYS))
        q = self.final_norm(x[:, -self.config.num_action_tokens:])
        aux = self.aux_head(q.mean(dim=1)) if self.aux_head is not None else None
        point = None
        if self.point_head is not None:
            img = self.final_norm(x[:, : self.config.num_image_tokens])
            point = self.point_head(img).squeeze(-1)
        return self.action_head(q), aux, point

    # ---------------------------------------------------------------------- observations -> tensors
    def _resize_index(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        key = (h, w)
        if key not in self._resize_cache:
            s = self.config.image_size
            rows = np.minimum((np.arange(s) * h / s + h / (2 * s)).astype(np.int64), h - 1)
            cols = np.minimum((np.arange(s) * w / s + w / (2 * s)).astype(np.int64), w - 1)
            self._resize_cache[key] = (rows, cols)
        return self._resize_cache[key]

    def _encode_instruction(self, text: str) -> np.ndarray:
        ids = self._token_cache.get(text)
        if ids is None:
            ids = np.asarray(self.tokenizer.encode(text, self.config.max_instruction_tokens), dtype=np.int64)
            if len(self._token_cache) > 1024:
                self._token_cache.clear()
            self._token_cache[text] = ids
        return ids

    def _fill(self, obs: Observation, pixels: np.ndarray, tokens: np.ndarray, proprio: np.ndarray) -> int:
        """Write one observation into preallocated rows; return its embodiment index."""
        c = self.config
        rgb = obs.rgb
        if rgb.shape[0] != c.image_size or rgb.shape[1] != c.image_size:
            rows, cols = self._resize_index(rgb.shape[0], rgb.shape[1])
            rgb = rgb[rows][:, cols]
        np.multiply(rgb.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=pixels[:3], casting="unsafe")
        if c.use_depth:
            depth = obs.depth
            if depth is None:
                pixels[3] = 0.0
            else:
                depth = np.asarray(depth, dtype=np.float32)
                if depth.ndim == 3:
                    depth = depth[..., 0]
                if depth.shape[0] != c.image_size or depth.shape[1] != c.image_size:
                    rows, cols = self._resize_index(depth.shape[0], depth.shape[1])
                    depth = depth[rows][:, cols]
                valid = depth > 0.0  # 0 and NaN: no return; +inf: beyond range (clipped)
                if c.depth_encoding == "log":
                    np.clip(depth, c.depth_min_m, c.depth_max_m, out=pixels[3])
                    np.log(pixels[3], out=pixels[3])
                    pixels[3] -= np.float32(np.log(c.depth_min_m))
                    pixels[3] *= np.float32(1.0 / np.log(c.depth_max_m / c.depth_min_m))
                else:
                    np.clip(depth, 0.0, c.depth_max_m, out=pixels[3])
                    pixels[3] *= np.float32(1.0 / c.depth_max_m)
                pixels[3][~valid] = 0.0
        tokens[:] = self._encode_instruction(obs.instruction)
        p = np.asarray(obs.proprio, dtype=np.float32).reshape(-1)[: c.proprio_dim]
        proprio[: p.shape[0]] = p
        proprio[p.shape[0] :] = 0.0
        if obs.embodiment not in self._embodiment_index:
            raise ValueError(f"embodiment {obs.embodiment!r} not served by this model ({c.embodiment_names})")
        dropped = self._proprio_dropped.get(obs.embodiment)
        if dropped is not None:
            proprio[dropped] = 0.0
        return self._embodiment_index[obs.embodiment]

    def obs_to_batch(self, observations: Sequence[Observation], device: str | torch.device | None = None) -> dict:
        """Stack Observations into the model's input tensors.

        Returns ``pixels`` (B, C, S, S) float32 in [0, 1] (RGB, then encoded depth, see
        ``ElasticVLAConfig.depth_encoding``),
        ``tokens`` (B, L) int64, ``proprio`` (B, P) float32, ``embodiment`` (B,) int64 and
        ``action_mask`` (B, T*A) bool (True for the action dims the embodiment uses).
        """
        c = self.config
        n = len(observations)
        pixels = np.empty((n, c.in_channels, c.image_size, c.image_size), np.float32)
        tokens = np.empty((n, c.max_instruction_tokens), np.int64)
        proprio = np.empty((n, c.proprio_dim), np.float32)
        emb = np.empty((n,), np.int64)
        for i, obs in enumerate(observations):
            emb[i] = self._fill(obs, pixels[i], tokens[i], proprio[i])
        batch = {
            "pixels": torch.from_numpy(pixels),
            "tokens": torch.from_numpy(tokens),
            "proprio": torch.from_numpy(proprio),
            "embodiment": torch.from_numpy(emb),
        }
        batch["action_mask"] = self.embodiment_action_mask.cpu()[batch["embodiment"]]
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        return batch

    # ---------------------------------------------------------------------- actions <-> tokens
    def actions_to_tokens(self, chunks: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, T, a<=A) actions in [-1, 1] -> (B, T*A) bin ids (unused dims get bin 0)."""
        c = self.config
        x = torch.as_tensor(np.asarray(chunks, dtype=np.float32) if not torch.is_tensor(chunks) else chunks)
        x = x.float()
        if x.dim() == 2:
            x = x.unsqueeze(0)
        b, t, a = x.shape
        if t != c.chunk_length or a > c.max_action_dim:
            raise ValueError(f"action chunk shape {tuple(x.shape)}; expected (B, {c.chunk_length}, <= {c.max_action_dim})")
        ids = ((x.clamp(-1.0, 1.0) + 1.0) * 0.5 * c.action_bins).long().clamp(0, c.action_bins - 1)
        out = torch.zeros(b, t, c.max_action_dim, dtype=torch.long)
        out[:, :, :a] = ids
        return out.reshape(b, t * c.max_action_dim)

    def tokens_to_actions(self, ids: torch.Tensor, action_dim: int) -> torch.Tensor:
        """(B, T*A) bin ids -> (B, T, action_dim) bin centres."""
        c = self.config
        vals = self.bin_centres.to(ids.device)[ids].reshape(ids.shape[0], c.chunk_length, c.max_action_dim)
        return vals[:, :, :action_dim]

    # ---------------------------------------------------------------------- training interface
    def _logits_for(self, batch: dict) -> torch.Tensor:
        return self.forward_batch(batch).float()

    def log_probs(self, batch: dict, action_tokens: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """log pi(token) per action token, (B, T*A); 0 where the embodiment does not use the dim.
        The log-probability of a chunk is the sum over its tokens."""
        logits = self._logits_for(batch) if logits is None else logits.float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, action_tokens.long().unsqueeze(-1)).squeeze(-1)
        return lp * self._mask(batch, lp)

    def entropy(self, batch: dict, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Entropy (nats) of each action token's distribution, (B, T*A); 0 on masked dims."""
        logits = self._logits_for(batch) if logits is None else logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        ent = -(logp.exp() * logp).sum(-1)
        return ent * self._mask(batch, ent)

    def _mask(self, batch: dict, like: torch.Tensor) -> torch.Tensor:
        mask = batch.get("action_mask")
        if mask is None:
            mask = self.embodiment_action_mask[batch["embodiment"].to(self.embodiment_action_mask.device)]
        return mask.to(like.device, like.dtype)

    # ---------------------------------------------------------------------- control interface
    def use_runtime(self, runtime) -> None:
        """Run select_action through a runtime (models.runtime.*); None = this module, eager."""
        self._runtime = runtime

    def _single_buffers(self) -> dict:
        if self._single is None:
            c = self.config
            pixels = np.zeros((1, c.in_channels, c.image_size, c.image_size), np.float32)
            tokens = np.zeros((1, c.max_instruction_tokens), np.int64)
            proprio = np.zeros((1, c.proprio_dim), np.float32)
            emb = np.zeros((1,), np.int64)
            self._single = {
                "np": (pixels, tokens, proprio, emb),
                "batch": {
                    "pixels": torch.from_numpy(pixels),
                    "tokens": torch.from_numpy(tokens),
                    "proprio": torch.from_numpy(proprio),
                    "embodiment": torch.from_numpy(emb),
                },
                "centres": self._bin_centres(c.action_bins).numpy(),
            }
        return self._single

    def select_action(self, observation: Observation) -> Action:
        t0 = time.perf_counter()
        buf = self._single_buffers()
        pixels, tokens, proprio, emb = buf["np"]
        emb[0] = self._fill(observation, pixels[0], tokens[0], proprio[0])
        with torch.inference_mode():
            if self._runtime is not None:
                logits = self._runtime.run(buf["batch"], self._submodel_name)
            else:
                logits = self.forward_batch(buf["batch"])
            ids = logits[0].argmax(-1)
        c = self.config
        chunk = buf["centres"][ids.cpu().numpy()].reshape(c.chunk_length, c.max_action_dim)
        chunk = chunk[:, : c.embodiments[observation.embodiment]].copy()
        return Action(
            chunk=chunk,
            stamp=observation.stamp,
            submodel=self._submodel_name,
            latency_s=time.perf_counter() - t0,
        )

    # ---------------------------------------------------------------------- files
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors and tokenizer.json (each written atomically)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.config.save(out / CONFIG_FILE)
        self.tokenizer.save(out / TOKENIZER_FILE)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = out / f".{WEIGHTS_FILE}.tmp{os.getpid()}"
        save_file(tensors, str(tmp), metadata={"format": "pt", "model_type": self.config.model_type})
        os.replace(tmp, out / WEIGHTS_FILE)
        return out

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu", submodel: str = "full"
    ) -> "ElasticVLA":
        """Load a saved model. Refuses (ValueError) a weights file that does not match the config:
        unreadable/corrupt file, missing or extra keys, wrong shapes or dtypes. Never unpickles."""
        from safetensors import SafetensorError, safe_open

        d = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{d}: missing {name} (expected {CONFIG_FILE}, {WEIGHTS_FILE}, {TOKENIZER_FILE})")
        config = ElasticVLAConfig.load(d / CONFIG_FILE)
        tokenizer = InstructionTokenizer.load(d / TOKENIZER_FILE)
        model = cls(config, tokenizer)
        expected = model.state_dict()
        path = d / WEIGHTS_FILE
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                problems = []
                missing = sorted(set(expected) - keys)
                extra = sorted(keys - set(expected))
                if missing:
                    problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
                if extra:
                    problems.append(f"unexpected keys {extra[:8]}{' ...' if len(extra) > 8 else ''}")
                for k in sorted(keys & set(expected)):
                    sl = f.get_slice(k)
                    shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
                    want_dtype = _SAFETENSORS_DTYPES.get(expected[k].dtype, str(expected[k].dtype))
                    if shape != tuple(expected[k].shape):
                        problems.append(f"{k}: shape {shape} but config needs {tuple(expected[k].shape)}")
                    if dtype != want_dtype:
                        problems.append(f"{k}: dtype {dtype} but model needs {want_dtype}")
                if problems:
                    raise ValueError(f"{path} does not match {d / CONFIG_FILE}: " + "; ".join(problems))
                state = {k: f.get_tensor(k) for k in keys}
        except SafetensorError as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
        except OSError as e:
            raise ValueError(f"{path}: cannot read weights ({e})") from e
        for k, v in state.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise ValueError(f"{path}: tensor {k} holds NaN or Inf values")
        model.load_state_dict(state, strict=True)
        model.to(device)
        model.eval()
        model.set_submodel(submodel)
        return model


_SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.bool: "BOOL",
    torch.uint8: "U8",
}
