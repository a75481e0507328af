"""A rosbag2 (MCAP) of the sim graph or a robot -> a LeRobotDataset v3 (lerobot_v3.py).

What the bag must hold (the topics nodes/recorder.py records; rosbags reads them, no ROS install
needed): ``camera/color/image_raw``, ``camera/depth/image_raw``, ``joint_states``, ``instruction``,
the command topic (``servo/delta_twist_cmds`` for an arm, ``cmd_vel`` for a vehicle,
``joint_commands`` for a registered world's joints layout, e.g. Meta-World's 4-D arm + gripper),
``policy_node/command_source`` and, for a vehicle, ``odom``. Any registered world converts.
A bag of the sim graph also holds ``sim/expert_features`` (the expert's privileged features,
sim/experts FEATURE_NAMES): they become the dataset's ``observation.privileged``, the targets of
the model's training-only heads, so BC from such a dataset learns what BC from the live expert
learns (a robot's dataset has none; its model trains without them).

Time alignment. A frame is the colour image; the depth image, joint state and odometry of a
frame are the messages stamped with the colour image's stamp (the sim bridge and camera
drivers stamp them alike). Its action is the command that *answers* it: the policy node
publishes, right after each command, the camera stamp that command answers on
``policy_node/command_source``; each source is paired with the last command logged before it
(if that command came after the previous source: otherwise the frame's own command was lost
and the frame is left out, never labelled with an older one), and a frame takes the first
command that answers it. That needs the bag's log times in publish
order across topics, as nodes/recorder.py logs them (the DDS publish time). A bag logged at
arrival times (``ros2 bag record``) pairs right while the recorder keeps up; when it falls
behind, an answer can slip to the next command (1 frame in 1 of 4 runs of the DDS test).
A frame that no command answers (one the policy skipped, or the first frame sent before
anyone listened) is left out and counted.
The command goes back to the world's normalised action by control/commands.py's inverse, the
same conversion the sim bridge applies before stepping (a vehicle's with its speed at that
frame).

Episode boundaries come from the instruction topic: every instruction message starts an
episode (the same text again too), and a frame belongs to the last instruction received before
it, within half a frame interval (the sim bridge sends an episode's instruction just before
its first frame, and the two topics may reach the recorder in either order; the interval is
the control period, or the bag's typical one when the graph ran faster, in lockstep).
Frames before the first instruction are left out.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embodied_stack.control.commands import VehicleScale
from embodied_stack.sim.datasets.lerobot_v3 import DatasetWriter
from embodied_stack.sim.experts import FEATURE_NAMES
from embodied_stack.sim.worlds import ACTION_NAMES, command_scale, control_rate_hz, world_spec

#: The command topic of each command layout (control/policy_loop.py's kinds).
COMMAND_TOPICS = {"arm": "servo/delta_twist_cmds", "vehicle": "cmd_vel", "joints": "joint_commands"}


@dataclass
class ConversionReport:
    """What a conversion found: episodes written and, per episode, the camera stamps (ns) of
    its frames in order; frames left out and why."""

    dataset: Path
    episodes: int = 0
    frames: int = 0
    stamps: list[list[int]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    state_names: list[str] = field(default_factory=list)  #: joint_states' names
    unanswered_frames: int = 0  #: no command answers them
    incomplete_frames: int = 0  #: their depth / joint state / odometry / expert features are not in the bag
    #: camera stamps (ns) of kept frames answered only after the next frame was published: the
    #: world had moved on (a lockstep bridge's backstop stepped it on a loaded machine), so the
    #: command was made and applied at a later state than its frame's (a vehicle's speed loop
    #: closes on the newer odometry) and its label, inverted at the frame's own speed, may
    #: differ from what the policy chose for that frame. None in a lockstep graph that keeps up.
    late_stamps: list[int] = field(default_factory=list)
    frames_before_instruction: int = 0
    privileged: bool = False  #: the bag has the sim expert's features (sim/expert_features)


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_to_array(msg, where: str) -> np.ndarray:
    """sensor_msgs/Image (as rosbags deserialises it) -> rgb uint8 (H, W, 3) or depth
    float32 (H, W) in metres (32FC1 as is, 16UC1 millimetres scaled; 0 = no return)."""
    h, w, enc = int(msg.height), int(msg.width), str(msg.encoding)
    data = np.asarray(msg.data, np.uint8)
    if enc in ("rgb8", "bgr8"):
        img = data.reshape(h, int(msg.step))[:, : w * 3].reshape(h, w, 3)
        return np.ascontiguousarray(img[:, :, ::-1] if enc == "bgr8" else img)
    if enc in ("32FC1", "16UC1"):
        dtype = np.dtype(np.float32 if enc == "32FC1" else np.uint16)
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
        row = int(msg.step) // dtype.itemsize
        depth = np.frombuffer(data.tobytes(), dtype).reshape(h, row)[:, :w].astype(np.float32)
        return depth / 1000.0 if enc == "16UC1" else depth
    raise ValueError(f"{where}: image encoding {enc!r} not supported (rgb8, bgr8, 32FC1, 16UC1)")


def _read(bag: Path, topics: dict[str, str]) -> dict[str, list]:
    """Every message of the wanted topics: topic key -> [(log time ns, message)], in log order."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    out: dict[str, list] = {k: [] for k in topics}
    by_name = {name: key for key, name in topics.items()}
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic in by_name]
        for conn, t, raw in reader.messages(connections=conns):
            out[by_name[conn.topic]].append((t, typestore.deserialize_cdr(raw, conn.msgtype)))
    for messages in out.values():  # (log times need not be written in order)
        messages.sort(key=lambda m: m[0])
    return out


