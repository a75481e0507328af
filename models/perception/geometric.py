"""The default perception backend: RGB-D -> whole 3D objects, on the CPU, in milliseconds.

Pipeline, and why each step is what it is:

1. **Input checks.** Wrong sizes, missing depth, zero focal length, a prompt outside the image:
   an empty :class:`Reconstruction` with the reason, never an exception. NaN, inf, negative
   and zero depth are "no return" (REP-118) and simply skipped.
2. **Flying-pixel removal.** Pixels whose depth differs from their 3x3 median by more than
   the depth-jump threshold (mixed foreground/background returns at silhouettes) are dropped.
3. **Back-projection** of every valid pixel with the CameraInfo intrinsics (vectorised; the
   pixel rays are cached per camera).
4. **Support plane** by RANSAC (own NumPy implementation: deterministic, 128 hypotheses
   scored at once on a 3000-point sample), refined by least squares on its inliers. The
   spread of the inliers around the plane (robust, from the median absolute deviation) is
   the sensor noise estimate that sets the object/plane height threshold (3.5 sigma, at least
   6 mm), so noisy depth does not turn the table into speckle.
5. **Segmentation.** Prompt ``none``: pixels above the plane, split at depth jumps (the
   farther pixel of each jump is removed, so an object partly hiding another stays separate
   from it), then 4-connected components in the image (far cheaper than 3D clustering at the
   same result on an organised depth image); a component that floats above the support and
   stays below the top of a larger one within ``attach_gap_m`` is a piece of it (a handle seen
   apart from its mug: :func:`_group_pieces`). ``box``: GrabCut initialised with the box, on a
   crop around it, then intersected with the above-plane pixels. ``pixel``/``point``: the
   object (with its pieces) under (nearest to) the prompt, or GrabCut on a box around it when
   none is there. ``mask``: the given mask, intersected with the above-plane pixels when that
   leaves enough of it; its pieces within ``attach_gap_m`` of the largest are kept with it.
6. **Outlier removal** per object: points further from the object's median than the median
   distance plus 3 robust sigmas are dropped.
7. **Amodal completion**: in the support frame, fit an upright box, an upright cylinder and
   a sphere (:mod:`.shapes`); the best is the object when it explains the points (trimmed
   RMS, points outside it) and the view does not contradict it (the camera sees through no
   more than a sliver of it). Otherwise the voxel completion (:mod:`.completion`) builds the
   object, whatever its shape: free-space carving, symmetry estimated from the observed
   surface, support fill and parts, keeping holes and concavities. An object touching the
   support is assumed to rest on it, so the unseen bottom is filled. The result is the whole
   object: mesh, oriented box and pose (SAM 3D layout convention), its family and its parts.
8. **Colours**: each mesh vertex is projected into the image; where the depth image confirms
   it was seen (within tolerance, inside the object's mask) it takes the pixel's colour and
   counts as observed; otherwise it takes the object's median observed colour and counts as
   completed. The label is the colour name plus the family.

Objects cut by the image border are fitted the same way (their visible footprint is smaller)
and get a lower confidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from embodied_stack.models.perception import completion, shapes
from embodied_stack.models.perception.types import (
    MIN_IMAGE_SIDE,
    CameraIntrinsics,
    InputRejected,
    ObjectModel,
    ObjectPart,
    Prompt,
    Reconstruction,
)


@dataclass(frozen=True)
class GeometricConfig:
    """Tuning of the geometric backend (metres unless named otherwise)."""

    #: Depth beyond this is ignored (no return).
    max_range_m: float = 4.0
    #: RANSAC inlier distance for the support plane.
    plane_inlier_m: float = 0.006
    #: An object pixel is at least this high above the plane (raised to 3.5 sigma of noise).
    min_height_m: float = 0.006
    #: Two neighbouring pixels belong to different surfaces when their depths differ by more
    #: than this plus ``depth_jump_per_m`` times their depth.
    depth_jump_m: float = 0.012
    depth_jump_per_m: float = 0.01
    #: Smallest object, as a share of the image's pixels (and at least 6 pixels).
    min_pixel_fraction: float = 1.2e-4
    #: Objects larger than this (any side) are not objects but background.
    max_object_m: float = 0.6
    #: Fit primitives and complete the unseen parts; False: the observed points' box only.
    complete: bool = True
    #: A primitive explains an object when its trimmed RMS surface distance is at most this;
    #: otherwise the voxel completion (:mod:`.completion`) builds the object.
    primitive_rms_max_m: float = 0.006
    #: Median-filter the depth (5x5) when the plane's noise sigma is above this.
    smooth_above_m: float = 0.0015
    #: RANSAC hypotheses and sample size.
    ransac_hypotheses: int = 128
    ransac_sample: int = 3000
    #: GrabCut iterations for box/point prompts.
    grabcut_iterations: int = 3
    #: A piece that does not rest on the support and stays below another's top (a handle seen
    #: apart from its mug) belongs to the one it comes this close to in 3D; with a mask or box
    #: prompt, every piece of the prompt within this gap of the largest one belongs to it.
    attach_gap_m: float = 0.025
    #: ... where a piece "does not rest" when its lowest point is this far above the support.
    float_above_m: float = 0.01
    #: An object rests on the support when its lowest observed point is below this height,
    #: or below this share of its top's height (flat objects show little of their lower half).
    rests_below_m: float = 0.015
    rests_below_share: float = 0.5
    #: A fitted primitive is dropped for the voxel completion when more than this share of
    #: its volume is seen free (the camera sees through it: a torus's hole, an L's corner)
    #: or lies below the support.
    contradicted_above: float = 0.03
    #: ... or when more than this share of the points lies further than `outside_m` outside
    #: it (the trimmed RMS forgives a bottle's neck above a cylinder, this does not).
    outside_m: float = 0.01
    outside_max: float = 0.02
    #: The voxel completion (:mod:`.completion`) for objects no primitive explains.
    completion: completion.CompletionConfig = completion.CompletionConfig()

    def __post_init__(self):
        ranges = {
            "max_range_m": (0.05, 1000.0), "plane_inlier_m": (1e-4, 0.1), "min_height_m": (0.0, 0.2),
            "depth_jump_m": (0.0, 1.0), "depth_jump_per_m": (0.0, 1.0), "min_pixel_fraction": (0.0, 0.5),
            "max_object_m": (0.01, 10.0), "primitive_rms_max_m": (0.0, 0.1), "smooth_above_m": (0.0, 0.1),
            "ransac_hypotheses": (1, 100000), "ransac_sample": (3, 10**7), "grabcut_iterations": (1, 100),
            "attach_gap_m": (0.0, 0.2), "float_above_m": (0.0, 0.5), "rests_below_m": (0.0, 0.5),
            "rests_below_share": (0.0, 1.0), "contradicted_above": (0.0, 1.0), "outside_m": (0.0, 0.2),
            "outside_max": (0.0, 1.0),
        }
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"GeometricConfig.{name} = {value!r} not in [{lo}, {hi}]")
        if not isinstance(self.completion, completion.CompletionConfig):
            raise ValueError(f"GeometricConfig.completion = {self.completion!r} is not a CompletionConfig")


_RAYS: dict = {}


def _rays(K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (x/z, y/z) of the camera rays, cached per intrinsics."""
    key = (width, height, *np.round(K.ravel(), 6).tolist())
    if key not in _RAYS:
        if len(_RAYS) > 8:
            _RAYS.clear()
        u = (np.arange(width, dtype=np.float32) - np.float32(K[0, 2])) / np.float32(K[0, 0])
        v = (np.arange(height, dtype=np.float32) - np.float32(K[1, 2])) / np.float32(K[1, 1])
        _RAYS[key] = (np.broadcast_to(u[None, :], (height, width)),
                      np.broadcast_to(v[:, None], (height, width)))
    return _RAYS[key]


