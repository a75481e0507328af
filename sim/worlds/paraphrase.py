"""Instructions in other words, for training: one world task -> many phrasings.

The worlds speak a small grammar ("touch the red cube", "push the blue ball to the left",
"change to the left lane"); a policy trained on it alone guesses at any other wording. This
module rewrites a task in varied English, drawn from a numpy Generator (same generator state
-> same sentence):

- verb synonyms ("press", "tag", "shift", "send", "remain in", "head into", ...), object and
  colour synonyms ("block", "sphere", "tube", "thing", "crimson", ...), direction phrasings;
- word order ("find the red cube and press it", "the red cube is the one to touch", "to the
  left, shift the blue ball");
- politeness and indirection ("kindly ...", "can you ...", "I'd like you to ...", "..., thanks");
- case ("Touch the red cube", "TOUCH THE RED CUBE") and punctuation (a final "." or none);
- tabletop only: a colour-only ("the red one") or shape-only ("the cube") reference where the
  scene makes it unambiguous, i.e. it picks out exactly the objects the task's own
  description does (pass ``objects``; without it the reference keeps what the task names).

Every sentence stays within the worlds' instruction charset and length
(``sim.worlds.base.INSTRUCTION_CHARSET``, ``INSTRUCTION_MAX_LEN``).

The bench's held-out phrasings (bench/data/paraphrases.json) are not read here, and the
vocabulary leaves out the verbs and nouns that list is built around, so that the bench keeps
measuring words the policy never trained on; tests/test_paraphrase.py checks over many draws
that no sentence from that list (case and punctuation aside) is ever emitted.

Pure: no simulator, no I/O; the worlds' grammars are only imported to parse a canonical
instruction (:func:`paraphrase_instruction`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# --- vocabulary ------------------------------------------------------------------------------

COLOR_SYNONYMS = {
    "red": ("red", "red", "red", "crimson", "scarlet", "cherry red"),
    "green": ("green", "green", "green", "emerald", "lime green", "grass green"),
    "blue": ("blue", "blue", "blue", "azure", "cobalt", "sky blue"),
    "yellow": ("yellow", "yellow", "yellow", "golden", "lemon", "mustard"),
}
#: Object nouns, per world noun (primitives and procedural families; "object" = any).
NOUN_SYNONYMS = {
    "cube": ("cube", "cube", "block", "square block", "box", "dice-shaped block"),
    "ball": ("ball", "ball", "sphere", "round ball", "orb"),
    "cylinder": ("cylinder", "cylinder", "can", "tube", "column", "round pillar"),
    "object": ("object", "thing", "item", "piece", "shape"),
    "mug": ("mug", "cup", "coffee mug"),
    "l-block": ("l-block", "l-shaped block", "l-shaped piece"),
    "torus": ("torus", "ring", "donut"),
    "ellipsoid": ("ellipsoid", "egg", "oval"),
    "cone": ("cone", "cone", "pointy cone"),
    "banana": ("banana", "banana"),
    "bottle": ("bottle", "bottle"),
    "plate": ("plate", "dish"),
}
#: A colour-only reference: "the red one".
COLOR_ONLY_NOUNS = ("one", "thing", "object", "item", "piece", "shape")

TOUCH_VERBS = ("touch", "touch", "press", "tag", "hit", "reach", "bump")
#: "Bring the fingertip to ..." forms of touch.
TOUCH_REACH = ("put your fingertip on", "bring the fingertip to", "place the tip on",
               "get your fingertip onto")
PUSH_VERBS = ("push", "push", "shift", "send", "knock", "sweep", "propel", "drive")
DIRECTION_PHRASES = {
    "left": ("to the left", "left", "towards the left", "to the left side", "leftwards",
             "in the left direction", "to the left-hand side"),
    "right": ("to the right", "right", "towards the right", "to the right side", "rightwards",
              "in the right direction", "to the right-hand side"),
    "forward": ("forward", "forwards", "away", "farther from the camera",
                "to the far side", "toward the far edge", "ahead"),
    "backward": ("backward", "backwards", "back", "nearer the camera", "to the near side",
                 "toward the near edge", "in toward the camera"),
}
#: Politeness: (prefix, suffix) around a lower-case imperative.
POLITE = (
    ("", ""), ("", ""), ("", ""), ("", ""), ("", ""),
    ("kindly ", ""), ("can you ", ""), ("would you ", ""), ("i'd like you to ", ""),
    ("i want you to ", ""), ("go ahead and ", ""), ("now ", ""), ("your task is to ", ""),
    ("", ", please"), ("", ", thanks"), ("", " now"), ("if you can, ", ""),
)

DRIVING_PHRASES = {
    "keep_lane": (
        "{keep} {lane}", "{keep} {lane}", "do not leave {lane}", "no lane changes",
        "drive straight on in {lane}", "carry on along {lane}", "keep going in {lane}",
        "stay put in {lane}", "keep following {lane}", "do not switch lanes",
    ),
    "change_left": (
        "{change} {left}", "{change} {left}", "make a lane change to the left",
        "change lanes leftwards", "do a left lane change", "go over to {left}",
        "leave your lane for {left}",
    ),
    "change_right": (
        "{change} {right}", "{change} {right}", "make a lane change to the right",
        "change lanes rightwards", "do a right lane change", "go over to {right}",
        "leave your lane for {right}",
    ),
    "stop": (
        "{stop} {before} {obstacle}", "{stop} {before} {obstacle}",
        "{obstacle} is ahead, {stop} {before} it", "do not hit {obstacle}, {stop}",
        "{stop} once you reach {obstacle}", "{stop} short of {obstacle}",
    ),
}
DRIVING_SLOTS = {
    "keep": ("keep to", "stay in", "remain in", "stick to", "stick with", "keep within"),
    "lane": ("your lane", "the current lane", "the same lane", "your own lane",
             "the lane you are in", "the lane you're in"),
    "change": ("change to", "move into", "switch to", "head into", "steer into", "cross into",
               "go into", "change over to", "get across to"),
    "left": ("the left lane", "the lane on the left", "the lane to your left",
             "the left-hand lane", "the lane left of you"),
    "right": ("the right lane", "the lane on the right", "the lane to your right",
              "the right-hand lane", "the lane right of you"),
    "stop": ("stop", "stop the car", "come to a stop", "halt", "stop driving",
             "come to a standstill", "park"),
    "before": ("behind", "before", "in front of", "just behind", "right before"),
    "obstacle": ("the obstacle", "the barrier", "the obstruction", "the blockage",
                 "the thing blocking your lane", "the object in your lane"),
}

#: First words of a core that is no imperative (no "kindly ..." before it).
_NOT_IMPERATIVE = {"the", "to", "towards", "toward", "as", "your", "no", "left", "right",
                   "forward", "forwards", "away", "farther", "ahead", "backward", "backwards",
                   "back", "nearer", "in"}
_MAX_LEN = 96  # sim.worlds.base.INSTRUCTION_MAX_LEN
#: The worlds this generator can rephrase.
PARAPHRASE_WORLDS = ("tabletop", "driving")
_CHARSET = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.'-")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _finish(rng: np.random.Generator, core: str) -> str:
    """Politeness (a prefix only before an imperative: a core that starts with "the"/"to"/
    "as"/"your"/"no" takes a suffix at most), then case and punctuation."""
    prefix, suffix = POLITE[int(rng.integers(len(POLITE)))]
    if core.split(" ", 1)[0] in _NOT_IMPERATIVE:
        prefix = ""
    text = prefix + core + suffix
    u = float(rng.random())
    if u < 0.55:
        pass
    elif u < 0.85:
        text = text[0].upper() + text[1:]
    elif u < 0.95:
        text = " ".join(w[0].upper() + w[1:] for w in text.split(" "))
    else:
        text = text.upper()
    if rng.random() < 0.35:
        text += "."
    return text


# --- tabletop ----------------------------------------------------------------------------------

def _referent(rng: np.random.Generator, color: str, shape: str | None,
              objects: Sequence[tuple[str, str]] | None) -> str:
    """A phrase for the objects the task means: colour + noun, or colour-only / shape-only
    where that picks out the same objects in ``objects`` ((colour, noun) per object)."""
    targets = None
    if objects is not None:
        targets = {i for i, (c, s) in enumerate(objects)
                   if c == color and (shape is None or s == shape)}
    kinds = ["full", "full", "full", "postfix"]
    if targets:
        if {i for i, (c, _) in enumerate(objects or []) if c == color} == targets:
            kinds += ["color_only", "color_only"]
        target_shapes = {objects[i][1] for i in targets} if objects is not None else set()
        if len(target_shapes) == 1:
            (s,) = target_shapes
            if {i for i, (_, t) in enumerate(objects or []) if t == s} == targets:
                kinds += ["shape_only", "shape_only"]
    elif shape is None:
        kinds += ["color_only"]
    kind = _pick(rng, kinds)
    col = _pick(rng, COLOR_SYNONYMS.get(color, (color,)))
    if kind == "color_only":
        return f"the {col} {_pick(rng, COLOR_ONLY_NOUNS)}"
    noun_key = shape if shape is not None else "object"
    if kind == "shape_only":
        assert targets and objects is not None
        noun_key = objects[next(iter(targets))][1]
    noun = _pick(rng, NOUN_SYNONYMS.get(noun_key, (noun_key,)))
    if kind == "shape_only":
        return f"the {noun}"
    if kind == "postfix":
        return _pick(rng, (f"the {noun} that is {col}", f"the {col}-coloured {noun}",
                           f"the {noun} coloured {col}"))
    return f"the {col} {noun}"


def _touch_core(rng: np.random.Generator, ref: str) -> str:
    verb = _pick(rng, TOUCH_VERBS)
    forms = (f"{verb} {ref}", f"{verb} {ref}", f"{verb} {ref}",
             f"{_pick(rng, TOUCH_REACH)} {ref}", f"find {ref} and {verb} it",
             f"{ref} is the one to {verb}", f"as for {ref}, {verb} it",
             f"{verb} {ref} with your fingertip", f"your target is {ref}, {verb} it",
             f"head over and {verb} {ref}")
    return _pick(rng, forms)


def _push_core(rng: np.random.Generator, ref: str, direction: str) -> str:
    verb = _pick(rng, PUSH_VERBS)
    d = _pick(rng, DIRECTION_PHRASES[direction])
    forms = (f"{verb} {ref} {d}", f"{verb} {ref} {d}", f"{verb} {ref} {d}",
             f"{d}, {verb} {ref}" if verb != "push" else f"{verb} {ref} {d}",
             f"find {ref} and {verb} it {d}", f"{ref} goes {d}, {verb} it",
             f"{verb} {ref} a little {d}", f"{ref} should be pushed {d}",
             f"use your fingertip to {verb} {ref} {d}")
    return _pick(rng, forms)


def paraphrase_tabletop(rng: np.random.Generator, task: str, color: str, shape: str | None,
                        direction: str | None = None,
                        objects: Sequence[tuple[str, str]] | None = None) -> str:
    """One phrasing of a tabletop task: ``task`` "touch" or "push", ``shape`` None for "the
    <colour> object", ``direction`` (left/right/forward/backward) for push; ``objects`` the
    scene's (colour, noun) pairs, which allows colour-only and shape-only references where
    they are unambiguous."""
    if task not in ("touch", "push"):
        raise ValueError(f"tabletop task {task!r} not in ('touch', 'push')")
    if task == "push" and direction not in DIRECTION_PHRASES:
        raise ValueError(f"a push needs a direction in {sorted(DIRECTION_PHRASES)}, got {direction!r}")
    for _ in range(8):
        ref = _referent(rng, color, shape, objects)
        core = _touch_core(rng, ref) if task == "touch" else _push_core(rng, ref, str(direction))
        text = _finish(rng, core)
        if len(text) <= _MAX_LEN and set(text) <= _CHARSET:
            return text
    noun = shape or "object"
    return f"touch the {color} {noun}" if task == "touch" else \
        f"push the {color} {noun} {DIRECTION_PHRASES[str(direction)][0]}"


# --- driving -----------------------------------------------------------------------------------

def paraphrase_driving(rng: np.random.Generator, task: str) -> str:
    """One phrasing of a driving task (keep_lane, change_left, change_right, stop)."""
    if task not in DRIVING_PHRASES:
        raise ValueError(f"driving task {task!r} not in {sorted(DRIVING_PHRASES)}")
    template = _pick(rng, DRIVING_PHRASES[task])
    slots = {k: _pick(rng, v) for k, v in DRIVING_SLOTS.items()}
    return _finish(rng, template.format(**slots))


# --- from a world's canonical instruction --------------------------------------------------------

def parse_tabletop(instruction: str) -> tuple[str, str, str | None, str | None]:
    """(task, colour, noun or None for "object", direction or None) of an instruction of the
    tabletop grammar (sim.worlds.tabletop.make_instruction)."""
    from embodied_stack.sim.worlds.tabletop import DIRECTION_PHRASES as GRAMMAR_DIRECTIONS

    words = instruction.split()
    if len(words) < 4 or words[0] not in ("touch", "push") or words[1] != "the":
        raise ValueError(f"not an instruction of the tabletop grammar: {instruction!r}")
    task, color, noun, rest = words[0], words[2], words[3], " ".join(words[4:])
    direction = None
    if task == "push":
        direction = next((w for w, p in GRAMMAR_DIRECTIONS.items() if p == rest), None)
        if direction is None:
            raise ValueError(f"not an instruction of the tabletop grammar: {instruction!r}")
    elif rest:
        raise ValueError(f"not an instruction of the tabletop grammar: {instruction!r}")
    return task, color, (None if noun == "object" else noun), direction


def driving_task(instruction: str) -> str:
    """The driving task whose grammar emits ``instruction``."""
    from embodied_stack.sim.worlds.driving import INSTRUCTIONS

    for task, texts in INSTRUCTIONS.items():
        if instruction in texts:
            return task
    raise ValueError(f"not an instruction of the driving grammar: {instruction!r}")


def paraphrase_instruction(world: str, instruction: str, rng: np.random.Generator,
                           objects: Sequence[tuple[str, str]] | None = None) -> str:
    """A phrasing of a world's canonical instruction; for tabletop, ``objects`` are the
    scene's (colour, noun) pairs (nouns as the instruction names them)."""
    if world == "driving":
        return paraphrase_driving(rng, driving_task(instruction))
    if world == "tabletop":
        task, color, noun, direction = parse_tabletop(instruction)
        return paraphrase_tabletop(rng, task, color, noun, direction, objects)
    raise ValueError(f"world {world!r} has no paraphrases (tabletop, driving)")


