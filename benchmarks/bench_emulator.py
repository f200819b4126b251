"""Time the bit-accurate emulator against the float torch model, per device, and sharded verify.

Models: digits-resnet (the shipped trained checkpoint when present, else random weights;
digits test images) and random-weight resnet19s at each of ``--widths`` (default 8, 32, 128;
random 32x32 images, batch-norm set so that every layer spikes), all at T=4, batch ``--batch``
(default 32). Each is exported here and quantised (calibrated on the batch) in a child process
whose peak memory (max RSS) is reported: the quantiser's peak memory at that width.
Both sides run in the same process (glibc set to reuse freed tensors, as the CLI sets it:
``base.resources.reuse_freed_memory``) on the same batch under the same torch thread count
(``--threads``, default torch's own), each warmed up first; the timed runs alternate the
emulator (default kernels: int8 where chosen, see ``targets/emulator_kernels.py``), the
emulator with ``kernels="float32"`` and the float model, so that all see the same machine load,
and each figure is its best run (the least disturbed one: on a shared machine other processes
only ever add time). The int8 and float32 emulators are checked to give the same integers. The
emulator's time includes everything ``emulate`` does (constraint check, compilation and the
int8 self-test, input encoding, and on a GPU the copies to and from it); the float model runs
under ``torch.inference_mode`` as plain evaluation would. Each further device (``--devices``;
default cpu and cuda when torch sees a GPU) runs the emulator on the same batch (``--gpu-batch``
samples there when given), checked to give the CPU's integers, and reports its samples/s and
its speed-up over the CPU.

Then ``verify`` of digits-resnet (``--verify-samples``, default 0: skipped; the digits test
split tiled to that many samples, as an .npz; no Lava) as a command, once in one process and
once under ``torchrun --nproc-per-node 2``, alternating, best of ``--verify-repeats``: the wall
time of the whole command each (start-up included), and whether the two JSON results agree.

Ends with one line per model, ``emulator/float time ratio (<model>) <R>`` (e.g. ``(resnet19
width 128)``), per extra device ``<model>: <device>/cpu emulator speed-up <S>x``, and
``2-process/1-process verify time ratio <Q>``.

Usage: .venv/bin/python benchmarks/bench_emulator.py [--batch 32] [--repeats 10] [--threads N]
       [--devices cpu,cuda] [--widths 8,32,128] [--gpu-batch N] [--verify-samples 4500]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dalif_deploy.converters.nir_to_fixed import quantize_graph
from dalif_deploy.converters.torch_to_nir import export_nir
from dalif_deploy.targets.emulator import emulate

from dalif_deploy.float_model.zoo import build_model, default_config, run_model

T = 4
ROOT = Path(__file__).resolve().parents[1]
DIGITS_RESNET = ROOT / "dalif_deploy" / "checkpoints" / "digits-resnet.pt"


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
    if DIGITS_RESNET.is_file():
        from dalif_deploy.float_model.loading import load_model

        model, ck = load_model(DIGITS_RESNET)
        if ck.timesteps == T:
            print(f"digits-resnet: trained weights from {DIGITS_RESNET.name}")
            return model
    print("digits-resnet: random weights (no T=4 checkpoint found)")
    return _random("digits-resnet")


def quantise_child(nir_path: str, cal_path: str, out_path: str) -> None:
    """``--quantise-child``: quantise (calibrated) in a process of its own; print its peak RSS
    (``VmHWM``: this process image's own high-water mark; ``ru_maxrss`` would also count the
    parent's pages the fork shared before ``exec``)."""
    from dalif_deploy.converters.ir.graph import read_nir
    from dalif_deploy.targets.emulator import calibration_run

    from dalif_deploy.fixedpoint.fxp_format import save_program

    program = quantize_graph(read_nir(Path(nir_path)), calibration=np.load(cal_path),
                             run=calibration_run)
    save_program(program, out_path)
    with open("/proc/self/status", encoding="ascii") as fh:
        hwm = next(line for line in fh if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) * 1024)


def quantise(model: torch.nn.Module, x: np.ndarray):
    """(program, peak RSS bytes of the quantiser): export here, quantise in a child process."""
    from dalif_deploy.converters.torch_to_nir import write_nir

    from dalif_deploy.fixedpoint.fxp_format import load_program

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        write_nir(export_nir(model, x.shape[1:], T), tmp / "m.nir")
        np.save(tmp / "cal.npy", x)
        out = subprocess.run([sys.executable, __file__, "--quantise-child", str(tmp / "m.nir"),
                              str(tmp / "cal.npy"), str(tmp / "m.fxp")], check=True,
                             capture_output=True, text=True).stdout
        return load_program(tmp / "m.fxp"), int(out.split()[-1])


