"""The sim bridge's command handling, on a real rclpy node stepped by hand."""

import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.parameter import Parameter


def test_the_bridge_holds_a_cars_velocity_setpoint_until_the_timeout():
    """A cmd_vel is a velocity setpoint: with no newer one the car keeps that speed (as a base's
    speed controller does), it does not go on accelerating; after the timeout it brakes."""
    from embodied_stack.nodes.sim_bridge_node import SimBridgeNode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = SimBridgeNode(context=context, parameter_overrides=[
            Parameter("world", value="driving"), Parameter("command_timeout_s", value=0.3)])
        setpoint = float(node.info["ego"]["speed"]) + 0.3  # one step of full acceleration
        msg = TwistStamped()
        msg.twist.linear.x = setpoint
        node._on_command(msg)
        node._step()
        speeds = []
        for _ in range(3):  # no newer command
            node._step()
            speeds.append(float(node.info["ego"]["speed"]))
        assert max(abs(s - setpoint) for s in speeds) < 1e-3, (setpoint, speeds)
        held = node._command
        bad = TwistStamped()
        bad.twist.linear.x = float("inf")
        node._on_command(bad)
        assert node._command is held  # a non-finite command is ignored, not clipped to full speed
        node._command = (node._command[0], node._command[1] - 1.0)  # the command timed out
        node._step()
        assert float(node.info["ego"]["speed"]) < setpoint - 0.2  # a zero command: it brakes
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
