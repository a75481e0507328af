"""The world registry: which worlds exist, and how one is made (no rclpy).

    from embodied_stack.sim.worlds.registry import register_world, world_spec, make_world

Worlds come from three places, all the same to the rest of the stack:

- this repository's own (tabletop, driving: sim/worlds/builtin.py);
- installed packages, through the entry-point group ``embodied_stack.worlds`` (each entry point
  names a callable that registers its worlds, or a WorldSpec, or a list of them);
- adapter files: ``--world-file my_adapter.py`` on the command line, or the environment
  variable ``EMBODIED_STACK_WORLDS=a.py,b.py`` (``os.pathsep`` or commas). A file registers
  its worlds when it is run (``register_world(SPEC)`` at module level). ``load_world_file``
  also appends the file to that variable, so worker processes (training's ``--workers``, Ray)
  load it too.

Every world is made through :func:`make_world`, which wraps it in :class:`WorldEnv`: the one
code path every step of every episode takes (time limit, success termination, observation
completion, rendering skipped inside a chunk).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from embodied_stack.sim.worlds.spec import WorldSpec

ENTRY_POINT_GROUP = "embodied_stack.worlds"
ENV_VAR = "EMBODIED_STACK_WORLDS"

_REGISTRY: dict[str, WorldSpec] = {}
_BUILTINS_LOADED = False
_PLUGINS_LOADED = False
_FILES_LOADED: set[str] = set()


def register_world(spec: WorldSpec, replace: bool = False) -> WorldSpec:
    """Add a world. Registering another spec under a taken name is an error unless `replace`;
    registering the same spec again is a no-op (an adapter file loaded twice)."""
    if not isinstance(spec, WorldSpec):
        raise TypeError(f"register_world takes a WorldSpec, got {type(spec).__name__}")
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec and not replace:
        raise ValueError(f"world {spec.name!r} is already registered; pass replace=True to "
                         "register another spec under its name")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_world(name: str) -> None:
    """Remove a world (tests)."""
    _REGISTRY.pop(name, None)


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from embodied_stack.sim.worlds import builtin

        for spec in builtin.SPECS:
            register_world(spec)


def _env_files() -> list[str]:
    return [p for p in re.split(r"[,%s]" % re.escape(os.pathsep), os.environ.get(ENV_VAR, ""))
            if p.strip()]


def load_plugins(force: bool = False) -> None:
    """Register the worlds of the entry-point group and of EMBODIED_STACK_WORLDS' files (once)."""
    global _PLUGINS_LOADED
    _ensure_builtins()
    if _PLUGINS_LOADED and not force:
        load_world_files(_env_files())  # (files named since: a child process's variable)
        return
    _PLUGINS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
        except Exception as exc:  # a broken plugin must not take the stack down with it
            raise RuntimeError(f"world plugin {ep.name!r} ({ep.value}) of entry-point group "
                               f"{ENTRY_POINT_GROUP!r} failed to load: {exc}") from exc
        _register_target(target, f"entry point {ep.name!r} ({ep.value})")
    load_world_files(_env_files())


def _register_target(target: Any, source: str) -> None:
    """An entry point's object: a WorldSpec, a list of them, or a callable that registers
    (or returns) them."""
    if callable(target) and not isinstance(target, WorldSpec):
        target = target()
    if target is None:
        return
    specs = [target] if isinstance(target, WorldSpec) else list(target)
    for spec in specs:
        if not isinstance(spec, WorldSpec):
            raise TypeError(f"{source} gave {type(spec).__name__}, not a WorldSpec")
        register_world(spec)


