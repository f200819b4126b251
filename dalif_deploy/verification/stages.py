"""The stages of ``verify`` that run per batch and per shard: the float | NIR | fixed test
loop with its integer totals (which shards add up exactly), and Lava and ONNX, which rank 0
runs alone. :func:`dalif_deploy.verification.pipeline.run_stages` strings them together."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.neurons import neuron_layers
from dalif_deploy.targets.protocol import FixedPointResult


def _population_for(program, layer: str) -> str | None:
    """The population a float DA-LIF layer became (by name or NIR provenance)."""
    for p in program.populations:
        if p.name == layer or layer in p.provenance:
            return p.name
    return None


def first_divergence(emu: FixedPointResult, lava: FixedPointResult,
                     names: list[str] | None = None) -> dict[str, Any] | None:
    """Where Lava first departs from the emulator, or None when they are bit-identical.

    Both are recorded runs of one program on the same samples. Spikes are compared first
    (``names``: the spiking populations, default the emulator's ``spiking``): the divergence is
    the earliest step at which any layer differs (the shallowest such layer in program order,
    the first sample and neuron), since later and deeper differences follow from it. Then each
    layer's ``final_v``, then the readout integers. A trace that one side lacks counts as a
    divergence.
    """
    names = emu.spiking if names is None else names
    found = None
    for name in names:
        a, b = emu.spikes.get(name), lava.spikes.get(name)
        if a is None or b is None:
            return {"layer": name, "what": "missing spike trace",
                    "emulator": a is not None, "lava": b is not None}
        a, b = a.astype(np.int64), b.astype(np.int64)
        if a.shape != b.shape:
            return {"layer": name, "what": "spike trace shape",
                    "emulator": list(a.shape), "lava": list(b.shape)}
        diff = np.argwhere(a != b)
        if len(diff) and (found is None or int(diff[0][0]) < found["step"]):
            t, n, *idx = (int(i) for i in diff[0])
            found = {"layer": name, "what": "spike", "step": t, "sample": n, "neuron": idx,
                     "emulator": int(a[(t, n, *idx)]), "lava": int(b[(t, n, *idx)])}
    if found:
        return found
    for name in names:
        va, vb = emu.final_v.get(name), lava.final_v.get(name)
        if va is None or vb is None:
            return {"layer": name, "what": "missing final v",
                    "emulator": va is not None, "lava": vb is not None}
        if va.shape != vb.shape:
            return {"layer": name, "what": "final v shape", "emulator": list(va.shape),
                    "lava": list(vb.shape)}
        diff = np.argwhere(va != vb)
        if len(diff):
            n, *idx = (int(i) for i in diff[0])
            return {"layer": name, "what": "final v", "step": int(emu.spikes[name].shape[0] - 1),
                    "sample": n, "neuron": idx, "emulator": int(va[(n, *idx)]),
                    "lava": int(vb[(n, *idx)])}
    if not np.array_equal(emu.outputs, lava.outputs):
        n, k = (int(i) for i in np.argwhere(emu.outputs != lava.outputs)[0])
        return {"layer": "readout", "what": "output", "sample": n, "neuron": [k],
                "emulator": int(emu.outputs[n, k]), "lava": int(lava.outputs[n, k])}
    return None


class LayerTally:
    """Running per-layer figures over test batches (no whole-set spike arrays kept)."""

    def __init__(self, name: str, population: str | None) -> None:
        self.name, self.population = name, population
        self.elements = self.neurons = 0
        self.float_spikes = self.fixed_spikes = self.agree = self.nir_mismatch = 0
        self.float_totals: Any = 0  # the reference's spikes per neuron, summed ([*shape])

    def add(self, fs: np.ndarray, ns: np.ndarray | None, qs: np.ndarray | None) -> None:
        self.neurons = int(np.prod(fs.shape[2:]))
        self.elements += fs.size
        self.float_spikes += int(fs.sum())
        self.float_totals = self.float_totals + fs.sum((0, 1), dtype=np.int64)
        if ns is not None:
            self.nir_mismatch += int((fs != ns).sum())
        if qs is not None:
            if qs.shape != fs.shape:
                raise DaLifError(f"layer {self.name}: fixed-point spikes {qs.shape} do not "
                                 f"match float spikes {fs.shape}")
            self.fixed_spikes += int(qs.sum())
            self.agree += int((qs == fs).sum())

    def merge(self, other: LayerTally) -> None:
        """Add another shard's counts (all integers: exact in any order)."""
        self.neurons = max(self.neurons, other.neurons)
        self.elements += other.elements
        self.float_spikes += other.float_spikes
        self.float_totals = self.float_totals + other.float_totals
        self.fixed_spikes += other.fixed_spikes
        self.agree += other.agree
        self.nir_mismatch += other.nir_mismatch

    def row(self, emu_wraps: dict[str, int], emu_sats: dict[str, int]) -> dict[str, Any]:
        pop, n = self.population, max(self.elements, 1)
        return {"name": self.name, "population": pop, "neurons": self.neurons,
                "float_rate": self.float_spikes / n,
                "fixed_rate": self.fixed_spikes / n if pop else None,
                "spike_agreement": self.agree / n if pop else None,
                "nir_spike_mismatches": self.nir_mismatch,
                "u_wraps": emu_wraps.get(pop, 0) if pop else None,
                "v_saturations": emu_sats.get(pop, 0) if pop else None}


@dataclass
class LoopTotals:
    """What the test loop adds up over its batches: one shard's, or (:meth:`merge`) all.

    Everything but the per-sample predictions is an integer total, so shards add up to
    exactly the single-process figures; ``rasters`` (sample 0's spikes, float and fixed, per
    layer) come from batch 0 (rank 0's shard)."""

    tallies: dict[str, LayerTally]
    preds: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {"float": [], "nir": [], "fixed": []})
    wraps: dict[str, int] = field(default_factory=dict)
    sats: dict[str, int] = field(default_factory=dict)
    spike_sums: dict[str, np.ndarray] = field(default_factory=dict)  # per-neuron totals
    input_events: Any = 0  # per input element, int64 (cost.input_events)
    input_clipped: int = 0
    rasters: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def merge(parts: list[LoopTotals]) -> LoopTotals:
        """Consecutive shards' totals (data set order) as one; stage times: the slowest."""
        out = LoopTotals({})
        for p in parts:
            for k, v in p.preds.items():
                out.preds[k] += v
            for name, t in p.tallies.items():
                out.tallies.setdefault(name, LayerTally(name, t.population)).merge(t)
            for mine, theirs in ((out.wraps, p.wraps), (out.sats, p.sats),
                                 (out.spike_sums, p.spike_sums)):
                for k, v in theirs.items():
                    mine[k] = mine.get(k, 0) + v
            out.input_events = out.input_events + p.input_events
            out.input_clipped += p.input_clipped
            out.rasters = out.rasters or p.rasters
            for k, v in p.seconds.items():
                out.seconds[k] = max(out.seconds.get(k, 0.0), v)
        return out


