"""Lava target speed on digits-cnn: streaming vs one compiled run per sample vs the emulator.

From one run: the time per sample when 64 samples stream through ONE compiled Lava network,
when each sample gets its own compiled network (measured on --per-sample-runs samples, since
each costs a full compile and process start-up), and the emulator's time per sample on the
same 64 samples. All times are wall clock as a user sees them (build, compile, run, shutdown).
The readouts of all three must agree exactly, or the benchmark fails. Ends with the lines
``streaming speed-up <R>`` and ``emulator speed-up over lava <R>`` (vs streaming Lava).

    .venv/bin/python benchmarks/bench_lava.py [--samples 64] [--per-sample-runs 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_program(checkpoint: Path):
    """Checkpoint -> NIR -> calibrated 8-bit FixedProgram, as `export` + `quantize` do."""
    import functools

    import nir
    from dalif_deploy.converters.nir_to_fixed import quantize_graph
    from dalif_deploy.converters.torch_to_nir import export_checkpoint
    from dalif_deploy.targets.emulator import emulate

    from dalif_deploy.data import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.nir"
        export_checkpoint(checkpoint, path)
        graph = nir.read(str(path))
    calibration = load_dataset("digits", split="train").x[:256]
    return quantize_graph(graph, weight_bits=8, calibration=calibration,
                          run=functools.partial(emulate, check=False))


def main(argv: list[str] | None = None) -> int:
    from dalif_deploy.targets.emulator import emulate
    from dalif_deploy.targets.lava import run_lava
    from tqdm import tqdm

    from dalif_deploy.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "examples/checkpoints/digits-cnn.pt"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--per-sample-runs", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)

    program = build_program(Path(args.checkpoint))
    x = load_dataset("digits", split="test").x[: args.samples]
    n, k = len(x), min(args.per_sample_runs, len(x))
    print(f"digits-cnn: T={program.timesteps}, {len(program.populations)} populations, "
          f"{n} samples streamed, {k} per-sample compiled runs")

    t0 = time.perf_counter()
    stream = run_lava(program, x, timeout=args.timeout)
    t_stream = (time.perf_counter() - t0) / n
    print(f"lava streaming : {t_stream * 1e3:9.1f} ms/sample  ({stream.steps} steps in one "
          f"network; Lava run itself {stream.seconds:.2f} s)")

    single = []
    t0 = time.perf_counter()
    for i in tqdm(range(k), desc="lava per sample", unit="run"):
        single.append(run_lava(program, x[i:i + 1], timeout=args.timeout).outputs)
    t_single = (time.perf_counter() - t0) / k
    print(f"lava per sample: {t_single * 1e3:9.1f} ms/sample  (one compiled network each)")

    emulate(program, x[:1])  # warm-up (torch kernels)
    t0 = time.perf_counter()
    emu = emulate(program, x)
    t_emu = (time.perf_counter() - t0) / n
    print(f"emulator       : {t_emu * 1e3:9.3f} ms/sample")

    if not (np.array_equal(stream.outputs, emu.outputs)
            and np.array_equal(np.concatenate(single), emu.outputs[:k])):
        print("error: Lava and emulator readouts differ; timings are meaningless",
              file=sys.stderr)
        return 1
    print("readouts: streaming Lava == per-sample Lava == emulator (exact)")
    print(f"streaming speed-up {t_single / t_stream:.1f}")
    print(f"emulator speed-up over lava {t_stream / t_emu:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
