"""Tabletop world (``EmbodiedStack/Tabletop-v0``): a fingertip pushes primitive objects on a
table, following a language instruction, seen by one fixed RGB-D camera.

Scene
    A table (top surface at world z = 0) with 3-6 free-body primitives (cube, ball, cylinder)
    in four colours (red, green, blue, yellow) at random poses, a 3-DOF end effector (a sphere
    fingertip of radius 1.5 cm on three slide joints, driven by velocity actuators, gravity
    compensated; it collides with the objects but not with the table) and a fixed camera
    ``"front"`` behind the near edge of the table, looking down at it. Real MuJoCo physics:
    the fingertip pushes the objects, the objects slide, roll and bump into each other.

World frame and directions
    x points away from the camera, y to the camera's left, z up. Instruction directions are
    as the camera sees them: "left" = +y, "right" = -y, "forward" = +x (away from the
    camera), "backward" = -x.

Instructions (template grammar; :func:`instruction_vocabulary` lists every word)
    ``touch the <colour> <shape>``, ``touch the <colour> object``,
    ``push the <colour> <shape> to the left|right``, ``push the <colour> <shape> forward|backward``
    (and the same with ``object``). Some scenes are ambiguous on purpose: two objects fit the
    description (two red cubes, or "the red object" with two red things). Every object that
    fits is a target (``info["target_ids"]``); reaching any of them is a success.

Action
    ``Box(-1, 1, (3,), float32)``: end-effector velocity (vx, vy, vz) as a fraction of
    :data:`MAX_SPEED` (0.25 m/s), in the world frame. Finite values outside [-1, 1] are clipped
    and ``info["action_clipped"]`` is True. A wrong shape, NaN or inf raises ValueError before
    anything changes (:func:`embodied_stack.sim.worlds.base.check_action`). The fingertip
    stays inside its workspace (joint limits): x, y in [-0.28, 0.28] m, z in [0.018, 0.25] m.

Timing
    Control at :data:`CONTROL_HZ` = 10 Hz; each step runs :data:`SUBSTEPS` = 10 physics steps of
    10 ms (implicit-fast integrator, sleeping islands on so objects at rest cost nothing).
    Episodes truncate after ``max_episode_steps`` (60: 6 s). One core here runs ~1400 steps/s
    at 64x64 without segmentation (most of it the render), ~800 with it.

Observation (``Dict``)
    ``rgb``: ``Box(0, 255, (H, W, 3), uint8)``, the camera image.
    ``depth``: ``Box(0, inf, (H, W), float32)``, metres along the optical axis; 0.0 = no return.
    Exact by default; ``depth_noise=True`` (or a dict of
    :class:`~embodied_stack.sim.worlds.depth_noise.DepthNoise` fields) makes it look like an
    active-stereo sensor's (range-dependent noise, edge dropout, holes), seeded from the
    episode seed.
    ``instruction``: ``Text(INSTRUCTION_MAX_LEN, min_length=1, charset=INSTRUCTION_CHARSET)``.
    ``proprio``: ``Box(-inf, inf, (8,), float32)``:
    [0:3] fingertip position x, y, z (world, m); [3:6] fingertip velocity (m/s);
    [6] contact flag (1.0 while the fingertip touches an object, else 0.0); [7] zero.
    Only what a real arm reports: no episode clock.

Reward
    Shaped progress plus a success bonus: ``r = 2 * (phi_before - phi_after) + 1.0 * success``,
    with the potential ``phi`` = distance (m) from the fingertip to the nearest target's centre;
    for push tasks ``phi`` adds the distance the target still has to travel,
    ``max(0, PUSH_DISTANCE - displacement along the direction)``, minimised over targets.
    Termination: on success, or when the fingertip touches an object that is not a target
    (a failure; the outcome is recorded). Truncation: at ``max_episode_steps``.
    Success: touch tasks - the fingertip touched a target and no other object; push tasks -
    no non-target was touched and a target moved at least ``PUSH_DISTANCE`` (6 cm) along the
    direction. Touches are checked at every physics substep, so a brief graze counts.

Info (at reset and every step)
    ``camera``: :meth:`CameraModel.as_dict` (width, height, K 3x3, T_world_camera 4x4 of the
    optical frame). ``objects``: list of dicts ``id`` (int), ``class`` ("cube" | "ball" |
    "cylinder"), ``color`` ("red" | "green" | "blue" | "yellow"),
    ``position`` np(3) (world, m, body centre), ``quaternion`` np(4) (w, x, y, z),
    ``size`` np(3) (full extents of the object in its own frame, m).
    ``segmentation``: HxW int32, object id per pixel, -1 elsewhere (only when
    ``with_segmentation``; it costs a second render pass).
    ``target_ids``: list of ids that satisfy the instruction.
    ``outcome``: ``"touched:<id>"`` for the first object the fingertip touched, else ``"none"``
    (the discrete outcome label group RL compares).
    ``is_success``: bool. ``action_clipped``: bool (False at reset).
    ``task``: "touch" | "push"; ``direction``: unit 3-vector of the push (zeros for touch).

Randomisation (``shift``, off by default; :mod:`embodied_stack.sim.worlds.shift`)
    ``shift=Shift(...)`` (or a dict of its fields, or ``"key=value,..."``) moves and turns the
    camera ``front`` and changes its field of view, scales, turns and tints the light and the
    headlight, shifts the table's and the objects' colours (objects within their colour
    class), adds ``distractors`` (objects of a colour other than the target's, clear of every
    push path, in extra slots; they count as objects: touching one is a wrong touch; their ids
    are ``info["distractor_ids"]``; primitives only), turns on the depth noise, adds RGB
    noise, blur and exposure, and delays each action by ``control_delay`` steps. Drawn per
    episode from its own generator: the scene of a seed is the same with any shift. With no
    shift every frame is as before and nothing extra runs.

Scripted experts read :attr:`TabletopEnv.privileged_state` (ground truth), never the images.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from embodied_stack.sim.worlds import procedural_objects
from embodied_stack.sim.worlds.base import (
    INSTRUCTION_CHARSET,
    INSTRUCTION_MAX_LEN,
    PROPRIO_DIM,
    RGBDRenderer,
    check_action,
    mujoco,
)
from embodied_stack.sim.worlds.depth_noise import DepthNoise, noise_generator
from embodied_stack.sim.worlds.shift import Randomizer, Shift

# --- world constants --------------------------------------------------------------------

#: Top speed of the fingertip per axis (m/s) that an action of 1.0 commands.
MAX_SPEED = 0.25
#: Control rate (Hz) and physics substeps per control step.
CONTROL_HZ = 10
SUBSTEPS = 10
PHYSICS_DT = 1.0 / (CONTROL_HZ * SUBSTEPS)
#: How far (m) a target must move along the push direction for a push task to succeed.
PUSH_DISTANCE = 0.06
#: Fingertip sphere radius (m).
FINGERTIP_RADIUS = 0.015
#: Fingertip workspace (m), enforced by the slide-joint limits.
EE_LOW = np.array([-0.28, -0.28, FINGERTIP_RADIUS + 0.003])
EE_HIGH = np.array([0.28, 0.28, 0.25])
#: Height the fingertip starts at (m), above every object.
EE_START_Z = 0.12
MAX_OBJECTS = 6
MIN_OBJECTS = 3
#: Most objects in a scene of procedural shapes (``objects="shapes"``; at least one).
SHAPES_MAX_OBJECTS = 5
#: The word an instruction uses for a procedural family, where it is not the family's id.
FAMILY_NOUNS = {"l_block": "l-block"}

COLORS = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.82, 0.08),
}
COLOR_NAMES = tuple(COLORS)
CLASS_NAMES = ("cube", "ball", "cylinder")
#: What the objects are: the primitives above (the default) or the procedural shapes of
#: :mod:`.procedural_objects` (``objects="shapes"``).
OBJECT_SETS = ("primitives", "shapes")
#: Full extents (x, y, z) of each class in its own frame (m).
CLASS_SIZES = {
    "cube": np.array([0.05, 0.05, 0.05]),
    "ball": np.array([0.05, 0.05, 0.05]),
    "cylinder": np.array([0.044, 0.044, 0.06]),
}
#: Radius of each class's footprint on the table (m), for spacing and path clearance.
CLASS_FOOTPRINT = {"cube": 0.0354, "ball": 0.025, "cylinder": 0.022}
OBJECT_MASS = 0.08  # kg

#: Push directions by word, in the world frame (see the module docstring).
DIRECTIONS = {
    "left": np.array([0.0, 1.0, 0.0]),
    "right": np.array([0.0, -1.0, 0.0]),
    "forward": np.array([1.0, 0.0, 0.0]),
    "backward": np.array([-1.0, 0.0, 0.0]),
}
#: Direction word -> the phrase the instruction uses.
DIRECTION_PHRASES = {
    "left": "to the left",
    "right": "to the right",
    "forward": "forward",
    "backward": "backward",
}

# Where objects may be placed (m, centre) and how far apart.
_SPAWN_LOW = np.array([-0.17, -0.20])
_SPAWN_HIGH = np.array([0.17, 0.20])
_MIN_GAP = 0.03  # free space between two object footprints
# ... with procedural shapes, whose footprint circles (about the box centre) are loose: a
# little closer. Objects touching at one depth are one object to a depth camera, so they
# stay apart; they hide each other by standing behind one another (_sample_positions).
_MIN_GAP_SHAPES = 0.025
_PATH_GAP = 0.02  # free space between a push path and any other object's footprint
_TABLE_HALF = 0.30
_PUSH_SHARE = 0.4  # share of push tasks
_AMBIGUOUS_SHARE = 0.25  # share of scenes made ambiguous on purpose (two objects fit)
_COLOR_ONLY_SHARE = 0.2  # share of instructions naming only the colour ("the red object")
# Height of the hidden shelf where unused object slots wait (never drawn, out of reach).
_PARKING_Z = -0.75


def _parking_position(slot: int) -> tuple[float, float, float]:
    """Where an unused slot's (hidden) cube rests on the parking shelf."""
    return (0.8 + 0.1 * slot, 0.8, _PARKING_Z + 0.025)


