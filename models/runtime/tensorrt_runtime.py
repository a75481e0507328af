"""TensorRT engines for ElasticVLA submodels, with an engine cache.

A TensorRT engine is only valid for the TensorRT version and GPU (compute capability) that
built it, at its precision and input shapes, so the cache key holds exactly those fields plus a
hash of the model's weights and the submodel. A lookup that misses means "rebuild": build
engines ahead of time (``TensorRTRuntime.prepare`` or ``build_engine``), never inside the
control loop; ``run`` refuses a submodel whose engine is not loaded.

``tensorrt`` is imported lazily: this module imports without it, and anything that needs it
raises :class:`TensorRTUnavailable` with what to do instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import (
    OUTPUT_NAME,
    SENTENCE_DIM,
    SENTENCE_INPUT,
    Runtime,
    atomic_write_bytes,
    default_cache_dir,
    input_names,
    model_hash,
)
from .cache_check import DIGEST_FIELDS, check_digest, record_digest

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
ONNX_OPSET = 18  #: the TensorRT ONNX parser's well-trodden opset (no opset-23 Attention needed)


class TensorRTUnavailable(RuntimeError):
    """The tensorrt Python package (or a CUDA GPU) is missing."""


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError as e:
        raise TensorRTUnavailable(
            "TensorRT is not installed (import tensorrt failed: "
            f"{e}). Install NVIDIA TensorRT for your CUDA version (e.g. `pip install tensorrt` or "
            "JetPack on Jetson), or use runtime='onnxruntime' or 'torch'."
        ) from e
    return trt


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a built engine depends on."""

    model_hash: str  #: models.runtime.model_hash of the weights (+ config)
    submodel: str  #: submodel name (its slice sizes are part of the engine)
    trt_version: str  #: tensorrt.__version__
    compute_capability: str  #: GPU SM version, e.g. "9.0"
    precision: str  #: one of PRECISIONS
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]  #: (input name, shape) pairs

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; allowed: {PRECISIONS}")

    def digest(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def filename(self) -> str:
        return f"elastic_vla-{self.submodel.replace('/', '_')}-{self.precision}-{self.digest()}.engine"


def gpu_compute_capability(device: int = 0) -> str:
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT needs a CUDA GPU; torch.cuda.is_available() is False")
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def input_shapes_for(model, batch_size: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    c = model.config
    return (
        ("pixels", (batch_size, c.in_channels, c.image_size, c.image_size)),
        ("tokens", (batch_size, c.max_instruction_tokens)),
        ("proprio", (batch_size, c.proprio_dim)),
        ("embodiment", (batch_size,)),
    ) + (((SENTENCE_INPUT, (batch_size, SENTENCE_DIM)),) if c.instruction_embedding else ())


class EngineCache:
    """Serialized engines on disk, one file per key plus a JSON sidecar holding the key and
    the engine's SHA-256 and size (models/runtime/cache_check.py).

    ``lookup`` returns the engine path only when the file exists, its sidecar matches the key
    field by field AND the file matches the recorded hash; anything else is a miss (rebuild),
    a file that fails its hash with a warning naming it and the reason."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "tensorrt"

    def path_for(self, key: EngineCacheKey) -> Path:
        return self.directory / key.filename()

    def lookup(self, key: EngineCacheKey) -> Path | None:
        path = self.path_for(key)
        meta = path.with_suffix(".json")
        if not (path.is_file() and meta.is_file()):
            return None
        try:
            stored = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        want = json.loads(json.dumps(asdict(key), default=list))
        if {k: v for k, v in stored.items() if k not in DIGEST_FIELDS} != want:
            return None
        problem = check_digest(path, meta)
        if problem is not None:
            log.warning("TensorRT engine %s failed its check: %s; building it again", path, problem)
            return None
        return path

    def store(self, key: EngineCacheKey, engine_bytes: bytes) -> Path:
        path = atomic_write_bytes(self.path_for(key), engine_bytes)
        record_digest(path, path.with_suffix(".json"), json.loads(json.dumps(asdict(key), default=list)))
        return path


def build_engine(onnx_path: str | os.PathLike, key: EngineCacheKey, workspace_gb: float = 2.0) -> bytes:
    """Build a serialized engine from an ONNX file (minutes on large models: do it offline)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if key.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif key.precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif key.precision == "int8":
        raise NotImplementedError("int8 engines need a calibrator; not provided")
    profile = builder.create_optimization_profile()
    for name, shape in key.input_shapes:
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT engine build failed for {onnx_path}")
    return bytes(engine)


class TensorRTRuntime(Runtime):
    """ElasticVLA on TensorRT engines (one per submodel, fixed batch size), via ONNX export."""

    name = "tensorrt"

    def __init__(
        self,
        model,
        precision: str = "fp16",
        batch_size: int = 1,
        cache_dir: str | os.PathLike | None = None,
        submodels: Iterable[str] | None = None,
    ):
        self.trt = import_tensorrt()
        gpu_compute_capability()  # fail early without a GPU
        self.model, self.precision, self.batch_size = model, precision, batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache = EngineCache(self.cache_dir / "tensorrt")
        self._hash = model_hash(model)
        self._engines: dict[str, tuple] = {}
        self.prepare(model.submodel_names if submodels is None else submodels)

    def key(self, submodel: str) -> EngineCacheKey:
        return EngineCacheKey(
            model_hash=self._hash,
            submodel=submodel,
            trt_version=self.trt.__version__,
            compute_capability=gpu_compute_capability(),
            precision=self.precision,
            input_shapes=input_shapes_for(self.model, self.batch_size),
        )

    def prepare(self, submodels: Iterable[str]) -> None:
        from .onnx_runtime import ensure_onnx

        for name in submodels:
            if name in self._engines:
                continue
            key = self.key(name)
            path = self.cache.lookup(key)
            if path is None:  # miss or mismatch: rebuild (here, never in run())
                onnx_path = ensure_onnx(self.model, name, self.cache_dir, ONNX_OPSET, self._hash)
                path = self.cache.store(key, build_engine(onnx_path, key))
            runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            self._engines[name] = (engine, engine.create_execution_context())

    def run(self, batch: dict[str, torch.Tensor], submodel: str, keypoint: bool = True) -> torch.Tensor:
        # One engine per submodel, with the keypoint: its output is the same either way.
        if submodel not in self._engines:
            raise KeyError(f"no TensorRT engine for {submodel!r}; prepare() it outside the control loop")
        engine, ctx = self._engines[submodel]
        c = self.model.config
        inputs = {k: batch[k].to("cuda", non_blocking=True).contiguous() for k in input_names(c)}
        out = torch.empty(batch["pixels"].shape[0], c.num_action_tokens, c.action_bins, device="cuda")
        for k, v in inputs.items():
            ctx.set_tensor_address(k, v.data_ptr())
        ctx.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        return out
