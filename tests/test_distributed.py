"""Rollout workers (2 local processes, or a 2-worker local Ray cluster on loopback) give the
same episodes as the in-process path for the same seeds: greedy, sampled and DAgger-labelled;
demonstrations recorded by 2 processes equal the serial ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
from embodied_stack.models.policy.interface import ExecutionMode
from embodied_stack.sim.train.rollouts import LocalRollouts
from embodied_stack.sim.train.run import instruction_tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_rollout_workers_match_the_local_path(backend):
    from embodied_stack.sim.train.distributed import ProcessRollouts

    if backend == "ray":
        pytest.importorskip("ray")
    torch.manual_seed(0)
    model = ElasticVLA(ElasticVLAConfig(hidden_size=32, num_heads=2, ffn_size=64, num_layers=2,
                                        vision_width=32, vision_heads=2),
                       instruction_tokenizer(("tabletop", "driving")))
    mode = ExecutionMode(model.config.chunk_length)
    local = LocalRollouts(("tabletop", "driving"), 3)
    if backend == "ray":
        from embodied_stack.sim.train.distributed import RayRollouts

        remote = RayRollouts("local", 2, ("tabletop", "driving"), 3)
    else:
        remote = ProcessRollouts(2, ("tabletop", "driving"), 3)
    try:
        cases = [("tabletop", dict(sample=True, stream_seed=5, keep_decisions=True)),
                 ("driving", dict(sample=True, stream_seed=6, keep_decisions=True)),
                 ("tabletop", dict(label=True, beta=0.5, stream_seed=7))]
        for world, kwargs in cases:
            seeds = [40, 40, 41, 42, 43]  # a repeated seed: a group of two
            a = local(model, world, seeds, mode, **kwargs)
            b = remote(model, world, seeds, mode, **kwargs)
            assert [e.seed for e in b] == seeds
            for x, y in zip(a, b):
                assert (x.outcome, x.success, x.steps) == (y.outcome, y.success, y.steps)
                assert x.ret == pytest.approx(y.ret, abs=1e-6)
                if kwargs.get("keep_decisions"):
                    np.testing.assert_array_equal(np.stack(x.tokens), np.stack(y.tokens))
                if kwargs.get("label"):
                    np.testing.assert_allclose(np.stack(x.labels), np.stack(y.labels), atol=1e-6)
        # Two rollouts of one seed differ only through their own random streams.
        a = local(model, "tabletop", [40, 40], mode, sample=True, stream_seed=5,
                  keep_decisions=True)
        assert not np.array_equal(np.stack(a[0].tokens[:1]), np.stack(a[1].tokens[:1]))
    finally:
        local.close()
        remote.close()
        if backend == "ray":
            from embodied_stack.sim.train.distributed import shutdown

            shutdown()


@pytest.mark.slow
def test_demos_from_worker_processes_equal_the_serial_ones(tmp_path):
    from embodied_stack.sim.train import demos

    cfg = demos.DemoConfig(world="tabletop", episodes=5, shard_episodes=2, first_seed=70)
    serial = demos.load(demos.collect(cfg, tmp_path / "serial"))
    parallel = demos.load(demos.collect(cfg, tmp_path / "parallel", workers=2))
    assert sorted(serial) == sorted(parallel)
    for k in serial:
        np.testing.assert_array_equal(serial[k], parallel[k])
    assert not list((tmp_path / "parallel" / "tabletop").glob(".*"))  # no temp files left
