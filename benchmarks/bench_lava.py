"""Lava target speed on digits-cnn, per layer and per channel: streaming Lava vs the emulator.

From one run, for the shipped per-layer digits-cnn: the time per sample when --samples samples
stream through ONE compiled Lava network, when each sample gets its own compiled network
(measured on --per-sample-runs samples, since each costs a full compile and process start-up),
and the emulator's time per sample. The same streaming and emulator timings for a per-channel
digits-cnn (every channel its own decay; trained here for 2 epochs with `train --granularity
channel` unless --channel-checkpoint is given). Streaming runs alternate between the two models
--repeats times and the fastest of each counts (the machine may be shared). All times are wall
clock as a user sees them (build, compile, run, shutdown). Each model's Lava spikes and final v
on every layer, every sample, must equal the emulator's, or the benchmark fails. While Lava
runs, the proportional set size (PSS) of all its OS processes is sampled, next to the guard's
estimate. Ends with the lines ``streaming speed-up <R>``, ``emulator speed-up over lava <R>``
(per layer, vs streaming Lava), ``emulator speed-up over lava per-channel <R>``, ``processes
per-layer <N> per-channel <M>`` and ``per-channel/per-layer lava time ratio <R>``.

    .venv/bin/python benchmarks/bench_lava.py [--samples 64] [--per-sample-runs 8]

Big programs instead (``--paper``: a random-weight ResNet-19 of ``--paper-width``, default 128,
T=4, quantised here in minutes; ``--program FILE.fxp``, repeatable, on ``--samples`` random
inputs): one step of every Conv's arithmetic outside Lava, Lava's stock then ours, side by side
and checked equal; then a streamed Lava run with our synapse models (and with ``--stock`` Lava's
own too), checked bit for bit against the emulator, with the peak PSS against the guard's
estimate. Ends with ``seconds per step (<name>, exact conv model) <S>`` (and ``stock``, and
``stock/exact conv model time ratio``).

    .venv/bin/python benchmarks/bench_lava.py --paper [--stock] --samples 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
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

    from dalif_deploy.datasets.loaders import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.nir"
        export_checkpoint(checkpoint, path)
        graph = nir.read(str(path))
    calibration = load_dataset("digits", split="train").x[:256]
    return quantize_graph(graph, weight_bits=8, calibration=calibration,
                          run=functools.partial(emulate, check=False))


def train_per_channel(out: Path) -> Path:
    """`dalif-deploy train --model digits-cnn --granularity channel --epochs 2` (a few s)."""
    from dalif_deploy.cli import main

    if main(["train", "--model", "digits-cnn", "--granularity", "channel", "--epochs", "2",
             "--out", str(out)]) != 0:
        raise SystemExit("error: training the per-channel model failed")
    return out


class MemorySampler:
    """Samples the summed PSS of this process's descendants (the Lava run) every 0.2 s."""

    def __init__(self) -> None:
        self.peak_bytes, self.peak_processes = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            pids = _descendants(os.getpid())
            total = sum(_pss(p) for p in pids)
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_processes = total, len(pids)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", encoding="ascii") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_parity(name: str, program, x, result) -> bool:
    """Lava equals the synchronous emulator on every layer, every sample (spikes, final v)."""
    from dalif_deploy.targets.emulator import emulate

    emu = emulate(program, x, mode="sync", record=True)
    ok = np.array_equal(result.outputs, emu.outputs) and np.array_equal(
        result.spike_counts, emu.spike_counts)
    for p in program.populations:
        ok = ok and np.array_equal(result.spikes[p.name], emu.spikes[p.name].astype(bool))
        ok = ok and np.array_equal(result.final_v[p.name], emu.v[p.name][-1])
    if not ok:
        print(f"error: {name}: Lava and emulator differ; timings are meaningless",
              file=sys.stderr)
    return ok


def emulator_time(program, x) -> float:
    """Seconds per sample of the emulator (after a warm-up), best of 3."""
    from dalif_deploy.targets.emulator import emulate

    emulate(program, x[:1])  # warm-up (torch kernels)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        emulate(program, x)
        best = min(best, time.perf_counter() - t0)
    return best / len(x)


