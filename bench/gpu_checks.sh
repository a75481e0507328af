#!/usr/bin/env bash
# Every check that needs a CUDA GPU machine, in one go (about 15 minutes on one H100 with 16
# cores), each step under its own time limit so that one stuck step cannot eat the others:
#
#   1. budget sources live: NVML, torch.cuda and the CPU source against known loads
#      (bench/budget_sources_live.py)
#   2. the policy node's GPU backend without ROS: fp32/bf16, eager/CUDA graphs, bf16-vs-fp32
#      action agreement on real frames of both worlds (bench/node_backend_cuda.py)
#   3. policy latency on this machine: ONNX Runtime on its CPU, torch eager and CUDA graphs on
#      its GPU, and its CPU latency table for the elastic bench (bench/policy_latency.py)
#   4. the elastic bench on this machine's CPU with three burners per core
#      (bench/elastic_budget.py --quick)
#   5. the policy node with device:=cuda runtime:=torch in the ROS graph: the graph latency
#      headline, three runs of >= 600 answered frames at 15 Hz, separate processes
#      (bench/graph_latency.py --headline 3 --node-param device=cuda)
#   6. the elastic bench with the policy on the GPU under a GPU compute hog: one calibration,
#      three runs of 30 s per mode (bench/elastic_budget.py --device cuda --headline 3; about
#      7 minutes)
#
# usage: bench/gpu_checks.sh RESULTS_DIR [ARCHIVE.tar.gz]
#   RESULTS_DIR gets one JSON (and PNG) per step, named as in bench/results/ (<bench>_..._<machine>:
#   copy the ones that become a machine kind's headline there); ARCHIVE, when given, is
#   rewritten after every step with what RESULTS_DIR holds so far, so a run cut short still
#   leaves its results.
# Environment: PYTHON (default python3); MACHINE, the machine kind in the file names (default
# h100); MUJOCO_GL as for the worlds (default: EGL, else OSMesa); STEPS, the names of the steps
# to run (default all: machine budget_sources node_backend policy_latency elastic graph_cuda
# elastic_gpu), e.g. STEPS="machine elastic_gpu" on a short lease. The worlds need mujoco and
# gymnasium in PYTHON's environment (on a machine without a registry, carry their wheels).
set -u
cd "$(dirname "$0")/.."
R=${1:?usage: bench/gpu_checks.sh RESULTS_DIR [ARCHIVE.tar.gz]}
ARCHIVE=${2:-}
PY=${PYTHON:-python3}
M=${MACHINE:-h100}
mkdir -p "$R"
export PYTHONUNBUFFERED=1
CORES=$(nproc)

step() {  # step NAME SECONDS COMMAND...: run COMMAND (its whole process group) under a limit
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  if [[ -n "${STEPS:-}" && " $STEPS " != *" $name "* ]]; then
    echo "=== $name: skipped (not in STEPS)"
    return
  fi
  echo "=== $name (limit ${limit} s): $*"
  timeout -k 5 "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  if [[ -n "$ARCHIVE" ]]; then
    tar czf "$ARCHIVE.tmp" -C "$R" . && mv "$ARCHIVE.tmp" "$ARCHIVE"
  fi
}

step machine 30 bash -c "nvidia-smi -L; nproc; grep -m1 'model name' /proc/cpuinfo; $PY -c \
'import torch, onnxruntime as ort; print(\"torch\", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else \"no cuda\"); print(\"onnxruntime\", ort.__version__, ort.get_available_providers())'"
step budget_sources 120 "$PY" bench/budget_sources_live.py --json "$R/budget_sources_live_$M.json"
step node_backend 120 "$PY" bench/node_backend_cuda.py --json "$R/node_backend_cuda_$M.json"
# its CPU latency table (the elastic step's input) goes to latency_tables_$M.json
step policy_latency 120 "$PY" bench/policy_latency.py --quick --no-compile --model models/default_vla \
  --table-runtime onnxruntime --table "$R/latency_tables_$M.json" --json "$R/policy_latency_cuda_${M}_quick.json"
step elastic 120 "$PY" bench/elastic_budget.py --quick --burners $((3 * CORES)) \
  --table "$R/latency_tables_$M.json" --json "$R/elastic_budget_quick_$M.json"
step graph_cuda 330 "$PY" bench/graph_latency.py --headline 3 --seconds 40 --runtime torch \
  --node-param device=cuda --node-log "$R/graph_cuda_node.log" --json "$R/graph_latency_cuda_$M.json"
step elastic_gpu 480 "$PY" bench/elastic_budget.py --device cuda --headline 3 --seconds 30 \
  --json "$R/elastic_budget_headline_cuda_$M.json"