class TrainingParaphraser:
    """A run's ``rewrite(seed, instruction)`` for one world (sim/train/rollouts.run_episodes,
    the demonstrations): with probability ``share``, drawn from the episode's seed (the same
    episode gets the same words on a rerun or in another worker), a phrasing of the canonical
    instruction from this module's generator; else the instruction as it is. Picklable, for
    worker processes. A world without paraphrases (:data:`PARAPHRASE_WORLDS`) is an error."""

    def __init__(self, world: str, share: float, salt: int = 0x7A11):
        if world not in PARAPHRASE_WORLDS:
            raise ValueError(f"world {world!r} has no paraphrase generator (only {PARAPHRASE_WORLDS})")
        if not 0 <= share <= 1:
            raise ValueError(f"paraphrase share {share} must be in [0, 1]")
        self.world, self.share, self.salt = world, float(share), int(salt)

    def __call__(self, seed: int, instruction: str) -> str:
        rng = np.random.default_rng([int(seed), self.salt])
        if rng.random() >= self.share:
            return instruction
        return paraphrase_instruction(self.world, instruction, rng)


def paraphrase_words(world: str, draws: int = 4000, seed: int = 0) -> set[str]:
    """Every word the generator emitted for the world's canonical instructions in ``draws``
    paraphrases (lowercase, as the policy's word tokenizer splits them): the vocabulary a model
    trained on paraphrases needs beside the grammar's."""
    from embodied_stack.models.policy.elastic_vla.tokenizer import split_words

    canonical = [t for texts in task_prototypes(world).values() for t in texts]
    rng = np.random.default_rng([seed, 0x40CA])
    words: set[str] = set()
    for _ in range(draws):
        text = paraphrase_instruction(world, canonical[int(rng.integers(len(canonical)))], rng)
        words.update(split_words(text))
    return words


