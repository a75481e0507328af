"""What every MuJoCo world shares: headless GL selection, one-pass RGB-D rendering,
camera intrinsics/extrinsics, and validation of incoming actions.

No rclpy here (docs/architecture.md, layers): the worlds are plain Gymnasium environments.
"""

from __future__ import annotations

import os
import string
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# --- headless OpenGL -------------------------------------------------------------------
# MuJoCo picks its GL backend when `mujoco` is first imported, from MUJOCO_GL. A failed EGL
# context cannot be retried in the same process (PyOpenGL has fixed its platform by then), so
# when the user has not chosen, a short subprocess probes EGL once and we fall back to OSMesa.


def select_gl_backend() -> str:
    """Return the MuJoCo GL backend this process will use, choosing one if unset."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    probe = (
        "import mujoco; from mujoco import gl_context; "
        "ctx = gl_context.GLContext(8, 8); ctx.make_current(); ctx.free()"
    )
    for backend in ("egl", "osmesa"):
        env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
        try:
            ok = subprocess.run(
                [sys.executable, "-c", probe], env=env, capture_output=True, timeout=60
            ).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    raise RuntimeError(
        "No headless OpenGL backend works for MuJoCo: tried EGL and OSMesa. Install the "
        "Debian packages libegl1 libgl1 (EGL) or libosmesa6 (OSMesa), or set MUJOCO_GL."
    )


select_gl_backend()

import mujoco  # noqa: E402  (must follow the backend choice above)

# --- observation pieces shared by the worlds --------------------------------------------

#: Characters an instruction may contain (gymnasium's Text default is alphanumerics only).
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"
#: Longest instruction, in characters.
INSTRUCTION_MAX_LEN = 96
#: Every world's proprio/ego vector has this length (unused entries are zero), so one policy
#: can serve both worlds.
PROPRIO_DIM = 8


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics and pose of a rendered camera.

    `K` uses pixel-index coordinates (the centre of the top-left pixel is (0, 0)), as ROS
    CameraInfo does. `T_world_camera` is the pose of the *optical* frame (x right, y down,
    z forward; REP-103 ``*_optical_frame``) in the world frame, a 4x4 homogeneous matrix.
    """

    width: int
    height: int
    K: np.ndarray
    T_world_camera: np.ndarray

    def as_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "K": self.K.copy(),
            "T_world_camera": self.T_world_camera.copy(),
        }


#: Per thread: the renderer whose GL context is current (the fast path binds only on change;
#: creating or freeing any context resets it).
_bound = threading.local()

# MuJoCo cameras look along -z with +y up; the optical frame looks along +z with +y down.
_MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


#: The fields of a free camera (MuJoCo's mjvCamera, as Gymnasium's ``default_camera_config``
#: names them): the point it looks at (m), its distance from it (m), azimuth and elevation (deg).
FREE_CAMERA_FIELDS = ("lookat", "distance", "azimuth", "elevation")


