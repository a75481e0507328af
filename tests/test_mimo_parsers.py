"""MiMo-Embodied prompt builders and answer parsers (no model, no torch): every documented
format on canned answers, malformed text as a table, a seeded fuzz (hypothesis is not
installed in the venv, so a NumPy-seeded generator stands in), and smart_resize against
Qwen's own definition."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from embodied_stack.models.policy import mimo_prompts as P
from embodied_stack.models.policy.mimo_prompts import (
    BoxAnswer,
    ChoiceAnswer,
    NoAnswer,
    PointAnswer,
    ResizeInfo,
    StepsAnswer,
    WaypointAnswer,
    parse_boxes,
    parse_choice,
    parse_points,
    parse_steps,
    parse_waypoints,
    smart_resize,
    split_thinking,
)

# ---------------------------------------------------------------------------------------------
# smart_resize
# ---------------------------------------------------------------------------------------------

def _qwen_reference():
    """Qwen's smart_resize, taken from the installed transformers source file and run as is
    (the module itself cannot be imported here: it needs Pillow). None if not found."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(list(spec.submodule_search_locations)[0]) / "models/qwen2_vl/image_processing_qwen2_vl.py"
    if not src.is_file():
        return None
    tree = ast.parse(src.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "smart_resize":
            ns = {"math": math}
            exec(compile(ast.Module([node], []), str(src), "exec"), ns)  # noqa: S102 — trusted installed file
            return ns["smart_resize"]
    return None


SIZES = [(480, 640), (48, 64), (720, 1280), (1080, 1920), (64, 64), (13, 2000), (28, 28), (14, 42),
         (1000, 37), (3000, 4000), (241, 319), (42, 70), (70, 42), (299, 299), (500, 10)]
PIXELS = [(56 * 56, 28 * 28 * 1280), (56 * 56, 28 * 28 * 16), (4 * 28 * 28, 16384 * 28 * 28), (3136, 12845056)]


def test_smart_resize_matches_installed_qwen_definition():
    ref = _qwen_reference()
    if ref is None:
        pytest.skip("transformers' qwen2_vl source not found")
    for h, w in SIZES:
        for lo, hi in PIXELS:
            assert smart_resize(h, w, 28, lo, hi) == ref(h, w, 28, lo, hi), (h, w, lo, hi)


def test_smart_resize_hand_values_and_invariants():
    assert smart_resize(480, 640) == (476, 644)
    assert smart_resize(48, 64, 28, 56 * 56, 28 * 28 * 16) == (56, 56)
    assert smart_resize(480, 640, 28, 56 * 56, 28 * 28 * 16) == (84, 112)
    # Python's round is half-to-even: 70/28 = 2.5 -> 2, 98/28 = 3.5 -> 4
    assert smart_resize(70, 98, 28, 28 * 28, 10**9) == (56, 112)
    for h, w in SIZES:
        for lo, hi in PIXELS:
            rh, rw = smart_resize(h, w, 28, lo, hi)
            assert rh % 28 == 0 and rw % 28 == 0 and rh >= 28 and rw >= 28
            assert rh * rw <= hi or min(rh, rw) == 28  # a thin image keeps one row of patches
    with pytest.raises(ValueError):
        smart_resize(10, 2500)  # aspect ratio > 200, as Qwen


def test_resize_info_maps_by_ratio():
    r = ResizeInfo.for_image(480, 640, min_pixels=56 * 56, max_pixels=28 * 28 * 16)
    assert (r.resized_h, r.resized_w) == (84, 112)
    np.testing.assert_allclose(r.to_camera(np.array([[56.0, 42.0], [0, 0], [112, 84]])),
                               [[320.0, 240.0], [0, 0], [640, 480]])
    np.testing.assert_allclose(r.to_model(r.to_camera(np.array([[13.0, 7.0]]))), [[13.0, 7.0]])
    np.testing.assert_allclose(r.boxes_to_camera(np.array([[0, 0, 56, 42]])), [[0, 0, 320, 240]])


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def test_prompts_ask_for_the_documented_formats():
    assert '"points": [[x, y]' in P.pointing_prompt("the red cube") and "red cube" in P.pointing_prompt("the red cube")
    assert '"points"' in P.affordance_prompt("open the drawer")
    assert '"bbox_2d"' in P.bbox_prompt("cup")
    assert "1., 2., 3." in P.planning_prompt("make tea")
    d = P.driving_prompt("turn left", 4, 0.5)
    assert '{"waypoints": [[x, y], ...]}' in d and "metres" in d and "4 waypoints" in d and "2 seconds" in d
    assert "\\boxed{}" in P.multiple_choice_prompt("Which?", ["red", "blue"])
    assert "A. red\nB. blue" in P.multiple_choice_prompt("Which?", ["red", "blue"])
    assert P.with_thinking("point to x", False) == "point to x /no_think"
    assert P.with_thinking("point to x /no_think", False) == "point to x /no_think"
    assert P.with_thinking("point to x", True) == "point to x"


# ---------------------------------------------------------------------------------------------
# Thinking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, thought, answer", [
    ("<think>cup is left</think>[1]", "cup is left", "[1]"),
    ("<think>a</think>x<think>b</think>y", "a\nb", "xy"),
    ("<think>\n\n</think>\n\nanswer", "", "answer"),  # empty block with /no_think
    ("<think>never closed because max_new_tokens", "never closed because max_new_tokens", ""),
    ("pre <think>cut off", "cut off", "pre"),
    ("opened in the prompt</think>answer", "opened in the prompt", "answer"),
    ("no thinking at all", "", "no thinking at all"),
    ("", "", ""),
])
def test_split_thinking(text, thought, answer):
    assert split_thinking(text) == (thought, answer)