def check_images(rgb, depth, camera: CameraIntrinsics, need_depth: bool = True):
    """Validate the inputs; returns (rgb uint8 HxWx3, depth float32 HxW or None).
    Raises InputRejected with the reason."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise InputRejected(f"colour image has shape {rgb.shape}, expected (H, W, 3)")
    h, w = rgb.shape[:2]
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        raise InputRejected(f"image {w}x{h} is smaller than {MIN_IMAGE_SIDE} px a side")
    if rgb.dtype != np.uint8:
        raise InputRejected(f"colour image dtype {rgb.dtype}, expected uint8")
    camera.check()
    if (int(camera.width), int(camera.height)) != (w, h):
        raise InputRejected(
            f"camera info is for {camera.width}x{camera.height}, colour image is {w}x{h}")
    if depth is None:
        if need_depth:
            raise InputRejected("no depth image: the geometric backend needs depth")
        return np.ascontiguousarray(rgb[..., :3]), None
    depth = np.asarray(depth)
    if depth.shape != (h, w):
        raise InputRejected(f"depth image is {depth.shape[1] if depth.ndim > 1 else '?'}x"
                            f"{depth.shape[0]}, colour image is {w}x{h}")
    depth = depth.astype(np.float32, copy=True)
    return np.ascontiguousarray(rgb[..., :3]), depth


def _clean_depth(depth: np.ndarray, cfg: GeometricConfig) -> np.ndarray:
    bad = ~np.isfinite(depth) | (depth <= 0) | (depth > cfg.max_range_m)
    depth[bad] = 0.0
    if not np.any(depth > 0):
        raise InputRejected("depth has no valid pixel (all NaN, zero or out of range)")
    median = cv2.medianBlur(depth, 3)
    flying = np.abs(depth - median) > cfg.depth_jump_m + cfg.depth_jump_per_m * depth
    depth[flying] = 0.0
    return depth


def fit_plane(points: np.ndarray, cfg: GeometricConfig, rng: np.random.Generator):
    """RANSAC plane on (N, 3) points -> (normal towards the camera, d, noise sigma, inlier
    share) with n.p + d = 0 on the plane, or None when no plane holds a fifth of them."""
    n_pts = len(points)
    if n_pts < 30:
        return None
    sample = points[rng.integers(0, n_pts, size=min(n_pts, cfg.ransac_sample))]
    idx = rng.integers(0, len(sample), size=(cfg.ransac_hypotheses, 3))
    a, b, c = sample[idx[:, 0]], sample[idx[:, 1]], sample[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norm = np.linalg.norm(normals, axis=1)
    ok = norm > 1e-9
    if not np.any(ok):
        return None
    normals, a = normals[ok] / norm[ok, None], a[ok]
    ds = -(normals * a).sum(axis=1)
    scores = sample.astype(np.float32) @ normals.T.astype(np.float32) + ds.astype(np.float32)
    counts = (np.abs(scores) < cfg.plane_inlier_m).sum(axis=0)
    best = int(np.argmax(counts))
    if counts[best] < 0.2 * len(sample):
        return None
    normal, d = normals[best], ds[best]
    # Least-squares refinement on the inliers of the whole cloud (twice: the first pass can
    # still carry the hypothesis's tilt).
    if n_pts > 4 * cfg.ransac_sample:  # refinement on a larger sample: plenty for 3 numbers
        points = points[rng.integers(0, n_pts, size=4 * cfg.ransac_sample)]
    for _ in range(2):
        inl = points[np.abs(points @ normal + d) < 2 * cfg.plane_inlier_m]
        if len(inl) < 3:
            return None
        centroid = inl.mean(axis=0)
        _, _, vt = np.linalg.svd(inl - centroid, full_matrices=False)
        normal = vt[2]
        d = -float(normal @ centroid)
    if d < 0:  # the camera (origin) must be on the positive side: normal points "up"
        normal, d = -normal, -d
    resid = inl @ normal + d
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    return normal, d, sigma, float(counts[best]) / len(sample)


def support_frame(normal: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, origin): columns of R are the support frame's axes in the camera frame (x: the
    viewing direction along the plane, z: the plane normal); origin on the plane below the
    camera. p_support = (p_camera - origin) @ R."""
    z = normal / np.linalg.norm(normal)
    view = np.array([0.0, 0.0, 1.0])
    x = view - (view @ z) * z
    if np.linalg.norm(x) < 1e-6:  # looking straight down: any horizontal axis
        x = np.array([1.0, 0.0, 0.0]) - z[0] * z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.column_stack([x, y, z]), -d * z