def scene_objects(scene: dict) -> list[tuple[str, str]]:
    """(colour, noun) per object of a tabletop scene dict (``classes``, ``colors``)."""
    from embodied_stack.sim.worlds.tabletop import FAMILY_NOUNS

    return [(c, FAMILY_NOUNS.get(k, k)) for c, k in zip(scene["colors"], scene["classes"])]


def scene_text(objects: Sequence[dict]) -> str:
    """A ``scene/objects`` message from a world's ``info["objects"]`` (``color``, ``class``
    per object): "colour noun" per object, comma-separated, e.g. "red cube, green ball"."""
    from embodied_stack.sim.worlds.tabletop import FAMILY_NOUNS

    return ", ".join(f"{o['color']} {FAMILY_NOUNS.get(o['class'], o['class'])}" for o in objects)


def scene_tasks(spec: str, text: str, prototypes: dict[str, list[str]] | None = None) -> set[str] | None:
    """The known tasks of the policy node's ``instruction_tasks`` (`spec`) that the objects in
    a ``scene/objects`` message can serve ("colour noun" per object, comma-separated; "":
    nothing in view). None (every task) where tasks name no object: driving, task files.
    ``prototypes``: ``known_task_prototypes(spec)`` if the caller has it (a detector may
    publish at camera rate). ValueError on an item that is not two words."""
    objects = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        words = item.lower().split()
        if len(words) != 2:
            raise ValueError(f"scene object {item!r}: expected 'colour noun', e.g. 'red cube'")
        objects.append((words[0], words[1]))
    world = spec.partition(":")[0]
    if world != "tabletop":
        return None
    return available_tasks(world, objects, prototypes or known_task_prototypes(spec))