def paper_program(width: int):
    """A random-weight resnet19 of ``width`` (batch-norm set so that every layer spikes), T=4,
    exported and quantised (calibrated on 4 random 32x32 images), and those images."""
    import functools

    import torch
    from dalif_deploy.converters.nir_to_fixed import quantize_graph
    from dalif_deploy.converters.torch_to_nir import export_nir
    from dalif_deploy.targets.emulator import emulate

    from dalif_deploy.float_model.zoo import build_model, default_config, run_model

    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    torch.manual_seed(0)
    model = build_model(default_config("resnet19", width=width))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum, m.weight.data[:], m.bias.data[:] = None, 2.0, 0.5
        run_model(model.train(), torch.from_numpy(x), 4)
    program = quantize_graph(export_nir(model.eval(), x.shape[1:], 4), calibration=x,
                             run=functools.partial(emulate, check=False))
    return program, x


def conv_models(name: str, program, x, models: list[str], timeout: float) -> dict[str, float]:
    """Seconds per Lava step of ``program`` on samples ``x`` with each conv model, checked
    bit for bit against the emulator, with the run's peak PSS against the guard's estimate."""
    from dalif_deploy.targets.lava import run_lava
    from dalif_deploy.targets.lava.lower import plan_program
    from dalif_deploy.targets.lava.run import estimate_memory_bytes, estimate_step_seconds

    plan = plan_program(program)
    per_step = {}
    for conv in models:
        with MemorySampler() as mem:
            r = run_lava(program, x, timeout=timeout, conv=conv)
        per_step[conv] = r.seconds / r.steps
        est = estimate_memory_bytes(plan, len(x))
        print(f"{name}: lava {conv} conv model: {per_step[conv]:.2f} s/step ({r.steps} steps, "
              f"{r.processes} processes, Lava run {r.seconds:.1f} s; time model "
              f"{estimate_step_seconds(plan):.2f} s/step); peak PSS "
              f"{mem.peak_bytes / 2**30:.2f} GiB, guard estimate {est / 2**30:.2f} GiB "
              f"({est / max(mem.peak_bytes, 1):.2f}x); bit-exact with the emulator: "
              f"{check_parity(name, program, x, r)}")
    return per_step


def conv_arithmetic(name: str, program) -> tuple[float, float]:
    """One step of every Lava Conv of ``program`` outside Lava (spikes at rate 0.2): seconds of
    Lava's stock arithmetic (``utils.conv`` + 24-bit wrap) and of ours (``conv_step``), taking
    turns layer by layer, the integers checked equal."""
    from dalif_deploy.targets.lava.conv import conv_step, kernel_row_bound
    from dalif_deploy.targets.lava.lower import plan_program
    from lava.proc.conv import utils

    rng = np.random.default_rng(0)
    stock = ours = 0.0
    for c in plan_program(program).conns:
        if c.kind != "conv":
            continue
        x = (rng.random(c.conv["input_shape"]) < 0.2).astype(np.int32)
        w = c.weights.astype(np.int32)
        args = (x, w, w.shape[1:3], c.conv["stride"], c.conv["padding"], (1, 1),
                c.conv["groups"])
        t0 = time.perf_counter()
        ref = utils.signed_clamp(utils.conv(*args), bits=24)
        t1 = time.perf_counter()
        got = conv_step(*args, kernel_row_bound(w))
        t2 = time.perf_counter()
        if not np.array_equal(ref, got):
            raise SystemExit(f"error: {name}: {c.synapse}: our conv differs from Lava's")
        stock, ours = stock + t1 - t0, ours + t2 - t1
    print(f"{name}: conv arithmetic of one step outside Lava: stock {stock:.2f} s, ours "
          f"{ours:.3f} s ({stock / ours:.0f}x), the same integers")
    return stock, ours


