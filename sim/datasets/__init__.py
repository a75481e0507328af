"""Datasets on disk: LeRobotDataset v3 read and write (``lerobot_v3``), and ROS bags converted
to it (``from_bag``). Plain Python (pyarrow, PyAV, rosbags): no rclpy here."""
