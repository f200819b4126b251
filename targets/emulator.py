"""Bit-accurate, batched emulator of a :class:`~dalif_deploy.fixedpoint.program.FixedProgram`.

It reproduces Lava's ``fixed_pt`` models (``PyLifModelBitAcc``, ``PyDenseModelBitAcc``,
``PyConvModelFixed``) integer for integer; docs/DESIGN.md section 4 lists the arithmetic, and
:func:`lif_step` states it. Synapses: ``acc = W_eff (*) s`` over binary spikes (select and
sum) or graded input values (multiply), ``W_eff`` = :func:`effective_weights`; then
``a = acc << weight_exp`` (``>> -weight_exp``, floor, when negative), except that a conv with
``weight_exp == 0`` (a Lava ``Conv``) wraps ``acc`` to signed 24 bits instead. Several synapses
into one population add up. Two timings are offered:

* ``mode="sync"`` (the program's semantics, like the float model): at step t every population
  sees its inputs of step t, and through a recurrent synapse its own spikes of step t-1 (none
  at step 0); T steps are run; ``outputs`` is the readout v after step T-1.
* ``mode="pipelined"`` (a plain Lava network, no delays, no resets): every synapse adds one step
  of latency, i.e. population P at step t receives its synapses' outputs computed from the
  sources' spikes of step t-1 (input frame t-1, zero frames before 0 and after T-1). A
  population at synaptic depth k therefore sees input step t at step t+k, and every population
  integrates its bias from step 0 on, input or not. ``T + D`` steps are run, D being the depth
  of the readout (longest synapse path from the input); ``outputs`` is the readout v after the
  last step, traces have ``T + D`` steps and spike counts cover all of them. Step s here is
  Lava's time step s+1 for a network whose input source sends frame j at Lava step j+1.

Speed: synaptic sums run as torch float32 (or float64) convolutions / matmuls. That is exact
because, before a program runs, every synapse's worst-case partial sum (sum of |weights| times
the largest input) is bounded: <= 2^24 uses float32, <= 2^53 float64 (every partial sum is then
an integer the float type represents exactly, so no rounding ever happens); the constraint
check already refuses anything that could overflow Lava's int32. Neuron state is held as
float32 integers where the bounds keep every intermediate below 2^24, or where a sum past it
can only be clipped (see :func:`compile_population`: a u without memory that may wrap once,
the wrap then applied to the whole block first), else float64 (exact below 2^53); the same
bounds switch off u-wrap and v-clip checks that provably cannot trigger. Such float32
populations with du = 4095 use :func:`~dalif_deploy.fixedpoint.arithmetic.lif_step_f32`,
with ``<< 6`` and any left shift folded into the weights where the scaled sums still stay
<= 2^24; diagonal 1x1 convs
(shortcuts) are one product per output. Populations that reset otherwise than to 0 or send
spike counts (``Population.reset``, ``.multi_spike``) step through :func:`lif_step` in float64
(exact below 2^53); a count is the population's output value, which graded synapses multiply
and spike counts add up (a count of n is n spikes there; the per-neuron totals the cost
model reads count one graded message). Sync mode steps the
network in cache-sized blocks of steps, each synapse once per block on ``[k*N, ...]`` (once
in all for analog input, the same every step); pipelined mode steps the whole network one
step at a time.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from dalif_deploy.targets.options import EMULATOR_OPTIONS
from dalif_deploy.targets.protocol import BackendRun, FixedPointResult, ModelInput

from dalif_deploy.base.encoding import ANALOG, EVENTS
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.geometry import fit_frames
from dalif_deploy.base.parallel import resolve_device
from dalif_deploy.base.resources import (
    MEMORY_FRACTION,
    check_memory,
    device_memory_free,
    format_bytes,
    mem_available,
)
from dalif_deploy.fixedpoint.arithmetic import (
    LifState,
    any_outside,
    lif_state_zeros,
    lif_step,
    lif_step_f32,
)
from dalif_deploy.fixedpoint.cost import cost_report, input_spikes
from dalif_deploy.fixedpoint.hardware import hardware as hardware_figures
from dalif_deploy.fixedpoint.limits import FLOAT32_EXACT, U_LIMIT
from dalif_deploy.fixedpoint.neurobench import neurobench_metrics
from dalif_deploy.fixedpoint.program import FixedProgram
from dalif_deploy.fixedpoint.timing import synaptic_depths

from .emulator_kernels import (
    CompiledPopulation,
    check_kernels,
    compile_population,
    compile_synapse,
    exact_kernels,
)

BLOCK_ELEMENTS = 2**18  # values per synapse batch in sync mode (cache-sized; speed only)
CUDA_BLOCK_ELEMENTS = 2**24  # the same on a GPU: few large kernels beat cache-sized ones

# ---------------------------------------------------------------------------------------------
# Input encoding.


def encode_input(program: FixedProgram, x_float: Any) -> np.ndarray:
    """Float samples (as ``load_dataset`` gives them) -> integer input frames ``[N, T, *shape]``.

    analog: ``clip(round(x * scale), -2^(bits-1), 2^(bits-1) - 1)`` (numpy round: half to even),
    the same frame every step (a broadcast view). events: the binary frames themselves; values
    other than 0 and 1 are refused (they would be silently binarised).
    """
    frames = _encode(program, x_float)[0]
    return frames if frames.dtype == np.int64 else frames.astype(np.int64)


def _input_range(program: FixedProgram) -> tuple[int, int]:
    """The signed range of analog input values, ``[-2^(bits-1), 2^(bits-1) - 1]``."""
    half = 2 ** (program.input.bits - 1)
    return -half, half - 1


def _encode(program: FixedProgram, x_float: Any) -> tuple[np.ndarray, int]:
    """:func:`encode_input` and :func:`input_clip_count` from one rounding of the input; event
    frames as uint8 (0/1), an eighth of int64's memory (a paper-scale calibration set of 256
    DVS128 samples: 134 MB, not 1.07 GB)."""
    enc, t = program.input, program.timesteps
    x = fit_frames(np.asarray(x_float), enc.shape, 1 if enc.encoding is ANALOG else 2)
    if enc.encoding is ANALOG:
        if x.shape[1:] != enc.shape:
            raise DaLifError(f"analog input must be [N, {', '.join(map(str, enc.shape))}], got "
                             f"{list(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise DaLifError("input contains NaN or infinite values")
        r = _analog_levels(program, x)
        q = np.clip(r, *_input_range(program)).astype(np.int64)
        return np.broadcast_to(q[:, None], (q.shape[0], t, *enc.shape)), _outside(program, r)
    if x.shape[1:] != (t, *enc.shape):
        raise DaLifError(f"event input must be [N, T={t}, {', '.join(map(str, enc.shape))}], "
                         f"got {list(x.shape)}")
    if not np.all((x == 0) | (x == 1)):
        raise DaLifError("event input must be binary (0/1) frames; got other values")
    return x.astype(np.uint8), 0


def _analog_levels(program: FixedProgram, x: np.ndarray) -> np.ndarray:
    """``round(x * scale)`` in float64 (numpy round: half to even), before any clipping."""
    return np.round(np.asarray(x, dtype=np.float64) * program.input.scale)


def _outside(program: FixedProgram, levels: np.ndarray) -> int:
    """How many of ``levels`` lie outside the input range (the encoding clips them)."""
    lo, hi = _input_range(program)
    return int(np.count_nonzero((levels < lo) | (levels > hi)))


# ---------------------------------------------------------------------------------------------
# Running.


def input_clip_count(program: FixedProgram, x_float: Any) -> int:
    """How many analog input values ``round(x * scale)`` fall outside the signed input range
    (``encode_input`` clips them: the fixed-point program then sees a different input)."""
    if program.input.encoding is not ANALOG:
        return 0
    return _outside(program, _analog_levels(program, x_float))


def _record(traces: dict[str, dict[str, list[torch.Tensor]]], name: str, spikes: torch.Tensor,
            state: LifState, record: bool | str) -> None:
    """Append one step's spikes (uint8), and unless ``record == "spikes"`` v and u (int64), of
    population ``name``."""
    traces["spikes"].setdefault(name, []).append(spikes.to(torch.uint8))
    if record != "spikes":
        traces["v"].setdefault(name, []).append(state.v.to(torch.int64))
        traces["u"].setdefault(name, []).append(state.u.to(torch.int64))


def _run_batch(pops: list[CompiledPopulation], frames: torch.Tensor, steps: int, pipelined: bool,
               record: bool) -> dict[str, Any]:
    """frames: [N, T, *shape] integer-valued float32. Returns per-batch results."""
    n, t_in, dev = frames.shape[0], frames.shape[1], frames.device
    states = {p.pop.name: lif_state_zeros(n, p.pop.shape, p.dtype, dev) for p in pops}
    counts = {p.pop.name: torch.zeros((n, *p.pop.shape), device=dev) for p in pops
              if not p.readout}
    # messages of a multi-spike population (a count of n is one graded spike)
    sent = {p.pop.name: torch.zeros((n, *p.pop.shape), device=dev) for p in pops
            if not p.readout and p.pop.multi_spike}
    zero_frame = torch.zeros_like(frames[:, 0])
    prev: dict[str, torch.Tensor] = {p.pop.name: torch.zeros((n, *p.pop.shape), device=dev)
                                     for p in pops}
    traces: dict[str, dict[str, list[torch.Tensor]]] = {"spikes": {}, "v": {}, "u": {}}
    for step in range(steps):
        src_t = step - 1 if pipelined else step
        cur = {"input": frames[:, src_t] if 0 <= src_t < t_in else zero_frame}
        if pipelined:
            cur.update(prev)
        new: dict[str, torch.Tensor] = {}
        for p in pops:
            name = p.pop.name
            a = None
            for s in p.syns:
                # |a| bounded: exact in p.dtype; a dense synapse's flat output takes the
                # target's shape (C-order), as in sync mode
                out = s(cur[s.syn.source]).to(p.dtype).reshape(n, *p.pop.shape)
                a = out if a is None else a + out
            if a is None:
                a = torch.zeros((n, *p.pop.shape), dtype=p.dtype, device=dev)
            spk, states[name] = lif_step(states[name], a, p.params)
            spk = spk.to(torch.float32)
            (new if pipelined else cur)[name] = spk
            if not p.readout:
                counts[name] += spk  # float32: exact below 2^24 steps
            if name in sent:
                sent[name] += spk != 0
            if record:
                _record(traces, name, spk, states[name], record)
        if pipelined:
            prev = new
    totals = {k: sent.get(k, c).sum(0, dtype=torch.float64) for k, c in counts.items()}
    counts = {k: c.flatten(1).sum(1, dtype=torch.float64) for k, c in counts.items()}
    return {"states": states, "counts": counts, "totals": totals, "traces": traces}


@dataclass
class _SyncRun:
    """One population's running state in sync mode (kept across blocks of steps)."""

    state: LifState
    spikes: torch.Tensor  # [k, N, *shape] float 0/1 of the current block, reused every block
    counts: torch.Tensor  # [N] spikes so far (float64)
    totals: torch.Tensor  # [*shape] each neuron's spike messages so far, over the batch (float64)
    scratch: tuple[torch.Tensor, torch.Tensor] | None  # for lif_step_f32's decay
    x_static: torch.Tensor | None = None  # input-synapse sum of a same-every-step input
    last: torch.Tensor | None = None  # spikes of the step before the block (recurrent synapses)
    bias: torch.Tensor | None = None  # the population's float32 bias, in its tensors' layout


