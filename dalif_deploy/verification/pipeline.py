"""``dalif-deploy verify``: float -> NIR -> fixed point -> Lava, one honest report.

Stages (each timed, each with a progress bar):

1. **export**: the checkpoint's torch model to NIR, written to a file and read back;
2. **quantize**: NIR -> FixedProgram (``weight_bits``-bit weights, default 8), calibrated on
   (up to 512) training samples;
3. **float | NIR | fixed**: the torch model, our NIR float reference and the bit-accurate
   emulator side by side over the whole test split, batch by batch (per-layer spike agreement
   and firing rates are tallied on the fly, so large test sets need no whole-set recordings);
4. **lava**: Lava on the first ``lava_samples`` test samples, compared with the emulator bit
   for bit (every layer's spikes and final voltages, and the readout integers);
5. **onnx** (optional): the ONNX export run by onnxruntime.

``passed`` holds when the float -> fixed accuracy drop is at most ``max_accuracy_drop``
percentage points, float and fixed-point predictions agree on at least ``min_agreement`` of the
samples, the NIR reference predicts exactly as the float model, and Lava is bit-exact with the
emulator (when Lava ran).

:func:`dalif_deploy.verification.files.verify_file` runs the same stages on a NIR graph (the NIR
interpreter is the float reference) or on a program as given (:func:`run_stages`: a stage
whose model is absent reports ``None``, and ``result["absent"]`` says why).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.cost import cost_line
from dalif_deploy.targets.protocol import FixedPointResult

from .stages import (
    BATCH_SIZE_DEFAULT,
    LayerTally,
    LoopTotals,
    batch_sizing,
    first_divergence,
    lava_sizing,
    run_lava_and_onnx,
    run_test_loop,
)

__all__ = ["VerifyOptions", "first_divergence", "run_stages", "verify_checkpoint",
           "verify_model", "write_report"]


#: training samples (at most) the quantiser is calibrated on
CALIBRATION_SAMPLES = 512


@dataclass(frozen=True)
class VerifyOptions:
    """Thresholds and run settings of a verification (the CLI flags of ``verify``)."""

    #: first N test samples run on Lava (0: skip Lava); None: LAVA_SAMPLES_DEFAULT, fewer where
    #: the Lava time model says they would not finish within LAVA_TIME_BUDGET (said in the result)
    lava_samples: int | None = None
    min_agreement: float = 0.99  # float/fixed prediction agreement, 0..1
    max_accuracy_drop: float = 1.0  # float -> fixed accuracy drop, percentage points
    onnx: bool = False  # include the ONNX stage
    #: Lava watchdog, seconds; None: the larger of LAVA_TIMEOUT_DEFAULT and LAVA_TIMEOUT_FACTOR
    #: times the run's estimated time, so that the default never kills a run merely slow
    timeout: float | None = None
    max_lava_processes: int | None = None  # Lava run guard limits (None: the lava target's)
    max_lava_memory: float | None = None  # GiB
    #: test samples per batch; None: the largest up to BATCH_SIZE_DEFAULT whose emulator traces
    #: and float/NIR stages fit this machine's memory (said in the result when it is fewer)
    batch_size: int | None = None
    progress: bool = True
    workdir: str | Path | None = None  # where temporary NIR/ONNX files go
    weight_bits: int = 8  # weight mantissa bits of the program quantised (2..8)
    device: str = "cpu"  # the emulator's torch device (cpu, cuda, cuda:N)
    #: the float and NIR references' torch device: cpu (their figures then do not depend on
    #: ``device``) or a GPU, IEEE float32 there, where a float sum on a threshold may round
    #: otherwise than on the CPU (the fixed point is the same integers on every device)
    reference_device: str = "cpu"
    kernels: str = "auto"  # the emulator's conv kernels (targets/emulator_kernels.py KERNELS)
    #: the cost model's hardware figures: a Hardware, a mapping or a JSON file (None: defaults)
    hardware: Any = None

    def __post_init__(self) -> None:
        from dalif_deploy.base.parallel import resolve_device
        from dalif_deploy.converters.nir_to_fixed import check_weight_bits
        from dalif_deploy.fixedpoint.hardware import hardware
        from dalif_deploy.targets.emulator_kernels import check_kernels

        object.__setattr__(self, "weight_bits", check_weight_bits(self.weight_bits))
        object.__setattr__(self, "hardware", hardware(self.hardware))
        resolve_device(self.device)  # refuses a device this machine lacks, before any work
        resolve_device(self.reference_device, "--reference-device")
        check_kernels(self.kernels)
        if not 0 <= self.min_agreement <= 1:
            raise DaLifError(f"--min-agreement must lie in [0, 1], got {self.min_agreement}")
        if self.max_accuracy_drop < 0:
            raise DaLifError(f"--max-accuracy-drop must be >= 0, got {self.max_accuracy_drop}")
        if self.lava_samples is not None and self.lava_samples < 0:
            raise DaLifError(f"--lava-samples must be >= 0, got {self.lava_samples}")
        if self.lava_samples != 0 and self.timeout is not None and not self.timeout > 0:
            raise DaLifError(f"--timeout must be a positive number of seconds, got "
                             f"{self.timeout}")
        if self.batch_size is not None and self.batch_size < 1:
            raise DaLifError(f"batch size must be >= 1, got {self.batch_size}")


def load_checkpoint_data(checkpoint: str | Path, dataset: str | None = None,
                         data_dir: str | None = None) -> tuple[torch.nn.Module, Any, Any, Any]:
    """``(model, checkpoint, test split, calibration set)`` as verify uses them: the data set
    the checkpoint records (or ``dataset``), its calibration set the first
    :data:`CALIBRATION_SAMPLES` training samples; labels must fit the model's classes, values
    outside its data set's range get a warning
    (:func:`~dalif_deploy.datasets.loaders.range_warning`)."""
    from dalif_deploy.datasets.loaders import load_dataset, warn_range
    from dalif_deploy.float_model.loading import load_model

    model, ckpt = load_model(checkpoint)
    ds_name = dataset or ckpt.dataset.get("name", "digits")
    T = ckpt.timesteps
    test = load_dataset(ds_name, "test", data_dir, timesteps=T, classes=ckpt.num_classes)
    want = tuple(ckpt.config.get("input_shape", test.input_shape))
    if tuple(test.input_shape) != want:
        raise DaLifError(f"data set {ds_name} has input shape {test.input_shape}, the model "
                         f"expects {want}; pick a matching --dataset")
    warn_range(test, ckpt.dataset.get("name"))
    calib = load_dataset(ds_name, "train", data_dir, timesteps=T, samples=CALIBRATION_SAMPLES,
                         classes=ckpt.num_classes)
    return model, ckpt, test, calib


def verify_checkpoint(checkpoint: str | Path, *, dataset: str | None = None,
                      data_dir: str | None = None, options: VerifyOptions | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every stage on ``checkpoint`` (its test split, calibration on up to 512 training
    samples); returns ``(result, artefacts)`` as :func:`verify_model` does."""
    t0 = time.perf_counter()
    model, ckpt, test, calib = load_checkpoint_data(checkpoint, dataset, data_dir)
    T = ckpt.timesteps
    load_seconds = round(time.perf_counter() - t0, 3)
    result, artefacts = verify_model(
        model, test, calib.x, T, name=ckpt.model_name, source=str(checkpoint),
        metadata={"source_checkpoint_sha256": ckpt.sha256}, options=options)
    result["seconds"] = {"load": load_seconds, **result["seconds"]}
    return result, artefacts


