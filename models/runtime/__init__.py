"""Inference runtimes for ElasticVLA: torch eager, ONNX Runtime, TensorRT
(docs/architecture.md; targets in docs/benchmarks.md).

Every runtime has the same small interface, so ``ElasticVLA.use_runtime(rt)`` makes
``select_action`` run on any of them::

    rt.prepare(["full", "1/2"])          # export / build ahead of time, never in the control loop
    logits = rt.run(batch, "full")       # batch: the model's input tensors (obs_to_batch)
                                         # logits: (B, T*A, bins) torch.Tensor
    logits = rt.run(batch, "full", keypoint=False)  # for embodiments without the keypoint

Caches (ONNX files, TensorRT engines) are keyed by a hash of the weights and written
atomically (temp file + rename) so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

# (re-exported; the cache folder's one definition is models/files.py)
from embodied_stack.models.files import atomic_write_bytes, default_cache_dir  # noqa: F401

if TYPE_CHECKING:  # torch is imported where it runs: importing this package stays light
    import torch

    from .torch_runtime import TorchRuntime

INPUT_NAMES = ("pixels", "tokens", "proprio", "embodiment")
#: The extra input of a model that reads its instruction's sentence embedding
#: (ElasticVLAConfig.instruction_embedding): (B, 512) float32.
SENTENCE_INPUT = "instruction_embedding"
#: Its width (instruction_encoder.EMBEDDING_DIM, which tests/test_instruction_embedding.py checks;
#: not imported here, so that importing the runtimes stays light).
SENTENCE_DIM = 512


def input_names(config) -> tuple[str, ...]:
    """A model's network inputs in ``action_logits``' order: INPUT_NAMES, then the sentence
    embedding when its config reads one."""
    return INPUT_NAMES + ((SENTENCE_INPUT,) if getattr(config, "instruction_embedding", False) else ())
OUTPUT_NAME = "logits"


class Runtime(abc.ABC):
    """Runs one ElasticVLA (any of its submodels) on some backend."""

    #: short backend name used in tables: "torch", "onnxruntime", "tensorrt"
    name: str = "runtime"

    @abc.abstractmethod
    def run(self, batch: dict[str, torch.Tensor], submodel: str, keypoint: bool = True) -> torch.Tensor:
        """Logits (B, T*A, bins) for the model's input tensors, computed by `submodel`;
        ``keypoint=False`` (every row's embodiment leaves the target keypoint out, see
        ``ElasticVLA.uses_keypoint``) lets a runtime run the graph without it: the same logits,
        cheaper. A runtime may ignore it and run the whole graph."""

    def prepare(self, submodels: Iterable[str]) -> None:
        """Do any per-submodel work (export, engine build, graph capture) ahead of time."""

    def close(self) -> None:
        """Release sessions / engines."""

    @property
    def description(self) -> str:
        return self.name


def model_hash(model: torch.nn.Module) -> str:
    """SHA-256 of the model's config and every tensor of its state dict (name, dtype, shape,
    bytes): the identity of a set of weights for export/engine caches."""
    import torch

    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        h.update(repr(sorted(config.to_dict().items())).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def keypoint_variants(model) -> tuple[bool, ...]:
    """The ``keypoint`` values a runtime prepares graphs for: the whole graph, and the one
    without the target keypoint where the model has one and some embodiment does not use it
    (``ElasticVLA.uses_keypoint``; for a model without a keypoint both are the same graph)."""
    if getattr(model, "keypoint", None) is None:
        return (True,)
    if all(model.uses_keypoint(e) for e in model.config.embodiment_names):
        return (True,)
    return (True, False)


def make_runtime(kind: str, model, **kwargs) -> Runtime:
    """Build a runtime by name: "torch", "onnxruntime" (alias "ort") or "tensorrt"."""
    if kind == "torch":
        from .torch_runtime import TorchRuntime

        return TorchRuntime(model, **kwargs)
    if kind in ("onnxruntime", "ort"):
        from .onnx_runtime import OnnxRuntime

        return OnnxRuntime(model, **kwargs)
    if kind == "tensorrt":
        from .tensorrt_runtime import TensorRTRuntime

        return TensorRTRuntime(model, **kwargs)
    raise ValueError(f"unknown runtime {kind!r}; allowed: 'torch', 'onnxruntime', 'tensorrt'")


def check_submodel(policy, submodel: str | None) -> None:
    """A clear error for a submodel name the policy does not serve."""
    if submodel is not None and submodel not in policy.submodel_names:
        raise ValueError(f"submodel {submodel!r} not in {policy.submodel_names}")


def make_vla_runtime(policy, runtime: str, device: str, precision: str, cuda_graph: bool,
                     threads: int = 2):
    """The runtime for an ElasticVLA on `device` (the classes bench/policy_latency.py times).

    torch: eager on the CPU or the GPU (the runtime moves the model and every input batch
    there), bf16/fp16 weights on CUDA (`precision`), one CUDA graph per submodel captured
    here when `cuda_graph` (the input shapes are static at batch 1).
    onnxruntime: TensorRT / CUDA execution providers when the installed build has them and
    `device` is a GPU, else CPU; the runtime's `description` says which it got; `threads` is
    its intra-op thread count on the CPU."""
    on_gpu = device.startswith("cuda")
    if runtime == "torch":
        if (precision != "fp32" or cuda_graph) and not on_gpu:
            raise ValueError(f"precision={precision!r} / cuda_graph={cuda_graph} need "
                             f"device cuda, not {device!r}")
        rt = cast("TorchRuntime", make_runtime("torch", policy, device=device, precision=precision,
                                               cast=precision != "fp32", cuda_graph=cuda_graph))
        if cuda_graph:
            rt.prepare(policy.submodel_names, policy.obs_to_batch([example_observation(policy)]))
        return rt
    if precision != "fp32" or cuda_graph:
        raise ValueError(f"precision and cuda_graph apply to runtime torch, not {runtime!r}")
    if runtime in ("onnxruntime", "ort"):
        # device cpu: the CPU provider even where a GPU build is installed
        providers = ["CPUExecutionProvider"] if device == "cpu" else None
        return make_runtime(runtime, policy, providers=providers, intra_op_threads=threads)
    return make_runtime(runtime, policy)


def example_observation(policy, embodiment: str | None = None):
    """A blank observation of the model's input size (warm-ups, graph capture)."""
    import numpy as np

    from embodied_stack.models.policy.interface import Observation

    c = policy.config
    name = embodiment or c.embodiment_names[0]
    return Observation(rgb=np.zeros((c.image_size, c.image_size, 3), np.uint8),
                       instruction="stop", proprio=np.zeros(c.proprio_dim, np.float32),
                       embodiment=name, depth=np.zeros((c.image_size, c.image_size), np.float32))


__all__ = [
    "INPUT_NAMES",
    "SENTENCE_DIM",
    "SENTENCE_INPUT",
    "input_names",
    "keypoint_variants",
    "OUTPUT_NAME",
    "Runtime",
    "atomic_write_bytes",
    "check_submodel",
    "example_observation",
    "default_cache_dir",
    "make_runtime",
    "make_vla_runtime",
    "model_hash",
]
