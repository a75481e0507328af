"""Primitive fitting for amodal completion, the meshes of the fitted shapes, and the boxes of
completed solids.

Everything here works in a *support frame*: z is the normal of the surface the objects rest on
(pointing towards the camera side), x is the camera's viewing direction projected onto that
surface, and z = 0 is the surface itself. Objects that touch the surface are assumed to rest
on it, so their shape extends down to z = 0 even where the camera sees nothing (the bottom and
the back are the parts a single view never sees).

Candidates, each fitted to the observed points and scored by the trimmed RMS of the points'
distance to the candidate's surface (the absolute signed distance function):

- ``box``/``cube``: upright box; its yaw is the one whose footprint rectangle (robust 1-99
  percentile extents) has the smallest area, searched in 3 degree steps over 90 degrees; the
  top face seen from above gives the whole footprint, the support gives the bottom.
- ``cylinder``: upright; circle fitted (algebraic least squares) to the convex hull of the
  footprint, height from the top.
- ``ball``: algebraic least-squares sphere fit in 3D (one linear solve).
Two cues add a 2 mm penalty to the candidates they speak against (see ``_shape_cues``):
whether the top is a dome (a ball) or flat, and whether the top's footprint is round or
square. They average over many points, so noisy depth does not wash them out as it does the
residual differences. Their thresholds were set from measurements on Tabletop seeds 0-19.

Whether the best primitive is the object is decided with the view (:func:`outside_share`,
:func:`contradicted`); when it is not, the voxel completion (:mod:`.completion`) builds the
object, and :func:`box_of_solid` / :func:`part_boxes` give its boxes. :func:`fit_ellipsoid`
(an upright quadric, any yaw) serves the completion: its axes are candidate mirror planes,
and its fit names ellipsoids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

#: Yaw search for the box footprint (radians): 3 degree steps over a quarter turn.
_YAWS = np.deg2rad(np.arange(0.0, 90.0, 3.0))
#: Percentiles that bound a footprint or a height (robust to a few stray points).
_LO, _HI = 1.0, 99.0
#: A box whose sides agree within this ratio is called a cube.
_CUBE_RATIO = 1.2
#: Candidate score penalty (m) per primitive, so that on a tie the simpler story wins.
_PRIOR_M = {"box": 0.0, "cylinder": 0.0003, "ball": 0.0}
#: Penalty (m) a shape cue adds to a candidate it speaks against (see _shape_cues).
_CUE_M = 0.002


@dataclass
class ShapeFit:
    """A fitted shape in the support frame: centre, full extents along the shape's own
    axes, yaw about the support normal, trimmed RMS of the points' distance to its surface."""

    shape: str
    center: np.ndarray
    extent: np.ndarray
    yaw: float
    rms: float
    hull_points: np.ndarray | None = None  # completion off: the observed points, hulled


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _trimmed_rms(dist: np.ndarray, keep: float = 0.9) -> float:
    d = np.abs(dist)
    k = max(1, int(len(d) * keep))
    d = np.partition(d, k - 1)[:k]
    return float(np.sqrt(np.mean(d * d)))


def vertical_range(z: np.ndarray, resting: bool) -> tuple[float, float]:
    lo, hi = robust_range(z)
    top = float(hi)
    bottom = 0.0 if resting else float(lo)
    return bottom, max(top, bottom + 1e-3)


