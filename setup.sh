#!/usr/bin/env bash
# One-command setup for a fresh Debian/Ubuntu machine, then (optionally) the main job or tests.
#
#   ./setup.sh          set up only: apt libraries, .venv, pinned Python packages
#   ./setup.sh demo     set up, then run the simulation demo on the embedded default model
#   ./setup.sh test     set up, then run the whole test suite (what .ci/run calls)
#
# Idempotent: a second run skips what is already done (apt packages present, .venv up to
# date with constraints.txt + setup.py). It prints every step it takes.
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
# EMBODIED_SKIP_APT=1 (never call apt-get), TORCH_INDEX_URL (extra index for torch wheels).
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
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if command -v python3.11 >/dev/null; then PY=python3.11; else PY=python3; fi
fi
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
SYSTEM_ROS=0
if [[ -n "${ROS_DISTRO:-}" ]] && "$PY" -c 'import rclpy' 2>/dev/null; then
  SYSTEM_ROS=1
  say "ROS 2 '$ROS_DISTRO' is sourced: using its rclpy and messages (venv sees system site-packages), not the pip wheels"
elif [[ "$PYVER" != 3.11 ]]; then
  say "the ROS 2 pip wheels are built for Python 3.11; $PY is $PYVER. Install python3.11, set PYTHON=..., or source a ROS 2 install first."
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  if ((SYSTEM_ROS)); then
    say "creating .venv with $PY (--system-site-packages, for the sourced ROS 2)"
    "$PY" -m venv --system-site-packages .venv
  else
    say "creating .venv with $PY"
    "$PY" -m venv .venv
  fi
fi
VPY="$ROOT/.venv/bin/python"

# --- 3. pinned packages -----------------------------------------------------------------
STAMP=.venv/.embodied_stack_setup
WANT=$(cat constraints.txt setup.py | sha256sum | cut -d' ' -f1)-ros$SYSTEM_ROS
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  say ".venv is up to date with setup.py + constraints.txt"
else
  # setup.py's extras: ros (the pip ROS 2 wheels; not with a sourced ROS 2), mimo, train, test.
  if ((SYSTEM_ROS)); then EXTRAS="mimo,train,test"; else EXTRAS="ros,mimo,train,test"; fi
  PIP_ARGS=(-c constraints.txt)
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
  "$VPY" -m pip install -q --upgrade pip setuptools wheel
  "$VPY" -m pip install -q "${PIP_ARGS[@]}" --no-build-isolation -e ".[$EXTRAS]"
  echo "$WANT" >"$STAMP"
fi

# --- 4. what to run ----------------------------------------------------------------------
# DDS stays on this host: a demo or test never talks to a robot on the LAN.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
case "${1:-}" in
  "") say "done. Next: ./setup.sh demo   or   ./setup.sh test" ;;
  demo) shift; say "running: embodied-stack demo $*"; exec .venv/bin/embodied-stack demo "$@" ;;
  test) shift; say "running: pytest $*"; exec "$VPY" -m pytest "$@" ;;
  *) say "unknown command '$1' (use: demo, test)"; exit 2 ;;
esac
