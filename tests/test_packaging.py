"""The package installs as `embodied_stack.*`, is a valid ament_python package, and builds
with colcon into the layout `ros2 run` / `ros2 launch` expect."""

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_imports_as_embodied_stack_and_never_top_level(tmp_path):
    # A fresh interpreter outside the repo, so the checkout itself is not on sys.path.
    code = (
        "import importlib.util as u, embodied_stack.models, embodied_stack.control, "
        "embodied_stack.sim, embodied_stack.nodes; "
        "print([n for n in ('models', 'control', 'nodes', 'sim') if u.find_spec(n) is not None])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


#: Folders whose code is installed (tests and bench are not).
INSTALLED = ("models", "control", "nodes", "sim", "launch")
#: Imports that no dependency list can carry: TensorRT comes with JetPack / NVIDIA's installer.
SYSTEM_ONLY = {"tensorrt",
               "inference"}  # SAM 3D Objects' notebook/inference.py, in its own environment
#: Optional imports whose package is not installed here: module -> the distribution an extra
#: of setup.py must name.
OPTIONAL_NOT_HERE = {"pynvml": "nvidia-ml-py"}
#: rosdep keys of Python libraries -> the module they provide.
ROSDEP_PYTHON = {"python3-numpy": "numpy", "python3-yaml": "yaml", "python3-psutil": "psutil",
                 "python3-pytest": "pytest"}


def _is_ros_package(module):
    return module in ("rclpy", "launch", "launch_ros", "ament_index_python") or module.endswith(
        ("_msgs", "_srvs", "_interfaces"))


def _imported_modules(folders):
    """Top-level names of every absolute import in the .py files under `folders`."""
    found = set()
    for folder in folders:
        for dirpath, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                tree = ast.parse(open(os.path.join(dirpath, name)).read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found |= {a.name.split(".")[0] for a in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"embodied_stack", "__future__"}


def _setup_requirements():
    """INSTALL_REQUIRES and EXTRAS_REQUIRE of setup.py, read with ast (not executed)."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
              if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
              and n.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE")}
    return values["INSTALL_REQUIRES"], values["EXTRAS_REQUIRE"]


def _norm(dist):
    return dist.lower().replace("_", "-")


def test_package_xml_is_format3_ament_python():
    root = ET.parse(os.path.join(REPO, "package.xml")).getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "embodied_stack"
    assert root.find("export/build_type").text == "ament_python"
    import embodied_stack

    assert root.findtext("version") == embodied_stack.__version__


def test_package_xml_lists_exactly_the_ros_packages_the_code_imports():
    root = ET.parse(os.path.join(REPO, "package.xml")).getroot()
    deps = [e.text for e in root.findall("exec_depend")]
    assert len(deps) == len(set(deps)), "duplicate exec_depend"
    imported = _imported_modules(INSTALLED)
    ros_deps = {d for d in deps if d not in ROSDEP_PYTHON}
    ros_imports = {m for m in imported if _is_ros_package(m)}
    assert ros_deps == ros_imports, (f"in package.xml, not imported: {ros_deps - ros_imports}; "
                                     f"imported, not in package.xml: {ros_imports - ros_deps}")
    for key in set(deps) & set(ROSDEP_PYTHON):
        assert ROSDEP_PYTHON[key] in imported, f"package.xml's {key} is not imported"
    # One OpenCV: pip's opencv-python-headless (setup.py), never also Debian's python3-opencv.
    assert "python3-opencv" not in deps


def test_setup_py_requirements_cover_every_import_and_nothing_more():
    import importlib.metadata

    requires, extras = _setup_requirements()
    declared = {_norm(d) for d in requires} | {_norm(d) for ds in extras.values() for d in ds}
    dists_of = importlib.metadata.packages_distributions()
    # Installed code plus what tests and benches import (those come from the extras).
    imported = _imported_modules(INSTALLED + ("tests", "bench"))
    for module in sorted(imported - SYSTEM_ONLY):
        if _is_ros_package(module) and module in ("launch", "launch_ros"):
            continue  # not on PyPI: a ROS 2 install provides them (package.xml)
        dists = {_norm(d) for d in dists_of.get(module, [])}
        if not dists and module in OPTIONAL_NOT_HERE:
            dists = {OPTIONAL_NOT_HERE[module]}
        if any(os.path.isfile(os.path.join(REPO, d, module + ".py")) for d in ("tests", "bench")):
            continue  # the test suite's and the benches' own modules
        assert dists & declared, f"'{module}' is imported but no requirement in setup.py provides it"
    runtime_imports = {_norm(d) for m in _imported_modules(INSTALLED)
                       for d in dists_of.get(m, [])}
    unused = {_norm(d) for d in requires} - runtime_imports - {"onnx", "onnxscript", "imageio"}
    assert not unused, f"install_requires lists packages the installed code never imports: {unused}"


def _workspace_copy(dst):
    """Copy what git tracks or would track (not .venv, build trees, caches) into `dst`,
    symlinks as symlinks (the `embodied_stack -> .` link is what colcon builds from)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
        capture_output=True, text=True, check=True,
    ).stdout.split()
    for rel in files:
        path = os.path.join(REPO, rel)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), dst / rel)
        elif os.path.isfile(path):
            shutil.copy2(path, dst / rel)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("colcon_core") is None, reason="colcon not installed")