def instruction_vocabulary(objects: str = "primitives") -> list[str]:
    """Every word the instruction grammar can emit with this object set, sorted."""
    words = {"touch", "push", "the", "object"}
    words.update(COLOR_NAMES)
    if objects == "shapes":
        words.update(FAMILY_NOUNS.get(f, f) for f in procedural_objects.FAMILIES)
    else:
        words.update(CLASS_NAMES)
    for phrase in DIRECTION_PHRASES.values():
        words.update(phrase.split())
    return sorted(words)


def make_instruction(task: str, color: str, shape: str | None, direction: str | None) -> str:
    """Render one instruction from the grammar (``shape=None`` -> "the <colour> object")."""
    noun = shape if shape is not None else "object"
    if task == "touch":
        return f"touch the {color} {noun}"
    if direction is None:
        raise ValueError("a push instruction needs a direction")
    return f"push the {color} {noun} {DIRECTION_PHRASES[direction]}"


def _camera_xyaxes(position, target) -> str:
    forward = np.asarray(target, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.6f}" for v in (*right, *up))


# The camera: behind the near edge, looking down at the table centre; at 64x64 it sees the
# whole spawn area.
_CAMERA_POS = (-0.45, 0.0, 0.50)
_CAMERA_TARGET = (0.03, 0.0, 0.0)
_CAMERA_FOVY = 50  # degrees, vertical


