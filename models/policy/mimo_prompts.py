"""Prompt builders and defensive answer parsers for MiMo-Embodied-7B (docs/architecture.md).

No torch, no transformers: plain strings in, typed results out, so the parsers can be tested
(and reused by the nodes) without a model.

Output formats this module speaks
---------------------------------
- **Thinking.** MiMo thinks by default: ``<think>…</think>answer``. ``with_thinking(text, False)``
  appends ``/no_think`` to the user text to turn it off. ``split_thinking`` strips every
  ``<think>…</think>`` block before parsing (also an unclosed ``<think>`` at the end of a
  generation cut off by ``max_new_tokens``, and a lone ``</think>`` when the chat template
  opened the block inside the prompt) and keeps the thought in the result.
- **Points / affordances** (MiMo's format): JSON ``[{"points": [[x, y], ...], "label": "..."}]``.
  Qwen2.5-VL's native ``{"point_2d": [x, y], "label": ...}`` is accepted too.
- **Boxes** (MiMo / Qwen2.5-VL format): ``[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}]``.
- Coordinates are **absolute integer pixels of the processor-resized image** (Qwen ``smart_resize``,
  factor 28 = patch 14 x merge 2), not 0–1000 and not 0–1. ``ResizeInfo`` maps them back to
  camera pixels by the resize ratio: ``x_cam = x_model * W_cam / W_resized`` (same for y).
- **Planning**: numbered steps, one per line (``1. …``, ``2) …``, ``Step 3: …``).
- **Multiple choice**: the answer in ``\\boxed{…}`` (the last one wins).
- **Driving** — *our own convention, not a released MiMo format*: JSON
  ``{"waypoints": [[x, y], ...]}`` in metres in the ego frame at the current time (x forward,
  y left, REP-103), one waypoint every ``dt`` seconds. Parsed defensively: the model was not
  trained on this exact format, so expect it to fail more often than the others.

Parsers never raise. Each returns its answer dataclass (``ok`` is True) or ``NoAnswer``
(``ok`` is False, with a ``reason``). They accept JSON inside `````json`` fences, prose around
the JSON, single quotes, trailing commas, Python-style tuples, and truncated JSON (complete
``[x, y]`` pairs are recovered by a regex fallback; ``method`` says which route produced it).

Out-of-image policy: points outside the resized image (x < 0, x > W, y < 0, y > H) are
**dropped** (counted in ``dropped``); kept points are clipped into the last pixel
``[0, W-1] x [0, H-1]``. Boxes are clipped to the image and dropped if nothing is left.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np

# ----------------------------------------------------------------------------------------------
# Qwen2-VL image geometry
# ----------------------------------------------------------------------------------------------

#: Qwen2-VL / Qwen2.5-VL defaults: ViT patch 14, 2x2 token merge -> resize factor 28.
QWEN_PATCH_SIZE = 14
QWEN_MERGE_SIZE = 2
QWEN_FACTOR = QWEN_PATCH_SIZE * QWEN_MERGE_SIZE
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 1280


def smart_resize(
    height: int,
    width: int,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize``, exactly as transformers defines it
    (``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize``):

    1. both sides divisible by ``factor``; 2. ``min_pixels <= h*w <= max_pixels``;
    3. aspect ratio kept as closely as possible. Python's ``round`` (half to even) is part of
    the definition. Raises ValueError for an aspect ratio above 200, as Qwen does.
    Returns ``(resized_height, resized_width)``.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class ResizeInfo:
    """Camera image size and the size the processor resized it to (what the model saw)."""

    camera_h: int
    camera_w: int
    resized_h: int
    resized_w: int

    @classmethod
    def for_image(cls, camera_h: int, camera_w: int, factor: int = QWEN_FACTOR,
                  min_pixels: int = QWEN_MIN_PIXELS, max_pixels: int = QWEN_MAX_PIXELS) -> "ResizeInfo":
        rh, rw = smart_resize(camera_h, camera_w, factor, min_pixels, max_pixels)
        return cls(int(camera_h), int(camera_w), int(rh), int(rw))

    @property
    def scale_xy(self) -> tuple[float, float]:
        """(camera / resized) ratio along x and y."""
        return self.camera_w / self.resized_w, self.camera_h / self.resized_h

    def to_camera(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) model pixels (x, y) -> camera pixels (u, v), float64."""
        sx, sy = self.scale_xy
        out = np.asarray(xy, dtype=np.float64).copy()
        out[..., 0] *= sx
        out[..., 1] *= sy
        return out

    def boxes_to_camera(self, boxes: np.ndarray) -> np.ndarray:
        """(..., 4) model boxes [x1, y1, x2, y2] -> camera pixels."""
        sx, sy = self.scale_xy
        out = np.asarray(boxes, dtype=np.float64).copy()
        out[..., 0::2] *= sx
        out[..., 1::2] *= sy
        return out

    def to_model(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) camera pixels -> model (resized-image) pixels."""
        sx, sy = self.scale_xy
        out = np.asarray(uv, dtype=np.float64).copy()
        out[..., 0] /= sx
        out[..., 1] /= sy
        return out


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------

NO_THINK = "/no_think"


def with_thinking(user_text: str, thinking: bool) -> str:
    """MiMo thinks unless the user text ends with ``/no_think``."""
    text = user_text.rstrip()
    if thinking:
        return text
    return text if text.endswith(NO_THINK) else f"{text} {NO_THINK}"


def pointing_prompt(query: str) -> str:
    """Point at objects matching ``query``."""
    return (
        f"Point to {query.strip()} in the image. Answer with JSON only, in the format "
        '[{"points": [[x, y], ...], "label": "<object name>"}], '
        "where x and y are absolute pixel coordinates in the image."
    )


def affordance_prompt(task: str) -> str:
    """Where should the robot act to do ``task`` (a contact / grasp point)?"""
    return (
        f"The robot must: {task.strip()}. Point to the place in the image where the robot "
        "gripper should make contact to do this. Answer with JSON only, in the format "
        '[{"points": [[x, y], ...], "label": "<object part>"}], '
        "where x and y are absolute pixel coordinates in the image."
    )


def bbox_prompt(query: str) -> str:
    """Detect every object matching ``query`` as boxes."""
    return (
        f"Locate every {query.strip()} in the image. Answer with JSON only, in the format "
        '[{"bbox_2d": [x1, y1, x2, y2], "label": "<object name>"}], '
        "using absolute pixel coordinates in the image."
    )


def planning_prompt(task: str) -> str:
    """Break ``task`` into numbered steps."""
    return (
        f"The robot must: {task.strip()}. List the steps it should take, one per line, "
        "numbered 1., 2., 3., ... Answer with the numbered steps only."
    )


def driving_prompt(instruction: str, num_waypoints: int = 6, dt: float = 0.5) -> str:
    """Our own waypoint convention (see module doc): metres, ego frame, x forward, y left."""
    inst = instruction.strip() or "drive safely along the road"
    return (
        f"You are driving the ego vehicle. Instruction: {inst}. Plan the ego vehicle's path for "
        f"the next {num_waypoints * dt:g} seconds as {num_waypoints} waypoints, one every {dt:g} s. "
        'Answer with JSON only, in the format {"waypoints": [[x, y], ...]}, in metres in the '
        "ego frame: x forward, y to the left, the vehicle now at [0, 0]."
    )


def multiple_choice_prompt(question: str, options: list[str] | dict[str, str]) -> str:
    """A lettered multiple-choice question; MiMo answers in ``\\boxed{}``."""
    if isinstance(options, dict):
        items = list(options.items())
    else:
        items = [(chr(ord("A") + i), o) for i, o in enumerate(options)]
    lines = "\n".join(f"{k}. {v}" for k, v in items)
    return f"{question.strip()}\n{lines}\nAnswer with the option's letter in \\boxed{{}}."


# ----------------------------------------------------------------------------------------------
# Typed results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoAnswer:
    """The model's text held no usable answer. Never raised; returned."""

    reason: str
    raw: str = ""
    thought: str = ""
    ok = False  # class attribute, not a field


