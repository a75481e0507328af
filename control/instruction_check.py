"""InstructionCheck: grounds each new instruction on a thread of its own, off the executor.

The policy node asks it about every instruction it accepts; the verdict (a
:class:`~embodied_stack.models.policy.instruction_grounding.Grounding`) comes back through
``on_verdict(text, grounding)``, and PolicyLoop.on_grounding decides what it means for the robot
(until the verdict, no chunk is asked for; an instruction that is not grounded stops the robot
with the reason on /diagnostics). Why a thread: the sentence encoder's first load takes seconds
(bench/results/instruction_encoder_amd_epyc.json) and a new instruction a few milliseconds, and
nothing the node runs on its executor may wait for either. The encoder is loaded at start so
the first instruction does not wait for it.

Only the newest instruction is grounded: one still waiting when a newer arrives is dropped (it
no longer matters). With a scene (:meth:`InstructionCheck.set_scene`: what is in view, read
by the ``scene`` parser into the known tasks it can serve), an instruction whose task has
nothing in the scene to act on is not grounded either ("nothing in the scene matches it"); a
new scene grounds the current instruction again, so an object that leaves the view stops the
robot and one that arrives lets it go. A grounder that fails (the encoder package missing, a broken file) gives a
verdict that is not grounded, with the error as its message: the robot does not move on an
instruction nobody checked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from embodied_stack.control.input_sync import LatestSlot
from embodied_stack.models.policy.elastic_vla.instruction_encoder import InstructionEncoder, shared_encoder
from embodied_stack.models.policy.instruction_grounding import (
    DEFAULT_THRESHOLD,
    Grounding,
    InstructionGrounder,
)

__all__ = ["DEFAULT_THRESHOLD", "GROUNDER_FAILED", "InstructionCheck"]

#: The verdict's reason when the grounder itself failed.
GROUNDER_FAILED = "grounder_failed"


class InstructionCheck:
    """``prototypes``: each known task's sentences (task -> [sentence]); ``threshold``: the
    grounder's least similarity; ``on_verdict(text, grounding)`` is called on this object's
    thread; ``encoder``: the sentence encoder (default: the process's shared packaged one,
    loaded here; a policy that reads sentence embeddings then finds each instruction cached);
    ``scene(text)``: the known tasks a scene description can serve (None: any), ValueError on
    one it cannot read (sim.worlds.paraphrase.scene_tasks reads "red cube, green ball")."""

    def __init__(self, prototypes: Mapping[str, Sequence[str]], threshold: float,
                 on_verdict: Callable[[str, Grounding], None], encoder: InstructionEncoder | None = None,
                 scene: Callable[[str], Collection[str] | None] | None = None, preload: bool = True):
        self.grounder = InstructionGrounder(encoder or shared_encoder(), prototypes, threshold)
        self._on_verdict = on_verdict
        self._scene = scene
        self._slot = LatestSlot(0.0, time.monotonic)
        self._available: frozenset[str] | None = None  # None: no scene known, every task
        self._current: str | None = None
        self.load_error: str | None = None
        self._thread = threading.Thread(target=self._run, args=(preload,), name="instruction_check",
                                        daemon=True)
        self._thread.start()

    def submit(self, text: str) -> None:
        """Ground `text` (replaces one still waiting)."""
        self._current = text
        self._slot.offer(text)

    def set_scene(self, text: str) -> None:
        """What is in view, from now on (read by ``scene``; ValueError, and nothing changes,
        on text it cannot read); the current instruction is grounded again when the tasks the
        scene can serve change."""
        if self._scene is None:
            raise ValueError("this check was made without a scene parser")
        available = self._scene(text)
        available = None if available is None else frozenset(available)
        if available != self._available:
            self._available = available
            if self._current is not None:
                self._slot.offer(self._current)

    def close(self, timeout: float = 5.0) -> None:
        self._slot.close()
        self._thread.join(timeout)

    def ground(self, text: str) -> Grounding:
        """One verdict, here and now (the thread's work; a failure is a verdict too)."""
        if self.load_error is not None:
            return Grounding(None, 0.0, GROUNDER_FAILED, message=self.load_error)
        try:
            return self.grounder.ground(text, self._available)
        except Exception as exc:  # noqa: BLE001 - any failure means "not checked": do not move
            return Grounding(None, 0.0, GROUNDER_FAILED,
                             message=f"the instruction could not be checked: {type(exc).__name__}: {exc}")

    def _run(self, preload: bool) -> None:
        if preload:
            try:  # the encoder and the known tasks' embeddings, before the first instruction
                self.grounder.scores(self.grounder.tasks[0])
            except Exception as exc:  # noqa: BLE001 - reported with every verdict
                self.load_error = (f"the instruction grounder cannot start: {type(exc).__name__}: "
                                   f"{exc}")
        while (text := self._slot.take()) is not None:  # (None: closed)
            self._on_verdict(text, self.ground(text))
