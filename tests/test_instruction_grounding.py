"""Instruction grounding: nearest known task above a threshold, the scene check, the reasons;
then the packaged encoder at the threshold chosen on validation data
(bench/results/grounding_threshold.json)."""

import json
from pathlib import Path

import numpy as np
import pytest

from embodied_stack.models.policy import instruction_grounding as ig
from embodied_stack.models.policy.elastic_vla import instruction_encoder as ie
from embodied_stack.models.policy.elastic_vla.instruction_encoder import InstructionEncoder
from embodied_stack.models.policy.instruction_grounding import (
    BELOW_THRESHOLD,
    EMPTY,
    GROUNDED,
    NOT_IN_SCENE,
    InstructionGrounder,
    ground_instruction,
)

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "grounding_threshold.json"
VOCAB = ["touch", "push", "red", "blue", "cube", "ball", "left", "lane", "keep", "coffee"]


def bag_of_words(texts):
    """A tiny deterministic encoder: counts of a fixed vocabulary (plus a catch-all)."""
    out = np.zeros((len(texts), len(VOCAB) + 1))
    for i, t in enumerate(texts):
        for w in t.split():
            out[i, VOCAB.index(w) if w in VOCAB else len(VOCAB)] += 1
    return out


PROTOS = {"touch red cube": ["touch the red cube"], "touch blue ball": ["touch the blue ball"],
          "keep_lane": ["keep lane", "keep your lane"]}


@pytest.fixture
def grounder():
    return InstructionGrounder(InstructionEncoder(backend=bag_of_words), PROTOS, threshold=0.6,
                               margin=0.05)


def test_grounds_to_the_nearest_known_task(grounder):
    g = grounder.ground("Touch the red cube.")
    assert g.ok and g.task == "touch red cube" and g.reason == GROUNDED
    assert g.similarity == pytest.approx(1.0) and g.prototype == "touch the red cube"
    assert grounder.ground("keep your lane").task == "keep_lane"
    assert grounder.tasks == list(PROTOS)


def test_below_threshold_is_not_grounded_and_says_why(grounder):
    g = grounder.ground("make me a coffee")
    assert g.task is None and g.reason == BELOW_THRESHOLD and g.similarity < 0.6
    assert "threshold" in g.message and g.nearest in PROTOS
    assert ground_instruction(grounder.encoder, "make me a coffee", PROTOS, 0.6)[0] is None
    assert grounder.ground("   ").reason == EMPTY
    # a lower threshold per call grounds it to something
    assert grounder.ground("make me a coffee", threshold=-1.0).ok


def test_known_task_with_nothing_in_the_scene_is_not_grounded(grounder):
    g = grounder.ground("touch the blue ball", available={"touch red cube", "keep_lane"})
    assert g.task is None and g.reason == NOT_IN_SCENE and g.nearest == "touch blue ball"
    assert "nothing in the scene" in g.message
    assert grounder.ground("touch the blue ball", available={"touch blue ball"}).ok
    assert grounder.ground("touch the blue ball", available=set()).reason == NOT_IN_SCENE


def test_an_available_task_within_the_margin_is_the_one_meant():
    # "touch the ball" is nearest "touch the blue ball" (0.87) and 0.29 from "touch the red
    # cube" (0.58): with only the red cube in the scene, a margin of 0.3 takes the red cube,
    # a margin of 0 says nothing in the scene matches
    enc = InstructionEncoder(backend=bag_of_words)
    near = InstructionGrounder(enc, PROTOS, threshold=0.5, margin=0.0).scores("touch the ball")
    assert near["touch blue ball"] - near["touch red cube"] == pytest.approx(0.289, abs=0.01)
    wide = InstructionGrounder(enc, PROTOS, threshold=0.5, margin=0.3)
    g = wide.ground("touch the ball", available={"touch red cube"})
    assert g.task == "touch red cube" and g.reason == GROUNDED
    assert g.similarity == pytest.approx(near["touch red cube"])
    assert wide.ground("touch the ball", available={"touch red cube"}, margin=0.0).reason == NOT_IN_SCENE
    # the available one must clear the threshold too
    assert wide.ground("touch the ball", available={"touch red cube"},
                       threshold=0.6).reason == NOT_IN_SCENE


def test_rejects_bad_arguments():
    enc = InstructionEncoder(backend=bag_of_words)
    with pytest.raises(ValueError):
        InstructionGrounder(enc, {}, 0.5)
    with pytest.raises(ValueError):
        InstructionGrounder(enc, {"a": []}, 0.5)
    with pytest.raises(ValueError):
        InstructionGrounder(enc, PROTOS, 1.5)
    with pytest.raises(ValueError):
        InstructionGrounder(enc, PROTOS, 0.5, margin=-0.1)


def test_defaults_are_the_threshold_and_margin_chosen_on_validation():
    chosen = json.loads(RESULTS.read_text())
    assert ig.DEFAULT_THRESHOLD == chosen["threshold"]
    assert ig.DEFAULT_MARGIN == chosen["margin"]
    assert "command" in chosen and chosen["validation_file"] == "bench/data/grounding_validation.json"


@pytest.fixture(scope="module")
def real():
    pytest.importorskip(ie.MODULE, reason=f"pip package {ie.PIP_PACKAGE} not installed")
    from embodied_stack.sim.worlds.paraphrase import task_prototypes

    enc = InstructionEncoder().load()
    return {w: InstructionGrounder(enc, task_prototypes(w)) for w in ("tabletop", "driving")}


