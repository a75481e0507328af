"""ONNX export (one file per submodel) and ONNX Runtime execution.

Export traces the model's tensors-in / logits-out ``ElasticVLA.action_logits`` with
``torch.onnx.export(..., dynamo=True)``: the legacy TorchScript exporter has no
``aten::rms_norm``. Each submodel is exported with its slice sizes baked in (the
exporter folds the prefix slices into the initializers), with a dynamic batch dimension. Files
are cached under ``<cache_dir>/onnx/`` by a key over the weights hash, the submodel's resolved
shape, the opset and the torch version, and written atomically (temp file + rename). Each
export's SHA-256 and size are recorded beside it (``<file>.json``) and checked before it is
loaded: a truncated, changed or unreadable file is exported again with a warning naming it and
the reason (models/runtime/cache_check.py).

Unlike the torch runtime, each exported submodel holds its own copy of its (sliced) weights,
so ORT memory grows with the number of prepared submodels: prepare only the ones you use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import OUTPUT_NAME, SENTENCE_DIM, Runtime, default_cache_dir, input_names, keypoint_variants, model_hash
from .cache_check import check_digest, record_digest, sidecar_of

log = logging.getLogger(__name__)

EXPORT_FORMAT = 2  #: bump when the export code changes in a way that changes the files
#: Opset 23 has RMSNormalization and Attention, which ORT runs as fused kernels (~10% faster
#: than opset 18's decomposed norms on this CPU); an ORT too old for it falls back to 18.
DEFAULT_OPSET = 23
FALLBACK_OPSET = 18


class _ActionLogits(torch.nn.Module):
    """The module the exporter traces (it takes modules, not methods): the model's
    ``action_logits`` (``keypoint``: with the target keypoint, or the graph without it)."""

    def __init__(self, model, keypoint: bool = True):
        super().__init__()
        self.model = model
        self.keypoint = keypoint

    def forward(self, pixels, tokens, proprio, embodiment):
        return self.model.action_logits(pixels, tokens, proprio, embodiment, None, self.keypoint)


class _ActionLogitsSentence(_ActionLogits):
    """The same for a model that also reads the instruction's sentence embedding."""

    def forward(self, pixels, tokens, proprio, embodiment, instruction_embedding):  # type: ignore[override]
        return self.model.action_logits(pixels, tokens, proprio, embodiment, instruction_embedding,
                                        self.keypoint)


def graph_name(submodel: str, keypoint: bool = True) -> str:
    """A graph's name in the cache and in OnnxRuntime's sessions: the submodel's, with
    LEAN_SUFFIX for the graph without the target keypoint."""
    return submodel if keypoint else submodel + LEAN_SUFFIX


#: Marks the graph without the target keypoint (runtimes.keypoint_variants).
LEAN_SUFFIX = "-nokp"


def _example_batch(model, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
    c = model.config
    g = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    return (
        torch.rand(batch_size, c.in_channels, c.image_size, c.image_size, generator=g).to(device),
        torch.randint(0, len(model.tokenizer), (batch_size, c.max_instruction_tokens), generator=g).to(device),
        torch.randn(batch_size, c.proprio_dim, generator=g).to(device),
        (torch.arange(batch_size) % len(c.embodiments)).to(device),
    ) + ((torch.nn.functional.normalize(torch.randn(batch_size, SENTENCE_DIM, generator=g), dim=-1).to(device),)
         if c.instruction_embedding else ())


def export_key(model, submodel: str, opset: int = DEFAULT_OPSET, weights_hash: str | None = None,
               keypoint: bool = True) -> str:
    shape = model.resolve_submodel(submodel)
    payload = {
        "weights": weights_hash or model_hash(model),
        "shape": [shape.hidden, shape.heads, shape.ffn, shape.layers, list(model.layer_rank.tolist())],
        "opset": opset,
        "torch": torch.__version__,
        "format": EXPORT_FORMAT,
    }
    if not keypoint:  # (the whole graph's key is what it was before the lean one existed)
        payload["keypoint"] = False
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def export_onnx(model, submodel: str, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                keypoint: bool = True) -> Path:
    """Export `submodel` of `model` to `path` (atomically), batch dimension dynamic;
    ``keypoint=False``: the graph without the target keypoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = model.submodel_shape.spec
    was_training = model.training
    model.eval()
    model.set_submodel(submodel)
    model.set_view_cache(False)  # slice parameters in the graph so the exporter sees them
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" notices
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        names = input_names(model.config)
        dynamic = {name: {0: batch} for name in names}
        wrapper = _ActionLogitsSentence if model.config.instruction_embedding else _ActionLogits
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper(model, keypoint),
                _example_batch(model),
                tmp,
                dynamo=True,
                input_names=list(names),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic,
                opset_version=opset,
                external_data=False,
                optimize=True,
                verbose=False,
            )
        os.replace(tmp, path)
        record_digest(path, extra={"submodel": submodel, "opset": opset, "keypoint": keypoint})
    finally:
        quiet.setLevel(level)
        if os.path.exists(tmp):
            os.unlink(tmp)
        model.set_view_cache(True)
        model.set_submodel(previous)
        model.train(was_training)
    return path


def onnx_cache_path(model, submodel: str, cache_dir: str | os.PathLike, opset: int = DEFAULT_OPSET,
                    weights_hash: str | None = None, keypoint: bool = True) -> Path:
    """Where the cached export of `submodel` lives (the name holds the cache key)."""
    key = export_key(model, submodel, opset, weights_hash, keypoint)
    name = graph_name(submodel, keypoint).replace("/", "_")
    return Path(cache_dir) / "onnx" / f"elastic_vla-{name}-{key}.onnx"


def ensure_onnx(model, submodel: str, cache_dir: str | os.PathLike, opset: int = DEFAULT_OPSET,
                weights_hash: str | None = None, keypoint: bool = True) -> Path:
    """The cached export of `submodel` (``keypoint=False``: its graph without the target
    keypoint), exporting it first on a miss, or again when the cached file does not match the
    hash recorded at its export."""
    path = onnx_cache_path(model, submodel, cache_dir, opset, weights_hash, keypoint)
    if path.is_file():
        problem = check_digest(path)
        if problem is None:
            return path
        log.warning("ONNX cache file %s failed its check: %s; exporting it again", path, problem)
        path.unlink(missing_ok=True)
        sidecar_of(path).unlink(missing_ok=True)
    else:
        log.info("exporting submodel %s to %s", graph_name(submodel, keypoint), path)
    export_onnx(model, submodel, path, opset, keypoint)
    return path


def select_providers(requested: Iterable[str] | None = None) -> list[str]:
    """Execution providers in preference order: TensorRT, CUDA, then CPU, keeping only those
    `onnxruntime.get_available_providers()` lists (or the requested ones, checked)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested is not None:
        requested = list(requested)
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"ONNX Runtime providers {missing} not available; available: {available}")
        return requested
    order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in order if p in available]


