"""Randomisation of a world's look, sensors and timing: the shifts a real robot brings (a camera
off its calibration, another room's light, other paint, clutter, a noisy sensor, a late
command). Both worlds take one as the constructor option ``shift`` (a :class:`Shift`, a dict of
its fields, or a ``"key=value,..."`` string); it is off by default, and a world built without it
renders every frame byte for byte as before.

    env = gym.make("EmbodiedStack/Tabletop-v0", shift={"camera_offset_m": 0.05,
                                                       "camera_rotation_deg": 5})

Each magnitude is exact by default (what a benchmark asks: the camera moved by exactly 5 cm in
a random direction); with ``ranges=True`` each one is the upper end of a uniform draw per
episode (what training asks: anything from 0 to 5 cm). Everything is drawn per episode from
the shift's own generator, spawned from the episode's seed after the depth noise's, so the
scene (objects, road, instruction) of a seed is the same with any shift, and a shifted episode
is deterministic per seed.

MuJoCo is not recompiled: the camera's pose and field of view, the lights and the geom
colours are written into the compiled model at reset (:class:`Randomizer`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import cast

import numpy as np

#: Each field's allowed range (inclusive), quoted by the validation error.
LIMITS: dict[str, tuple[float, float]] = {
    "camera_offset_m": (0.0, 0.5),
    "camera_rotation_deg": (0.0, 30.0),
    "fov_deg": (0.0, 15.0),
    "light_scale": (0.05, 5.0),
    "light_direction_deg": (0.0, 60.0),
    "light_color": (0.0, 0.5),
    "surface_color": (0.0, 0.5),
    "object_color": (0.0, 0.15),
    "distractors": (0, 3),
    "rgb_noise": (0.0, 64.0),
    "blur_px": (0.0, 3.0),
    "exposure_ev": (-3.0, 3.0),
    "control_delay": (0, 1),
}


@dataclass(frozen=True)
class Shift:
    """What to randomise, and by how much (0 / 1.0 / False: unchanged).

    camera_offset_m: the camera's position moves this far (m) in a uniformly random direction.
    camera_rotation_deg: ... and turns by this angle about a uniformly random axis.
    fov_deg: the vertical field of view changes by ± this (degrees; the sign is drawn).
    light_scale: every light's intensity (the scene light and the headlight) times this.
    light_direction_deg: the scene light's direction turns by this angle about a random axis.
    light_color: each light colour channel times (1 ± this), drawn per channel.
    surface_color: the table (tabletop) or road and ground (driving) colour, each channel ± this.
    object_color: each object's colour, each channel ± this: small enough (at most 0.15) that
        a red cube stays red.
    distractors: this many extra objects that the instruction does not name (tabletop: objects
        of a colour other than the target's; driving: cars and barriers parked beyond the
        shoulder, never in the way).
    depth_noise: the world's active-stereo depth noise (:mod:`.depth_noise`) on.
    rgb_noise: Gaussian noise on the image, sigma in 8-bit levels.
    blur_px: Gaussian blur of the image, sigma in pixels.
    exposure_ev: the image's brightness times 2**exposure_ev (then clipped to 255).
    control_delay: actions take effect this many steps late (0 or 1; the first step of an
        episode then applies a zero action).
    ranges: False (default): each magnitude exactly; True: each drawn uniformly from 0 to it
        per episode (light_scale log-uniformly between it and its inverse, exposure_ev from
        -|ev| to |ev|, distractors and control_delay as integers from 0 to them).
    """

    camera_offset_m: float = 0.0
    camera_rotation_deg: float = 0.0
    fov_deg: float = 0.0
    light_scale: float = 1.0
    light_direction_deg: float = 0.0
    light_color: float = 0.0
    surface_color: float = 0.0
    object_color: float = 0.0
    distractors: int = 0
    depth_noise: bool = False
    rgb_noise: float = 0.0
    blur_px: float = 0.0
    exposure_ev: float = 0.0
    control_delay: int = 0
    ranges: bool = False

    def __post_init__(self):
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            integer = isinstance(low, int)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    integer and int(value) != value) or not math.isfinite(value):
                kind = "an integer" if integer else "a number"
                raise ValueError(f"shift {name}={value!r}: must be {kind} in [{low}, {high}]")
            if not low <= value <= high:
                raise ValueError(f"shift {name}={value!r} out of range [{low}, {high}]")
            object.__setattr__(self, name, int(value) if integer else float(value))
        for name in ("depth_noise", "ranges"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"shift {name}={getattr(self, name)!r}: must be True or False")

    @property
    def active(self) -> bool:
        """Whether anything differs from the unshifted world."""
        return self != Shift(ranges=self.ranges)

    @property
    def renders_differently(self) -> bool:
        """Whether the image needs work after the render (noise, blur, exposure)."""
        return bool(self.rgb_noise or self.blur_px or self.exposure_ev)

    def describe(self) -> str:
        """The fields that differ from the default, as ``key=value,...`` (parse() reads it)."""
        default = Shift()
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name) != getattr(default, f.name)) or "none"

    @staticmethod
    def parse(text: str) -> "Shift":
        """A shift from ``key=value,...`` (``none`` or empty: no shift), e.g.
        ``camera_offset_m=0.05,camera_rotation_deg=5``."""
        text = text.strip()
        if text in ("", "none"):
            return Shift()
        known = {f.name: f.type for f in fields(Shift)}
        values: dict[str, object] = {}
        for item in text.split(","):
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or key not in known:
                raise ValueError(f"shift: {item!r} is not key=value with a key of {sorted(known)}")
            if known[key] == "bool":
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"shift {key}={raw!r}: must be true or false")
                values[key] = raw.lower() in ("true", "1")
            else:
                try:
                    number = float(raw)
                except ValueError:
                    raise ValueError(f"shift {key}={raw!r}: must be a number") from None
                values[key] = int(number) if known[key] == "int" and number.is_integer() else number
        return Shift(**values)  # type: ignore[arg-type]

    @staticmethod
    def from_option(option) -> "Shift | None":
        """A world's ``shift`` argument: None/False (off), a Shift, a dict of fields or a
        ``key=value,...`` string. None when nothing would change."""
        if option is None or option is False:
            return None
        if isinstance(option, str):
            option = Shift.parse(option)
        elif isinstance(option, dict):
            unknown = set(option) - set(asdict(Shift()))
            if unknown:
                raise ValueError(f"shift: unknown fields {sorted(unknown)}; known: {sorted(asdict(Shift()))}")
            option = Shift(**option)
        elif not isinstance(option, Shift):
            raise ValueError(f"shift must be a Shift, dict or 'key=value,...' string, got {option!r}")
        return option if option.active else None


# --- geometry helpers ---------------------------------------------------------------------


def random_unit(rng: np.random.Generator) -> np.ndarray:
    """A direction drawn uniformly on the sphere."""
    v = rng.normal(size=3)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def axis_angle_quat(axis: np.ndarray, angle: float) -> np.ndarray:
    """The unit quaternion (w, x, y, z) of a rotation by `angle` (rad) about `axis`."""
    return np.array([math.cos(angle / 2), *(math.sin(angle / 2) * np.asarray(axis, float))])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """`v` turned by `angle` (rad) about the unit `axis` (Rodrigues)."""
    v, k = np.asarray(v, float), np.asarray(axis, float)
    c, s = math.cos(angle), math.sin(angle)
    return v * c + np.cross(k, v) * s + k * float(k @ v) * (1 - c)


# --- what a world does with a shift ---------------------------------------------------------


class Randomizer:
    """Applies a :class:`Shift` to one world: per episode (``reset``) the camera, lights and
    surface colours in the compiled model; per frame (``image``) the image effects; per step
    (``delay``) the control delay. A world holds one only when its shift is active, so an
    unshifted world does no extra work.

    ``bind`` (after every compile) records the model's own values, which every episode starts
    from: ``camera`` the rendered camera's name, ``surfaces`` the geoms whose colour is
    "the surface" (grouped: each group gets one colour shift).
    """

    def __init__(self, shift: Shift):
        self.shift = shift
        self.rng = np.random.default_rng(0)  # replaced per episode (start)
        self.delay_steps = 0
        self._pending: np.ndarray | None = None
        self._gain, self._blur, self._noise = 1.0, 0.0, 0.0
        #: What the current episode drew (for tests and logs).
        self.drawn: dict[str, object] = {}

    def bind(self, model, camera: str, surfaces: list[np.ndarray]) -> None:
        import mujoco

        self.model = model
        self.cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        self.base = {
            "cam_pos": model.cam_pos[self.cam].copy(), "cam_quat": model.cam_quat[self.cam].copy(),
            "fovy": float(model.cam_fovy[self.cam]), "light_dir": model.light_dir.copy(),
            "light_diffuse": model.light_diffuse.copy(), "light_ambient": model.light_ambient.copy(),
            "light_specular": model.light_specular.copy(),
            "head": {k: np.array(getattr(model.vis.headlight, k)) for k in ("ambient", "diffuse", "specular")},
        }
        self.surfaces = [np.asarray(g, int) for g in surfaces]
        self.surface_rgba = [model.geom_rgba[g].copy() for g in self.surfaces]

    # magnitudes of this episode
    def magnitude(self, value: float) -> float:
        """`value` exactly, or with ``ranges`` a uniform draw from 0 to it."""
        return float(self.rng.uniform(0.0, value)) if self.shift.ranges and value else float(value)

    def start(self, episode_rng: np.random.Generator) -> None:
        """A new episode: the shift's own generator, spawned from the episode's seed sequence
        (it draws nothing from the episode generator)."""
        seed_seq = cast(np.random.SeedSequence, episode_rng.bit_generator.seed_seq)
        self.rng = np.random.default_rng(seed_seq.spawn(1)[0])
        s = self.shift
        self.delay_steps = (int(self.rng.integers(0, s.control_delay + 1)) if s.ranges
                            else s.control_delay)
        self._pending = None
        ev = s.exposure_ev
        if s.ranges and ev:
            ev = float(self.rng.uniform(-abs(ev), abs(ev)))
        self._gain = 2.0 ** ev
        self._blur = self.magnitude(s.blur_px)
        self._noise = self.magnitude(s.rgb_noise)
        self.drawn = {"control_delay": self.delay_steps, "exposure_ev": ev, "blur_px": self._blur,
                      "rgb_noise": self._noise}

    def distractor_count(self) -> int:
        s = self.shift
        return int(self.rng.integers(0, s.distractors + 1)) if s.ranges else s.distractors

    def apply_model(self) -> None:
        """Camera pose and field of view, lights, surface colours: written from the bound
        model's own values, so nothing accumulates across episodes."""
        s, m, base, rng = self.shift, self.model, self.base, self.rng
        offset = self.magnitude(s.camera_offset_m) * random_unit(rng)
        angle = math.radians(self.magnitude(s.camera_rotation_deg))
        m.cam_pos[self.cam] = base["cam_pos"] + offset
        m.cam_quat[self.cam] = quat_mul(base["cam_quat"], axis_angle_quat(random_unit(rng), angle))
        fov = self.magnitude(s.fov_deg) * (1.0 if rng.random() < 0.5 else -1.0)
        m.cam_fovy[self.cam] = base["fovy"] + fov
        scale = s.light_scale
        if s.ranges and scale != 1.0:
            scale = math.exp(rng.uniform(-abs(math.log(scale)), abs(math.log(scale))))
        tint = 1.0 + rng.uniform(-1.0, 1.0, 3) * self.magnitude(s.light_color)
        gain = scale * tint
        m.light_diffuse[:] = base["light_diffuse"] * gain
        m.light_ambient[:] = base["light_ambient"] * gain
        m.light_specular[:] = base["light_specular"] * gain
        for k, v in base["head"].items():
            setattr(m.vis.headlight, k, v * gain)
        light_angle = math.radians(self.magnitude(s.light_direction_deg))
        for i in range(m.nlight):
            m.light_dir[i] = rotate(base["light_dir"][i], random_unit(rng), light_angle)
        for geoms, rgba in zip(self.surfaces, self.surface_rgba):
            shift = rng.uniform(-1.0, 1.0, 3) * self.magnitude(s.surface_color)
            m.geom_rgba[geoms, :3] = np.clip(rgba[:, :3] + shift, 0.0, 1.0)
        self.drawn.update(camera_offset=offset, camera_angle=angle, fov=fov, light_gain=gain,
                          light_angle=light_angle)

    def recolor(self, rgb) -> np.ndarray:
        """An object's colour shifted within its class (each channel ± object_color)."""
        shift = self.rng.uniform(-1.0, 1.0, 3) * self.magnitude(self.shift.object_color)
        return np.clip(np.asarray(rgb, float)[:3] + shift, 0.0, 1.0)

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """Exposure, blur and noise on one rendered frame (uint8 HxWx3)."""
        s = self.shift
        if not s.renders_differently:
            return rgb
        out = rgb.astype(np.float32)
        if self._gain != 1.0:
            out *= self._gain
        if self._blur > 0:
            import cv2

            out = np.asarray(cv2.GaussianBlur(out, (0, 0), self._blur), np.float32)
        if self._noise > 0:
            out = out + self.rng.normal(0.0, self._noise, out.shape).astype(np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def delay(self, action: np.ndarray) -> np.ndarray:
        """The action to apply now: `action` itself, or with a one-step delay the previous
        step's (zeros at an episode's first step)."""
        if not self.delay_steps:
            return action
        applied = np.zeros_like(action) if self._pending is None else self._pending
        self._pending = action.copy()
        return applied

    def pending(self, action_dim: int) -> np.ndarray | None:
        """Under a one-step delay, the action the next step applies (zeros at an episode's
        first step); None without a delay."""
        if not self.delay_steps:
            return None
        return np.zeros(action_dim, np.float32) if self._pending is None else self._pending.copy()

    def snapshot(self):
        return None if self._pending is None else self._pending.copy()

    def restore(self, pending) -> None:
        self._pending = None if pending is None else pending.copy()
