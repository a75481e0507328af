"""MiMo-Embodied-7B as a ``Policy``: load a LOCAL checkpoint, prompt it, parse its answers.

MiMo-Embodied-7B is a Hugging Face ``Qwen2_5_VLForConditionalGeneration`` (docs/architecture.md). This
adapter loads it from a local directory only (``local_files_only=True``,
``trust_remote_code=False``, safetensors only), builds a task prompt from the
observation, generates with a ``max_new_tokens`` cap, and parses the text with the defensive
parsers of ``mimo_prompts``.

What ``select_action`` returns
------------------------------
A language model that points at pixels does not output joint or wheel commands, and we do not
invent them here:

- ``embodiment == "arm"``: a pointing prompt ("point to X", "where is X", "find X") or else an
  affordance prompt built from the instruction. The first point, mapped to **camera pixels**
  (resize ratio applied), is ``extras["target_pixel"]``; back-projected with the observation's
  depth and intrinsics (``grounding.backproject_pixel``) it is ``Action.target_point``: (x, y, z)
  **metres in the camera optical frame**. ``Action.chunk`` = zeros (T, 3).
- ``embodiment == "vehicle"``: a driving prompt in our own JSON waypoint convention.
  ``Action.plan`` = (N, 2) waypoints in metres, ego frame (x forward, y left), one every
  ``extras["waypoint_dt"]`` s; ``chunk`` = zeros (T, 2).

``outputs_targets`` is True: the chunk is a placeholder, and the policy node turns the target
(servo toward it, with the camera -> base transform and the end-effector position) or the plan
(pure pursuit) into the executed chunk (``control/target_control.py``).

When the model's text holds no usable answer, or the pixel has no valid depth around it,
``target_point`` / ``plan`` stay None and ``extras["ok"]`` is False with ``extras["reason"]``
— the node then stops and reports the reason. ``extras`` always carries the parsed answer, the
raw text and the thought.

Processor
---------
``AutoProcessor`` (the real ``Qwen2_5_VLProcessor``) is used whenever it can be built. It
needs torchvision (transformers builds a video processor with it, Pillow or not); where
torchvision is missing (this CI machine), ``QwenVLNumpyProcessor`` stands in: the same chat
template, the same ``smart_resize`` sizes and the same patch layout, resized with OpenCV
instead of PIL/torchvision bicubic (pixel values differ slightly; token counts and coordinates
do not).

Elastic submodels
-----------------
``make_elastic(...)`` ranks and permutes the text decoder (``models/elastic/qwen.py``) so the
policy switches between "full", "3/4", "1/2", "1/4" with ``set_submodel`` — zero-shot, no
retraining; quality of the small ones on the real checkpoint is unverified.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import mimo_prompts as P
from .grounding import backproject_pixel
from .interface import EMBODIMENT_ACTION_DIM, Action, Observation, Policy

if TYPE_CHECKING:
    from ..elastic.qwen import ElasticQwen

log = logging.getLogger(__name__)

#: File patterns of pickled weights that we refuse to load.
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

#: The Qwen2-VL / Qwen2.5-VL chat template (as published with the Qwen2.5-VL checkpoints),
#: used only when a checkpoint ships no template of its own.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# ----------------------------------------------------------------------------------------------
# Checkpoint checks (before anything is loaded)
# ----------------------------------------------------------------------------------------------


class MissingCheckpointFile(FileNotFoundError):
    """A file the MiMo checkpoint needs is not in the directory (the message names both)."""


class UnsafeCheckpointError(ValueError):
    """The checkpoint holds only pickled weights; we allow safetensors only."""


@dataclass(frozen=True)
class CheckpointFiles:
    root: Path
    weights: tuple[Path, ...]
    tokenizer: tuple[Path, ...]
    image_processor: Path


def _missing(root: Path, name: str, what: str) -> MissingCheckpointFile:
    return MissingCheckpointFile(
        f"MiMo checkpoint {root}: missing {name} ({what}); expected {root / name}"
    )


def check_checkpoint(path: str | os.PathLike) -> CheckpointFiles:
    """Validate a local MiMo-Embodied / Qwen2.5-VL checkpoint directory before loading it.

    Raises MissingCheckpointFile (naming the directory and the file) or UnsafeCheckpointError
    (pickled weights only), or ValueError (config.json is not a Qwen2.5-VL model)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise MissingCheckpointFile(f"MiMo checkpoint directory {root} does not exist (or is not a directory)")
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise _missing(root, "config.json", "model configuration")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"MiMo checkpoint {root}: config.json is not valid JSON: {exc}") from exc
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") != "qwen2_5_vl" and "Qwen2_5_VLForConditionalGeneration" not in archs:
        raise ValueError(
            f"MiMo checkpoint {root}: config.json describes model_type={cfg.get('model_type')!r} "
            f"architectures={archs}; expected a Qwen2_5_VLForConditionalGeneration (qwen2_5_vl)"
        )
    # Weights: safetensors only.
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"MiMo checkpoint {root}: unreadable {index.name}: {exc}") from exc
        shards = tuple(sorted({root / s for s in weight_map.values()}))
        for s in shards:
            if not s.is_file():
                raise _missing(root, s.name, f"weight shard listed in {index.name}")
        weights = shards
    elif (root / "model.safetensors").is_file():
        weights = (root / "model.safetensors",)
    else:
        pickles = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)
        if pickles:
            raise UnsafeCheckpointError(
                f"MiMo checkpoint {root}: only pickled weights found ({', '.join(pickles)}); refused — "
                "model files must be safetensors (never unpickle a file a user hands us). "
                "Convert them to model.safetensors with a trusted tool on a trusted machine."
            )
        raise _missing(root, "model.safetensors", "weights (or model.safetensors.index.json + shards)")
    # Processor files.
    tok: tuple[Path, ...]
    if (root / "tokenizer.json").is_file():
        tok = (root / "tokenizer.json",)
    elif (root / "vocab.json").is_file() and (root / "merges.txt").is_file():
        tok = (root / "vocab.json", root / "merges.txt")
    else:
        raise _missing(root, "tokenizer.json", "tokenizer (or vocab.json + merges.txt)")
    if not (root / "tokenizer_config.json").is_file():
        raise _missing(root, "tokenizer_config.json", "tokenizer configuration")
    proc = root / "preprocessor_config.json"
    if not proc.is_file():
        proc = root / "processor_config.json"
        if not proc.is_file():
            raise _missing(root, "preprocessor_config.json", "image processor configuration "
                           "(or processor_config.json)")
    return CheckpointFiles(root, weights, tok + (root / "tokenizer_config.json",), proc)


