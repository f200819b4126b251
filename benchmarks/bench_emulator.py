"""Time the bit-accurate emulator against the float torch model on the same batch.

Models: digits-resnet (random weights, digits test images) and a random-weight resnet19
(width 8, random 32x32 images), both at T=4. Each timing is the median of several runs after a
warm-up; both models run in the same process, one after the other, under the same thread
settings. Ends with one line per model: ``<model>: emulator/float time ratio <R>``.

Usage: .venv/bin/python benchmarks/bench_emulator.py [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from dalif_deploy.converters.nir_to_fixed import quantize_graph
from dalif_deploy.converters.torch_to_nir import export_nir
from dalif_deploy.targets.emulator import emulate

from dalif_deploy.models import build_model, default_config, run_model

T = 4


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name: str, cfg: dict, x: np.ndarray, repeats: int) -> float:
    torch.manual_seed(0)
    model = build_model(default_config(name, **cfg)).eval()
    program = quantize_graph(export_nir(model, x.shape[1:], T), calibration=x)
    xt = torch.from_numpy(x)

    def run_float() -> None:
        with torch.no_grad():
            run_model(model, xt, T)

    t_emu = _median_time(lambda: emulate(program, x, batch_size=len(x)), repeats)
    t_flt = _median_time(run_float, repeats)
    n = len(x)
    print(f"{name}: batch {n}, T={T}: emulator {n / t_emu:9.1f} samples/s ({t_emu * 1e3:.1f} ms)"
          f" | float torch {n / t_flt:9.1f} samples/s ({t_flt * 1e3:.1f} ms)")
    return t_emu / t_flt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from dalif_deploy.data import load_dataset

    digits = load_dataset("digits", "test").x[: args.batch]
    rng = np.random.default_rng(0)
    cifar_like = rng.random((min(args.batch, 64), 3, 32, 32), dtype=np.float32)
    ratios = {
        "digits-resnet": bench("digits-resnet", {}, digits, args.repeats),
        "resnet19": bench("resnet19", {"width": 8}, cifar_like, args.repeats),
    }
    for name, r in ratios.items():
        print(f"{name}: emulator/float time ratio {r:.2f}")


if __name__ == "__main__":
    main()