@dataclass(frozen=True)
class PointAnswer:
    """Points in the resized-image frame (``points``) and, once mapped, in camera pixels."""

    points: np.ndarray  #: (N, 2) float64 (x, y); model pixels, or camera pixels after to_camera
    labels: tuple[str, ...]  #: one label per point
    raw: str = ""
    thought: str = ""
    method: str = "json"  #: "json" | "repaired" | "regex"
    dropped: int = 0  #: points outside the image that were dropped
    frame: str = "model"  #: "model" (resized image pixels) or "camera"
    ok = True

    def to_camera(self, resize: ResizeInfo) -> "PointAnswer":
        if self.frame == "camera":
            return self
        return replace(self, points=resize.to_camera(self.points), frame="camera")


@dataclass(frozen=True)
class BoxAnswer:
    boxes: np.ndarray  #: (N, 4) float64 [x1, y1, x2, y2]
    labels: tuple[str, ...]
    raw: str = ""
    thought: str = ""
    method: str = "json"
    dropped: int = 0
    frame: str = "model"
    ok = True

    def to_camera(self, resize: ResizeInfo) -> "BoxAnswer":
        if self.frame == "camera":
            return self
        return replace(self, boxes=resize.boxes_to_camera(self.boxes), frame="camera")


@dataclass(frozen=True)
class WaypointAnswer:
    waypoints: np.ndarray  #: (N, 2) float64 metres, ego frame (x forward, y left)
    raw: str = ""
    thought: str = ""
    method: str = "json"
    dropped: int = 0
    ok = True


