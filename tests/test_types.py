"""The layers without ROS pass the type checker CI runs (mypy, configured in setup.cfg's
[mypy] section), checked against Python 3.10: JetPack 6 (Ubuntu 22.04, ROS 2 Humble) runs
Python 3.10 while this machine runs 3.11, so a name new in 3.11's standard library or typing
would pass every other test here and fail on the robot."""

import configparser
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mypy_targets_python_3_10_on_every_layer_a_robot_runs():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    assert config["mypy"]["python_version"] == "3.10"
    checked = {p.strip() for p in config["mypy"]["packages"].split(",")}
    assert {f"embodied_stack.{layer}" for layer in ("models", "control", "sim")} <= checked


@pytest.mark.slow
def test_mypy_passes():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert "No module named mypy" not in result.stderr, "mypy is not installed: ./setup.sh installs it"
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _python_3_10():
    """A working Python 3.10 interpreter (on PATH or under pyenv), or None."""
    import glob
    import shutil

    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")))
    candidates += [p for p in [shutil.which("python3.10")] if p]
    for python in candidates:
        probe = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 10)":
            return python
    return None


def test_every_installed_file_compiles_under_python_3_10(tmp_path):
    """Syntax a Jetson's Python 3.10 cannot parse (``except*``, PEP 695 generics, ...) in any
    installed layer, nodes and launch files included: compiled by a real Python 3.10."""
    python = _python_3_10()
    if python is None:
        pytest.skip("no Python 3.10 on this machine (python3.10 or pyenv)")
    files = [os.path.join(d, f) for layer in ("models", "control", "sim", "nodes", "launch")
             for d, _, fs in os.walk(os.path.join(REPO, layer)) for f in fs if f.endswith(".py")]
    code = ("import sys, py_compile\n"
            "for f in sys.argv[1:]:\n"
            "    py_compile.compile(f, cfile=f'{sys.argv[0]}.pyc', doraise=True)\n")
    script = tmp_path / "compile.py"
    script.write_text(code)
    result = subprocess.run([python, str(script), *files], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
