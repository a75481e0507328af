"""The training paraphrase generator: deterministic per Generator, within the worlds' charset
and length, varied, scene-aware colour-only / shape-only references, and never a sentence of
the held-out bench list (bench/data/paraphrases.json)."""

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from embodied_stack.sim.worlds import paraphrase as P
from embodied_stack.sim.worlds.base import INSTRUCTION_CHARSET, INSTRUCTION_MAX_LEN
from embodied_stack.sim.worlds.driving import INSTRUCTIONS, TASKS
from embodied_stack.sim.worlds.tabletop import CLASS_NAMES, COLOR_NAMES, DIRECTIONS, make_instruction

HELD_OUT = Path(__file__).resolve().parents[1] / "bench" / "data" / "paraphrases.json"


def norm(s):
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9 ]+", " ", s.lower())).strip()


def held_out_sentences():
    """Every sentence the bench list can produce (all colours, nouns, directions), normalised."""
    data = json.loads(HELD_OUT.read_text())
    t = data["tabletop"]
    nouns = sorted({n for v in t["nouns"].values() for n in v} | set(CLASS_NAMES))
    dirs = sorted({d for v in t["directions"].values() for d in v})
    colors = sorted({c for syns in P.COLOR_SYNONYMS.values() for c in syns} | set(COLOR_NAMES))
    out = set()
    for task in ("touch", "push"):
        for tpl, c, n in itertools.product(t[task], colors, nouns):
            for d in (dirs if task == "push" else [""]):
                out.add(norm(tpl.format(color=c, noun=n, direction=d)))
    for texts in data["driving"].values():
        out.update(norm(s) for s in texts)
    return out


def draws(n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        if i % 2:
            yield "driving", TASKS[i // 2 % 4], P.paraphrase_driving(rng, TASKS[i // 2 % 4])
            continue
        k = int(rng.integers(1, 7))
        objects = [(COLOR_NAMES[int(rng.integers(4))], CLASS_NAMES[int(rng.integers(3))])
                   for _ in range(k)]
        color, shape = objects[0]
        task = "push" if rng.random() < 0.5 else "touch"
        direction = list(DIRECTIONS)[int(rng.integers(4))] if task == "push" else None
        noun = None if rng.random() < 0.2 else shape
        yield "tabletop", (task, color, noun, direction, objects), P.paraphrase_tabletop(
            rng, task, color, noun, direction, objects if rng.random() < 0.8 else None)


def test_never_emits_a_held_out_bench_sentence():
    held = held_out_sentences()
    assert len(held) > 5000
    emitted = [s for _, _, s in draws(60_000)]
    hits = sorted({s for s in emitted if norm(s) in held})
    assert hits == []
    assert len(set(emitted)) > 30_000  # and it is not a handful of sentences


def test_within_the_worlds_charset_and_length():
    charset = set(INSTRUCTION_CHARSET)
    for _, _, s in draws(20_000, seed=1):
        assert 0 < len(s) <= INSTRUCTION_MAX_LEN and set(s) <= charset, s


def test_deterministic_per_generator():
    a = [s for _, _, s in draws(500, seed=7)]
    b = [s for _, _, s in draws(500, seed=7)]
    c = [s for _, _, s in draws(500, seed=8)]
    assert a == b and a != c


def test_varies_verbs_politeness_case_and_punctuation():
    texts = [s for _, _, s in draws(4000, seed=2)]
    low = [t.lower() for t in texts]
    assert any(t.startswith(("kindly ", "can you ", "would you ")) for t in low)
    assert any(t.endswith((", please", ", please.", ", thanks", ", thanks.")) for t in low)
    assert any(t.isupper() for t in texts) and any(t[0].isupper() and not t.isupper() for t in texts)
    assert any(t.endswith(".") for t in texts) and any(not t.endswith(".") for t in texts)
    for verb in ("press", "tag", "shift", "send", "remain in", "head into"):
        assert any(verb in t for t in low), verb
    # not just the grammar: most sentences are not canonical instructions
    canonical = {s for ts in INSTRUCTIONS.values() for s in ts}
    assert sum(t in canonical for t in texts) < 0.1 * len(texts)


def _mentions(text, synonyms):
    return any(re.search(rf"\b{re.escape(s)}\b", text.lower()) for s in synonyms)


@pytest.mark.parametrize("objects,color_only,shape_only", [
    ([("red", "cube"), ("blue", "ball")], True, True),       # both unambiguous
    ([("red", "cube"), ("red", "ball")], False, True),       # "the red one": two red things
    ([("red", "cube"), ("blue", "cube")], True, False),      # "the cube": two cubes
    ([("red", "cube"), ("red", "cube"), ("green", "ball")], True, True),  # both reds are targets
])
def test_colour_only_and_shape_only_only_where_unambiguous(objects, color_only, shape_only):
    rng = np.random.default_rng(3)
    cube = P.NOUN_SYNONYMS["cube"]
    red = P.COLOR_SYNONYMS["red"]
    texts = [P.paraphrase_tabletop(rng, "touch", "red", "cube", None, objects) for _ in range(600)]
    no_noun = [t for t in texts if not _mentions(t, cube)]
    no_color = [t for t in texts if not _mentions(t, red)]
    assert bool(no_noun) == color_only
    assert bool(no_color) == shape_only
    assert all(_mentions(t, cube) or _mentions(t, red) for t in texts)


def test_without_a_scene_the_reference_keeps_what_the_task_names():
    rng = np.random.default_rng(4)
    for _ in range(300):
        t = P.paraphrase_tabletop(rng, "push", "blue", "ball", "left").lower()
        assert _mentions(t, P.COLOR_SYNONYMS["blue"]) and _mentions(t, P.NOUN_SYNONYMS["ball"])
        assert not _mentions(t, ("right", "forward", "back", "backward"))


def test_parses_every_canonical_instruction_and_knows_every_task():
    protos = P.task_prototypes("tabletop")
    assert len(protos) == 4 * 4 * 5  # colours x (3 shapes + object) x (touch + 4 pushes)
    for text in protos:
        task, color, noun, direction = P.parse_tabletop(text)
        assert make_instruction(task, color, noun, direction) == text
    assert P.task_prototypes("driving") == {t: list(s) for t, s in INSTRUCTIONS.items()}
    for task, texts in INSTRUCTIONS.items():
        assert all(P.driving_task(s) == task for s in texts)
    rng = np.random.default_rng(5)
    assert P.paraphrase_instruction("driving", "keep lane", rng)
    assert P.paraphrase_instruction("tabletop", "push the red object to the left", rng)
    for bad in ("tap the red cube", "push the red cube sideways", "touch the red cube now"):
        with pytest.raises(ValueError):
            P.paraphrase_instruction("tabletop", bad, rng)
    with pytest.raises(ValueError):
        P.paraphrase_instruction("driving", "merge left", rng)
    with pytest.raises(ValueError):
        P.paraphrase_tabletop(rng, "push", "red", "cube", None)


def test_available_tasks_are_those_whose_object_is_in_the_scene():
    avail = P.available_tasks("tabletop", [("red", "cube"), ("blue", "ball")])
    assert "touch the red cube" in avail and "push the blue object forward" in avail
    assert "touch the red ball" not in avail and "touch the green object" not in avail
    assert P.available_tasks("driving", None) is None
