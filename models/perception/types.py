"""What every perception backend takes and returns.

Frames and conventions
    All geometry is in the camera *optical* frame (x right, y down, z forward, metres; REP-103
    ``*_optical_frame``), the frame depth is back-projected into and the one the policy's
    ``target_point`` uses. A pose follows the SAM 3D Objects layout convention: a rotation
    quaternion (w, x, y, z), a translation and a per-axis scale that together map the object's
    canonical frame (the unit cube [-0.5, 0.5]^3 holds the object) to the camera frame:
    ``p_camera = R @ (scale * p_object) + translation``.

Bad input never raises out of :func:`~embodied_stack.models.perception.reconstruct`: it returns
an empty :class:`Reconstruction` whose ``reason`` says what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Smallest image side a backend works on (px): below this there is no object to segment.
MIN_IMAGE_SIDE = 8
#: Most triangles an object's mesh is drawn with (:meth:`ObjectModel.display_mesh`).
DISPLAY_TRIANGLES = 1000

PROMPT_KINDS = ("none", "pixel", "point", "box", "mask")


class InputRejected(ValueError):
    """Input a backend cannot work on; str(exc) is the reason reported in the empty result."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics: ``K`` 3x3 in pixel-index coordinates (as ROS CameraInfo), and the
    image size the intrinsics belong to."""

    K: np.ndarray
    width: int
    height: int

    def check(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3):
            raise InputRejected(f"camera K has shape {K.shape}, expected (3, 3)")
        if not np.all(np.isfinite(K)):
            raise InputRejected("camera K has NaN/inf entries")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InputRejected(f"camera focal length fx={K[0, 0]}, fy={K[1, 1]} must be > 0")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise InputRejected(f"camera size {self.width}x{self.height} is empty")

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) camera-frame points -> (N, 2) pixel coordinates (u, v); z must be > 0."""
        K = np.asarray(self.K, dtype=np.float64)
        z = points[:, 2]
        return np.stack([K[0, 0] * points[:, 0] / z + K[0, 2],
                         K[1, 1] * points[:, 1] / z + K[1, 2]], axis=1)


@dataclass(frozen=True)
class Prompt:
    """Which object(s) to reconstruct.

    kind ``none``: every object on the support surface. ``pixel``: (u, v) in pixels.
    ``point``: (x, y, z) metres in the camera optical frame (as ``target_point`` publishes it).
    ``box``: (u_min, v_min, u_max, v_max) pixels. ``mask``: HxW bool array.
    """

    kind: str = "none"
    value: object = None

    @staticmethod
    def none() -> "Prompt":
        return Prompt("none", None)

    @staticmethod
    def pixel(u: float, v: float) -> "Prompt":
        return Prompt("pixel", (float(u), float(v)))

    @staticmethod
    def point(x: float, y: float, z: float) -> "Prompt":
        return Prompt("point", (float(x), float(y), float(z)))

    @staticmethod
    def box(u_min: float, v_min: float, u_max: float, v_max: float) -> "Prompt":
        return Prompt("box", (float(u_min), float(v_min), float(u_max), float(v_max)))

    @staticmethod
    def mask(mask: np.ndarray) -> "Prompt":
        return Prompt("mask", np.asarray(mask))


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (w, x, y, z), w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    t = np.trace(R)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    quat = np.asarray(q)
    quat /= np.linalg.norm(quat)
    return quat if quat[0] >= 0 else -quat


def matrix_from_quaternion(q) -> np.ndarray:
    """Quaternion (w, x, y, z) -> 3x3 rotation (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


class OrientedBox:
    """Pose and box accessors shared by objects and their parts (``box_center``,
    ``box_extent``, ``box_rotation`` in the camera optical frame)."""

    box_center: np.ndarray
    box_extent: np.ndarray
    box_rotation: np.ndarray

    @property
    def rotation(self) -> np.ndarray:
        return quaternion_from_matrix(self.box_rotation)

    @property
    def translation(self) -> np.ndarray:
        return np.asarray(self.box_center, dtype=np.float64)

    @property
    def scale(self) -> np.ndarray:
        return np.asarray(self.box_extent, dtype=np.float64)

    def box_corners(self) -> np.ndarray:
        """(8, 3) corners of the oriented box; corner i has sign bits (x: 1, y: 2, z: 4)."""
        signs = np.array([[(i & 1) * 2 - 1, (i >> 1 & 1) * 2 - 1, (i >> 2 & 1) * 2 - 1]
                          for i in range(8)], dtype=np.float64)
        return self.box_center + (signs * (self.box_extent / 2)) @ self.box_rotation.T


@dataclass
class ObjectPart(OrientedBox):
    """A named piece of an object that a grasp may need apart from the whole (a mug's
    handle): its oriented box and pose, as an object's (camera optical frame)."""

    name: str
    box_center: np.ndarray
    box_extent: np.ndarray
    box_rotation: np.ndarray