@dataclass(frozen=True)
class StepsAnswer:
    steps: tuple[str, ...]
    raw: str = ""
    thought: str = ""
    method: str = "numbered"  #: "numbered" | "bullets"
    ok = True


@dataclass(frozen=True)
class ChoiceAnswer:
    choice: str  #: content of the last \boxed{} (a letter, normalised to upper case if one)
    raw: str = ""
    thought: str = ""
    method: str = "boxed"  #: "boxed" | "regex"
    ok = True


ParseResult = Union[PointAnswer, BoxAnswer, WaypointAnswer, StepsAnswer, ChoiceAnswer, NoAnswer]

# ----------------------------------------------------------------------------------------------
# Thinking
# ----------------------------------------------------------------------------------------------

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.S)


def split_thinking(text: str) -> tuple[str, str]:
    """Return ``(thought, answer)``.

    - every closed ``<think>…</think>`` block is removed from the answer, its content kept;
    - an unclosed ``<think>`` (generation truncated while thinking): everything after it is
      thought, the answer is what came before it (usually empty);
    - a lone ``</think>`` with no opening tag (the chat template opened the block inside the
      prompt): everything before it is thought.
    """
    if not isinstance(text, str):
        return "", ""
    thoughts: list[str] = []
    # A closing tag before any opening one: the prompt opened the block.
    first_close = text.find("</think>")
    first_open = text.find("<think>")
    if first_close != -1 and (first_open == -1 or first_close < first_open):
        thoughts.append(text[:first_close])
        text = text[first_close + len("</think>"):]

    def _keep(m: re.Match) -> str:
        thoughts.append(m.group(1))
        return ""

    answer = _THINK_BLOCK.sub(_keep, text)
    open_at = answer.find("<think>")
    if open_at != -1:  # unclosed: truncated while thinking
        thoughts.append(answer[open_at + len("<think>"):])
        answer = answer[:open_at]
    answer = answer.replace("</think>", "")
    return "\n".join(t.strip() for t in thoughts if t.strip()), answer.strip()


# ----------------------------------------------------------------------------------------------
# Tolerant JSON extraction
# ----------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON|python)?\s*(.*?)(?:```|$)", re.S)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")
_QUAD = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")


def _loads_lenient(s: str) -> tuple[Any, str] | None:
    """Parse one JSON-ish value: strict JSON, then trailing commas removed, then a Python
    literal (single quotes, tuples, True/None). ``ast.literal_eval`` evaluates literals only,
    never code. Returns (value, method) or None."""
    s = s.strip()
    if not s or len(s) > 100_000:
        return None
    try:
        return json.loads(s), "json"
    except (ValueError, RecursionError):
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", s)
    try:
        return json.loads(fixed), "repaired"
    except (ValueError, RecursionError):
        pass
    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", s)))
    try:
        return ast.literal_eval(py), "repaired"
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _balanced_spans(text: str) -> list[str]:
    """Top-level ``[...]`` / ``{...}`` substrings, bracket-balanced outside of strings."""
    spans: list[str] = []
    stack: list[str] = []  # the closing brackets expected, innermost last
    quote: str | None = None
    start = -1
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'" and stack:
            quote = c
        elif c in "[{":
            if not stack:
                start = i
            stack.append("]" if c == "[" else "}")
        elif c in "]}":
            if stack and stack[-1] == c:
                stack.pop()
                if not stack:
                    spans.append(text[start:i + 1])
            elif stack:  # mismatched: restart
                stack, quote = [], None
        i += 1
    return spans