def robust_range(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the (_LO, _HI) percentiles (nearest rank; one partition for all rows)."""
    n = values.shape[-1]
    lo = int(round((n - 1) * _LO / 100.0))
    hi = int(round((n - 1) * _HI / 100.0))
    ordered = np.partition(values, (lo, hi), axis=-1)
    return ordered[..., lo], ordered[..., hi]


def fit_box(q: np.ndarray, resting: bool) -> ShapeFit:
    xy = q[:, :2]
    c, s = np.cos(_YAWS)[:, None], np.sin(_YAWS)[:, None]
    u = xy[:, 0] * c + xy[:, 1] * s  # (yaws, N)
    v = -xy[:, 0] * s + xy[:, 1] * c
    ulo, uhi = robust_range(u)
    vlo, vhi = robust_range(v)
    k = int(np.argmin((uhi - ulo) * (vhi - vlo)))
    yaw = float(_YAWS[k])
    uc, vc = (ulo[k] + uhi[k]) / 2, (vlo[k] + vhi[k]) / 2
    eu, ev = uhi[k] - ulo[k], vhi[k] - vlo[k]
    bottom, top = vertical_range(q[:, 2], resting)
    c, s = np.cos(yaw), np.sin(yaw)
    center = np.array([uc * c - vc * s, uc * s + vc * c, (bottom + top) / 2])
    extent = np.array([max(eu, 1e-3), max(ev, 1e-3), top - bottom])
    return ShapeFit("box", center, extent, yaw, _trimmed_rms(box_sdf(q, center, extent, yaw)))


def box_sdf(q, center, extent, yaw) -> np.ndarray:
    local = (q - center) @ yaw_matrix(yaw)  # rows: R^T (q - c)
    d = np.abs(local) - extent / 2
    outside = np.linalg.norm(np.maximum(d, 0.0), axis=1)
    inside = np.minimum(d.max(axis=1), 0.0)
    return outside + inside


def _circle_fit(xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic (Kasa) circle fit: x^2 + y^2 = 2 a x + 2 b y + k."""
    A = np.column_stack([2 * xy, np.ones(len(xy))])
    rhs = (xy * xy).sum(axis=1)
    sol, *_ = np.linalg.lstsq(A, rhs, rcond=None)
    center = sol[:2]
    r2 = sol[2] + center @ center
    return center, float(np.sqrt(max(r2, 1e-8)))


def fit_cylinder(q: np.ndarray, resting: bool) -> ShapeFit:
    xy = np.ascontiguousarray(q[:, :2], dtype=np.float32)
    hull = cv2.convexHull(xy).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3:
        hull = xy.astype(np.float64)
    center_xy, r = _circle_fit(hull)
    bottom, top = vertical_range(q[:, 2], resting)
    center = np.array([center_xy[0], center_xy[1], (bottom + top) / 2])
    extent = np.array([2 * r, 2 * r, top - bottom])
    return ShapeFit("cylinder", center, extent, 0.0, _trimmed_rms(cylinder_sdf(q, center, extent)))


def cylinder_sdf(q, center, extent) -> np.ndarray:
    rho = np.linalg.norm(q[:, :2] - center[:2], axis=1)
    d = np.column_stack([rho - extent[0] / 2, np.abs(q[:, 2] - center[2]) - extent[2] / 2])
    return np.minimum(d.max(axis=1), 0.0) + np.linalg.norm(np.maximum(d, 0.0), axis=1)


def fit_sphere(q: np.ndarray) -> ShapeFit:
    A = np.column_stack([2 * q, np.ones(len(q))])
    rhs = (q * q).sum(axis=1)
    sol, *_ = np.linalg.lstsq(A, rhs, rcond=None)
    center = sol[:3]
    r = float(np.sqrt(max(sol[3] + center @ center, 1e-8)))
    dist = np.linalg.norm(q - center, axis=1) - r
    # A ball's top is the top of what the camera sees of it (it looks down on it); a flat
    # top (a cube's) sits below the sphere through its corners: count the gap as residual.
    _, top = robust_range(q[:, 2])
    gap = center[2] + r - top
    rms = float(np.hypot(_trimmed_rms(dist), gap))
    return ShapeFit("ball", center, np.full(3, 2 * r), 0.0, rms)


def ellipsoid_sdf(q, center, extent, yaw) -> np.ndarray:
    """Signed distance (the first-order bound; exact sign) to an upright ellipsoid."""
    local = (q - center) @ yaw_matrix(yaw)
    k = np.maximum(extent / 2, 1e-6)
    k0 = np.linalg.norm(local / k, axis=1)
    k1 = np.linalg.norm(local / (k * k), axis=1)
    return np.where(k1 > 0, k0 * (k0 - 1.0) / np.maximum(k1, 1e-12), -k.min())


def fit_ellipsoid(q: np.ndarray, resting: bool) -> ShapeFit | None:
    """An upright ellipsoid with any yaw (three different semi-axes): algebraic least
    squares for A x^2 + B xy + C y^2 + D (z - z0)^2 + E x + F y + G = 0 (the smallest
    singular vector, on centred and scaled points). A resting ellipsoid touches the support,
    so its centre height z0 is half its top's; otherwise z0 is fitted too (a linear z term).
    None when the points are not on an ellipsoid (the quadric is no ellipsoid)."""
    if len(q) < 12:
        return None
    _, top = robust_range(q[:, 2])
    mean = q.mean(axis=0)
    scale = float(np.abs(q - mean).max()) or 1.0
    x, y = (q[:, 0] - mean[0]) / scale, (q[:, 1] - mean[1]) / scale
    z0 = float(top) / 2 if resting else None
    z = (q[:, 2] - (z0 if resting else mean[2])) / scale
    cols = [x * x, x * y, y * y, z * z, x, y, np.ones(len(q))]
    if not resting:
        cols.insert(6, z)
    _, _, vt = np.linalg.svd(np.column_stack(cols), full_matrices=False)
    coef = vt[-1]
    A, B, C, D, E, F = coef[:6]
    H = coef[6] if not resting else 0.0
    G = coef[-1]
    M = np.array([[A, B / 2], [B / 2, C]])
    if abs(np.linalg.det(M)) < 1e-12 or abs(D) < 1e-12:
        return None
    c_xy = -0.5 * np.linalg.solve(M, [E, F])
    c_z = -H / (2 * D)
    k = c_xy @ M @ c_xy + D * c_z * c_z - G
    evals, evecs = np.linalg.eigh(M)
    if not (np.all(evals * k > 0) and D * k > 0):
        return None
    semi = np.sqrt(np.array([k / evals[0], k / evals[1], k / D])) * scale
    yaw = float(np.arctan2(evecs[1, 0], evecs[0, 0]))
    center = np.array([mean[0] + scale * c_xy[0], mean[1] + scale * c_xy[1],
                       (z0 if resting else mean[2]) + scale * c_z])
    extent = 2 * semi
    rms = _trimmed_rms(ellipsoid_sdf(q, center, extent, yaw))
    return ShapeFit("ellipsoid", center, extent, yaw, rms)


def fit_visible(q: np.ndarray) -> ShapeFit:
    """No completion: the upright box of the observed points alone (the baseline)."""
    box = fit_box(q, resting=False)
    return ShapeFit("visible", box.center, box.extent, box.yaw, float("nan"), hull_points=q)


def fit_best(q: np.ndarray, resting: bool) -> ShapeFit | None:
    """The primitive with the lowest score (trimmed RMS plus the cues' penalties), None when
    none can be fitted. Whether it explains the points well enough is the caller's call."""
    fits = [fit_box(q, resting), fit_cylinder(q, resting), fit_sphere(q)]
    fits = [f for f in fits if np.all(np.isfinite(f.extent)) and np.isfinite(f.rms)]
    # A sphere far larger than the points' spread is a plane in disguise, not a ball.
    spread = float(np.ptp(q, axis=0).max()) if len(q) else 0.0
    fits = [f for f in fits if f.shape != "ball" or f.extent[0] <= 2.0 * spread + 0.01]
    if not fits:
        return None
    penalty = _shape_cues(q)
    best = min(fits, key=lambda f: f.rms + _PRIOR_M[f.shape] + penalty[f.shape])
    if best.shape == "box" and best.extent.max() <= _CUBE_RATIO * best.extent.min():
        best.shape = "cube"
    return best


def _shape_cues(q: np.ndarray) -> dict:
    """Penalties (m) from two cues that noise does not wash out, because they average over
    many points: a **dome** (the top region's height falls with the squared horizontal
    distance from its centre, as a ball's does; flat tops do not) and a **round footprint**
    (the top region's convex hull fills about pi/4 of its smallest enclosing rectangle for a
    disc, all of it for a square). Clean depth separates the shapes by their residuals
    already; these decide the close calls on noisy depth."""
    penalty = {"box": 0.0, "cylinder": 0.0, "ball": 0.0}
    z = q[:, 2]
    lo, hi = robust_range(z)
    top = q[z >= hi - 0.25 * max(hi - lo, 1e-3)]
    if len(top) < 30:
        return penalty
    xy = top[:, :2] - np.median(top[:, :2], axis=0)
    rho2 = (xy * xy).sum(axis=1)
    # Height = a - c * rho^2 by least squares; a ball of radius r has c = 1 / (2 r).
    A = np.column_stack([np.ones(len(rho2)), -rho2])
    (a, c), *_ = np.linalg.lstsq(A, top[:, 2], rcond=None)
    half_width = float(np.sqrt(np.percentile(rho2, 90)))
    dome = c * half_width  # ~0.5 for a hemisphere-like top (c = 1/2r, half width ~ r)
    if dome < 0.07:  # measured: flat tops <= 0.06 (noisy) / 0.10 (clean); balls >= 0.08 / 0.19
        penalty["ball"] += _CUE_M
    elif dome > 0.12:
        penalty["box"] += _CUE_M
        penalty["cylinder"] += _CUE_M
    d = np.sqrt(rho2)
    core = xy[d <= np.percentile(d, 97)].astype(np.float32)
    hull = cv2.convexHull(core)
    rect_w, rect_h = cv2.minAreaRect(core)[1]
    if rect_w * rect_h > 1e-12:
        # Measured: squares 0.92-0.96 clean, 0.82-0.90 noisy; discs 0.78-0.84 / 0.70-0.85.
        fill = cv2.contourArea(hull) / (rect_w * rect_h)
        if fill < 0.83:
            penalty["box"] += _CUE_M
        elif fill > 0.88:
            penalty["cylinder"] += _CUE_M
    return penalty


# --- meshes ----------------------------------------------------------------------------

def _grid_face(n: int):
    s = np.linspace(-0.5, 0.5, n + 1)
    a, b = np.meshgrid(s, s, indexing="ij")
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    tris = []
    for i in range(n):
        for j in range(n):
            v0, v1, v2, v3 = idx[i, j], idx[i + 1, j], idx[i + 1, j + 1], idx[i, j + 1]
            tris += [(v0, v1, v2), (v0, v2, v3)]
    return a.ravel(), b.ravel(), np.array(tris)


def unit_box(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Unit cube [-0.5, 0.5]^3, each face an n x n grid (colour resolution), outward CCW."""
    a, b, tris = _grid_face(n)
    verts: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    for axis in range(3):
        for sign in (-0.5, 0.5):
            p = np.zeros((len(a), 3))
            u, v = (axis + 1) % 3, (axis + 2) % 3
            p[:, axis], p[:, u], p[:, v] = sign, a, b
            t = tris if sign > 0 else tris[:, ::-1]
            faces.append(t + len(verts) * len(a))
            verts.append(p)
    return np.vstack(verts), np.vstack(faces)


def unit_sphere(lat: int = 10, lon: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Sphere of diameter 1 (UV, poles included), outward CCW."""
    theta = np.linspace(0, np.pi, lat + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = 0.5 * np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)
    verts = np.vstack([[0, 0, 0.5], ring.reshape(-1, 3), [0, 0, -0.5]])
    tris = []
    rings = lat - 1
    at = lambda i, j: 1 + i * lon + (j % lon)  # noqa: E731
    for j in range(lon):
        tris.append((0, at(0, j), at(0, j + 1)))
        tris.append((len(verts) - 1, at(rings - 1, j + 1), at(rings - 1, j)))
        for i in range(rings - 1):
            tris += [(at(i, j), at(i + 1, j), at(i + 1, j + 1)),
                     (at(i, j), at(i + 1, j + 1), at(i, j + 1))]
    return verts, np.array(tris)


def unit_cylinder(segments: int = 16, rings: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Cylinder of diameter 1 and height 1 along z, capped, outward CCW."""
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    zs = np.linspace(-0.5, 0.5, rings + 1)
    side = np.array([[0.5 * np.cos(a), 0.5 * np.sin(a), z] for z in zs for a in phi])
    verts = np.vstack([side, [0, 0, -0.5], [0, 0, 0.5]])
    bottom, top = len(side), len(side) + 1
    at = lambda i, j: i * segments + (j % segments)  # noqa: E731
    tris = []
    for j in range(segments):
        for i in range(rings):
            tris += [(at(i, j), at(i, j + 1), at(i + 1, j + 1)),
                     (at(i, j), at(i + 1, j + 1), at(i + 1, j))]
        tris.append((bottom, at(0, j + 1), at(0, j)))
        tris.append((top, at(rings, j), at(rings, j + 1)))
    return verts, np.array(tris)


_UNIT: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # unit meshes by kind, built on first use


def shape_mesh(fit: ShapeFit) -> tuple[np.ndarray, np.ndarray]:
    """The fitted shape's mesh in the support frame: (vertices, triangles)."""
    if fit.hull_points is not None:
        return hull_mesh(fit.hull_points)
    kind = {"cube": "box", "ellipsoid": "ball"}.get(fit.shape, fit.shape)
    if kind not in _UNIT:
        builders: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
            "box": unit_box, "ball": unit_sphere, "cylinder": unit_cylinder}
        _UNIT[kind] = builders[kind]()
    verts, tris = _UNIT[kind]
    return fit.center + (verts * fit.extent) @ yaw_matrix(fit.yaw).T, tris.copy()


def hull_mesh(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    try:
        mesh, _ = pcd.compute_convex_hull(joggle_inputs=True)
    except RuntimeError:  # degenerate (flat or too few points): no surface to wrap
        return np.asarray(points, np.float64), np.zeros((0, 3), dtype=np.int64)
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles)


# --- colour names ----------------------------------------------------------------------

def color_name(rgb01: np.ndarray) -> str:
    """A basic colour name for an RGB colour in [0, 1] (from its HSV hue, or grey levels)."""
    rgb = np.clip(np.asarray(rgb01, np.float64), 0, 1)
    hsv = cv2.cvtColor(rgb.reshape(1, 1, 3).astype(np.float32), cv2.COLOR_RGB2HSV)[0, 0]
    h, s, v = float(hsv[0]), float(hsv[1]), float(hsv[2])
    if v < 0.2:
        return "black"
    if s < 0.25:
        return "white" if v > 0.75 else "grey"
    for name, upper in (("red", 15), ("orange", 40), ("yellow", 70), ("green", 170),
                        ("cyan", 200), ("blue", 260), ("purple", 330)):
        if h < upper:
            return name
    return "red"


# --- checks against the view, and boxes of voxel solids ------------------------------------------

def primitive_sdf(fit: ShapeFit, q: np.ndarray) -> np.ndarray:
    """Signed distance from support-frame points to a fitted primitive's surface."""
    if fit.shape in ("box", "cube"):
        return box_sdf(q, fit.center, fit.extent, fit.yaw)
    if fit.shape == "cylinder":
        return cylinder_sdf(q, fit.center, fit.extent)
    if fit.shape == "ellipsoid":
        return ellipsoid_sdf(q, fit.center, fit.extent, fit.yaw)
    return np.linalg.norm(q - fit.center, axis=1) - fit.extent[0] / 2


def outside_share(fit: ShapeFit, q: np.ndarray, distance: float) -> float:
    """Share of the points further than `distance` outside a fitted primitive."""
    return float(np.mean(primitive_sdf(fit, q) > distance))


def contradicted(fit: ShapeFit, view, share: float, cells: int = 12) -> bool:
    """Whether more than `share` of a primitive's volume is seen free by `view` (a
    :class:`~.completion.View`) or lies below the support: the camera sees through the
    shape, so the object is not that primitive (a torus fitted as a cylinder). The volume
    is sampled on a grid of `cells` steps along each side of the shape's upright box."""
    half = np.linalg.norm(fit.extent[:2]) / 2 if fit.shape in ("box", "cube") else fit.extent[0] / 2
    lo = fit.center - np.array([half, half, fit.extent[2] / 2])
    hi = fit.center + np.array([half, half, fit.extent[2] / 2])
    axes = [np.linspace(lo[d], hi[d], cells + 1)[:-1] + (hi[d] - lo[d]) / (2 * cells) for d in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = grid[primitive_sdf(fit, grid) < 0.0]
    if len(inside) < 8:
        return False
    return float(view.free(inside).mean()) > share


def box_of_solid(solid, verts: np.ndarray, rms: float) -> ShapeFit:
    """The upright box of a voxel solid's mesh: yaw from its symmetry (a mirror plane, or
    the direction of a part from its axis) or else from the smallest rectangle around its
    footprint, extents from the mesh, so box and mesh agree."""
    yaw = solid.yaw
    if yaw is None:
        xy = np.ascontiguousarray(solid.centres()[:, :2], dtype=np.float32)
        yaw = float(np.deg2rad(cv2.minAreaRect(xy)[2])) if len(xy) >= 3 else 0.0
    local = verts @ yaw_matrix(yaw)
    lo, hi = local.min(axis=0), local.max(axis=0)
    center = yaw_matrix(yaw) @ ((lo + hi) / 2)
    return ShapeFit(solid.family, center, hi - lo, yaw, rms)


def part_boxes(solid) -> list[tuple[str, ShapeFit]]:
    """(name, upright box) of each part of a voxel solid, support frame: a part standing
    out of a body of revolution is a ``handle`` (its box along the direction from the axis
    to it), any other a ``part``. The box spans the part's voxel centres, as the mesh does
    (it passes through the boundary voxels' centres)."""
    rev = next((s for s in solid.symmetries if s.kind == "revolution"), None)
    out = []
    for voxels in solid.parts.values():
        centres = solid.centres(voxels)
        if len(centres) < 2:
            continue
        if rev is not None:
            d = np.median(centres[:, :2], axis=0) - rev.point
            yaw, name = float(np.arctan2(d[1], d[0])), "handle"
        else:
            xy = np.ascontiguousarray(centres[:, :2], dtype=np.float32)
            yaw, name = float(np.deg2rad(cv2.minAreaRect(xy)[2])), "part"
        local = centres @ yaw_matrix(yaw)
        lo, hi = local.min(axis=0), local.max(axis=0)
        extent = np.maximum(hi - lo, solid.voxel)
        out.append((name, ShapeFit(name, yaw_matrix(yaw) @ ((lo + hi) / 2), extent, yaw, float("nan"))))
    return out
