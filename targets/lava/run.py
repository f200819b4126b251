"""Run a FixedProgram on Lava (CPU, fixed_pt models): many samples through one compiled network.

:func:`run_lava` lowers the program (:mod:`.lower`), then, in a watchdog child
(:mod:`.watchdog`), builds the Lava processes, streams all samples back to back through one
compiled network (each layer reset when a sample's first input reaches it), and reads the
results once from the recording LIF parts (:mod:`.procs`). Outputs are de-skewed by each
layer's constant latency, so they compare one to one with the synchronous emulator.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from dalif_deploy.errors import DaLifError
from dalif_deploy.program import FixedProgram

from .lower import LavaPlan, PartPlan, plan_program
from .watchdog import run_with_watchdog


@dataclass
class LavaResult:
    """What a Lava run returns; arrays are int64/bool, samples in input order.

    ``outputs [N, n_out]``: the readout's final v per sample (raw integers). ``spike_counts
    [N, n_spiking]``: spikes per sample per spiking population (program order, readout excluded).
    ``final_v``: name -> ``[N, *shape]`` v after each sample's last step, every population.
    ``spikes``: name -> ``[T, N, *shape]`` (bool); with ``record`` also ``v``/``u`` likewise.
    """

    outputs: np.ndarray
    predictions: np.ndarray
    spike_counts: np.ndarray
    spiking: list[str]
    final_v: dict[str, np.ndarray]
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    u: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the Lava run (build, compile, run, stop)
    steps: int = 0


def _build_and_run(plan: LavaPlan, frames: np.ndarray, workdir: str, record: bool) -> dict:
    """Child-process body: build Lava processes from the plan, run, return the raw recordings."""
    from .compat import import_lava

    import_lava()
    import scipy.sparse as sp
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.sparse.process import DelaySparse, Sparse
    from lava.utils.weightutils import SignMode

    from .procs import PyRecordingLifModel, RecordingLIF

    n, t = frames.shape[:2]
    steps = n * t + plan.max_depth
    # Source columns: sample-major, then time; zero padding for the drain steps.
    flat = frames.reshape(n * t, -1)[:, plan.input_index].T
    data = np.zeros((flat.shape[0], steps), dtype=np.int32)
    data[:, : n * t] = flat
    source = RingBuffer(data=data.reshape(*plan.input_lava_shape, steps))

    def v_steps(part: PartPlan) -> np.ndarray:
        if record:
            return np.arange(1 + part.depth, n * t + part.depth + 1)
        return np.arange(1, n + 1) * t + part.depth

    lifs = {}
    for part in plan.parts:
        lifs[part.key] = RecordingLIF(
            shape=part.lava_shape, du=int(part.du), dv=int(part.dv), vth=int(part.vth),
            bias_mant=part.bias_mant.astype(np.int32),
            bias_exp=np.full(part.lava_shape, part.bias_exp, dtype=np.int32),
            reset_interval=t, reset_offset=(1 + part.depth) % t,
            record_path=os.path.join(workdir, f"part{len(lifs)}.npz"), num_steps=steps,
            v_steps=v_steps(part), record_u=record, name=part.key)
    paths = {k: lif.proc_params["record_path"] for k, lif in lifs.items()}
    modes = {"mixed": SignMode.MIXED, "excitatory": SignMode.EXCITATORY,
             "inhibitory": SignMode.INHIBITORY}
    for c in plan.conns:
        if c.kind == "conv":
            syn = Conv(weight=c.weights.astype(np.int32), num_message_bits=c.num_message_bits,
                       **c.conv)
        else:
            kw = dict(num_message_bits=c.num_message_bits, weight_exp=c.weight_exp,
                      num_weight_bits=c.num_weight_bits, sign_mode=modes[c.sign_mode])
            if c.kind == "dense":
                syn = Dense(weights=c.weights.astype(np.int32), **kw)
            elif c.delay:
                delays = sp.csr_matrix((np.full(c.weights.nnz, c.delay), c.weights.indices,
                                        c.weights.indptr), shape=c.weights.shape)
                syn = DelaySparse(weights=c.weights.astype(np.int32), delays=delays, **kw)
            else:
                syn = Sparse(weights=c.weights.astype(np.int32), **kw)
        src = source.s_out if c.source == "input" else lifs[c.source].s_out
        tgt = lifs[c.target].a_in
        if src.shape != syn.s_in.shape:  # (W, H, C) layout into a flat matrix
            src = src.reshape(syn.s_in.shape)
        out = syn.a_out if syn.a_out.shape == tgt.shape else syn.a_out.reshape(tgt.shape)
        src.connect(syn.s_in)
        out.connect(tgt)

    cfg = Loihi2SimCfg(select_tag="fixed_pt",
                       exception_proc_model_map={RecordingLIF: PyRecordingLifModel})
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Lava's compiler also scans this package's other modules for process models and
        # warns that it cannot import them by bare name; the model is given explicitly above.
        warnings.filterwarnings("ignore", message="Cannot import module", category=UserWarning)
        source.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
    source.stop()
    seconds = time.perf_counter() - start
    raw = {}
    for key, path in paths.items():
        if os.path.exists(path + ".error"):
            with open(path + ".error", encoding="utf-8") as fh:
                raise DaLifError(f"Lava population {key} failed at {fh.read()}")
        if not os.path.exists(path):
            raise DaLifError(f"Lava population {key} did not run (not connected to the input "
                             f"in the lowered network); this is a lowering bug - report it")
        with np.load(path) as f:
            raw[key] = {k: f[k] for k in f.files}
    return {"raw": raw, "seconds": seconds, "steps": steps}


def _assemble(plan: LavaPlan, raw: dict, n: int, t: int, record: bool) -> dict:
    """De-skew each part's recordings by its depth and put neurons back in program order."""
    out: dict[str, dict[str, np.ndarray]] = {"spikes": {}, "final_v": {}, "v": {}, "u": {}}
    for pop in plan.program.populations:
        size = pop.size
        spikes = np.zeros((t, n, size), dtype=bool)
        fin = np.zeros((n, size), dtype=np.int64)
        vv = np.zeros((t, n, size), dtype=np.int64) if record else None
        uu = np.zeros((t, n, size), dtype=np.int64) if record else None
        for part in plan.parts_of(pop.name):
            r = raw[part.key]
            k = part.depth
            # Lava step s = n*T + t + 1 + k  ->  row s - 1 = n*T + t + k
            sp_ = r["spikes"][k: k + n * t].reshape(n, t, -1).transpose(1, 0, 2)
            spikes[:, :, part.index] = sp_
            if record:
                vv[:, :, part.index] = r["v"].reshape(n, t, -1).transpose(1, 0, 2)
                uu[:, :, part.index] = r["u"].reshape(n, t, -1).transpose(1, 0, 2)
                fin[:, part.index] = r["v"].reshape(n, t, -1)[:, -1]
            else:
                fin[:, part.index] = r["v"]
        shape = pop.shape
        out["spikes"][pop.name] = spikes.reshape(t, n, *shape)
        out["final_v"][pop.name] = fin.reshape(n, *shape)
        if record:
            out["v"][pop.name] = vv.reshape(t, n, *shape)
            out["u"][pop.name] = uu.reshape(t, n, *shape)
    return out