def build_mjcf(image_side: int = 64, shapes: list | None = None, n_slots: int = MAX_OBJECTS) -> str:
    """The world's MJCF. Each object slot holds one geom per class; reset turns one on (visible
    group 0, colliding) and the others off, so the model is compiled once per env.

    ``image_side`` (the larger image side) sets the tessellation of spheres and cylinders:
    software GL spends most of a small frame on vertices, and a 64x64 image cannot show the
    difference between 12 and 28 slices (~0.45 ms vs ~1.1 ms a frame here).

    ``shapes`` (``objects="shapes"``): one ``(ProceduralObject, colour name)`` per used slot.
    Such a slot holds the object's mesh instead (visible, colliding as its convex hull, as
    MuJoCo collides every mesh); the unused slots keep their parked cube. The model is then
    compiled per scene.

    ``n_slots``: object slots (more than MAX_OBJECTS where a shift adds distractors).
    """
    slices, stacks, quads = (12, 6, 1) if image_side <= 160 else (28, 16, 2)
    slots = []
    assets = ""
    for i in range(n_slots):
        park = " ".join(f"{v:.3f}" for v in _parking_position(i))
        if shapes is not None and i < len(shapes):
            obj, color = shapes[i]
            assets += procedural_objects.mesh_asset_xml(f"shape{i}", obj)
            ex, ey, ez = obj.extent
            inertia = OBJECT_MASS / 12.0 * np.array([ey**2 + ez**2, ex**2 + ez**2, ex**2 + ey**2])
            rgba = " ".join(f"{v:g}" for v in (*COLORS[color], 1.0))
            slots.append(f"""
    <body name="obj{i}" pos="{park}">
      <freejoint name="obj{i}_free"/>
      <inertial pos="0 0 0" mass="{OBJECT_MASS}" diaginertia="{inertia[0]:.3e} {inertia[1]:.3e} {inertia[2]:.3e}"/>
      <geom name="obj{i}_mesh" type="mesh" mesh="shape{i}" class="object" group="0" rgba="{rgba}"
            contype="{_OBJECT_CONTYPE}" conaffinity="{_OBJECT_CONAFFINITY}"/>
    </body>""")
            continue
        if shapes is not None:
            half = CLASS_SIZES["cube"] / 2
            slots.append(f"""
    <body name="obj{i}" pos="{park}">
      <freejoint name="obj{i}_free"/>
      <inertial pos="0 0 0" mass="{OBJECT_MASS}" diaginertia="3e-5 3e-5 3e-5"/>
      <geom name="obj{i}_cube" type="box" size="{half[0]} {half[1]} {half[2]}" class="object"
            contype="1" conaffinity="1"/>
    </body>""")
            continue
        cube, ball, cyl = (CLASS_SIZES[c] / 2 for c in CLASS_NAMES)
        slots.append(f"""
    <body name="obj{i}" pos="{park}">
      <freejoint name="obj{i}_free"/>
      <inertial pos="0 0 0" mass="{OBJECT_MASS}" diaginertia="3e-5 3e-5 3e-5"/>
      <geom name="obj{i}_cube" type="box" size="{cube[0]} {cube[1]} {cube[2]}" class="object"/>
      <geom name="obj{i}_ball" type="sphere" size="{ball[0]}" class="object"/>
      <geom name="obj{i}_cylinder" type="cylinder" size="{cyl[0]} {cyl[2]}" class="object"/>
    </body>""")
    # One sensor for "the fingertip touches anything" (cheap to poll every substep), then one
    # per slot to tell which object it is.
    sensors = '    <contact name="touch_any" body1="fingertip" data="found"/>\n' + "\n".join(
        f'    <contact name="touch{i}" body1="fingertip" body2="obj{i}" data="found"/>'
        for i in range(n_slots)
    )
    # Velocity servos: stiff (kv) so the fingertip tracks the command within a substep or two,
    # force-limited so that pushing into an object cannot launch it.
    actuators = "\n".join(
        f'    <velocity name="v_{axis}" joint="ee_{axis}" kv="60" '
        f'ctrlrange="{-MAX_SPEED} {MAX_SPEED}" forcerange="-15 15"/>'
        for axis in "xyz"
    )
    lo, hi = EE_LOW, EE_HIGH
    return f"""
<mujoco model="tabletop">
  <compiler angle="radian" autolimits="true"/>
  <!-- Sleeping islands: objects at rest stop costing solver time (a resting scene steps ~4x
       faster) and wake when the fingertip or another moving object touches them. -->
  <option timestep="{PHYSICS_DT}" integrator="implicitfast" cone="elliptic">
    <flag sleep="enable"/>
  </option>
  <visual>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <quality numslices="{slices}" numstacks="{stacks}" numquads="{quads}"/>
    <map znear="0.02" zfar="10"/>
  </visual>
{assets and f"  <asset>{assets}{chr(10)}  </asset>{chr(10)}"}  <default>
    <default class="object">
      <geom contype="0" conaffinity="0" group="4" friction="0.6 0.005 0.0001" mass="0"/>
    </default>
  </default>
  <worldbody>
    <light directional="true" pos="0 0 2" dir="0.3 0.2 -1" diffuse="0.6 0.6 0.6"
           castshadow="false"/>
    <!-- Unused object slots rest on this hidden shelf, out of sight (group 4 is not drawn). -->
    <geom name="parking" type="box" size="0.5 0.2 0.05" pos="1.0 0.8 {_PARKING_Z - 0.05}"
          group="4"/>
    <geom name="table" type="box" size="{_TABLE_HALF} {_TABLE_HALF} 0.02" pos="0 0 -0.02"
          rgba="0.62 0.52 0.40 1" friction="0.6 0.005 0.0001"/>
    <camera name="front" pos="{' '.join(map(str, _CAMERA_POS))}"
            xyaxes="{_camera_xyaxes(_CAMERA_POS, _CAMERA_TARGET)}" fovy="{_CAMERA_FOVY}"/>
    <body name="fingertip" pos="0 0 0" gravcomp="1">
      <joint name="ee_x" type="slide" axis="1 0 0" range="{lo[0]} {hi[0]}" damping="0.5"/>
      <joint name="ee_y" type="slide" axis="0 1 0" range="{lo[1]} {hi[1]}" damping="0.5"/>
      <joint name="ee_z" type="slide" axis="0 0 1" range="{lo[2]} {hi[2]}" damping="0.5"/>
      <inertial pos="0 0 0" mass="0.3" diaginertia="1e-4 1e-4 1e-4"/>
      <geom name="fingertip" type="sphere" size="{FINGERTIP_RADIUS}" rgba="0.85 0.85 0.88 1"
            contype="2" conaffinity="2" friction="0.4 0.005 0.0001"/>
    </body>
{''.join(slots)}
  </worldbody>
  <actuator>
{actuators}
  </actuator>
  <sensor>
{sensors}
  </sensor>
</mujoco>
"""


