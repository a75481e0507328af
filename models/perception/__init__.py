"""3D object perception: RGB-D (+ an optional prompt) -> whole objects (mesh, colours, box,
pose). No rclpy here: the perception node in ``nodes/`` wires this to ROS.

    from embodied_stack.models.perception import reconstruct, CameraIntrinsics, Prompt
    objects = reconstruct(rgb, depth, CameraIntrinsics(K, width, height), Prompt.pixel(160, 120))

Backends: ``geometric`` (default; Open3D + OpenCV + NumPy, :mod:`.geometric`) and ``sam3d``
(SAM 3D Objects in its own process, :mod:`.sam3d`).
"""

from __future__ import annotations

from embodied_stack.models.perception.types import (  # noqa: F401
    CameraIntrinsics,
    InputRejected,
    ObjectModel,
    ObjectPart,
    Prompt,
    Reconstruction,
    matrix_from_quaternion,
    quaternion_from_matrix,
)

BACKENDS = ("geometric", "sam3d")

_default = None


def reconstruct(rgb, depth, camera_info: CameraIntrinsics, prompt: Prompt | None = None
                ) -> Reconstruction:
    """Reconstruct the prompted object (or every object, prompt None) with the default
    geometric backend. Returns a :class:`Reconstruction` (a list of :class:`ObjectModel`);
    bad input gives an empty one whose ``reason`` says why."""
    global _default
    if _default is None:
        from embodied_stack.models.perception.geometric import GeometricBackend

        _default = GeometricBackend()
    return _default(rgb, depth, camera_info, prompt)


def make_backend(name: str, **kwargs):
    """A backend by name: ``geometric`` (kwargs: GeometricConfig fields) or ``sam3d``
    (kwargs: Sam3dConfig fields). Raises ValueError for an unknown name, RuntimeError when
    the sam3d backend cannot run here."""
    if name == "geometric":
        from embodied_stack.models.perception.geometric import GeometricBackend, GeometricConfig

        return GeometricBackend(GeometricConfig(**kwargs))
    if name == "sam3d":
        from embodied_stack.models.perception.sam3d import Sam3dBackend, Sam3dConfig

        return Sam3dBackend(Sam3dConfig(**kwargs))
    raise ValueError(f"perception backend {name!r} not in {BACKENDS}")