def _check_reference_memory(program: Any, device: torch.device, batch: int, stages: int
                            ) -> None:
    """Refuse, with the figure, float/NIR references whose batch cannot fit the GPU's free
    memory (:data:`REFERENCE_BYTES_PER_NEURON_STEP` a neuron, step and sample, one stage at
    a time; blocks torch's allocator holds free count as free)."""
    if device.type != "cuda" or not stages:
        return
    from dalif_deploy.base.resources import device_memory_free, format_bytes

    need = reference_bytes(program) * batch
    free = device_memory_free(device)
    if need > 0.9 * free:
        neurons = sum(p.size for p in program.populations)
        raise DaLifError(f"the float references of {neurons:,} neurons, T={program.timesteps}, "
                         f"batch {batch} on {device} need about {format_bytes(need)} of device "
                         f"memory, more than the {format_bytes(free)} free there; lower "
                         "--batch-size")


def run_test_loop(program: Any, test: Any, model: torch.nn.Module | None, graph: Any,
               dt: float | None, opt: Any, starts: range, progress: bool) -> LoopTotals:
    """Float (``model``), NIR (``graph``) and emulator side by side on the test batches
    starting at ``starts`` (each ``opt.batch_size`` samples, as a single process batches
    them), tallied per layer on the fly.

    The emulator runs on ``opt.device``, the references on ``opt.reference_device``: on CUDA
    in IEEE float32 (no TF32, which cuDNN's convolutions would otherwise use:
    :func:`~dalif_deploy.targets.emulator_kernels.exact_kernels`), their predictions and
    spikes copied back to the host batch by batch."""
    import copy

    from dalif_deploy.base.geometry import lift_1d
    from dalif_deploy.converters.nir_to_torch import GraphRunner
    from dalif_deploy.fixedpoint.cost import input_events
    from dalif_deploy.float_model.zoo import run_model
    from dalif_deploy.targets.emulator import emulate, encode_input
    from dalif_deploy.targets.emulator_kernels import exact_kernels

    T, enc = int(program.timesteps), test.encoding
    dev = torch.device(opt.reference_device)
    _check_reference_memory(program, dev, opt.batch_size,
                            int(model is not None) + int(graph is not None))
    # the caller's model stays on the host (Lava's and ONNX's stages use it after this loop)
    ref_model = model if model is None or dev.type == "cpu" else copy.deepcopy(model).to(dev)
    runner = GraphRunner(graph, dt, device=dev) if graph is not None else None
    t = LoopTotals({k: LayerTally(k, _population_for(program, k)) for k in neuron_layers(model)}
                if model is not None else {})
    for k in ("float", "nir", "fixed"):
        if k == "fixed" or (k == "float" and model is not None) or (k == "nir" and graph
                                                                    is not None):
            t.seconds[k] = 0.0
    for i in tqdm(starts, desc="float | NIR | fixed", unit="batch", disable=not progress):
        xb = test.x[i:i + opt.batch_size]
        t0 = time.perf_counter()
        fsp: dict[str, Any] = {}
        nsp: dict[str, Any] = {}
        if ref_model is not None:
            with torch.no_grad(), exact_kernels(dev):
                # 0/1 spikes as uint8, a quarter of float32's memory and copies
                lg, fsp = run_model(ref_model, torch.from_numpy(xb).to(dev), T, enc,
                                    record_spikes=True, spike_dtype=torch.uint8)
            t.preds["float"].append(lg.argmax(1).cpu().numpy())
            fsp = {k: v.cpu() for k, v in fsp.items()}
        t1 = time.perf_counter()
        if runner is not None:
            with exact_kernels(dev):
                lg, nsp = runner.run(torch.from_numpy(xb), T, enc, record=True,
                                     spike_dtype=torch.uint8)  # counts stay float
            t.preds["nir"].append(lg.argmax(1).cpu().numpy())
            nsp = {k: v.cpu() for k, v in nsp.items()}
        t2 = time.perf_counter()
        emu = emulate(program, xb, record="spikes", batch_size=len(xb), device=opt.device,
                      kernels=opt.kernels)
        t.preds["fixed"].append(emu.predictions)
        for k, tot in emu.spike_totals.items():  # per-neuron spike totals (exact SynOps)
            t.spike_sums[k] = t.spike_sums.get(k, 0) + tot
        t.input_events = t.input_events + input_events(program, encode_input(program, xb))
        t.input_clipped += emu.input_clipped
        t3 = time.perf_counter()
        for k, d in (("float", t1 - t0), ("nir", t2 - t1), ("fixed", t3 - t2)):
            if k in t.seconds:
                t.seconds[k] += d
        for k in emu.u_wraps:
            t.wraps[k] = t.wraps.get(k, 0) + emu.u_wraps[k]
            t.sats[k] = t.sats.get(k, 0) + emu.v_saturations[k]
        refs = fsp if model is not None else nsp  # the reference's spikes per layer
        if model is None:
            for k in nsp:
                t.tallies.setdefault(k, LayerTally(k, _population_for(program, k)))
        for lname, tally in t.tallies.items():
            fs = refs[lname].numpy()  # uint8, or a multi-spike node's float counts
            fs = fs.reshape(*fs.shape[:2], *lift_1d(fs.shape[2:]))  # a 1-D map as the graph's
            ns = nsp[lname].numpy() if model is not None and lname in nsp else None
            qs = emu.spikes.get(tally.population) if tally.population else None
            tally.add(fs, ns, qs)
            if i == 0 and qs is not None:
                t.rasters[lname] = {"name": lname, "float": fs[:, 0], "fixed": qs[:, 0]}
    return t


