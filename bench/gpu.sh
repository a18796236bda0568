#!/usr/bin/env bash
# The GPU figures of the README, in one call on a lent GPU machine (PyTorch and JAX with CUDA installed, no network):
#   bash bench/gpu.sh            # logs under $OUT (default /tmp/gpu-bench)
# Packages that machine lacks travel as wheels in .whl/ (stable-baselines3, gymnasium, sbx-rl and their needs):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl stable_baselines3 gymnasium ...
# Each step has its own time limit, so that one that fails or hangs leaves the others' figures.
set -u
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX beside torch
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import sys, torch, jax; print(sys.version.split()[0], torch.__version__, jax.__version__, jax.devices())"
lscpu | grep -E "^Model name|^CPU\(s\)"

bench() {  # bench LOG LIMIT ARGS...: one bench/sps.py run on the GPU, its output kept in $OUT/LOG
    local log=$1 limit=$2
    shift 2
    echo "== bench/sps.py --device cuda $*"
    timeout "$limit" python3 bench/sps.py --device cuda --rounds 3 --chunk 300 --train-steps 200 "$@" 2>&1 \
        | grep -v -i warn | tee "$OUT/$log"
}
bench cudagraphs_256.log 150 --algos custom-cudagraphs custom sb3 sbx --net-arch 256 256
bench cudagraphs_1024.log 150 --algos custom-cudagraphs custom sb3 sbx --net-arch 1024 1024
bench compiled_256.log 150 --algos custom custom-compiled custom-cudagraphs --net-arch 256 256

echo "== the parity tests on the GPU (SB3's device='auto' picks it)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_parity.py tests/test_backprop.py \
    tests/test_sb3_dropin.py 2>&1 | tee "$OUT/tests.log" | tail -25
