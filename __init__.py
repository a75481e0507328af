"""embodied_stack: a ROS 2 stack for an embodied foundation-model policy.

Installed, the repository root is the ``embodied_stack`` package:
``embodied_stack.models`` (pure PyTorch/NumPy, no rclpy), ``embodied_stack.sim``
(Gymnasium worlds and trainer, no rclpy) and ``embodied_stack.nodes`` (thin rclpy nodes).
"""

__version__ = "0.1.0"