def _level_frame() -> tuple[np.ndarray, np.ndarray]:
    """Without a support plane: a frame with z up for a level camera (optical -y)."""
    R = np.column_stack([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    return R, np.zeros(3)


class GeometricBackend:
    """The default backend; see the module docstring. Thread-compatible: one call at a time
    per instance (the node runs it on its own worker)."""

    name = "geometric"

    def __init__(self, config: GeometricConfig | None = None):
        self.config = config or GeometricConfig()

    def __call__(self, rgb, depth, camera: CameraIntrinsics, prompt: Prompt | None = None
                 ) -> Reconstruction:
        t0 = time.perf_counter()
        try:
            objects, timings, reason = self._run(rgb, depth, camera, prompt or Prompt.none())
        except InputRejected as exc:
            objects, timings, reason = [], {}, str(exc)
        timings["total"] = 1e3 * (time.perf_counter() - t0)
        return Reconstruction(objects, reason=reason, timings_ms=timings)

    # --- the pipeline ------------------------------------------------------------------
    def _run(self, rgb, depth, camera, prompt):
        cfg = self.config
        timings = {}
        t = time.perf_counter()
        rgb, depth = check_images(rgb, depth, camera)
        h, w = depth.shape
        K = np.asarray(camera.K, dtype=np.float64)
        _check_prompt(prompt, camera, w, h)
        depth = _clean_depth(depth, cfg)
        rx, ry = _rays(K, w, h)
        xyz = np.stack([rx * depth, ry * depth, depth], axis=-1)  # (H, W, 3) float32
        valid = depth > 0
        timings["backproject"] = 1e3 * (time.perf_counter() - t)

        t = time.perf_counter()
        rng = np.random.default_rng(0)
        plane = fit_plane(xyz[valid].astype(np.float64), cfg, rng)
        above = None
        if plane is not None and plane[2] > cfg.smooth_above_m:
            # Noisy depth: a 5x5 median (edge-preserving) before anything is fitted, then
            # the plane again on the smoothed points.
            smooth = cv2.medianBlur(depth, 5)
            smooth[(smooth <= 0) | (depth <= 0)] = 0.0
            depth = np.where(smooth > 0, smooth, depth).astype(np.float32)
            xyz = np.stack([rx * depth, ry * depth, depth], axis=-1)
            valid = depth > 0
            plane = fit_plane(xyz[valid].astype(np.float64), cfg, rng) or plane
        sigma = 0.0
        if plane is not None:
            normal, d, sigma, _ = plane
            height = (xyz @ normal.astype(np.float32)) + np.float32(d)
            thresh = max(cfg.min_height_m, 3.5 * sigma)
            above = valid & (height > thresh)
            R, origin = support_frame(normal, d)
        else:
            R, origin = _level_frame()
        view = completion.View(depth, K, R, origin, supported=plane is not None, noise_m=sigma,
                               margin_m=cfg.completion.free_margin_m)
        timings["plane"] = 1e3 * (time.perf_counter() - t)

        t = time.perf_counter()
        min_px = max(6, int(cfg.min_pixel_fraction * h * w))
        separated = _split_at_jumps(depth, cfg)
        height_img = None if plane is None else height
        masks = self._segment(prompt, rgb, depth, xyz, valid, above, separated, K, min_px, height_img,
                              view)
        timings["segment"] = 1e3 * (time.perf_counter() - t)
        if isinstance(masks, str):
            return [], timings, masks

        t = time.perf_counter()
        objects = []
        for pieces in masks:
            obj = self._object(pieces, rgb, depth, xyz, camera, R, origin, view)
            if obj is not None:
                objects.append(obj)
        timings["fit"] = 1e3 * (time.perf_counter() - t)
        return objects, timings, ""

    def _segment(self, prompt, rgb, depth, xyz, valid, above, separated, K, min_px, height, view):
        """Objects for the prompt, each a list of piece masks (the body first, then pieces
        attached to it: see :func:`_group_pieces`), or a string: why there is none."""
        h, w = depth.shape
        gap, floats = self.config.attach_gap_m, self.config.float_above_m
        if prompt.kind == "none":
            if above is None:
                return ("no support surface found in the depth image: without one, objects "
                        "are only separated with a prompt (pixel, point, box or mask)")
            return _group_pieces(_components(above & separated, min_px), xyz, height, gap, floats, view)
        if prompt.kind == "mask":
            mask = np.asarray(prompt.value).astype(bool) & valid
            if not mask.any():
                return "no valid depth inside the prompt mask"
            return _prompted_pieces(mask, above, separated, min_px, xyz, gap) or [[mask]]
        if prompt.kind == "box":
            u0, v0, u1, v1 = _clip_box(prompt.value, w, h)
            grab = _grabcut(rgb, (u0, v0, u1, v1), self.config.grabcut_iterations) & valid
            found = _prompted_pieces(grab, above, separated, min_px, xyz, gap)
            return found or "GrabCut found no object with depth inside the prompt box"
        # pixel or point
        if prompt.kind == "point":
            p = np.asarray(prompt.value, dtype=np.float64)
            u, v = K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]
        else:
            u, v = prompt.value
            p = None
        if above is not None:
            objects = _group_pieces(_components(above & separated, min_px), xyz, height, gap, floats, view)
            chosen = _pick_object(objects, u, v, p, xyz, radius_px=0.04 * np.hypot(h, w))
            if chosen is not None:
                return [chosen]
        side = max(8.0, 0.2 * min(h, w))
        box = _clip_box((u - side / 2, v - side / 2, u + side / 2, v + side / 2), w, h)
        grab = _grabcut(rgb, box, self.config.grabcut_iterations) & valid
        found = _prompted_pieces(grab, above, separated, min_px, xyz, gap)
        return found or "no object found at the prompt"

    def _object(self, pieces, rgb, depth, xyz, camera, R, origin, view) -> ObjectModel | None:
        cfg = self.config
        mask = np.logical_or.reduce(pieces)
        piece_of = np.zeros(mask.shape, dtype=np.int64)
        for n, piece in enumerate(pieces[1:], start=1):
            piece_of[piece] = n
        pts = xyz[mask].astype(np.float64)
        cols = rgb[mask].astype(np.float64) / 255.0
        labels = piece_of[mask]
        if len(pts) < 6:
            return None
        # Outliers: far from the object's median point.
        dist = np.linalg.norm(pts - np.median(pts, axis=0), axis=1)
        med = np.median(dist)
        keep = dist <= med + 3 * 1.4826 * np.median(np.abs(dist - med)) + 0.003
        pts, cols, labels = pts[keep], cols[keep], labels[keep]
        if len(pts) < 6 or np.ptp(pts, axis=0).max() > cfg.max_object_m:
            return None
        q = (pts - origin) @ R
        low, top = shapes.robust_range(q[:, 2])
        # The lowest point seen is in the lower half of what is seen (or near the support):
        # the object rests on the support (a flat object seen from above shows little of
        # its lower half, a floating fingertip nothing of it).
        resting = bool(view.supported and low < max(cfg.rests_below_m, cfg.rests_below_share * top))
        parts: list[ObjectPart] = []
        if cfg.complete:
            fit = shapes.fit_best(q, resting)
            if fit is None or fit.rms > cfg.primitive_rms_max_m or labels.any() or \
                    shapes.outside_share(fit, q, cfg.outside_m) > cfg.outside_max or \
                    shapes.contradicted(fit, view, cfg.contradicted_above):
                normals = _pixel_normals(xyz, mask)[keep] @ R
                solid = completion.complete(q, view, resting, cfg.completion, labels, normals)
                verts_s, tris = solid.mesh()
                fit = shapes.box_of_solid(solid, verts_s, float("nan") if fit is None else fit.rms)
                parts = [_part_of(name, box, R, origin) for name, box in shapes.part_boxes(solid)]
            else:
                verts_s, tris = shapes.shape_mesh(fit)
        else:
            fit = shapes.fit_visible(q)
            verts_s, tris = shapes.shape_mesh(fit)
        verts = verts_s @ R.T + origin
        yaw = shapes.yaw_matrix(fit.yaw)
        box_rot = R @ yaw
        center = R @ fit.center + origin
        extent = np.maximum(fit.extent, 1e-3)
        # Vertex colours from the image where the depth image confirms the vertex was seen.
        mean_col = np.median(cols, axis=0)
        vcol = np.tile(mean_col, (len(verts), 1))
        seen = np.zeros(len(verts), dtype=bool)
        front = verts[:, 2] > 1e-3
        if np.any(front):
            uv = camera.project(verts[front])
            ui, vi = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
            h, w = depth.shape
            inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
            idx = np.flatnonzero(front)[inside]
            ui, vi = ui[inside], vi[inside]
            tol = max(0.01, 3 * (fit.rms if np.isfinite(fit.rms) else 0.003))
            ok = mask[vi, ui] & (np.abs(depth[vi, ui] - verts[idx, 2]) < tol)
            seen[idx[ok]] = True
            vcol[idx[ok]] = rgb[vi[ok], ui[ok]] / 255.0
        h, w = mask.shape
        rows, cols_any = np.any(mask, axis=1), np.any(mask, axis=0)
        border = bool(rows[0] or rows[-1] or cols_any[0] or cols_any[-1])
        rms = fit.rms if np.isfinite(fit.rms) else cfg.primitive_rms_max_m
        confidence = float(np.exp(-rms / 0.005) * min(1.0, len(pts) / 50.0)
                           * (0.6 if border else 1.0))
        return ObjectModel(
            vertices=verts, triangles=np.asarray(tris, dtype=np.int64), vertex_colors=vcol,
            vertex_observed=seen, points=pts, point_colors=cols, box_center=center,
            box_extent=extent, box_rotation=box_rot, shape=fit.shape,
            color=shapes.color_name(mean_col), confidence=confidence, mask=mask,
            fit_rms_m=float(fit.rms), touches_border=border, parts=parts)


# --- helpers ---------------------------------------------------------------------------

def _check_prompt(prompt: Prompt, camera: CameraIntrinsics, w: int, h: int) -> None:
    kind = prompt.kind
    if kind == "none":
        return
    if kind == "mask":
        mask = np.asarray(prompt.value)
        if mask.shape != (h, w):
            raise InputRejected(f"prompt mask is {mask.shape}, image is {(h, w)}")
        if not mask.astype(bool).any():
            raise InputRejected("prompt mask is empty")
        return
    value = np.asarray(prompt.value, dtype=np.float64).ravel()
    if not np.all(np.isfinite(value)):
        raise InputRejected(f"prompt {kind} has NaN/inf values")
    if kind == "pixel":
        if value.size != 2:
            raise InputRejected(f"pixel prompt needs (u, v), got {value.size} values")
        u, v = value
        if not (-0.5 <= u < w - 0.5 and -0.5 <= v < h - 0.5):
            raise InputRejected(f"prompt pixel ({u:.1f}, {v:.1f}) is outside the {w}x{h} image")
    elif kind == "point":
        if value.size != 3:
            raise InputRejected(f"point prompt needs (x, y, z), got {value.size} values")
        if value[2] <= 0:
            raise InputRejected(f"prompt point z={value[2]:.3f} m is not in front of the camera")
        u, v = camera.project(value[None])[0]
        if not (-0.5 <= u < w - 0.5 and -0.5 <= v < h - 0.5):
            raise InputRejected(
                f"prompt point projects to ({u:.1f}, {v:.1f}), outside the {w}x{h} image")
    elif kind == "box":
        if value.size != 4:
            raise InputRejected(f"box prompt needs (u_min, v_min, u_max, v_max), got {value.size}")
        u0, v0, u1, v1 = value
        if u1 <= u0 or v1 <= v0:
            raise InputRejected(f"prompt box ({u0:.1f}, {v0:.1f}, {u1:.1f}, {v1:.1f}) is empty")
        if u1 < 0 or v1 < 0 or u0 > w - 1 or v0 > h - 1:
            raise InputRejected(f"prompt box is outside the {w}x{h} image")
    else:
        raise InputRejected(f"prompt kind {kind!r} not in none, pixel, point, box, mask")


def _clip_box(box, w, h):
    u0, v0, u1, v1 = box
    u0, v0 = int(np.clip(np.floor(u0), 0, w - 1)), int(np.clip(np.floor(v0), 0, h - 1))
    u1, v1 = int(np.clip(np.ceil(u1), u0 + 1, w)), int(np.clip(np.ceil(v1), v0 + 1, h))
    return u0, v0, u1, v1


def _split_at_jumps(depth: np.ndarray, cfg: GeometricConfig) -> np.ndarray:
    """False at the farther pixel of every depth jump between 4-neighbours."""
    keep = np.ones(depth.shape, dtype=bool)
    thr = cfg.depth_jump_m + cfg.depth_jump_per_m * depth
    for axis in (0, 1):
        a = depth[:-1, :] if axis == 0 else depth[:, :-1]
        b = depth[1:, :] if axis == 0 else depth[:, 1:]
        t = thr[:-1, :] if axis == 0 else thr[:, :-1]
        jump = (np.abs(a - b) > t) & (a > 0) & (b > 0)
        far_a, far_b = jump & (a > b), jump & (b > a)
        if axis == 0:
            keep[:-1, :] &= ~far_a
            keep[1:, :] &= ~far_b
        else:
            keep[:, :-1] &= ~far_a
            keep[:, 1:] &= ~far_b
    return keep


def _components(mask: np.ndarray, min_px: int) -> list[np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    out = []
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= min_px:
            out.append(labels == i)
    return out


def _prompted_pieces(mask, above, separated, min_px, xyz, gap_m) -> list[list[np.ndarray]] | None:
    """The pieces of a prompt's `mask` (restricted to above-plane pixels when that leaves an
    object, split at depth jumps): the largest, and every piece within `gap_m` of those kept
    (the prompt says they are one object); None when nothing big enough remains."""
    if above is not None and (mask & above).sum() >= min_px:
        mask = mask & above
    comps = sorted(_components(mask & separated, min_px), key=lambda m: -int(m.sum()))
    if not comps:
        return None
    kept, rest = [comps[0]], comps[1:]
    samples = [_points_of(xyz, c) for c in comps]
    kept_samples, rest_samples = [samples[0]], samples[1:]
    grew = True
    while grew and rest:
        grew = False
        for i in range(len(rest)):
            if min(_gap(rest_samples[i], k) for k in kept_samples) <= gap_m:
                kept.append(rest.pop(i))
                kept_samples.append(rest_samples.pop(i))
                grew = True
                break
    return [kept]


def _group_pieces(comps, xyz, height, gap_m, float_above_m, view) -> list[list[np.ndarray]]:
    """Objects from image components. A component whose lowest point is more than
    `float_above_m` above the support, with the space under it seen free (not merely hidden
    by something in front: then its bottom is only out of sight), cannot stand alone: when
    it stays below the top of a resting component at least twice its size, within `gap_m` of
    it in 3D, it is a piece of that one, held at its side (a mug's handle seen apart from
    the body); above the top, it could rest on it (stacked) or float (a gripper), and stays
    an object of its own. Each object: [its main component, then the pieces attached to it]."""
    if height is None or len(comps) < 2:
        return [[c] for c in comps]
    sizes = [int(c.sum()) for c in comps]
    low, top = (np.array(v) for v in zip(*[(float(a[0]), float(b[0])) for a, b in
                                           (shapes.robust_range(height[c][None, :]) for c in comps)]))
    points = [_points_of(xyz, c) for c in comps]
    floating = [bool(lo > float_above_m and _hangs_free(pts, view)) for lo, pts in zip(low, points)]
    groups = {i: [comps[i]] for i in range(len(comps)) if not floating[i]}
    for i, c in enumerate(comps):
        if not floating[i]:
            continue
        gaps = {j: _gap(points[i], points[j]) for j in groups
                if sizes[j] >= 2 * sizes[i] and top[i] <= top[j] + float_above_m}
        j = min(gaps, key=lambda k: gaps[k]) if gaps else None
        if j is not None and gaps[j] <= gap_m:
            groups[j].append(c)
        else:
            groups[i] = [c]
    return [groups[i] for i in sorted(groups)]


def _part_of(name: str, box: shapes.ShapeFit, R: np.ndarray, origin: np.ndarray) -> ObjectPart:
    """A part's box from the support frame to the camera frame."""
    return ObjectPart(name=name, box_center=R @ box.center + origin, box_extent=box.extent,
                      box_rotation=R @ shapes.yaw_matrix(box.yaw))


def _pixel_normals(xyz: np.ndarray, mask: np.ndarray, step: int = 2) -> np.ndarray:
    """Unit surface normals (camera frame, towards the camera) at the mask's pixels, in the
    order of ``xyz[mask]``, from the depth image's neighbours `step` pixels away; zero where
    a neighbour is outside the mask."""
    h, w = mask.shape
    vs, us = np.nonzero(mask)
    u0, u1 = np.clip(us - step, 0, w - 1), np.clip(us + step, 0, w - 1)
    v0, v1 = np.clip(vs - step, 0, h - 1), np.clip(vs + step, 0, h - 1)
    n = np.cross(xyz[vs, u1] - xyz[vs, u0], xyz[v1, us] - xyz[v0, us]).astype(np.float64)
    ok = mask[vs, u0] & mask[vs, u1] & mask[v0, us] & mask[v1, us]
    norm = np.linalg.norm(n, axis=1)
    ok &= norm > 0
    n[ok] /= norm[ok, None]
    n[~ok] = 0.0
    flip = (n * xyz[vs, us]).sum(axis=1) > 0
    n[flip] *= -1
    return n


def _hangs_free(points: np.ndarray, view: completion.View) -> bool:
    """Whether the camera sees free space straight under a piece's lowest points (a handle
    hangs there; an object whose bottom is hidden behind another shows nothing under it)."""
    q = view.to_support(points)
    low = q[q[:, 2] <= np.quantile(q[:, 2], 0.1)]
    probes = np.vstack([low * [1.0, 1.0, f] for f in (0.25, 0.5, 0.75)])
    return float(view.free(probes).mean()) >= 0.5


def _points_of(xyz, mask) -> np.ndarray:
    return xyz[mask].astype(np.float64)


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest distance between two point sets (a k-d tree: exact, not from samples)."""
    import open3d as o3d

    cloud_a = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(a))
    cloud_b = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(b))
    return float(np.asarray(cloud_a.compute_point_cloud_distance(cloud_b)).min())


def _pick_object(objects, u, v, p, xyz, radius_px):
    """The object (its pieces) a prompt names: for a point prompt the nearest in 3D (within
    5 cm); for a pixel the one under it, else the one whose outline's convex hull holds it
    (the smallest: a pixel in a torus's hole, inside a banana's arc or a handle's loop names
    that object), else the nearest in the image within `radius_px`."""
    if not objects:
        return None
    masks = [np.logical_or.reduce(pieces) for pieces in objects]
    if p is not None:
        dists = [float(np.min(np.linalg.norm(xyz[m] - p, axis=1))) for m in masks]
        best = int(np.argmin(dists))
        if dists[best] <= 0.05:
            return objects[best]
    ui, vi = int(round(u)), int(round(v))
    for pieces, m in zip(objects, masks):
        if m[vi, ui]:
            return pieces
    around = []
    for k, m in enumerate(masks):
        hull = cv2.convexHull(np.argwhere(m)[:, ::-1].astype(np.float32))
        if cv2.pointPolygonTest(hull, (float(u), float(v)), False) >= 0:
            around.append((cv2.contourArea(hull), k))
    if around:
        return objects[min(around)[1]]
    best, best_d = None, radius_px
    for pieces, m in zip(objects, masks):
        vs, us = np.nonzero(m)
        d = float(np.min(np.hypot(us - u, vs - v)))
        if d < best_d:
            best, best_d = pieces, d
    return best


def _grabcut(rgb: np.ndarray, box, iterations: int) -> np.ndarray:
    """GrabCut from a box, on a crop with a margin around it; foreground mask (HxW bool)."""
    h, w = rgb.shape[:2]
    u0, v0, u1, v1 = box
    mu, mv = max(4, (u1 - u0) // 4), max(4, (v1 - v0) // 4)
    cu0, cv0, cu1, cv1 = max(0, u0 - mu), max(0, v0 - mv), min(w, u1 + mu), min(h, v1 + mv)
    crop = np.ascontiguousarray(rgb[cv0:cv1, cu0:cu1, ::-1])
    rect = (u0 - cu0, v0 - cv0, max(1, u1 - u0), max(1, v1 - v0))
    gc_mask = np.zeros(crop.shape[:2], np.uint8)
    out = np.zeros((h, w), dtype=bool)
    try:
        cv2.grabCut(crop, gc_mask, rect, np.zeros((1, 65)), np.zeros((1, 65)), iterations,
                    cv2.GC_INIT_WITH_RECT)
        fg = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
    except cv2.error:  # box covers the whole crop (no background to learn): take the box
        fg = np.zeros(crop.shape[:2], dtype=bool)
        fg[rect[1]:rect[1] + rect[3], rect[0]:rect[0] + rect[2]] = True
    out[cv0:cv1, cu0:cu1] = fg
    return out
