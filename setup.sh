#!/usr/bin/env bash
# One-command setup for a fresh Debian/Ubuntu machine, then (optionally) the main job or tests.
#
#   ./setup.sh          set up only: apt libraries, .venv, pinned Python packages
#   ./setup.sh demo     set up, then run the simulation demo on the embedded default model
#   ./setup.sh test     set up, then run the whole test suite (what .ci/run calls); with no
#                       test arguments it then runs the ROS-facing tests again under ROS 2
#                       Jazzy (Python 3.12, .venv-jazzy) when a Python 3.12 is found
#
# ROS 2 comes from a sourced install when ROS_DISTRO is set and its rclpy imports; otherwise
# from pip wheels: Kilted on Python 3.11 (.venv, default) or, with ROS_DISTRO=jazzy, Jazzy
# on Python 3.12 (.venv-jazzy, pinned by constraints-jazzy.txt).
#
# Idempotent: a second run skips what is already done (apt packages present, .venv up to
# date with constraints.txt + setup.py). It prints every step it takes.
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
# EMBODIED_SKIP_APT=1 (never call apt-get), TORCH_INDEX_URL (extra index for torch wheels),
# EMBODIED_SKIP_JAZZY=1 (`test` skips the Jazzy pass).
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(pwd)"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- 1. system libraries ---------------------------------------------------------------
# libusb-1.0-0: open3d; libegl1/libgl1: MuJoCo headless rendering via EGL; libosmesa6: the
# OSMesa fallback when no EGL device works; libgomp1: torch/open3d OpenMP; python3-venv.
APT_PACKAGES=(libusb-1.0-0 libegl1 libgl1 libosmesa6 libgomp1 libglib2.0-0 python3-venv)
if [[ "${EMBODIED_SKIP_APT:-0}" != 1 ]] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) != 0 ]]; then
      if command -v sudo >/dev/null; then SUDO=sudo; else
        say "missing Debian packages: ${missing[*]}; run as root: apt-get install -y ${missing[*]}"
        exit 1
      fi
    fi
    say "apt-get install -y ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    say "Debian packages present: ${APT_PACKAGES[*]}"
  fi
fi

# --- 2. virtual environment -------------------------------------------------------------
# A Python of version $1: python3.X on PATH, else one under pyenv (Ubuntu 24.04 ships 3.12).
find_python() {
  local v="$1" p
  if command -v "python$v" >/dev/null && "python$v" -V >/dev/null 2>&1; then echo "python$v"; return; fi
  for p in "$HOME"/.pyenv/versions/"$v".*/bin/python"$v"; do
    [[ -x "$p" ]] && { echo "$p"; return; }
  done
}

SYSTEM_ROS=0
if [[ -n "${ROS_DISTRO:-}" ]] && "${PYTHON:-python3}" -c 'import rclpy' 2>/dev/null; then
  SYSTEM_ROS=1
  WHEELS=""; VENV=.venv; WANT_PY=""; CONSTRAINTS=constraints.txt; ROS_EXTRA=""
  PY="${PYTHON:-python3}"
  say "ROS 2 '$ROS_DISTRO' is sourced: using its rclpy and messages (venv sees system site-packages), not the pip wheels"
elif [[ "${ROS_DISTRO:-kilted}" == jazzy ]]; then
  WHEELS=jazzy; VENV=.venv-jazzy; WANT_PY=3.12; CONSTRAINTS=constraints-jazzy.txt; ROS_EXTRA="ros-jazzy,"
elif [[ "${ROS_DISTRO:-kilted}" == kilted ]]; then
  WHEELS=kilted; VENV=.venv; WANT_PY=3.11; CONSTRAINTS=constraints.txt; ROS_EXTRA="ros,"
else
  say "ROS_DISTRO=$ROS_DISTRO is set but its rclpy does not import (source /opt/ros/$ROS_DISTRO/setup.bash?); the pip wheels exist for kilted and jazzy only"
  exit 1
fi
if ((!SYSTEM_ROS)); then
  PY="${PYTHON:-$(find_python "$WANT_PY")}"
  if [[ -z "$PY" ]]; then
    say "the ROS 2 $WHEELS pip wheels need Python $WANT_PY, and none was found (python$WANT_PY or pyenv). Install it, set PYTHON=..., or source a ROS 2 install."
    exit 1
  fi
  PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [[ "$PYVER" != "$WANT_PY" ]]; then
    say "the ROS 2 $WHEELS pip wheels are built for Python $WANT_PY; $PY is $PYVER. Set PYTHON=... or source a ROS 2 install first."
    exit 1
  fi
  say "ROS 2 $WHEELS from pip wheels, Python $PYVER ($PY), in $VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
  if ((SYSTEM_ROS)); then
    say "creating $VENV with $PY (--system-site-packages, for the sourced ROS 2)"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    say "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$ROOT/$VENV/bin/python"

