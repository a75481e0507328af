"""control/: the decisions of the ROS nodes, as plain Python without rclpy and with the clock
passed in, so every rule is tested on a fake clock (tests/test_policy_loop.py and friends):
when the policy node asks for a chunk and which action goes out (policy_loop,
chunk_scheduler), what may go out (safety), which inputs belong together (input_sync), how a
target or a plan becomes commands (target_control, commands), and which elastic submodel fits
the budget (elastic/). Imports run one way, models <- control <- sim <- nodes: nothing here
imports rclpy or nodes, and the nodes only wire parameters, topics and timers to these classes.
"""