def _class_inertia(name: str) -> np.ndarray:
    ex, ey, ez = CLASS_SIZES[name]
    m = OBJECT_MASS
    if name == "cube":
        return m / 12.0 * np.array([ey**2 + ez**2, ex**2 + ez**2, ex**2 + ey**2])
    if name == "ball":
        return np.full(3, 0.4 * m * (ex / 2) ** 2)
    r, h = ex / 2, ez
    side = m * (3 * r**2 + h**2) / 12.0
    return np.array([side, side, 0.5 * m * r**2])


def push_path(center_xy, cls: str, direction: str, footprint: float | None = None):
    """Start and end (x, y in m) of a push of an object of class ``cls`` centred at
    ``center_xy``: the start is where the fingertip comes down behind the object, the end is
    where the object's centre is once the push has clearly succeeded. Returns
    ``((start_x, start_y), (end_x, end_y))``. ``footprint``: the object's footprint radius
    (m), for a procedural shape; by default the class's."""
    ux, uy = DIRECTIONS[direction][:2].tolist()
    x, y = float(center_xy[0]), float(center_xy[1])
    back = (CLASS_FOOTPRINT[cls] if footprint is None else footprint) + FINGERTIP_RADIUS + 0.025
    ahead = PUSH_DISTANCE + 0.04
    return (x - ux * back, y - uy * back), (x + ux * ahead, y + uy * ahead)


def _segment_distance(px, py, ax, ay, bx, by) -> float:
    """Distance from point p to the segment a-b (plain floats: called in tight loops)."""
    abx, aby = bx - ax, by - ay
    length2 = abx * abx + aby * aby
    t = 0.0
    if length2 > 0.0:
        t = min(1.0, max(0.0, ((px - ax) * abx + (py - ay) * aby) / length2))
    return math.hypot(px - ax - t * abx, py - ay - t * aby)


# What a snapshot keeps: enough to continue the simulation exactly (MuJoCo's integration state).
_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION

# Contact bits: objects collide with everything; the fingertip (bit 2) only with objects, so
# it can skim the table without friction and the table never blocks it.
_OBJECT_CONTYPE = 1 | 2
_OBJECT_CONAFFINITY = 1 | 2


