"""Atomic file writes: a temp file in the same folder, fsync, then rename, so a reader (or a
resumed run) never sees a half-written checkpoint, cache entry, config or report; and reading
a JSON file a user hands us, with an error that names the file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def default_cache_dir() -> Path:
    """Where caches go (ONNX exports, engines, measured latency tables): $EMBODIED_STACK_CACHE,
    else $XDG_CACHE_HOME/embodied_stack, else ~/.cache/embodied_stack."""
    env = os.environ.get("EMBODIED_STACK_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embodied_stack"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """JSON (UTF-8, trailing newline) written atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike, what: str = "file"):
    """The JSON value in `path`; ValueError naming the file (and `what` it should be) when it
    is not valid JSON. A missing file raises FileNotFoundError as open() does."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {what} is not valid JSON ({e})") from e


def atomic_write_npz(path: str | os.PathLike, arrays: dict) -> Path:
    """Compressed NumPy archive (no pickled objects) written atomically."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())