def verify_model(model: torch.nn.Module, test: Any, calibration: np.ndarray, timesteps: int,
                 *, name: str = "model", source: str = "",
                 metadata: dict[str, Any] | None = None, options: VerifyOptions | None = None,
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every stage on any single-step DA-LIF ``model`` (zoo or not).

    ``test`` is a :class:`~dalif_deploy.datasets.loaders.Dataset` (the samples as the model
    receives them);
    ``calibration`` float samples for the quantiser (training data). Returns ``(result,
    artefacts)``: ``result`` is the JSON-able report (keys documented in docs/formats.md),
    ``artefacts`` what the HTML report plots (sample 0's spikes, the program and the graph).
    """
    from dalif_deploy.converters.nir_to_fixed import quantize_graph

    opt = options or VerifyOptions()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    graph = export_round_trip(model, test, timesteps, name, metadata, opt)
    seconds["export"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    program = quantize_graph(graph, opt.weight_bits, calibration=calibration,
                             run=calibration_run(opt))
    seconds["quantize"] = round(time.perf_counter() - t0, 3)
    return run_stages(program, test, name=name, source=source, model=model, graph=graph,
                       options=opt, seconds=seconds)


def calibration_run(opt: VerifyOptions) -> Callable[[Any, Any], FixedPointResult]:
    """The quantiser's ``run(program, x)``: the emulator, unchecked, on ``opt.device``, its
    samples split over the processes of a sharded run (exact, so the joined run is the one a
    single process computes, and every process quantises to the same program)."""
    from dalif_deploy.base.parallel import current
    from dalif_deploy.targets.emulator import emulate, fitting_batch_size

    world = current()

    def run(program: Any, x: Any) -> FixedPointResult:
        batch = opt.batch_size or fitting_batch_size(program, BATCH_SIZE_DEFAULT, record=False)
        sl = world.shard(len(x), batch)
        parts = world.gather_call(lambda: emulate(
            program, x[sl], check=False, batch_size=batch, device=opt.device,
            kernels=opt.kernels)
            if sl.stop > sl.start else None)
        return FixedPointResult.join([p for p in parts if p is not None])

    return run


def export_round_trip(model: torch.nn.Module, test: Any, timesteps: int, name: str,
                  metadata: dict[str, Any] | None, opt: VerifyOptions) -> Any:
    """``model`` exported to NIR, through a file and back."""
    from dalif_deploy.converters.ir.graph import read_nir
    from dalif_deploy.converters.torch_to_nir import export_nir, write_nir

    graph = export_nir(model, test.input_shape, int(timesteps), encoding=test.encoding,
                       normalization=test.normalization,
                       metadata={**(metadata or {}), "model_name": name,
                                 "dataset": test.name})
    with tempfile.TemporaryDirectory(dir=opt.workdir) as tmp:
        path = Path(tmp) / "model.nir"
        write_nir(graph, path)
        return read_nir(path)


def run_stages(program: Any, test: Any, *, name: str, source: str,
                model: torch.nn.Module | None = None, graph: Any = None,
                dt: float | None = None, options: VerifyOptions,
                seconds: dict[str, float], absent: dict[str, str] | None = None,
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Float (``model``), NIR (``graph``) and emulator side by side over ``test``, then Lava
    and ONNX. The float reference is the torch model, else the NIR graph; a stage whose model
    is not given reports ``None`` (``absent`` says why)."""
    from dalif_deploy.base.parallel import current
    from dalif_deploy.fixedpoint.cost import cost_report

    from .verdict import chance_level, decay_table, prediction_flips, verdict

    opt, world = options, current()
    T = int(program.timesteps)
    ref = "float" if model is not None else "nir" if graph is not None else None
    batch, batch_note = batch_sizing(program, opt.batch_size, model is not None,
                                     graph is not None)
    opt = dataclasses.replace(opt, batch_size=batch)
    sl = world.shard(len(test), opt.batch_size)
    totals = LoopTotals.merge(world.gather_call(lambda: run_test_loop(
        program, test, model, graph, dt, opt, range(sl.start, sl.stop, opt.batch_size),
        opt.progress and world.main)))
    tallies = totals.tallies
    for k, v in totals.seconds.items():  # the slowest shard's time (all of it in one process)
        seconds[k] = v
    got = {k: np.concatenate(v) if v else None for k, v in totals.preds.items()}
    float_pred, nir_pred, fixed_pred = got["float"], got["nir"], got["fixed"]
    ref_pred = got[ref] if ref else None
    wraps, sats = totals.wraps, totals.sats
    n_lava, timeout, lava_note = lava_sizing(program, opt.lava_samples, opt.timeout, len(test))
    opt = dataclasses.replace(opt, lava_samples=n_lava, timeout=timeout)
    absent = dict(absent or {})
    if opt.onnx and model is None:
        absent["onnx"] = "the ONNX stage exports a torch model: give a checkpoint (.pt)"
    # Lava and ONNX run in rank 0 alone; every rank gets their figures
    tail = world.on_main(lambda: run_lava_and_onnx(program, test, model, name, n_lava, opt,
                                                opt.progress and world.main))
    lava_acc, lava_exact, divergence, lava_error, onnx_pred = (
        tail[k] for k in ("lava_accuracy", "lava_bit_exact", "divergence", "lava_error",
                          "onnx_pred"))
    seconds.update(tail["seconds"])
    seconds = {k: round(v, 3) for k, v in seconds.items()}

    # Figures and checks ----------------------------------------------------------------------
    def acc(p: np.ndarray | None) -> float | None:
        return None if p is None else float((p == test.y).mean())

    fixed_acc = acc(fixed_pred)
    agreement = drop = None
    checks = []
    if ref_pred is not None:
        label = "float" if ref == "float" else "NIR"
        agreement = float((ref_pred == fixed_pred).mean())
        drop = 100 * (acc(ref_pred) - fixed_acc)
        checks += [
            {"check": f"accuracy drop {label} -> fixed (pp)", "id": "accuracy_drop",
             "unit": "pp", "value": drop, "limit": opt.max_accuracy_drop,
             "ok": drop <= opt.max_accuracy_drop},
            {"check": f"prediction agreement {label}/fixed", "id": "agreement",
             "unit": "fraction", "value": agreement, "limit": opt.min_agreement,
             "ok": agreement >= opt.min_agreement}]
    if float_pred is not None and nir_pred is not None:
        checks.append({"check": "NIR predictions == float", "id": "nir", "unit": "fraction",
                       "value": float((nir_pred == float_pred).mean()), "limit": 1.0,
                       "ok": bool(np.array_equal(nir_pred, float_pred))})
    if n_lava:
        checks.append({"check": "Lava bit-exact with emulator", "id": "lava",
                       "value": lava_exact, "limit": True, "ok": bool(lava_exact)})
    if onnx_pred is not None:
        same = float((onnx_pred == float_pred).mean())
        checks.append({"check": "ONNX predictions == float", "id": "onnx", "unit": "fraction",
                       "value": same, "limit": 1.0, "ok": same == 1.0})
    layers = [t.row(wraps, sats) for t in tallies.values()]
    recurrent = {s.target for s in program.synapses if s.recurrent}
    for ly in layers:  # a layer fed back its own previous spikes (docs/DESIGN.md section 3.1)
        ly["recurrent"] = ly["population"] in recurrent
    readout = program.readout.population
    result: dict[str, Any] = {
        "checkpoint": source,
        "model": name,
        "dataset": test.name,
        "samples": len(test),
        "timesteps": T,
        "weight_bits": _program_weight_bits(program),
        "float_accuracy": acc(float_pred),
        "nir_accuracy": acc(nir_pred),
        "fixed_accuracy": fixed_acc,
        "lava_accuracy": lava_acc,
        "lava_samples": n_lava,
        "lava_note": lava_note,
        "batch_size": batch,
        "batch_note": batch_note,
        "reference_device": str(opt.reference_device) if ref is not None else None,
        "lava_bit_exact": lava_exact,
        "lava_first_divergence": divergence,
        "lava_error": lava_error,
        "prediction_agreement": agreement,
        # float32 on both sides: BN folding may flip a spike sitting exactly at threshold, so
        # differing spikes are counted and reported rather than required to be zero.
        "nir_spike_mismatches": (sum(t.nir_mismatch for t in tallies.values())
                                 if model is not None and graph is not None else None),
        "layers": layers,
        "input_clipped": totals.input_clipped,
        "readout": {"population": readout, "u_wraps": wraps.get(readout, 0),
                    "v_saturations": sats.get(readout, 0)},
        "quant_table": program.quant_table,
        "checks": checks,
        "seconds": seconds,
        "passed": all(c["ok"] for c in checks),
        **cost_report(program, {k: v / max(len(test), 1) for k, v in totals.spike_sums.items()},
                      totals.input_events / max(len(test), 1), opt.hardware,
                      _float_spikes(program, tallies, len(test))),
    }
    result["neurobench"] = _neurobench(program, totals, len(test), result, model)
    if ref is not None and ref != "float":
        result["reference"] = ref
    if absent:  # stages that did not run, and why (their figures are null)
        result["absent"] = absent
    if onnx_pred is not None:
        result["onnx_accuracy"] = acc(onnx_pred)
    classes = next(p.size for p in program.populations if p.name == readout)
    result["chance_accuracy"] = chance_level(test.y)
    if ref_pred is not None:
        result["flips"] = prediction_flips(ref_pred, fixed_pred, test.y, classes)
    result["decay"] = decay_table(program, graph)
    result["verdict"] = verdict(result, program)
    predictions = {"label": np.asarray(test.y), **{k: v for k, v in got.items()
                                                   if v is not None}}
    return result, {"raster": next(iter(totals.rasters.values()), {}),
                    "rasters": totals.rasters, "program": program, "graph": graph,
                    "predictions": predictions}


def _program_weight_bits(program: Any) -> int | None:
    """The weight bits of ``program``'s synapses (None when they differ or there are none)."""
    bits = {int(s.weight_bits) for s in program.synapses}
    return bits.pop() if len(bits) == 1 else None


def _float_spikes(program: Any, tallies: dict[str, LayerTally], n: int
                  ) -> dict[str, np.ndarray] | None:
    """The float reference's spikes per neuron per inference by population, for the cost
    model's 45 nm estimate of the float SNN; None unless every spiking population has them."""
    got = {t.population: t.float_totals / max(n, 1) for t in tallies.values() if t.population}
    spiking = {p.name for p in program.populations} - {program.readout.population}
    return got if spiking and spiking <= set(got) else None


def _neurobench(program: Any, totals: LoopTotals, n: int, result: dict[str, Any],
                model: torch.nn.Module | None) -> dict[str, Any]:
    """NeuroBench's metrics from the emulator's spikes (beside the Loihi SynOps) and, with a
    float model, ``float_model``: the same from its spikes, with its footprint and connection
    sparsity measured on the torch module as NeuroBench measures them."""
    from dalif_deploy.fixedpoint.neurobench import (
        neurobench_metrics,
        torch_connection_sparsity,
        torch_footprint_bytes,
    )

    inputs = totals.input_events / max(n, 1)
    nb = neurobench_metrics(program, {k: v / max(n, 1) for k, v in totals.spike_sums.items()},
                            inputs, loihi_synops=(result.get("activity") or {}).get("synops"))
    fs = _float_spikes(program, totals.tallies, n)
    if fs is not None and model is not None:
        nb["float_model"] = {**neurobench_metrics(program, fs, inputs, spikes_from="float model"),
                             "footprint_bytes": torch_footprint_bytes(model),
                             "connection_sparsity": torch_connection_sparsity(model)}
    return nb


def write_report(result: dict[str, Any], artefacts: dict[str, Any], path: str | Path) -> None:
    """Render the self-contained HTML report and write it atomically."""
    from dalif_deploy.base.files import atomic_write_text

    from .report import render_report

    atomic_write_text(path, render_report(result, artefacts))


def format_summary(r: dict[str, Any]) -> str:
    """Headline figures as a few lines of text, then the verdict and its reasons."""
    from dalif_deploy.base.wording import MISSING, counted, percent

    from .verdict import accuracy_text, reference_name

    ref = reference_name(r)
    short = "NIR" if r.get("reference") == "nir" else "float"  # the layer lines' reference
    mismatches = r["nir_spike_mismatches"]
    nir_note = ("the reference" if r.get("reference") == "nir" else
                f"spikes differing from float: {mismatches}" if mismatches is not None else
                "spikes differing from float: not measured (no float reference)")
    lines = [
        f"{r['model']} on {r['dataset']} ({counted(r['samples'], 'test sample')}, "
        f"T={r['timesteps']}"
        + (f", {r['weight_bits']}-bit weights)" if r.get("weight_bits") else ")"),
        f"  float    {percent(r['float_accuracy'])}",
        f"  NIR      {percent(r['nir_accuracy'])}   ({nir_note})",
        f"  fixed    {percent(r['fixed_accuracy'])}   (agreement with {ref} "
        f"{percent(r['prediction_agreement'])})",
        (f"  Lava     {accuracy_text(r['lava_accuracy'], r['lava_samples'])}, bit-exact "
         f"with emulator: {r['lava_bit_exact']}" if r["lava_samples"]
         else "  Lava     not run (--lava-samples 0)"),
    ]
    for key in ("batch_note", "lava_note"):
        if r.get(key):
            lines.append(f"  note: {r[key]}")
    if r.get("reference_device") not in (None, "cpu"):
        lines.append(f"  note: the float and NIR references ran on {r['reference_device']} "
                     "(IEEE float32): a float sum on a threshold may round otherwise than on "
                     "the CPU")
    for stage, why in r.get("absent", {}).items():
        lines.append(f"  {stage}: not run ({why})")
    if "onnx_accuracy" in r:
        lines.append(f"  ONNX     {percent(r['onnx_accuracy'])}")
    if r.get("input_clipped"):
        lines.append(f"  note: {r['input_clipped']} analog input values fell outside the 8-bit "
                     "input range and were clipped")
    if r.get("lava_first_divergence"):
        lines.append(f"  first Lava divergence: {r['lava_first_divergence']}")
    if r.get("lava_error"):
        lines.append(f"  Lava error: {r['lava_error']}")
    for ly in r["layers"]:
        name = ly["name"] + (" (rec)" if ly.get("recurrent") else "")
        lines.append(f"  layer {name:<16} agreement {percent(ly['spike_agreement'])}  "
                     f"rate {short} {ly['float_rate']:.3f} fixed "
                     f"{MISSING if ly['fixed_rate'] is None else format(ly['fixed_rate'], '.3f')}  "
                     f"u-wraps {ly['u_wraps']} v-sat {ly['v_saturations']}")
    lines += [f"  {c}" for c in (cost_line(r),) if c]
    lines.append(f"  time: {', '.join(f'{k} {v:.2f}s' for k, v in r['seconds'].items())}")
    lines.append("PASSED" if r["passed"] else "FAILED")
    for v in r.get("verdict", []):
        lines.append(f"  {'why' if v['severity'] == 'fail' else 'warning'}: {v['text']}")
        lines += [f"    try: {t}" for t in v["try"]]
    return "\n".join(lines)