class OnnxRuntime(Runtime):
    """ElasticVLA on ONNX Runtime, one InferenceSession per submodel.

    cache_dir: where exported .onnx files live (default: models.runtime.default_cache_dir()).
    submodels: names exported and loaded now (default: all named submodels of the model).
    providers: explicit execution providers, else TensorRT > CUDA > CPU as available.
    intra_op_threads: threads of the CPU execution provider.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model,
        cache_dir: str | os.PathLike | None = None,
        submodels: Iterable[str] | None = None,
        providers: Iterable[str] | None = None,
        intra_op_threads: int = 2,
        opset: int = DEFAULT_OPSET,
    ):
        import onnxruntime as ort

        self._ort = ort
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.providers = select_providers(providers)
        self.intra_op_threads = int(intra_op_threads)
        self.opset = opset
        self.sessions: dict[str, Any] = {}  # onnxruntime.InferenceSession (imported lazily)
        self.paths: dict[str, Path] = {}
        self._weights_hash = model_hash(model)
        self._inputs = input_names(model.config)
        self._variants = keypoint_variants(model)
        self.prepare(model.submodel_names if submodels is None else submodels)

    @property
    def description(self) -> str:
        return f"onnxruntime:{self.providers[0].replace('ExecutionProvider', '')}"

    def prepare(self, submodels: Iterable[str]) -> None:
        """Each submodel's graph, and its graph without the target keypoint where the model
        has embodiments that do not use it (keypoint_variants)."""
        for name in submodels:
            for keypoint in self._variants:
                self._prepare_graph(name, keypoint)

    def _prepare_graph(self, name: str, keypoint: bool) -> None:
        graph = graph_name(name, keypoint)
        if graph in self.sessions:
            return
        path = ensure_onnx(self.model, name, self.cache_dir, self.opset, self._weights_hash, keypoint)
        try:
            session = self._session(path)
        except Exception as e:  # noqa: BLE001 - ORT raises several types for unsupported opsets
            if self.opset == FALLBACK_OPSET:
                raise
            log.warning("ONNX Runtime %s cannot load opset %d (%s); using opset %d",
                        self._ort.__version__, self.opset, e, FALLBACK_OPSET)
            self.opset = FALLBACK_OPSET
            path = ensure_onnx(self.model, name, self.cache_dir, self.opset, self._weights_hash, keypoint)
            session = self._session(path)
        self.sessions[graph] = session
        self.paths[graph] = path

    def _session(self, path: Path):
        opts = self._ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: by default ORT's pool threads spin after each run,
        # taking the cores the camera driver and the rest of the graph need (a robot
        # computer is shared).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return self._ort.InferenceSession(str(path), opts, providers=self.providers)

    def run(self, batch: dict[str, torch.Tensor], submodel: str, keypoint: bool = True) -> torch.Tensor:
        # a model without the keypoint has one graph: "without" is the same one
        session = self.sessions.get(graph_name(submodel, keypoint or len(self._variants) == 1))
        if session is None:
            raise KeyError(
                f"submodel {submodel!r} not prepared for ONNX Runtime (prepared: {sorted(self.sessions)}); "
                "call prepare([...]) outside the control loop"
            )
        feeds = {k: np.ascontiguousarray(batch[k].detach().cpu().numpy()) for k in self._inputs}
        return torch.from_numpy(session.run([OUTPUT_NAME], feeds)[0])

    def close(self) -> None:
        self.sessions.clear()