# --- the known tasks, for grounding (models/policy/instruction_grounding.py) ----------------------

def task_prototypes(world: str, objects: str = "primitives") -> dict[str, list[str]]:
    """Each known task of a world and its canonical sentences: tabletop, one task per
    canonical instruction (key = that instruction: verb, colour, noun, direction); driving,
    one task per ``driving.TASKS`` entry, with every sentence its grammar emits."""
    if world == "driving":
        from embodied_stack.sim.worlds.driving import INSTRUCTIONS

        return {task: list(texts) for task, texts in INSTRUCTIONS.items()}
    if world == "tabletop":
        from embodied_stack.sim.worlds import procedural_objects
        from embodied_stack.sim.worlds.tabletop import CLASS_NAMES, COLOR_NAMES, FAMILY_NOUNS, make_instruction
        from embodied_stack.sim.worlds.tabletop import DIRECTION_PHRASES as GRAMMAR_DIRECTIONS

        nouns: list[str | None] = (
            [FAMILY_NOUNS.get(f, f) for f in procedural_objects.FAMILIES]
            if objects == "shapes" else list(CLASS_NAMES))
        out: dict[str, list[str]] = {}
        for color in COLOR_NAMES:
            for noun in [*nouns, None]:
                for task, directions in (("touch", [None]), ("push", list(GRAMMAR_DIRECTIONS))):
                    for direction in directions:
                        text = make_instruction(task, color, noun, direction)
                        out[text] = [text]
        return out
    raise ValueError(f"world {world!r} has no known tasks (tabletop, driving)")