class TabletopEnv(gymnasium.Env):
    """Push/touch primitives on a table from an instruction; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        width: int = 64,
        height: int = 64,
        with_segmentation: bool = True,
        max_episode_steps: int = 60,
        render_mode: str | None = None,
        depth_noise=False,
        objects: str = "primitives",
        shift=None,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} not in {self.metadata['render_modes']}")
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.with_segmentation = bool(with_segmentation)
        self.max_episode_steps = int(max_episode_steps)
        self.depth_noise = DepthNoise.from_option(depth_noise)
        self._noise_rng: np.random.Generator | None = None  # spawned by reset() with depth noise

        self.objects = objects
        if objects not in OBJECT_SETS:
            raise ValueError(f"objects {objects!r} not in {OBJECT_SETS}")
        #: The randomisation (sim/worlds/shift.py): None, the default, changes nothing.
        self.shift = Shift.from_option(shift)
        self._randomizer = Randomizer(self.shift) if self.shift is not None else None
        if self.shift is not None and self.shift.depth_noise and self.depth_noise is None:
            self.depth_noise = DepthNoise()
        distractors = self.shift.distractors if self.shift is not None else 0
        if distractors and objects != "primitives":
            raise ValueError(f"shift distractors={distractors} needs objects='primitives', got {objects!r}")
        self._slots = MAX_OBJECTS + distractors  # object slots: distractors get their own
        #: The current scene's procedural objects (``objects="shapes"``; empty otherwise).
        self.shapes: list[procedural_objects.ProceduralObject] = []
        self._load_model(build_mjcf(max(self.width, self.height), n_slots=self._slots),
                         [[f"obj{i}_{c}" for c in CLASS_NAMES] for i in range(self._slots)])

        self.action_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self._act_low = self.action_space.low.astype(np.float64)
        self._act_high = self.action_space.high.astype(np.float64)
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (self.height, self.width, 3), np.uint8),
            "depth": spaces.Box(0.0, np.inf, (self.height, self.width), np.float32),
            "instruction": spaces.Text(
                max_length=INSTRUCTION_MAX_LEN, min_length=1, charset=INSTRUCTION_CHARSET),
            "proprio": spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
        })

        self._scene: dict[str, Any] | None = None  # set by reset()
        self._rgb: np.ndarray | None = None
        self._lookahead = False  # True while an expert looks ahead: steps skip rendering

    def _load_model(self, xml: str, slot_geom_names: list[list[str]]) -> None:
        """Compile the world and cache the views every step and reset use (once per env; per
        scene with ``objects="shapes"``). ``slot_geom_names``: each slot's geoms, by name."""
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        previous = getattr(self, "renderer", None)
        if previous is not None:  # a new model needs its own GL context objects
            previous.close()
        self.renderer = RGBDRenderer(self.model, "front", self.width, self.height)

        m = self.model
        name2id = lambda kind, name: mujoco.mj_name2id(m, kind, name)  # noqa: E731
        self._body_ids = np.array(
            [name2id(mujoco.mjtObj.mjOBJ_BODY, f"obj{i}") for i in range(self._slots)])
        # geom id of (slot, class index); with shapes, each slot's one geom
        self._slot_geoms = np.array(
            [[name2id(mujoco.mjtObj.mjOBJ_GEOM, name) for name in names] for names in slot_geom_names])
        self._obj_qpos = np.array(
            [m.jnt_qposadr[name2id(mujoco.mjtObj.mjOBJ_JOINT, f"obj{i}_free")]
             for i in range(self._slots)])
        self._obj_qpos_index = self._obj_qpos[:, None] + np.arange(7)  # xyz + quaternion
        # Unused slots wait on the hidden shelf, out of sight and out of reach.
        self._parked_poses = np.array(
            [[*_parking_position(i), 1.0, 0.0, 0.0, 0.0] for i in range(self._slots)])
        self._class_inertia = np.array([_class_inertia(c) for c in CLASS_NAMES])
        self._class_half_height = [float(CLASS_SIZES[c][2] / 2) for c in CLASS_NAMES]
        self._color_rgba = {name: (*rgb, 1.0) for name, rgb in COLORS.items()}
        # Class index each slot shows now (None: unused); "unset" forces the first write.
        self._slot_shown: list = ["unset"] * self._slots
        ee_joints = [name2id(mujoco.mjtObj.mjOBJ_JOINT, f"ee_{axis}") for axis in "xyz"]
        self._ee_qpos = m.jnt_qposadr[ee_joints]
        self._ee_dof = m.jnt_dofadr[ee_joints]
        # The contact sensors are consecutive "found" counts, one per slot. sensordata is a
        # view on MjData's fixed buffer, so this slice stays valid for the env's lifetime.
        adr = m.sensor_adr[name2id(mujoco.mjtObj.mjOBJ_SENSOR, "touch0")]
        self._touch_counts = self.data.sensordata[adr:adr + self._slots]
        adr = m.sensor_adr[name2id(mujoco.mjtObj.mjOBJ_SENSOR, "touch_any")]
        self._touch_any = self.data.sensordata[adr:adr + 1]
        # Likewise for the arrays read every step (each attribute access builds a new view),
        # and for the model arrays each reset rewrites.
        self._geom_contype, self._geom_conaffinity = m.geom_contype, m.geom_conaffinity
        self._geom_group, self._geom_rgba = m.geom_group, m.geom_rgba
        self._body_contype, self._body_conaffinity = m.body_contype, m.body_conaffinity
        self._body_inertia = m.body_inertia
        d = self.data
        self._qpos, self._qvel, self._ctrl = d.qpos, d.qvel, d.ctrl
        self._xpos, self._xquat = d.xpos, d.xquat
        assert list(self._ee_qpos) == list(range(self._ee_qpos[0], self._ee_qpos[0] + 3))
        assert list(self._ee_dof) == list(range(self._ee_dof[0], self._ee_dof[0] + 3))
        self._ee_q = slice(int(self._ee_qpos[0]), int(self._ee_qpos[0]) + 3)
        self._ee_v = slice(int(self._ee_dof[0]), int(self._ee_dof[0]) + 3)

        mujoco.mj_forward(m, self.data)
        # The camera is fixed: its model is computed once per model (and per shifted episode).
        self._camera = self.renderer.camera_model(self.data)
        if self._randomizer is not None:
            self._randomizer.bind(m, "front", [np.array([name2id(mujoco.mjtObj.mjOBJ_GEOM, "table")])])

    # --- scene sampling -----------------------------------------------------------------

    def _sample_scene(self) -> dict:
        """Objects, instruction and targets, all drawn from ``self.np_random``.

        Each attempt takes one vector of uniforms from the generator and reads its choices off
        it in order (numpy's per-call overhead, ~4-20 us a call, made many small draws the
        bulk of a reset).
        """
        rng = self.np_random
        while True:
            uniforms = iter(rng.random(48).tolist())

            # These closures run only inside this iteration, so binding late is harmless.
            def pick(count: int) -> int:
                return min(int(next(uniforms) * count), count - 1)  # noqa: B023

            def chance(share: float) -> bool:
                return next(uniforms) < share  # noqa: B023

            if self.objects == "shapes":
                n = 1 + pick(SHAPES_MAX_OBJECTS)
                classes = [procedural_objects.FAMILIES[pick(len(procedural_objects.FAMILIES))]
                           for _ in range(n)]
            else:
                n = MIN_OBJECTS + pick(MAX_OBJECTS - MIN_OBJECTS + 1)
                classes = [CLASS_NAMES[pick(len(CLASS_NAMES))] for _ in range(n)]
            colors = [COLOR_NAMES[pick(len(COLOR_NAMES))] for _ in range(n)]
            chosen = pick(n)
            color_only = chance(_COLOR_ONLY_SHARE)
            ambiguous = chance(_AMBIGUOUS_SHARE)
            task = "push" if chance(_PUSH_SHARE) else "touch"
            direction = list(DIRECTIONS)[pick(len(DIRECTIONS))] if task == "push" else None
            shape = None if color_only else classes[chosen]

            def fits(i):
                return colors[i] == colors[chosen] and (shape is None or classes[i] == shape)  # noqa: B023

            # Ambiguity only where intended: first recolour any other object that fits the
            # description, then, for an ambiguous scene, give one other object the chosen
            # one's colour (and shape, unless the instruction names only the colour).
            others = [c for c in COLOR_NAMES if c != colors[chosen]]
            for i in range(n):
                if i != chosen and fits(i):
                    colors[i] = others[pick(len(others))]
            if ambiguous:
                twin = (chosen + 1 + pick(n - 1)) % n
                colors[twin] = colors[chosen]
                if shape is not None:
                    classes[twin] = shape
            targets = [i for i in range(n) if fits(i)]
            yaw = np.array([math.pi * (2.0 * next(uniforms) - 1.0) for _ in range(n)])
            start = np.array([0.3 * next(uniforms) - 0.15, 0.3 * next(uniforms) - 0.15, EE_START_Z])
            shapes, foot = None, None
            if self.objects == "shapes":
                shapes = [procedural_objects.make_object(c, rng) for c in classes]
                foot = [s.footprint_radius for s in shapes]
            xy = self._sample_positions(classes, targets if task == "push" else [], direction, foot)
            if xy is None:
                continue  # too crowded for this task (rare): draw a new scene
            noun = None if shape is None else FAMILY_NOUNS.get(shape, shape)
            return {
                "classes": classes, "colors": colors, "xy": xy, "yaw": yaw,
                "task": task, "direction": direction, "targets": targets,
                "instruction": make_instruction(task, colors[chosen], noun, direction),
                "ee_start": start, "shapes": shapes,
            }

    def _sample_positions(self, classes, pushed, direction, foot=None) -> np.ndarray | None:
        """Object centres on the table, footprints at least ``_MIN_GAP`` apart (``_MIN_GAP_SHAPES``
        for procedural shapes).

        One batch of random candidates is drawn; objects are placed one by one, each on the
        first candidate that clears everything placed so far. For a push task the targets
        (``pushed``) are placed first, each only where its whole push path (see
        :func:`push_path`) stays on the table and clear of the objects already placed, and
        every later object keeps clear of those paths, so each target can be pushed without
        touching anything else. None if the batch runs out (rare).

        Plain Python with early exit: the table is sparse, so the first few candidates
        usually fit, and this beats vectorised numpy on arrays this small.
        """
        unit = self.np_random.random((128, 2))
        candidates = (_SPAWN_LOW + (_SPAWN_HIGH - _SPAWN_LOW) * unit).tolist()
        foot_given = foot is not None
        gap = _MIN_GAP_SHAPES if foot_given else _MIN_GAP
        if foot is None:
            foot = [CLASS_FOOTPRINT[c] for c in classes]
        ee_limit = float(EE_HIGH[0]) - 0.02
        table_limit = _TABLE_HALF - 0.04
        xy: list[Any] = [None] * len(classes)  # (x, y) of each object once placed
        placed: list[int] = []
        paths: list[tuple[float, float, float, float, float]] = []  # start, end, half-width
        used = [False] * len(candidates)
        shapes = foot_given
        behind = self.np_random.random((len(classes), 3)).tolist() if shapes else []
        for i in list(pushed) + [j for j in range(len(classes)) if j not in pushed]:
            half_width = max(foot[i], FINGERTIP_RADIUS)
            first = []
            if shapes and placed:
                # Most shapes (70%) try first to stand just behind one placed already, as seen
                # from the camera (+x, within 35 degrees): cluttered objects hide each other.
                u_pick, u_angle, u_far = behind[i]
                if u_pick < 0.7:
                    j = placed[min(int(u_far * len(placed)), len(placed) - 1)]
                    angle = math.radians(70.0 * (u_angle - 0.5))
                    reach = foot[i] + foot[j] + gap + 0.02 * u_far
                    first = [(xy[j][0] + reach * math.cos(angle), xy[j][1] + reach * math.sin(angle))]
            for c, (x, y) in enumerate(first + candidates):
                c -= len(first)
                if c >= 0 and used[c]:
                    continue
                if max(abs(x), abs(y)) + foot[i] > _TABLE_HALF - 0.01:  # on the table
                    continue
                if any(math.hypot(x - xy[j][0], y - xy[j][1]) < foot[j] + foot[i] + gap
                       for j in placed):
                    continue
                if any(_segment_distance(x, y, *path[:4]) < path[4] + foot[i] + _PATH_GAP
                       for path in paths):
                    continue
                if i in pushed:
                    (sx, sy), (ex, ey) = push_path((x, y), classes[i], direction, foot[i])
                    if max(abs(sx), abs(sy)) > ee_limit or max(abs(ex), abs(ey)) > table_limit:
                        continue
                    if any(_segment_distance(xy[j][0], xy[j][1], sx, sy, ex, ey)
                           < half_width + foot[j] + _PATH_GAP for j in placed):
                        continue
                    paths.append((sx, sy, ex, ey, half_width))
                xy[i] = (x, y)
                if c >= 0:
                    used[c] = True
                placed.append(i)
                break
            else:
                return None
        return np.array(xy, dtype=float)

    def _add_distractors(self, scene: dict, count: int) -> None:
        """Append `count` objects the instruction does not name (a colour other than the
        targets', any class) to `scene`, on free table space clear of every object and push
        path, drawn from the shift's generator (the scene's own draws are untouched). Where
        the table is too full, fewer."""
        if not count:
            scene["distractors"] = []
            return
        assert self._randomizer is not None
        rng = self._randomizer.rng
        named = scene["colors"][scene["targets"][0]]
        colors = [c for c in COLOR_NAMES if c != named]
        xy = [tuple(p) for p in np.asarray(scene["xy"]).tolist()]
        foot = [CLASS_FOOTPRINT[c] for c in scene["classes"]]
        paths = []
        if scene["task"] == "push":
            for t in scene["targets"]:
                (sx, sy), (ex, ey) = push_path(xy[t], scene["classes"][t], scene["direction"])
                paths.append((sx, sy, ex, ey, max(foot[t], FINGERTIP_RADIUS)))
        added: list[int] = []
        for x, y in (_SPAWN_LOW + (_SPAWN_HIGH - _SPAWN_LOW) * rng.random((256, 2))).tolist():
            if len(added) == count:
                break
            cls = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
            r = CLASS_FOOTPRINT[cls]
            if any(math.hypot(x - px, y - py) < f + r + _MIN_GAP for (px, py), f in zip(xy, foot)):
                continue
            if any(_segment_distance(x, y, *p[:4]) < p[4] + r + _PATH_GAP for p in paths):
                continue
            added.append(len(xy))
            xy.append((x, y))
            foot.append(r)
            scene["classes"].append(cls)
            scene["colors"].append(colors[int(rng.integers(len(colors)))])
        scene["xy"] = np.array(xy, dtype=float)
        scene["yaw"] = np.concatenate([scene["yaw"], rng.uniform(-math.pi, math.pi, len(added))])
        scene["distractors"] = added

    def _apply_scene(self, scene: dict) -> None:
        """Write the scene into the compiled model and a freshly reset MjData.

        Each slot shows (group 0) and collides with the geom of its class; the others are
        hidden (group 4, not rendered) and collide with nothing, except that an unused slot's
        cube collides with the parking shelf (bit 1) so it rests there instead of falling
        forever. Only what changed since the last scene is rewritten (scalar writes into
        cached views: this runs at every reset).
        """
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        n = len(scene["classes"])
        if scene["shapes"] is not None:  # compiled for this scene: only the poses to write
            for slot in range(self._slots):
                qadr = int(self._obj_qpos[slot])
                if slot >= n:
                    self._qpos[qadr:qadr + 7] = self._parked_poses[slot]
                    continue
                x, y = scene["xy"][slot]
                half_yaw = 0.5 * float(scene["yaw"][slot])
                self._qpos[qadr:qadr + 7] = (x, y, float(scene["shapes"][slot].extent[2] / 2),
                                             math.cos(half_yaw), 0.0, 0.0, math.sin(half_yaw))
            self._qpos[self._ee_q] = scene["ee_start"]
            mujoco.mj_forward(m, d)
            return
        contype, conaffinity, group = self._geom_contype, self._geom_conaffinity, self._geom_group
        for slot in range(self._slots):
            shown = CLASS_NAMES.index(scene["classes"][slot]) if slot < n else None
            if shown != self._slot_shown[slot]:
                for k, geom in enumerate(self._slot_geoms[slot].tolist()):
                    bits = _OBJECT_CONTYPE if k == shown else (1 if shown is None and k == 0 else 0)
                    contype[geom] = conaffinity[geom] = bits
                    group[geom] = 0 if k == shown else 4
                # The broadphase filters bodies by the OR of their geoms' bits, fixed at
                # compile time from the (all-off) geoms, so it has to follow the geoms here.
                body = int(self._body_ids[slot])
                body_bits = 1 if shown is None else _OBJECT_CONTYPE
                self._body_contype[body] = self._body_conaffinity[body] = body_bits
                if shown is not None:
                    self._body_inertia[body] = self._class_inertia[shown]
                self._slot_shown[slot] = shown
            qadr = int(self._obj_qpos[slot])
            if shown is None:
                self._qpos[qadr:qadr + 7] = self._parked_poses[slot]
                continue
            self._geom_rgba[self._slot_geoms[slot, shown]] = self._color_rgba[scene["colors"][slot]]
            x, y = scene["xy"][slot]
            half_yaw = 0.5 * float(scene["yaw"][slot])
            self._qpos[qadr:qadr + 7] = (x, y, self._class_half_height[shown],
                                         math.cos(half_yaw), 0.0, 0.0, math.sin(half_yaw))
        self._qpos[self._ee_q] = scene["ee_start"]
        mujoco.mj_forward(m, d)

    # --- Gymnasium API ------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        scene = self._sample_scene()
        self._scene = scene
        if self.depth_noise is not None:
            self._noise_rng = noise_generator(self.np_random)
        shifted = self._randomizer
        if shifted is not None:  # after the noise's generator: the noise is the same with a shift
            shifted.start(self.np_random)
            self._add_distractors(scene, shifted.distractor_count())
        self._n = len(scene["classes"])
        if scene["shapes"] is not None:
            self.shapes = list(scene["shapes"])
            self._load_model(
                build_mjcf(max(self.width, self.height), list(zip(self.shapes, scene["colors"]))),
                [[f"obj{i}_mesh" if i < self._n else f"obj{i}_cube"] for i in range(self._slots)])
            self._object_sizes = [s.extent.copy() for s in self.shapes]
        else:
            self._object_sizes = [CLASS_SIZES[c] for c in scene["classes"]]
        self._targets = list(scene["targets"])
        self._target_bodies = self._body_ids[self._targets]
        self._direction = (DIRECTIONS[scene["direction"]] if scene["task"] == "push"
                           else np.zeros(3))
        if shifted is not None:
            shifted.apply_model()
        self._apply_scene(scene)
        if shifted is not None:
            for slot in range(self._n):
                geom = self.object_geom(slot)
                self._geom_rgba[geom, :3] = shifted.recolor(self._geom_rgba[geom])
            self.renderer.fovy_changed()
            self._camera = self.renderer.camera_model(self.data)
        # geom id -> object id (slot index); -1 (background) indexes the lookup's last entry.
        self._geom_to_object = np.full(self.model.ngeom + 1, -1, dtype=np.int32)
        self._geom_to_object[self._slot_geoms[: self._n].ravel()] = np.repeat(
            np.arange(self._n, dtype=np.int32), self._slot_geoms.shape[1])
        self._object_bodies = self._body_ids[: self._n]
        self._start_pos = self._xpos[self._object_bodies]  # fancy indexing copies
        self._steps = 0
        self._first_touch = None
        self._touched: set[int] = set()
        self._wrong_touch = False
        self._success = False
        self._phi = self._potential()
        obs, seg = self._observe(contact=False)
        return obs, self._info(seg, action_clipped=False)

    def step(self, action):
        act, clipped = check_action(action, self._act_low, self._act_high)
        if self._randomizer is not None:
            act = self._randomizer.delay(act)
        m, d = self.model, self.data
        self._ctrl[:] = act * MAX_SPEED
        touch_any, touch_counts, n = self._touch_any, self._touch_counts, self._n
        # Step substep by substep so that a brief graze between two control ticks still
        # counts as a touch.
        for _ in range(SUBSTEPS):
            mujoco.mj_step(m, d)
            if touch_any[0] > 0:
                self._register_touches(np.flatnonzero(touch_counts[:n]))
        self._steps += 1

        assert self._scene is not None  # set by reset() (Gymnasium: reset before step)
        if self._scene["task"] == "touch":
            self._success = (not self._wrong_touch) and self._first_touch in self._targets
        else:
            self._success = (not self._wrong_touch) and bool(
                self._push_displacement().max() >= PUSH_DISTANCE)
        phi = self._potential()
        reward = 2.0 * (self._phi - phi) + (1.0 if self._success else 0.0)
        self._phi = phi
        terminated = bool(self._success or self._wrong_touch)
        truncated = bool(not terminated and self._steps >= self.max_episode_steps)
        obs, seg = self._observe(contact=bool(touch_any[0] > 0 and touch_counts[:n].any()))
        return obs, float(reward), terminated, truncated, self._info(seg, action_clipped=clipped)

    def object_geom(self, object_id: int) -> int:
        """The geom that shows object ``object_id`` of the current scene."""
        shown = self._slot_shown[object_id] if self.objects == "primitives" else 0
        return int(self._slot_geoms[object_id, shown])

    def render(self):
        if self.render_mode == "rgb_array":
            return self._rgb.copy()
        return None

    def close(self):
        if getattr(self, "renderer", None) is not None:
            self.renderer.close()
            self.renderer = None

    # --- internals ----------------------------------------------------------------------

    def _register_touches(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            if self._first_touch is None:
                self._first_touch = s
            self._touched.add(s)
            if s not in self._targets:
                self._wrong_touch = True

    def _push_displacement(self) -> np.ndarray:
        moved = self._xpos[self._target_bodies] - self._start_pos[self._targets]
        return moved @ self._direction

    def _potential(self) -> float:
        offset = self._xpos[self._target_bodies] - self._qpos[self._ee_q]
        dist = np.sqrt((offset * offset).sum(axis=1))
        assert self._scene is not None  # set by reset()
        if self._scene["task"] == "push":
            dist = dist + np.maximum(0.0, PUSH_DISTANCE - self._push_displacement())
        return float(dist.min())

    def _observe(self, contact: bool):
        if self._lookahead:  # expert look-ahead (sim/experts.expert_chunk): no pixels
            rgb = depth = geom_ids = None
        else:
            rgb, depth, geom_ids = self.renderer.render(self.data,
                                                        segmentation=self.with_segmentation)
            if self._randomizer is not None:
                rgb = self._randomizer.image(rgb)
            if self.depth_noise is not None:
                assert self._noise_rng is not None  # reset() spawns it when depth_noise is on
                depth = self.depth_noise.apply(depth, self._camera.K[0, 0], self._noise_rng)
            self._rgb = rgb
        assert self._scene is not None  # set by reset()
        proprio = np.zeros(PROPRIO_DIM, dtype=np.float32)
        proprio[0:3] = self._qpos[self._ee_q]
        proprio[3:6] = self._qvel[self._ee_v]
        proprio[6] = 1.0 if contact else 0.0
        obs = {"rgb": rgb, "depth": depth, "instruction": self._scene["instruction"],
               "proprio": proprio}
        seg = None
        if geom_ids is not None:
            seg = self._geom_to_object[geom_ids]
        return obs, seg

    def _info(self, seg, action_clipped: bool) -> dict:
        positions = self._xpos[self._object_bodies]  # fancy indexing copies
        quaternions = self._xquat[self._object_bodies]
        assert self._scene is not None  # set by reset()
        classes, colors = self._scene["classes"], self._scene["colors"]
        objects = [
            {"id": slot, "class": classes[slot], "color": colors[slot],
             "position": positions[slot], "quaternion": quaternions[slot],
             "size": self._object_sizes[slot].copy()}
            for slot in range(self._n)
        ]
        info = {
            "camera": self._camera.as_dict(),
            "objects": objects,
            "target_ids": list(self._targets),
            "outcome": "none" if self._first_touch is None else f"touched:{self._first_touch}",
            "is_success": bool(self._success),
            "action_clipped": bool(action_clipped),
            "task": self._scene["task"],
            "direction": self._direction.copy(),
        }
        if seg is not None:
            info["segmentation"] = seg
        if self._randomizer is not None:
            info["distractor_ids"] = list(self._scene.get("distractors", ()))
        return info

    # --- snapshots (expert look-ahead labels, DAgger) -----------------------------------

    def snapshot(self) -> tuple:
        """Everything a step reads or writes: the MuJoCo integration state and the episode
        bookkeeping. :meth:`restore` puts it back exactly."""
        state = np.empty(mujoco.mj_stateSize(self.model, _STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, state, _STATE_SPEC)
        return (state, self._steps, self._first_touch, set(self._touched), self._wrong_touch,
                self._success, self._phi,
                None if self._randomizer is None else self._randomizer.snapshot())

    def restore(self, snap: tuple) -> None:
        state, self._steps, self._first_touch, touched, self._wrong_touch, self._success, \
            self._phi, pending = snap
        self._touched = set(touched)
        if self._randomizer is not None:
            self._randomizer.restore(pending)
        mujoco.mj_setState(self.model, self.data, state, _STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)

    # --- privileged state for scripted experts -----------------------------------------

    @property
    def privileged_state(self) -> dict:
        """Ground truth an expert may use: fingertip position, object positions by id, the
        targets, the task, the push direction word and, under a control delay, the action
        already on its way (``pending_action``: what the next step applies whatever is sent
        now; None without a delay)."""
        assert self._scene is not None  # set by reset()
        return {
            "pending_action": (None if self._randomizer is None
                               else self._randomizer.pending(len(self._act_low))),
            "ee": self._qpos[self._ee_q].copy(),
            "positions": self._xpos[self._object_bodies],
            "start_positions": self._start_pos.copy(),
            "classes": list(self._scene["classes"]),
            "target_ids": list(self._targets),
            "task": self._scene["task"],
            "direction": self._scene["direction"],
        }