# ---------------------------------------------------------------------------------------------
# Canned answers in every documented format
# ---------------------------------------------------------------------------------------------

WH = (112, 84)  # resized image (W, H)


@pytest.mark.parametrize("text, points, labels, method", [
    ('[{"points": [[56, 42], [10, 20]], "label": "cup"}]', [[56, 42], [10, 20]], ("cup", "cup"), "json"),
    ('[{"points": [[1, 2]], "label": "a"}, {"points": [[3, 4]], "label": "b"}]', [[1, 2], [3, 4]], ("a", "b"), "json"),
    ('<think>the handle is on the right</think>[{"points": [[100, 40]], "label": "handle"}]',
     [[100, 40]], ("handle",), "json"),
    ('{"point_2d": [30, 31], "label": "mug"}', [[30, 31]], ("mug",), "json"),  # Qwen2.5-VL native
    ('[{"point_2d": [30, 31], "label": "mug"}]', [[30, 31]], ("mug",), "json"),
    ('[[5, 6], [7, 8]]', [[5, 6], [7, 8]], ("", ""), "json"),  # bare list of pairs
    ('{"points": [5, 6], "label": "flat"}', [[5, 6]], ("flat",), "json"),
    ('[{"points": [{"x": 9, "y": 10}], "label": "d"}]', [[9, 10]], ("d",), "json"),
    ('[{"points": [["11", "12.5"]], "label": "s"}]', [[11, 12.5]], ("s",), "json"),
])
def test_points_canned(text, points, labels, method):
    r = parse_points(text, WH)
    assert isinstance(r, PointAnswer) and r.ok
    np.testing.assert_allclose(r.points, points)
    assert r.labels == labels and r.method == method and r.frame == "model"


def test_points_thought_kept_and_mapped_to_camera():
    r = parse_points('<think>cup at centre</think>[{"points": [[56, 42]], "label": "cup"}]', WH)
    assert r.thought == "cup at centre"
    cam = r.to_camera(ResizeInfo(480, 640, 84, 112))
    np.testing.assert_allclose(cam.points, [[320, 240]])
    assert cam.frame == "camera" and cam.to_camera(ResizeInfo(1, 1, 1, 1)) is cam


def test_points_outside_image_dropped_border_clipped():
    r = parse_points('[{"points": [[200, 10], [-3, 5], [10, 90], [112, 84], [50, 50]], "label": "x"}]', WH)
    assert r.ok and r.dropped == 3
    np.testing.assert_allclose(r.points, [[111, 83], [50, 50]])  # (112, 84) on the border: clipped
    r = parse_points('[{"points": [[500, 500]]}]', WH)
    assert isinstance(r, NoAnswer) and "outside" in r.reason


def test_boxes_canned():
    r = parse_boxes('[{"bbox_2d": [10, 20, 50, 60], "label": "cup"}, '
                    '{"bbox_2d": [60, 50, 30, 10], "label": "swapped"}]', WH)
    assert isinstance(r, BoxAnswer)
    np.testing.assert_allclose(r.boxes, [[10, 20, 50, 60], [30, 10, 60, 50]])
    assert r.labels == ("cup", "swapped")
    r = parse_boxes('```json\n[{"bbox_2d": [100, 70, 300, 300], "label": "big"}, '
                    '{"bbox_2d": [200, 200, 300, 300]}]\n```', WH)
    np.testing.assert_allclose(r.boxes, [[100, 70, 112, 84]])  # clipped; the second is outside
    assert r.dropped == 1
    r = parse_boxes('{"bbox_2d": [1, 2, 3, 4]}', WH)
    np.testing.assert_allclose(r.boxes, [[1, 2, 3, 4]])
    cam = r.to_camera(ResizeInfo(168, 224, 84, 112))
    np.testing.assert_allclose(cam.boxes, [[2, 4, 6, 8]])