def run_lava(program: FixedProgram, x: np.ndarray, *, timeout: float = 600.0,
             record: bool = False, use_conv: bool = True) -> LavaResult:
    """Run ``program`` on samples ``x`` in Lava, streaming them through one compiled network.

    ``x``: analog ``[N, *input_shape]`` floats or binary events ``[N, T, *input_shape]``, encoded
    exactly as the emulator does (:func:`dalif_deploy.targets.emulator.encode_input`). ``timeout``
    bounds the whole Lava run (LavaRunError on expiry or on any failure in Lava). ``use_conv``
    lowers eligible conv synapses to Lava's Conv (else everything linear becomes Sparse/Dense).
    """
    from dalif_deploy.targets.emulator import encode_input  # one input encoding for both

    plan = plan_program(program, use_conv=use_conv)
    frames = np.asarray(encode_input(program, x), dtype=np.int32)
    n, t = frames.shape[:2]
    if n == 0:
        raise DaLifError("run_lava needs at least one sample")
    workdir = tempfile.mkdtemp(prefix="dalif-lava-")
    try:
        res = run_with_watchdog(_build_and_run, plan, frames, workdir, record,
                                timeout=timeout, what=f"lava run ({n} samples)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    traces = _assemble(plan, res["raw"], n, t, record)
    readout = program.readout.population
    spiking = [p.name for p in program.populations if p.name != readout]
    counts = np.stack([traces["spikes"][name].reshape(t, n, -1).sum(axis=(0, 2))
                       for name in spiking], axis=1) if spiking else np.zeros((n, 0), np.int64)
    outputs = traces["final_v"][readout].reshape(n, -1)
    return LavaResult(
        outputs=outputs, predictions=outputs.argmax(axis=1), spike_counts=counts.astype(np.int64),
        spiking=spiking, final_v=traces["final_v"],
        spikes=traces["spikes"], v=traces["v"], u=traces["u"],
        seconds=res["seconds"], steps=res["steps"])