def known_task_prototypes(spec: str) -> dict[str, list[str]]:
    """The known tasks an instruction is grounded against, from the policy node's
    ``instruction_tasks``: a world with known tasks (``tabletop``, ``driving``; ``tabletop:shapes``
    for the procedural shapes' nouns), or a YAML/JSON file ``{task: [sentence, ...]}``
    (models/policy/instruction_grounding.py). ValueError with the allowed forms otherwise."""
    from embodied_stack.models.policy.instruction_grounding import load_task_prototypes

    world, _, objects = spec.partition(":")
    if world in ("tabletop", "driving"):
        if objects not in ("", "primitives", "shapes"):
            raise ValueError(f"instruction_tasks {spec!r}: objects must be primitives or shapes")
        return task_prototypes(world, objects or "primitives")
    if spec.endswith((".yaml", ".yml", ".json")):
        return load_task_prototypes(spec)
    raise ValueError(f"instruction_tasks {spec!r}: give a world (tabletop, tabletop:shapes, driving) "
                     "or a .yaml/.json file mapping each task to its sentences")


def available_tasks(world: str, objects: Sequence[tuple[str, str]] | None,
                    prototypes: dict[str, list[str]] | None = None) -> set[str] | None:
    """The known tasks a scene can serve: tabletop, those whose colour (and noun, unless
    "object") some object in ``objects`` has; driving (or no objects given), None: every
    known task."""
    if world != "tabletop" or objects is None:
        return None
    present = set(objects)
    colors = {c for c, _ in objects}
    out = set()
    for key in (prototypes or task_prototypes(world)):
        _, color, noun, _ = parse_tabletop(key)
        if (color, noun) in present or (noun is None and color in colors):
            out.add(key)
    return out