def test_waypoints_canned():
    r = parse_waypoints('{"waypoints": [[1.0, 0.0], [2.0, 0.1], [3.1, 0.3]]}')
    assert isinstance(r, WaypointAnswer) and r.method == "json"
    np.testing.assert_allclose(r.waypoints, [[1, 0], [2, 0.1], [3.1, 0.3]])
    r = parse_waypoints('<think>clear road</think>Plan:\n```json\n{"waypoints": [[1, 0], [2, 0], [500, 0],]}\n```')
    np.testing.assert_allclose(r.waypoints, [[1, 0], [2, 0]])
    assert r.dropped == 1 and r.thought == "clear road" and r.method == "repaired"
    np.testing.assert_allclose(parse_waypoints("[[1, 2], [3, 4]]").waypoints, [[1, 2], [3, 4]])
    np.testing.assert_allclose(parse_waypoints('{"trajectory": [[1, 2]]}').waypoints, [[1, 2]])


def test_steps_canned():
    r = parse_steps("<think>plan it</think>1. Open the gripper.\n2) Move above the cup\n"
                    "Step 3: Close the gripper\n\nDone.")
    assert isinstance(r, StepsAnswer)
    assert r.steps == ("Open the gripper.", "Move above the cup", "Close the gripper") and r.thought == "plan it"
    r = parse_steps("- approach\n- grasp")
    assert r.steps == ("approach", "grasp") and r.method == "bullets"
    r = parse_steps("**1.** Reach\n**2.** Lift")
    assert r.steps == ("Reach", "Lift")


@pytest.mark.parametrize("text, choice, method", [
    ("\\boxed{B}", "B", "boxed"),
    ("<think>A is wrong</think>The answer is \\boxed{C}.", "C", "boxed"),
    ("\\boxed{A} no wait \\boxed{D}", "D", "boxed"),
    ("\\boxed{\\text{b}}", "B", "boxed"),
    ("\\boxed{(A)}", "A", "boxed"),
    ("\\boxed{B. the blue one}", "B", "boxed"),
    ("\\boxed{42}", "42", "boxed"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "boxed"),
    ("The answer is C", "C", "regex"),
])
def test_choice_canned(text, choice, method):
    r = parse_choice(text)
    assert isinstance(r, ChoiceAnswer) and r.choice == choice and r.method == method


# ---------------------------------------------------------------------------------------------
# Malformed text: typed results, never an exception
# ---------------------------------------------------------------------------------------------

MALFORMED_POINTS = [
    # (text, expected points or None for NoAnswer, method)
    ("I cannot see a cup in this image.", None, None),
    ("", None, None),
    ("   \n\t", None, None),
    ("<think>still thinking when max_new_tokens hit", None, None),
    ('[{"points": [[10, 20], [30, 4', [[10, 20]], "regex"),  # truncated JSON
    ('[{"points": [[10, 20]], "lab', [[10, 20]], "regex"),
    ('```json\n[{"points": [[10, 20]], "label": "cup"}]\n```', [[10, 20]], "json"),  # fenced
    ('```json\n[{"points": [[10, 20]], "label": "cup"}]', [[10, 20]], "json"),  # unterminated fence
    ('Sure! The cup is here: [{"points": [[10, 20]], "label": "cup"}] Hope that helps.', [[10, 20]], "json"),
    ("[{'points': [[10, 20]], 'label': 'cup'}]", [[10, 20]], "repaired"),  # single quotes
    ('[{"points": [[10, 20],], "label": "cup",},]', [[10, 20]], "repaired"),  # trailing commas
    ("[{'points': [(10, 20)], 'label': None}]", [[10, 20]], "repaired"),  # Python tuples
    ("The point is (10, 20).", [[10, 20]], "regex"),
    ('[{"points": [[1e9, 20]]}]', None, None),  # outside
    ('[{"points": [[NaN, 20]]}]', None, None),
    ('[{"points": [[Infinity, 20]]}]', None, None),
    ('[{"points": [[true, false]]}]', None, None),
    ('[{"points": null}]', None, None),
    ('[{"points": "10, 20"}]', None, None),
    ('{"label": "cup"}', None, None),
    ("[" * 5000, None, None),
    ("]" * 100 + "[" * 100, None, None),
    ('{"a": ' * 2000 + "1" + "}" * 2000, None, None),  # deep nesting
    ("\x00\xff\ufffd<|im_end|>", None, None),
    ("[1, 2, 3]", None, None),
    ('[{"points": [[10, 20, 30]]}]', None, None),
]


