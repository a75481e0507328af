"""What the rclpy node tests share: a node under test and a "driver" node (publishers and
recorders) in their own context, spun in the background as production spins nodes
(nodes/executor.py: rclpy's MultiThreadedExecutor busy-waits a core, which starves the node
on 2 cores)."""

import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from embodied_stack.nodes.executor import spin_in_background


def wait_for(predicate, timeout: float = 10.0, period: float = 0.02) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return False


class NodeHarness:
    """Subclasses build `self.node` in `self.context` (made here), add publishers and
    subscriptions to `self.driver`, then call `spin()`."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.driver = rclpy.create_node("driver", context=self.context)
        self.diagnostics = []
        self.driver.create_subscription(DiagnosticArray, "/diagnostics",
                                        self.diagnostics.append, 50)

    def spin(self):
        self.executor = spin_in_background([self.node, self.driver], self.context)

    def diag_values(self, key):
        """Every value published under `key` on /diagnostics so far, oldest first."""
        return [kv.value for d in self.diagnostics for s in d.status for kv in s.values
                if kv.key == key]

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.driver.destroy_node()
        rclpy.shutdown(context=self.context)