def bench(name: str, model: torch.nn.Module, x: np.ndarray, repeats: int,
          devices: list[str], gpu_batch: int | None) -> tuple[float, dict[str, float]]:
    """The emulator/float time ratio on CPU (int8 kernels where chosen), the float32-kernel
    emulator's too, and each further device's speed-up over CPU."""
    print(f"{name}: {_rates(model, x)}")
    program, peak = quantise(model, x)
    print(f"{name}: quantiser peak memory {peak / 2**30:.2f} GiB (calibrated on {len(x)} "
          "samples, a process of its own)")
    xt = torch.from_numpy(x)

    def run_float() -> None:
        with torch.inference_mode():
            run_model(model, xt, T)

    a = emulate(program, x, batch_size=len(x), kernels="int8")
    b = emulate(program, x, batch_size=len(x), kernels="float32")
    same = np.array_equal(a.outputs, b.outputs) and np.array_equal(a.spike_counts,
                                                                   b.spike_counts)
    t_emu, t_f32, t_flt = _best_times(
        [lambda: emulate(program, x, batch_size=len(x)),
         lambda: emulate(program, x, batch_size=len(x), kernels="float32"), run_float], repeats)
    n = len(x)
    print(f"{name}: batch {n}, T={T}: emulator int8 {n / t_emu:9.1f} samples/s "
          f"({t_emu * 1e3:.1f} ms) | emulator float32 {n / t_f32:9.1f} samples/s "
          f"({t_f32 * 1e3:.1f} ms) | float torch {n / t_flt:9.1f} samples/s "
          f"({t_flt * 1e3:.1f} ms); int8 == float32 integers: {same}")
    print(f"{name}: emulator float32-kernel/float time ratio {t_f32 / t_flt:.2f}")
    speedups = {}
    for dev in devices:
        if dev == "cpu":
            continue
        xd = x if not gpu_batch else np.resize(x, (gpu_batch, *x.shape[1:]))
        ref = emulate(program, xd, batch_size=len(xd))
        got = emulate(program, xd, batch_size=len(xd), device=dev)
        same = (np.array_equal(ref.outputs, got.outputs)
                and np.array_equal(ref.spike_counts, got.spike_counts))
        (t_dev,) = _best_times([functools.partial(emulate, program, xd, batch_size=len(xd),
                                                  device=dev)], repeats)
        cpu_rate = n / t_emu
        speedups[dev] = len(xd) / t_dev / cpu_rate
        print(f"{name}: device {dev}: emulator {len(xd) / t_dev:.1f} samples/s (batch "
              f"{len(xd)}), the CPU's integers: {same}")
    return t_emu / t_flt, speedups


def _verify_commands(tmp: Path, samples: int, batch: int) -> tuple[list[str], list[str]]:
    from dalif_deploy.datasets.loaders import load_dataset

    test = load_dataset("digits", "test")
    idx = np.resize(np.arange(len(test)), samples)
    data = tmp / f"digits-x{samples}.npz"
    np.savez(data, x=test.x[idx], y=test.y[idx], encoding="analog")
    args = ["verify", str(DIGITS_RESNET), "--dataset", str(data), "--lava-samples", "0",
            "--batch-size", str(batch)]
    one = [sys.executable, "-m", "dalif_deploy", *args, "--json", str(tmp / "one.json")]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "dalif_deploy", *args, "--json", str(tmp / "two.json")]
    return one, two


def verify_ratio(samples: int, batch: int, repeats: int) -> float:
    """Wall time of ``verify`` under torchrun with 2 processes over 1 process (best runs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        one, two = _verify_commands(tmp, samples, batch)
        best = {"one": float("inf"), "two": float("inf")}
        for _ in range(repeats):
            for key, cmd in (("one", one), ("two", two)):
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                best[key] = min(best[key], time.perf_counter() - t0)
        a, b = (json.loads((tmp / f"{k}.json").read_text()) for k in ("one", "two"))
        stages = {k: sum(r.pop("seconds").values()) for k, r in (("one", a), ("two", b))}
    print(f"verify digits-resnet, {samples} samples, batch {batch}: 1 process {best['one']:.2f} s"
          f" (stages {stages['one']:.2f} s) | 2 processes {best['two']:.2f} s (stages "
          f"{stages['two']:.2f} s); JSON identical (times aside): {a == b}")
    print(f"verify stages (the command less start-up, last run): 2-process/1-process "
          f"{stages['two'] / stages['one']:.2f}")
    return best["two"] / best["one"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--quantise-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both sides (default: torch's own choice)")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu",
                    help="emulator devices to time, comma-separated")
    ap.add_argument("--widths", default="8,32,128",
                    help="resnet19 base widths, comma-separated (paper: 128)")
    ap.add_argument("--gpu-batch", type=int, default=None,
                    help="samples per emulator batch on the non-CPU devices (default: --batch)")
    ap.add_argument("--verify-samples", type=int, default=0,
                    help="samples of the sharded verify timing (0: skip it)")
    ap.add_argument("--verify-batch", type=int, default=128)
    ap.add_argument("--verify-repeats", type=int, default=2)
    args = ap.parse_args()
    if args.quantise_child:
        quantise_child(*args.quantise_child)
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from dalif_deploy.base.resources import reuse_freed_memory

    reused = reuse_freed_memory()  # as every CLI command runs: both sides benefit
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) for both sides; "
          f"devices {devices}; freed tensors reused (glibc mallopt): {reused}")
    from dalif_deploy.datasets.loaders import load_dataset

    digits = load_dataset("digits", "test").x[: args.batch]
    rng = np.random.default_rng(0)
    cifar_like = rng.random((args.batch, 3, 32, 32), dtype=np.float32)
    results = {"digits-resnet": bench("digits-resnet", _digits_resnet(), digits, args.repeats,
                                      devices, args.gpu_batch)}
    for w in (int(v) for v in args.widths.split(",") if v.strip()):
        results[f"resnet19 width {w}"] = bench(
            f"resnet19 width {w}", _lively(_random("resnet19", width=w), cifar_like),
            cifar_like, args.repeats, devices, args.gpu_batch)
    ratio = (verify_ratio(args.verify_samples, args.verify_batch, args.verify_repeats)
             if args.verify_samples else None)
    for name, (r, speedups) in results.items():
        print(f"emulator/float time ratio ({name}) {r:.2f}")
        for dev, s in speedups.items():
            print(f"{name}: {dev}/cpu emulator speed-up {s:.1f}x")
    if ratio is not None:
        print(f"2-process/1-process verify time ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