def _command(msg) -> np.ndarray:
    """A command message's values: a (stamped) Twist as [vx, vy, vz, wz], a Float64MultiArray
    (joint commands) as its data."""
    if hasattr(msg, "data"):
        return np.asarray(msg.data, np.float64)
    twist = msg.twist if hasattr(msg, "twist") else msg
    return np.array([twist.linear.x, twist.linear.y, twist.linear.z, twist.angular.z])


def episodes_from_bag(bag: str | os.PathLike, world: str, namespace: str = "",
                      report: ConversionReport | None = None
                      ) -> Iterator[tuple[dict[str, np.ndarray], str]]:
    """The bag's episodes as (frames, instruction): frames holds "observation.images.color"
    (n, H, W, 3) uint8, "observation.depth" (n, H, W, 1) float32 m, "observation.state"
    (n, P) float32 and "action" (n, A) float32 (the world's normalised action). `report`, when
    given, is filled in as episodes are produced."""
    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"{bag}: no such bag")
    kind = world_spec(world).embodiment.command_kind  # (unknown: lists the registered worlds)
    report = report if report is not None else ConversionReport(bag)
    vehicle = kind == "vehicle"
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    topics = {"color": f"{ns}/camera/color/image_raw", "depth": f"{ns}/camera/depth/image_raw",
              "joints": f"{ns}/joint_states", "instruction": f"{ns}/instruction",
              "command": f"{ns}/{COMMAND_TOPICS[kind]}",
              "source": f"{ns}/policy_node/command_source", "odom": f"{ns}/odom",
              "features": f"{ns}/sim/expert_features"}
    msgs = _read(bag, topics)
    required = ("color", "instruction", "command", "source", "joints")
    for key in required:
        if not msgs[key]:
            raise ValueError(f"{bag}: no messages on {topics[key]} (needed to build a dataset: "
                             f"{', '.join(topics[k] for k in required)})")
    scale = command_scale(world)
    depth = {_stamp_ns(m.header): m for _, m in msgs["depth"]}
    joints = {_stamp_ns(m.header): m for _, m in msgs["joints"]}
    odom = {_stamp_ns(m.header): m for _, m in msgs["odom"]}
    features = {_stamp_ns(m.header): np.asarray(m.position, np.float32) for _, m in msgs["features"]}
    report.privileged = bool(features)
    # Each command_source goes with the last command logged before it, if that command came
    # after the previous command_source: the node publishes each command just before its
    # source, so a command logged before the previous source means this frame's own command
    # never reached the bag (a reliable queue that overflowed under load). The frame is then
    # left out as unanswered rather than labelled with an older command.
    command_times = [t for t, _ in msgs["command"]]
    answer: dict[int, tuple[int, np.ndarray]] = {}  # frame stamp -> (command's log time, values)
    previous_source = -1
    for t, src in msgs["source"]:
        k = bisect_right(command_times, t) - 1
        if k >= 0 and command_times[k] > previous_source:
            answer.setdefault(_stamp_ns(src), (command_times[k], _command(msgs["command"][k][1])))
        previous_source = t
    # An instruction may be logged a little after its episode's first frame (two topics):
    # half a frame interval of slack, the nominal one or, for a graph stepping faster than
    # real time (lockstep), the typical one in the bag.
    frame_times = np.array([t for t, _ in msgs["color"]], np.int64)
    typical = float(np.median(np.diff(frame_times))) if len(frame_times) > 1 else np.inf
    slack_ns = int(0.5 * min(1e9 / control_rate_hz(world), typical))
    starts = [t for t, _ in msgs["instruction"]]
    texts = [str(m.data) for _, m in msgs["instruction"]]
    names = report.state_names = [str(n) for n in msgs["joints"][0][1].name]
    current = -1
    rows: list[tuple] = []  # (stamp, rgb, depth, state, action, privileged features or None)

    def flush():
        if rows:
            report.episodes += 1
            report.frames += len(rows)
            report.stamps.append([r[0] for r in rows])
            report.tasks.append(texts[current])
            frames = {
                "observation.images.color": np.stack([r[1] for r in rows]),
                "observation.depth": np.stack([r[2] for r in rows])[..., None],
                "observation.state": np.stack([r[3] for r in rows]).astype(np.float32),
                "action": np.stack([r[4] for r in rows]).astype(np.float32),
            }
            if report.privileged:
                frames["observation.privileged"] = np.stack([r[5] for r in rows])
            return frames, texts[current]
        return None

    for i, (t, msg) in enumerate(msgs["color"]):
        episode = bisect_right(starts, t + slack_ns) - 1
        if episode < 0:
            report.frames_before_instruction += 1
            continue
        if episode != current:
            done = flush()
            if done is not None:
                yield done
            current, rows = episode, []
        stamp = _stamp_ns(msg.header)
        if stamp not in answer:
            report.unanswered_frames += 1
            continue
        if (stamp not in depth or stamp not in joints or (vehicle and stamp not in odom)
                or (features and stamp not in features)):
            report.incomplete_frames += 1
            continue
        state = np.asarray(joints[stamp].position, np.float32)
        if [str(n) for n in joints[stamp].name] != names:
            raise ValueError(f"{bag}: {topics['joints']} changes its joint names mid-bag "
                             f"({names} -> {list(joints[stamp].name)})")
        command_time, command = answer[stamp]
        if i + 1 < len(frame_times) and frame_times[i + 1] < command_time:
            report.late_stamps.append(stamp)
        if isinstance(scale, VehicleScale):
            speed = float(odom[stamp].twist.twist.linear.x)
            action = scale.to_action(np.array([command[0], command[3]]), speed)
        elif kind == "arm":
            action = scale.to_action(command[:3])
        else:  # joints: one entry per action name
            if len(command) != len(ACTION_NAMES[world]):
                raise ValueError(f"{bag}: {topics['command']} carries {len(command)} values, world "
                                 f"{world!r} has {len(ACTION_NAMES[world])} actions {ACTION_NAMES[world]}")
            action = scale.to_action(command)
        where = f"{bag}: {topics['color']} at {stamp} ns"
        rows.append((stamp, image_to_array(msg, where), image_to_array(depth[stamp], where),
                     state, action, features.get(stamp)))
    done = flush()
    if done is not None:
        yield done