@pytest.mark.parametrize("symlink_install", [False, True], ids=["copy", "symlink-install"])
def test_colcon_build_installs_executables_launch_and_config(tmp_path, symlink_install):
    src = tmp_path / "ws" / "src" / "embodied_stack"
    _workspace_copy(src)
    # `python -m colcon` with this environment's interpreter: the installed scripts then run
    # with the packages of the environment the workspace was built in.
    cmd = [sys.executable, "-m", "colcon", "build"] + (["--symlink-install"] * symlink_install)
    result = subprocess.run(cmd, cwd=tmp_path / "ws", capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / "ws" / "install" / "embodied_stack"
    assert (prefix / "share/embodied_stack/package.xml").is_file()
    assert (prefix / "share/ament_index/resource_index/packages/embodied_stack").is_file()
    launch = sorted(p.name for p in (prefix / "share/embodied_stack/launch").glob("*.py"))
    config = sorted(p.name for p in (prefix / "share/embodied_stack/config").iterdir() if p.is_file())
    recipes = sorted(p.name for p in (prefix / "share/embodied_stack/config/train").iterdir())
    assert recipes == sorted(os.listdir(os.path.join(REPO, "config", "train"))), recipes
    assert launch == sorted(p for p in os.listdir(os.path.join(REPO, "launch")) if p.endswith(".py"))
    assert config == sorted(p for p in os.listdir(os.path.join(REPO, "config"))
                            if p.endswith((".yaml", ".json")))
    exes = {p.name for p in (prefix / "lib/embodied_stack").iterdir()}
    assert {"embodied-stack", "policy_node", "sim_bridge_node"} <= exes, exes
    if symlink_install:
        # Sources are linked, not copied: an edit in the source tree is live in the install.
        assert (prefix / "share/embodied_stack/launch/robot.launch.py").is_symlink()
        assert not list((prefix / "lib").glob("python3*/site-packages/embodied_stack/models"))
    else:
        site = next((prefix / "lib").glob("python3*/site-packages"))
        assert (site / "embodied_stack/models/__init__.py").is_file()
        assert (site / "embodied_stack/control/elastic/latency_table.py").is_file()
        assert (site / "embodied_stack/models/default_vla/model.safetensors").is_file()
        assert not (site / "models").exists() and not (site / "sim").exists()
    # Run the installed executables from the install space the way a ROS user does: source
    # the workspace, then call them where `ros2 run` finds them (from elsewhere, so the source tree is not on sys.path).
    # The code they import must be the workspace's, not this checkout's editable install.
    probe = ("import embodied_stack.nodes.policy_node as p, embodied_stack.models as m; "
             "print(p.__file__); import os; print(os.path.isfile(os.path.join("
             "os.path.dirname(m.__file__), 'default_vla', 'model.safetensors')))")
    script = (f". {tmp_path}/ws/install/setup.sh && "
              f"{prefix}/lib/embodied_stack/embodied-stack --help && "
              f"python_exe=$(head -1 {prefix}/lib/embodied_stack/policy_node | cut -c3-) && "
              f'"$python_exe" -c "{probe}"')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")}
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "usage: embodied-stack" in run.stdout
    where, has_weights = run.stdout.strip().splitlines()[-2:]
    assert where.startswith(str(tmp_path / "ws")), where
    assert has_weights == "True"
