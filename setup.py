"""ament_python package: `colcon build` in a ROS 2 workspace, or `pip install -e .` in a venv.

The repository root *is* the `embodied_stack` package (package_dir maps it), so the folders
`models/`, `nodes/`, `sim/` install as `embodied_stack.models` etc. and never as top-level
`models`/`nodes`/`sim`, which would collide with other packages in site-packages.
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


def data(pattern):
    return [p for p in glob(pattern, root_dir=HERE) if os.path.isfile(os.path.join(HERE, p))]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE] + subpackages("models", "nodes", "sim"),
    package_dir={PACKAGE: "."},
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
    ],
    python_requires=">=3.10",
    install_requires=["setuptools"],
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
            "elastic_node = embodied_stack.nodes.elastic_node:main",
            "sim_bridge_node = embodied_stack.nodes.sim_bridge_node:main",
        ],
    },
)