def _sync_block(p: CompiledPopulation, r: _SyncRun, cur: dict[str, torch.Tensor], k: int,
                record: bool,
                traces: dict[str, dict[str, list[torch.Tensor]]]) -> None:
    """Steps ``k`` consecutive steps of one population (sync mode).

    Its synapses run once on the block's source frames flattened to ``[k*N, ...]``; a synapse
    from an input that is the same every step has run once already (``r.x_static``); then the
    neuron recurrence steps through the block, writing ``r.spikes[:k]``. A recurrent synapse
    runs inside that loop, on the population's spikes of the step before (none before step 0).
    """
    shape, fast, n = p.pop.shape, p.fast, r.spikes.shape[1]
    x = None
    rec = [s for s in p.syns if s.syn.recurrent]
    for s in p.syns:
        if (s.syn.source == "input" and r.x_static is not None) or s.syn.recurrent:
            continue
        src = cur[s.syn.source][:k]
        out = s(src.flatten(0, 1), times64=fast is not None).to(p.dtype)  # exact in p.dtype
        out = out.view(src.shape[0], n, *shape)
        x = out if x is None else x.add_(out)  # x: a fresh kernel output, ours to modify
    if r.x_static is not None:
        x = r.x_static if x is None else x.add_(r.x_static)
    if x is None:
        x = torch.zeros((1, n, *shape), dtype=p.dtype, device=r.spikes.device)
    wraps = None
    # u = a << 6 has no memory: its one wrap, for the whole block at once (skipped on CPU when
    # one min/max pass shows nothing outside u's range (-2^23, 2^23], the usual case)
    if p.wrap_f32 and (x.device.type != "cpu" or any_outside(x, 1 - U_LIMIT, U_LIMIT)):
        hi, lo = x > U_LIMIT, x <= -U_LIMIT
        x = x - (2 * U_LIMIT) * hi.to(x.dtype) + (2 * U_LIMIT) * lo.to(x.dtype)
        wraps = (hi | lo).sum(tuple(range(2, x.dim())))  # [steps of x, N]
    u = x if fast is None or r.bias is None else x + r.bias  # fast: u = wrap(a << 6) + bias
    z = r.state.u_wraps
    for j in range(k):
        i = j if x.shape[0] > 1 else 0
        xi, ui = x[i], u[i]
        if rec:  # |sum| bounded with the other synapses: exact in p.dtype
            prev = r.spikes[j - 1] if j else r.last
            back = sum(s(prev, times64=fast is not None).to(p.dtype).view(n, *shape)
                       for s in rec)
            xi, ui = xi + back, ui + back
        if fast is None:
            spk, r.state = lif_step(r.state, xi, p.params)
            r.spikes[j] = spk
        else:  # x = a << 6: du = 4095 leaves no current memory
            if wraps is not None:
                z = z + wraps[i]
            v, sat = lif_step_f32(r.state.v, ui, r.spikes[j], fast, r.scratch)
            r.state = LifState(xi.expand(n, *shape), v, z, r.state.v_saturations
                               if sat is None else r.state.v_saturations + sat)
        if record:
            _record(traces, p.pop.name, r.spikes[j], r.state, record)
    if rec:
        r.last = r.spikes[k - 1].clone()  # r.spikes is overwritten by the next block
    if not p.readout:  # float32 sums per step are exact below 2^24 neurons (in any order)
        block = r.spikes[:k]
        per_step = block.sum(tuple(range(2, block.dim())), dtype=torch.float32
                             if p.pop.size <= FLOAT32_EXACT else torch.float64)
        r.counts += per_step.sum(0, dtype=torch.float64)
        # each neuron's spikes over the block's k * N (<= BLOCK_ELEMENTS, or on CUDA
        # CUDA_BLOCK_ELEMENTS = 2^24: exact in float32, IEEE on CUDA too) sample-steps, as a
        # matrix-vector product in memory order: a strided sum is 4x slower
        nhwc = not block.is_contiguous()
        flat = (block.permute(0, 1, 3, 4, 2) if nhwc else block).reshape(k * n, -1)
        if p.pop.multi_spike:  # messages: a count of n is one graded spike
            flat = (flat != 0).to(flat.dtype)
        per_neuron = flat.new_ones(k * n) @ flat
        r.totals += (per_neuron.view(shape[1], shape[2], shape[0]).permute(2, 0, 1) if nhwc
                     else per_neuron.view(shape))


