"""Elastic building blocks of ElasticVLA: layers whose active part is a prefix slice of the
parent weight (a view, no copy), the rotary tables and the transformer block built from them.
A submodel changes only the active sizes (`set_active`); see models/elastic/submodels.py for the
sizes of the named submodels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
            assert self._w is not None  # set by set_active (refresh_views in __init__)
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
            assert sin is not None  # the rotary tables come as a pair (both None: no rotary)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, s, -1))
        h = self.mlp_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))
