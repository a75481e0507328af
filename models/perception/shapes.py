"""Amodal shape completion by primitive fitting, and the meshes of the fitted shapes.

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

- ``hull``: the general fallback when no primitive explains the points: the observed points,
  their mirror image through the vertical plane through the object's centre (objects are
  mostly mirror-symmetric front to back), and their shadow on the support, wrapped in a convex
  hull.
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
    hull_points: np.ndarray | None = None  # the hull fallback's point set (support frame)


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
    """Per row, the (_LO, _HI) percentiles (nearest rank; one sort for all rows)."""
    ordered = np.sort(values, axis=-1)
    n = ordered.shape[-1]
    lo = int(round((n - 1) * _LO / 100.0))
    hi = int(round((n - 1) * _HI / 100.0))
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


def fit_hull(q: np.ndarray, resting: bool) -> ShapeFit:
    """Mirror-symmetry completion: reflect the points through the vertical plane (normal
    along the viewing direction x) through the centre of the top part, which the camera
    sees from above; add the points' shadow on the support when the object rests on it."""
    z = q[:, 2]
    top_part = q[z >= np.percentile(z, 70)]
    mirror_x = float(np.median(top_part[:, 0])) if len(top_part) else float(np.median(q[:, 0]))
    mirrored = q.copy()
    mirrored[:, 0] = 2 * mirror_x - mirrored[:, 0]
    pts = np.vstack([q, mirrored])
    if resting:
        shadow = pts.copy()
        shadow[:, 2] = 0.0
        pts = np.vstack([pts, shadow])
    box = fit_box(pts, resting)
    return ShapeFit("hull", box.center, box.extent, box.yaw, float("nan"), hull_points=pts)


def fit_visible(q: np.ndarray) -> ShapeFit:
    """No completion: the upright box of the observed points alone (the baseline)."""
    box = fit_box(q, resting=False)
    return ShapeFit("visible", box.center, box.extent, box.yaw, float("nan"), hull_points=q)


def fit_best(q: np.ndarray, resting: bool, hull_above_m: float) -> ShapeFit:
    """The primitive with the lowest score; the hull fallback when even the best one leaves
    a trimmed RMS above ``hull_above_m``."""
    fits = [fit_box(q, resting), fit_cylinder(q, resting), fit_sphere(q)]
    fits = [f for f in fits if np.all(np.isfinite(f.extent)) and np.isfinite(f.rms)]
    # A sphere far larger than the points' spread is a plane in disguise, not a ball.
    spread = float(np.ptp(q, axis=0).max()) if len(q) else 0.0
    fits = [f for f in fits if f.shape != "ball" or f.extent[0] <= 2.0 * spread + 0.01]
    if not fits:
        return fit_hull(q, resting)
    penalty = _shape_cues(q)
    best = min(fits, key=lambda f: f.rms + _PRIOR_M[f.shape] + penalty[f.shape])
    if best.rms > hull_above_m:
        hull = fit_hull(q, resting)
        hull.rms = best.rms
        return hull
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
    kind = {"cube": "box"}.get(fit.shape, fit.shape)
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
