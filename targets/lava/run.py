"""Run a FixedProgram on Lava (CPU, fixed_pt models): many samples through one compiled network.

:func:`run_lava` lowers the program (:mod:`.lower`), checks the Lava process count and a memory
estimate against limits (:func:`check_lava_budget`), then, in a watchdog child
(:mod:`.watchdog`), builds the Lava processes, streams all samples back to back through one
compiled network (each layer reset when a sample's first input reaches it), and reads the
results once from the population processes' recordings (:mod:`.procs`). Outputs are de-skewed
by each layer's constant latency, so they compare one to one with the synchronous emulator.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from dalif_deploy.targets.protocol import FixedPointResult

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.limits import LAVA_MEMORY_GIB_DEFAULT, LAVA_PROCESSES_DEFAULT
from dalif_deploy.fixedpoint.program import FixedProgram
from dalif_deploy.fixedpoint.timing import synaptic_depths

from .lower import ConnPlan, LavaPlan, PopPlan, plan_program
from .watchdog import run_with_watchdog

#: default refusal limits of :func:`check_lava_budget` (``--max-lava-processes``,
#: ``--max-lava-memory``): every Lava process is an OS process
MAX_LAVA_PROCESSES = LAVA_PROCESSES_DEFAULT
MAX_LAVA_MEMORY_GIB = LAVA_MEMORY_GIB_DEFAULT
#: memory model (proportional set size of the run's whole process group; benchmarks/bench_lava.py
#: samples it, docs/MEASURED.md): ~0.25 GiB plus ~20 MiB a process, plus what grows with the
#: network: every channel's shared-memory ring (Lava's ``pypy_channel_size`` = 64 messages of
#: int32 per neuron of the port, all counted: a run of 64 steps writes them all), each
#: population's state and its step's temporaries (~20 int64 per neuron) and recordings, each
#: conv process's per-step float64 work arrays (:mod:`.conv`: patches, kernel matrix, output
#: twice, padded input), the synapse weights (three copies: the plan's, the process's initial
#: value, the model's) and the source's input columns
LAVA_BASE_BYTES = 256 * 2**20
LAVA_PROCESS_BYTES = 20 * 2**20
LAVA_CHANNEL_SLOTS = 64  # lava's default pypy_channel_size
POPULATION_BYTES_PER_NEURON = 160
WEIGHT_COPIES = 3
#: time model of one Lava step with our synapse models (seconds): per process (Python and the
#: step's synchronisation), per conv multiply-accumulate (float32 GEMM and im2col), per
#: dense/sparse weight, per neuron. Twice the figures fitted to bench_lava.py runs on an idle
#: 2-core AMD EPYC (ResNet-19 w128 0.55 s/step, VGG-11 DVS128 0.33 s/step; docs/MEASURED.md),
#: so that a machine as busy again still meets the estimate
STEP_PROCESS_SECONDS = 1e-2
STEP_MAC_SECONDS = 6.6e-11
STEP_WEIGHT_SECONDS = 2.5e-8
STEP_NEURON_SECONDS = 4e-8
COMPILE_SECONDS, COMPILE_PROCESS_SECONDS = 10.0, 0.5  # build, compile and start the processes
CONV_CHOICES = ("exact", "stock")  # the synapse models (.conv.SYNAPSE_MODELS; lava-free here)
PROGRESS_UPDATES = 200  # progress file writes per run (at most)


def lava_steps(program: FixedProgram, n: int) -> int:
    """Lava steps of a streamed run of ``n`` samples: ``n * T`` plus the deepest population's
    synaptic depth (the drain steps; :func:`.lower.plan_program` uses the same depths)."""
    return n * program.timesteps + max(synaptic_depths(program).values())


def _sizes(plan: LavaPlan) -> dict[str, int]:
    """Neurons of every population and of the input, by name."""
    sizes = {p.name: int(p.index.size) for p in plan.pops}
    sizes["input"] = int(plan.input_index.size)
    return sizes


def _conv_geometry(c: ConnPlan) -> tuple[int, int, int]:
    """(output positions, values per patch, padded input positions) of a conv ConnPlan."""
    w_in, h_in, _ = c.conv["input_shape"]
    (pw, ph), (sw, sh) = c.conv["padding"], c.conv["stride"]
    _, kw, kh, c_grp = c.weights.shape
    w_out, h_out = (w_in + 2 * pw - kw) // sw + 1, (h_in + 2 * ph - kh) // sh + 1
    return w_out * h_out, kw * kh * c_grp, (w_in + 2 * pw) * (h_in + 2 * ph)


def estimate_memory_bytes(plan: LavaPlan, n: int, *, record: bool = False) -> int:
    """Estimated peak memory (PSS) of a streamed Lava run of ``n`` samples, in bytes: the model
    above :data:`LAVA_BASE_BYTES`."""
    steps = lava_steps(plan.program, n)
    t = plan.program.timesteps
    sizes = _sizes(plan)
    arrays = sizes["input"] * steps * 4
    for c in plan.conns:
        w = c.weights
        arrays += WEIGHT_COPIES * (w.nnz * 16 if isinstance(w, sp.spmatrix) else int(w.size) * 4)
        arrays += 4 * LAVA_CHANNEL_SLOTS * (sizes[c.source] + sizes[c.target])  # in and out
        if c.kind == "conv":
            positions, patch, padded = _conv_geometry(c)
            c_in = c.conv["input_shape"][2]
            arrays += 8 * (positions * (patch + 2 * w.shape[0]) + padded * c_in + w.size)
    for p in plan.pops:
        rows = n * t if record else n
        arrays += int(p.index.size) * (steps + rows * 4 * (2 if record else 1)
                                       + POPULATION_BYTES_PER_NEURON)
    return LAVA_BASE_BYTES + LAVA_PROCESS_BYTES * plan.process_count + arrays


def estimate_step_seconds(plan: LavaPlan) -> float:
    """Estimated seconds of one Lava step with our conv model (the time model above)."""
    macs = weights = 0
    for c in plan.conns:
        if c.kind == "conv":
            positions, patch, _ = _conv_geometry(c)
            macs += positions * patch * c.weights.shape[0]
        else:
            weights += c.weights.nnz if isinstance(c.weights, sp.spmatrix) else c.weights.size
    neurons = sum(int(p.index.size) for p in plan.pops)
    return (STEP_PROCESS_SECONDS * plan.process_count + STEP_MAC_SECONDS * macs
            + STEP_WEIGHT_SECONDS * weights + STEP_NEURON_SECONDS * neurons)


def estimate_run_seconds(plan: LavaPlan, n: int) -> float:
    """Estimated wall time of a streamed run of ``n`` samples: compile and start, then every
    step (:func:`estimate_step_seconds`)."""
    return (COMPILE_SECONDS + COMPILE_PROCESS_SECONDS * plan.process_count
            + lava_steps(plan.program, n) * estimate_step_seconds(plan))


def check_lava_budget(plan: LavaPlan, n: int, *, record: bool = False,
                      max_processes: int = MAX_LAVA_PROCESSES,
                      max_memory_gib: float = MAX_LAVA_MEMORY_GIB) -> tuple[int, int]:
    """Refuse (DaLifError) a run over the process or memory limit; return (processes, bytes)."""
    procs, mem = plan.process_count, estimate_memory_bytes(plan, n, record=record)
    if procs > max_processes:
        raise DaLifError(
            f"Lava run: the network needs {procs} Lava processes ({len(plan.pops)} populations "
            f"+ {len(plan.conns)} synapses + 1 source), over the limit of {max_processes} "
            f"(each is an OS process, estimated {mem / 2**30:.1f} GiB in all); raise it with "
            f"--max-lava-processes {procs} if this machine can take it")
    if mem > max_memory_gib * 2**30:
        raise DaLifError(
            f"Lava run: estimated memory {mem / 2**30:.1f} GiB for {n} samples ({procs} Lava "
            f"processes) is over the limit of {max_memory_gib:g} GiB; run fewer samples per "
            f"compiled network (--batch-size / --lava-samples) or raise it with "
            f"--max-lava-memory {int(np.ceil(mem / 2**30))}")
    return procs, mem


#: when set (to a reason), no Lava run starts: a machine or a test session can switch Lava off
FORBID_LAVA_ENV = "DALIF_DEPLOY_FORBID_LAVA"


def _refuse_when_switched_off() -> None:
    why = os.environ.get(FORBID_LAVA_ENV)
    if why:
        raise DaLifError(f"Lava runs are switched off here ({FORBID_LAVA_ENV}={why!r}); unset "
                         "it to run Lava")


def _progress_path(workdir: str) -> str:
    return os.path.join(workdir, "progress")


class _ProgressWatcher:
    """Parent-side thread: reports the steps the child's readout has done (a file it writes)."""

    def __init__(self, path: str, callback: Callable[[int], None] | None, total: int) -> None:
        self._path, self._callback, self._total = path, callback, total
        self._done, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        if callback is not None:
            self._thread.start()

    def _poll(self) -> None:
        try:
            with open(self._path, encoding="ascii") as fh:
                now = min(int(fh.read() or 0), self._total)
        except (OSError, ValueError):
            return
        if now > self._done:
            self._callback(now - self._done)
            self._done = now

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._poll()

    def close(self, finished: bool) -> None:
        if self._callback is None:
            return
        self._stop.set()
        self._thread.join()
        self._poll()
        if finished and self._done < self._total:
            self._callback(self._total - self._done)


