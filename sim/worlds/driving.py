"""Driving world (``EmbodiedStack/Driving-v0``): a car on a three-lane road follows a language
instruction, seen through a forward RGB-D camera on the car.

World
-----
A 216 m road built once per env from 36 straight 6 m segments (MuJoCo mocap bodies). Each
segment carries its asphalt slab and one mesh holding its two solid white edge lines and two
dashed white lane dividers (0.25 m wide so that they survive 64x64 images). At every reset
the segments are re-posed (the model is never recompiled) along a new centreline: the first
18 m are straight, then sections of 4-10 segments each get a curvature from {0, ±1/150,
±1/90, ±1/60} 1/m (the road is the polyline through the segment joints, exactly as
rendered). Three lanes, 3.5 m wide, indexed from the right: lane 0 is the rightmost, lane 2
the leftmost; lane k's centre lies at lateral offset ``(k - 1) * 3.5`` m (positive = left of
the centreline, REP-103). Only what the camera can resolve is drawn (software GL pays per
drawn geom): road within 66 m ahead, markings where they are at least 0.3 px wide.

The ego car (4.4 x 1.8 m) follows a kinematic bicycle model (wheelbase 2.7 m, reference
point mid-wheelbase) integrated in Python at 10 Hz; MuJoCo only poses the mocap bodies
(``mj_kinematics`` + ``mj_camlight``, no physics) and renders. Other road users come from a
fixed pool of 3 cars and 3 barriers (mocap bodies re-posed and re-coloured per reset; unused
ones parked out of sight): static barriers, and slower cars (4-8 m/s) driving along their
lane centre. Collisions are found geometrically (oriented footprints, separating axes).

Control rate: 10 Hz (``DT`` = 0.1 s per step). ``max_episode_steps`` (default 100, i.e.
10 s) truncates the episode; so does reaching the last 10 m of the road.

Instructions (``task`` in parentheses; ``reset(options={"task": ...})`` picks one, else it
is drawn uniformly), each rendered by a small template grammar with paraphrases, see
``INSTRUCTION_TEMPLATES`` and ``instruction_vocabulary()``:
  * "keep lane" and paraphrases (``keep_lane``): start in any lane, stay in it.
  * "change to the left lane" / "... right lane" (``change_left`` / ``change_right``).
  * "stop behind the obstacle" (``stop``): a barrier blocks the ego lane 28-50 m ahead.

Action
------
``Box(-1, 1, (2,), float32)``: ``[steer, acceleration]``, scaled to a front-wheel steering
angle of ±0.5 rad (positive = left) and a longitudinal acceleration of ±3 m/s². Speed is kept
in [0, 15] m/s (no reverse). Finite values outside [-1, 1] are clipped and reported as
``info["action_clipped"] = True``; a wrong shape, NaN or inf raises ``ValueError`` before any
state changes (the env stays usable).

Observation (``gymnasium.spaces.Dict``)
---------------------------------------
  * ``rgb``: ``Box(0, 255, (H, W, 3), uint8)`` forward camera (fovy 60°, 1.4 m high, at the
    front bumper, pitched 10° down).
  * ``depth``: ``Box(0, inf, (H, W), float32)`` metres along the optical axis, 0.0 = no
    return (sky, or beyond 120 m). ``depth_noise=True`` (or a dict of DepthNoise fields)
    adds an active-stereo sensor's noise (:mod:`embodied_stack.sim.worlds.depth_noise`).
  * ``instruction``: ``Text(max_length=INSTRUCTION_MAX_LEN, min_length=1,
    charset=INSTRUCTION_CHARSET)``.
  * ``proprio``: ``Box(-inf, inf, (8,), float32)``, ego state only (no lane offsets):
    [0] speed m/s, [1] applied steering angle rad, [2] yaw rate rad/s, [3] applied
    longitudinal acceleration m/s², [4:8] zero. Only what a real car reports: no episode clock.

Reward (per step)
-----------------
  ``0.3 * progress - 0.3 * centring - 0.2 * speed_error + 10 * success - 10 * failure``
  * progress = distance gained along the road / (10 m/s * DT) (1.0 at cruise speed);
  * centring = min((lateral offset from the target lane centre / 1.75 m)², 4);
  * speed_error = |speed - v_ref| / 10 m/s with v_ref = 10 m/s (cruise), or for ``stop``
    min(10, sqrt(2 * 1.5 * max(gap - 3, 0))), a comfortable stop 3 m behind the barrier;
  * success: +10 on the step the task succeeds; failure: -10 on collision or off-road.

Termination: on success of ``change_*``/``stop``, on collision, or off-road (car centre more
than 6 m from the centreline). Truncation: at ``max_episode_steps`` or the end of the road.

Success
-------
  * ``keep_lane``: at truncation, the car never left its start lane (centre within ±1.75 m
    of the lane centre), never collided, and averaged at least 2 m/s along the road.
  * ``change_left`` / ``change_right``: settled in the target lane — |offset| < 0.4 m and
    |heading error| < 0.1 rad — for 5 consecutive steps.
  * ``stop``: speed < 0.2 m/s in the barrier's lane with a bumper-to-barrier gap of
    0.5-8 m, without collision.

Info (at reset and every step)
------------------------------
  * ``camera``: ``CameraModel.as_dict()`` (width, height, K 3x3, T_world_camera 4x4 optical).
  * ``objects``: list of dicts for the active barriers and cars: ``id`` (int, stable slot id,
    the value used in ``segmentation``), ``class`` ("car" or "barrier"), ``color`` (str),
    ``position`` (np (3,), centre of the object's bounding box, world frame, m),
    ``quaternion`` (np (4,), w x y z), ``size`` (np (3,), full extents length/width/height
    along the object's own x/y/z axes, m).
  * ``segmentation`` (only when ``with_segmentation``): (H, W) int32 object id per pixel,
    -1 for road, ground, sky and the ego car.
  * ``ego``: dict with ``x``, ``y``, ``yaw`` (rad), ``speed`` (m/s), ``lane`` (int, the lane
    holding the car centre, the shoulder counting as the outer lane; -1 off the road).
  * ``task`` (str, see above), ``target_lane`` (int; keep/stop: the start lane).
  * ``outcome``: a discrete label of the current state, for group RL (docs/architecture.md, trainer):
    "collision", "offroad", "stopped:<k>" (stopped behind the barrier in lane k, the
    success of ``stop``), else "lane:<k>" (the lane the car is in).
  * ``is_success`` (bool), ``action_clipped`` (bool).

Randomisation
-------------
``shift`` (off by default; :mod:`embodied_stack.sim.worlds.shift`: a ``Shift``, a dict of its
fields or ``"key=value,..."``) moves and turns the ego camera (in the car's frame) and changes
its field of view, scales, turns and tints the light and the headlight, shifts the road's and
the ground's colours and each car's and barrier's colour within its colour, parks
``distractors`` (cars and barriers 7.5-10 m beside the centreline, beyond the off-road line,
10-60 m ahead of the start: they never change the task; ``info["distractors"]``), turns on the
depth noise, adds RGB noise, blur and exposure, and delays each action by ``control_delay``
steps. Drawn per episode from its own generator: a seed's road and scenario are the same with
any shift. With no shift every frame is as before and nothing extra runs.

Determinism: everything random comes from ``self.np_random``; the same seed gives the same
observations, and the same actions the same rollout.
"""