def extract_json(text: str) -> tuple[Any, str] | None:
    """Find the first JSON-ish value (a list or dict) in model text. Tries, in order: each
    fenced block, the whole text, then each top-level balanced bracket span in order of
    position. Returns (value, method) with method "json" (strict) or "repaired", or None."""
    if not isinstance(text, str):
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for cand in candidates:
        got = _loads_lenient(cand)
        if got is not None and isinstance(got[0], (list, dict)):
            return got
        for span in _balanced_spans(cand):
            got = _loads_lenient(span)
            if got is not None and isinstance(got[0], (list, dict)):
                return got
    return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _pair(v: Any) -> tuple[float, float] | None:
    if isinstance(v, dict):
        if "x" in v and "y" in v:
            v = [v["x"], v["y"]]
        else:
            return None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        x, y = _num(v[0]), _num(v[1])
        if x is not None and y is not None:
            return x, y
    return None


def _quad(v: Any) -> tuple[float, float, float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 4:
        q = [_num(e) for e in v]
        if all(e is not None for e in q):
            return tuple(q)  # type: ignore[return-value]
    return None


def _items(value: Any) -> list[Any]:
    """A list of answer items from the parsed value (a list, or one dict, or a dict wrapping
    a list under a common key)."""
    if isinstance(value, dict):
        for key in ("objects", "results", "answer", "items", "detections"):
            if isinstance(value.get(key), list):
                return list(value[key])
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return []


def _clean_label(v: Any) -> str:
    return v.strip() if isinstance(v, str) else ("" if v is None else str(v))


# ----------------------------------------------------------------------------------------------
# Parsers (never raise)
# ----------------------------------------------------------------------------------------------


def _guard(fn):
    def wrapper(text, *args, **kwargs):
        try:
            return fn(text, *args, **kwargs)
        except Exception as exc:  # parsers must never raise  # noqa: BLE001
            raw = text if isinstance(text, str) else ""
            return NoAnswer(f"parser error: {type(exc).__name__}: {exc}", raw)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _filter_points(pts, labels, image_wh):
    """Drop points outside [0, W] x [0, H]; clip the kept ones into the last pixel."""
    if image_wh is None:
        return pts, labels, 0
    w, h = image_wh
    kept, kept_labels = [], []
    for (x, y), lab in zip(pts, labels):
        if 0.0 <= x <= w and 0.0 <= y <= h:
            kept.append((min(x, w - 1.0), min(y, h - 1.0)))
            kept_labels.append(lab)
    return kept, kept_labels, len(pts) - len(kept)


@_guard
def parse_points(text: str, image_wh: tuple[int, int] | None = None) -> PointAnswer | NoAnswer:
    """Parse a pointing / affordance answer. ``image_wh`` = (W, H) of the *resized* image the
    model saw; points outside it are dropped, kept points clipped to the last pixel. Returns
    points in model pixels (``PointAnswer.to_camera`` maps them)."""
    if not isinstance(text, str):
        return NoAnswer("no text")
    thought, answer = split_thinking(text)
    if not answer:
        return NoAnswer("empty answer (generation ended while thinking?)", text, thought)
    pts: list[tuple[float, float]] = []
    labels: list[str] = []
    method = "regex"
    got = extract_json(answer)
    if got is not None:
        value, method = got
        items = _items(value)
        if items and _pair(items[0]) is not None:  # a bare list of pairs
            items = [{"points": items}]
        for item in items:
            if not isinstance(item, dict):
                continue
            label = _clean_label(item.get("label"))
            raw_pts = item.get("points")
            if raw_pts is None:
                for key in ("point_2d", "point", "coordinates", "coords"):
                    if key in item:
                        raw_pts = [item[key]]
                        break
            if isinstance(raw_pts, (list, tuple)) and _pair(raw_pts) is not None:
                raw_pts = [raw_pts]  # one point given flat: "points": [x, y]
            for p in raw_pts or []:
                xy = _pair(p)
                if xy is not None:
                    pts.append(xy)
                    labels.append(label)
    if not pts:  # no (usable) JSON: recover complete [x, y] pairs, e.g. from truncated JSON
        method = "regex"
        for m in _PAIR.finditer(answer):
            pts.append((float(m.group(1)), float(m.group(2))))
            labels.append("")
    if not pts:
        return NoAnswer("no points in answer", text, thought)
    kept_pts, labels, dropped = _filter_points(pts, labels, image_wh)
    if not kept_pts:
        return NoAnswer(f"all {dropped} points outside the {image_wh} (W, H) image", text, thought)
    return PointAnswer(np.asarray(kept_pts, dtype=np.float64).reshape(-1, 2), tuple(labels),
                       text, thought, method, dropped)


@_guard
def parse_boxes(text: str, image_wh: tuple[int, int] | None = None) -> BoxAnswer | NoAnswer:
    """Parse ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``. Corners are reordered if
    swapped, boxes clipped to the resized image and dropped if empty after clipping."""
    if not isinstance(text, str):
        return NoAnswer("no text")
    thought, answer = split_thinking(text)
    if not answer:
        return NoAnswer("empty answer (generation ended while thinking?)", text, thought)
    boxes: list[tuple[float, ...]] = []
    labels: list[str] = []
    method = "regex"
    got = extract_json(answer)
    if got is not None:
        value, method = got
        items = _items(value)
        if items and _quad(items) is not None:  # one bare box
            items = [{"bbox_2d": items}]
        for item in items:
            if isinstance(item, (list, tuple)) and _quad(item) is not None:
                item = {"bbox_2d": item}
            if not isinstance(item, dict):
                continue
            for key in ("bbox_2d", "bbox", "box", "box_2d"):
                q = _quad(item.get(key))
                if q is not None:
                    boxes.append(q)
                    labels.append(_clean_label(item.get("label")))
                    break
    if not boxes:
        method = "regex"
        for m in _QUAD.finditer(answer):
            boxes.append(tuple(float(m.group(i)) for i in range(1, 5)))
            labels.append("")
    if not boxes:
        return NoAnswer("no boxes in answer", text, thought)
    kept, kept_labels, dropped = [], [], 0
    for (x1, y1, x2, y2), lab in zip(boxes, labels):
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        if image_wh is not None:
            w, h = image_wh
            x1, x2 = min(max(x1, 0.0), float(w)), min(max(x2, 0.0), float(w))
            y1, y2 = min(max(y1, 0.0), float(h)), min(max(y2, 0.0), float(h))
        if x2 <= x1 or y2 <= y1:
            dropped += 1
            continue
        kept.append((x1, y1, x2, y2))
        kept_labels.append(lab)
    if not kept:
        return NoAnswer(f"all {dropped} boxes empty or outside the image", text, thought)
    return BoxAnswer(np.asarray(kept, dtype=np.float64).reshape(-1, 4), tuple(kept_labels), text,
                     thought, method, dropped)


@_guard
def parse_waypoints(text: str, max_range_m: float = 200.0) -> WaypointAnswer | NoAnswer:
    """Parse our ``{"waypoints": [[x, y], ...]}`` convention (metres, ego frame). Also accepts a
    bare list of pairs, keys "trajectory"/"path"/"points", and [x, y] pairs recovered by regex.
    Waypoints farther than ``max_range_m`` or non-finite are dropped."""
    if not isinstance(text, str):
        return NoAnswer("no text")
    thought, answer = split_thinking(text)
    if not answer:
        return NoAnswer("empty answer (generation ended while thinking?)", text, thought)
    pts: list[tuple[float, float]] = []
    method = "regex"
    got = extract_json(answer)
    if got is not None:
        value, method = got
        seq = None
        if isinstance(value, dict):
            for key in ("waypoints", "trajectory", "path", "points", "plan"):
                if isinstance(value.get(key), (list, tuple)):
                    seq = value[key]
                    break
        elif isinstance(value, (list, tuple)):
            seq = value
            if value and isinstance(value[0], dict) and isinstance(value[0].get("waypoints"), list):
                seq = value[0]["waypoints"]
        for p in seq or []:
            xy = _pair(p)
            if xy is not None:
                pts.append(xy)
    if not pts:
        method = "regex"
        pts = [(float(m.group(1)), float(m.group(2))) for m in _PAIR.finditer(answer)]
    if not pts:
        return NoAnswer("no waypoints in answer", text, thought)
    kept = [p for p in pts if math.hypot(*p) <= max_range_m]
    if not kept:
        return NoAnswer(f"all {len(pts)} waypoints beyond {max_range_m} m", text, thought)
    return WaypointAnswer(np.asarray(kept, dtype=np.float64).reshape(-1, 2), text, thought, method,
                          len(pts) - len(kept))


_STEP = re.compile(r"^\s*(?:\*\*)?(?:step\s*)?(\d{1,3})\s*[\.\):\-]\s*(?:\*\*)?\s*(.+?)\s*$", re.I)
_BULLET = re.compile(r"^\s*[-*•]\s+(.+?)\s*$")


@_guard
def parse_steps(text: str) -> StepsAnswer | NoAnswer:
    """Parse numbered steps (``1. …``, ``2) …``, ``Step 3: …``); bullets as a fallback."""
    if not isinstance(text, str):
        return NoAnswer("no text")
    thought, answer = split_thinking(text)
    if not answer:
        return NoAnswer("empty answer (generation ended while thinking?)", text, thought)
    lines = answer.splitlines()
    steps = [m.group(2).strip("* ").strip() for m in map(_STEP.match, lines) if m]
    steps = [s for s in steps if s]
    if steps:
        return StepsAnswer(tuple(steps), text, thought, "numbered")
    bullets = [m.group(1).strip() for m in map(_BULLET.match, lines) if m]
    if bullets:
        return StepsAnswer(tuple(bullets), text, thought, "bullets")
    return NoAnswer("no numbered steps in answer", text, thought)


def _boxed_contents(text: str) -> list[str]:
    out: list[str] = []
    i = 0
    while True:
        i = text.find("\\boxed{", i)
        if i == -1:
            return out
        j, depth = i + len("\\boxed{"), 1
        start = j
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            out.append(text[start:j - 1])
        i = j


_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"(?:answer|option)\s*(?:is|:)?\s*[:\s]*\(?\b([A-Z])\b\)?", re.I)


