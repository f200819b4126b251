#!/usr/bin/env bash
# One-call GPU check (a machine with a CUDA GPU):
#  1. the device and sharding tests, whose cuda cases run where torch sees a GPU;
#  2. the emulator's samples/s on cpu and cuda, and the speed-up, for ResNet-19 at T=4
#     (width 8 as in docs/MEASURED.md, and the paper's width 128), integers checked equal;
#  3. verify of digits-resnet in one CPU process against 2 processes on the GPU (torchrun):
#     the JSON identical (times aside; the float references on the CPU in both); then
#     with --reference-device cuda: the fixed point identical, the float side within 1 point.
#
# Usage: bash benchmarks/gpu_check.sh   (PYTHON=... picks the interpreter: default this repo's
# .venv when its torch has CUDA, else python3). An interpreter without the package gets it
# installed into /tmp/site from this checkout, offline, with the wheels carried in .whl/ for
# what it lacks (the lent H200 image has torch, numpy, scikit-learn, h5py, tqdm, matplotlib,
# pytest, not nir). Before the device call, in the repo root here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl nir==1.0.8
# then run `bash benchmarks/gpu_check.sh` with carry [".whl"] and a timeout of about 480 s.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        PYTHON=.venv/bin/python
    fi
fi
PY=$PYTHON
if ! "$PY" -c "import dalif_deploy.converters.torch_to_nir" 2>/dev/null; then
    mkdir -p /tmp/site
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
"$PY" - <<'PY' || exit 2
import sys, torch
if not torch.cuda.is_available():
    print(f"error: torch {torch.__version__} sees no CUDA device here; run this on a GPU "
          "machine, or set PYTHON to an interpreter whose torch has CUDA", file=sys.stderr)
    sys.exit(1)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.device_count()} GPU(s)")
PY
echo "== 1. device and sharding tests (cuda cases included) =="
(cd tests && "$PY" -m pytest -q -rs -p no:cacheprovider --rootdir .. test_device.py \
    test_distributed.py test_emulator.py)
echo "== 2. emulator samples/s, cpu vs cuda =="
"$PY" benchmarks/bench_emulator.py --repeats 3 --batch 64 --gpu-batch 1024 --verify-samples 0
"$PY" benchmarks/bench_emulator.py --repeats 2 --batch 16 --width 128 --gpu-batch 256 \
    --verify-samples 0 | grep resnet19
echo "== 3. verify: 1 CPU process vs 2 processes on the GPU =="
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$(pwd)
case $PY in /*) ;; */*) PY="$root/$PY" ;; *) PY=$(command -v "$PY") ;; esac
cd "$tmp"  # not the checkout: its source tree would shadow the installed package
args=(verify "$root/dalif_deploy/checkpoints/digits-resnet.pt" --lava-samples 0 --batch-size 128)
"$PY" -m dalif_deploy "${args[@]}" --json "$tmp/cpu.json" > /dev/null
"$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m dalif_deploy "${args[@]}" \
    --device cuda --json "$tmp/cuda.json" > /dev/null
"$PY" -m dalif_deploy "${args[@]}" --device cuda --reference-device cuda \
    --json "$tmp/refs.json" > /dev/null
"$PY" - "$tmp/cpu.json" "$tmp/cuda.json" "$tmp/refs.json" <<'PY'
import json, sys
a, b, c = (json.load(open(p)) for p in sys.argv[1:])
sa, sb, sc = a.pop("seconds"), b.pop("seconds"), c.pop("seconds")
print(f"verify 1 process cpu {sum(sa.values()):.2f} s of stages, 2 processes cuda "
      f"{sum(sb.values()):.2f} s; JSON identical (times aside): {a == b}")
# the fixed point is exact on every device; the references on the GPU may round a float sum
# that lands on a threshold the other way (cuDNN's summation order)
exact = all(a[k] == c[k] for k in ("fixed_accuracy", "quant_table", "input_clipped", "samples"))
close = (abs(a["float_accuracy"] - c["float_accuracy"]) <= 0.01
         and abs(a["prediction_agreement"] - c["prediction_agreement"]) <= 0.01)
print(f"references on cuda: float {sc['float']:.2f} s (cpu {sa['float']:.2f}), NIR "
      f"{sc['nir']:.2f} s (cpu {sa['nir']:.2f}); fixed point identical: {exact}; float side "
      f"within 1 point: {close}")
sys.exit(0 if a == b and exact and close else 1)
PY