class RGBDRenderer:
    """Renders one camera to RGB (uint8), depth (float32 metres) and, on request, a
    per-pixel geom id, with multisampling and shadows off (they cost ~15 ms a
    frame; without them a 64x64 frame is ~0.3 ms). RGB and depth come from one render pass.

    ``camera``: a camera's name in the model, or a free camera for a model that names none
    (a dict of FREE_CAMERA_FIELDS, e.g. ``{"lookat": [0, 0, 0], "distance": 1.2,
    "azimuth": 90, "elevation": -45}``; its field of view is the model's ``visual/global
    fovy``), so an adapter of any MuJoCo environment renders this way, with depth in metres.
    """

    #: A GL context can be current in one thread only. False (fast): it stays bound to the
    #: thread that renders, so a renderer must be used from one thread. True: it is bound
    #: only around each render and released after (~0.1 ms a frame more), so any thread may
    #: render, as when an rclpy MultiThreadedExecutor steps a world from its pool threads.
    thread_safe: bool = False

    def __init__(self, model: mujoco.MjModel, camera: str | Mapping, width: int, height: int):
        if width < 8 or height < 8 or width > 4096 or height > 4096:
            raise ValueError(f"image size {width}x{height} out of range [8, 4096] per side")
        self.model = model
        self.width = int(width)
        self.height = int(height)
        free = _free_camera(camera) if isinstance(camera, Mapping) else None
        self.camera_id = -1 if free is not None else mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if free is None and self.camera_id < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ValueError(f"camera {camera!r} not in the model (its cameras: {names}; or give a "
                             f"free camera: a dict of {FREE_CAMERA_FIELDS})")
        # The offscreen buffer must hold the requested image.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        model.vis.quality.offsamples = 0
        self._gl = mujoco.GLContext(self.width, self.height)
        _bound.renderer = None  # creating a context released whatever this thread had bound
        self._scene = mujoco.MjvScene(model, maxgeom=1000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        with self._gl.as_current():
            self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
            # Reversed depth (1 at znear, 0 far) keeps float precision at distance.
            self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._vopt = mujoco.MjvOption()
        self._pert = mujoco.MjvPerturb()
        self._cam = mujoco.MjvCamera()
        if free is None:
            self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
            self._cam.fixedcamid = self.camera_id
        else:
            self._cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            self._cam.lookat[:] = free["lookat"]
            self._cam.distance, self._cam.azimuth, self._cam.elevation = (
                free["distance"], free["azimuth"], free["elevation"])
        self._viewport = mujoco.MjrRect(0, 0, self.width, self.height)
        self._rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._depth = np.empty((self.height, self.width), dtype=np.float32)
        extent = model.stat.extent
        self._near = float(model.vis.map.znear * extent)
        self._K: np.ndarray | None = None  # (camera_model)
        self._far = float(model.vis.map.zfar * extent)

    def render(self, data: mujoco.MjData, segmentation: bool = False):
        """Return (rgb HxWx3 uint8, depth HxW float32 metres, geom_ids HxW int32 or None).

        Depth is the distance along the optical axis; pixels that see nothing within the far
        clipping plane read 0.0 ("no return", as RGB-D drivers report it).
        geom_ids holds the MuJoCo geom id seen at each pixel (-1 for background).
        """
        if self.thread_safe:
            with self._gl.as_current():
                return self._render(data, segmentation)
        if getattr(_bound, "renderer", None) is not self:
            self._gl.make_current()
            _bound.renderer = self
        return self._render(data, segmentation)

    def _render(self, data: mujoco.MjData, segmentation: bool):
        mujoco.mjv_updateScene(
            self.model, data, self._vopt, self._pert, self._cam,
            mujoco.mjtCatBit.mjCAT_ALL, self._scene,
        )
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 0
        mujoco.mjr_render(self._viewport, self._scene, self._ctx)
        mujoco.mjr_readPixels(self._rgb, self._depth, self._viewport, self._ctx)
        rgb = np.flipud(self._rgb).copy()
        depth = self._linear_depth(np.flipud(self._depth))
        geom_ids = None
        if segmentation:
            self._scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
            self._scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
            seg = np.empty((self.height, self.width, 3), dtype=np.uint8)
            mujoco.mjr_render(self._viewport, self._scene, self._ctx)
            mujoco.mjr_readPixels(seg, None, self._viewport, self._ctx)
            self._scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 0
            self._scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 0
            seg = np.flipud(seg).astype(np.int32)
            # IDCOLOR encodes (segid + 1) in the 24-bit colour; 0 is background.
            seg_id = seg[..., 0] + (seg[..., 1] << 8) + (seg[..., 2] << 16) - 1
            geom_ids = np.full(seg_id.shape, -1, dtype=np.int32)
            hit = seg_id >= 0
            # Scene geoms carry their object id; only geoms (not decor) map to ids.
            objid = np.array([g.objid for g in self._scene.geoms[: self._scene.ngeom]]
                             + [-1], dtype=np.int32)
            objtype = np.array([g.objtype for g in self._scene.geoms[: self._scene.ngeom]]
                               + [-1], dtype=np.int32)
            idx = np.clip(seg_id, 0, self._scene.ngeom)
            is_geom = objtype[idx] == int(mujoco.mjtObj.mjOBJ_GEOM)
            geom_ids[hit & is_geom] = objid[idx][hit & is_geom]
        return rgb, depth, geom_ids

    def _linear_depth(self, zbuf: np.ndarray) -> np.ndarray:
        # Reversed depth map (mjDEPTH_ZEROFAR): window depth 1 at znear, 0 at zfar. Undo
        # the perspective projection in float64, as mujoco.Renderer does.
        near, far = np.float32(self._near), np.float32(self._far)
        c = -(far + near) / (far - near)
        d = -(np.float32(2) * far * near) / (far - near)
        c = np.float32(-0.5) * c - np.float32(0.5)
        d = np.float32(-0.5) * d
        z = d / (zbuf.astype(np.float64) + c)
        z = z.astype(np.float32)
        z[zbuf <= 0.0] = 0.0  # nothing hit before the far plane: no return
        return z

    def camera_model(self, data: mujoco.MjData) -> CameraModel:
        K = self._K
        if K is None:  # fixed per renderer (fovy, size): see fovy_changed
            fovy = np.deg2rad(self.model.cam_fovy[self.camera_id] if self.camera_id >= 0
                              else self.model.vis.global_.fovy)
            fy = 0.5 * self.height / np.tan(0.5 * fovy)
            fx = fy  # square pixels
            K = self._K = np.array(
                [[fx, 0.0, (self.width - 1) / 2.0], [0.0, fy, (self.height - 1) / 2.0],
                 [0.0, 0.0, 1.0]]
            )
        T = np.eye(4)
        if self.camera_id >= 0:
            T[:3, :3] = data.cam_xmat[self.camera_id].reshape(3, 3) @ _MJ_TO_OPTICAL
            T[:3, 3] = data.cam_xpos[self.camera_id]
        else:  # a free camera: its pose as MuJoCo places it (the scene's GL camera)
            mujoco.mjv_updateCamera(self.model, data, self._cam, self._scene)
            gl = self._scene.camera[0]
            forward, up = np.array(gl.forward, np.float64), np.array(gl.up, np.float64)
            T[:3, :3] = np.column_stack([np.cross(forward, up), -up, forward])  # x right, y down
            T[:3, 3] = gl.pos
        return CameraModel(self.width, self.height, K, T)

    def fovy_changed(self) -> None:
        """The model's field of view was rewritten (a world's shift): compute K anew."""
        self._K = None

    def close(self) -> None:
        if getattr(self, "_ctx", None) is not None:
            with self._gl.as_current():
                self._ctx.free()
            self._ctx = None
        if getattr(self, "_gl", None) is not None:
            self._gl.free()
            self._gl = None
        _bound.renderer = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: GL may already be gone
            pass


def _free_camera(camera: Mapping) -> dict:
    """A free camera's fields, checked (RGBDRenderer)."""
    unknown, missing = set(camera) - set(FREE_CAMERA_FIELDS), set(FREE_CAMERA_FIELDS) - set(camera)
    if unknown or missing:
        raise ValueError(f"free camera {dict(camera)!r}: needs exactly {FREE_CAMERA_FIELDS} "
                         f"(unknown {sorted(unknown)}, missing {sorted(missing)})")
    lookat = np.asarray(camera["lookat"], np.float64).reshape(-1)
    values = [float(camera[k]) for k in ("distance", "azimuth", "elevation")]
    if lookat.shape != (3,) or not np.all(np.isfinite(lookat)) or not np.all(np.isfinite(values)) \
            or values[0] <= 0:
        raise ValueError(f"free camera {dict(camera)!r}: lookat must be 3 finite values and "
                         "distance > 0 (azimuth, elevation finite degrees)")
    return {"lookat": lookat, "distance": values[0], "azimuth": values[1], "elevation": values[2]}


def check_action(action, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, bool]:
    """Validate an incoming action at the world's boundary.

    Wrong shape, non-numeric, NaN or inf -> ValueError naming the problem (the simulator
    state is untouched). Finite values outside [low, high] are clipped; the second return
    value says whether clipping happened (reported as ``info["action_clipped"]``).
    """
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"action must be numeric, got {type(action).__name__}: {exc}") from None
    if a.shape != low.shape:
        raise ValueError(f"action shape {a.shape} != expected {low.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action has NaN or inf entries: {a.tolist()}")
    clipped = np.clip(a, low, high)
    return clipped.astype(np.float32), bool(np.any(clipped != a))


def mujoco_state(model, data) -> np.ndarray:
    """MuJoCo's whole integration state (time, qpos, qvel, act, warm-start accelerations,
    mocap, user data, plugin state): what a snapshot needs to replay a world exactly. Saving
    qpos, qvel and act alone is not enough once anything touches: the constraint solver's
    warm start differs, and a replay drifts (seen: 5e-4 rad in 123 steps of Gymnasium's
    Pusher)."""
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state, spec)
    return state


def set_mujoco_state(model, data, state: np.ndarray) -> None:
    """Put back a :func:`mujoco_state` and recompute what follows from it (mj_forward)."""
    import mujoco

    mujoco.mj_setState(model, data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(model, data)
