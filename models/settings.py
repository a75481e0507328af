"""Settings that describe themselves: `setting()` makes a dataclass field carry its meaning, its
allowed range and whether it is fixed at start-up, next to its default. A settings dataclass is
then the one place a setting is written down: `check_ranges` validates an instance against it,
and a ROS node declares its parameters from it (nodes/params.declare_settings: the description,
the range, read-only for a fixed one). Plain Python, used by every layer."""

from __future__ import annotations

import dataclasses


def setting(default, doc: str, lo=None, hi=None, fixed: bool = False):
    """A dataclass field: its `default`, what it means (`doc`, the parameter's description),
    its allowed range [lo, hi] for a number, and whether it is `fixed` at start-up."""
    return dataclasses.field(default=default, metadata={
        "doc": doc, "range": None if lo is None else (lo, hi), "fixed": fixed})


def check_ranges(settings) -> None:
    """ValueError quoting the value and the range for the first field outside its range."""
    for f in dataclasses.fields(settings):
        value, bounds = getattr(settings, f.name), f.metadata.get("range")
        if bounds and not (isinstance(value, (int, float)) and bounds[0] <= value <= bounds[1]):
            raise ValueError(f"{f.name}={value!r} outside [{bounds[0]}, {bounds[1]}]")


def fixed_settings(settings_class) -> tuple[str, ...]:
    """The names of the fields fixed at start-up."""
    return tuple(f.name for f in dataclasses.fields(settings_class) if f.metadata.get("fixed"))
