"""A tiny random MiMo-Embodied-shaped checkpoint for the tests: a
``Qwen2_5_VLForConditionalGeneration`` of the real transformers class with random weights,
a byte-level tokenizer and the processor files, all built locally (no hub download)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from embodied_stack.models.policy import mimo_prompts as P
from embodied_stack.models.policy.mimo_adapter import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    QWEN2_VL_CHAT_TEMPLATE,
)

log = logging.getLogger(__name__)


TINY_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]


def make_tiny_tokenizer():
    """A byte-level ``Qwen2Tokenizer`` built locally (no hub): 256 byte tokens, no merges, the
    Qwen special tokens and ``<think>``/``</think>``. Round-trips any text."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {"<|endoftext|>": 0}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": TINY_SPECIAL_TOKENS})
    tok.add_tokens(["<think>", "</think>"])
    return tok


def tiny_image_processor_config(min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 16) -> dict[str, Any]:
    """The preprocessor_config.json of the tiny checkpoint (Qwen2.5-VL's layout and defaults,
    with a small ``max_pixels`` so an image becomes at most 16 vision tokens)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True, "resample": 3, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD,
        "min_pixels": min_pixels, "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "patch_size": P.QWEN_PATCH_SIZE, "temporal_patch_size": 2, "merge_size": P.QWEN_MERGE_SIZE,
    }


def make_tiny_random_model(seed: int = 0, tokenizer=None, *, hidden_size: int = 64, num_layers: int = 4,
                           num_heads: int = 8, num_kv_heads: int = 4, intermediate_size: int = 128):
    """A tiny random ``Qwen2_5_VLForConditionalGeneration`` (GQA: 8 query heads on 4 KV heads,
    head dim 8) matching ``make_tiny_tokenizer``. Returns ``(model, tokenizer)``. Weights are
    drawn fan-in scaled (not the 0.02 init) so logits are not near-uniform and every layer
    matters — still random: nothing it says means anything."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = tokenizer or make_tiny_tokenizer()
    ids = dict(zip(TINY_SPECIAL_TOKENS, tok.convert_tokens_to_ids(TINY_SPECIAL_TOKENS)))
    head_dim = hidden_size // num_heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]  # sums to head_dim / 2
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=(len(tok) + 15) // 16 * 16, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=0, eos_token_id=ids["<|im_end|>"], pad_token_id=0, tie_word_embeddings=False,
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden_size,
                           patch_size=P.QWEN_PATCH_SIZE, spatial_merge_size=P.QWEN_MERGE_SIZE,
                           temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and ("language_model" in name or name.startswith("lm_head")):
                p.normal_(0.0, 1.0 if "embed_tokens" in name else 1.0 / np.sqrt(p.shape[1]))
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = 0
    return model, tok


def make_tiny_random_checkpoint(path: str | os.PathLike, seed: int = 0, *, min_pixels: int = 56 * 56,
                                max_pixels: int = 28 * 28 * 16, **model_kwargs) -> Path:
    """Save a tiny random ``Qwen2_5_VLForConditionalGeneration`` + tokenizer + processor files
    to ``path``, built locally only (no hub): config.json, model.safetensors,
    generation_config.json, tokenizer.json, tokenizer_config.json, preprocessor_config.json and
    chat_template.jinja (or, where Pillow/torchvision allow building the real
    ``Qwen2_5_VLProcessor``, whatever its ``save_pretrained`` writes)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    model, tok = make_tiny_random_model(seed, **model_kwargs)
    model.save_pretrained(str(root), safe_serialization=True)
    tok.save_pretrained(str(root))
    image_cfg = tiny_image_processor_config(min_pixels, max_pixels)
    saved_real = False
    try:  # the real processor class, where torchvision lets it be built
        from transformers.utils import is_torchvision_available

        if is_torchvision_available():
            from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor

            ip = Qwen2VLImageProcessor(**{k: v for k, v in image_cfg.items()
                                          if k not in ("image_processor_type", "processor_class", "size")})
            Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok,
                                chat_template=QWEN2_VL_CHAT_TEMPLATE).save_pretrained(str(root))
            saved_real = True
    except Exception as exc:  # noqa: BLE001 — fall back to writing the same files by hand
        log.info("could not save the real Qwen2_5_VLProcessor (%s); writing its files directly", exc)
    if not saved_real:
        (root / "preprocessor_config.json").write_text(json.dumps(image_cfg, indent=2), encoding="utf-8")
        (root / "chat_template.jinja").write_text(QWEN2_VL_CHAT_TEMPLATE, encoding="utf-8")
    return root


def install_canned_answer(policy, answer: str, seen: dict | None = None, *, run_model: bool = False,
                          setattr_=setattr):
    """Replace only the text generation step of ``policy.model``: ``generate`` returns the
    prompt's ids followed by the tokens of ``answer`` (+ ``<|im_end|>``), so prompt building,
    decoding, thinking removal, parsing and resize mapping stay real. The random weights say
    nothing meaningful, hence the canned text. ``run_model``: run the real ``generate`` for one
    token first (vision encoder + decoder forward on the real inputs, the active elastic
    submodel included) and discard its token. ``setattr_``: e.g. ``monkeypatch.setattr``.
    Returns ``seen``: the decoded prompt, the ``max_new_tokens`` asked for, the other kwargs
    and how many calls were made."""
    import torch

    seen = {} if seen is None else seen
    tok = policy.tokenizer
    ans_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    setattr_(policy, "max_new_tokens", max(policy.max_new_tokens, len(ans_ids)))  # byte-level tokens
    real_generate = policy.model.generate

    def fake_generate(input_ids=None, max_new_tokens=None, **kwargs):
        if run_model:
            real_generate(input_ids=input_ids, max_new_tokens=1, **kwargs)
        seen["prompt"] = tok.decode(input_ids[0].tolist())
        seen["max_new_tokens"] = max_new_tokens
        seen["kwargs"] = kwargs
        seen["calls"] = seen.get("calls", 0) + 1
        tail = torch.tensor([ans_ids[:max_new_tokens]], dtype=input_ids.dtype)
        return torch.cat([input_ids, tail], dim=1)

    setattr_(policy.model, "generate", fake_generate)
    return seen
