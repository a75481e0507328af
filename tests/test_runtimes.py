"""Runtimes: torch eager, ONNX export + ONNX Runtime, the TensorRT engine cache, profiling."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
import pytest
import torch

from embodied_stack.control.elastic.latency_table import device_key, read_latency_table, write_latency_table
from embodied_stack.models.elastic.submodels import NAMED_SUBMODELS
from embodied_stack.models.policy.elastic_vla import ElasticVLA, ElasticVLAConfig
from embodied_stack.models.policy.interface import Observation
from embodied_stack.models.runtime import atomic_write_bytes, make_runtime, model_hash
from embodied_stack.models.runtime.profiling import measure_latency, percentiles
from embodied_stack.models.runtime.tensorrt_runtime import (
    EngineCache,
    EngineCacheKey,
    TensorRTRuntime,
    TensorRTUnavailable,
    import_tensorrt,
)
from embodied_stack.models.runtime.torch_runtime import TorchRuntime

TINY = dict(hidden_size=64, num_heads=2, ffn_size=128, num_layers=2, vision_width=32, vocab_size=256,
            max_instruction_tokens=8, chunk_length=2)


def observations(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Observation(
            rgb=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            depth=rng.random((64, 64), dtype=np.float32),
            instruction=["touch the red cube", "keep the lane"][i % 2],
            proprio=rng.standard_normal(8).astype(np.float32),
            embodiment=["arm", "vehicle"][i % 2],
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------ torch
def test_torch_runtime_matches_model_and_drives_select_action():
    torch.manual_seed(0)
    m = ElasticVLA(ElasticVLAConfig(**TINY))
    rt = TorchRuntime(m, num_threads=torch.get_num_threads())
    batch = m.obs_to_batch(observations(3))
    with torch.no_grad():
        m.set_submodel("1/2")
        ref = m.batch_logits(batch)
    m.set_submodel("full")
    assert torch.equal(rt.run(batch, "1/2"), ref)
    assert m.submodel == "1/2"  # the runtime switched the model
    obs = observations(1)[0]
    plain = m.select_action(obs).chunk
    m.use_runtime(rt)
    np.testing.assert_array_equal(m.select_action(obs).chunk, plain)
    m.use_runtime(None)
    assert rt.description == "torch:cpu:fp32"


def test_torch_runtime_argument_checks():
    m = ElasticVLA(ElasticVLAConfig(**TINY))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TorchRuntime(m, precision="bf16")
    with pytest.raises(ValueError, match="allowed"):
        TorchRuntime(m, precision="fp8")
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        TorchRuntime(m, cuda_graph=True)
    with pytest.raises(ValueError, match="unknown runtime 'tflite'"):
        make_runtime("tflite", m)


# ------------------------------------------------------------------ ONNX Runtime
def _check_ort(m, names, cache_dir):
    from embodied_stack.models.runtime.onnx_runtime import OnnxRuntime

    ort = OnnxRuntime(m, cache_dir=cache_dir, submodels=names, intra_op_threads=1)
    assert ort.providers[-1] == "CPUExecutionProvider"
    for bs in (1, 5):  # dynamic batch
        batch = m.obs_to_batch(observations(bs, seed=bs))
        for name in names:
            m.set_submodel(name)
            with torch.no_grad():
                ref = m.batch_logits(batch)
            out = ort.run(batch, name)
            assert out.shape == ref.shape
            assert float((out - ref).abs().max()) <= 1e-4, name
    m.set_submodel("full")
    return ort


def test_onnx_export_matches_torch_and_is_cached(tmp_path):
    torch.manual_seed(0)
    m = ElasticVLA(ElasticVLAConfig(**TINY))
    ort = _check_ort(m, ["1/4"], tmp_path)
    files = sorted((tmp_path / "onnx").iterdir())
    # the export and the record of its hash; no temp files left behind
    assert [f.name[len(files[0].name):] for f in files] == ["", ".json"]
    mtime = files[0].stat().st_mtime_ns
    # same weights -> cache hit (no re-export); ORT drives select_action
    from embodied_stack.models.runtime.onnx_runtime import OnnxRuntime, onnx_cache_path

    again = OnnxRuntime(m, cache_dir=tmp_path, submodels=["1/4"], intra_op_threads=1)
    assert files[0].stat().st_mtime_ns == mtime
    m.set_submodel("1/4")
    obs = observations(1)[0]
    plain = m.select_action(obs).chunk
    m.use_runtime(again)
    np.testing.assert_array_equal(m.select_action(obs).chunk, plain)
    m.use_runtime(None)
    with pytest.raises(KeyError, match="not prepared"):
        again.run(m.obs_to_batch([obs]), "full")
    # changed weights -> a different cache file
    old = onnx_cache_path(m, "1/4", tmp_path)
    with torch.no_grad():
        m.action_head.bias.add_(1.0)
    assert onnx_cache_path(m, "1/4", tmp_path) != old
    m.set_submodel("full")
    ort.close()


@pytest.mark.slow
def test_onnx_export_of_the_conv_stem_matches_torch(tmp_path):
    torch.manual_seed(3)
    _check_ort(ElasticVLA(ElasticVLAConfig(**TINY, vision_stem="conv")), ["full", "1/4"], tmp_path)


@pytest.mark.slow
def test_onnx_export_of_the_target_keypoint_matches_torch(tmp_path):
    torch.manual_seed(6)
    m = ElasticVLA(ElasticVLAConfig(**TINY, target_keypoint=True))
    with torch.no_grad():
        m.keypoint_proj.weight.normal_(0.0, 1.0)  # a trained projection, not the no-op start
    m.refresh_views()
    _check_ort(m, ["full", "1/4"], tmp_path)


@pytest.mark.slow
def test_onnx_export_of_the_effector_keypoint_matches_torch(tmp_path):
    """effector_keypoint: a second argmax-windowed soft-argmax on the same features."""
    torch.manual_seed(8)
    m = ElasticVLA(ElasticVLAConfig(**TINY, target_keypoint=True, effector_keypoint=True, reference_frame=True))
    with torch.no_grad():
        m.keypoint_proj.weight.normal_(0.0, 1.0)
    m.refresh_views()
    _check_ort(m, ["full", "1/4"], tmp_path)


@pytest.mark.slow
def test_onnx_export_with_the_reference_frame_matches_torch(tmp_path):
    """reference_frame doubles the pixels input; the keypoint reads its first half only."""
    torch.manual_seed(7)
    m = ElasticVLA(ElasticVLAConfig(**TINY, target_keypoint=True, reference_frame=True))
    assert m.config.in_channels == 2 * m.config.frame_channels
    with torch.no_grad():
        m.keypoint_proj.weight.normal_(0.0, 1.0)
    m.refresh_views()
    _check_ort(m, ["full", "1/4"], tmp_path)


def test_embodiments_without_the_keypoint_run_the_graph_without_it(tmp_path):
    """A vehicle never uses the target keypoint (its gate is zero), so select_action runs the
    graph without it there: the same actions, without the keypoint's convolutions. For an arm
    leaving it out changes the logits (the flag is live, not ignored)."""
    from embodied_stack.models.runtime.onnx_runtime import OnnxRuntime

    torch.manual_seed(9)
    m = ElasticVLA(ElasticVLAConfig(**TINY, target_keypoint=True))
    with torch.no_grad():
        m.keypoint_proj.weight.normal_(0.0, 1.0)  # a trained projection, not the no-op start
    m.refresh_views()
    assert m.uses_keypoint("arm") and not m.uses_keypoint("vehicle")
    obs = observations(4)
    vehicle = m.obs_to_batch([o for o in obs if o.embodiment == "vehicle"])
    arm = m.obs_to_batch([o for o in obs if o.embodiment == "arm"])
    m.set_submodel("1/4")
    with torch.no_grad():
        assert torch.equal(m.batch_logits(vehicle, keypoint=False), m.batch_logits(vehicle))
        assert not torch.allclose(m.batch_logits(arm, keypoint=False), m.batch_logits(arm))
    eager = TorchRuntime(m, num_threads=torch.get_num_threads())
    assert torch.equal(eager.run(vehicle, "1/4", keypoint=False), eager.run(vehicle, "1/4"))

    ort = OnnxRuntime(m, cache_dir=tmp_path, submodels=["1/4"], intra_op_threads=1)
    assert sorted(ort.sessions) == ["1/4", "1/4-nokp"]
    assert ort.paths["1/4-nokp"].stat().st_size < ort.paths["1/4"].stat().st_size
    torch.testing.assert_close(ort.run(vehicle, "1/4", keypoint=False), ort.run(vehicle, "1/4"),
                               atol=1e-5, rtol=1e-5)

    class Refuses:  # the whole graph: must not be what a vehicle runs
        def run(self, *args):
            raise AssertionError("the whole graph ran for a vehicle")

    car, robot = obs[1], obs[0]
    plain = m.select_action(car).chunk
    m.use_runtime(ort)
    whole, ort.sessions["1/4"] = ort.sessions["1/4"], Refuses()
    np.testing.assert_allclose(m.select_action(car).chunk, plain, atol=1e-6)
    with pytest.raises(AssertionError, match="whole graph"):
        m.select_action(robot)
    ort.sessions["1/4"] = whole
    m.use_runtime(None)


def test_onnx_every_named_submodel_default_config(tmp_path):
    torch.manual_seed(0)
    m = ElasticVLA()
    _check_ort(m, list(NAMED_SUBMODELS), tmp_path)


def test_a_truncated_onnx_cache_file_is_exported_again_with_a_warning(tmp_path, caplog):
    """A cache file cut short (a full disk, a killed copy) is caught by the hash recorded at
    its export, and exported again at the same opset with a warning naming the file and the
    reason: it is not mistaken for an ONNX Runtime too old for the opset. A changed byte, an
    unreadable record, or no record at all are caught alike."""
    import logging

    from embodied_stack.models.runtime.onnx_runtime import DEFAULT_OPSET, OnnxRuntime, onnx_cache_path

    torch.manual_seed(0)
    m = ElasticVLA(ElasticVLAConfig(**TINY))
    OnnxRuntime(m, cache_dir=tmp_path, submodels=["1/4"], intra_op_threads=1)
    path = onnx_cache_path(m, "1/4", tmp_path)
    good = path.read_bytes()
    sidecar = path.with_name(path.name + ".json")

    def damage_and_reload(damage, words):
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="embodied_stack.models.runtime.onnx_runtime"):
            ort = OnnxRuntime(m, cache_dir=tmp_path, submodels=["1/4"], intra_op_threads=1)
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and str(path) in warnings[0] and words in warnings[0], warnings
        assert "opset" not in warnings[0] and ort.opset == DEFAULT_OPSET  # no fallback
        assert path.read_bytes() == good and sidecar.is_file()  # the same export again, recorded

    damage_and_reload(lambda: path.write_bytes(good[: len(good) // 2]), "truncated")
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    damage_and_reload(lambda: path.write_bytes(bytes(flipped)), "SHA-256")
    damage_and_reload(lambda: sidecar.write_text("{not json"), "unreadable")
    damage_and_reload(lambda: sidecar.unlink(), "no recorded hash")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        OnnxRuntime(m, cache_dir=tmp_path, submodels=["1/4"], intra_op_threads=1)
    assert not caplog.records  # an intact file loads silently


# ------------------------------------------------------------------ TensorRT engine cache
def _key(**over):
    base = dict(
        model_hash="abc",
        submodel="full",
        trt_version="10.3.0",
        compute_capability="9.0",
        precision="fp16",
        input_shapes=(("pixels", (1, 4, 64, 64)), ("tokens", (1, 16))),
    )
    base.update(over)
    return EngineCacheKey(**base)


def test_engine_cache_key_changes_on_every_field():
    k = _key()
    changes = dict(
        model_hash="abd",
        submodel="1/2",
        trt_version="10.4.0",
        compute_capability="8.7",
        precision="bf16",
        input_shapes=(("pixels", (2, 4, 64, 64)), ("tokens", (2, 16))),
    )
    assert set(changes) == {f.name for f in dataclasses.fields(EngineCacheKey)}
    digests = {k.digest()}
    for field, value in changes.items():
        other = _key(**{field: value})
        assert other.digest() != k.digest(), field
        assert other.filename() != k.filename(), field
        digests.add(other.digest())
    assert len(digests) == len(changes) + 1
    assert _key().digest() == k.digest()  # deterministic
    with pytest.raises(ValueError, match="precision='fp64'"):
        _key(precision="fp64")


def test_engine_cache_lookup_store_and_mismatch(tmp_path):
    cache = EngineCache(tmp_path)
    k = _key()
    assert cache.lookup(k) is None  # miss -> rebuild
    path = cache.store(k, b"engine-bytes")
    assert cache.lookup(k) == path and path.read_bytes() == b"engine-bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])
    for field, value in dict(trt_version="10.4.0", compute_capability="8.7", precision="fp32",
                             input_shapes=(("pixels", (8, 4, 64, 64)),)).items():
        assert cache.lookup(_key(**{field: value})) is None, field
    # a sidecar that disagrees with the key (e.g. a hash collision or a hand-copied file) is a miss
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["bytes"] == len(b"engine-bytes") and len(meta["sha256"]) == 64
    meta["trt_version"] = "9.0"
    path.with_suffix(".json").write_text(json.dumps(meta))
    assert cache.lookup(k) is None


def test_a_truncated_engine_is_a_miss_with_a_warning(tmp_path, caplog):
    import logging

    cache = EngineCache(tmp_path)
    k = _key()
    path = cache.store(k, b"engine-bytes" * 100)
    path.write_bytes(b"engine-bytes")
    with caplog.at_level(logging.WARNING, logger="embodied_stack.models.runtime.tensorrt_runtime"):
        assert cache.lookup(k) is None  # rebuild
    assert str(path) in caplog.text and "truncated" in caplog.text
    assert cache.lookup(k) is None and cache.store(k, b"new") == path and cache.lookup(k) == path


def test_absent_tensorrt_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed.*onnxruntime"):
        import_tensorrt()
    m = ElasticVLA(ElasticVLAConfig(**TINY))
    with pytest.raises(TensorRTUnavailable):
        TensorRTRuntime(m)
    with pytest.raises(TensorRTUnavailable):
        make_runtime("tensorrt", m)


# ------------------------------------------------------------------ helpers
def test_model_hash_and_atomic_write(tmp_path):
    torch.manual_seed(0)
    a = ElasticVLA(ElasticVLAConfig(**TINY))
    h = model_hash(a)
    assert model_hash(a) == h
    with torch.no_grad():
        a.final_norm.weight[0] += 1e-3
    assert model_hash(a) != h
    p = atomic_write_bytes(tmp_path / "sub" / "x.bin", b"123")
    assert p.read_bytes() == b"123" and [q.name for q in p.parent.iterdir()] == ["x.bin"]


def test_latency_table_and_percentiles(tmp_path):
    samples = measure_latency(lambda: None, iters=20, warmup=2)
    assert len(samples) == 20
    p = percentiles([0.001] * 50 + [0.003] * 50)
    assert p["p50_ms"] == pytest.approx(2.0) and p["p95_ms"] == pytest.approx(3.0)
    assert device_key("cpu").startswith("cpu:")
    # the CPU count is in the key: VMs report one generic model name for 2 and 16 cores
    assert device_key("cpu").endswith(f" ({len(os.sched_getaffinity(0))} cpus)")
    path = tmp_path / "table.json"
    write_latency_table(path, "cpu:test", {"full": {"p50_ms": 3.0, "p95_ms": 4.0, "weight_mb": 3.9}})
    write_latency_table(path, "cuda:gpu", {"full": {"p50_ms": 0.2, "p95_ms": 0.3, "weight_mb": 3.9}})
    assert read_latency_table(path, "cpu:test")["full"]["p95_ms"] == 4.0
    assert set(json.loads(path.read_text())) == {"cpu:test", "cuda:gpu"}
    with pytest.raises(KeyError, match="no latency entry"):
        read_latency_table(path, "cpu:other")
    with pytest.raises(ValueError, match="p95_ms"):
        write_latency_table(path, "cpu:x", {"full": {"p50_ms": 1.0, "weight_mb": 1.0}})


def test_prepare_leaves_the_model_on_its_submodel():
    """Capturing graphs (or compiling) for every submodel must not leave the model on the
    last one: select_action runs the model's current submodel (found on an H100, where the
    CUDA-graph path answered with 1/4 after start-up)."""
    torch.manual_seed(0)
    m = ElasticVLA(ElasticVLAConfig(**TINY))
    rt = TorchRuntime(m)
    rt.compiled = m.action_logits  # take the prepare path without CUDA or a compiler
    m.set_submodel("1/2")
    rt.prepare(["full", "3/4", "1/4"], m.obs_to_batch(observations(1)))
    assert m.submodel == "1/2"
