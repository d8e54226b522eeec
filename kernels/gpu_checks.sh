#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run (about 5 minutes on an H100). Results land in
# docs/benchmarks/ (commit them) and the log in $OUT/gpu_checks.log when OUT is set.
#
#   bash kernels/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu_checks.log"
export TRITON_INTERPRET=0 TRITON_DEFAULT_FP_FUSION=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  # 1. the kernel against the reference, compiled for this GPU (no interpreter)
  python -m pytest -q -p no:cacheprovider tests/test_kernel.py tests/test_equivalence.py
  # 2. the kernel vs the unfused paths, at the presets' shapes and the Self-Forcing 1.3B shape
  python -m kernels.bench --dtype bf16 --out docs/benchmarks
  # 3. whole frames: eager vs triton, tiny and small presets
  for preset in tiny small; do
    for backend in eager triton; do
      python -m worldmodel.profiling stages --preset "$preset" --device cuda --backend "$backend" --out docs/benchmarks
    done
  done
} 2>&1 | tee "$log"
mkdir -p "${OUT:-/tmp}/benchmarks" && cp docs/benchmarks/kernel-* docs/benchmarks/session-cuda* "${OUT:-/tmp}/benchmarks/" 2>/dev/null
