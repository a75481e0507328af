"""Accuracy measures for reconstructed objects against ground truth (used by the bench and the
tests; the backends never read ground truth).

- :func:`box_iou`: volume IoU of two oriented boxes, counted on a regular grid over the
  union of their bounding boxes (48^3 cells: about 1% resolution, deterministic).
- :func:`chamfer`: symmetric Chamfer distance, the mean of the two mean nearest-neighbour
  distances between surface samples.
- :func:`sample_primitive_surface` / :func:`sample_mesh_surface`: area-uniform surface
  samples of a true primitive (cube, ball, cylinder) and of a triangle mesh.
- :func:`mesh_inside`: which points a closed triangle mesh holds (ray parity, Open3D).
- :class:`VoxelGrid` / :func:`union_grid`: the 5 mm grid over the union of two boxes that
  :func:`volume_iou` and :func:`empty_share` count on: the volume IoU compares the solids
  themselves (holes and concavities count), not only their boxes.
"""

from __future__ import annotations

import numpy as np


def _inside(points, center, extent, R, eps=1e-9):
    local = (points - center) @ R
    return np.all(np.abs(local) <= extent / 2 + eps, axis=1)


def box_iou(c1, e1, R1, c2, e2, R2, cells: int = 48) -> float:
    """IoU of two oriented boxes (centre, full extents, 3x3 rotation whose columns are the
    box axes)."""
    box_corners = []
    for c, e, R in ((c1, e1, R1), (c2, e2, R2)):
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        box_corners.append(c + (signs * (np.asarray(e) / 2)) @ np.asarray(R).T)
    corners = np.vstack(box_corners)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    axes = [lo[i] + (np.arange(cells) + 0.5) * (hi[i] - lo[i]) / cells for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    a = _inside(grid, np.asarray(c1), np.asarray(e1), np.asarray(R1))
    b = _inside(grid, np.asarray(c2), np.asarray(e2), np.asarray(R2))
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def sample_primitive_surface(kind: str, size, center, R, n: int, rng) -> np.ndarray:
    """n area-uniform points on the surface of a cube/box, ball or (z-axis) cylinder of full
    extents ``size`` posed by (center, R)."""
    size = np.asarray(size, dtype=np.float64)
    if kind == "ball":
        v = rng.normal(size=(n, 3))
        local = 0.5 * size[0] * v / np.linalg.norm(v, axis=1, keepdims=True)
    elif kind == "cylinder":
        r, h = size[0] / 2, size[2]
        side, cap = 2 * np.pi * r * h, np.pi * r * r
        k = rng.choice(3, size=n, p=np.array([side, cap, cap]) / (side + 2 * cap))
        phi = rng.uniform(0, 2 * np.pi, n)
        rho = np.where(k == 0, r, r * np.sqrt(rng.uniform(0, 1, n)))
        z = np.where(k == 0, rng.uniform(-h / 2, h / 2, n), np.where(k == 1, -h / 2, h / 2))
        local = np.column_stack([rho * np.cos(phi), rho * np.sin(phi), z])
    else:  # cube / box
        areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])
        axis = rng.choice(3, size=n, p=areas / areas.sum())
        local = (rng.uniform(-0.5, 0.5, (n, 3))) * size
        sign = rng.choice([-0.5, 0.5], size=n)
        local[np.arange(n), axis] = sign * size[axis]
    return np.asarray(center) + local @ np.asarray(R).T


def sample_mesh_surface(vertices, triangles, n: int, rng) -> np.ndarray:
    """n area-uniform points on a triangle mesh (the vertices when it has no triangles)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles)
    if len(triangles) == 0:
        return vertices
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if area.sum() <= 0:
        return vertices
    idx = rng.choice(len(triangles), size=n, p=area / area.sum())
    u, v = rng.uniform(size=(2, n))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return a[idx] + u[:, None] * (b[idx] - a[idx]) + v[:, None] * (c[idx] - a[idx])


def chamfer(p: np.ndarray, q: np.ndarray) -> float:
    """Symmetric Chamfer distance: (mean_p min_q |p-q| + mean_q min_p |q-p|) / 2."""
    import open3d as o3d

    cp = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(p, np.float64)))
    cq = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(q, np.float64)))
    d_pq = np.asarray(cp.compute_point_cloud_distance(cq))
    d_qp = np.asarray(cq.compute_point_cloud_distance(cp))
    return float(0.5 * (d_pq.mean() + d_qp.mean()))


def mesh_inside(vertices, triangles, points) -> np.ndarray:
    """Whether each (N, 3) point lies inside a closed triangle mesh: the parity of a ray's
    crossings, the majority of three rays (a ray through an edge miscounts)."""
    import open3d as o3d

    points = np.asarray(points, dtype=np.float32)
    if len(np.asarray(triangles)) == 0 or len(points) == 0:
        return np.zeros(len(points), dtype=bool)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor.from_numpy(np.ascontiguousarray(triangles, dtype=np.uint32)))
    occ = scene.compute_occupancy(o3d.core.Tensor.from_numpy(np.ascontiguousarray(points)), nsamples=3)
    return occ.numpy() > 0.5


class VoxelGrid:
    """Voxel centres of a regular grid (``step`` apart) covering [lo, hi]."""

    def __init__(self, lo, hi, step: float):
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        self.step = step
        self.shape = tuple(np.maximum(np.ceil((hi - lo) / step - 1e-9).astype(int), 1))
        axes = [lo[d] + step * (np.arange(self.shape[d]) + 0.5) for d in range(3)]
        self.points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def union_grid(corners_a: np.ndarray, corners_b: np.ndarray, step: float = 0.005) -> VoxelGrid:
    """The grid over the union of two boxes (their corners, (8, 3) each)."""
    corners = np.vstack([corners_a, corners_b])
    return VoxelGrid(corners.min(axis=0), corners.max(axis=0), step)


def volume_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """IoU of two occupancies on the same voxels (bool arrays)."""
    union = np.count_nonzero(pred | true)
    return float(np.count_nonzero(pred & true) / union) if union else 0.0


def empty_share(pred: np.ndarray, region: np.ndarray) -> float:
    """Share of a region's voxels the prediction leaves empty (NaN for an empty region)."""
    n = np.count_nonzero(region)
    return float(np.count_nonzero(region & ~pred) / n) if n else float("nan")


def covered_share(pred: np.ndarray, part: np.ndarray, shape) -> float:
    """Share of a part's voxels with a predicted voxel within one voxel (26-neighbourhood):
    whether a thin part (a handle) is there, at the grid's resolution."""
    from embodied_stack.models.perception.volume import dilate

    n = np.count_nonzero(part)
    if not n:
        return float("nan")
    near = dilate(pred.reshape(shape)).ravel()
    return float(np.count_nonzero(part & near) / n)
