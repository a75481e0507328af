"""`embodied-stack record`: demonstrations as a LeRobotDataset v3, recorded from the ROS graph.

    embodied-stack record --world driving --episodes 50 --out datasets/driving
    embodied-stack record --from-bag runs/demo-.../driving --world driving --out datasets/mine

The sim bridge and the policy node with the `expert` backend run as real rclpy nodes over DDS
(nodes/demo.run_world); the bag recorder (nodes/recorder.py) writes every topic to an MCAP
rosbag2, which is then converted (sim/datasets/from_bag.py: frames paired with the command that
answers them, episodes split at each instruction). `--from-bag` converts a bag recorded
elsewhere (a robot's, `ros2 bag record`'s with the same topics) without running the graph.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embodied_stack.sim.datasets.lerobot_v3 import CODECS


def record(world: str, episodes: int, seed: int, out: str | Path, bag: str | Path | None = None,
           mode: str = "lockstep", codec: str = "av1", width: int = 64, height: int = 64,
           timeout_s: float | None = None, progress: bool = True):
    """Run `episodes` expert episodes of `world` from `seed` through the graph, record the
    bag (default ``<out>.mcap/``), convert it to a dataset at `out`. Returns the
    ConversionReport and the sim bridge's episode results (seed, success, steps, ...)."""
    from tqdm import tqdm

    from embodied_stack.nodes.demo import run_world
    from embodied_stack.sim.datasets.from_bag import bag_to_dataset

    out = Path(out)
    bag = Path(bag) if bag else out.with_name(out.name + ".mcap")
    for path in (out, bag):
        if path.exists():
            raise FileExistsError(f"{path} already exists; choose a new --out (or --bag)")
    bar = tqdm(total=episodes, desc=f"record {world}", unit="episode", disable=not progress)

    def step(n, result):
        bar.update(n)
        bar.set_postfix_str(f"{result['outcome']} {'ok' if result['success'] else 'fail'}")

    try:
        run = run_world(world, episodes, seed, "expert", "", "full", bag, width=width,
                        height=height, mode=mode, progress=step,
                        timeout_s=timeout_s or 60.0 + 60.0 * episodes)
    finally:
        bar.close()
    return bag_to_dataset(bag, out, world, codec=codec, progress=progress), run.episodes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="embodied-stack record", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the dataset folder to write (must not exist)")
    parser.add_argument("--world", default="driving", help="a registered world (default driving)")
    parser.add_argument("--world-file", action="append", default=[], metavar="FILE.py",
                        help="an adapter file that registers worlds (docs/worlds.md)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to record (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode k "
                        "uses seed + k (default 0: the trainer's demonstration seeds)")
    parser.add_argument("--bag", default="", help="where the MCAP bag goes (default <out>.mcap)")
    parser.add_argument("--from-bag", default="", help="convert this bag instead of running the graph")
    parser.add_argument("--namespace", default="", help="with --from-bag: the robot's namespace")
    parser.add_argument("--mode", default="lockstep", choices=["lockstep", "realtime"],
                        help="sim bridge mode (default lockstep: the world steps once per command, "
                             "so every frame is answered whatever the machine's load)")
    parser.add_argument("--codec", default="av1", choices=sorted(CODECS),
                        help="video encoding (default av1, lerobot's own)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    try:
        from embodied_stack.sim.worlds import load_world_files, world_spec

        load_world_files(args.world_file)
        world_spec(args.world)
        if args.from_bag:
            from embodied_stack.sim.datasets.from_bag import bag_to_dataset

            report = bag_to_dataset(args.from_bag, args.out, args.world, args.namespace, args.codec)
        else:
            report, _ = record(args.world, args.episodes, args.seed, args.out, args.bag or None,
                            args.mode, args.codec, args.width, args.height)
    except (ValueError, FileNotFoundError, FileExistsError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"dataset {report.dataset}: {report.episodes} episodes, {report.frames} frames "
          f"({report.unanswered_frames} unanswered and {report.incomplete_frames} incomplete "
          f"frames left out; {len(report.late_stamps)} answered after the next frame, kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
