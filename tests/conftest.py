"""Test-wide environment: DDS on this host only, an isolated domain, headless GL."""

import os
import random

# Before any rclpy import: keep discovery on localhost (docs/architecture.md, safety rules) and pick a domain of our
# own so parallel runs on one machine do not hear each other.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(30, 99)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