def dataset_features(world: str, width: int, height: int, state_names: list[str],
                     privileged: bool = False) -> dict:
    """The features of a dataset recorded from a world's sim graph (`privileged`: with the
    expert's privileged features)."""
    out = {
        "observation.images.color": {"dtype": "video", "shape": [height, width, 3],
                                     "names": ["height", "width", "channels"]},
        "observation.depth": {"dtype": "float32", "shape": [height, width, 1],
                              "names": ["height", "width", "metres"]},
        "observation.state": {"dtype": "float32", "shape": [len(state_names)], "names": state_names},
        "action": {"dtype": "float32", "shape": [len(ACTION_NAMES[world])],
                   "names": ACTION_NAMES[world]},
    }
    if privileged:
        out["observation.privileged"] = {"dtype": "float32", "shape": [len(FEATURE_NAMES)],
                                         "names": list(FEATURE_NAMES)}
    return out


def bag_to_dataset(bag: str | os.PathLike, out: str | os.PathLike, world: str,
                   namespace: str = "", codec: str = "av1", progress: bool = True,
                   **writer_kwargs) -> ConversionReport:
    """Convert a bag to a LeRobotDataset v3 at `out` (written atomically); what was found.
    The dataset's robot_type is ``embodied_stack/<world>``, its fps the world's control rate."""
    from tqdm import tqdm

    report = ConversionReport(Path(out))
    writer = None
    bar = tqdm(desc=f"bag -> {Path(out).name}", unit="episode", disable=not progress)
    try:
        for frames, task in episodes_from_bag(bag, world, namespace, report):
            if writer is None:
                h, w = frames["observation.images.color"].shape[1:3]
                writer = DatasetWriter(out, control_rate_hz(world),
                                       dataset_features(world, w, h, report.state_names,
                                                        report.privileged),
                                       robot_type=f"embodied_stack/{world}", codec=codec,
                                       **writer_kwargs)
            writer.add_episode(frames, task)
            bar.update(1)
            bar.set_postfix_str(f"{report.frames} frames")
        if writer is None:
            raise ValueError(f"{bag}: no episode with an answered frame after an instruction")
        writer.finalize()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    return report
