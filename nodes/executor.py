"""How our nodes are spun. One SingleThreadedExecutor per process: inference has its own
thread in the policy node, and rclpy's MultiThreadedExecutor busy-waits a core away from the
model (measured: camera->command p95 fell from ~240 ms to ~18 ms at 15 Hz on 2 cores)."""

from __future__ import annotations

import gc
import threading

import rclpy


def run_node(node_factory, args=None) -> None:
    """Console-script main: init, build the node, spin until Ctrl-C or shutdown, clean up.
    A node that cannot start (bad parameter, missing or corrupt model, ...) ends the process
    with one error line and exit status 1."""
    import sys

    rclpy.init(args=args)
    try:
        node = node_factory()
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        sys.exit(1)
    # Everything built so far (model, ROS entities) lives for the whole run: move it out of
    # the cyclic GC's view, so a collection never walks it in the middle of a control tick.
    gc.collect()
    gc.freeze()
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def spin_in_background(nodes, context) -> rclpy.executors.Executor:
    """Spin `nodes` on one executor in a daemon thread (the caller only watches, with sleeps:
    a spin_once loop in Python costs a core). Call executor.shutdown() when done."""
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True, name="ros_executor").start()
    return executor
