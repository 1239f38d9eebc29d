#!/usr/bin/env bash
# The GPU check (issue 13, part 5), as one command on a machine with one NVIDIA GPU, from the repo root:
#
#     benchmarks/gpu_check.sh                  # uses .venv/bin/python (needs a CUDA build of torch)
#     PYTHON=/path/to/python benchmarks/gpu_check.sh
#     benchmarks/gpu_check.sh --cpu-smoke      # no GPU: checks the script's own code paths on the CPU
#
# Runs benchmarks/gpu_check.py (see its docstring: 4 trials at 0.25 GPU packed on one GPU, bf16, one
# SmolLM2 verbalizer trial; examples/s and peak GPU memory per trial) under a 290 s timeout
# (GPU_CHECK_TIMEOUT_S overrides it). Exit status: 0 all checks passed, 1 a check failed or the
# timeout hit, 2 no GPU visible (or no Python).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PYTHON="${PYTHON:-.venv/bin/python}"
TIMEOUT_S="${GPU_CHECK_TIMEOUT_S:-290}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu_check.sh: no Python at '$PYTHON': create the venv (make venv) or set PYTHON=..." >&2
    exit 2
fi

# TERM first (the script then stops its Ray and trials), KILL 20 s later if it is still there.
timeout --kill-after=20 "$TIMEOUT_S" "$PYTHON" benchmarks/gpu_check.py "$@"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "FAIL gpu_check: did not finish within ${TIMEOUT_S} s (exit status $rc)"
    exit 1
fi
exit "$rc"