#: whether conv-shaped populations keep their tensors channels-last (NHWC) on CPU, where oneDNN
#: convolves NHWC directly (measured: docs/MEASURED.md); values are the same in any layout
NHWC_ON_CPU = True


def channels_last(p: CompiledPopulation, device: torch.device) -> bool:
    """Whether population ``p``'s tensors are NHWC here (a [C, H, W] population on CPU)."""
    return NHWC_ON_CPU and device.type == "cpu" and len(p.pop.shape) == 3


def population_tensor(lead: tuple[int, ...], n: int, shape: tuple[int, ...], nhwc: bool,
                      dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised ``[*lead, n, *shape]`` tensor; with ``nhwc`` its memory runs
    ``[*lead, n, H, W, C]`` (so each ``[n, C, H, W]`` slice is channels-last)."""
    if not nhwc:
        return torch.empty((*lead, n, *shape), dtype=dtype, device=device)
    c, h, w = shape
    d = len(lead) + 1
    return torch.empty((*lead, n, h, w, c), dtype=dtype, device=device).permute(
        *range(d), d + 2, d, d + 1)


def _run_sync(pops: list[CompiledPopulation], frames: torch.Tensor, steps: int, record: bool
              ) -> dict[str, Any]:
    """Sync mode (population k at step t depends only on its sources at step t and its own
    past) in blocks of steps: each population in turn steps through the whole block. Blocks
    hold about ``BLOCK_ELEMENTS`` values per tensor, so that they stay in cache (on CUDA
    ``CUDA_BLOCK_ELEMENTS``: fewer, larger kernels). frames:
    ``[T, N, *shape]``, or ``[1, N, *shape]`` for the same frame every step (then the input
    synapses run once), integer-valued float."""
    n, static, dev = frames.shape[1], frames.shape[0] == 1, frames.device
    widest = max([frames[0, 0].numel()] + [p.pop.size for p in pops])
    block = CUDA_BLOCK_ELEMENTS if dev.type == "cuda" else BLOCK_ELEMENTS
    k = min(steps, max(1, block // (n * widest)))
    runs = {}
    for p in pops:
        shape = (n, *p.pop.shape)
        nhwc = channels_last(p, dev)
        z = torch.zeros(n, dtype=torch.int64, device=dev)
        v = population_tensor((), n, p.pop.shape, nhwc, torch.float32, dev).zero_()
        state = LifState(torch.zeros((), device=dev).expand(shape), v, z, z.clone())
        if p.fast is None:  # lif_step's v and u, in p.dtype
            zero = population_tensor((), n, p.pop.shape, nhwc, p.dtype, dev).zero_()
            state = LifState(zero, zero.clone(), z.to(p.dtype), z.to(p.dtype))
        scratch = None if p.fast is None or p.fast.factor is None else (
            torch.empty_like(v), torch.empty_like(v))
        runs[p.pop.name] = r = _SyncRun(
            state, population_tensor((k,), n, p.pop.shape, nhwc, torch.float32, dev),
            torch.zeros(n, dtype=torch.float64, device=dev),
            torch.zeros(p.pop.shape, dtype=torch.float64, device=dev), scratch,
            last=torch.zeros_like(v), bias=p.bias)
        if nhwc and p.bias is not None and p.bias.dim() == 3:  # same layout as x: 16x faster
            r.bias = p.bias.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        if static:
            xs = [s(frames[0], times64=p.fast is not None).to(p.dtype).view(1, n, *p.pop.shape)
                  for s in p.syns if s.syn.source == "input"]
            r.x_static = sum(xs[1:], xs[0]) if xs else None
    traces: dict[str, dict[str, list[torch.Tensor]]] = {"spikes": {}, "v": {}, "u": {}}
    for t0 in range(0, steps, k):
        kb = min(k, steps - t0)
        cur = {"input": frames if static else frames[t0:t0 + kb]}
        for p in pops:
            r = runs[p.pop.name]
            _sync_block(p, r, cur, kb, record, traces)
            cur[p.pop.name] = r.spikes
    return {"states": {k_: r.state for k_, r in runs.items()},
            "counts": {p.pop.name: runs[p.pop.name].counts for p in pops if not p.readout},
            "totals": {p.pop.name: runs[p.pop.name].totals for p in pops if not p.readout},
            "traces": traces}


def _check_frames(program: FixedProgram, frames: np.ndarray) -> None:
    """Integer frames must lie in the input's range: the exactness bounds assume it."""
    if program.input.encoding is EVENTS:
        if frames.size and not np.all((frames == 0) | (frames == 1)):
            raise DaLifError("event input frames must be binary (0/1)")
        return
    lo, hi = _input_range(program)
    if frames.size and (frames.min() < lo or frames.max() > hi):
        raise DaLifError(f"integer input frames must lie in [{lo}, {hi}] "
                         f"({program.input.bits}-bit analog input); use encode_input to clip")


def emulator_bytes(program: FixedProgram, batch: int, recorded: int,
                   spikes_only: bool = False) -> int:
    """Host memory an emulator run plans for (:func:`_check_emulator_memory`): about six int64
    values per neuron and sample of a batch, and per neuron, step and recorded sample three
    int64 (spikes, v, u traces) or, recording spikes only, one byte."""
    neurons = sum(p.size for p in program.populations)
    trace = 1 if spikes_only else 3 * 8
    return 6 * 8 * batch * neurons + trace * recorded * program.timesteps * neurons


def fitting_batch_size(program: FixedProgram, wanted: int, *, record: bool | str,
                       per_sample_extra: int = 0) -> int:
    """The largest batch up to ``wanted`` whose emulator run (its traces too with ``record``,
    one batch at a time) plus ``per_sample_extra`` bytes a sample (other stages run beside it)
    fits this machine's available memory (``MEMORY_FRACTION`` of it); at least 1 (a run that
    cannot fit even then is refused by the run's own check)."""
    per = emulator_bytes(program, 1, int(bool(record)), record == "spikes") + per_sample_extra
    for trim in (False, True):  # hand our free heap back only where it matters
        avail = mem_available(trim=trim)
        if avail is None:
            return wanted
        fit = max(1, min(wanted, int(MEMORY_FRACTION * avail // max(per, 1))))
        if fit == wanted:
            break
    return fit


def _check_emulator_memory(program: FixedProgram, batch: int, recorded: int,
                           device: torch.device, spikes_only: bool = False) -> None:
    """Refuse, with the figure, a run whose state cannot fit: about six int64 values per
    neuron and sample of a batch (u, v, spikes, counts, scratch), plus with ``record`` three
    per neuron, step and recorded sample (spikes, v, u traces; they end in host memory).
    On CUDA the batch state must also fit the device's free memory (with the block of
    ``CUDA_BLOCK_ELEMENTS`` values per population and the traces of one batch)."""
    neurons = sum(p.size for p in program.populations)
    what = f"emulating {neurons:,} neurons with batch {batch}"
    fix = "lower --batch-size or the number of samples"
    need = emulator_bytes(program, batch, recorded, spikes_only)
    check_memory(need, what + (f" and traces of {recorded} samples x T={program.timesteps}"
                               if recorded else ""), fix)
    if device.type == "cuda":
        free = device_memory_free(device)  # verify's references may have run there first
        steps = program.timesteps
        gpu = 6 * 8 * batch * neurons + 4 * CUDA_BLOCK_ELEMENTS * len(program.populations) \
            + 3 * 8 * min(recorded, batch) * steps * neurons
        if gpu > 0.9 * free:
            raise DaLifError(f"{what} on {device} needs about {format_bytes(gpu)} of device "
                             f"memory, more than the {format_bytes(free)} free there; {fix}")


def emulate(program: FixedProgram, x: Any, *, mode: str = "sync", record: bool | str = False,
            batch_size: int = 256, progress: bool = False, check: bool = True,
            device: str | torch.device = "cpu", kernels: str = "auto") -> FixedPointResult:
    """Run ``program`` on samples ``x`` and return a :class:`FixedPointResult` (``spikes``
    uint8; ``spikes``, ``v`` (after reset), ``u`` and ``final_v`` only with ``record=True``;
    ``record="spikes"`` records the spikes alone, a fraction of the time and memory).

    ``x``: float input exactly as ``load_dataset`` gives it (``[N, C, H, W]`` analog or
    ``[N, T, C, H, W]`` events), or integer frames ``[N, T, *shape]`` from
    :func:`encode_input`. ``check`` runs the constraint check first and refuses programs with
    errors (Lava would silently alter them). ``device``: where the arithmetic runs (``cpu``,
    ``cuda``, ``cuda:N``); the integers are the same on every device (why: see
    :mod:`dalif_deploy.targets.emulator_kernels`), the results come back as numpy arrays.
    """
    from tqdm import tqdm

    from dalif_deploy.fixedpoint.constraints import require_valid

    t0 = time.perf_counter()
    dev = resolve_device(device)
    if mode not in ("sync", "pipelined"):
        raise DaLifError(f"mode must be 'sync' or 'pipelined', not {mode!r}")
    if record not in (False, True, "spikes"):
        raise DaLifError(f"record must be False, True or 'spikes', not {record!r:.40}")
    if check:
        require_valid(program)
    x = np.asarray(x)
    frames, clipped = (x, 0) if x.dtype.kind in "iu" else _encode(program, x)
    if frames.ndim != 2 + len(program.input.shape) or frames.shape[1] != program.timesteps:
        raise DaLifError(f"integer input frames must be [N, T={program.timesteps}, "
                         f"{', '.join(map(str, program.input.shape))}], got {list(frames.shape)}")
    if x.dtype.kind in "iu":
        _check_frames(program, frames)
    # exact float input: float32 holds the input's integers exactly up to 2^24
    fdt = np.float32 if -_input_range(program)[0] <= FLOAT32_EXACT else np.float64
    depth = synaptic_depths(program)
    steps = program.timesteps + (depth[program.readout.population] if mode == "pipelined" else 0)
    compiled = {s.name: compile_synapse(program, s, dev, kernels) for s in program.synapses}
    pops = [compile_population(p, [compiled[s.name] for s in program.incoming(p.name)], steps,
                                p.name == program.readout.population, dev)
            for p in program.populations]
    names = [p.pop.name for p in pops if not p.readout]
    outs, cnts, wraps, sats = [], [], {}, {}
    totals = {p.pop.name: np.zeros(p.pop.shape, np.int64) for p in pops if not p.readout}
    traces: dict[str, dict[str, list[np.ndarray]]] = {"spikes": {}, "v": {}, "u": {}}
    n = frames.shape[0]
    _check_emulator_memory(program, min(n, max(1, int(batch_size))), n if record else 0, dev,
                           record == "spikes")
    starts = range(0, n, max(1, int(batch_size)))
    # the same frame every step (analog input): the input synapses run once per sample
    static = mode == "sync" and (frames.strides[1] == 0 or bool((frames == frames[:, :1]).all()))
    with torch.inference_mode(), exact_kernels(dev):
        for i in tqdm(starts, desc="emulator", unit="batch", disable=not progress):
            chunk = frames[i:i + batch_size]
            if mode == "pipelined":
                fb = torch.from_numpy(np.ascontiguousarray(chunk, fdt)).to(dev)
                r = _run_batch(pops, fb, steps, True, record)
            else:
                chunk = chunk[:, :1] if static else chunk
                fb = torch.from_numpy(np.ascontiguousarray(chunk.swapaxes(0, 1), fdt)).to(dev)
                r = _run_sync(pops, fb, steps, record)
            st = r["states"]
            outs.append(st[program.readout.population].v.to(torch.int64).cpu().numpy())
            cnts.append(np.stack([r["counts"][k].to(torch.int64).cpu().numpy() for k in names],
                                 1) if names else np.zeros((len(chunk), 0), np.int64))
            for k, tot in r["totals"].items():
                totals[k] += tot.to(torch.int64).cpu().numpy()
            for k, s in st.items():
                wraps[k] = wraps.get(k, 0) + int(s.u_wraps.sum())
                sats[k] = sats.get(k, 0) + int(s.v_saturations.sum())
            for kind, d in r["traces"].items():
                for k, lst in d.items():
                    traces[kind].setdefault(k, []).append(torch.stack(lst).cpu().numpy())
    outputs = np.concatenate(outs) if outs else np.zeros((0, 0), np.int64)
    outputs = outputs.reshape(outputs.shape[0], -1)
    recorded = {kind: {k: np.concatenate(v, 1) for k, v in d.items()}
                for kind, d in traces.items()}
    return FixedPointResult(
        outputs=outputs, predictions=outputs.argmax(1).astype(np.int64),
        spike_counts=np.concatenate(cnts) if cnts else np.zeros((0, len(names)), np.int64),
        spiking=names, final_v={k: v[-1] for k, v in recorded["v"].items()}, u_wraps=wraps,
        v_saturations=sats, steps=steps, mode=mode, input_clipped=clipped, spike_totals=totals,
        seconds=time.perf_counter() - t0, **recorded)


#: state bytes one calibration batch may hold (:func:`calibration_run`)
CALIBRATION_BATCH_BYTES = 2**29


def calibration_run(program: FixedProgram, x: Any) -> FixedPointResult:
    """The quantiser's ``run(program, x)``: the emulator, unchecked, in batches whose state
    (about six 8-byte values per neuron and sample) stays within
    :data:`CALIBRATION_BATCH_BYTES` (at most 256 samples), so that calibrating a paper-scale
    network on hundreds of samples does not hold them all at once; the integers do not depend on
    the batch."""
    neurons = sum(p.size for p in program.populations)
    batch = max(1, min(256, CALIBRATION_BATCH_BYTES // (6 * 8 * max(neurons, 1))))
    return emulate(program, x, check=False, batch_size=batch)


class EmulatorBackend:
    """The ``emulator`` backend of ``dalif-deploy simulate`` (synchronous timing).

    Besides the common keys it reports ``outputs`` (each sample's integer readout),
    ``spike_counts`` (each sample's spike total per population, ``populations`` order),
    ``u_wraps`` and ``v_saturations`` per population, and the cost model's estimates
    (:func:`dalif_deploy.fixedpoint.cost.cost_report`): ``resources``, ``activity``, ``energy``,
    with the
    hardware figures of ``hardware`` (a JSON file, a mapping or a
    :class:`~dalif_deploy.fixedpoint.hardware.Hardware`) and then ``hw`` (``NAME=VALUE`` strings).
    ``--device`` runs it on a GPU. Sharded (``torchrun``), each process emulates its shard
    (:meth:`run_shard`) and :meth:`merge` joins the shards' runs into the whole data set's.
    """

    name = "emulator"
    kind = "program"
    options = EMULATOR_OPTIONS

    def __init__(self, model_path: str, hardware: Any = None, hw: Any = (),
                 device: str | None = None, kernels: str = "auto") -> None:
        from dalif_deploy.fixedpoint.fxp_format import load_program

        self.hardware = hardware_figures(hardware, assignments=hw or ())  # refused before a run
        self.program = load_program(model_path)
        self.device = resolve_device(device)
        self.kernels = check_kernels(kernels)
        p = self.program
        self.input = ModelInput(p.input.kind, p.input.shape, p.timesteps,
                                p.metadata.get("dataset"), p.classes)

    def run(self, data: Any, *, batch_size: int, progress: bool) -> BackendRun:
        return self._finish(data, self.run_shard(data, batch_size=batch_size,
                                                 progress=progress))

    def run_shard(self, data: Any, *, batch_size: int, progress: bool) -> FixedPointResult:
        """The emulator's run of ``data`` (one shard of a sharded run), in batches of
        ``batch_size`` or, where that many samples at once would not fit the memory available,
        as many as do, with a ``note:`` (the integers do not depend on the batch)."""
        fit = fitting_batch_size(self.program, batch_size, record=False)
        if fit < min(batch_size, len(data.x)):
            print(f"note: emulator batches of {fit} samples: {batch_size} at once would need "
                  f"about {format_bytes(emulator_bytes(self.program, batch_size, 0))} of memory "
                  "here (--batch-size N to choose)", file=sys.stderr)
            batch_size = fit
        return emulate(self.program, data.x, mode="sync", batch_size=batch_size,
                       progress=progress, device=self.device, kernels=self.kernels)

    def merge(self, data: Any, parts: list[FixedPointResult]) -> BackendRun:
        """The run of ``data`` from the runs of its consecutive shards (in order): joined
        (:meth:`FixedPointResult.join`: per-sample arrays in order, counters and per-neuron
        spike totals added), the cost model evaluated on the whole."""
        return self._finish(data, FixedPointResult.join(parts))

    def _finish(self, data: Any, r: FixedPointResult) -> BackendRun:
        p = self.program
        n = max(len(data.x), 1)  # per-neuron spikes per inference: exact SynOps
        spikes = {k: t / n for k, t in r.spike_totals.items()}
        inputs = input_spikes(p, encode_input(p, data.x)) if len(data.x) else None
        costs = cost_report(p, spikes, inputs, self.hardware) if len(data.x) else {}
        if costs:  # NeuroBench's metrics from the same spikes, beside the Loihi SynOps
            costs["neurobench"] = neurobench_metrics(p, spikes, inputs,
                                                     loihi_synops=costs["activity"]["synops"])
        return BackendRun(r.predictions, {
            "mode": r.mode, "timesteps": p.timesteps, "outputs": r.outputs.tolist(),
            "populations": r.spiking, "spike_counts": r.spike_counts.tolist(),
            "u_wraps": r.u_wraps, "v_saturations": r.v_saturations,
            "input_clipped": r.input_clipped, **costs})
