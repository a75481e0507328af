"""Non-convex amodal completion: the whole solid of an object of any shape from one depth view.

Where no primitive explains an object (:mod:`.shapes`), its solid is built on a voxel grid in
the support frame (z up from the support, x the viewing direction along it) by three rules
that hold for any rigid object on a table, so a shape never seen before is completed by the
same rules as the families the bench measures:

1. **What the camera sees through is empty** (:class:`View`). A point is *seen free* when the
   depth image sees past it at every pixel it may fall on (a min-filtered depth; no return
   counts as unknown, never as free). Nothing is below the support either. Every fill is
   carved by this, so a torus's hole, a mug's cavity, the space beside a bottle's neck or an
   L's inner corner stay empty wherever the camera sees into them.
2. **Symmetry, estimated from the observed surface** (:func:`find_symmetries`). Candidates: a
   vertical axis of revolution (from the surface normals, which meet the axis on a solid of
   revolution, or from circles fitted to horizontal slices with one shared centre), vertical
   mirror planes along the object's principal directions (three estimates, each slid to the
   middle of the offsets the view allows: :func:`_place_mirror`), and, for a resting object,
   the horizontal mid-plane. A candidate holds when the images of the observed points stay
   out of seen-free space (at most ``violations_max`` of them land there) and, for mirrors,
   enough of them land on observed surface (``confirm_min``: a plane the view cannot check
   would otherwise always pass). A symmetry works both ways: the images of the observed
   surface are surface (they complete the unseen back), and a voxel whose image is seen
   free is empty (they carve what one view cannot). Under revolution the whole solid lives
   in the (radius, height) half-plane, so a profile grid replaces the 3D one there.
3. **Support and parts.** A resting object's solid reaches down to the support under its
   surface (each column is filled from the support to the highest surface point), and the
   carving of rules 1 and 2 removes what overhangs (a ball's or a torus's underside). Points
   that break the body's revolution (a handle: the largest cluster of points whose rotated
   images land in seen-free space, standing out of the body), and pieces segmentation
   attached (a handle seen apart), form *parts*: they are completed on their own (mirrored
   through the plane through the body's axis, no support fill, so a handle's gap stays open)
   and reported with their own boxes.

The voxel size follows the object (``cells`` across its largest side, clipped to
``[voxel_min_m, voxel_max_m]``). The mesh is the surface-net of the voxels
(:func:`.volume.surface_nets`) moved in by half a voxel (:meth:`VoxelSolid.mesh`); the box
is taken from the mesh, so mesh and box agree. :func:`name_family` names the family from the
structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from embodied_stack.models.perception import shapes, volume

#: Rotations a revolution candidate is tested with (its images of the observed points).
_TEST_ANGLES = 12
#: Rotations a revolution profile is carved with, per (radius, height) cell.
_CARVE_ANGLES = 36
#: Points a symmetry is tested on (an evenly spread subsample), and a mirror plane placed with.
_TEST_POINTS = 600
_PLACE_POINTS = 150
#: How far (m) a mirror plane is slid either way from its estimate.
_MIRROR_SEARCH_M = 0.03


@dataclass(frozen=True)
class CompletionConfig:
    """Knobs of the voxel completion (metres unless named otherwise). Chosen on Tabletop
    shape scenes of the tuning seed block (see docs/perception.md), never on the bench's."""

    #: Voxels across the object's largest side, and the voxel size's bounds.
    cells: int = 36
    voxel_min_m: float = 0.003
    voxel_max_m: float = 0.006
    #: A point is seen free when the camera sees this far past it (plus three noise sigmas;
    #: the symmetry tests add half a voxel for the rounding of their images).
    free_margin_m: float = 0.0015
    #: A symmetry holds when at most this share of the observed points' images is seen free.
    violations_max: float = 0.01
    #: A mirror plane holds only when at least this share of the images lands on observed
    #: surface (within a voxel).
    confirm_min: float = 0.2
    #: Revolution with parts: points whose rotated images are seen free at more than this
    #: share of the test angles break the body's symmetry (a handle).
    part_break_share: float = 0.25
    #: ... and together they are at most this share of the object's points; a part is
    #: their largest cluster, of at least this many points (and 2% of the object's).
    part_max_share: float = 0.35
    part_min_points: int = 30
    #: Naming only: the upright quadric names an ellipsoid when 90% of the points are within
    #: this (plus three noise sigmas) of it.
    quadric_fit_m: float = 0.0015

    def __post_init__(self):
        if not 8 <= self.cells <= 128:
            raise ValueError(f"CompletionConfig.cells = {self.cells!r} not in [8, 128]")
        if not 0.0005 <= self.voxel_min_m <= self.voxel_max_m <= 0.05:
            raise ValueError(f"CompletionConfig voxel bounds [{self.voxel_min_m!r}, {self.voxel_max_m!r}] m "
                             "not ordered within [0.0005, 0.05]")
        if not 0.0 <= self.free_margin_m <= 0.05:
            raise ValueError(f"CompletionConfig.free_margin_m = {self.free_margin_m!r} not in [0, 0.05]")
        if not 1 <= self.part_min_points <= 100000:
            raise ValueError(f"CompletionConfig.part_min_points = {self.part_min_points!r} not in [1, 100000]")
        if not 0.0 <= self.quadric_fit_m <= 0.05:
            raise ValueError(f"CompletionConfig.quadric_fit_m = {self.quadric_fit_m!r} not in [0, 0.05]")
        for name in ("violations_max", "confirm_min", "part_break_share", "part_max_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CompletionConfig.{name} = {value!r} not in [0, 1]")


