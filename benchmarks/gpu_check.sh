#!/usr/bin/env bash
# Every GPU measurement of the offline predictor in one go, for a lent GPU machine (a few minutes
# on an H100/H200): the parity tests on CUDA, then the speed / memory / deviation table beside the
# reference implementation, then the long video on a 24 GB budget.
#
#     bash benchmarks/gpu_check.sh VIDEO [REFERENCE_CHECKOUT] [OUT_DIR]
#
# VIDEO: a clip (decoded with OpenCV where PyAV is missing) or a .npy of RGB frames.
# REFERENCE_CHECKOUT: a checkout of facebookresearch/co-tracker (optional; it is never part of
# this repository: copy it into an ignored folder that travels with the working tree).
# Needs torch with CUDA, numpy, OpenCV and pytest; nothing from the network.
set -uo pipefail
VIDEO=${1:?usage: gpu_check.sh VIDEO [REFERENCE_CHECKOUT] [OUT_DIR]}
REF=${2:-}
OUT=${3:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
REF_ARGS=()
[ -n "$REF" ] && REF_ARGS=(--reference "$REF")

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"

# 1. Parity with the reference's fixtures on CUDA, TF32 off (the tests set it).
python3 -m pytest -q -p no:cacheprovider tests/cotracker3/test_parity.py -k cuda 2>&1 | tee "$OUT/parity.txt"

# 2. The table: reference fp32 beside ours fp32 / bf16, chunks from the free memory.
#    The reference runs out of memory at 300 frames x 100x100 (139 GB): recorded, not fatal.
python3 benchmarks/inference.py "$VIDEO" --device cuda --cases 50x50 100x100 300x100 \
    --dtypes float32 bfloat16 "${REF_ARGS[@]}" 2>&1 | tee "$OUT/table.txt"

# 3. Deviation of bf16 from fp32 with weights that amplify rounding (the recipe's), and parity
#    conditions (no TF32) against the reference at 100 x 100x100.
python3 benchmarks/inference.py "$VIDEO" --device cuda --cases 100x100 --dtypes float32 bfloat16 \
    --recipe-weights --no-tf32 "${REF_ARGS[@]}" 2>&1 | tee "$OUT/recipe.txt"

# 4. A long video on a small card: 1000 frames x 100x100 under a 24 GB budget.
python3 benchmarks/inference.py "$VIDEO" --device cuda --cases 1000x100 --dtypes float32 bfloat16 \
    --max-memory 24G 2>&1 | tee "$OUT/long.txt"