def _build_and_run(plan: LavaPlan, frames: np.ndarray, workdir: str, record: bool,
                   conv: str = "exact") -> dict:
    """Child-process body: build Lava processes from the plan, run, return the raw recordings
    (``conv``: the synapse process models, a key of :data:`.conv.SYNAPSE_MODELS`)."""
    from .compat import import_lava

    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.sparse.process import DelaySparse, Sparse
    from lava.utils.weightutils import SignMode

    from .conv import SYNAPSE_MODELS
    from .procs import DaLifPopulation, PyDaLifPopulationModel

    n, t = frames.shape[:2]
    steps = lava_steps(plan.program, n)
    # Source columns: sample-major, then time; zero padding for the drain steps.
    flat = frames.reshape(n * t, -1)[:, plan.input_index].T
    data = np.zeros((flat.shape[0], steps), dtype=np.int32)
    data[:, : n * t] = flat
    source = RingBuffer(data=data.reshape(*plan.input_lava_shape, steps))

    def v_steps(pop: PopPlan) -> np.ndarray:
        if record:
            return np.arange(1 + pop.depth, n * t + pop.depth + 1)
        return np.arange(1, n + 1) * t + pop.depth

    readout = plan.program.readout.population
    lifs = {}
    for pop in plan.pops:
        lifs[pop.name] = DaLifPopulation(
            shape=pop.lava_shape, du=pop.du, dv=pop.dv, vth=pop.vth, bias_mant=pop.bias_mant,
            bias_exp=pop.bias_exp, reset_interval=t, reset_offset=(1 + pop.depth) % t,
            record_path=os.path.join(workdir, f"pop{len(lifs)}.npz"), num_steps=steps,
            v_steps=v_steps(pop), record_u=record,
            progress_path=_progress_path(workdir) if pop.name == readout else None,
            progress_every=max(1, steps // PROGRESS_UPDATES), spike_rule=pop.spike_rule,
            reset=pop.reset, multi_spike=pop.multi_spike, bias_into=pop.bias_into,
            name=pop.name)
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
        tgt = lifs[c.target].a_rec if c.recurrent else lifs[c.target].a_in
        if src.shape != syn.s_in.shape:  # (W, H, C) layout into a flat matrix
            src = src.reshape(syn.s_in.shape)
        out = syn.a_out if syn.a_out.shape == tgt.shape else syn.a_out.reshape(tgt.shape)
        src.connect(syn.s_in)
        out.connect(tgt)

    cfg = Loihi2SimCfg(select_tag="fixed_pt",
                       exception_proc_model_map={DaLifPopulation: PyDaLifPopulationModel,
                                                 **SYNAPSE_MODELS[conv]})
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
    """De-skew each population's recordings by its depth; neurons back in program order."""
    out: dict[str, dict[str, np.ndarray]] = {"spikes": {}, "final_v": {}, "v": {}, "u": {}}
    for pop, plan_pop in zip(plan.program.populations, plan.pops, strict=True):
        r, k, idx = raw[pop.name], plan_pop.depth, plan_pop.index
        size, shape = pop.size, pop.shape

        def program_order(a: np.ndarray, idx: np.ndarray = idx) -> np.ndarray:
            o = np.empty_like(a)
            o[..., idx] = a  # Lava neuron j is the population's neuron idx[j]
            return o

        # Lava step s = n*T + t + 1 + k  ->  row s - 1 = n*T + t + k
        spikes = r["spikes"][k: k + n * t].reshape(n, t, size).transpose(1, 0, 2)
        out["spikes"][pop.name] = program_order(spikes).reshape(t, n, *shape)
        if record:
            vv = program_order(r["v"].astype(np.int64).reshape(n, t, size))
            out["v"][pop.name] = vv.transpose(1, 0, 2).reshape(t, n, *shape)
            uu = program_order(r["u"].astype(np.int64).reshape(n, t, size))
            out["u"][pop.name] = uu.transpose(1, 0, 2).reshape(t, n, *shape)
            fin = vv[:, -1]
        else:
            fin = program_order(r["v"].astype(np.int64))
        out["final_v"][pop.name] = fin.reshape(n, *shape)
    return out


def run_lava(program: FixedProgram, x: np.ndarray, *, timeout: float = 600.0,
             record: bool = False, use_conv: bool = True, conv: str = "exact",
             max_processes: int = MAX_LAVA_PROCESSES,
             max_memory_gib: float = MAX_LAVA_MEMORY_GIB,
             progress: Callable[[int], None] | None = None) -> FixedPointResult:
    """Run ``program`` on samples ``x`` in Lava, streaming them through one compiled network.

    ``x``: analog ``[N, *input_shape]`` floats or binary events ``[N, T, *input_shape]``, encoded
    exactly as the emulator does (:func:`dalif_deploy.targets.emulator.encode_input`). ``timeout``
    bounds the whole Lava run (LavaRunError on expiry or on any failure in Lava). ``use_conv``
    lowers eligible conv synapses to Lava's Conv (else everything linear becomes Sparse/Dense);
    ``conv`` picks the Conv and DelaySparse process models: ``exact`` (ours, :mod:`.conv`: one
    exact matrix product a step; the delay matrix built once) or ``stock`` (Lava's own, its
    ``conv_scipy`` 50-70x slower: the reference).
    ``max_processes`` / ``max_memory_gib``: refuse the run beforehand (DaLifError) when the
    network needs more Lava processes or more estimated memory (:func:`check_lava_budget`).
    ``progress(k)`` is called (from a thread) as k more of the run's :func:`lava_steps` finish.
    """
    from dalif_deploy.targets.emulator import encode_input, input_clip_count  # as the emulator

    if conv not in CONV_CHOICES:
        raise DaLifError(f"Lava conv model must be one of {', '.join(CONV_CHOICES)}, got "
                         f"{conv!r:.40}")
    plan = plan_program(program, use_conv=use_conv)
    frames = np.asarray(encode_input(program, x), dtype=np.int32)
    n, t = frames.shape[:2]
    if n == 0:
        raise DaLifError("run_lava needs at least one sample")
    check_lava_budget(plan, n, record=record, max_processes=max_processes,
                      max_memory_gib=max_memory_gib)
    _refuse_when_switched_off()
    workdir = tempfile.mkdtemp(prefix="dalif-lava-")
    watcher = _ProgressWatcher(_progress_path(workdir), progress, lava_steps(plan.program, n))
    finished = False
    try:
        res = run_with_watchdog(_build_and_run, plan, frames, workdir, record, conv,
                                scratch=(workdir,), timeout=timeout, what=f"lava run ({n} samples)")
        finished = True
    finally:
        watcher.close(finished)
        shutil.rmtree(workdir, ignore_errors=True)
    traces = _assemble(plan, res["raw"], n, t, record)
    readout = program.readout.population
    spiking = [p.name for p in program.populations if p.name != readout]
    counts = np.stack([traces["spikes"][name].reshape(t, n, -1).sum(axis=(0, 2))
                       for name in spiking], axis=1) if spiking else np.zeros((n, 0), np.int64)
    outputs = traces["final_v"][readout].reshape(n, -1)
    return FixedPointResult(
        outputs=outputs, predictions=outputs.argmax(axis=1), spike_counts=counts.astype(np.int64),
        spiking=spiking, final_v=traces["final_v"],
        spikes=traces["spikes"], v=traces["v"], u=traces["u"],
        input_clipped=input_clip_count(program, x), seconds=res["seconds"], steps=res["steps"],
        processes=plan.process_count)
