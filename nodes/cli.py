"""`embodied-stack` command line: the entry point the README's first command runs.

    embodied-stack demo [--episodes N] [--worlds tabletop driving] [--world-file FILE.py]
        [--backend vla|expert]
    embodied-stack train --out DIR [--config FILE.yaml] [--resume] [TrainConfig flags]
    embodied-stack eval [--model DIR] [--episodes N] [--submodels full 1/2] [--json PATH]
    embodied-stack record --out DATASET [--world driving] [--episodes N] [--from-bag BAG]

`train`, `eval` and `record` take their own flags (`embodied-stack train --help`).
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":
        from embodied_stack.sim.train.trainer import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "record":
        from embodied_stack.nodes.record import main as record_main

        return record_main(argv[1:])
    if argv and argv[0] == "eval":
        from embodied_stack.sim.eval import main as eval_main

        eval_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="embodied-stack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train the policy: bc -> dagger -> group RL (see train --help)")
    sub.add_parser("eval", help="success on held-out seeds with 95%% intervals (see eval --help)")
    sub.add_parser("record", help="expert demonstrations from the ROS graph as a LeRobotDataset "
                                  "v3, via an MCAP bag (see record --help)")
    demo = sub.add_parser(
        "demo", help="run the ROS 2 simulation demo: sim bridge + policy node over DDS, "
                     "success rate, latency, MCAP bag")
    demo.add_argument("--episodes", type=int, default=3, help="episodes per world (default 3)")
    demo.add_argument("--worlds", nargs="+", default=["tabletop", "driving"],
                      help="registered worlds to run (default tabletop driving)")
    demo.add_argument("--world-file", action="append", default=[], metavar="FILE.py",
                      help="an adapter file that registers worlds (docs/worlds.md; repeatable)")
    demo.add_argument("--seed", type=int, default=1000,
                      help="first episode seed (default 1000, outside the training seeds)")
    demo.add_argument("--backend", default="vla", choices=["vla", "expert"],
                      help="policy backend: vla = the embedded default model (default), "
                           "expert = the simulator's scripted expert")
    demo.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"],
                      help="vla runtime (default onnxruntime: ~2x faster on CPU; exported "
                           "once per submodel and cached)")
    demo.add_argument("--model", default="", help="model directory (default: the shipped model)")
    demo.add_argument("--submodel", default="full", help="elastic submodel (default full)")
    demo.add_argument("--out", default="runs", help="folder for bags and report (default runs/)")
    demo.add_argument("--no-bag", action="store_true", help="do not record an MCAP bag")
    demo.add_argument("--mode", default="realtime", choices=["realtime", "lockstep"],
                      help="sim bridge mode (default realtime, as a robot runs; lockstep: the world "
                           "waits for each answer, for a machine too slow for the control rate)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.episodes < 1:
            parser.error(f"--episodes must be >= 1, got {args.episodes}")
        from embodied_stack.sim.worlds import load_world_files, world_spec

        try:
            load_world_files(args.world_file)
            lacking = [w for w in args.worlds if not world_spec(w).has_expert]
        except (ValueError, FileNotFoundError) as exc:
            parser.error(str(exc))
        if args.backend == "expert" and lacking:
            parser.error(f"--backend expert: {lacking} have no expert to relay; use --backend vla "
                         "(with --model for a world the shipped model does not act in)")
        from embodied_stack.nodes.demo import demo as run_demo

        try:
            return run_demo(args)
        except (ValueError, FileNotFoundError, TimeoutError) as exc:  # bad submodel, model path, ...
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted: bags recorded so far are closed and readable under "
                  f"{args.out}/", file=sys.stderr)
            return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
