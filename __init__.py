"""embodied_stack: a ROS 2 stack for an embodied foundation-model policy.

Installed, the repository root is the ``embodied_stack`` package, in layers that import one
way: ``embodied_stack.models`` (policies, perception, runtimes: PyTorch/NumPy, no rclpy) <-
``embodied_stack.control`` (the decisions, clock passed in, no rclpy) <- ``embodied_stack.sim``
(Gymnasium worlds, experts, trainer, no rclpy) <- ``embodied_stack.nodes`` (thin rclpy nodes).
"""

__version__ = "0.1.0"
