"""control/elastic: keep the policy on its deadline. The budget sources (budget: what the
operating system and the GPU say), the latency table (latency_table: per device, measured
interleaved), the selector that picks the largest submodel that fits (selector) and the
elastic node's decision loop (control); nodes/elastic_node.py wires them to ROS."""
