#!/usr/bin/env bash
# The GPU check of issue 11 (point 7), one prepared run: the batched-vs-sequential evaluation
# test on CUDA, then the benchmarks at the paper's config. Writes JSON and logs to $OUT (or
# ./gpu_out). Usage: bash benchmarks/gpu_check.sh [--quick]   (--quick: a CPU smoke run)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
DEV=cuda; EPOCHS=300; REPEATS=3; ITERS=3; QUICK=""
if [ "${1:-}" = "--quick" ]; then DEV=cpu; EPOCHS=2; REPEATS=1; ITERS=1; QUICK="--quick"; fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee -a "$OUT/env.txt"
python3 -m pytest -q -p no:cacheprovider tests/training/test_eval_parallel.py 2>&1 | tail -5 | tee "$OUT/test_eval_parallel.txt"
python3 benchmarks/evaluation.py --device $DEV --epochs $EPOCHS --repeats $REPEATS --nets 5 \
    --ipcs 1,10 --widths 32,128 --out "$OUT/evaluation.json" 2>&1 | tee "$OUT/evaluation.txt"
python3 benchmarks/matching.py --device $DEV --width 128 --steps 80 --batches 10,100 \
    --warmup 1 --iters $ITERS $QUICK --reference --json "$OUT/matching.json" 2>&1 | tee "$OUT/matching.txt"
python3 benchmarks/throughput.py --device $DEV --skip-epoch $QUICK --json "$OUT/throughput.json" \
    2>&1 | tee "$OUT/throughput.txt"
