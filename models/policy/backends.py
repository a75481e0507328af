"""Build the policy backend a node's `backend` parameter names (vla, mimo, expert), with its
runtime prepared: the policy node and the elastic node's on-the-spot latency measurement load
backends here, never in the control loop. BackendSettings are the policy node's parameters
for it."""

from __future__ import annotations

from dataclasses import dataclass

from embodied_stack.models.policy.interface import Policy
from embodied_stack.models.runtime import check_submodel, make_vla_runtime
from embodied_stack.models.settings import setting

#: Backend names `load_backend` knows.
BACKENDS = ("vla", "mimo", "expert")


@dataclass(frozen=True)
class BackendSettings:
    """`load_backend`'s arguments as the policy node's parameters (models/settings.py): all
    read at start-up but `submodel`, which the node switches at run time."""

    backend: str = setting("vla", "policy backend: vla (own ElasticVLA), mimo (MiMo-Embodied-7B "
                                  "checkpoint), expert (sim only)", fixed=True)
    model_path: str = setting("", "model directory; empty = the shipped default model", fixed=True)
    device: str = setting("cpu", "torch device for the backend: cpu, cuda, cuda:0", fixed=True)
    runtime: str = setting("onnxruntime", "vla runtime: torch (eager; CPU or CUDA) or onnxruntime "
                                          "(exported per submodel at start-up, cached; faster on "
                                          "CPU; CUDA/TensorRT providers when installed)", fixed=True)
    precision: str = setting("fp32", "vla on CUDA with runtime torch: fp32, bf16 or fp16 weights",
                             fixed=True)
    cuda_graph: bool = setting(False, "vla on CUDA with runtime torch: replay one captured CUDA "
                                      "graph per submodel", fixed=True)
    threads: int = setting(2, "vla with runtime onnxruntime on the CPU: intra-op threads; 1 leaves "
                              "CPUs to other processes and, under a load that holds every CPU, "
                              "has the shorter tail (bench/elastic_budget.py --check tells)",
                           lo=1, hi=256, fixed=True)
    submodel: str = setting("full", "elastic submodel (full, 3/4, 1/2, 1/4 for ElasticVLA, and for "
                                    "mimo with mimo_elastic); switchable at run time")
    mimo_elastic: bool = setting(False, "mimo: rank and permute the Qwen decoder at start-up into "
                                        "nested submodels full, 3/4, 1/2, 1/4 (zero-shot; "
                                        "calibrated on synthetic frames)", fixed=True)


def load_backend(backend: str, model_path: str, device: str, runtime: str = "torch",
                 precision: str = "fp32", cuda_graph: bool = False,
                 submodel: str | None = None, mimo_elastic: bool = False, threads: int = 2) -> Policy:
    """Build the policy backend `backend` names. For `vla`, the runtime is prepared here (ONNX
    export / engine build / CUDA graph capture for every named submodel, cached on disk where
    it can be), never in the control loop; `submodel` is checked first, so a wrong name fails
    before that work. For `mimo`, `mimo_elastic` ranks and permutes the Qwen decoder at
    start-up so `submodel` can switch its nested submodels."""
    if backend == "expert":
        from embodied_stack.models.policy.expert_relay import ExpertRelayPolicy

        return ExpertRelayPolicy()
    if backend == "vla":
        from embodied_stack.models.policy import load_default_policy

        policy = load_default_policy(model_path or None)
        check_submodel(policy, submodel)
        if runtime != "torch" or device != "cpu" or precision != "fp32" or cuda_graph:
            policy.use_runtime(make_vla_runtime(policy, runtime, device, precision, cuda_graph, threads))
        return policy
    if backend == "mimo":
        from embodied_stack.models.policy.mimo_adapter import MiMoEmbodiedPolicy

        if not model_path:
            raise ValueError("backend 'mimo' needs model_path: a local MiMo-Embodied-7B checkpoint")
        if submodel not in (None, "full") and not mimo_elastic:
            raise ValueError(f"submodel {submodel!r}: backend 'mimo' serves only 'full' unless "
                             "mimo_elastic:=true")
        policy = MiMoEmbodiedPolicy.from_pretrained(model_path, device=device)
        if mimo_elastic:
            policy.make_elastic()
        return policy
    raise ValueError(f"backend {backend!r} not in {BACKENDS}")