def load_world_file(path: str | os.PathLike) -> list[str]:
    """Run an adapter file (it registers its worlds) once; returns the worlds it added. The file
    is appended to EMBODIED_STACK_WORLDS so that worker processes load it too."""
    _ensure_builtins()
    resolved = str(Path(path).expanduser().resolve())
    if resolved in _FILES_LOADED:
        return []
    if not Path(resolved).is_file():
        raise FileNotFoundError(f"world adapter file {str(path)!r} not found")
    before = set(_REGISTRY)
    name = "embodied_stack_world_" + re.sub(r"\W", "_", Path(resolved).stem)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ValueError(f"world adapter file {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses and pickling look modules up by name)
    _FILES_LOADED.add(resolved)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _FILES_LOADED.discard(resolved)
        sys.modules.pop(name, None)
        raise
    files = _env_files()
    if resolved not in files:
        os.environ[ENV_VAR] = ",".join([*files, resolved])
    return sorted(set(_REGISTRY) - before)


def load_world_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """load_world_file for each of `paths`: a list, or one string of comma-separated paths (a
    ROS parameter's or a launch argument's form; blanks are skipped). Returns the worlds added."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [p.strip() for p in str(paths).split(",")]
    added: list[str] = []
    for path in paths:
        if str(path).strip():
            added += load_world_file(path)
    return added


def registered_worlds() -> list[str]:
    """Names of every registered world, sorted."""
    load_plugins()
    return sorted(_REGISTRY)


def world_spec(name: str) -> WorldSpec:
    """The spec of a registered world; an unknown name is an error listing the registered ones."""
    _ensure_builtins()
    if name not in _REGISTRY:
        load_plugins()
    if name not in _REGISTRY:
        raise ValueError(f"world {name!r} is not registered; registered worlds: "
                         f"{sorted(_REGISTRY)} (add one with an adapter file: --world-file "
                         f"FILE.py or {ENV_VAR}=FILE.py, or the {ENTRY_POINT_GROUP!r} entry points)")
    return _REGISTRY[name]


def check_world(name: str) -> str:
    """`name` if registered, else world_spec's ValueError."""
    world_spec(name)
    return name


# --- making worlds ------------------------------------------------------------------------


def _layer_with(env: Any, attribute: str) -> Any | None:
    """The outermost layer of a wrapper stack that has `attribute` itself (Gymnasium 1.x
    wrappers do not forward attributes)."""
    layer = env
    while True:
        if attribute in vars(layer) or hasattr(type(layer), attribute):
            return layer
        if not isinstance(layer, gymnasium.Wrapper):
            return None
        layer = layer.env


class WorldEnv(gymnasium.Wrapper):
    """The wrapper every world is made through (:func:`make_world`), so every step of every
    episode, inside a chunk or not, in eval, training, demos and the sim bridge, takes this
    one path:

    - ``obs`` completed to the stack's layout: ``rgb``, ``depth`` (zeros when the world has
      none), ``proprio`` (padded to the spec's proprio_width, at least 8; zeros when none), ``instruction`` (the spec's
      fixed one when the world gives none). A world that gives all four is passed through
      untouched.
    - ``info["is_success"]`` from the spec's success key; ``info["outcome"]`` ("success",
      "timeout" or "none" unless the world says); ``info["task"]``.
    - success ends the episode (``terminate_on_success``) and ``episode_limit`` truncates it.
    - ``skip_render = True`` makes the next steps skip rendering where the world can
      (``WorldSpec.skip_render``); the observation's images are then None.
    - ``snapshot()`` / ``restore()`` cover the world (``expert_lookahead``) and this wrapper's
      own step count, so an expert's look-ahead steps through here too.
    """

    def __init__(self, env: gymnasium.Env, spec: WorldSpec, episode_limit: int | None = None):
        super().__init__(env)
        self.world_spec = spec
        self.episode_limit = int(episode_limit or spec.episode_limit)
        self.elapsed_steps = 0
        self._render_layer = _layer_with(env, "_lookahead") if spec.skip_render or spec.expert_lookahead else None
        self._snapshot_layer = _layer_with(env, "snapshot") if spec.expert_lookahead else None
        if spec.expert_lookahead and self._snapshot_layer is None:
            raise ValueError(f"world {spec.name!r}: expert_lookahead=True but its env has no "
                             "snapshot()/restore()")
        self._skip = False

    # --- rendering ---
    @property
    def skip_render(self) -> bool:
        return self._skip

    @skip_render.setter
    def skip_render(self, value: bool) -> None:
        value = bool(value) and self._render_layer is not None
        self._skip = value
        if self._render_layer is not None:
            self._render_layer._lookahead = value

    @property
    def can_lookahead(self) -> bool:
        return self._snapshot_layer is not None

    def snapshot(self) -> tuple:
        if self._snapshot_layer is None:
            raise RuntimeError(f"world {self.world_spec.name!r} has no snapshot()")
        return (self._snapshot_layer.snapshot(), self.elapsed_steps)

    def restore(self, snap: tuple) -> None:
        if self._snapshot_layer is None:
            raise RuntimeError(f"world {self.world_spec.name!r} has no restore()")
        self._snapshot_layer.restore(snap[0])
        self.elapsed_steps = snap[1]

    # --- the episode ---
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.elapsed_steps = 0
        return self._observation(obs), self._info(info, False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.elapsed_steps += 1
        spec = self.world_spec
        success = bool(info.get(spec.success_key, False))
        info = self._info(info, success)
        terminated = bool(terminated) or (spec.terminate_on_success and success)
        truncated = bool(truncated) or (not terminated and self.elapsed_steps >= self.episode_limit)
        if (terminated or truncated) and "outcome" not in info:
            info["outcome"] = "success" if success else ("timeout" if truncated else "failure")
        return self._observation(obs), reward, terminated, truncated, info

    def _info(self, info: dict, success: bool) -> dict:
        spec = self.world_spec
        if spec.success_key == "is_success" and "is_success" in info and "task" in info:
            return info  # (a world of this stack's layout: untouched)
        info = dict(info)
        info["is_success"] = success
        info.setdefault("task", spec.name)
        return info

    def _observation(self, obs: Any) -> dict:
        width = self.world_spec.proprio_width
        if (isinstance(obs, dict) and "rgb" in obs and "depth" in obs and "instruction" in obs
                and "proprio" in obs and len(obs["proprio"]) == width):
            return obs  # (a world of this stack's layout: untouched)
        if not isinstance(obs, dict) or "rgb" not in obs:
            raise ValueError(f"world {self.world_spec.name!r}: the env's observation must be a "
                             "dict with 'rgb' (map other layouts in the adapter), got "
                             f"{type(obs).__name__}")
        rgb = obs["rgb"]
        if rgb is not None and (not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8
                                or rgb.ndim != 3 or rgb.shape[2] != 3):
            raise ValueError(f"world {self.world_spec.name!r}: obs['rgb'] must be an (H, W, 3) uint8 "
                             f"array, got {type(rgb).__name__} {getattr(rgb, 'shape', '')} "
                             f"{getattr(rgb, 'dtype', '')} (drop an alpha channel, scale floats to 0-255)")
        out = dict(obs)
        depth = obs.get("depth")
        if depth is None and rgb is not None:
            depth = np.zeros(np.shape(rgb)[:2], np.float32)
        out["depth"] = depth
        proprio = np.zeros(width, np.float32)
        given = obs.get("proprio")
        if given is not None:
            given = np.asarray(given, np.float32).reshape(-1)
            if len(given) > width:
                raise ValueError(f"world {self.world_spec.name!r}: proprio of {len(given)} entries "
                                 f"> the {width} its spec's proprio_names allow")
            proprio[: len(given)] = given
        out["proprio"] = proprio
        instruction = obs.get("instruction") or self.world_spec.instruction
        if not instruction:
            raise ValueError(f"world {self.world_spec.name!r} gives no instruction and its spec "
                             "has no fixed one (WorldSpec.instruction)")
        out["instruction"] = str(instruction)
        return out


def make_world(name: str, width: int = 64, height: int = 64, *, segmentation: bool = False,
               shift=None, **env_kwargs) -> WorldEnv:
    """A registered world, made through its spec and wrapped in :class:`WorldEnv`.
    `segmentation` and `shift` go to worlds that take them (WorldSpec.options); asking a
    world that does not is an error. A ``max_episode_steps`` keyword (this stack's worlds
    take it) also sets the wrapper's episode limit."""
    spec = world_spec(name)
    kwargs: dict[str, Any] = {**spec.env_kwargs, **env_kwargs}
    if "segmentation" in spec.options:
        kwargs["with_segmentation"] = bool(segmentation)
    elif segmentation:
        raise ValueError(f"world {name!r} has no segmentation")
    if shift is not None:
        if "shift" not in spec.options:
            raise ValueError(f"world {name!r} takes no shift (sim/worlds/shift.py)")
        kwargs["shift"] = shift
    if isinstance(spec.make_env, str):
        import embodied_stack.sim  # noqa: F401  (registers this stack's Gymnasium ids)

        env = gymnasium.make(spec.make_env, width=width, height=height,
                             disable_env_checker=True, **kwargs)
    else:
        env = spec.make_env(width=width, height=height, **kwargs)
    return WorldEnv(env, spec, kwargs.get("max_episode_steps"))


def make_world_expert(env: gymnasium.Env):
    """The scripted expert of a world made by make_world; ValueError when it has none (then
    train from a dataset or by RL only)."""
    spec = world_spec_of(env)
    if spec.expert is None:
        raise ValueError(f"world {spec.name!r} has no scripted expert: no demonstrations, DAgger "
                         "or expert backend (train from a dataset, or RL only)")
    return spec.expert(env)


def world_spec_of(env: gymnasium.Env) -> WorldSpec:
    """The spec of a world made by make_world (the outermost WorldEnv of its wrappers)."""
    layer = _layer_with(env, "world_spec")
    if layer is None:
        raise ValueError(f"{env} was not made by make_world (no WorldEnv among its wrappers)")
    return layer.world_spec


def command_scale(name: str):
    """The scaling between a world's normalised action and its ROS command (control/commands.py)."""
    spec = world_spec(name)
    if spec.command_scale is not None:
        return spec.command_scale()
    from embodied_stack.control.commands import ArmScale, JointScale, VehicleScale

    kind = spec.embodiment.command_kind
    if kind == "arm":
        return ArmScale()
    if kind == "vehicle":
        return VehicleScale(dt=1.0 / spec.control_rate_hz)
    return JointScale(spec.embodiment.low, spec.embodiment.high)
