"""A small word-level instruction tokenizer, shipped as a JSON vocabulary next to the weights.

Text is lowercased and split into runs of letters/digits and single punctuation marks
("Touch the red cube!" -> ["touch", "the", "red", "cube", "!"]). Id 0 is ``<pad>``, id 1 is
``<unk>``; ``encode`` truncates to ``max_tokens`` and right-pads with ``<pad>``. No download,
no pickle: the file is ``{"type": "word-level", "version": 1, "vocab": [...]}``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

PAD, UNK = "<pad>", "<unk>"
_SPLIT = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
FORMAT = "word-level"
VERSION = 1

#: Words of the instructions our simulated worlds and demos use (tabletop arm, driving).
DEFAULT_WORDS: tuple[str, ...] = tuple(
    """
    a an the to of on in at and or then with from into onto near next by up down left right
    forward backward back front behind above below over under top bottom middle center centre
    touch reach move push pick place put grasp grab lift drop go drive stop follow keep stay turn
    change switch merge park slow speed accelerate brake yield pass overtake avoid point look find
    red green blue yellow orange purple pink white black gray grey brown cyan magenta
    cube block box ball sphere cylinder object target cup bowl plate bottle can goal marker
    small large big tiny closest nearest farthest first second third other
    lane road car vehicle truck pedestrian light sign exit lot spot intersection
    straight ahead around it this that one please now carefully quickly slowly
    . , ! ? ' - : ;
    """.split()
)


def split_words(text: str) -> list[str]:
    """Lowercase and split into words and punctuation marks."""
    return _SPLIT.findall(text.lower())


class InstructionTokenizer:
    """Word-level tokenizer with a fixed vocabulary (``<pad>`` = 0, ``<unk>`` = 1)."""

    def __init__(self, vocab: list[str]):
        if not isinstance(vocab, list) or len(vocab) < 2 or vocab[0] != PAD or vocab[1] != UNK:
            raise ValueError(f"vocab must be a list starting with {PAD!r}, {UNK!r}; got {str(vocab)[:80]}")
        if not all(isinstance(w, str) and w for w in vocab):
            raise ValueError("vocab entries must be non-empty strings")
        if len(set(vocab)) != len(vocab):
            dup = sorted({w for w in vocab if vocab.count(w) > 1})
            raise ValueError(f"vocab has duplicate entries {dup[:10]}")
        self.vocab = list(vocab)
        self._index = {w: i for i, w in enumerate(self.vocab)}

    pad_id = 0
    unk_id = 1

    def __len__(self) -> int:
        return len(self.vocab)

    @classmethod
    def from_words(cls, words: Iterable[str]) -> "InstructionTokenizer":
        """Vocabulary from words (or phrases, which are split); first occurrence order."""
        vocab = [PAD, UNK]
        seen = set(vocab)
        for item in words:
            for w in split_words(item):
                if w not in seen:
                    seen.add(w)
                    vocab.append(w)
        return cls(vocab)

    @classmethod
    def default(cls) -> "InstructionTokenizer":
        return cls.from_words(DEFAULT_WORDS)

    def encode(self, text: str, max_tokens: int) -> list[int]:
        """Token ids, truncated to ``max_tokens`` and padded with ``<pad>`` to exactly that length."""
        ids = [self._index.get(w, self.unk_id) for w in split_words(text)][:max_tokens]
        return ids + [self.pad_id] * (max_tokens - len(ids))

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[i] if 0 <= i < len(self.vocab) else UNK for i in ids if i != self.pad_id)

    # --- JSON file ---
    def to_json(self) -> dict:
        return {"type": FORMAT, "version": VERSION, "lowercase": True, "vocab": self.vocab}

    def save(self, path: str | os.PathLike) -> None:
        from embodied_stack.models.files import atomic_write_json

        atomic_write_json(path, self.to_json(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InstructionTokenizer":
        from embodied_stack.models.files import read_json

        data = read_json(path, "tokenizer file")
        if not isinstance(data, dict) or data.get("type") != FORMAT or data.get("version") != VERSION:
            raise ValueError(
                f"{path}: not a {FORMAT} tokenizer v{VERSION} file "
                f"(type={data.get('type') if isinstance(data, dict) else None!r})"
            )
        vocab: Any = data.get("vocab")  # untrusted JSON: __init__ checks it (ValueError)
        return cls(vocab)
