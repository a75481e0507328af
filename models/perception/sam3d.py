"""SAM 3D Objects backend (optional, UNVERIFIED: it has never run in this project's CI).

Meta's SAM 3D Objects turns one image and an object mask into the whole object: a mesh
(``glb``, a trimesh mesh with vertex colours), Gaussian splats (``gs``) and its layout
(``rotation`` as a w, x, y, z quaternion, ``translation``, ``scale``; object -> camera). It
needs a CUDA GPU with at least 32 GB, gated weights from Hugging Face and its own pinned
Python environment with CUDA extensions, so it runs **in its own process**: this module
starts ``python sam3d_worker.py <pipeline.yaml>`` (beside this file; NumPy is its only
import besides SAM 3D's) with the interpreter of that environment, which imports the
official API from the repository's ``notebook/inference.py``::

    from inference import Inference
    model = Inference("<checkpoints>/pipeline.yaml", compile=False)
    out = model(image_rgb_uint8, mask_bool, seed=42)

Requests and replies travel as one JSON line each over the worker's stdin/stdout; arrays in
``.npz`` files (no pickle) in a private temporary folder.

Masks: SAM 3D needs one mask per object. A mask prompt is used as given; every other prompt
(none, pixel, point, box) is segmented by the geometric backend first, and each mask found is
sent to SAM 3D.

Frames (the part that could not be checked here): SAM 3D reports its layout in the PyTorch3D
camera convention (x left, y up, z forward) with PyTorch3D's row-vector transforms, so a
mesh vertex ``v`` (object frame) lands at ``(scale * v) @ R(q) + t`` in that camera frame; we
convert to the ROS optical frame (x right, y down, z forward) with diag(-1, -1, 1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embodied_stack.models.perception import shapes
from embodied_stack.models.perception.types import (
    CameraIntrinsics,
    InputRejected,
    ObjectModel,
    Prompt,
    Reconstruction,
    matrix_from_quaternion,
)

#: PyTorch3D camera (x left, y up, z forward) -> ROS optical frame (x right, y down, z fwd).
P3D_TO_OPTICAL = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Sam3dConfig:
    """Where SAM 3D Objects lives. ``repo_dir``: a checkout of facebookresearch/sam-3d-objects
    (default: $SAM3D_REPO); ``pipeline``: its checkpoint config (default
    ``<repo_dir>/checkpoints/hf/pipeline.yaml``); ``python``: the interpreter of its
    environment (default: $SAM3D_PYTHON, else this one)."""

    repo_dir: str = ""
    pipeline: str = ""
    python: str = ""
    seed: int = 42
    timeout_s: float = 300.0


def resolve_config(cfg: Sam3dConfig) -> tuple[Path, Path, str]:
    """(repo_dir, pipeline, python), or RuntimeError naming what is missing."""
    repo = cfg.repo_dir or os.environ.get("SAM3D_REPO", "")
    if not repo:
        raise RuntimeError("sam3d backend: no SAM 3D Objects checkout given (set repo_dir or "
                           "SAM3D_REPO to a clone of facebookresearch/sam-3d-objects)")
    repo_dir = Path(repo).expanduser()
    if not (repo_dir / "notebook" / "inference.py").is_file():
        raise RuntimeError(f"sam3d backend: {repo_dir}/notebook/inference.py not found: "
                           "repo_dir must be a clone of facebookresearch/sam-3d-objects")
    pipeline = Path(cfg.pipeline).expanduser() if cfg.pipeline else (
        repo_dir / "checkpoints" / "hf" / "pipeline.yaml")
    if not pipeline.is_file():
        raise RuntimeError(f"sam3d backend: weights config {pipeline} not found: download the "
                           "gated checkpoints (Hugging Face facebook/sam-3d-objects) into "
                           f"{pipeline.parent}")
    python = cfg.python or os.environ.get("SAM3D_PYTHON", "") or sys.executable
    if shutil.which(python) is None and not Path(python).is_file():
        raise RuntimeError(f"sam3d backend: interpreter {python!r} not found")
    return repo_dir, pipeline, python


def convert_output(vertices, faces, vertex_colors, rotation, translation, scale,
                   mask: np.ndarray, rgb: np.ndarray, depth: np.ndarray | None,
                   camera: CameraIntrinsics) -> ObjectModel:
    """One SAM 3D result (mesh in the object frame; layout quaternion w,x,y,z, translation,
    scale in the PyTorch3D camera frame) -> ObjectModel in the optical frame."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0:
        raise ValueError("SAM 3D returned an empty mesh")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError("SAM 3D mesh has face indices outside its vertices")
    q = np.asarray(rotation, dtype=np.float64).reshape(4)
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64).reshape(-1), (3,)).copy()
    if not (np.all(np.isfinite(q)) and np.linalg.norm(q) > 0 and np.all(np.isfinite(t))
            and np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError("SAM 3D layout has a non-finite or degenerate rotation/translation/scale")
    R = matrix_from_quaternion(q)
    # Row-vector convention: p = (s * v) @ R + t, then into the optical frame.
    verts = ((s * v) @ R + t) @ P3D_TO_OPTICAL.T
    col = np.asarray(vertex_colors, dtype=np.float64).reshape(len(v), -1)[:, :3] \
        if vertex_colors is not None and np.size(vertex_colors) else np.full((len(v), 3), 0.5)
    if col.max() > 1.0:
        col = col / 255.0
    # Box: the mesh's own (object-frame) bounding box, posed like the mesh.
    lo, hi = v.min(axis=0), v.max(axis=0)
    box_rot = P3D_TO_OPTICAL @ R.T  # columns: object axes in the optical frame
    center = ((s * (lo + hi) / 2) @ R + t) @ P3D_TO_OPTICAL.T
    extent = np.maximum(s * (hi - lo), 1e-6)
    if np.linalg.det(box_rot) < 0:  # diag(-1,-1,1) keeps handedness; guard anyway
        box_rot[:, 2] *= -1
    mask = np.asarray(mask, dtype=bool)
    seen = np.zeros(len(verts), dtype=bool)
    points = np.zeros((0, 3))
    point_colors = np.zeros((0, 3))
    if depth is not None:
        K = np.asarray(camera.K, dtype=np.float64)
        vs, us = np.nonzero(mask & (depth > 0))
        z = depth[vs, us].astype(np.float64)
        points = np.column_stack([(us - K[0, 2]) * z / K[0, 0], (vs - K[1, 2]) * z / K[1, 1], z])
        point_colors = rgb[vs, us] / 255.0
        front = verts[:, 2] > 1e-3
        if np.any(front):
            uv = np.round(camera.project(verts[front])).astype(int)
            h, w = mask.shape
            ok = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            idx = np.flatnonzero(front)[ok]
            uv = uv[ok]
            hit = mask[uv[:, 1], uv[:, 0]] & (
                np.abs(depth[uv[:, 1], uv[:, 0]] - verts[idx, 2]) < 0.02)
            seen[idx[hit]] = True
    median = np.median(col, axis=0)
    return ObjectModel(
        vertices=verts, triangles=f, vertex_colors=col, vertex_observed=seen, points=points,
        point_colors=point_colors, box_center=center, box_extent=extent, box_rotation=box_rot,
        shape="mesh", color=shapes.color_name(median), confidence=1.0, mask=mask)


class Sam3dBackend:
    """Runs SAM 3D Objects in a worker process (started on first use, kept for later calls)."""

    name = "sam3d"

    def __init__(self, config: Sam3dConfig | None = None):
        self.config = config or Sam3dConfig()
        self.repo_dir, self.pipeline, self.python = resolve_config(self.config)
        self._proc = None
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="sam3d_")
        from embodied_stack.models.perception.geometric import GeometricBackend

        self._segmenter = GeometricBackend()

    def _worker(self):
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ, PYTHONPATH=str(self.repo_dir / "notebook"))
            self._proc = subprocess.Popen(
                [self.python, str(Path(__file__).with_name("sam3d_worker.py")), str(self.pipeline)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True,
                cwd=str(self.repo_dir), env=env)
            ready = self._proc.stdout.readline()
            if not ready.startswith("{"):
                raise RuntimeError(f"sam3d worker did not start (said {ready.strip()!r})")
            status = json.loads(ready)
            if not status.get("ok"):
                raise RuntimeError(f"sam3d worker failed to load the model: {status.get('error')}")
        return self._proc

    def __call__(self, rgb, depth, camera: CameraIntrinsics, prompt: Prompt | None = None
                 ) -> Reconstruction:
        t0 = time.perf_counter()
        prompt = prompt or Prompt.none()
        from embodied_stack.models.perception.geometric import check_images

        try:
            rgb, depth = check_images(rgb, depth, camera, need_depth=False)
        except InputRejected as exc:
            return Reconstruction([], reason=str(exc))
        if prompt.kind == "mask":
            mask = np.asarray(prompt.value).astype(bool)
            if mask.shape != rgb.shape[:2] or not mask.any():
                return Reconstruction([], reason="prompt mask is empty or not the image's size")
            masks = [mask]
        else:
            if depth is None:
                return Reconstruction([], reason="sam3d needs a mask prompt, or depth to "
                                                 "segment the other prompts")
            found = self._segmenter(rgb, depth, camera, prompt)
            if found.reason:
                return Reconstruction([], reason=found.reason)
            masks = [o.mask for o in found]
        objects: list[ObjectModel] = []
        with self._lock:
            proc = self._worker()
            for i, mask in enumerate(masks):
                req = Path(self._tmp.name) / f"req{i}.npz"
                rep = Path(self._tmp.name) / f"rep{i}.npz"
                np.savez(req, image=rgb, mask=mask)
                proc.stdin.write(json.dumps({"request": str(req), "reply": str(rep),
                                             "seed": int(self.config.seed)}) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                status = json.loads(line) if line.startswith("{") else {"ok": False,
                                                                        "error": line.strip()}
                if not status.get("ok"):
                    return Reconstruction(objects, reason=f"sam3d failed: {status.get('error')}")
                with np.load(rep, allow_pickle=False) as out:
                    objects.append(convert_output(
                        out["vertices"], out["faces"], out["vertex_colors"], out["rotation"],
                        out["translation"], out["scale"], mask, rgb, depth, camera))
        return Reconstruction(objects, timings_ms={"total": 1e3 * (time.perf_counter() - t0)})

    def close(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        self._tmp.cleanup()