def test_packaged_encoder_grounds_the_grammar_and_rejects_the_unrelated(real):
    from embodied_stack.sim.worlds.driving import INSTRUCTIONS
    from embodied_stack.sim.worlds.paraphrase import available_tasks

    for task, texts in INSTRUCTIONS.items():
        for t in texts:
            assert real["driving"].ground(t).task == task
    assert real["tabletop"].ground("push the blue ball to the left").task == \
        "push the blue ball to the left"
    for w in ("tabletop", "driving"):
        for s in ("make me a coffee", "what time is it", "tell me a joke"):
            assert not real[w].ground(s).ok, (w, s)
    scene = available_tasks("tabletop", [("red", "cube"), ("blue", "ball")])
    g = real["tabletop"].ground("touch the green ball", available=scene)
    assert g.reason == NOT_IN_SCENE
    assert real["tabletop"].ground("touch the red cube", available=scene).ok


# ------------------------------------------------------------------ known tasks from a file
def test_known_tasks_load_from_yaml_or_json_and_bad_files_say_what_is_wrong(tmp_path):
    from embodied_stack.sim.worlds.paraphrase import known_task_prototypes

    good = tmp_path / "tasks.yaml"
    good.write_text("wave: [wave your hand, say hello]\nstop: stop moving\n")
    assert known_task_prototypes(str(good)) == {"wave": ["wave your hand", "say hello"],
                                                "stop": ["stop moving"]}
    (tmp_path / "tasks.json").write_text(json.dumps({"wave": ["wave"]}))
    assert known_task_prototypes(str(tmp_path / "tasks.json")) == {"wave": ["wave"]}
    assert "touch the red cube" in known_task_prototypes("tabletop")
    assert "keep_lane" in known_task_prototypes("driving")
    for content, words in (("[a, b]", "must map each task"), ("wave: []", "needs a list"),
                           ("wave: [ok, 3]", "needs a list"), ("wave: [", "cannot be read")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(content)
        with pytest.raises(ValueError, match=words):
            known_task_prototypes(str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        known_task_prototypes(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="give a world"):
        known_task_prototypes("kitchen")
    with pytest.raises(ValueError, match="primitives or shapes"):
        known_task_prototypes("tabletop:teapots")


# ------------------------------------------------------------------ InstructionCheck (its thread)
def _verdict(text, **check_kwargs):
    """The one verdict an InstructionCheck gives on `text` (its callback, from its thread)."""
    import threading

    from embodied_stack.control.instruction_check import InstructionCheck

    got, done = [], threading.Event()
    check = InstructionCheck(on_verdict=lambda *v: (got.append(v), done.set()), **check_kwargs)
    try:
        check.submit(text)
        assert done.wait(10.0), "no verdict"
    finally:
        check.close()
    assert len(got) == 1
    return got[0]


def test_the_check_grounds_each_instruction_on_its_own_thread():
    text, g = _verdict("touch the red cube", prototypes=PROTOS, threshold=0.6,
                       encoder=InstructionEncoder(backend=bag_of_words))
    assert text == "touch the red cube" and g.ok and g.task == "touch red cube"


def test_a_grounder_that_cannot_start_refuses_every_instruction_with_the_error():
    from embodied_stack.control.instruction_check import GROUNDER_FAILED

    def broken(texts):
        raise ImportError("the instruction encoder needs the pip package 'x'")

    _, g = _verdict("touch the red cube", prototypes=PROTOS, threshold=0.6,
                    encoder=InstructionEncoder(backend=broken))
    assert not g.ok and g.reason == GROUNDER_FAILED and "pip package" in g.message


def test_a_scene_change_grounds_the_current_instruction_again():
    """set_scene: the instruction's object leaves the view -> not grounded (nothing in the
    scene matches); it comes back -> grounded; an unreadable scene is a ValueError and changes
    nothing; the same tasks again give no new verdict."""
    import queue

    from embodied_stack.control.instruction_check import InstructionCheck
    from embodied_stack.sim.worlds.paraphrase import scene_tasks

    verdicts: queue.Queue = queue.Queue()
    prototypes = {"touch the red cube": ["touch the red cube"], "touch the blue ball": ["touch the blue ball"]}
    check = InstructionCheck(prototypes, 0.6, lambda text, g: verdicts.put(g),
                             InstructionEncoder(backend=bag_of_words), lambda text: scene_tasks("tabletop", text))
    try:
        check.submit("touch the red cube")
        assert verdicts.get(timeout=10).ok  # no scene yet: any task
        check.set_scene("blue ball, green cylinder")
        gone = verdicts.get(timeout=10)
        assert not gone.ok and gone.reason == ig.NOT_IN_SCENE and "nothing in the scene" in gone.message
        with pytest.raises(ValueError, match="expected 'colour noun'"):
            check.set_scene("a red cube on the left")
        check.set_scene("Green cylinder, blue ball")  # the same objects: the same tasks, no verdict
        check.set_scene("red cube, blue ball")
        assert verdicts.get(timeout=10).ok
        assert verdicts.empty()
    finally:
        check.close()
    with pytest.raises(ValueError, match="without a scene parser"):
        InstructionCheck(prototypes, 0.6, lambda *v: None, InstructionEncoder(backend=bag_of_words),
                         preload=False).set_scene("red cube")