from __future__ import annotations

import itertools
import math
import re

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied_stack.sim.worlds.base import (
    INSTRUCTION_CHARSET,
    INSTRUCTION_MAX_LEN,
    PROPRIO_DIM,
    RGBDRenderer,
    check_action,
)

# isort: split
import mujoco  # noqa: E402  (base chose the GL backend before this import)

from embodied_stack.sim.worlds.depth_noise import DepthNoise, noise_generator  # noqa: E402
from embodied_stack.sim.worlds.shift import Randomizer, Shift  # noqa: E402

# --- world constants ----------------------------------------------------------------------

CONTROL_HZ = 10
DT = 1.0 / CONTROL_HZ

NUM_LANES = 3
LANE_WIDTH = 3.5
ROAD_HALF_WIDTH = NUM_LANES * LANE_WIDTH / 2.0  # edge lines at ±5.25 m
SHOULDER = 1.0  # asphalt beyond the edge line
OFFROAD_OFFSET = 6.0  # car centre farther than this from the centreline: off the road
SEGMENT_LENGTH = 6.0
NUM_SEGMENTS = 36
ROAD_LENGTH = SEGMENT_LENGTH * NUM_SEGMENTS
STRAIGHT_START_SEGMENTS = 3
CURVATURES = (0.0, 0.0, 1 / 150, -1 / 150, 1 / 90, -1 / 90, 1 / 60, -1 / 60)
MAX_ROAD_HEADING = 1.0  # rad; sections flip their turn direction beyond this
MARK_WIDTH = 0.25
DASH_LENGTH = 3.5  # one dash per 6 m segment per divider

MAX_STEER = 0.5  # rad
MAX_ACCEL = 3.0  # m/s²
MAX_SPEED = 15.0  # m/s
CRUISE_SPEED = 10.0  # m/s, the reward's reference speed
WHEELBASE = 2.7
EGO_LENGTH, EGO_WIDTH = 4.4, 1.8
EGO_START_S = 12.0

CAR_SIZE = (4.4, 1.8, 1.35)  # bounding box; chassis from 0.15 m to 1.0 m, cabin to 1.5 m
CAR_BOTTOM = 0.15
BARRIER_SIZE = (0.6, 2.6, 1.0)
NUM_CARS = 3
NUM_BARRIERS = 3
PARKED_POSITION = (-500.0, 0.0, -50.0)  # below the ground and behind the start: never seen
# Geoms in this group are not drawn (the renderer shows groups 0-2). Drawing costs per geom
# on a software GL, so road segments and objects outside the camera's reach are put here.
HIDDEN_GROUP = 3
VIEW_BEHIND = 6.0  # m behind the ego still drawn (the chase view)
VIEW_AHEAD = 66.0  # m ahead drawn; beyond, the road is within a pixel of the horizon at 64x64
MARK_MIN_PIXELS = 0.3
CAMERA_FOVY = 60.0  # degrees
CHASE_VIEW_SIZE = (320, 240)  # render() image, width x height

CAR_COLORS = {
    "red": (0.80, 0.10, 0.10), "blue": (0.10, 0.25, 0.85), "green": (0.10, 0.60, 0.20),
    "yellow": (0.90, 0.80, 0.10), "white": (0.92, 0.92, 0.92), "black": (0.08, 0.08, 0.08),
}
BARRIER_COLORS = {
    "orange": (1.00, 0.45, 0.00), "red": (0.85, 0.05, 0.05), "yellow": (0.95, 0.85, 0.05),
}
#: Where a shift's distractors stand: lateral offset (m, either side; beyond the shoulder and
#: the off-road line, so never in the way) and distance ahead of the start (m).
DISTRACTOR_OFFSET = (7.5, 10.0)
DISTRACTOR_AHEAD = (10.0, 60.0)

# success / outcome thresholds
SETTLE_OFFSET = 0.4  # m
SETTLE_HEADING = 0.1  # rad
SETTLE_STEPS = 5
STOP_SPEED = 0.2  # m/s
STOP_GAP = (0.5, 8.0)  # m, ego front bumper to barrier face
STOP_GAP_REF = 3.0  # m, where the reward's speed profile comes to rest
KEEP_MIN_MEAN_SPEED = 2.0  # m/s

TASKS = ("keep_lane", "change_left", "change_right", "stop")

