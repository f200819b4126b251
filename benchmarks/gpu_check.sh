#!/usr/bin/env bash
# One-call GPU check (a machine with a CUDA GPU and a CUDA build of torch in the venv):
#  1. the device and sharding tests, whose cuda cases run where torch sees a GPU;
#  2. the emulator's samples/s on cpu and cuda, and the speed-up, for ResNet-19 at T=4
#     (width 8 as in docs/MEASURED.md, and the paper's width 128), integers checked equal;
#  3. verify of digits-resnet in one CPU process against 2 processes on the GPU (torchrun):
#     the JSON must be identical (times aside).
# Usage: bash benchmarks/gpu_check.sh      (PYTHON=path/to/python to use another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" - <<'PY' || exit 2
import sys, torch
if not torch.cuda.is_available():
    print(f"error: torch {torch.__version__} sees no CUDA device here; install a CUDA build of "
          "torch into this venv (or set PYTHON) and rerun", file=sys.stderr)
    sys.exit(1)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.device_count()} GPU(s)")
PY
echo "== 1. device and sharding tests (cuda cases included) =="
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_device.py tests/test_distributed.py \
    tests/test_emulator.py
echo "== 2. emulator samples/s, cpu vs cuda =="
"$PY" benchmarks/bench_emulator.py --repeats 3 --batch 64 --gpu-batch 1024 --verify-samples 0
"$PY" benchmarks/bench_emulator.py --repeats 2 --batch 16 --width 128 --gpu-batch 256 \
    --verify-samples 0 | grep resnet19
echo "== 3. verify: 1 CPU process vs 2 processes on the GPU =="
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(verify examples/checkpoints/digits-resnet.pt --lava-samples 0 --batch-size 128)
"$PY" -m dalif_deploy "${args[@]}" --json "$tmp/cpu.json" > /dev/null
"$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m dalif_deploy "${args[@]}" \
    --device cuda --json "$tmp/cuda.json" > /dev/null
"$PY" - "$tmp/cpu.json" "$tmp/cuda.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
sa, sb = a.pop("seconds"), b.pop("seconds")
print(f"verify 1 process cpu {sum(sa.values()):.2f} s of stages, 2 processes cuda "
      f"{sum(sb.values()):.2f} s; JSON identical (times aside): {a == b}")
sys.exit(0 if a == b else 1)
PY
