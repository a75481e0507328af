"""Policies: the interface every backend implements, the embedded ElasticVLA, the
MiMo-Embodied-7B adapter, and the simulator's expert relay."""

from __future__ import annotations

from pathlib import Path

#: The shipped default model: an ElasticVLA trained by this project (sim/train), a few MB.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "default_vla"


def load_default_policy(path: str | Path | None = None, device: str = "cpu"):
    """Load an ElasticVLA from `path`, or the shipped default model when `path` is None."""
    from embodied_stack.models.policy.elastic_vla import ElasticVLA

    directory = Path(path) if path else DEFAULT_MODEL_DIR
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no model at {directory}" + (
                " (the shipped default model is missing: train it with "
                "`embodied-stack train`)" if path is None else ""))
    return ElasticVLA.from_pretrained(directory, device=device)
