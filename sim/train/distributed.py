"""Rollout workers: processes on this machine (``embodied-stack train --workers N``) or actors
on a Ray cluster (``--ray-address ...``).

Each worker is a Ray actor holding its own worlds (WorldPool) and a CPU copy of the policy.
A call ships the current weights once (``ray.put``), splits the seeds round-robin over the
workers with their global keys, and merges the episodes back in order. Every random choice of
an episode comes from its own key-derived stream (sim/train/rollouts.run_episodes), so the
result equals the local path's for the same seeds, whatever the number of workers.

``address``: "local" starts a private cluster on this machine (loopback only); "auto" or
"ray://host:10001" joins an existing one (see Ray's docs for starting a cluster).
Processes (``ProcessRollouts``) need no cluster: the standard library's process pool, one
worker per core, for a many-core training machine whose GPU would otherwise wait on one
core stepping the worlds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embodied_stack.models.policy.interface import ExecutionMode

if TYPE_CHECKING:
    from embodied_stack.models.policy.elastic_vla import ElasticVLA


class _Worker:
    def __init__(self, worlds, pool_size: int, threads: int, shift: str = ""):
        import torch

        from embodied_stack.sim.train.rollouts import WorldPool
        torch.set_num_threads(threads)
        self.pools = {w: WorldPool(w, pool_size, shift=shift or None) for w in worlds}
        self.model: ElasticVLA | None = None
        self.weights_id: str | None = None

    def run(self, weights, weights_id: str, world: str, seeds, keys, mode: dict, kwargs: dict):
        from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig, InstructionTokenizer
        from embodied_stack.sim.train.rollouts import run_episodes

        if self.weights_id != weights_id:
            self.model = ElasticVLA(ElasticVLAConfig.from_dict(weights["config"]),
                                    InstructionTokenizer(weights["vocab"]))
            self.model.load_state_dict(weights["state"])
            self.model.eval()
            self.weights_id = weights_id
        assert self.model is not None  # built above on the first call (weights_id starts as None)
        self.model.set_submodel(weights["submodel"])
        return run_episodes(self.model, self.pools[world], seeds, ExecutionMode(**mode),
                            keys=keys, **kwargs)


def _weights(model) -> dict:
    return {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": model.config.to_dict(), "vocab": list(model.tokenizer.vocab),
            "submodel": model.submodel}


def _mode_args(mode: ExecutionMode) -> dict:
    return {"chunk_length": mode.chunk_length, "refill_at": mode.refill_at,
            "execute_steps": mode.execute_steps}


def _round_robin(n_items: int, n_workers: int) -> list[list[int]]:
    return [list(range(j, n_items, n_workers)) for j in range(n_workers)]


_PROCESS_WORKER: _Worker | None = None


def _process_init(worlds, pool_size: int, threads: int, shift: str = "") -> None:
    global _PROCESS_WORKER
    _PROCESS_WORKER = _Worker(worlds, pool_size, threads, shift)


def _process_run(*args):
    return _PROCESS_WORKER.run(*args)


class ProcessRollouts:
    """The same call as LocalRollouts, served by `workers` processes on this machine."""

    def __init__(self, workers: int, worlds, pool_size: int, threads: int = 1, shift: str = ""):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if workers < 1:
            raise ValueError(f"rollout workers={workers} must be >= 1")
        # spawn: a forked child would inherit the parent's GL contexts and CUDA state.
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_process_init,
                                        initargs=(tuple(worlds), pool_size, threads, shift))
        self.workers = workers
        self._calls = 0

    def __call__(self, model, world: str, seeds, mode: ExecutionMode, progress=None,
                 **kwargs):
        from concurrent.futures import FIRST_COMPLETED, wait

        seeds = list(seeds)
        self._calls += 1
        weights, weights_id = _weights(model), f"{id(self)}-{self._calls}"
        # Small shards, so the bar moves and a slow shard does not hold the others up.
        shards = _round_robin(len(seeds), min(len(seeds), 4 * self.workers)) if seeds else []
        pending = {self.pool.submit(_process_run, weights, weights_id, world,
                                    [seeds[i] for i in idx], idx, _mode_args(mode), kwargs): idx
                   for idx in shards if idx}
        out = [None] * len(seeds)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                idx = pending.pop(fut)
                for i, ep in zip(idx, fut.result()):
                    out[i] = ep
                if progress is not None:
                    progress(len(idx))
        return out

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayRollouts:
    """The same call as LocalRollouts, served by `workers` Ray actors."""

    def __init__(self, address: str, workers: int, worlds, pool_size: int, threads: int = 1,
                 shift: str = ""):
        import ray

        if workers < 1:
            raise ValueError(f"ray workers={workers} must be >= 1")
        if not ray.is_initialized():
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        worker = ray.remote(num_cpus=1)(_Worker)
        # Ray actor handles: ray's stubs type ray.remote(...)(cls) as a union of a class and a
        # function, which knows no .remote of the actor's methods
        self.workers: list[Any] = [worker.remote(tuple(worlds), pool_size, threads, shift)
                                   for _ in range(workers)]
        self._calls = 0

    def __call__(self, model, world: str, seeds, mode: ExecutionMode, progress=None,
                 **kwargs):
        import ray

        seeds = list(seeds)
        self._calls += 1
        weights = ray.put(_weights(model))
        weights_id = f"{id(self)}-{self._calls}"
        shards = _round_robin(len(seeds), len(self.workers))
        mode_args = _mode_args(mode)
        pending = {
            self.workers[j].run.remote(weights, weights_id, world, [seeds[i] for i in idx],
                                       idx, mode_args, kwargs): idx
            for j, idx in enumerate(shards) if idx}
        out = [None] * len(seeds)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            idx = pending.pop(done[0])
            for i, ep in zip(idx, ray.get(done[0])):
                out[i] = ep
            if progress is not None:
                progress(len(idx))
        return out

    def close(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()