def _image_processor_config(files: CheckpointFiles) -> dict[str, Any]:
    cfg = json.loads(files.image_processor.read_text(encoding="utf-8"))
    if isinstance(cfg.get("image_processor"), dict):  # transformers 5 unified processor_config.json
        cfg = cfg["image_processor"]
    return cfg


def _chat_template(root: Path, tokenizer) -> str:
    """The checkpoint's own chat template, or the published Qwen2.5-VL one."""
    if (root / "chat_template.jinja").is_file():
        return (root / "chat_template.jinja").read_text(encoding="utf-8")
    if (root / "chat_template.json").is_file():
        try:
            t = json.loads((root / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
            if isinstance(t, str) and t:
                return t
        except (OSError, ValueError):
            pass
    t = getattr(tokenizer, "chat_template", None)
    if isinstance(t, str) and t:
        return t
    log.warning("MiMo checkpoint %s ships no chat template; using the Qwen2.5-VL template", root)
    return QWEN2_VL_CHAT_TEMPLATE


# ----------------------------------------------------------------------------------------------
# A NumPy stand-in for Qwen2_5_VLProcessor (only where Pillow and torchvision are both absent)
# ----------------------------------------------------------------------------------------------


class QwenVLNumpyProcessor:
    """Qwen2.5-VL preprocessing without Pillow/torchvision: chat template, ``smart_resize``,
    rescale + normalise, the Qwen patch layout, ``<|image_pad|>`` expansion and
    ``mm_token_type_ids`` — the same tensors ``Qwen2_5_VLProcessor`` returns. Resizing uses
    OpenCV (INTER_AREA when shrinking, INTER_CUBIC when enlarging) instead of bicubic PIL, so
    pixel values differ slightly from the real processor; sizes and token counts are equal."""

    image_token = "<|image_pad|>"

    def __init__(self, tokenizer, image_cfg: dict[str, Any], chat_template: str):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        size = image_cfg.get("size") or {}
        self.min_pixels = int(image_cfg.get("min_pixels") or size.get("shortest_edge") or P.QWEN_MIN_PIXELS)
        self.max_pixels = int(image_cfg.get("max_pixels") or size.get("longest_edge") or P.QWEN_MAX_PIXELS)
        self.patch_size = int(image_cfg.get("patch_size", P.QWEN_PATCH_SIZE))
        self.merge_size = int(image_cfg.get("merge_size", P.QWEN_MERGE_SIZE))
        self.temporal_patch_size = int(image_cfg.get("temporal_patch_size", 2))
        self.image_mean = np.asarray(image_cfg.get("image_mean", OPENAI_CLIP_MEAN), np.float32)
        self.image_std = np.asarray(image_cfg.get("image_std", OPENAI_CLIP_STD), np.float32)
        self.rescale_factor = float(image_cfg.get("rescale_factor", 1 / 255))
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, files: CheckpointFiles | None = None):
        from transformers import AutoTokenizer

        files = files or check_checkpoint(path)
        tok = AutoTokenizer.from_pretrained(str(files.root), local_files_only=True, trust_remote_code=False)
        return cls(tok, _image_processor_config(files), _chat_template(files.root, tok))

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **kw):
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=tokenize,
                                                  add_generation_prompt=add_generation_prompt, **kw)

    def _pixels(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        factor = self.patch_size * self.merge_size
        rh, rw = P.smart_resize(h, w, factor, self.min_pixels, self.max_pixels)
        if (rh, rw) != (h, w):
            try:
                import cv2

                interp = cv2.INTER_AREA if rh * rw < h * w else cv2.INTER_CUBIC
                img = cv2.resize(np.ascontiguousarray(img), (rw, rh), interpolation=interp)
            except ImportError:  # nearest neighbour, NumPy only
                ys = np.minimum((np.arange(rh) + 0.5) * h / rh, h - 1).astype(int)
                xs = np.minimum((np.arange(rw) + 0.5) * w / rw, w - 1).astype(int)
                img = img[ys][:, xs]
        x = img.astype(np.float32) * self.rescale_factor
        x = (x - self.image_mean) / self.image_std
        x = x.transpose(2, 0, 1)  # C, H, W
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = rh // p, rw // p
        c = x.shape[0]
        x = x.reshape(c, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
        x = np.broadcast_to(x[:, :, :, :, :, None], x.shape[:5] + (t,) + x.shape[5:])
        return np.ascontiguousarray(x).reshape(gh * gw, c * t * p * p), (1, gh, gw)

    def __call__(self, text, images=None, return_tensors="pt", **_):
        import torch

        texts = [text] if isinstance(text, str) else list(text)
        images = [] if images is None else ([images] if isinstance(images, np.ndarray) else list(images))
        patches, grids = [], []
        for im in images:
            pv, g = self._pixels(im)
            patches.append(pv)
            grids.append(g)
        k = 0
        expanded = []
        for t in texts:
            parts = t.split(self.image_token)
            out = parts[0]
            for part in parts[1:]:
                if k >= len(grids):
                    raise ValueError("more <|image_pad|> placeholders than images")
                n = int(np.prod(grids[k])) // (self.merge_size ** 2)
                out += self.image_token * n + part
                k += 1
            expanded.append(out)
        if k != len(grids):
            raise ValueError(f"{len(grids)} images but {k} <|image_pad|> placeholders in the text")
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True)
        ids = enc["input_ids"]
        mm = torch.zeros_like(ids, dtype=torch.int32)
        mm[ids == self.image_token_id] = 1
        mm[ids == self.video_token_id] = 2
        result = {"input_ids": ids, "attention_mask": enc["attention_mask"], "mm_token_type_ids": mm}
        if grids:
            result["pixel_values"] = torch.from_numpy(np.concatenate(patches, 0))
            result["image_grid_thw"] = torch.tensor(grids, dtype=torch.long)
        return result


def load_processor(path: str | os.PathLike, files: CheckpointFiles | None = None):
    """``AutoProcessor`` (local files only, no remote code); the NumPy stand-in only when the
    real processor cannot be built for want of torchvision (transformers' Qwen2.5-VL processor
    also builds a video processor that needs it, Pillow or not)."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    files = files or check_checkpoint(path)
    try:
        return AutoProcessor.from_pretrained(str(files.root), local_files_only=True, trust_remote_code=False)
    except (ImportError, ValueError) as exc:
        if is_torchvision_available():
            raise type(exc)(f"MiMo checkpoint {files.root}: cannot build its processor: {exc}") from exc
        log.info("torchvision missing; using the NumPy Qwen2.5-VL processor for %s", files.root)
        return QwenVLNumpyProcessor.from_pretrained(files.root, files)


# ----------------------------------------------------------------------------------------------
# The policy
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """One prompt's generated text and the image geometry needed to read its coordinates."""

    text: str
    resize: P.ResizeInfo
    prompt: str
    new_tokens: int
    seconds: float


_POINT_VERBS = re.compile(
    r"^\s*(?:please\s+)?(?:point\s+(?:to|at)|where\s+is|where's|find|locate|show\s+me|look\s+at)\s+(.+?)[\s\.\?!]*$",
    re.I,
)


def _str_dtype(dtype, device: str):
    import torch

    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        return value
    return dtype


class MiMoEmbodiedPolicy(Policy):
    """A local MiMo-Embodied-7B (or any Qwen2.5-VL) checkpoint behind the Policy interface."""

    outputs_targets = True  # target_point / plan, not motor actions: the node controls

    def __init__(self, model, processor, *, device: str = "cpu", thinking: bool = False,
                 max_new_tokens: int | None = None, chunk_len: int = 8, num_waypoints: int = 6,
                 waypoint_dt: float = 0.5, checkpoint: str | os.PathLike | None = None):
        self.model = model
        self.processor = processor
        self.device = str(device)
        self.thinking = bool(thinking)
        self.max_new_tokens = int(max_new_tokens or (1024 if thinking else 256))
        self.chunk_len = int(chunk_len)
        self.num_waypoints = int(num_waypoints)
        self.waypoint_dt = float(waypoint_dt)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.elastic: ElasticQwen | None = None
        self.submodel_names = ["full"]

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu", dtype=None, thinking: bool = False,
                        **kwargs) -> "MiMoEmbodiedPolicy":
        """Load a LOCAL Qwen2.5-VL checkpoint directory (config.json, model.safetensors[.index.json],
        tokenizer + preprocessor files). Nothing is downloaded and no remote code runs."""
        files = check_checkpoint(path)
        from transformers import Qwen2_5_VLForConditionalGeneration

        torch_dtype = _str_dtype(dtype, device)
        try:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                str(files.root), local_files_only=True, trust_remote_code=False, use_safetensors=True,
                dtype=torch_dtype,
            )
        except OSError as exc:
            raise MissingCheckpointFile(f"MiMo checkpoint {files.root}: cannot load weights: {exc}") from exc
        # cast: transformers decorates PreTrainedModel.to with functools.wraps(nn.Module.to), and
        # typeshed's functools._Wrapped is no descriptor, so the checker would not bind self
        cast(Any, model).to(device).eval()
        processor = load_processor(files.root, files)
        return cls(model, processor, device=device, thinking=thinking, checkpoint=files.root, **kwargs)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    # -- elastic ------------------------------------------------------------------------------

    def make_elastic(self, calibration: list[Any] | None = None, images: list[np.ndarray] | None = None):
        """Rank and permute the decoder on calibration data (processor outputs, token-id
        tensors, or — by default — our task prompts on ``images``; with no images, two
        synthetic frames, which is a weak calibration: pass real camera frames)."""
        from ..elastic.qwen import ElasticQwen

        if calibration is None:
            if not images:
                rng = np.random.default_rng(0)
                images = [np.full((224, 224, 3), 127, np.uint8),
                          rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)]
            texts = [P.pointing_prompt("the red cube"), P.affordance_prompt("open the drawer"),
                     P.bbox_prompt("cup"), P.planning_prompt("put the cup in the sink"),
                     P.driving_prompt("turn left at the intersection", self.num_waypoints, self.waypoint_dt)]
            calibration = [self._inputs(images[i % len(images)], t)[0] for i, t in enumerate(texts)]
        self.elastic = ElasticQwen.calibrate(self.model, calibration)
        self.submodel_names = self.elastic.submodel_names
        return self.elastic

    @property
    def submodel(self) -> str:
        return self.elastic.active if self.elastic is not None else "full"

    def set_submodel(self, name: str) -> None:
        super().set_submodel(name)  # validates the name
        if self.elastic is not None:
            self.elastic.apply(name)

    # -- generation ---------------------------------------------------------------------------

    def _inputs(self, image: np.ndarray, user_text: str):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[text], images=[image], return_tensors="pt")
        inputs = {k: v for k, v in dict(inputs).items() if v is not None}
        grid = inputs["image_grid_thw"][0].tolist()
        ip = getattr(self.processor, "image_processor", self.processor)
        patch = int(getattr(ip, "patch_size", P.QWEN_PATCH_SIZE))
        resize = P.ResizeInfo(image.shape[0], image.shape[1], int(grid[1]) * patch, int(grid[2]) * patch)
        return inputs, resize

    def _special_ids(self, *tokens: str) -> list[int]:
        tok = self.tokenizer
        ids = []
        for t in tokens:
            i = tok.convert_tokens_to_ids(t)
            if isinstance(i, int) and i >= 0 and i != getattr(tok, "unk_token_id", None):
                ids.append(i)
        return ids

    def generate(self, image: np.ndarray, prompt: str, max_new_tokens: int | None = None) -> Generation:
        """Run one image + prompt (thinking switch applied) and return the decoded new text."""
        import torch

        user_text = P.with_thinking(prompt, self.thinking)
        inputs, resize = self._inputs(image, user_text)
        dev = next(self.model.parameters()).device
        inputs = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        eos = self._special_ids("<|im_end|>", "<|endoftext|>")
        suppress = self._special_ids("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=int(max_new_tokens or self.max_new_tokens), do_sample=False,
                eos_token_id=eos or None, pad_token_id=(eos or [0])[0], suppress_tokens=suppress or None,
            )
        seconds = time.perf_counter() - t0
        seq = out.sequences if hasattr(out, "sequences") else out
        new = seq[0, inputs["input_ids"].shape[1]:].tolist()
        for i, t in enumerate(new):
            if t in eos:
                new = new[:i]
                break
        text = self.tokenizer.decode(new, skip_special_tokens=False)
        for t in ("<|im_end|>", "<|endoftext|>"):
            text = text.replace(t, "")
        return Generation(text, resize, user_text, len(new), seconds)

    # -- typed tasks ---------------------------------------------------------------------------

    def point(self, image: np.ndarray, query: str) -> P.PointAnswer | P.NoAnswer:
        """Points at ``query``, in camera pixels of ``image``."""
        g = self.generate(image, P.pointing_prompt(query))
        r = P.parse_points(g.text, (g.resize.resized_w, g.resize.resized_h))
        return r.to_camera(g.resize) if r.ok else r

    def affordance(self, image: np.ndarray, task: str) -> P.PointAnswer | P.NoAnswer:
        """Where to act for ``task``, in camera pixels of ``image``."""
        g = self.generate(image, P.affordance_prompt(task))
        r = P.parse_points(g.text, (g.resize.resized_w, g.resize.resized_h))
        return r.to_camera(g.resize) if r.ok else r

    def detect(self, image: np.ndarray, query: str) -> P.BoxAnswer | P.NoAnswer:
        """Boxes [x1, y1, x2, y2] around ``query``, in camera pixels of ``image``."""
        g = self.generate(image, P.bbox_prompt(query))
        r = P.parse_boxes(g.text, (g.resize.resized_w, g.resize.resized_h))
        return r.to_camera(g.resize) if r.ok else r

    def plan_steps(self, image: np.ndarray, task: str) -> P.StepsAnswer | P.NoAnswer:
        return P.parse_steps(self.generate(image, P.planning_prompt(task)).text)

    def drive(self, image: np.ndarray, instruction: str) -> P.WaypointAnswer | P.NoAnswer:
        """Waypoints (N, 2) in metres, ego frame — our own convention (see mimo_prompts)."""
        g = self.generate(image, P.driving_prompt(instruction, self.num_waypoints, self.waypoint_dt))
        return P.parse_waypoints(g.text)

    def choose(self, image: np.ndarray, question: str, options) -> P.ChoiceAnswer | P.NoAnswer:
        return P.parse_choice(self.generate(image, P.multiple_choice_prompt(question, options)).text)

    # -- Policy --------------------------------------------------------------------------------

    @staticmethod
    def task_for(observation: Observation) -> tuple[str, str]:
        """(task, argument) chosen from the embodiment and instruction:
        vehicle -> ("drive", instruction); arm + "point to / where is / find X" -> ("point", X);
        other arm instructions -> ("affordance", instruction)."""
        if observation.embodiment == "vehicle":
            return "drive", observation.instruction
        m = _POINT_VERBS.match(observation.instruction or "")
        if m:
            return "point", m.group(1)
        return "affordance", observation.instruction or "pick up the object"

    def select_action(self, observation: Observation) -> Action:
        t0 = time.perf_counter()
        task, arg = self.task_for(observation)
        prompt = {"drive": lambda a: P.driving_prompt(a, self.num_waypoints, self.waypoint_dt),
                  "point": P.pointing_prompt, "affordance": P.affordance_prompt}[task](arg)
        g = self.generate(observation.rgb, prompt)
        if observation.embodiment not in EMBODIMENT_ACTION_DIM:
            raise ValueError(f"the MiMo backend serves {sorted(EMBODIMENT_ACTION_DIM)}, not "
                             f"{observation.embodiment!r}")
        dim = EMBODIMENT_ACTION_DIM[observation.embodiment]
        chunk = np.zeros((self.chunk_len, dim), np.float32)
        target = plan = pixel = None
        reason = ""
        if task == "drive":
            answer = P.parse_waypoints(g.text)
            if answer.ok:
                plan = answer.waypoints.astype(np.float32)
        else:
            answer = P.parse_points(g.text, (g.resize.resized_w, g.resize.resized_h))
            if answer.ok:
                answer = answer.to_camera(g.resize)
                pixel = answer.points[0].astype(np.float32)
                ground = backproject_pixel(pixel, observation.depth, observation.camera_K)
                if ground.point is not None:  # i.e. ground.ok, in a form that narrows point
                    target = ground.point.astype(np.float32)
                else:
                    reason = f"pointed at pixel ({pixel[0]:.1f}, {pixel[1]:.1f}): {ground.reason}"
        ok = bool(answer.ok) and (task == "drive" or target is not None)
        if not answer.ok:
            reason = answer.reason
        extras = {
            "task": task, "argument": arg, "prompt": g.prompt, "answer": answer, "ok": ok,
            "reason": reason, "raw_text": g.text, "target_pixel": pixel,
            "thought": getattr(answer, "thought", ""), "new_tokens": g.new_tokens,
            "generate_s": g.seconds, "resize": g.resize, "waypoint_dt": self.waypoint_dt,
        }
        return Action(chunk=chunk, stamp=observation.stamp, submodel=self.submodel,
                      latency_s=time.perf_counter() - t0, target_point=target, plan=plan, extras=extras)


__all__ = [
    "MissingCheckpointFile", "UnsafeCheckpointError", "CheckpointFiles", "check_checkpoint",
    "QwenVLNumpyProcessor", "load_processor", "Generation", "MiMoEmbodiedPolicy",
    "QWEN2_VL_CHAT_TEMPLATE", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD",
]