@_guard
def parse_choice(text: str) -> ChoiceAnswer | NoAnswer:
    """The content of the last ``\\boxed{…}`` (nested braces allowed; ``\\text{B}`` unwrapped;
    a single letter, optionally followed by "." or ")" and the option text, is reduced to the
    upper-case letter). Fallback: "the answer is B"."""
    if not isinstance(text, str):
        return NoAnswer("no text")
    thought, answer = split_thinking(text)
    boxed = _boxed_contents(answer)
    if boxed:
        content = boxed[-1]
        while _TEXT_WRAP.search(content):
            content = _TEXT_WRAP.sub(r"\1", content)
        content = content.strip()
        m = re.fullmatch(r"\(?([A-Za-z])\)?(?:[\.\):]\s*.*)?", content, re.S)
        if m:
            content = m.group(1).upper()
        if content:
            return ChoiceAnswer(content, text, thought, "boxed")
    m = _ANSWER_IS.search(answer)
    if m:
        return ChoiceAnswer(m.group(1).upper(), text, thought, "regex")
    return NoAnswer("no \\boxed{} answer", text, thought)


__all__ = [
    "QWEN_FACTOR", "QWEN_MAX_PIXELS", "QWEN_MIN_PIXELS", "QWEN_MERGE_SIZE", "QWEN_PATCH_SIZE",
    "NO_THINK", "smart_resize", "ResizeInfo", "with_thinking", "pointing_prompt", "affordance_prompt",
    "bbox_prompt", "planning_prompt", "driving_prompt", "multiple_choice_prompt", "NoAnswer",
    "PointAnswer", "BoxAnswer", "WaypointAnswer", "StepsAnswer", "ChoiceAnswer", "ParseResult",
    "split_thinking", "extract_json", "parse_points", "parse_boxes", "parse_waypoints",
    "parse_steps", "parse_choice",
]
