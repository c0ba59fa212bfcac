#!/bin/bash
# The device run of issue 29 in one call: the GPU named, the CUDA tests, then bench_gpu.py. Writes under $OUT.
# Run from the repository root on a GPU machine: OUT=dir bash benchmarks/gpu_check.sh [bench budget s] [pytest s]
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/smi.txt" 2>&1
cat "$OUT/smi.txt"; date -u
timeout "${2:-120}" python3 -m pytest -q -p no:cacheprovider -rA -k cuda tests/training/test_precision.py \
  tests/datamodels/test_lasso_path.py tests/training/test_architectures.py > "$OUT/pytest.log" 2>&1
echo "pytest exit $?"; grep -E "PASSED|FAILED|ERROR|passed|failed|Max absolute" "$OUT/pytest.log" | tail -30
python3 benchmarks/bench_gpu.py --out "$OUT/bench_gpu.json" --budget "${1:-250}" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_gpu.log"