#: Instruction grammar: "{a|b}" is a choice; every expansion is a valid instruction.
INSTRUCTION_TEMPLATES = {
    "keep_lane": ("keep lane", "{keep|stay in} {your|the current} lane", "follow the lane"),
    "change_left": ("{change|move|switch} {to|into} the left lane", "change lanes to the left"),
    "change_right": ("{change|move|switch} {to|into} the right lane",
                     "change lanes to the right"),
    "stop": ("{stop|halt} {behind|before} the {obstacle|barrier}",
             "come to a stop behind the {obstacle|barrier}"),
}


def _expand(template: str) -> list[str]:
    parts = re.split(r"(\{[^}]*\})", template)
    choices = [p[1:-1].split("|") if p.startswith("{") else [p] for p in parts]
    return ["".join(c) for c in itertools.product(*choices)]


#: Every instruction the grammar emits, per task (fixed order: sampling is deterministic).
INSTRUCTIONS = {task: [s for t in ts for s in _expand(t)]
                for task, ts in INSTRUCTION_TEMPLATES.items()}


def instruction_vocabulary() -> list[str]:
    """All words the driving instruction grammar can emit, sorted."""
    return sorted({w for texts in INSTRUCTIONS.values() for s in texts for w in s.split()})


def lane_center(lane: int) -> float:
    """Lateral offset (m, positive left) of lane `lane`'s centre from the road centreline."""
    return (lane - (NUM_LANES - 1) / 2.0) * LANE_WIDTH


