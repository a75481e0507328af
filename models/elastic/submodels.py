"""Nested elastic submodels (DESIGN §5): specs, slicing rules, calibration and permutation.

A submodel is a prefix of the parent along four axes: hidden width, attention heads, FFN width
and depth. Rounding rules (`resolve`): heads = max(1, round(heads_frac * n_heads)); the
attention width is heads * head_dim so heads stay whole; hidden width is rounded to a multiple
of `hidden_multiple` (the head dim for our model, >= 1 unit); FFN width to a multiple of 8;
layers = max(1, round(depth_frac * n_layers)), taken in the stored importance order.
"""

from __future__ import annotations

from dataclasses import dataclass


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


NAMED_SUBMODELS: dict[str, SubmodelSpec] = {
    "full": SubmodelSpec("full"),
    "3/4": SubmodelSpec("3/4", 0.75, 0.75, 0.75, 0.75),
    "1/2": SubmodelSpec("1/2", 0.5, 0.5, 0.5, 0.75),
    "1/4": SubmodelSpec("1/4", 0.5, 0.25, 0.25, 0.5),
}
