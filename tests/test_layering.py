"""The layers import one way, as README's architecture table says:

    models  <-  control  <-  sim  <-  nodes

- `models/`, `control/` and `sim/` never import ROS (rclpy, message packages, launch): they
  run and are tested without a ROS install, and on a Jetson without one.
- `models/` imports neither `control/`, `sim/` nor `nodes/`; `control/` neither `sim/` nor
  `nodes/`; `sim/` not `nodes/`. Nothing outside `nodes/` imports `nodes/` (launch files,
  tests and benches may).
- No module imports another module's `_private` names: what is shared gets a public name.
- The nodes stay ROS adapters: no node file over 350 lines (decisions go to `control/`).

Checked on the source with `ast`, so a violation fails here before it fails on a robot.
"""

import ast
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("models", "control", "sim", "nodes")
#: What each layer may import from the project (itself included).
ALLOWED = {
    "models": {"models"},
    "control": {"models", "control"},
    "sim": {"models", "control", "sim"},
    "nodes": {"models", "control", "sim", "nodes"},
}
#: Old import paths kept for one release: they warn and forward to their new home.
DEPRECATED_FORWARDS = {"models/elastic/budget.py", "models/elastic/selector.py",
                       "models/runtime/profiling.py"}
MAX_NODE_LINES = 350


def _is_ros(module: str) -> bool:
    top = module.split(".")[0]
    return top in ("rclpy", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py") \
        or top.endswith(("_msgs", "_srvs", "_interfaces"))


def _python_files(folder):
    for dirpath, dirnames, files in os.walk(os.path.join(REPO, folder)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, REPO), path


def _imports(path):
    """(module, names, line) of every import in a file; relative imports resolved to
    `embodied_stack.<package>...`."""
    rel = os.path.relpath(path, REPO)
    package = ["embodied_stack"] + rel.split(os.sep)[:-1]
    tree = ast.parse(open(path).read(), filename=rel)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [a.name for a in node.names], node.lineno


def _project_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "embodied_stack" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def _violations():
    found = []
    for layer in LAYERS:
        for rel, path in _python_files(layer):
            for module, names, line in _imports(path):
                where = f"{rel}:{line}"
                if layer != "nodes" and _is_ros(module):
                    found.append(f"{where}: {layer}/ imports ROS ({module})")
                target = _project_layer(module)
                if target and target not in ALLOWED[layer] and rel not in DEPRECATED_FORWARDS:
                    found.append(f"{where}: {layer}/ imports {target}/ ({module})")
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private and module.startswith("embodied_stack"):
                    found.append(f"{where}: imports private {private} from {module}")
    return found


def test_layers_import_one_way_and_share_no_private_names():
    assert _violations() == []


def test_node_files_stay_adapters():
    long = {rel: sum(1 for _ in open(path)) for rel, path in _python_files("nodes")
            if rel.endswith("_node.py")}
    assert long, "no node files found"
    assert {k: v for k, v in long.items() if v > MAX_NODE_LINES} == {}


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself is not blind: a models/ file that imports rclpy, nodes/ and a
    private name is reported three times."""
    bad = tmp_path / "models"
    bad.mkdir()
    (bad / "bad.py").write_text("import rclpy\nfrom embodied_stack.nodes.policy_node import _x\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    found = _violations()
    assert len(found) == 3, found