def paper(args: argparse.Namespace) -> int:
    """``--paper`` / ``--program``: seconds per step of big programs, ours vs stock conv."""
    from dalif_deploy.fixedpoint.fxp_format import load_program

    runs = []
    for path in args.program or []:
        program = load_program(path)
        rng = np.random.default_rng(0)
        shape = (args.samples, *((program.timesteps,) if program.input.kind == "events"
                                 else ()), *program.input.shape)
        x = (rng.random(shape) < 0.1).astype(np.float32) if program.input.kind == "events" \
            else rng.random(shape, dtype=np.float32)
        runs.append((Path(path).stem, program, x))
    if args.paper:
        program, x = paper_program(args.paper_width)
        runs.append((f"resnet19 width {args.paper_width}", program, x[: args.samples]))
    for name, program, x in runs:
        conv_arithmetic(name, program)
        models = ["exact", "stock"] if args.stock else ["exact"]
        per_step = conv_models(name, program, x, models, args.timeout)
        for conv, s in per_step.items():
            print(f"seconds per step ({name}, {conv} conv model) {s:.2f}")
        if args.stock:
            print(f"stock/exact conv model time ratio ({name}) "
                  f"{per_step['stock'] / per_step['exact']:.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from dalif_deploy.targets.lava import run_lava
    from dalif_deploy.targets.lava.lower import plan_program
    from dalif_deploy.targets.lava.run import estimate_memory_bytes
    from tqdm import tqdm

    from dalif_deploy.datasets.loaders import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "dalif_deploy/checkpoints/digits-cnn.pt"))
    ap.add_argument("--channel-checkpoint", help="a per-channel digits-cnn checkpoint "
                    "(default: train one for 2 epochs into a temporary folder)")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--per-sample-runs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="streaming runs per model (best)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--paper", action="store_true", help="instead: seconds per Lava step of a "
                    "random-weight resnet19 (width --paper-width, T=4; quantised here, minutes)")
    ap.add_argument("--paper-width", type=int, default=128)
    ap.add_argument("--program", action="append", help="instead: seconds per Lava step of this "
                    ".fxp on --samples random inputs (repeatable)")
    ap.add_argument("--stock", action="store_true", help="with --paper/--program: also time "
                    "Lava's stock conv model (10-50x slower)")
    args = ap.parse_args(argv)
    if args.paper or args.program:
        return paper(args)

    with tempfile.TemporaryDirectory() as tmp:
        channel_ckpt = Path(args.channel_checkpoint or train_per_channel(
            Path(tmp) / "digits-cnn-channel.pt"))
        programs = {"per-layer": build_program(Path(args.checkpoint)),
                    "per-channel": build_program(channel_ckpt)}
    x = load_dataset("digits", split="test").x[: args.samples]
    n, k = len(x), min(args.per_sample_runs, len(x))
    plans = {name: plan_program(p) for name, p in programs.items()}
    for name, program in programs.items():
        decays = [int(np.unique(p.dv).size) for p in program.populations]
        print(f"digits-cnn {name}: T={program.timesteps}, {len(program.populations)} "
              f"populations (distinct decays {decays}), {len(program.synapses)} synapses, "
              f"{plans[name].process_count} Lava processes; {n} samples streamed")

    best = {name: float("inf") for name in programs}
    results, memory = {}, {}
    for _ in range(max(1, args.repeats)):
        for name, program in programs.items():
            with MemorySampler() as mem:
                t0 = time.perf_counter()
                results[name] = run_lava(program, x, timeout=args.timeout)
                best[name] = min(best[name], (time.perf_counter() - t0) / n)
            memory[name] = max(memory.get(name, (0, 0)), (mem.peak_bytes, mem.peak_processes))
    for name, r in results.items():
        peak, procs = memory[name]
        est = estimate_memory_bytes(plans[name], n)
        print(f"lava streaming {name:11s}: {best[name] * 1e3:9.1f} ms/sample  ({r.steps} steps "
              f"in one network of {r.processes} processes; Lava run itself {r.seconds:.2f} s)")
        print(f"  memory: peak PSS {peak / 2**30:.2f} GiB over {procs} OS processes "
              f"({peak / max(procs, 1) / 2**20:.0f} MiB each); guard estimate "
              f"{est / 2**30:.2f} GiB")

    per_layer = programs["per-layer"]
    single = []
    t0 = time.perf_counter()
    for i in tqdm(range(k), desc="lava per sample", unit="run"):
        single.append(run_lava(per_layer, x[i:i + 1], timeout=args.timeout).outputs)
    t_single = (time.perf_counter() - t0) / k
    print(f"lava per sample: {t_single * 1e3:9.1f} ms/sample  (one compiled network each)")

    emu = {name: emulator_time(p, x) for name, p in programs.items()}
    for name, t in emu.items():
        print(f"emulator {name:11s}: {t * 1e3:9.3f} ms/sample")

    ok = all(check_parity(name, programs[name], x, results[name]) for name in programs)
    if not ok or not np.array_equal(np.concatenate(single), results["per-layer"].outputs[:k]):
        print("error: readouts differ; timings are meaningless", file=sys.stderr)
        return 1
    print("parity: streaming Lava == emulator on every layer, every sample, both models; "
          "per-sample Lava readouts equal too (exact)")
    print(f"streaming speed-up {t_single / best['per-layer']:.1f}")
    print(f"emulator speed-up over lava {best['per-layer'] / emu['per-layer']:.1f}")
    print(f"emulator speed-up over lava per-channel {best['per-channel'] / emu['per-channel']:.1f}")
    print(f"processes per-layer {results['per-layer'].processes} "
          f"per-channel {results['per-channel'].processes}")
    print(f"per-channel/per-layer lava time ratio {best['per-channel'] / best['per-layer']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