# --- 3. pinned packages -----------------------------------------------------------------
STAMP=$VENV/.embodied_stack_setup
WANT=$(cat "$CONSTRAINTS" setup.py | sha256sum | cut -d' ' -f1)-ros$SYSTEM_ROS
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  say "$VENV is up to date with setup.py + $CONSTRAINTS"
else
  # setup.py's extras: ros / ros-jazzy (the pip ROS 2 wheels; not with a sourced ROS 2),
  # mimo, train, test.
  EXTRAS="${ROS_EXTRA}mimo,train,test"
  PIP_ARGS=(-c "$CONSTRAINTS")
  # torch: pin 2.13.0 and prefer the CPU build (a plain PyPI torch is a multi-GB CUDA build).
  # A local wheel in pip's find-links wins; otherwise use PyTorch's CPU index when reachable.
  TORCH_INDEX="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
  if ! "$VPY" -m pip download -q --no-deps --no-index -d "$(mktemp -d)" 'torch==2.13.0' >/dev/null 2>&1; then
    if "$VPY" - "$TORCH_INDEX" <<'EOF' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=5)
EOF
      say "torch CPU wheels from $TORCH_INDEX"
      PIP_ARGS+=(--extra-index-url "$TORCH_INDEX")
    else
      say "no local torch wheel and $TORCH_INDEX unreachable: PyPI's torch==2.13.0 (large CUDA build)"
    fi
  fi
  say "pip install ${PIP_ARGS[*]} -e .[$EXTRAS]   (embodied_stack, editable; a few minutes the first time)"
  "$VPY" -m pip install -q -c "$CONSTRAINTS" --upgrade pip setuptools wheel
  "$VPY" -m pip install -q "${PIP_ARGS[@]}" --no-build-isolation -e ".[$EXTRAS]"
  # setup.py's metaworld extra: Meta-World's MT10 worlds. metaworld pins mujoco==3.3.0 (the
  # stack pins 4.0.0), so it goes in without its dependencies, after the one it lacks (scipy);
  # sim/worlds/metaworld_mt10.py fixes the function MuJoCo 4 breaks (docs/worlds.md).
  say "pip install -c $CONSTRAINTS scipy; pip install --no-deps metaworld   (Meta-World MT10)"
  "$VPY" -m pip install -q "${PIP_ARGS[@]}" scipy
  "$VPY" -m pip install -q "${PIP_ARGS[@]}" --no-deps metaworld
  echo "$WANT" >"$STAMP"
fi

# --- 4. what to run ----------------------------------------------------------------------
# DDS stays on this host: a demo or test never talks to a robot on the LAN.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# The tests that face ROS 2 itself (DDS transport, the policy node, the simulation graph,
# launch parameter handling), run again under Jazzy by `./setup.sh test`.
JAZZY_TESTS=(tests/test_ros_dds.py tests/test_policy_node.py tests/test_sim_graph.py
             tests/test_launch.py)
case "${1:-}" in
  "") say "done. Next: ./setup.sh demo   or   ./setup.sh test" ;;
  demo) shift; say "running: embodied-stack demo $*"; exec "$VENV/bin/embodied-stack" demo "$@" ;;
  test)
    shift
    if (($#)) || ((SYSTEM_ROS)) || [[ "$WHEELS" == jazzy || "${EMBODIED_SKIP_JAZZY:-0}" == 1 ]]; then
      say "running: pytest $*"; exec "$VPY" -m pytest "$@"
    fi
    say "running: pytest (ROS 2 $WHEELS, Python $PYVER)"
    rc=0; "$VPY" -m pytest || rc=$?
    if [[ -z "$(find_python 3.12)" ]]; then
      say "no Python 3.12 found: skipping the ROS 2 Jazzy pass (${JAZZY_TESTS[*]})"
    else
      say "ROS 2 Jazzy pass: ${JAZZY_TESTS[*]} (EMBODIED_SKIP_JAZZY=1 skips it)"
      ROS_DISTRO=jazzy PYTHON="" "$ROOT/setup.sh" test "${JAZZY_TESTS[@]}" || rc=$?
    fi
    exit "$rc" ;;
  *) say "unknown command '$1' (use: demo, test)"; exit 2 ;;
esac
