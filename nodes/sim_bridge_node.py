"""sim_bridge_node: runs a world from embodied_stack.sim and speaks ROS like a robot's drivers.

Publishes `camera/color/image_raw` (rgb8), `camera/depth/image_raw` (32FC1 m), with
`compressed_format:=jpeg|png` also their image_transport `compressed` (colour; JPEG quality 95,
4:4:4: control/image_codecs.encode_color says why) and `compressedDepth` (depth: 32FC1 inverse
depth, PNG) topics as a network camera would,
`camera/color/camera_info`, `joint_states` (the world's proprio vector, one named entry per
element), `odom` (driving), `instruction` and, for worlds with objects, `scene/objects`
("colour noun, ..." of every object in the scene) (both transient-local, at every episode start), `/clock`
(simulated time; sim.launch.py remaps it to `/<robot>/clock` with several robots),
`sim/expert_action` (the scripted expert's normalised action for the frame just published, stamped
with it: a JointState, one entry per action dim named as the embodiment names them, the value in
`position`; for the `expert` backend), `sim/expert_features` (its privileged features alike,
sim/experts FEATURE_NAMES, NaN where none: recorded datasets keep them) and `/diagnostics` (episode
results: success, outcome, seed, steps; command latency).
Subscribes `servo/delta_twist_cmds` (TwistStamped, Tabletop), `cmd_vel` (TwistStamped or
Twist, Driving) or `joint_commands` (Float64MultiArray: a world spec's joints layout, e.g.
examples/worlds/reacher.py) and applies the latest command at the world's control rate, converted back to
the world's normalised action (control/commands.py) at every step: a car holds a cmd_vel as a
velocity setpoint, as a base's speed controller does (its speed kept, not the acceleration that
reached it). No command for `command_timeout_s`: a zero command (the arm holds, the car brakes,
joints get zero; a gripper channel holds its last command). `world` is any registered world
(`world_file`: adapter files that register more).

Modes: `realtime` steps on a timer at control rate x `realtime_factor`; `lockstep` steps once
per command, paced by the controller (at once on one answering the newest frame, after
`lockstep_answer_wait_s` on any other: sim/lockstep.py), with the timeout as backstop.
Stamps use the clock the graph runs on: the wall clock, or with `use_sim_time:=true` the
simulated time this node publishes on `/clock` (the world is then stepped on a steady timer,
not on the sim clock it drives). The camera->command latency is measured here, as the wall
time from publishing a frame to receiving the policy node's `policy_node/command_source`
record for its first command answering that frame.
The world steps once a node subscribes to the colour image; until then the log says, every
5 s, which topic in which namespace it waits on.
"""

from __future__ import annotations

import math
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, Header, String

from embodied_stack.nodes.conversions import (
    K_to_camera_info,
    depth_to_compressed_depth,
    depth_to_image,
    diagnostics_msg,
    expert_action_msg,
    rgb_to_compressed,
    rgb_to_image,
    seconds_to_stamp,
    status_name,
)
from embodied_stack.nodes.params import LATCHED, read_only, read_only_range
from embodied_stack.sim.experts import FEATURE_NAMES, expert_features
from embodied_stack.sim.lockstep import LockstepPacer
from embodied_stack.sim.worlds import command_scale, load_world_files, world_spec
from embodied_stack.sim.worlds.paraphrase import scene_text


class SimBridgeNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("sim_bridge", **node_kwargs)
        p = self.declare_parameter
        p("world", "tabletop", read_only("a registered world: tabletop, driving, or world_file's"))
        p("world_file", "", read_only("adapter files registering worlds, comma-separated"))
        p("seed", 0, read_only_range("seed of the first episode (episode k uses seed + k)", 0, 2**31 - 1, integer=True))
        p("episodes", 0, read_only_range("episodes to run, then stop (0 = forever)", 0, 10**9, integer=True))
        p("width", 64, read_only_range("image width px", 8, 4096, integer=True))
        p("height", 64, read_only_range("image height px", 8, 4096, integer=True))
        p("mode", "realtime", read_only("realtime (timer) or lockstep (one step per command)"))
        p("realtime_factor", 1.0, read_only_range("sim seconds per wall second in realtime mode", 0.05, 20))
        p("command_timeout_s", 0.5, read_only_range("no command for this long: zero command", 0.05, 10))
        p("lockstep_answer_wait_s", 0.05, read_only_range(
            "lockstep: how long a command that answers no newer frame (a tick's) waits for the "
            "answer to the newest frame before it steps the world (sim/lockstep.py)", 0.0, 10.0))
        p("publish_expert", True, read_only("publish sim/expert_action for the expert backend"))
        p("cmd_vel_stamped", True, read_only("driving: subscribe TwistStamped (true) or Twist"))
        p("camera_frame", "camera_color_optical_frame", read_only("frame_id of camera topics"))
        p("depth_noise", False, read_only("active-stereo depth noise (sim/worlds/depth_noise.py)"))
        p("compressed_format", "", read_only("also publish image_transport's compressed colour (jpeg or png) "
                                             "and compressedDepth topics; empty = raw only"))
        g = lambda n: self.get_parameter(n).value  # noqa: E731
        load_world_files(g("world_file"))
        self.world, self.spec = g("world"), world_spec(g("world"))  # (unknown: lists the registered)
        self.mode = g("mode")
        if self.mode not in ("realtime", "lockstep"):
            raise ValueError(f"mode {self.mode!r} not in ('realtime', 'lockstep')")
        self.episodes, self.next_seed = g("episodes"), g("seed")
        self.frame, self.timeout = g("camera_frame"), g("command_timeout_s")
        self.compressed_format = g("compressed_format")
        if self.compressed_format not in ("", "jpeg", "png"):
            raise ValueError(f"compressed_format {self.compressed_format!r} not in ('', 'jpeg', 'png')")

        from embodied_stack.sim.worlds.base import RGBDRenderer
        from embodied_stack.sim.worlds.registry import make_world, make_world_expert

        RGBDRenderer.thread_safe = True  # executor pool threads step the world: bind the GL context per render

        noise = {"depth_noise": True} if g("depth_noise") else {}
        self.env = make_world(self.world, g("width"), g("height"), **noise)
        self.expert = make_world_expert(self.env) if g("publish_expert") and self.spec.has_expert else None
        if g("publish_expert") and not self.spec.has_expert:
            self.get_logger().info(f"world {self.world!r} has no expert: sim/expert_action is not published "
                                   "(a policy node with backend:=expert gets no actions)")
        self.dt = 1.0 / self.spec.control_rate_hz
        self.embodiment = self.spec.embodiment.command_kind  # arm, vehicle or joints
        self.scale = command_scale(self.world)  # the world's constants (control/commands.py)

        camera_qos = qos_profile_sensor_data
        self.rgb_pub = self.create_publisher(Image, "camera/color/image_raw", camera_qos)
        self.depth_pub = self.create_publisher(Image, "camera/depth/image_raw", camera_qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera/color/camera_info", camera_qos)
        if self.compressed_format:
            pub = lambda topic: self.create_publisher(CompressedImage, topic, camera_qos)  # noqa: E731
            self.rgb_compressed_pub = pub("camera/color/image_raw/compressed")
            self.depth_compressed_pub = pub("camera/depth/image_raw/compressedDepth")
        self.joint_pub = self.create_publisher(JointState, "joint_states", 10)
        self.odom_pub = self.create_publisher(Odometry, "odom", 10)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        self.scene_pub = self.create_publisher(String, "scene/objects", LATCHED)
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", 10)
        self.expert_pub = self.create_publisher(JointState, "sim/expert_action", 10)
        self.features_pub = self.create_publisher(JointState, "sim/expert_features", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if self.embodiment == "arm":
            self.create_subscription(TwistStamped, "servo/delta_twist_cmds", self._on_command, 10)
        elif self.embodiment == "joints":
            self.create_subscription(Float64MultiArray, "joint_commands", self._on_command, 10)
        elif g("cmd_vel_stamped"):
            self.create_subscription(TwistStamped, "cmd_vel", self._on_command, 10)
        else:
            self.create_subscription(Twist, "cmd_vel", self._on_command, 10)

        self.results: list[dict] = []
        self.latencies_s: list[float] = []
        self.finished = False
        self.sim_time = 0.0
        self.steps = 0
        self.missed_commands = 0  # steps that found no command since the last step
        self.overwritten_commands = 0  # commands replaced by a newer one before any step used them
        self._command = None  # (command as sent, wall time received)
        self._fresh_command = False
        self._published: dict[int, float] = {}  # frame stamp (ns) -> wall time published
        self._source_sub = self.create_subscription(Header, "policy_node/command_source", self._on_command_source, 10)
        self.pacer = LockstepPacer(g("lockstep_answer_wait_s"))
        self.use_sim_time = bool(g("use_sim_time"))
        self._listener_seen = False  # stepping waits for a camera subscriber (see _step)
        self._reset()
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # never the sim clock it drives
        if self.mode == "realtime":
            self.create_timer(self.dt / g("realtime_factor"), self._step, clock=steady)
        else:
            self.create_timer(self.timeout, self._lockstep_backstop, clock=steady)
            self.create_timer(max(self.pacer.answer_wait_s / 5, 0.002), self._lockstep_wait, clock=steady)  # (polls)

    # --- episode handling -----------------------------------------------------------------
    def _reset(self) -> None:
        self.seed = self.next_seed
        self.next_seed += 1
        self.obs, self.info = self.env.reset(seed=self.seed)
        if self.expert is not None:
            self.expert.reset()
        self.episode_steps, self.episode_return = 0, 0.0
        self._command = None
        if "objects" in self.info:  # what a detector would report: the policy node's scene check
            self.scene_pub.publish(String(data=scene_text(self.info["objects"])))
        self.instruction_pub.publish(String(data=self.obs["instruction"]))
        self._publish_observation()

    def _finish_episode(self) -> None:
        result = {
            "world": self.world, "seed": self.seed, "success": bool(self.info["is_success"]),
            "outcome": str(self.info["outcome"]), "steps": self.episode_steps,
            "return": round(self.episode_return, 3), "instruction": self.obs["instruction"],
        }
        self.results.append(result)
        message = f"episode {len(self.results)} {'success' if result['success'] else 'failure'}"
        self.diag_pub.publish(diagnostics_msg(status_name(self, "episode"), self.world,
                                              "ok" if result["success"] else "warn", message, result,
                                              self.get_clock().now().to_msg()))
        self.get_logger().info(f"{message}: {result}")
        if self.episodes and len(self.results) >= self.episodes:
            self.finished = True

    # --- commands -------------------------------------------------------------------------
    def _on_command_source(self, msg: Header) -> None:
        """The policy node names the frame each command answers: camera -> command latency."""
        key = msg.stamp.sec * 1_000_000_000 + msg.stamp.nanosec
        sent = self._published.pop(key, None)
        if sent is not None:
            self.latencies_s.append(time.monotonic() - sent)
        if self.mode == "lockstep" and self.pacer.on_source(key):
            self._step()

    def _to_action(self, command: np.ndarray) -> np.ndarray:
        """A command -> the world's action (a car's [v, omega] at its speed now: see the docstring)."""
        speed = (float(self.info["ego"]["speed"]),) if self.embodiment == "vehicle" else ()
        return self.scale.to_action(command, *speed).astype(np.float32)

    def _on_command(self, msg) -> None:
        wall = time.monotonic()
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        if self.embodiment == "joints":
            command = np.array(msg.data, np.float64)
        elif self.embodiment == "arm":
            command = np.array([twist.linear.x, twist.linear.y, twist.linear.z])
        else:
            command = np.array([twist.linear.x, twist.angular.z])
        if not np.all(np.isfinite(command)):
            self.get_logger().warning("non-finite command ignored", throttle_duration_sec=2.0)
            return
        if self._fresh_command:
            self.overwritten_commands += 1
        self._command = (command, wall)
        self._fresh_command = True
        self._listener_seen = True  # a command: a policy is there (and must not wait a step)
        if self.mode == "lockstep" and self.pacer.on_command(
                wall, self.pacer.sources_seen or self.count_publishers(self._source_sub.topic_name) > 0):
            self._step()

    def _lockstep_wait(self) -> None:
        if self.pacer.due(time.monotonic()):
            self._step()

    def _lockstep_backstop(self) -> None:
        if self._command is None or time.monotonic() - self._command[1] > self.timeout:
            self._step()

    def _current_action(self) -> np.ndarray:
        if self._command is not None and time.monotonic() - self._command[1] <= self.timeout:
            return self._to_action(self._command[0])
        if self.embodiment != "vehicle":  # (a gripper channel holds its last command)
            zero, grip = np.zeros(self.spec.embodiment.dims, np.float32), self.spec.embodiment.gripper
            if grip is not None and self._command is not None:
                zero[grip] = self._to_action(self._command[0])[grip]
            return zero
        return self._to_action(np.zeros(2))  # brake

    # --- stepping -------------------------------------------------------------------------
    def _step(self) -> None:
        if self.finished:
            return
        if not self._listener_seen:
            # The run starts when someone watches the camera: the first episode's first frame,
            # published before any policy subscribed, went nowhere; send it again instead of
            # stepping that episode blind (a zero command brakes the car).
            if self.rgb_pub.get_subscription_count() == 0 and not (
                    self.compressed_format and self.rgb_compressed_pub.get_subscription_count()):
                self.get_logger().info(
                    f"waiting for a subscriber on {self.rgb_pub.topic_name} (namespace "
                    f"{self.get_namespace()}) before stepping the world: is the policy node in "
                    "this namespace?", throttle_duration_sec=5.0)
                return
            self._listener_seen = True
            self.get_logger().info(f"{self.rgb_pub.topic_name} has a subscriber: stepping the world")
            self._publish_observation()
            return
        if not self._fresh_command:
            self.missed_commands += 1
        self._fresh_command = False
        self.pacer.stepped()
        self.obs, reward, terminated, truncated, self.info = self.env.step(self._current_action())
        self.steps, self.episode_steps = self.steps + 1, self.episode_steps + 1
        self.episode_return += float(reward)
        self.sim_time += self.dt
        if terminated or truncated:
            self._finish_episode()
            if not self.finished:
                self._reset()
            return
        self._publish_observation()

    def _publish_observation(self) -> None:
        sim_stamp = seconds_to_stamp(self.sim_time)
        self.clock_pub.publish(ClockMsg(clock=sim_stamp))
        stamp = sim_stamp if self.use_sim_time else self.get_clock().now().to_msg()
        key = stamp.sec * 1_000_000_000 + stamp.nanosec
        self.pacer.published(key)
        cam = self.info.get("camera")  # (a world that gives no camera model: no camera_info)
        if cam is not None:
            self.info_pub.publish(K_to_camera_info(cam["K"], cam["width"], cam["height"], stamp, self.frame))
        self.depth_pub.publish(depth_to_image(self.obs["depth"], stamp, self.frame))
        if self.compressed_format:
            self.depth_compressed_pub.publish(depth_to_compressed_depth(self.obs["depth"], stamp, self.frame))
        names = self.spec.proprio_layout
        self.joint_pub.publish(JointState(
            header=Header(stamp=stamp, frame_id="base_link"), name=names,
            position=[float(v) for v in self.obs["proprio"]]))
        if self.embodiment == "vehicle":
            ego = self.info["ego"]
            odom = Odometry()
            odom.header = Header(stamp=stamp, frame_id="odom")
            odom.child_frame_id = "base_link"
            odom.pose.pose.position.x, odom.pose.pose.position.y = float(ego["x"]), float(ego["y"])
            odom.pose.pose.orientation.z = math.sin(ego["yaw"] / 2)
            odom.pose.pose.orientation.w = math.cos(ego["yaw"] / 2)
            odom.twist.twist.linear.x = float(ego["speed"])
            odom.twist.twist.angular.z = float(self.obs["proprio"][2])
            self.odom_pub.publish(odom)
        if self.expert is not None:
            action = np.asarray(self.expert(self.obs, self.info), np.float64)
            self.expert_pub.publish(expert_action_msg(action, self.spec.embodiment.action_names, stamp))
            self.features_pub.publish(expert_action_msg(expert_features(self.expert), FEATURE_NAMES, stamp,
                                                        "sim/expert_features"))
        # The colour image last: a policy that wakes on it finds the rest already sent.
        self._published[key] = time.monotonic()
        if len(self._published) > 256:
            self._published.pop(next(iter(self._published)))
        self.rgb_pub.publish(rgb_to_image(self.obs["rgb"], stamp, self.frame))
        if self.compressed_format:
            self.rgb_compressed_pub.publish(rgb_to_compressed(self.obs["rgb"], stamp, self.frame,
                                                              self.compressed_format))

    def summary(self) -> dict:
        lat = np.array(self.latencies_s) * 1e3
        return {
            "episodes": len(self.results),
            "success_rate": float(np.mean([r["success"] for r in self.results])) if self.results else float("nan"),
            "steps": self.steps, "missed_commands": self.missed_commands,
            "overwritten_commands": self.overwritten_commands,
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "latency_samples": int(lat.size),
        }

    def destroy_node(self):
        self.env.close()
        return super().destroy_node()


def main(args=None) -> None:
    from embodied_stack.nodes.executor import run_node

    run_node(SimBridgeNode, args)


if __name__ == "__main__":
    main()
