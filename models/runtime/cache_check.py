"""Cached build products verified on load: when an ONNX export or a TensorRT engine is written
to the cache, its SHA-256 and size are recorded beside it, and both are checked before the
file is used. A file that was truncated (a full disk, a killed copy), changed or cannot be
read, or that has no record (written before records were kept), is rebuilt with a warning
naming the file and the reason, instead of failing later with a misleading error (a truncated
opset-23 export used to read as "ONNX Runtime cannot load opset 23" and stay in the cache).

The record is a JSON sidecar, ``<file>.json`` for ONNX exports; the TensorRT engine cache keeps
its key in the same sidecar (tensorrt_runtime.EngineCache)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from embodied_stack.models.files import atomic_write_json

#: the record's fields
DIGEST_FIELDS = ("sha256", "bytes")


def file_digest(path: str | os.PathLike) -> dict:
    """{"sha256": hex digest, "bytes": size} of the file (OSError when it cannot be read)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "bytes": size}


def sidecar_of(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def record_digest(path: str | os.PathLike, sidecar: str | os.PathLike | None = None,
                  extra: dict | None = None) -> Path:
    """Write the file's digest (and `extra` fields) to its sidecar, atomically."""
    out = Path(sidecar) if sidecar is not None else sidecar_of(path)
    return atomic_write_json(out, {**(extra or {}), **file_digest(path)}, indent=1)


def check_digest(path: str | os.PathLike, sidecar: str | os.PathLike | None = None) -> str | None:
    """None when the file matches its recorded digest, else why not (for the warning)."""
    meta_path = Path(sidecar) if sidecar is not None else sidecar_of(path)
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return f"no recorded hash ({meta_path.name} missing)"
    except (OSError, ValueError) as e:
        return f"its record {meta_path.name} is unreadable ({e})"
    if not all(k in meta for k in DIGEST_FIELDS):
        return f"no recorded hash in {meta_path.name}"
    try:
        have = file_digest(path)
    except OSError as e:
        return f"unreadable ({e})"
    if have["bytes"] != meta["bytes"]:
        return f"{have['bytes']} bytes where {meta['bytes']} were written (truncated or changed)"
    if have["sha256"] != meta["sha256"]:
        return f"SHA-256 {have['sha256'][:12]}... differs from the {meta['sha256'][:12]}... recorded"
    return None
