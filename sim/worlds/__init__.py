"""sim/worlds: the Gymnasium worlds (Tabletop, Driving), the world spec and registry
(spec.py, registry.py: any registered world, this repository's or a third party's, is taken
by eval, the trainer, the demo and the sim bridge), and what the rest of the stack needs to
know about a world without building one.

The tables below are read-only views of the registry, kept for the code that imported them
before it existed: ``EMBODIMENT_OF_WORLD["tabletop"] == "arm"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from embodied_stack.sim.worlds.registry import (  # noqa: F401  (the public API)
    command_scale,
    load_world_file,
    load_world_files,
    make_world,
    register_world,
    registered_worlds,
    world_spec,
)
from embodied_stack.sim.worlds.spec import EmbodimentSpec, WorldSpec  # noqa: F401


class _RegistryView(Mapping):
    """world name -> one field of its spec, live over the registry."""

    def __init__(self, read: Callable[[WorldSpec], Any]):
        self._read = read

    def __getitem__(self, world: str):
        try:
            spec = world_spec(world)  # (fast for a registered world: no plugin scan)
        except ValueError:
            raise KeyError(world) from None
        return self._read(spec)

    def __iter__(self) -> Iterator[str]:
        return iter(registered_worlds())

    def __len__(self) -> int:
        return len(registered_worlds())


#: The embodiment that acts in each world: the policy node's `embodiment` parameter
#: (arm -> servo/delta_twist_cmds, vehicle -> cmd_vel, others -> joint_commands).
EMBODIMENT_OF_WORLD: Mapping[str, str] = _RegistryView(lambda s: s.embodiment.name)

#: Each world's proprio vector (obs["proprio"], its spec's proprio_width long), entry by entry; the sim
#: bridge publishes it as joint_states under these names and the policy node reads them back
#: by name. "unused_k" entries are zero.
PROPRIO_NAMES: Mapping[str, list[str]] = _RegistryView(lambda s: s.proprio_layout)

#: Each world's action, entry by entry (the normalised action in [-1, 1] the policy emits).
ACTION_NAMES: Mapping[str, list[str]] = _RegistryView(lambda s: list(s.embodiment.action_names))


def control_rate_hz(world: str) -> int:
    """Control steps (and camera frames) per second of a world."""
    return int(world_spec(world).control_rate_hz)


def default_proprio_names(embodiment: str) -> list[str]:
    """The proprio layout of the first registered world acting with `embodiment` (the policy
    node's default when its proprio_names parameter is unset); ValueError when none does."""
    for world in registered_worlds():
        spec = world_spec(world)
        if spec.embodiment.name == embodiment:
            return spec.proprio_layout
    raise ValueError(f"no registered world acts with embodiment {embodiment!r}: set the "
                     "policy node's proprio_names")


class _ProprioOfEmbodiment(Mapping):
    """embodiment -> default_proprio_names(embodiment), over the registered worlds."""

    def __getitem__(self, embodiment: str) -> list[str]:
        try:
            return default_proprio_names(embodiment)
        except ValueError:
            raise KeyError(embodiment) from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({world_spec(w).embodiment.name for w in registered_worlds()}))

    def __len__(self) -> int:
        return len(list(iter(self)))


#: Default proprio layouts by embodiment (the policy node's, when proprio_names is unset).
PROPRIO_NAMES_OF_EMBODIMENT: Mapping[str, list[str]] = _ProprioOfEmbodiment()
