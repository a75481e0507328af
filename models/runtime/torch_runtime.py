"""Torch eager runtime: CPU, or CUDA with bf16/fp16 (autocast or a cast copy) and optional
CUDA graphs (at batch 1 a small model is launch-bound; a replayed graph is ~7x
faster on an H200)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from . import Runtime, input_names, keypoint_variants

_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRuntime(Runtime):
    """Runs the model in PyTorch.

    device: "cpu" or "cuda[:i]"; the model is moved there (the runtime then owns it).
    precision: "fp32", "bf16" or "fp16" (reduced precisions need CUDA).
    cast: False = autocast (weights stay fp32); True = cast the weights to `precision`.
    num_threads: torch intra-op threads for CPU (None: leave torch's setting).
    cuda_graph: capture one CUDA graph per (submodel, batch size) and replay it.
    compile: run ``action_logits`` through ``torch.compile`` (Inductor fuses the element-wise ops,
        which at batch 1 on a GPU are most of the kernels); one compile per (submodel, batch
        size), done by ``prepare`` — compile ahead of time, never in the control loop.
    """

    name = "torch"

    def __init__(
        self,
        model,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        cast: bool = False,
        num_threads: int | None = None,
        cuda_graph: bool = False,
        compile: bool = False,
    ):
        if precision not in _PRECISIONS:
            raise ValueError(f"precision={precision!r}; allowed: {sorted(_PRECISIONS)}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' requested but torch.cuda.is_available() is False")
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision={precision!r} needs a CUDA device; use 'fp32' on {self.device}")
        if cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA device")
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.precision, self.cast, self.cuda_graph = precision, cast, cuda_graph
        self.dtype = _PRECISIONS[precision]
        model.eval()
        model.to(self.device)
        if cast and self.dtype != torch.float32:
            model.to(self.dtype)
        self.model = model
        self._graphs: dict[tuple[str, int, bool], tuple] = {}
        self.compiled = None
        if compile:
            import torch._dynamo as dynamo

            cfg = dynamo.config
            for name in ("recompile_limit", "cache_size_limit"):  # one graph per submodel x batch
                if hasattr(cfg, name):
                    setattr(cfg, name, max(getattr(cfg, name), 64))
            model.set_view_cache(False)  # slices traced from the parameters
            self.compiled = torch.compile(model.action_logits, dynamic=False)

    @property
    def description(self) -> str:
        mode = "cast" if self.cast else "autocast"
        extra = ("+compile" if self.compiled is not None else "") + ("+graph" if self.cuda_graph else "")
        return f"torch:{self.device.type}:{self.precision}{'' if self.precision == 'fp32' else ':' + mode}{extra}"

    def _forward(self, batch: dict[str, torch.Tensor], keypoint: bool = True) -> torch.Tensor:
        args = [batch[k] for k in input_names(self.model.config)]
        fn = self.compiled if self.compiled is not None else self.model.action_logits
        if self.cast and self.dtype != torch.float32:
            args[0] = args[0].to(self.dtype)
            args[2] = args[2].to(self.dtype)
        if self.precision != "fp32" and not self.cast:
            with torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False):
                return fn(*args, keypoint=keypoint)
        return fn(*args, keypoint=keypoint)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            return batch
        return {k: batch[k].to(self.device, non_blocking=True) for k in input_names(self.model.config)}

    def _graph_for(self, batch: dict[str, torch.Tensor], submodel: str, keypoint: bool = True):
        b = batch["pixels"].shape[0]
        key = (submodel, b, keypoint)
        entry = self._graphs.get(key)
        if entry is None:
            static = {k: batch[k].to(self.device).clone() for k in input_names(self.model.config)}
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    self._forward(static, keypoint)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._forward(static, keypoint)
            entry = self._graphs[key] = (graph, static, out)
        return entry

    def prepare(self, submodels: Iterable[str], batch: dict[str, torch.Tensor] | None = None) -> None:
        """With an example batch: compile and/or capture each submodel's graph now."""
        if batch is None or not (self.cuda_graph or self.compiled is not None):
            return
        active = self.model.submodel
        try:
            with torch.inference_mode():
                for name in submodels:
                    self.model.set_submodel(name)
                    for keypoint in keypoint_variants(self.model):
                        if self.cuda_graph:
                            self._graph_for(batch, name, keypoint)
                        else:
                            self._forward(self._to_device(batch), keypoint)
        finally:
            # The model keeps serving the submodel it had: select_action runs the model's
            # current submodel, and leaving it on the last one prepared silently ran 1/4.
            self.model.set_submodel(active)

    @torch.inference_mode()
    def run(self, batch: dict[str, torch.Tensor], submodel: str, keypoint: bool = True) -> torch.Tensor:
        if self.model.submodel != submodel:
            self.model.set_submodel(submodel)
        if self.cuda_graph:
            graph, static, out = self._graph_for(batch, submodel, keypoint)
            for k in input_names(self.model.config):
                static[k].copy_(batch[k], non_blocking=True)
            graph.replay()
            return out
        return self._forward(self._to_device(batch), keypoint)

    def close(self) -> None:
        self._graphs.clear()
