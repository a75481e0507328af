"""Can this instruction be grounded? Known tasks, a sentence encoder and a threshold.

An instruction is compared with every known task's prototype sentences (the worlds' canonical
instructions, e.g. "touch the red cube", "change to the left lane") by the cosine similarity
of their sentence embeddings (:class:`~.elastic_vla.instruction_encoder.InstructionEncoder`).
The task whose nearest prototype is closest wins, and the instruction is

- **not grounded** (``task=None``) when even that similarity is below ``threshold`` ("make me
  a coffee", "touch the purple pyramid" when no known task is about purple pyramids), reason
  ``below_threshold``;
- with a scene (the caller passes the tasks it can serve as ``available``): grounded to the
  nearest *available* task when that one is above the threshold too and at most ``margin``
  below the nearest task overall (a reference the scene resolves: "touch the cube" with one
  cube, the red one, reads a little nearer "touch the blue cube" than "touch the red cube");
  otherwise **not grounded**, reason ``not_in_scene`` ("touch the green ball" with no green
  ball on the table);
- otherwise grounded to the nearest task, reason ``grounded``.

The threshold and the margin are chosen on validation data (generator paraphrases vs. unrelated or
ungroundable instructions, bench/data/grounding_validation.json) by bench/grounding.py;
bench/results/grounding_threshold.json records them; :data:`DEFAULT_THRESHOLD` and
:data:`DEFAULT_MARGIN` are their values.
A robot that gets an ungrounded instruction reports the reason and does not move.

Pure: no ROS, no simulator (the caller brings the prototypes, e.g.
``sim.worlds.paraphrase.task_prototypes(world)``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .elastic_vla.instruction_encoder import InstructionEncoder

#: Chosen on validation data by bench/grounding.py (bench/results/grounding_threshold.json).
DEFAULT_THRESHOLD = 0.38
#: How far below the nearest task overall an available task may be and still be the one
#: meant (bench/results/grounding_threshold.json).
DEFAULT_MARGIN = 0.03

GROUNDED, BELOW_THRESHOLD, NOT_IN_SCENE, EMPTY = (
    "grounded", "below_threshold", "not_in_scene", "empty")


@dataclass(frozen=True)
class Grounding:
    """``task``: the grounded task's key, or None; ``similarity``: cosine to the nearest
    known task's nearest prototype; ``reason``: one of grounded / below_threshold /
    not_in_scene / empty; ``nearest``: that task's key and ``prototype`` its sentence (also
    when not grounded); ``message``: the reason in words, for /diagnostics."""

    task: str | None
    similarity: float
    reason: str
    nearest: str | None = None
    prototype: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.task is not None

    def as_tuple(self) -> tuple[str | None, float, str]:
        return self.task, self.similarity, self.reason


class InstructionGrounder:
    """Ground instructions against known tasks: ``prototypes`` maps a task key to its
    canonical sentences. Prototype embeddings are computed once (lazily); each instruction
    costs one encoder call the first time and a dict lookup after (the encoder's cache)."""

    def __init__(self, encoder: InstructionEncoder, prototypes: Mapping[str, Sequence[str]],
                 threshold: float = DEFAULT_THRESHOLD, margin: float = DEFAULT_MARGIN):
        if not prototypes or any(not texts for texts in prototypes.values()):
            raise ValueError("every known task needs at least one prototype sentence")
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold}")
        self.encoder = encoder
        self.threshold = float(threshold)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self._keys: list[str] = []
        self._texts: list[str] = []
        for key, texts in prototypes.items():
            for text in texts:
                self._keys.append(key)
                self._texts.append(text)
        self._matrix: np.ndarray | None = None

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(self._keys))

    def _prototype_matrix(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = self.encoder.encode_batch(self._texts)
        return self._matrix

    def scores(self, instruction: str) -> dict[str, float]:
        """Similarity of the instruction to each known task (its nearest prototype)."""
        sims = self._prototype_matrix() @ self.encoder.encode(instruction)
        out: dict[str, float] = {}
        for key, s in zip(self._keys, sims.tolist()):
            out[key] = max(out.get(key, -1.0), float(s))
        return out

    def ground(self, instruction: str, available: Collection[str] | None = None,
               threshold: float | None = None, margin: float | None = None) -> Grounding:
        """Ground one instruction; ``available`` (optional) are the task keys the scene can
        serve; ``threshold`` and ``margin`` override the grounder's."""
        thr = self.threshold if threshold is None else float(threshold)
        mar = self.margin if margin is None else float(margin)
        if not instruction or not instruction.strip():
            return Grounding(None, 0.0, EMPTY, message="empty instruction")
        sims = self._prototype_matrix() @ self.encoder.encode(instruction)
        i = int(np.argmax(sims))
        sim, key, proto = float(sims[i]), self._keys[i], self._texts[i]
        if sim < thr:
            return Grounding(None, sim, BELOW_THRESHOLD, key, proto,
                             f"no known task matches {instruction!r}: the nearest, {proto!r}, "
                             f"is at similarity {sim:.2f} < threshold {thr:.2f}")
        if available is not None and key not in available:
            mask = np.array([k in available for k in self._keys])
            if mask.any():
                j = int(np.flatnonzero(mask)[int(np.argmax(sims[mask]))])
                sim_j = float(sims[j])
                if sim_j >= thr and sim - sim_j <= mar:
                    return Grounding(self._keys[j], sim_j, GROUNDED, self._keys[j], self._texts[j],
                                     f"{instruction!r} grounded as {self._texts[j]!r} in this "
                                     f"scene (similarity {sim_j:.2f}; nearest overall "
                                     f"{proto!r} at {sim:.2f})")
            return Grounding(None, sim, NOT_IN_SCENE, key, proto,
                             f"{instruction!r} reads as {proto!r} (similarity {sim:.2f}), but "
                             "nothing in the scene matches it")
        return Grounding(key, sim, GROUNDED, key, proto,
                         f"{instruction!r} grounded as {proto!r} (similarity {sim:.2f})")


def ground_instruction(encoder: InstructionEncoder, instruction: str,
                       prototypes: Mapping[str, Sequence[str]],
                       threshold: float = DEFAULT_THRESHOLD,
                       available: Collection[str] | None = None,
                       margin: float = DEFAULT_MARGIN) -> tuple[str | None, float, str]:
    """(task or None, similarity, reason) for one instruction: a one-shot
    :class:`InstructionGrounder`."""
    return InstructionGrounder(encoder, prototypes, threshold, margin).ground(
        instruction, available).as_tuple()


def load_task_prototypes(path: str) -> dict[str, list[str]]:
    """Known tasks from a YAML or JSON file: ``{task: [sentence, ...]}`` (a single sentence may
    be given as a string). ValueError naming the file and what is wrong with it."""
    import json
    import os

    if not os.path.isfile(path):
        raise ValueError(f"known-task file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # a parse error: say which file and why
        raise ValueError(f"known-task file {path!r} cannot be read: {e}") from e
    if not isinstance(data, dict) or not data:
        raise ValueError(f"known-task file {path!r} must map each task to its sentences, "
                         f"got {type(data).__name__}")
    out: dict[str, list[str]] = {}
    for task, sentences in data.items():
        sentences = [sentences] if isinstance(sentences, str) else sentences
        if (not isinstance(sentences, list) or not sentences
                or not all(isinstance(s, str) and s.strip() for s in sentences)):
            raise ValueError(f"known-task file {path!r}: task {task!r} needs a list of "
                             f"non-empty sentences, got {sentences!r}")
        out[str(task)] = [s.strip() for s in sentences]
    return out