@pytest.mark.parametrize("text, expected, method", MALFORMED_POINTS)
def test_points_malformed(text, expected, method):
    r = parse_points(text, WH)
    if expected is None:
        assert isinstance(r, NoAnswer) and not r.ok and r.reason
    else:
        assert isinstance(r, PointAnswer), r
        np.testing.assert_allclose(r.points, expected)
        assert r.method == method


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["list"], {"points": [[1, 2]]}])
def test_non_string_inputs(bad):
    for fn in (parse_points, parse_boxes, parse_waypoints, parse_steps, parse_choice):
        r = fn(bad)
        assert isinstance(r, NoAnswer)


def test_other_parsers_malformed():
    assert isinstance(parse_boxes("no boxes here", WH), NoAnswer)
    assert isinstance(parse_boxes('[{"bbox_2d": [10, 10, 10, 30]}]', WH), NoAnswer)  # zero width
    r = parse_boxes('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7', WH)  # truncated: regex
    assert r.ok and r.method == "regex"
    np.testing.assert_allclose(r.boxes, [[1, 2, 3, 4]])
    assert isinstance(parse_waypoints("go straight"), NoAnswer)
    assert isinstance(parse_waypoints('{"waypoints": [[1e6, 0]]}'), NoAnswer)
    assert isinstance(parse_waypoints('{"waypoints": []}'), NoAnswer)
    r = parse_waypoints('{"waypoints": [[1, 0], [2, 0.5], [3,')
    assert r.ok and r.method == "regex" and len(r.waypoints) == 2
    assert isinstance(parse_steps("Just grab it."), NoAnswer)
    assert isinstance(parse_steps("<think>hmm"), NoAnswer)
    assert isinstance(parse_choice("I am not sure."), NoAnswer)
    assert isinstance(parse_choice("\\boxed{"), NoAnswer)
    assert isinstance(parse_choice("\\boxed{}"), NoAnswer)


# ---------------------------------------------------------------------------------------------
# Seeded fuzz (property style): any text -> a typed result, never an exception
# ---------------------------------------------------------------------------------------------

_FRAGMENTS = ['[', ']', '{', '}', ',', ':', '"', "'", ' ', '\n', '-', '.', 'e', '1', '23', '456', '-7',
              '"points"', '"bbox_2d"', '"waypoints"', '"label"', '"point_2d"', 'cup', 'null', 'true', 'NaN',
              '<think>', '</think>', '```json', '```', '\\boxed{', 'Step 1:', '1.', '2)', '(', ')', '\\text{',
              '1e309', '99999999999999999999', '\t', 'ü', '\x00']


def _fuzz_texts(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        k = int(rng.integers(0, 40))
        yield "".join(_FRAGMENTS[i] for i in rng.integers(0, len(_FRAGMENTS), k))


def test_parsers_never_raise_on_fuzzed_text():
    for text in _fuzz_texts(600, seed=1):
        r = parse_points(text, WH)
        assert isinstance(r, (PointAnswer, NoAnswer))
        if r.ok:
            assert r.points.ndim == 2 and r.points.shape[1] == 2 and np.isfinite(r.points).all()
            assert (r.points >= 0).all() and (r.points[:, 0] <= WH[0] - 1).all() and (r.points[:, 1] <= WH[1] - 1).all()
            assert len(r.labels) == len(r.points)
        b = parse_boxes(text, WH)
        assert isinstance(b, (BoxAnswer, NoAnswer))
        if b.ok:
            assert np.isfinite(b.boxes).all()
            assert (b.boxes[:, 2] > b.boxes[:, 0]).all() and (b.boxes[:, 3] > b.boxes[:, 1]).all()
        w = parse_waypoints(text)
        assert isinstance(w, (WaypointAnswer, NoAnswer))
        if w.ok:
            assert np.isfinite(w.waypoints).all() and w.waypoints.shape[1] == 2
        assert isinstance(parse_steps(text), (StepsAnswer, NoAnswer))
        assert isinstance(parse_choice(text), (ChoiceAnswer, NoAnswer))


def test_valid_answers_survive_random_prose_around_them():
    rng = np.random.default_rng(7)
    words = ["Sure", "here", "is", "the", "answer", ":", "I", "think", "point", "\n", "(see", "image)", "."]
    for _ in range(200):
        x, y = int(rng.integers(0, WH[0])), int(rng.integers(0, WH[1]))
        pre = " ".join(rng.choice(words, int(rng.integers(0, 8))))
        post = " ".join(rng.choice(words, int(rng.integers(0, 8))))
        body = f'[{{"points": [[{x}, {y}]], "label": "obj"}}]'
        if rng.random() < 0.3:
            body = f"```json\n{body}\n```"
        if rng.random() < 0.3:
            body = body.replace('"', "'")
        r = parse_points(f"{pre} {body} {post}", WH)
        assert r.ok, (pre, body, post, r)
        np.testing.assert_allclose(r.points, [[min(x, WH[0] - 1), min(y, WH[1] - 1)]])