def lane_of(offset: float) -> int:
    """Lane index holding lateral offset `offset` (the shoulder counts as the outer lane), or
    -1 off the road."""
    if abs(offset) > OFFROAD_OFFSET:
        return -1
    return min(max(int((offset + ROAD_HALF_WIDTH) // LANE_WIDTH), 0), NUM_LANES - 1)


def _yaw_quat(yaw: float) -> tuple[float, float, float, float]:
    return (math.cos(0.5 * yaw), 0.0, 0.0, math.sin(0.5 * yaw))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def _footprints_overlap(a, b) -> bool:
    """Separating-axis test of two oriented rectangles (cx, cy, yaw, half_len, half_wid)."""
    ax, ay, ayaw, al, aw = a
    bx, by, byaw, bl, bw = b
    dx, dy = bx - ax, by - ay
    if dx * dx + dy * dy > (math.hypot(al, aw) + math.hypot(bl, bw)) ** 2:
        return False
    ca, sa, cb, sb = math.cos(ayaw), math.sin(ayaw), math.cos(byaw), math.sin(byaw)
    for ux, uy in ((ca, sa), (-sa, ca), (cb, sb), (-sb, cb)):
        ra = al * abs(ca * ux + sa * uy) + aw * abs(-sa * ux + ca * uy)
        rb = bl * abs(cb * ux + sb * uy) + bw * abs(-sb * ux + cb * uy)
        if abs(dx * ux + dy * uy) > ra + rb:
            return False
    return True


class RoadObject:
    """One active barrier or car: road (Frenet) state plus what `info["objects"]` reports."""

    __slots__ = ("id", "kind", "color", "s", "d", "speed", "x", "y", "yaw", "size", "z_centre",
                 "mocap", "drawn", "half_length", "half_width")

    def __init__(self, obj_id, kind, color, s, d, speed, size, z_centre, mocap):
        self.id, self.kind, self.color = obj_id, kind, color
        self.s, self.d, self.speed = s, d, speed
        self.size, self.z_centre, self.mocap = size, z_centre, mocap
        self.half_length, self.half_width = 0.5 * float(size[0]), 0.5 * float(size[1])
        self.x = self.y = self.yaw = 0.0
        self.drawn = None  # whether its geoms are in a drawn group (None: not set yet)

    @property
    def footprint(self):
        return (self.x, self.y, self.yaw, self.half_length, self.half_width)


def _box(name, pos, half, rgba, extra=""):
    return (f'<geom name="{name}" type="box" pos="{pos[0]:g} {pos[1]:g} {pos[2]:g}" '
            f'size="{half[0]:g} {half[1]:g} {half[2]:g}" rgba="{rgba}" {extra}/>')


def _marking_mesh() -> tuple[list[float], list[int]]:
    """A segment's lane markings (two edge lines, two dashes) as ONE flat mesh.

    Drawing costs per geom on a software GL, so the markings share one geom per segment;
    they are untextured (texture sampling costs ~0.15 ms a 64x64 frame there).
    """
    vertices: list[float] = []
    faces: list[int] = []

    def quad(x0, x1, y0, y1, z):
        n = len(vertices) // 3
        vertices.extend((x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z))  # CCW seen from above
        faces.extend((n, n + 1, n + 2, n, n + 2, n + 3))

    half = SEGMENT_LENGTH / 2.0 + 0.3  # overlap hides the gaps at the kinks of curves
    for y in (-ROAD_HALF_WIDTH, ROAD_HALF_WIDTH):
        quad(-half, half, y - MARK_WIDTH / 2, y + MARK_WIDTH / 2, 0.03)
    for k in range(1, NUM_LANES):
        y = -ROAD_HALF_WIDTH + k * LANE_WIDTH
        quad(-DASH_LENGTH / 2, DASH_LENGTH / 2, y - MARK_WIDTH / 2, y + MARK_WIDTH / 2, 0.03)
    return vertices, faces


def build_mjcf(distractors: int = 0) -> str:
    """The world's MJCF: ground, road segments, object pool, ego car with its cameras, and
    `distractors` parked roadside objects (a shift's; even ones car-sized, odd ones barriers).

    Every body is a mocap body posed from Python (no joints, no physics); geoms never collide
    in MuJoCo (collisions are checked geometrically in the env).
    """
    vertices, faces = _marking_mesh()
    fmt = lambda values: " ".join(f"{v:g}" for v in values)  # noqa: E731
    half_seg = SEGMENT_LENGTH / 2.0 + 0.3  # overlap hides the gaps at the kinks of curves
    bodies = [f'<body name="seg{i}" mocap="true" pos="{i * SEGMENT_LENGTH:g} 0 0">'
              + _box(f"seg{i}_asphalt", (0, 0, 0.01),
                     (half_seg, ROAD_HALF_WIDTH + SHOULDER, 0.01), "0.32 0.32 0.34 1")
              + f'<geom name="seg{i}_marks" type="mesh" mesh="road_marks" material="paint"/>'
              + '</body>'
              for i in range(NUM_SEGMENTS)]
    L, W, H = CAR_SIZE
    chassis_h = 1.0 - CAR_BOTTOM
    cabin_h = CAR_BOTTOM + H - 1.0
    for j in range(NUM_CARS):
        bodies.append(
            f'<body name="car{j}" mocap="true" pos="{PARKED_POSITION[0]:g} 0 -50">'
            + _box(f"car{j}_chassis", (0, 0, CAR_BOTTOM + chassis_h / 2),
                   (L / 2, W / 2, chassis_h / 2), "0.8 0.1 0.1 1", f'group="{HIDDEN_GROUP}"')
            + _box(f"car{j}_cabin", (-0.3, 0, 1.0 + cabin_h / 2),
                   (1.1, W / 2 - 0.1, cabin_h / 2), "0.15 0.18 0.22 1",
                   f'group="{HIDDEN_GROUP}"')
            + "</body>")
    for j in range(NUM_BARRIERS):
        bodies.append(
            f'<body name="barrier{j}" mocap="true" pos="{PARKED_POSITION[0]:g} 5 -50">'
            + _box(f"barrier{j}_block", (0, 0, BARRIER_SIZE[2] / 2),
                   tuple(s / 2 for s in BARRIER_SIZE), "1 0.45 0 1", f'group="{HIDDEN_GROUP}"')
            + "</body>")
    for j in range(distractors):
        half = [v / 2 for v in (CAR_SIZE if j % 2 == 0 else BARRIER_SIZE)]
        bodies.append(
            f'<body name="distractor{j}" mocap="true" pos="{PARKED_POSITION[0]:g} -5 -50">'
            + _box(f"distractor{j}_block", (0, 0, half[2]), half, "0.5 0.5 0.5 1") + "</body>")
    pitch, chase_pitch = math.radians(10.0), math.radians(15.0)
    ego = (
        f'<body name="ego" mocap="true" pos="{EGO_START_S:g} 0 0">'
        # Hidden from the ego camera (it sits at the front bumper and never sees the car);
        # render() shows them for the chase view.
        + _box("ego_chassis", (0, 0, 0.6), (EGO_LENGTH / 2, EGO_WIDTH / 2, 0.4),
               "0.75 0.76 0.78 1", f'group="{HIDDEN_GROUP}"')
        + _box("ego_cabin", (-0.3, 0, 1.25), (1.1, EGO_WIDTH / 2 - 0.1, 0.25),
               "0.15 0.18 0.22 1", f'group="{HIDDEN_GROUP}"')
        + f'<camera name="ego_camera" pos="{EGO_LENGTH / 2 + 0.1:g} 0 1.4" '
          f'fovy="{CAMERA_FOVY:g}" xyaxes="0 -1 0 {math.sin(pitch):.6f} 0 {math.cos(pitch):.6f}"/>'
        + f'<camera name="chase_camera" pos="-9 0 4" fovy="60" '
          f'xyaxes="0 -1 0 {math.sin(chase_pitch):.6f} 0 {math.cos(chase_pitch):.6f}"/>'
        + "</body>")
    return f"""
<mujoco model="embodied_stack_driving">
  <compiler angle="radian" inertiafromgeom="false"/>
  <option timestep="{DT}"/>
  <statistic extent="100" center="0 0 0"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numquads="1"/>
    <map znear="0.002" zfar="1.2"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
  </visual>
  <default><geom contype="0" conaffinity="0"/></default>
  <asset>
    <material name="paint" rgba="1 1 1 1" emission="0.3" specular="0"/>
    <mesh name="road_marks" inertia="shell" vertex="{fmt(vertices)}" face="{fmt(faces)}"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 50" dir="0.3 0.2 -1" diffuse="0.5 0.5 0.5"
           specular="0 0 0" castshadow="false"/>
    {''.join(bodies)}
    {ego}
    <!-- A thin box, not a plane: MuJoCo subdivides planes, which costs ~0.2 ms a frame.
         Declared last so it is drawn after the road, whose pixels then pass no fragments. -->
    <body name="ground"><geom name="ground" type="box" pos="100 0 -0.01" size="400 400 0.01"
          rgba="0.22 0.42 0.18 1"/></body>
  </worldbody>
</mujoco>
"""


class DrivingEnv(gym.Env):
    """Three-lane road, language instruction, forward RGB-D camera. See the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, width: int = 64, height: int = 64, with_segmentation: bool = True,
                 max_episode_steps: int = 100, render_mode: str | None = None,
                 depth_noise=False, shift=None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} not in {self.metadata['render_modes']}")
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.width, self.height = int(width), int(height)
        self.with_segmentation = bool(with_segmentation)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode
        self.depth_noise = DepthNoise.from_option(depth_noise)  # see sim/worlds/depth_noise.py
        self._noise_rng: np.random.Generator | None = None  # spawned by reset() with depth noise
        #: The randomisation (sim/worlds/shift.py): None, the default, changes nothing.
        self.shift = Shift.from_option(shift)
        self._randomizer = Randomizer(self.shift) if self.shift is not None else None
        if self.shift is not None and self.shift.depth_noise and self.depth_noise is None:
            self.depth_noise = DepthNoise()

        self.model = mujoco.MjModel.from_xml_string(
            build_mjcf(self.shift.distractors if self.shift is not None else 0))
        self.data = mujoco.MjData(self.model)
        # The chase view's renderer binds its GL context only around each frame and restores
        # the one before (thread_safe), so render() never changes the context the ego
        # camera's renderer draws with. It is made first because making a GL context
        # releases the thread's current one.
        self._chase_renderer = None
        if render_mode == "rgb_array":
            self._chase_renderer = RGBDRenderer(self.model, "chase_camera", *CHASE_VIEW_SIZE)
            self._chase_renderer.thread_safe = True
        self._renderer = RGBDRenderer(self.model, "ego_camera", self.width, self.height)

        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (self.height, self.width, 3), np.uint8),
            "depth": spaces.Box(0.0, np.inf, (self.height, self.width), np.float32),
            "instruction": spaces.Text(max_length=INSTRUCTION_MAX_LEN, min_length=1,
                                       charset=INSTRUCTION_CHARSET),
            "proprio": spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
        })

        m = self.model
        body = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
        self._segment_mocap = [int(m.body_mocapid[body(f"seg{i}")]) for i in range(NUM_SEGMENTS)]
        self._ego_mocap = int(m.body_mocapid[body("ego")])
        geom = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name)  # noqa: E731
        self._segment_geoms = np.array([[geom(f"seg{i}_asphalt"), geom(f"seg{i}_marks")]
                                        for i in range(NUM_SEGMENTS)])
        self._ego_geoms = np.flatnonzero(m.geom_bodyid == body("ego"))
        # The object pool; a slot index is the object's id (in info and segmentation).
        self._pool_mocap, self._pool_paint, self._pool_geoms = [], [], []
        for kind, count, paint in (("car", NUM_CARS, "chassis"), ("barrier", NUM_BARRIERS,
                                                                     "block")):
            for j in range(count):
                self._pool_mocap.append(int(m.body_mocapid[body(f"{kind}{j}")]))
                self._pool_paint.append(geom(f"{kind}{j}_{paint}"))
                self._pool_geoms.append(np.flatnonzero(m.geom_bodyid == body(f"{kind}{j}")))
        # geom id -> object id, -1 elsewhere; indexed with geom_id + 1 (background is -1).
        self._geom_to_object = np.full(m.ngeom + 1, -1, dtype=np.int32)
        for slot, geoms in enumerate(self._pool_geoms):
            self._geom_to_object[1 + geoms] = slot
        self._drawn_segments = (0, -1, -1)  # first, last, last with markings, now drawn
        # Markings are drawn only where they are at least MARK_MIN_PIXELS wide (farther, at
        # 64x64, they would only flicker as aliased single pixels, at a cost per geom).
        focal_px = 0.5 * self.height / math.tan(math.radians(0.5 * CAMERA_FOVY))
        self._marks_ahead = min(VIEW_AHEAD, MARK_WIDTH * focal_px / MARK_MIN_PIXELS)

        # Road polyline (set per reset): joint positions and segment headings.
        self.joint_x = [0.0] * (NUM_SEGMENTS + 1)
        self.joint_y = [0.0] * (NUM_SEGMENTS + 1)
        self.segment_heading = [0.0] * NUM_SEGMENTS
        self._seg_cos = [1.0] * NUM_SEGMENTS
        self._seg_sin = [0.0] * NUM_SEGMENTS
        self.objects: list[RoadObject] = []
        self.task = TASKS[0]
        self.instruction = INSTRUCTIONS[self.task][0]
        self.start_lane = self.target_lane = 1
        self.stop_obstacle: RoadObject | None = None
        self._lookahead = False  # True while an expert looks ahead: steps skip rendering
        #: A shift's roadside distractors this episode: (class, colour, x, y, z centre).
        self.distractors: list[tuple[str, str, float, float, float]] = []
        if self._randomizer is not None:
            self._randomizer.bind(m, "ego_camera", [self._segment_geoms[:, 0], np.array([geom("ground")])])
            self._distractor_bodies = [
                (int(m.body_mocapid[body(f"distractor{j}")]), geom(f"distractor{j}_block"))
                for j in range(self.shift.distractors if self.shift is not None else 0)]

    # --- road geometry ------------------------------------------------------------------

    def frenet_to_world(self, s: float, d: float) -> tuple[float, float, float]:
        """World (x, y, road heading) of arc length `s` along the road, lateral offset `d`."""
        i = min(max(int(s // SEGMENT_LENGTH), 0), NUM_SEGMENTS - 1)
        t = s - i * SEGMENT_LENGTH
        c, sn = self._seg_cos[i], self._seg_sin[i]
        return (self.joint_x[i] + t * c - d * sn, self.joint_y[i] + t * sn + d * c,
                self.segment_heading[i])

    def world_to_frenet(self, x: float, y: float, hint: int = 0) -> tuple[float, float, int]:
        """(s, d, segment index) of world point (x, y), searching segments near `hint`."""
        best = None
        for i in range(max(hint - 1, 0), min(hint + 3, NUM_SEGMENTS)):
            dx, dy = x - self.joint_x[i], y - self.joint_y[i]
            c, sn = self._seg_cos[i], self._seg_sin[i]
            t = dx * c + dy * sn
            # Outside [0, L] only at the ends or in the wedge outside a kink: pick the closest.
            outside = max(0.0, -t, t - SEGMENT_LENGTH)
            if i == 0:
                outside = max(0.0, t - SEGMENT_LENGTH)
            elif i == NUM_SEGMENTS - 1:
                outside = max(0.0, -t)
            if best is None or outside < best[0]:
                best = (outside, i * SEGMENT_LENGTH + t, -dx * sn + dy * c, i)
                if outside == 0.0:
                    break
        assert best is not None, f"segment hint {hint} outside the road"
        return best[1], best[2], best[3]

    def _sample_road(self) -> None:
        rng = self.np_random
        curvature = np.zeros(NUM_SEGMENTS)
        i = STRAIGHT_START_SEGMENTS
        while i < NUM_SEGMENTS:
            n = int(rng.integers(4, 11))
            curvature[i:i + n] = CURVATURES[int(rng.integers(len(CURVATURES)))]
            i += n
        heading, x, y = 0.0, 0.0, 0.0
        for i in range(NUM_SEGMENTS):
            if abs(heading + curvature[i] * SEGMENT_LENGTH) > MAX_ROAD_HEADING:
                curvature[i:] = np.where(np.sign(curvature[i:]) == np.sign(curvature[i]),
                                         -curvature[i:], curvature[i:])
            heading += float(curvature[i]) * SEGMENT_LENGTH
            c, sn = math.cos(heading), math.sin(heading)
            self.joint_x[i], self.joint_y[i] = x, y
            self.segment_heading[i], self._seg_cos[i], self._seg_sin[i] = heading, c, sn
            mocap = self._segment_mocap[i]
            self.data.mocap_pos[mocap] = (x + 0.5 * SEGMENT_LENGTH * c,
                                          y + 0.5 * SEGMENT_LENGTH * sn, 0.0)
            self.data.mocap_quat[mocap] = _yaw_quat(heading)
            x += SEGMENT_LENGTH * c
            y += SEGMENT_LENGTH * sn
        self.joint_x[NUM_SEGMENTS], self.joint_y[NUM_SEGMENTS] = x, y

    # --- scenario -----------------------------------------------------------------------

    def _sample_scenario(self, task: str) -> None:
        rng = self.np_random
        lanes = list(range(NUM_LANES))
        if task == "change_left":
            self.start_lane = int(rng.integers(0, NUM_LANES - 1))
            self.target_lane = self.start_lane + 1
        elif task == "change_right":
            self.start_lane = int(rng.integers(1, NUM_LANES))
            self.target_lane = self.start_lane - 1
        else:
            self.start_lane = int(rng.integers(0, NUM_LANES))
            self.target_lane = self.start_lane
        texts = INSTRUCTIONS[task]
        self.task, self.instruction = task, texts[int(rng.integers(len(texts)))]

        s0 = EGO_START_S
        free_cars = list(range(NUM_CARS))
        free_barriers = list(range(NUM_CARS, NUM_CARS + NUM_BARRIERS))
        colors_car, colors_barrier = list(CAR_COLORS), list(BARRIER_COLORS)
        self.objects, self.stop_obstacle = [], None

        def add(kind, lane, s, speed):
            slot = (free_cars if kind == "car" else free_barriers).pop(0)
            palette = colors_car if kind == "car" else colors_barrier
            color = palette[int(rng.integers(len(palette)))]
            size = CAR_SIZE if kind == "car" else BARRIER_SIZE
            z_centre = CAR_BOTTOM + size[2] / 2 if kind == "car" else size[2] / 2
            d = lane_center(lane) + float(rng.uniform(-0.3, 0.3))
            obj = RoadObject(slot, kind, color, s, d, speed, np.array(size), z_centre,
                             self._pool_mocap[slot])
            self.model.geom_rgba[self._pool_paint[slot], :3] = (
                CAR_COLORS if kind == "car" else BARRIER_COLORS)[color]
            self.objects.append(obj)
            return obj

        # The ego lane: a barrier to stop behind, or perhaps a slower car to follow.
        if task == "stop":
            self.stop_obstacle = add("barrier", self.start_lane,
                                     s0 + float(rng.uniform(28.0, 50.0)), 0.0)
        elif rng.random() < 0.5:
            add("car", self.start_lane, s0 + float(rng.uniform(25.0, 50.0)),
                float(rng.uniform(4.0, 8.0)))
        # The other lanes (the target lane of a lane change stays clear): empty, 1-2 cars at
        # one speed (so they never catch each other), or 1-2 barriers (not in `stop`, so that
        # "the obstacle" is unambiguous).
        for lane in lanes:
            if lane in (self.start_lane, self.target_lane):
                continue
            kind = ("empty", "car", "barrier")[int(rng.choice(3, p=(0.3, 0.4, 0.3)))]
            if kind == "barrier" and task == "stop":
                kind = "car"
            if kind == "empty":
                continue
            count = int(rng.integers(1, 3))
            speed = float(rng.uniform(4.0, 8.0)) if kind == "car" else 0.0
            s = s0 + float(rng.uniform(12.0, 40.0))
            for _ in range(count):
                if not (free_cars if kind == "car" else free_barriers):
                    break
                add(kind, lane, s, speed)
                s += float(rng.uniform(18.0, 40.0))

        # Park (and hide) the unused pool members.
        used = {o.id for o in self.objects}
        for slot, mocap in enumerate(self._pool_mocap):
            if slot not in used:
                self.data.mocap_pos[mocap] = PARKED_POSITION
                self.data.mocap_quat[mocap] = (1.0, 0.0, 0.0, 0.0)
                self.model.geom_group[self._pool_geoms[slot]] = HIDDEN_GROUP

    def _apply_shift(self) -> None:
        """Per episode: camera, lights, road and ground colours, the objects' colours within
        their class, and the roadside distractors (a count from 0 to the shift's)."""
        shifted = self._randomizer
        assert shifted is not None
        shifted.start(self.np_random)
        shifted.apply_model()
        self._renderer.fovy_changed()
        rgba = self.model.geom_rgba
        for obj in self.objects:
            rgba[self._pool_paint[obj.id], :3] = shifted.recolor(rgba[self._pool_paint[obj.id]])
        rng, count = shifted.rng, shifted.distractor_count()
        self.distractors = []
        for j, (mocap, geom) in enumerate(self._distractor_bodies):
            if j >= count:
                self.data.mocap_pos[mocap] = PARKED_POSITION
                self.model.geom_group[geom] = HIDDEN_GROUP
                continue
            kind, palette = ("car", CAR_COLORS) if j % 2 == 0 else ("barrier", BARRIER_COLORS)
            color = list(palette)[int(rng.integers(len(palette)))]
            rgba[geom, :3] = shifted.recolor(palette[color])
            side = 1.0 if rng.random() < 0.5 else -1.0
            x, y, yaw = self.frenet_to_world(EGO_START_S + float(rng.uniform(*DISTRACTOR_AHEAD)),
                                             side * float(rng.uniform(*DISTRACTOR_OFFSET)))
            self.data.mocap_pos[mocap] = (x, y, 0.0)
            self.data.mocap_quat[mocap] = _yaw_quat(yaw + float(rng.uniform(-0.3, 0.3)))
            self.model.geom_group[geom] = 0
            self.distractors.append((kind, color, x, y, float(self.model.geom_size[geom][2])))

    def _place_objects(self, moving_only: bool = False) -> None:
        near, far = self.ego_s - VIEW_BEHIND - 5.0, self.ego_s + VIEW_AHEAD + 5.0
        for obj in self.objects:
            if obj.speed or not moving_only:
                obj.x, obj.y, obj.yaw = self.frenet_to_world(obj.s, obj.d)
                self.data.mocap_pos[obj.mocap] = (obj.x, obj.y, 0.0)
                self.data.mocap_quat[obj.mocap] = _yaw_quat(obj.yaw)
            drawn = near < obj.s < far
            if drawn != obj.drawn:
                self.model.geom_group[self._pool_geoms[obj.id]] = 0 if drawn else HIDDEN_GROUP
                obj.drawn = drawn

    def _draw_segments_near_ego(self) -> None:
        """Draw only the road (and markings) within the camera's reach (see HIDDEN_GROUP)."""
        first = max(int((self.ego_s - VIEW_BEHIND) // SEGMENT_LENGTH), 0)
        last = min(int((self.ego_s + VIEW_AHEAD) // SEGMENT_LENGTH), NUM_SEGMENTS - 1)
        last_marks = min(int((self.ego_s + self._marks_ahead) // SEGMENT_LENGTH), last)
        if (first, last, last_marks) != self._drawn_segments:
            group = self.model.geom_group
            group[self._segment_geoms] = HIDDEN_GROUP
            group[self._segment_geoms[first:last + 1, 0]] = 0
            group[self._segment_geoms[first:last_marks + 1, 1]] = 0
            self._drawn_segments = (first, last, last_marks)

    def _place_ego(self) -> None:
        self.data.mocap_pos[self._ego_mocap] = (self.ego_x, self.ego_y, 0.0)
        self.data.mocap_quat[self._ego_mocap] = _yaw_quat(self.ego_yaw)

    # --- gymnasium API ------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.depth_noise is not None:
            self._noise_rng = noise_generator(self.np_random)
        task = (options or {}).get("task")
        if task is None:
            task = TASKS[int(self.np_random.integers(len(TASKS)))]
        elif task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        self._sample_road()
        self._sample_scenario(task)
        if self._randomizer is not None:  # its own generator: the scenario is the same
            self._apply_shift()
        rng = self.np_random
        d0 = lane_center(self.start_lane) + float(rng.uniform(-0.3, 0.3))
        self.ego_x, self.ego_y, road_yaw = self.frenet_to_world(EGO_START_S, d0)
        self.ego_yaw = road_yaw + float(rng.uniform(-0.05, 0.05))
        self.ego_speed = float(rng.uniform(6.0, 10.0))
        self.ego_steer = 0.0
        self.ego_yaw_rate = 0.0
        self.ego_accel = 0.0
        self.ego_s, self.ego_d, self._ego_segment = self.world_to_frenet(self.ego_x, self.ego_y)
        self.start_s = self.ego_s
        self.elapsed_steps = 0
        self.left_start_lane = False
        self.settled_steps = 0
        self.collided = False
        self._place_objects()
        self._place_ego()
        status = self._status()
        self._last_status = status
        return self._observe(status, action_clipped=False)

    def step(self, action):
        action, clipped = check_action(action, self.action_space.low, self.action_space.high)
        if self._randomizer is not None:
            action = self._randomizer.delay(action)
        steer = float(action[0]) * MAX_STEER
        accel = float(action[1]) * MAX_ACCEL

        # Kinematic bicycle, reference point mid-wheelbase, midpoint integration.
        v0 = self.ego_speed
        v1 = min(max(v0 + accel * DT, 0.0), MAX_SPEED)
        v = 0.5 * (v0 + v1)
        slip = math.atan(0.5 * math.tan(steer))
        yaw_rate = v / (0.5 * WHEELBASE) * math.sin(slip)
        yaw_mid = self.ego_yaw + 0.5 * yaw_rate * DT
        self.ego_x += v * math.cos(yaw_mid + slip) * DT
        self.ego_y += v * math.sin(yaw_mid + slip) * DT
        self.ego_yaw = _wrap(self.ego_yaw + yaw_rate * DT)
        self.ego_speed, self.ego_steer, self.ego_yaw_rate = v1, steer, yaw_rate
        self.ego_accel = (v1 - v0) / DT
        prev_s = self.ego_s
        self.ego_s, self.ego_d, self._ego_segment = self.world_to_frenet(
            self.ego_x, self.ego_y, self._ego_segment)
        for obj in self.objects:
            if obj.speed:
                obj.s += obj.speed * DT
        self._place_objects(moving_only=True)
        self._place_ego()
        self.elapsed_steps += 1

        status = self._status()
        self._last_status = status
        success, failure = status["success"], status["failure"]
        speed_ref = CRUISE_SPEED
        if self.task == "stop" and status["gap"] is not None:
            speed_ref = min(CRUISE_SPEED,
                            math.sqrt(2.0 * 1.5 * max(status["gap"] - STOP_GAP_REF, 0.0)))
        centring = min(((self.ego_d - lane_center(self.target_lane)) / (LANE_WIDTH / 2)) ** 2,
                       4.0)
        reward = (0.3 * (self.ego_s - prev_s) / (CRUISE_SPEED * DT) - 0.3 * centring
                  - 0.2 * abs(self.ego_speed - speed_ref) / CRUISE_SPEED
                  + 10.0 * success - 10.0 * failure)
        terminated = failure or (success and self.task != "keep_lane")
        truncated = not terminated and status["out_of_time"]
        obs, info = self._observe(status, action_clipped=clipped)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def _status(self) -> dict:
        """Collision, lane, gap and success flags of the current state (updates counters)."""
        ego_fp = (self.ego_x, self.ego_y, self.ego_yaw, EGO_LENGTH / 2, EGO_WIDTH / 2)
        for obj in self.objects:
            if _footprints_overlap(ego_fp, obj.footprint):
                self.collided = True
        lane = lane_of(self.ego_d)
        offroad = abs(self.ego_d) > OFFROAD_OFFSET
        failure = self.collided or offroad
        if abs(self.ego_d - lane_center(self.start_lane)) > LANE_WIDTH / 2:
            self.left_start_lane = True
        out_of_time = (self.elapsed_steps >= self.max_episode_steps
                       or self.ego_s > ROAD_LENGTH - 10.0)
        gap = None
        if self.stop_obstacle is not None:
            gap = (self.stop_obstacle.s - self.ego_s - 0.5 * EGO_LENGTH
                   - self.stop_obstacle.half_length)
        success = False
        stopped = False
        if not failure:
            if self.task == "keep_lane":
                mean_speed = (self.ego_s - self.start_s) / max(self.elapsed_steps * DT, 1e-9)
                success = (out_of_time and not self.left_start_lane
                           and mean_speed >= KEEP_MIN_MEAN_SPEED)
            elif self.task in ("change_left", "change_right"):
                heading_error = _wrap(self.ego_yaw - self.segment_heading[self._ego_segment])
                settled = (abs(self.ego_d - lane_center(self.target_lane)) < SETTLE_OFFSET
                           and abs(heading_error) < SETTLE_HEADING)
                self.settled_steps = self.settled_steps + 1 if settled else 0
                success = self.settled_steps >= SETTLE_STEPS
            else:
                assert gap is not None  # the stop task always has its barrier (_sample_scenario)
                stopped = (self.ego_speed < STOP_SPEED and lane == self.start_lane
                           and STOP_GAP[0] <= gap <= STOP_GAP[1])
                success = stopped
        if self.collided:
            outcome = "collision"
        elif offroad:
            outcome = "offroad"
        elif stopped:
            outcome = f"stopped:{lane}"
        else:
            outcome = f"lane:{lane}"
        return {"success": success, "failure": failure, "out_of_time": out_of_time,
                "lane": lane, "gap": gap, "outcome": outcome}

    def _observe(self, status: dict, action_clipped: bool):
        if self._lookahead:  # expert look-ahead (sim/experts.expert_chunk): no pixels
            rgb = depth = geom_ids = None
        else:
            self._draw_segments_near_ego()
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_camlight(self.model, self.data)
            rgb, depth, geom_ids = self._renderer.render(self.data,
                                                         segmentation=self.with_segmentation)
            if self._randomizer is not None:
                rgb = self._randomizer.image(rgb)
            if self.depth_noise is not None:
                assert self._noise_rng is not None  # reset() spawns it when depth_noise is on
                depth = self.depth_noise.apply(depth, self._renderer.camera_model(
                    self.data).K[0, 0], self._noise_rng)
        proprio = np.zeros(PROPRIO_DIM, dtype=np.float32)
        proprio[:4] = (self.ego_speed, self.ego_steer, self.ego_yaw_rate, self.ego_accel)
        obs = {"rgb": rgb, "depth": depth, "instruction": self.instruction, "proprio": proprio}
        info = {
            "camera": self._renderer.camera_model(self.data).as_dict(),
            "objects": [
                {"id": o.id, "class": o.kind, "color": o.color,
                 "position": np.array((o.x, o.y, o.z_centre)),
                 "quaternion": np.array(_yaw_quat(o.yaw)), "size": o.size.copy()}
                for o in self.objects
            ],
            "ego": {"x": self.ego_x, "y": self.ego_y, "yaw": self.ego_yaw,
                    "speed": self.ego_speed, "lane": status["lane"]},
            "task": self.task,
            "target_lane": self.target_lane,
            "outcome": status["outcome"],
            "is_success": bool(status["success"]),
            "action_clipped": bool(action_clipped),
        }
        if self.with_segmentation and geom_ids is not None:
            info["segmentation"] = self._geom_to_object[geom_ids + 1]
        if self._randomizer is not None:
            info["distractors"] = [{"class": k, "color": c, "position": np.array((x, y, z))}
                                   for k, c, x, y, z in self.distractors]
        return obs, info

    # --- snapshots (expert look-ahead labels, DAgger) -----------------------------------

    _SNAPSHOT_FIELDS = ("ego_x", "ego_y", "ego_yaw", "ego_speed", "ego_steer", "ego_yaw_rate",
                        "ego_accel", "ego_s", "ego_d", "_ego_segment", "elapsed_steps",
                        "left_start_lane", "settled_steps", "collided", "_last_status")

    def snapshot(self) -> tuple:
        """Everything a step reads or writes (ego state, episode counters, where the moving
        objects are); :meth:`restore` puts it back and re-poses the bodies."""
        return (tuple(getattr(self, f) for f in self._SNAPSHOT_FIELDS),
                tuple(obj.s for obj in self.objects),
                None if self._randomizer is None else self._randomizer.snapshot())

    def restore(self, snap: tuple) -> None:
        values, object_s, pending = snap
        if self._randomizer is not None:
            self._randomizer.restore(pending)
        for f, v in zip(self._SNAPSHOT_FIELDS, values):
            setattr(self, f, v)
        for obj, s in zip(self.objects, object_s):
            obj.s = s
        self._place_objects()
        self._place_ego()

    def render(self):
        """A 320x240 chase-camera view of the ego car (``render_mode="rgb_array"``)."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'")
            return None
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        self.model.geom_group[self._ego_geoms] = 0
        try:
            rgb, _, _ = self._chase_renderer.render(self.data)
        finally:
            self.model.geom_group[self._ego_geoms] = HIDDEN_GROUP
        return rgb

    def close(self):
        for renderer in (self._renderer, self._chase_renderer):
            if renderer is not None:
                renderer.close()