class View:
    """What one depth frame says about space, asked in the support frame: which points the
    camera sees past (:meth:`free`). ``R``, ``origin``: the support frame in the camera frame
    (p_camera = R @ q + origin); ``supported``: whether there is a support (nothing below
    it); ``noise_m``: the depth noise sigma."""

    def __init__(self, depth: np.ndarray, K: np.ndarray, R: np.ndarray, origin: np.ndarray,
                 supported: bool, noise_m: float, margin_m: float):
        self.K = np.asarray(K, dtype=np.float64)
        self.R, self.origin = R, origin
        self.supported = supported
        self.noise_m = noise_m
        self.margin_m = margin_m + 3.0 * noise_m
        h, w = depth.shape
        self.width, self.height = w, h
        # A voxel's centre may fall a pixel off where its corner does: the camera must see
        # past it on the whole 3x3 neighbourhood (no return, 0, wins the minimum: unknown).
        self.depth_min = cv2.erode(depth, np.ones((3, 3), np.uint8))

    def to_support(self, p: np.ndarray) -> np.ndarray:
        """(N, 3) camera-frame points in the support frame."""
        return (np.asarray(p, dtype=np.float64) - self.origin) @ self.R

    def free(self, q: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
        """Whether the camera sees past each (N, 3) support-frame point (or it is below the
        support), by more than the margin plus `margin_m`."""
        p = q @ self.R.T + self.origin
        z = p[:, 2]
        ok = z > 1e-3
        zs = np.where(ok, z, 1.0)
        u = np.rint(self.K[0, 0] * p[:, 0] / zs + self.K[0, 2]).astype(np.int64)
        v = np.rint(self.K[1, 1] * p[:, 1] / zs + self.K[1, 2]).astype(np.int64)
        ok &= (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        d = np.zeros(len(q), dtype=np.float32)
        d[ok] = self.depth_min[v[ok], u[ok]]
        free = ok & (d > 0) & (z < d - self.margin_m - margin_m)
        if self.supported:
            free |= q[:, 2] < -(self.margin_m + margin_m)
        return free


# --- symmetries ------------------------------------------------------------------------------

@dataclass
class Symmetry:
    """``revolution`` about the vertical axis through ``point`` (x, y); ``mirror`` through the
    vertical plane with unit ``normal`` (x, y) through ``point``; ``horizontal``: the plane
    z = ``height``. ``violations``: share of the observed points' images seen free;
    ``confirmed``: share landing on observed surface."""

    kind: str
    point: np.ndarray = field(default_factory=lambda: np.zeros(2))
    normal: np.ndarray = field(default_factory=lambda: np.zeros(2))
    height: float = 0.0
    violations: float = 0.0
    confirmed: float = 0.0

    def image(self, q: np.ndarray, angle: float = 0.0) -> np.ndarray:
        """The image of (N, 3) points (for a revolution: rotated by `angle`)."""
        out = np.array(q, dtype=np.float64, copy=True)
        if self.kind == "revolution":
            c, s = np.cos(angle), np.sin(angle)
            x, y = q[:, 0] - self.point[0], q[:, 1] - self.point[1]
            out[:, 0] = self.point[0] + c * x - s * y
            out[:, 1] = self.point[1] + s * x + c * y
        elif self.kind == "mirror":
            d = (q[:, :2] - self.point) @ self.normal
            out[:, :2] -= 2.0 * d[:, None] * self.normal
        else:
            out[:, 2] = 2.0 * self.height - q[:, 2]
        return out


def fit_axis(q: np.ndarray, bin_m: float) -> np.ndarray:
    """Centre (x, y) of a vertical axis of revolution: circles fitted to the points of each
    height slice with one shared centre (each slice its own radius), by least squares with
    the worst tenth of the residuals dropped twice."""
    z_bin = np.floor((q[:, 2] - q[:, 2].min()) / bin_m).astype(np.int64)
    xy = q[:, :2]
    w = (xy * xy).sum(axis=1)
    keep = np.ones(len(q), dtype=bool)
    center = np.median(xy, axis=0)
    for _ in range(3):
        zb = z_bin[keep]
        counts = np.bincount(zb)

        # x^2 + y^2 = 2 a x + 2 b y + k_slice: remove each slice's mean, solve for (a, b).
        def centred(values, zb=zb, counts=counts):
            means = np.bincount(zb, weights=values) / np.maximum(counts, 1)
            return values - means[zb]
        A = np.column_stack([2 * centred(xy[keep, 0]), 2 * centred(xy[keep, 1])])
        rhs = centred(w[keep])
        if len(A) < 8 or np.linalg.matrix_rank(A) < 2:
            break
        center, *_ = np.linalg.lstsq(A, rhs, rcond=None)
        rho = np.linalg.norm(xy - center, axis=1)
        med = np.bincount(z_bin, weights=rho) / np.maximum(np.bincount(z_bin), 1)
        resid = np.abs(rho - med[z_bin])
        keep = resid <= np.quantile(resid, 0.9)
    return np.asarray(center, dtype=np.float64)


def fit_axis_from_normals(q: np.ndarray, normals: np.ndarray) -> np.ndarray | None:
    """Centre (x, y) of a vertical axis of revolution from surface normals: on a solid of
    revolution every normal lies in a plane through the axis, so the axis meets each
    normal's horizontal line. Least squares over the points whose normal is at least 30
    degrees from vertical (several radii at one height, as on a torus, do not matter), the
    worst fifth dropped twice. None without enough such points."""
    n_xy = normals[:, :2]
    length = np.linalg.norm(n_xy, axis=1)
    use = length > 0.5
    if use.sum() < 20:
        return None
    d = n_xy[use] / length[use, None]
    p = q[use, :2]
    # Distance from c to the line through p along d: d_x (c_y - p_y) - d_y (c_x - p_x) = 0.
    A = np.column_stack([-d[:, 1], d[:, 0]])
    rhs = d[:, 0] * p[:, 1] - d[:, 1] * p[:, 0]
    keep = np.ones(len(A), dtype=bool)
    center = None
    for _ in range(3):
        if keep.sum() < 10 or np.linalg.matrix_rank(A[keep]) < 2:
            return center
        center, *_ = np.linalg.lstsq(A[keep], rhs[keep], rcond=None)
        resid = np.abs(A @ center - rhs)
        keep = resid <= np.quantile(resid, 0.8)
    return np.asarray(center, dtype=np.float64)


class _Surface:
    """Observed points hashed on a voxel lattice: is a point within a voxel of the surface?"""

    def __init__(self, q: np.ndarray, voxel: float):
        self.voxel = voxel
        self.lo = q.min(axis=0) - 2 * voxel
        idx = np.floor((q - self.lo) / voxel).astype(np.int64)
        self.shape = tuple(idx.max(axis=0) + 3)
        grid = np.zeros(self.shape, dtype=bool)
        grid[idx[:, 0], idx[:, 1], idx[:, 2]] = True
        self.grid = volume.dilate(grid)

    def near(self, p: np.ndarray) -> np.ndarray:
        idx = np.floor((p - self.lo) / self.voxel).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < np.array(self.shape)), axis=1)
        out = np.zeros(len(p), dtype=bool)
        out[ok] = self.grid[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        return out


def _mirror_candidates(q: np.ndarray, resting: bool) -> list[Symmetry]:
    """Vertical planes along the object's principal directions, three estimates: the axes
    of the smallest rectangle around the cap (the top third), through the cap's centroid;
    the axes of the upright quadric (ellipsoid) through the points, through its centre; the
    axes of the footprint's smallest rectangle, through its centre."""
    frames = []
    # The cap (the top third of the height) faces the camera whole, so its centre and axes
    # are seen even where the side facing away is not.
    low, top = np.quantile(q[:, 2], [0.01, 0.99])
    cap = np.ascontiguousarray(q[q[:, 2] >= top - (top - low) / 3, :2], dtype=np.float32)
    if len(cap) >= 10:
        (cx, cy), _, angle = cv2.minAreaRect(cap)
        centre = cap.astype(np.float64).mean(axis=0)
        frames.append((centre, float(np.deg2rad(angle))))
    quadric = shapes.fit_ellipsoid(q, resting)
    if quadric is not None and np.all(np.isfinite(quadric.center)):
        frames.append((quadric.center[:2], quadric.yaw))
    xy = np.ascontiguousarray(q[:, :2], dtype=np.float32)
    (cx, cy), _, angle = cv2.minAreaRect(xy)
    frames.append((np.array([cx, cy], dtype=np.float64), float(np.deg2rad(angle))))
    out: list[Symmetry] = []
    for point, yaw in frames:
        for a in (yaw, yaw + np.pi / 2):
            n = np.array([np.cos(a), np.sin(a)])
            # A direction within 5 degrees of an earlier estimate's adds nothing.
            if all(abs(float(n @ m.normal)) < np.cos(np.deg2rad(5)) for m in out):
                out.append(Symmetry("mirror", point=np.asarray(point, dtype=np.float64), normal=n))
    return out


def _place_mirror(m: Symmetry, pts: np.ndarray, view: View, voxel: float, cfg: CompletionConfig) -> None:
    """Slide a mirror plane along its normal to the middle of the offsets the view allows.
    Too near the camera, the mirrored far side lands in front of the near side; too far,
    the mirrored near side lands where the camera sees the table: the allowed offsets
    bracket the true plane even where the far side's edge is lost (noisy depth drops the
    pixels at depth edges, which pulls any centre estimate towards the camera)."""
    # The estimates are off by a centimetre or two, not by the object's size.
    span = min(0.5 * float(np.ptp(pts[:, :2] @ m.normal)), _MIRROR_SEARCH_M) + 2 * voxel
    offsets = np.arange(-span, span + 1e-9, voxel)
    pts = pts[::max(1, len(pts) // _PLACE_POINTS)]
    d = (pts[:, :2] - m.point) @ m.normal
    # Image for offset o: p - 2 (d - o) n.
    base = np.array(pts, dtype=np.float64)
    images = np.repeat(base[None], len(offsets), axis=0)
    shift = 2.0 * (offsets[:, None] - d[None, :])
    images[:, :, 0] += shift * m.normal[0]
    images[:, :, 1] += shift * m.normal[1]
    share = view.free(images.reshape(-1, 3), voxel / 2).reshape(len(offsets), len(pts)).mean(axis=1)
    ok = share <= cfg.violations_max
    if not ok.any():
        m.violations = float(share.min())
        m.point = m.point + offsets[int(np.argmin(share))] * m.normal
        return
    # The longest run of allowed offsets, and its middle.
    runs, start = [], None
    for i, good in enumerate(np.append(ok, False)):
        if good and start is None:
            start = i
        elif not good and start is not None:
            runs.append((i - start, start, i - 1))
            start = None
    _, first, last = max(runs)
    mid = (offsets[first] + offsets[last]) / 2
    m.point = m.point + mid * m.normal
    m.violations = float(share[(first + last) // 2])


def _largest_cluster(q: np.ndarray, among: np.ndarray, eps: float, min_points: float) -> np.ndarray:
    """The points of `among` in its largest cluster (points chained at most `eps` apart), or
    none when that cluster has fewer than `min_points`."""
    import open3d as o3d

    out = np.zeros(len(q), dtype=bool)
    idx = np.flatnonzero(among)
    if len(idx) < min_points:
        return out
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(q[idx]))
    labels = np.asarray(cloud.cluster_dbscan(eps=eps, min_points=4))
    if not (labels >= 0).any():
        return out
    best = int(np.argmax(np.bincount(labels[labels >= 0])))
    if np.count_nonzero(labels == best) >= min_points:
        out[idx[labels == best]] = True
    return out


def find_symmetries(q: np.ndarray, normals: np.ndarray | None, view: View, resting: bool,
                    top: float, voxel: float, cfg: CompletionConfig) -> tuple[list[Symmetry], np.ndarray]:
    """The symmetries the observed points support, and a label per point: 0 for the body,
    1 where the point belongs to a part that breaks an accepted revolution (a handle), -1
    for stray points that break it without forming a part."""
    surface = _Surface(q, voxel)
    breaks = np.zeros(len(q), dtype=np.int64)
    found = []
    # The tests are shares: an evenly spread subsample of the points measures them.
    sub = q[::max(1, len(q) // _TEST_POINTS)]
    # Revolution: the axis from the normals or from slice circles, whichever the view
    # contradicts less; rotated images at the test angles.
    angles = 2 * np.pi * np.arange(1, _TEST_ANGLES) / _TEST_ANGLES

    def rotated_free(sym: Symmetry, pts: np.ndarray) -> np.ndarray:
        """(points, angles): whether each rotated image is seen free (one projection)."""
        rel = pts[:, :2] - sym.point
        c, s = np.cos(angles), np.sin(angles)
        x = sym.point[0] + rel[:, :1] * c - rel[:, 1:] * s
        y = sym.point[1] + rel[:, :1] * s + rel[:, 1:] * c
        z = np.broadcast_to(pts[:, 2:], x.shape)
        images = np.stack([x, y, z], axis=-1).reshape(-1, 3)
        return view.free(images, voxel / 2).reshape(len(pts), len(angles))

    axes = [fit_axis(q, 2 * voxel)]
    if normals is not None:
        from_normals = fit_axis_from_normals(q, normals)
        if from_normals is not None:
            axes.append(from_normals)
    rev = None
    for axis in axes:
        cand = Symmetry("revolution", point=axis)
        cand.violations = float(rotated_free(cand, sub).mean())
        if rev is None or cand.violations < rev.violations:
            rev = cand
    assert rev is not None
    if rev.violations <= cfg.violations_max:
        found.append(rev)
    else:
        broken = rotated_free(rev, q).mean(axis=1) > cfg.part_break_share
        if 0 < broken.mean() <= cfg.part_max_share:
            body = ~broken
            rev_body = Symmetry("revolution", point=rev.point)
            rev_body.violations = float(rotated_free(rev_body, q[body][::max(1, body.sum() // _TEST_POINTS)]).mean())
            # The part is the largest cluster of the breaking points (the rest, stray noise
            # at the silhouette, belongs to neither), and it must stand out of the body (a
            # handle), not be carved out of it.
            part = _largest_cluster(q, broken, 2.5 * voxel, max(cfg.part_min_points, 0.02 * len(q)))
            rho_body = np.linalg.norm(q[body, :2] - rev_body.point, axis=1)
            stands_out = not part.any() or \
                np.median(np.linalg.norm(q[part, :2] - rev_body.point, axis=1)) > np.quantile(rho_body, 0.9)
            if rev_body.violations <= cfg.violations_max and stands_out:
                found.append(rev_body)
                breaks = np.where(part, 1, np.where(broken, -1, 0))
    if not found:
        # At most one plane per direction: of estimates that agree (within 15 degrees) the
        # best confirmed one.
        passed = []
        for m in _mirror_candidates(q, resting):
            _place_mirror(m, sub, view, voxel, cfg)
            m.confirmed = float(surface.near(m.image(sub)).mean())
            if m.violations <= cfg.violations_max and m.confirmed >= cfg.confirm_min:
                passed.append(m)
        for m in sorted(passed, key=lambda m: -m.confirmed):
            if len(found) < 2 and all(abs(float(m.normal @ f.normal)) < np.cos(np.deg2rad(15))
                                      for f in found):
                found.append(m)
    if resting:
        h = Symmetry("horizontal", height=top / 2)
        img = h.image(sub)
        h.violations = float(view.free(img, voxel / 2).mean())
        h.confirmed = float(surface.near(img).mean())
        if h.violations <= cfg.violations_max and h.confirmed >= cfg.confirm_min:
            found.append(h)
    return found, breaks


# --- the solid -------------------------------------------------------------------------------

@dataclass
class VoxelSolid:
    """A completed solid: ``occupied`` voxels (support frame; voxel (i, j, k) is centred at
    ``origin + voxel * (i, j, k)``), the symmetries used, whether it rests on the support,
    and ``parts`` (name -> the part's voxels)."""

    occupied: np.ndarray
    origin: np.ndarray
    voxel: float
    symmetries: list[Symmetry]
    resting: bool
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    #: The yaw (rad, about z) the object's symmetry fixes for its box: a mirror plane's
    #: normal, or the direction from an axis of revolution to its part; None when free.
    yaw: float | None = None
    #: The family the solid's structure names (see :func:`name_family`).
    family: str = "object"

    def centres(self, mask: np.ndarray | None = None) -> np.ndarray:
        idx = np.argwhere(self.occupied if mask is None else mask)
        return self.origin + self.voxel * idx

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """The solid's surface. A voxel holding an observed point is occupied, so the voxels'
        outer faces stand half a voxel outside the surface on average: the mesh is moved in
        by that much along its normals, through the boundary voxels' centres."""
        verts, tris = volume.surface_nets(0.5 - self.occupied.astype(np.float32), 0.0,
                                          self.origin, self.voxel)
        shift = 0.5 * self.voxel * volume.vertex_normals(verts, tris)
        if self.resting:  # the bottom face is the support itself: it stays there
            shift[verts[:, 2] < 0.25 * self.voxel, 2] = 0.0
        return verts - shift, tris


def _voxel_size(q: np.ndarray, cfg: CompletionConfig) -> float:
    size = max(float(np.ptp(q[:, 0])), float(np.ptp(q[:, 1])), float(q[:, 2].max()))
    return float(np.clip(size / cfg.cells, cfg.voxel_min_m, cfg.voxel_max_m))


def _rasterise(points: np.ndarray, origin: np.ndarray, voxel: float, shape) -> np.ndarray:
    grid = np.zeros(shape, dtype=bool)
    idx = np.rint((points - origin) / voxel).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < np.array(shape)), axis=1)
    idx = idx[ok]
    grid[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return grid


def _column_fill(seeds: np.ndarray, resting: bool) -> np.ndarray:
    """Each column from the support (or its lowest seed) up to its highest seed."""
    nz = seeds.shape[2]
    k = np.arange(nz)
    has = seeds.any(axis=2)
    top = np.where(has, nz - 1 - np.argmax(seeds[:, :, ::-1], axis=2), -1)
    bottom = np.zeros_like(top) if resting else np.where(has, np.argmax(seeds, axis=2), nz)
    return (k[None, None, :] >= bottom[..., None]) & (k[None, None, :] <= top[..., None])


def complete(q: np.ndarray, view: View, resting: bool, cfg: CompletionConfig,
             part_labels: np.ndarray | None = None, normals: np.ndarray | None = None) -> VoxelSolid:
    """The solid of the object whose observed points (support frame) are `q`; see the module
    docstring. `part_labels` (int per point, 0 = body) marks pieces segmentation attached to
    the object (floating pieces such as a handle seen apart from its mug); `normals` (unit,
    support frame, per point; zero where unknown) help find an axis of revolution."""
    voxel = _voxel_size(q, cfg)
    _, top = float(np.min(q[:, 2])), float(np.quantile(q[:, 2], 0.99))
    labels = np.zeros(len(q), dtype=np.int64) if part_labels is None else np.asarray(part_labels)
    body = labels == 0 if np.any(labels == 0) else np.ones(len(q), dtype=bool)
    body_q = q[body]
    symmetries, breaks = find_symmetries(body_q, None if normals is None else normals[body], view,
                                         resting, top, voxel, cfg)
    body_pts = body_q[breaks == 0]
    part_sets = [body_q[breaks == 1]] if (breaks == 1).any() else []
    part_sets += [q[labels == k] for k in np.unique(labels) if k != 0]
    part_sets = [p for p in part_sets if len(p) >= 6]
    rev = next((s for s in symmetries if s.kind == "revolution"), None)

    # Seeds: the observed body and its images.
    seeds = [body_pts]
    if rev is None:
        for s in symmetries:
            seeds = seeds + [s.image(p) for p in seeds]
    seed_pts = np.vstack(seeds)
    # Grid bounds: the seeds, and for a revolution the whole circle of its widest point.
    lo, hi = seed_pts.min(axis=0), seed_pts.max(axis=0)
    if rev is not None:
        r_max = float(np.linalg.norm(body_pts[:, :2] - rev.point, axis=1).max())
        lo[:2] = np.minimum(lo[:2], rev.point - r_max)
        hi[:2] = np.maximum(hi[:2], rev.point + r_max)
    for p in part_sets:
        lo, hi = np.minimum(lo, p.min(axis=0)), np.maximum(hi, p.max(axis=0))
    if resting:
        lo[2] = 0.0
    origin = lo - 2 * voxel
    if resting:
        origin[2] = voxel / 2  # the first layer of voxels stands on the support
    shape = tuple(np.ceil((hi - origin) / voxel).astype(int) + 3)
    centres = volume.grid_points(origin, voxel, shape).reshape(-1, 3)

    if rev is not None:
        occupied = _revolution_solid(body_pts, rev, view, resting, origin, voxel, shape, centres)
    else:
        grid_seeds = _rasterise(seed_pts, origin, voxel, shape)
        filled = _column_fill(grid_seeds, resting)
        filled = volume.close(filled)  # seal the seams between seed columns
        cand = np.flatnonzero(filled.ravel())
        carve = view.free(centres[cand])
        for s in symmetries:
            carve |= view.free(s.image(centres[cand]))
        occupied = np.zeros(filled.size, dtype=bool)
        occupied[cand[~carve]] = True
        occupied = occupied.reshape(shape)
    observed = _rasterise(body_pts, origin, voxel, shape)
    occupied |= observed

    parts = {}
    for n, pts in enumerate(part_sets):
        part = _part_solid(pts, rev, view, origin, voxel, shape, centres)
        parts[f"part{n}"] = part
        occupied |= part
        observed |= _rasterise(pts, origin, voxel, shape)
    occupied = volume.reconstruct(observed, occupied)
    yaw = None
    mirror = next((s for s in symmetries if s.kind == "mirror"), None)
    if mirror is not None:
        yaw = float(np.arctan2(mirror.normal[1], mirror.normal[0]))
    elif rev is not None and part_sets:
        d = np.median(np.vstack(part_sets)[:, :2], axis=0) - rev.point
        yaw = float(np.arctan2(d[1], d[0]))
    solid = VoxelSolid(occupied, origin, voxel, symmetries, resting,
                       {k: v & occupied for k, v in parts.items()}, yaw)
    solid.family = name_family(solid, body_pts, view, cfg)
    return solid


def name_family(solid: VoxelSolid, pts: np.ndarray, view: View, cfg: CompletionConfig) -> str:
    """The family a completed solid's structure names, by rules on its symmetry and shape
    (measured on the tuning scenes; an object no rule names is an ``object``):

    - a solid of revolution with a part (a handle) is a ``mug``; with an empty axis at every
      height (a hole through it) a ``torus``; lower than a third of its width a ``plate``;
      with its axis empty in the upper part inside a rim, or unseen below (an open cavity),
      a ``cup``; narrower than half
      its widest radius at three quarters of its height, a ``bottle`` when its lower part
      keeps its radius (a body), else a ``cone``; otherwise ``round``;
    - without revolution: an ``ellipsoid`` when two vertical mirror planes hold and the
      upright quadric through the points fits them to within the noise; a footprint that
      fills less than 85% of its convex hull is an ``l-block`` when its top is flat (a
      prism), else ``curved`` when it is elongated."""
    body = solid.occupied.copy()
    for part in solid.parts.values():
        body &= ~part
    centres = solid.centres(body)
    if len(centres) < 8:
        return "object"
    rev = next((s for s in solid.symmetries if s.kind == "revolution"), None)
    top = float(centres[:, 2].max()) + solid.voxel / 2
    v = solid.voxel
    if rev is not None:
        if solid.parts:
            return "mug"
        rho = np.linalg.norm(centres[:, :2] - rev.point, axis=1)
        k = np.rint((centres[:, 2] - solid.origin[2]) / v).astype(np.int64)
        n_z = int(k.max()) + 1
        r_of = np.zeros(n_z)
        np.maximum.at(r_of, k, rho)
        on_axis = np.zeros(n_z, dtype=bool)
        on_axis[k[rho < 1.5 * v]] = True
        width = 2 * float(r_of.max()) + v
        if not on_axis.any():
            return "torus" if axis_seen_free(view, rev.point, top, v) else "cup"
        if top < width / 3:
            return "plate"
        at = lambda share: float(r_of[min(n_z - 1, int(share * n_z))])  # noqa: E731
        axis_top = (int(np.flatnonzero(on_axis).max()) + 1) * v
        if axis_top < 0.6 * top and at(0.9) >= 0.7 * r_of.max():  # a rim around an open top
            return "cup"
        if at(0.9) < 0.5 * r_of.max():
            return "bottle" if min(at(0.2), at(0.4)) > 0.85 * r_of.max() else "cone"
        return "round"
    mirrors = sum(s.kind == "mirror" for s in solid.symmetries)
    quadric = shapes.fit_ellipsoid(pts, solid.resting) if mirrors >= 2 else None
    if quadric is not None and np.all(np.isfinite(quadric.extent)):
        d = np.abs(shapes.ellipsoid_sdf(pts, quadric.center, quadric.extent, quadric.yaw))
        if np.quantile(d, 0.9) <= cfg.quadric_fit_m + 3 * view.noise_m:
            return "ellipsoid"
    footprint = np.zeros(body.shape[:2], dtype=np.uint8)
    footprint[body.any(axis=2)] = 1
    contours, _ = cv2.findContours(footprint, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return "object"
    outline = max(contours, key=cv2.contourArea)
    hull_area = cv2.contourArea(cv2.convexHull(outline))
    if hull_area <= 0 or cv2.contourArea(outline) >= 0.85 * hull_area:
        return "object"
    heights = body.shape[2] - np.argmax(body[:, :, ::-1], axis=2)
    col_tops = heights[body.any(axis=2)] * v
    if np.quantile(col_tops, 0.1) >= 0.8 * np.quantile(col_tops, 0.95):
        return "l-block"
    (_, _), (w, h), _ = cv2.minAreaRect(np.argwhere(footprint).astype(np.float32))
    return "curved" if max(w, h) > 2 * max(min(w, h), 1.0) else "object"


def _revolution_solid(pts, rev, view, resting, origin, voxel, shape, centres) -> np.ndarray:
    """Under revolution the solid is a profile in the (radius, height) half-plane: each
    radius filled from the support to its highest point, carved where any rotation of the
    cell is seen free."""
    rho = np.linalg.norm(pts[:, :2] - rev.point, axis=1)
    dr = voxel / 2
    n_r = int(np.ceil(rho.max() / dr)) + 3
    n_z = shape[2]
    ri = np.minimum(np.floor(rho / dr).astype(np.int64), n_r - 1)
    zi = np.clip(np.rint((pts[:, 2] - origin[2]) / voxel).astype(np.int64), 0, n_z - 1)
    seeds = np.zeros((n_r, n_z), dtype=bool)
    seeds[ri, zi] = True
    profile = _column_fill(seeds[:, None, :], resting)[:, 0, :]
    # Close one-cell seams between radii (a sparse slice leaves gaps).
    closed = cv2.morphologyEx(profile.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 1), np.uint8))
    profile = closed.astype(bool) | profile
    solid_r = profile.any(axis=1)
    if resting and solid_r.any() and not solid_r[:int(np.ceil(1.5 * voxel / dr))].any():
        # An empty axis: a hole the camera sees through low down (a torus), or a cavity
        # whose floor it does not see (a deep cup). The cavity gets a floor as thick as its
        # rim, which the camera sees (walls of one thickness, as moulded and turned objects
        # have), and carving still removes whatever of it is seen free.
        top_k = int(np.flatnonzero(profile.any(axis=0)).max())
        if not axis_seen_free(view, rev.point, origin[2] + top_k * voxel, voxel):
            rim = np.flatnonzero(profile[:, top_k])
            floor_k = int(np.clip(round((rim.max() - rim.min() + 1) * dr / voxel), 1, max(1, top_k // 4)))
            profile[:int(np.argmax(solid_r)), :floor_k] = True
    cells = np.argwhere(profile)
    r_c = (cells[:, 0] + 0.5) * dr
    z_c = origin[2] + cells[:, 1] * voxel
    angles = 2 * np.pi * np.arange(_CARVE_ANGLES) / _CARVE_ANGLES
    x = rev.point[0] + r_c[:, None] * np.cos(angles)[None, :]
    y = rev.point[1] + r_c[:, None] * np.sin(angles)[None, :]
    ring = np.stack([x, y, np.broadcast_to(z_c[:, None], x.shape)], axis=-1).reshape(-1, 3)
    carved = view.free(ring).reshape(len(cells), _CARVE_ANGLES).any(axis=1)
    profile[cells[carved, 0], cells[carved, 1]] = False
    # Voxels look their (radius, height) cell up in the profile.
    rho_v = np.linalg.norm(centres[:, :2] - rev.point, axis=1)
    r_idx = np.floor(rho_v / dr).astype(np.int64)
    z_idx = np.rint((centres[:, 2] - origin[2]) / voxel).astype(np.int64)
    ok = (r_idx < n_r) & (z_idx >= 0) & (z_idx < n_z)
    occ = np.zeros(len(centres), dtype=bool)
    occ[ok] = profile[r_idx[ok], z_idx[ok]]
    return occ.reshape(shape)


def axis_seen_free(view: View, point: np.ndarray, top: float, voxel: float) -> bool:
    """Whether the camera sees through an empty axis of revolution in the lower half of the
    object (a hole through it, as a torus's), rather than only near its top (the mouth of a
    cup whose floor it does not see)."""
    zs = np.arange(voxel, top / 2, voxel / 2)
    if not len(zs):
        return False
    pts = np.column_stack([np.full(len(zs), point[0]), np.full(len(zs), point[1]), zs])
    return bool(view.free(pts).any())


def _part_solid(pts, rev, view, origin, voxel, shape, centres) -> np.ndarray:
    """A part (a handle): its points and their image through the plane through the body's
    axis and the part (when the body turns about an axis), grown by a voxel and closed,
    without support fill; carved where seen free."""
    seeds = [pts]
    if rev is not None:
        d = np.median(pts[:, :2], axis=0) - rev.point
        if np.linalg.norm(d) > 1e-6:
            d /= np.linalg.norm(d)
            m = Symmetry("mirror", point=rev.point, normal=np.array([-d[1], d[0]]))
            img = m.image(pts)
            if view.free(img, voxel / 2).mean() <= 0.1:
                seeds.append(img)
    grid = _rasterise(np.vstack(seeds), origin, voxel, shape)
    grown = volume.erode(volume.fill_enclosed(volume.dilate(volume.dilate(grid)), True))
    cand = np.flatnonzero(grown.ravel())
    occ = np.zeros(grown.size, dtype=bool)
    occ[cand[~view.free(centres[cand])]] = True
    return occ.reshape(shape) | grid
