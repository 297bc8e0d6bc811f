#!/usr/bin/env bash
# GPU checks that CPU-only CI cannot run: fp16 training, bf16 on the GPU, NCCL DDP when two or more GPUs
# are present, and the GPU-only tests of the suite. Run from the repository root on a CUDA machine after
# `make test` has built .venv; it takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-$(mktemp -d)}
GPUS=$($BIN/python -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 1 ]; then
    echo "No CUDA GPU visible; nothing to check." >&2
    exit 1
fi
echo "CUDA GPUs: $GPUS"

$BIN/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision fp16 --dynamo_backend no \
    scripts/train.py --output_dir "$OUT/fp16" --use_cpu false --num_train_epochs 5
$BIN/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
    scripts/train.py --output_dir "$OUT/bf16" --use_cpu false --num_train_epochs 5
if [ "$GPUS" -ge 2 ]; then
    $BIN/accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no scripts/train.py --output_dir "$OUT/nccl" --use_cpu false --num_train_epochs 5
fi
$BIN/python -m pytest tests/test_distributed.py -k "gpu or nccl" -v
for run in "$OUT"/*/; do
    $BIN/python -c "import json, sys; r = json.load(open(sys.argv[1] + 'all_results.json')); \
print(sys.argv[1], 'test accuracy', r['test_accuracy'])" "$run"
done
