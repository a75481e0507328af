"""Procedural objects for the Tabletop world: shapes the perception backend was never fitted to,
each with its exact solid (a signed distance function), its mesh and its named regions.

Families (:data:`FAMILIES`), every size drawn per object from its own generator:

- ``mug``: a solid of revolution with an open cavity (wall 6-9 mm) and a C-shaped handle (a
  half torus in the plane through the axis); regions: part ``handle``, cavity ``handle_gap``
  (inside the handle's loop) and ``cavity``.
- ``l_block``: an L-shaped prism lying flat, arms of unequal length; cavity ``inner_corner``.
- ``torus``: lying flat; cavity ``hole``.
- ``ellipsoid``: three different semi-axes, the shortest vertical (its stable pose).
- ``cone``: standing on its base.
- ``banana``: a tube swept along a horizontal circular arc, thinning to rounded tips.
- ``bottle``: body, rounded shoulder, neck; cavity ``neck_side`` (the space beside the neck
  that a convex hull fills).
- ``plate``: a plate with a foot, a recessed well and a raised rim; cavity ``well``.

Frames: an object's own frame has z up and its origin at the centre of its tight box, whose
full extents are :attr:`ProceduralObject.extent`; the object rests on z = -extent[2] / 2.
All lengths in metres. Signed distances are negative inside; for the ellipsoid, the banana
and the swept parts they are bounds rather than exact distances, but their sign (what is
inside) is exact, which is what the meshes and the occupancy use.

The meshes are the level sets of the signed distance functions (surface nets on a
``MESH_STEP`` grid), so mesh, occupancy and regions describe the same solid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from embodied_stack.models.perception.volume import grid_points, surface_nets

FAMILIES = ("mug", "l_block", "torus", "ellipsoid", "cone", "banana", "bottle", "plate")
#: Grid step (m) of the true meshes: fine next to the 5 mm volume metric and the 2-3 mm a
#: 320x240 pixel covers on the table.
MESH_STEP = 0.002

Sdf = Callable[[np.ndarray], np.ndarray]


@dataclass
class ProceduralObject:
    """One object: ``family``, its drawn ``params``, the signed distance ``sdf`` of the whole
    solid (object frame), its ``extent`` (tight box, full extents), the mesh (``vertices``,
    ``triangles``, object frame), ``parts`` (name -> signed distance of a named piece, e.g.
    the mug's handle) and ``cavities`` (name -> predicate of a named empty region that a
    convex hull would fill, e.g. the torus's hole)."""

    family: str
    params: dict
    sdf: Sdf
    extent: np.ndarray
    vertices: np.ndarray
    triangles: np.ndarray
    parts: dict[str, Sdf] = field(default_factory=dict)
    cavities: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        """Whether each (N, 3) object-frame point is inside the solid."""
        return self.sdf(np.asarray(points, dtype=np.float64)) < 0.0

    @property
    def footprint_radius(self) -> float:
        """Radius (m) of the smallest circle about the box centre holding the footprint."""
        return float(np.linalg.norm(self.vertices[:, :2], axis=1).max())


# --- signed distance building blocks ---------------------------------------------------------

def polygon_sdf(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance from (N, 2) points to a closed polygon (M, 2), negative inside."""
    p = np.asarray(p, dtype=np.float64)
    a = poly
    b = np.roll(poly, -1, axis=0)
    best = np.full(len(p), np.inf)
    inside = np.zeros(len(p), dtype=bool)
    for (ax, ay), (bx, by) in zip(a, b):
        ex, ey = bx - ax, by - ay
        wx, wy = p[:, 0] - ax, p[:, 1] - ay
        t = np.clip((wx * ex + wy * ey) / max(ex * ex + ey * ey, 1e-18), 0.0, 1.0)
        dx, dy = wx - t * ex, wy - t * ey
        best = np.minimum(best, dx * dx + dy * dy)
        # Even-odd rule: a horizontal ray to +x crosses this edge.
        crosses = (ay > p[:, 1]) != (by > p[:, 1])
        x_at = ax + (p[:, 1] - ay) * ex / np.where(ey == 0, 1e-18, ey)
        inside ^= crosses & (p[:, 0] < x_at)
    return np.where(inside, -1.0, 1.0) * np.sqrt(best)


def revolve(profile: np.ndarray) -> Sdf:
    """Solid of revolution about z of a polygon in the (r, z) half-plane."""
    def sdf(p):
        rz = np.column_stack([np.hypot(p[:, 0], p[:, 1]), p[:, 2]])
        return polygon_sdf(rz, profile)
    return sdf


def extrude(poly: np.ndarray, height: float) -> Sdf:
    """Prism of a polygon in the xy plane, z in [0, height]."""
    def sdf(p):
        d2 = polygon_sdf(p[:, :2], poly)
        dz = np.abs(p[:, 2] - height / 2) - height / 2
        w = np.column_stack([d2, dz])
        return np.minimum(w.max(axis=1), 0.0) + np.linalg.norm(np.maximum(w, 0.0), axis=1)
    return sdf


def torus_sdf(R: float, r: float, center) -> Sdf:
    """Torus about the z axis through `center`."""
    c = np.asarray(center, dtype=np.float64)

    def sdf(p):
        q = p - c
        return np.hypot(np.hypot(q[:, 0], q[:, 1]) - R, q[:, 2]) - r
    return sdf


def ellipsoid_sdf(axes, center) -> Sdf:
    """Ellipsoid with semi-axes `axes` (the usual first-order bound, exact sign)."""
    k = np.asarray(axes, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)

    def sdf(p):
        q = p - c
        k0 = np.linalg.norm(q / k, axis=1)
        k1 = np.linalg.norm(q / (k * k), axis=1)
        return np.where(k1 > 0, k0 * (k0 - 1.0) / np.maximum(k1, 1e-12), -k.min())
    return sdf


def union(*sdfs: Sdf) -> Sdf:
    def sdf(p):
        return np.minimum.reduce([s(p) for s in sdfs])
    return sdf


def shifted(sdf: Sdf, offset) -> Sdf:
    """`sdf` moved by `offset` (the solid's point x ends up at x + offset)."""
    o = np.asarray(offset, dtype=np.float64)
    return lambda p: sdf(p - o)


# --- the families (each in a frame with the support at z = 0) --------------------------------

def _mug(rng):
    Ro = rng.uniform(0.035, 0.045)
    H = rng.uniform(0.08, 0.105)
    wall = rng.uniform(0.006, 0.009)
    floor = rng.uniform(0.008, 0.012)
    rh = rng.uniform(0.005, 0.007)  # handle tube radius
    Rh = rng.uniform(0.022, min(0.03, H / 2 - rh - 0.01))  # loop radius
    # The handle's lowest point stands 12 mm or more above the table, as on real mugs.
    zc = rng.uniform(max(Rh + rh + 0.012, 0.45 * H), max(Rh + rh + 0.012, min(H - Rh - rh - 0.004, 0.62 * H)))
    body = revolve(np.array([[0.0, 0.0], [Ro, 0.0], [Ro, H], [Ro - wall, H], [Ro - wall, floor],
                             [0.0, floor]]))
    inner = Ro - wall / 2  # the handle's ends sink into the wall

    def handle(p):
        q = p - np.array([Ro, 0.0, zc])
        ring = np.hypot(np.hypot(q[:, 0], q[:, 2]) - Rh, q[:, 1]) - rh
        return np.maximum(ring, inner - p[:, 0])

    def handle_gap(p):
        q = p - np.array([Ro, 0.0, zc])
        return (np.hypot(q[:, 0], q[:, 2]) < Rh - rh) & (np.abs(q[:, 1]) < rh) & (p[:, 0] > Ro)

    def cavity(p):
        return (np.hypot(p[:, 0], p[:, 1]) < Ro - wall) & (p[:, 2] > floor) & (p[:, 2] < H)

    params = dict(radius=Ro, height=H, wall=wall, floor=floor, handle_radius=Rh, handle_tube=rh,
                  handle_height=zc)
    bounds = ([-Ro, -Ro, 0.0], [Ro + Rh + rh, Ro, H])
    return params, union(body, handle), bounds, {"handle": handle}, \
        {"handle_gap": handle_gap, "cavity": cavity}


def _l_block(rng):
    a, b = rng.uniform(0.06, 0.10), rng.uniform(0.05, 0.09)
    t1, t2 = rng.uniform(0.025, 0.04), rng.uniform(0.025, 0.04)
    h = rng.uniform(0.025, 0.05)
    poly = np.array([[0.0, 0.0], [a, 0.0], [a, t1], [t2, t1], [t2, b], [0.0, b]])
    corner = np.array([[t2, t1], [a, t1], [t2, b]])

    def inner_corner(p):
        return (polygon_sdf(p[:, :2], corner) < 0) & (p[:, 2] > 0) & (p[:, 2] < h)

    return dict(arm_x=a, arm_y=b, width_x=t1, width_y=t2, height=h), extrude(poly, h), \
        ([0.0, 0.0, 0.0], [a, b, h]), {}, {"inner_corner": inner_corner}


def _torus(rng):
    R = rng.uniform(0.035, 0.05)
    r = rng.uniform(0.010, min(0.016, 0.45 * R))

    def hole(p):
        return (np.hypot(p[:, 0], p[:, 1]) < R - r) & (p[:, 2] > 0) & (p[:, 2] < 2 * r)

    return dict(major=R, minor=r), torus_sdf(R, r, (0.0, 0.0, r)), \
        ([-R - r, -R - r, 0.0], [R + r, R + r, 2 * r]), {}, {"hole": hole}


def _ellipsoid(rng):
    a = rng.uniform(0.03, 0.055)
    b = rng.uniform(0.022, 0.85 * a)
    c = rng.uniform(0.016, min(0.85 * b, 0.035))
    return dict(a=a, b=b, c=c), ellipsoid_sdf((a, b, c), (0.0, 0.0, c)), \
        ([-a, -b, 0.0], [a, b, 2 * c]), {}, {}


def _cone(rng):
    R = rng.uniform(0.028, 0.045)
    H = rng.uniform(0.06, 0.11)
    tip = rng.uniform(0.002, 0.006)  # a slightly blunt tip, as moulded cones have
    profile = np.array([[0.0, 0.0], [R, 0.0], [tip, H], [0.0, H]])
    return dict(radius=R, height=H, tip=tip), revolve(profile), ([-R, -R, 0.0], [R, R, H]), {}, {}


def _banana(rng):
    Rc = rng.uniform(0.07, 0.11)  # arc radius
    phi = np.deg2rad(rng.uniform(35.0, 55.0))  # half the arc's angle
    r0 = rng.uniform(0.014, 0.019)  # thickest radius
    tip = rng.uniform(0.3, 0.45)  # tip radius as a share of r0

    def radius(theta):
        s = np.clip(np.abs(theta) / phi, 0.0, 1.0)
        return r0 * (tip + (1.0 - tip) * np.sqrt(np.maximum(1.0 - s * s, 0.0)))

    def sdf(p):
        # The arc lies in the plane z = r0, centred on (-Rc, 0): its middle is at the origin.
        q = p - np.array([-Rc, 0.0, r0])
        theta = np.clip(np.arctan2(q[:, 1], q[:, 0]), -phi, phi)
        c = np.column_stack([Rc * np.cos(theta), Rc * np.sin(theta), np.zeros(len(q))])
        return np.linalg.norm(q - c, axis=1) - radius(theta)

    # Bounds: the arc's extent plus the tube (the tips are thinner: a slightly loose box,
    # made tight below from the mesh).
    x_lo = Rc * np.cos(phi) - Rc - r0
    y_hi = Rc * np.sin(phi) + r0
    return dict(arc_radius=Rc, half_angle=phi, radius=r0, tip=tip), sdf, \
        ([x_lo, -y_hi, 0.0], [r0, y_hi, 2 * r0]), {}, {}


def _bottle(rng):
    Rb = rng.uniform(0.028, 0.04)
    Hb = rng.uniform(0.09, 0.14)
    Hs = rng.uniform(0.02, 0.04)
    Rn = rng.uniform(0.011, 0.016)
    Hn = rng.uniform(0.025, 0.05)
    bevel = 0.003
    s = np.linspace(0.0, 1.0, 9)[1:-1]
    shoulder = np.column_stack([Rn + (Rb - Rn) * 0.5 * (1 + np.cos(np.pi * s)), Hb + Hs * s])
    top = Hb + Hs + Hn
    profile = np.vstack([[[0.0, 0.0], [Rb - bevel, 0.0], [Rb, bevel], [Rb, Hb]], shoulder,
                         [[Rn, Hb + Hs], [Rn, top], [0.0, top]]])
    sdf = revolve(profile)
    hull_profile = np.array([[0.0, 0.0], [Rb, 0.0], [Rb, Hb], [Rn, top], [0.0, top]])
    hull = revolve(hull_profile)

    def neck_side(p):
        return (hull(p) < 0) & (sdf(p) > 0) & (p[:, 2] > Hb)

    return dict(radius=Rb, body_height=Hb, shoulder=Hs, neck_radius=Rn, neck_height=Hn), sdf, \
        ([-Rb, -Rb, 0.0], [Rb, Rb, top]), {}, {"neck_side": neck_side}


def _plate(rng):
    R = rng.uniform(0.07, 0.10)
    foot = rng.uniform(0.55, 0.65) * R
    t = rng.uniform(0.008, 0.012)  # thickness at the centre
    hr = rng.uniform(0.018, 0.026)  # rim height
    rim_w = rng.uniform(0.010, 0.015)
    well = rng.uniform(0.55, 0.65) * R
    profile = np.array([[0.0, 0.0], [foot, 0.0], [R, 0.55 * hr], [R, hr], [R - rim_w, hr],
                        [well, t], [0.0, t]])

    def well_region(p):
        rho = np.hypot(p[:, 0], p[:, 1])
        return (rho < well) & (p[:, 2] > t) & (p[:, 2] < hr)

    return dict(radius=R, foot=foot, thickness=t, rim_height=hr, rim_width=rim_w, well=well), \
        revolve(profile), ([-R, -R, 0.0], [R, R, hr]), {}, {"well": well_region}


_BUILDERS = {"mug": _mug, "l_block": _l_block, "torus": _torus, "ellipsoid": _ellipsoid,
             "cone": _cone, "banana": _banana, "bottle": _bottle, "plate": _plate}


def make_object(family: str, rng: np.random.Generator) -> ProceduralObject:
    """Draw one object of `family` from `rng`; raises ValueError for an unknown family."""
    if family not in _BUILDERS:
        raise ValueError(f"family {family!r} not in {FAMILIES}")
    params, sdf, (lo, hi), parts, cavities = _BUILDERS[family](rng)
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    margin = 2 * MESH_STEP
    shape = np.ceil((hi - lo + 2 * margin) / MESH_STEP).astype(int) + 1
    origin = lo - margin
    values = sdf(grid_points(origin, MESH_STEP, shape).reshape(-1, 3)).reshape(shape)
    verts, tris = surface_nets(values, 0.0, origin, MESH_STEP)
    # The tight box comes from the mesh (bounds above may be loose, e.g. the banana's
    # thinner tips); the support stays at z = 0.
    v_lo, v_hi = verts.min(axis=0), verts.max(axis=0)
    v_lo[2] = 0.0
    center = (v_lo + v_hi) / 2
    verts = verts - center

    def move(f):
        return shifted(f, -center)

    return ProceduralObject(
        family=family, params=params, sdf=move(sdf), extent=v_hi - v_lo, vertices=verts,
        triangles=tris, parts={k: move(v) for k, v in parts.items()},
        cavities={k: move(v) for k, v in cavities.items()})


def mesh_asset_xml(name: str, obj: ProceduralObject) -> str:
    """A MuJoCo ``<mesh>`` asset holding the object's mesh (object frame). MuJoCo re-centres
    a mesh on its own centre of mass, and the geom's frame follows, so the body frame stays
    the object frame."""
    verts = " ".join(f"{v:.5f}" for v in obj.vertices.ravel())
    faces = " ".join(str(int(i)) for i in obj.triangles.ravel())
    return f'\n    <mesh name="{name}" vertex="{verts}" face="{faces}"/>'