BATCH_SIZE_DEFAULT = 256  # verify's test batch unless memory allows fewer (batch_sizing)
#: bytes per neuron, step and sample a float or NIR stage holds while the emulator runs (its
#: recorded spikes and what the forward pass keeps; measured on ResNet-19 w128: float 11.6,
#: NIR 4.6; rounded up)
REFERENCE_BYTES_PER_NEURON_STEP = 16


def reference_bytes(program: Any) -> int:
    """Bytes one sample of one reference stage (float or NIR) holds: every neuron, every step."""
    return REFERENCE_BYTES_PER_NEURON_STEP * int(program.timesteps) * sum(
        p.size for p in program.populations)
#: the default batch keeps every population's state tensor (4 bytes a neuron) within this:
#: ResNet-19 w128's emulator (largest population 131,072 neurons, 512 KiB a sample) took
#: 42.8-43.8 ms a sample at batch 64-192 and 54 at 256 (docs/MEASURED.md); the float model
#: is as fast at 128 as at 256
BATCH_TENSOR_BYTES = 64 << 20


def batch_sizing(program: Any, batch_size: int | None, float_stage: bool, nir_stage: bool
                 ) -> tuple[int, str | None]:
    """``(batch, note)`` of verify's test loop: ``batch_size`` when given; else the largest
    batch up to :data:`BATCH_SIZE_DEFAULT` whose emulator run with traces plus the float and
    NIR stages' spikes fit the memory available and whose population tensors stay within
    :data:`BATCH_TENSOR_BYTES`, with a note when that is fewer."""
    from dalif_deploy.base.resources import format_bytes, mem_available
    from dalif_deploy.targets.emulator import emulator_bytes, fitting_batch_size

    if batch_size is not None:
        return batch_size, None
    neurons = sum(p.size for p in program.populations)
    extra = (int(float_stage) + int(nir_stage)) * reference_bytes(program)
    largest = max(p.size for p in program.populations)
    fast = min(BATCH_SIZE_DEFAULT, max(1, BATCH_TENSOR_BYTES // (4 * largest)))
    batch = fitting_batch_size(program, fast, record="spikes", per_sample_extra=extra)
    if batch == BATCH_SIZE_DEFAULT:
        return batch, None
    if batch == fast:
        return batch, (f"batch size {batch}: the largest whose population tensors stay within "
                       f"{format_bytes(BATCH_TENSOR_BYTES)} ({largest:,} neurons in the "
                       "largest), which runs fastest; --batch-size N to choose")
    full = emulator_bytes(program, BATCH_SIZE_DEFAULT, BATCH_SIZE_DEFAULT, spikes_only=True) + \
        BATCH_SIZE_DEFAULT * extra
    avail = mem_available()
    return batch, (f"batch size {batch}: {BATCH_SIZE_DEFAULT} samples at once would need about "
                   f"{format_bytes(full)} of memory ({neurons:,} neurons, T="
                   f"{program.timesteps}), {format_bytes(avail or 0)} is available; "
                   "--batch-size N to choose")


LAVA_SAMPLES_DEFAULT = 16  # verify's Lava samples unless --lava-samples says otherwise
LAVA_TIME_BUDGET = 600.0  # seconds the default Lava sample count may take (estimated)
LAVA_TIMEOUT_DEFAULT = 600.0  # the watchdog timeout's floor when none is given
LAVA_TIMEOUT_FACTOR = 4.0  # the default timeout: this many times the estimated run time


def lava_sizing(program: Any, samples: int | None, timeout: float | None, available: int
                ) -> tuple[int, float, str | None]:
    """``(samples, timeout, note)`` of verify's Lava stage. Given values are kept; a default
    sample count is :data:`LAVA_SAMPLES_DEFAULT`, lowered (to 1 at least) to what the Lava time
    model (:func:`~dalif_deploy.targets.lava.run.estimate_run_seconds`) says finishes within
    :data:`LAVA_TIME_BUDGET`; a default timeout is ``LAVA_TIMEOUT_FACTOR`` times the run's
    estimate, at least :data:`LAVA_TIMEOUT_DEFAULT`. ``note`` says what was chosen and why
    (None when the defaults fit as they are)."""
    n = min(LAVA_SAMPLES_DEFAULT if samples is None else samples, available)
    if n == 0:
        return 0, timeout or LAVA_TIMEOUT_DEFAULT, None
    from dalif_deploy.targets.lava.lower import plan_program
    from dalif_deploy.targets.lava.run import estimate_run_seconds

    plan = plan_program(program)
    notes = []
    if samples is None:
        wanted = n
        while n > 1 and estimate_run_seconds(plan, n) > LAVA_TIME_BUDGET:
            n -= 1
        if n < wanted:
            notes.append(f"Lava runs {n} of the default {wanted} samples: {wanted} would take "
                         f"about {estimate_run_seconds(plan, wanted) / 60:.0f} min here "
                         f"({plan.process_count} Lava processes); --lava-samples N to choose")
    estimate = estimate_run_seconds(plan, n)
    if timeout is None:
        timeout = max(LAVA_TIMEOUT_DEFAULT, LAVA_TIMEOUT_FACTOR * estimate)
        if timeout > LAVA_TIMEOUT_DEFAULT:
            notes.append(f"Lava watchdog timeout {timeout:.0f} s ({LAVA_TIMEOUT_FACTOR:g}x the "
                         f"estimated {estimate:.0f} s); --timeout S to choose")
    return n, float(timeout), "; ".join(notes) or None


def run_lava_and_onnx(program: Any, test: Any, model: torch.nn.Module | None, name: str,
                   n_lava: int, opt: Any, progress: bool) -> dict[str, Any]:
    """Lava on the first ``n_lava`` test samples, bit for bit against the emulator, and the
    ONNX stage (``opt.onnx`` with a torch ``model``): their figures and seconds."""
    out: dict[str, Any] = {"lava_accuracy": None, "lava_bit_exact": None, "divergence": None,
                           "lava_error": None, "onnx_pred": None, "seconds": {}}
    t0 = time.perf_counter()
    if n_lava:
        from dalif_deploy.targets.emulator import emulate
        from dalif_deploy.targets.lava import lava_steps, run_lava

        limits = {k: v for k, v in (("max_processes", opt.max_lava_processes),
                                     ("max_memory_gib", opt.max_lava_memory)) if v is not None}
        with tqdm(total=lava_steps(program, n_lava), desc=f"lava ({n_lava} samples)",
                  unit="step", disable=not progress) as bar:
            try:
                lava = run_lava(program, test.x[:n_lava], timeout=opt.timeout,
                                progress=bar.update, **limits)
            except DaLifError as e:
                out["lava_error"], out["lava_bit_exact"] = str(e), False
            else:
                sub = emulate(program, test.x[:n_lava], record=True, batch_size=opt.batch_size,
                              device=opt.device, kernels=opt.kernels)
                out["divergence"] = first_divergence(sub, lava)
                out["lava_bit_exact"] = out["divergence"] is None
                out["lava_accuracy"] = float((lava.predictions == test.y[:n_lava]).mean())
        out["seconds"]["lava"] = round(time.perf_counter() - t0, 3)
    if opt.onnx and model is not None:
        t0 = time.perf_counter()
        from dalif_deploy.converters.torch_to_onnx import export_onnx
        from dalif_deploy.targets.onnxruntime import run_onnx

        with tempfile.TemporaryDirectory(dir=opt.workdir) as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, path, int(program.timesteps), test.input_shape,
                        encoding=test.encoding, model_name=name)
            out["onnx_pred"] = run_onnx(path, test.x, batch_size=opt.batch_size,
                                        progress=progress).argmax(1)
        out["seconds"]["onnx"] = round(time.perf_counter() - t0, 3)
    return out