@dataclass
class ObjectModel(OrientedBox):
    """One reconstructed object, everything in the camera optical frame (metres).

    ``vertices``/``triangles``/``vertex_colors`` (RGB in [0, 1]): the whole object's surface,
    the unseen back included. ``vertex_observed`` (bool per vertex) says which vertices the
    camera saw (their colour comes from the image) and which were completed (colour from the
    object's observed colour). ``points``/``point_colors``: the observed points the shape was
    fitted to. ``box_center``/``box_extent``/``box_rotation``: the oriented bounding box
    (columns of the rotation are the box axes). ``rotation`` (w, x, y, z), ``translation``,
    ``scale``: the pose, object -> camera (see the module docstring). ``shape``: the family
    (a primitive: ``cube``, ``box``, ``ball``, ``cylinder``; from the voxel completion:
    ``ellipsoid``, ``cone``, ``torus``, ``mug``, ``cup``, ``bottle``, ``plate``, ``round``,
    ``l-block``, ``curved``, ``object``; ``visible`` when completion is off; ``mesh`` from a
    learned backend). ``color``: colour name of the observed surface. ``label``: "<colour>
    <shape>". ``confidence`` in [0, 1]. ``mask``: the image pixels that were segmented for
    this object (HxW bool), when known. ``parts``: named pieces with their own boxes (a mug's
    ``handle``).
    """

    vertices: np.ndarray
    triangles: np.ndarray
    vertex_colors: np.ndarray
    vertex_observed: np.ndarray
    points: np.ndarray
    point_colors: np.ndarray
    box_center: np.ndarray
    box_extent: np.ndarray
    box_rotation: np.ndarray
    shape: str
    color: str
    confidence: float
    mask: np.ndarray | None = None
    fit_rms_m: float = float("nan")
    touches_border: bool = False
    parts: list[ObjectPart] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"

    def display_mesh(self, max_triangles: int = DISPLAY_TRIANGLES):
        """(vertices, triangles, vertex colours) with at most `max_triangles` triangles, for
        drawing (the markers): vertex clustering (the vertices in one cell of a grid merge
        into their mean, colours averaged, collapsed triangles dropped) on a cell sized from
        the triangle count and grown until the mesh fits. The mesh itself when it fits."""
        verts = np.asarray(self.vertices, dtype=np.float64)
        tris = np.asarray(self.triangles)
        if len(tris) <= max_triangles:
            return verts, tris, np.asarray(self.vertex_colors)
        a, b = verts[tris[:, 0]], verts[tris[:, 1]]
        # Triangles scale with the inverse square of the cell: start near the right cell.
        cell = float(np.mean(np.linalg.norm(b - a, axis=1))) * np.sqrt(len(tris) / max_triangles)
        while True:
            keys = np.floor((verts - verts.min(axis=0)) / cell).astype(np.int64)
            _, inverse = np.unique(keys, axis=0, return_inverse=True)
            inverse = inverse.ravel()
            counts = np.bincount(inverse).astype(np.float64)[:, None]
            merged = np.column_stack([np.bincount(inverse, weights=verts[:, d]) for d in range(3)]) / counts
            colors = np.column_stack([np.bincount(inverse, weights=np.asarray(self.vertex_colors)[:, d])
                                      for d in range(3)]) / counts
            t = inverse[tris]
            t = t[(t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])]
            if len(t) <= max_triangles or len(merged) <= 4:
                return merged, t, colors
            cell *= 1.25

    @property
    def observed_fraction(self) -> float:
        """Share of the surface's vertices the camera saw (the rest were completed)."""
        return float(np.mean(self.vertex_observed)) if len(self.vertex_observed) else 0.0


class Reconstruction(list):
    """The objects found (a list of :class:`ObjectModel`) and, when there are none, why.

    ``reason`` is empty when the input was fine (an empty list then means no object was
    found); otherwise it names what was wrong with the input. ``timings_ms`` breaks down the
    time spent per stage.
    """

    def __init__(self, objects=(), reason: str = "", timings_ms: dict | None = None):
        super().__init__(objects)
        self.reason = reason
        self.timings_ms = dict(timings_ms or {})

    def __repr__(self) -> str:
        return f"Reconstruction({len(self)} objects, reason={self.reason!r})"
