"""Time the bit-accurate emulator against the float torch model on the same batch.

Models: digits-resnet (the shipped trained checkpoint when present, else random weights;
digits test images) and a random-weight resnet19 (width 8, random 32x32 images, batch-norm set
so that every layer spikes), both at T=4.
Both sides run in the same process on the same batch under the same torch thread count
(``--threads``, default torch's own), each warmed up first; the timed runs alternate emulator
and float model so that both see the same machine load, and each side's figure is its best run
(the least disturbed one: on a shared machine other processes only ever add time). The
emulator's time includes everything ``emulate`` does (constraint check, compilation, input
encoding); the float model runs under ``torch.inference_mode`` as plain evaluation would. Ends
with one line per model: ``<model>: emulator/float time ratio <R>``.

Usage: .venv/bin/python benchmarks/bench_emulator.py [--batch 256] [--repeats 10] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import torch
from dalif_deploy.converters.nir_to_fixed import quantize_graph
from dalif_deploy.converters.torch_to_nir import export_nir
from dalif_deploy.targets.emulator import emulate

from dalif_deploy.models import build_model, default_config, run_model

T = 4


def _best_times(fns: list, repeats: int) -> list[float]:
    """Best wall time of each function; one warm-up each, then the functions take turns."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def _random(name: str, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(default_config(name, **cfg)).eval()


def _lively(model: torch.nn.Module, x: np.ndarray) -> torch.nn.Module:
    """Random weights with batch-norm statistics taken from ``x`` and scaled so every layer
    spikes (about 20-35 % per step) instead of staying silent, as a trained network would."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average over the calibration pass
                m.weight.fill_(2.0)
                m.bias.fill_(0.5)
        model.train()
        run_model(model, torch.from_numpy(x), T)
    return model.eval()


def _rates(model: torch.nn.Module, x: np.ndarray) -> str:
    with torch.inference_mode():
        _, spikes = run_model(model, torch.from_numpy(x), T, record_spikes=True)
    r = [float(s.mean()) for s in spikes.values()]
    return f"firing rate per layer {min(r):.3f}..{max(r):.3f}"


def _digits_resnet() -> torch.nn.Module:
    """The shipped trained checkpoint (realistic spiking activity), else random weights."""
    path = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "digits-resnet.pt"
    if path.is_file():
        from dalif_deploy.checkpoint import load_model

        model, ck = load_model(path)
        if ck.timesteps == T:
            print(f"digits-resnet: trained weights from {path.name}")
            return model
    print("digits-resnet: random weights (no T=4 checkpoint found)")
    return _random("digits-resnet")


def bench(name: str, model: torch.nn.Module, x: np.ndarray, repeats: int) -> float:
    print(f"{name}: {_rates(model, x)}")
    program = quantize_graph(export_nir(model, x.shape[1:], T), calibration=x,
                             run=functools.partial(emulate, check=False))
    xt = torch.from_numpy(x)

    def run_float() -> None:
        with torch.inference_mode():
            run_model(model, xt, T)

    t_emu, t_flt = _best_times([lambda: emulate(program, x, batch_size=len(x)), run_float],
                               repeats)
    n = len(x)
    print(f"{name}: batch {n}, T={T}: emulator {n / t_emu:9.1f} samples/s ({t_emu * 1e3:.1f} ms)"
          f" | float torch {n / t_flt:9.1f} samples/s ({t_flt * 1e3:.1f} ms)")
    return t_emu / t_flt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both sides (default: torch's own choice)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) for both sides")
    from dalif_deploy.data import load_dataset

    digits = load_dataset("digits", "test").x[: args.batch]
    rng = np.random.default_rng(0)
    cifar_like = rng.random((min(args.batch, 64), 3, 32, 32), dtype=np.float32)
    ratios = {
        "digits-resnet": bench("digits-resnet", _digits_resnet(), digits, args.repeats),
        "resnet19": bench("resnet19", _lively(_random("resnet19", width=8), cifar_like),
                          cifar_like, args.repeats),
    }
    for name, r in ratios.items():
        print(f"{name}: emulator/float time ratio {r:.2f}")


if __name__ == "__main__":
    main()
