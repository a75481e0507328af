"""Submodel switching of ElasticVLA: choose the nested submodel (`set_submodel`), keep the
no-grad views of the parent weights in step with moves, loads and copies, and count the
parameters the active submodel reads. A mixin of ElasticVLA (modeling_elastic_vla.py): it
works on the network's ElasticLinear/RMSNorm layers and its layer importance order."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ...elastic.submodels import NAMED_SUBMODELS, SubmodelShape, SubmodelSpec, resolve
from .layers import Block, ElasticLinear, RMSNorm

if TYPE_CHECKING:
    from .configuration_elastic_vla import ElasticVLAConfig
    from .target_keypoint import TargetKeypoint

    # For the type checker the mixin is the nn.Module it is mixed into (ElasticVLA), so that
    # super()._apply/load_state_dict/__setstate__, modules() and parameters() resolve; at run
    # time it is a plain class and ElasticVLA's own bases give the MRO.
    _ModuleBase = nn.Module
else:
    _ModuleBase = object


class SubmodelSwitching(_ModuleBase):
    """Nested-submodel switching for ElasticVLA (see the module docstring)."""

    if TYPE_CHECKING:
        # The attributes of ElasticVLA (modeling_elastic_vla.py) this mixin reads or writes.
        config: ElasticVLAConfig
        submodel_names: list[str]
        _submodel_name: str
        _shape: SubmodelShape | None  # None only inside __init__, before set_submodel("full")
        _plans: dict[str, tuple]
        _active_layers: list[int]
        _active_hidden: int
        _use_cache: bool
        tok_embed: nn.Parameter
        embodiment_embed: nn.Parameter
        action_queries: nn.Parameter
        layer_rank: torch.Tensor
        patch_embed: nn.Module
        vision_pos: nn.Parameter
        vision_blocks: nn.ModuleList
        vision_norm: RMSNorm
        proj_in: nn.Linear
        proj_out: ElasticLinear
        proprio_proj: ElasticLinear
        layers: nn.ModuleList  # of Block
        final_norm: RMSNorm
        action_head: ElasticLinear
        aux_head: ElasticLinear | None
        keypoint: TargetKeypoint | None
        keypoint_in: nn.Sequential | None
        keypoint_proj: ElasticLinear | None
        sentence_proj: ElasticLinear | None
        keypoint_sentence: nn.Linear | None

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
        assert self._shape is not None, "set by set_submodel('full') in __init__"
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
            cast(Block, layer).set_active(h, shape.heads, shape.ffn)
        self.final_norm.set_active(h)
        self.action_head.set_active(c.action_bins, h)
        if self.aux_head is not None:
            self.aux_head.set_active(c.aux_dim, h)
        if self.keypoint_proj is not None:
            self.keypoint_proj.set_active(h, self.keypoint_proj.in_features)
        if self.sentence_proj is not None:
            self.sentence_proj.set_active(h, self.sentence_proj.in_features)
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
        if self.keypoint is not None:  # the target keypoint acts too
            assert self.keypoint_in is not None and self.keypoint_proj is not None  # built with keypoint
            other += sum(p.numel() for p in self.keypoint.parameters())
            other += sum(p.numel() for p in self.keypoint_in.parameters()) + self.keypoint_proj.active_params()
        if self.sentence_proj is not None:  # instruction_embedding
            other += self.sentence_proj.active_params()
            other += self.keypoint_sentence.weight.numel() if self.keypoint_sentence is not None else 0
        return dec + fixed + other

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
