"""NIR graph -> :class:`~dalif_deploy.fixedpoint.program.FixedProgram` (Loihi 2 CUBA fixed point).

Neuron layers are read through the op table (:meth:`NodeOp.dalif`, v_leak = v_reset = 0, else
refused): ``nir.LIF`` (``beta = 1 - dt/tau``, ``alpha = r dt/tau``, du = 4095), ``nir.IF``
(LIF without leak: ``beta = 1``, dv = 0, ``alpha = r dt``, du = 4095) and ``nir.CubaLIF``
(``du = round(4096 dt/tau_syn) - 1`` for Loihi's ``du + 1``, ``dv = round(4096 dt/tau_mem)``,
``alpha = (dt/tau_mem) r (dt/tau_syn) w_in`` folded into the weights, and its bias into u
with the weights' gain when tau_syn > dt, so that it ramps in as NIR integrates it; netx's
neuron takes a bias into v only, there at its steady current ``(dt/tau_mem) r w_in b``, its
ramp-in dropped). Exact: IF's and LIF's integration and firing (``>`` on floats is ``v > 64
vth`` on integers), dv = 0, and any decay with ``4096 dt/tau`` an integer (du = 4095 when
tau_syn = dt). Approximate: other decays (rounded to 1/4096, ``decay_error``), weights and
biases (rounded mantissas, ``weight_errors``), and Loihi's rtz in the decays. With du < 4095,
Loihi keeps u in int32, so ``a << 6`` must stay within 2^24 (constraint ``u-overflow``): the
scale is bounded by that (the bias included where it enters u) and lowered until the program
passes it. Per layer we pick a scale lambda (float volts -> integer v, the << 6 included) with

    lambda * v_th = 64 * vth

and the population fires by the node's own rule: ``V > v_th`` is Lava's ``v > 64 * vth``, and
``V >= v_th`` (DA-LIF, Sinabs, SpikingJelly) the population's ``spike_rule = ">="``, ``v >= 64
* vth``, exact on the integer grid where a tie lands (``lambda v_th = 64 vth + 1`` with Lava's
``>``, the earlier choice, loses a tie whenever the weights round: docs/DESIGN.md section 4).
A neuron that resets otherwise (``subtract``, ``*-next``) or sends spike counts carries its
reset mode and ``multi_spike`` too (the synapses out of it are graded: a count multiplies the
weights). Weights become
``lambda * alpha * W / 64`` input units (divided by the input scale for the graded input):
conv synapses as signed ``weight_bits`` integers with weight_exp 0 (Lava's Conv ignores it),
which bounds lambda; dense synapses as mantissa * 2^e stored in Lava's mixed-sign form
(mantissa << (9 - weight_bits), weight_exp = e - (9 - weight_bits)). lambda is the largest value
within those bounds, ``vth <= VTH_CAP`` (headroom), and the bias range; the floor of negative
weight exponents is compensated in the bias. Decays: ``du = 4095``, ``dv = round(4096 (1 -
beta))`` per channel. The readout is a non-spiking integrator (dv = 0, vth max). With
calibration data the input scale comes from the data, and populations that u-wrap or saturate
on it (run through the caller's ``run(program, x)``, the emulator) are re-quantised at half
scale (up to 4 rounds). Each synapse's weight errors are recorded in the program.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import nir
import numpy as np
from dalif_deploy.converters.ir.graph import infer_shapes, io_nodes, recurrent_edges, topo_order
from dalif_deploy.converters.ir.ops import OPS, op_for

from dalif_deploy.base.encoding import ANALOG, EVENTS, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.resources import check_memory, format_bytes
from dalif_deploy.base.schema import integer
from dalif_deploy.base.wording import percent
from dalif_deploy.fixedpoint.constraints import check_program, require_valid
from dalif_deploy.fixedpoint.limits import (
    BIAS_EXP_RANGE,
    BIAS_MANT_MAX,
    DECAY_MAX,
    DECAY_UNIT,
    INPUT_BITS_RANGE,
    NETX_BIAS_EXP,
    TIMESTEPS_MAX,
    U_LIMIT,
    VTH_MAX,
    WEIGHT_BITS_RANGE,
    WEIGHT_EXP_RANGE,
)
from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
    WeightErrors,
)

from .nir_fuse import Fused, Path, fuse_path, fusion_bytes, graph_paths, zero_input_response

U_OVERFLOW_FILL = 0.9  # a du < 4095 layer's worst-case |a| << 6 uses at most 90% of 2^24
U_OVERFLOW_ROUNDS = 8  # rounding can still break the bound: lower the scale by 10% and retry
VTH_CAP = 2**12  # largest vth we choose: keeps 2^23 / (64 vth) = 32 thresholds of v headroom
READOUT_FILL = 0.5  # readout worst case uses at most half of 64 * VTH_MAX
CAL_ROUNDS = 4
QUANTISE_BASE_BYTES = 2**29  # the interpreter, torch and numpy loaded (measured ~0.4 GiB RSS)
#: weight mantissa bits the quantiser builds programs for: Lava takes 1..8 (WEIGHT_BITS_RANGE),
#: but with 1 bit the only signed mantissas are -1 and 0, so every positive weight would vanish
QUANT_WEIGHT_BITS = (2, WEIGHT_BITS_RANGE[1])
WEIGHT_ERROR_BINS = 40  # histogram bins of each synapse's recorded weight errors


class CalibrationCounts(Protocol):
    """What calibration reads from a run: u wraps and v saturations per population name."""

    u_wraps: dict[str, int]
    v_saturations: dict[str, int]


#: ``run(program, x)``: run ``program`` on float samples ``x`` as it is (no constraint check:
#: a calibration round may break a rule that a later round's lower scale repairs, and the
#: quantiser checks the final program itself), e.g. ``functools.partial(emulate, check=False)``
CalibrationRun = Callable[[FixedProgram, Any], CalibrationCounts]


def check_weight_bits(value: Any, where: str = "--weight-bits") -> int:
    """``value`` as an integer in :data:`QUANT_WEIGHT_BITS` (2..8), else a DaLifError naming
    ``where``."""
    lo, hi = QUANT_WEIGHT_BITS
    try:
        return integer(value, where, lo, hi)
    except DaLifError:
        raise DaLifError(f"{where} must be an integer {lo}..{hi} (weight mantissa bits; "
                         f"Loihi 2: 8), got {value!r:.40}") from None


def _mant_exp(t: np.ndarray, qmax: int) -> int:
    m = float(np.abs(t).max(initial=0))
    return 0 if m == 0 else math.ceil(math.log2(m / qmax) - 1e-12)


class _Layer:
    """One population being quantised: fused inputs, float parameters, chosen integers."""

    def __init__(self, name, shape, paths, fused, bias_f, lif, provenance, bias_into="v"):
        self.name, self.shape, self.paths, self.fused = name, shape, paths, fused
        self.bias_f, self.lif, self.provenance = bias_f, lif, provenance
        self.bias_into = bias_into  # "u": the bias joins the current (a CubaLIF bias's ramp)

    def targets(self, in_scale: float) -> list[np.ndarray]:
        """Float weights per input unit into V (alpha folded, graded input scale divided)."""
        out = []
        alpha = self.lif["alpha"] if self.lif else np.ones(self.shape)
        for path, f in zip(self.paths, self.fused, strict=True):
            src = in_scale if path.source == "__input__" else 1.0
            if f.kind == "conv":
                a = alpha.reshape(alpha.shape[0], -1)
                if np.any(np.ptp(a, axis=1) > 1e-12):
                    raise DaLifError(f"{self.name}: alpha varies within a channel; cannot fold "
                                     "it into a conv kernel")
                out.append(f.weight * a[:, 0].reshape(-1, 1, 1, 1) / src)
            else:
                out.append(f.weight * alpha.reshape(-1, 1) / src)
        return out


def _dense_exp_range(weight_bits: int, netx: bool) -> tuple[int, int]:
    """The mantissa exponents ``e`` a dense synapse may take (weights ``m * 2^e``, stored as
    ``m << k`` with ``weight_exp = e - k``). netx applies integer weights in [-256, 254] with
    no exponent, so there ``e`` is 0 .. 9 - weight_bits (``(qmax + 1) 2^e <= 256``)."""
    k = WEIGHT_BITS_RANGE[1] - weight_bits
    if netx:
        return 0, 1 + k
    return WEIGHT_EXP_RANGE[0] + k, WEIGHT_EXP_RANGE[1] + k


def _choose_scale(layer: _Layer, targets, weight_bits: int, timesteps: int, cap: float,
                  graded_input: bool, netx: bool = False) -> float:
    qmax, k = 2 ** (weight_bits - 1) - 1, 8 - weight_bits
    e_top = _dense_exp_range(weight_bits, netx)[1]
    bounds = [cap]
    bmax = float(np.abs(layer.bias_f).max(initial=0))
    if layer.lif and layer.lif["du"] < DECAY_MAX:  # u-overflow: sum |a| (+ bias) <= 2^24 / 64
        src = [2.0 ** (INPUT_BITS_RANGE[1] - 1) if p.source == "__input__" and graded_input
               else 1.0 for p in layer.paths]
        a_u = sum(m * float(np.abs(t).reshape(t.shape[0], -1).sum(1).max(initial=0))
                  for m, t in zip(src, targets, strict=True)) / 64
        into_u = 64 * a_u + (bmax if layer.bias_into == "u" else 0.0)
        if into_u:
            bounds.append(U_OVERFLOW_FILL * 2 * U_LIMIT / into_u)
    if bmax:
        top = NETX_BIAS_EXP if netx else BIAS_EXP_RANGE[1]
        bounds.append(BIAS_MANT_MAX * 2.0 ** top / bmax / 1.01)
    for f, t in zip(layer.fused, targets, strict=True):
        tm = float(np.abs(t).max(initial=0))
        if tm:
            bounds.append(64 * (qmax + 0.49) * 2.0**k / tm if f.kind == "conv"
                          else 64 * qmax * 2.0 ** e_top / tm)
    if layer.lif is None:  # readout: worst case of T steps within READOUT_FILL * 64 * VTH_MAX
        worst = sum(float(np.abs(t).reshape(t.shape[0], -1).sum(1).max(initial=0))
                    for t in targets) + bmax
        dense_pref = [64 * qmax / float(np.abs(t).max()) for t in targets if np.abs(t).max()]
        bounds += dense_pref
        if worst:
            bounds.append(READOUT_FILL * 64 * VTH_MAX / (timesteps * worst))
    return min(bounds)


def _weight_errors(deq: np.ndarray, ta: np.ndarray) -> WeightErrors:
    """The record of ``e = (deq - ta) / max|ta|`` over every weight (0 where ``ta`` is all 0)."""
    m = float(np.abs(ta).max(initial=0))
    e = ((deq - ta) / m).ravel() if m else np.zeros(ta.size)
    counts, edges = np.histogram(e, bins=WEIGHT_ERROR_BINS)
    return WeightErrors(counts, edges, float(np.abs(e).max(initial=0)))


def _quantise_layer(layer: _Layer, targets, lam_cap: float, weight_bits: int, timesteps: int,
                    graded_input: bool, netx: bool = False
                    ) -> tuple[Population, list[Synapse], dict[str, Any], dict[str, WeightErrors]]:
    qmax = 2 ** (weight_bits - 1) - 1
    lam = _choose_scale(layer, targets, weight_bits, timesteps, lam_cap, graded_input, netx)
    # lambda v_th = 64 vth exactly (what a subtract reset takes and a count divides by); a
    # population that fires otherwise than Lava's LIF states its rule, reset and counts
    # (netx's neuron is Lava's LIF: there ">=" stays "v > 64 vth" with lambda v_th = 64 vth + 1)
    ge = bool(layer.lif) and layer.lif["cond"] == ">=" and netx
    firing = bool(layer.lif) and (layer.lif["reset"] != "zero" or layer.lif["multi"]
                                  or layer.lif["cond"] == ">=" and not netx)
    if layer.lif:
        v_th = layer.lif["v_th"]
        vth = math.floor((lam * v_th - ge) / 64)
        if vth < 1:
            why = (f"; du={layer.lif['du']} keeps current memory, so the u-overflow rule "
                   "(sum |a| << 6 <= 2^24) bounds the scale: lower the fan-in or the input "
                   "range, or raise tau_syn to dt (du=4095)") if layer.lif["du"] < DECAY_MAX else ""
            raise DaLifError(f"{layer.name}: weights are too large relative to the threshold "
                             f"to quantise with {weight_bits}-bit weights (vth would be {vth})"
                             + why)
        lam = (64 * vth + ge) / v_th
        dv = np.rint(DECAY_UNIT - DECAY_UNIT * layer.lif["beta_c"]).astype(np.int64)
        if np.all(dv == dv[0]):
            dv = dv[:1]
        beta_q = 1 - dv / float(DECAY_UNIT)
        decay_err = float(np.abs(beta_q - layer.lif["beta_c"]).max())
    else:
        vth, dv, decay_err = VTH_MAX, np.zeros(1, np.int64), 0.0
    syns, comp, w_err, clipped, exps, records = [], 0.0, [], 0, [], {}
    k = WEIGHT_BITS_RANGE[1] - weight_bits  # only the top weight_bits bits of 8 bits count
    for path, f, t in zip(layer.paths, layer.fused, targets, strict=True):
        ta = lam * t / 64  # input units (a) per source unit
        if f.kind == "conv":  # weight_exp 0: Lava's Conv ignores the exponent
            e, m = 0, np.rint(ta / 2.0**k)
        else:
            e = max(_mant_exp(ta, qmax), _dense_exp_range(weight_bits, netx)[0])
            m = np.rint(ta / 2.0**e)
            if e < 0:  # floor((m.s) * 2^e) loses (1 - 2^e)/2 on average: add it back as bias
                comp += 32.0 * (1 - 2.0**e)
        clipped += int(np.count_nonzero((m > qmax) | (m < -qmax - 1)))
        m = np.clip(m, -qmax - 1, qmax).astype(np.int64)
        stored, wexp = m << k, e - k if f.kind == "dense" else 0
        deq = m * 2.0 ** (e + k if f.kind == "conv" else e)
        norm = float(np.linalg.norm(ta))
        w_err.append(float(np.linalg.norm(deq - ta)) / norm if norm else 0.0)
        exps.append(wexp)
        src = "input" if path.source == "__input__" else path.source
        name = f"{src}->{layer.name}" + (f"#{len(syns)}" if len(layer.paths) > 1 else "")
        records[name] = _weight_errors(deq, ta)
        syns.append(Synapse(
            name=name, source=src, target=layer.name, kind=f.kind, weights=stored, weight_exp=wexp,
            weight_bits=weight_bits, graded=src == "input" and graded_input, stride=f.stride,
            padding=f.padding, input_shape=f.in_shape, output_shape=f.out_shape,
            provenance=list(path.nodes)))
    b_v = lam * layer.bias_f + comp
    bmax = float(np.abs(b_v).max(initial=0))
    bexp = max(0, math.ceil(math.log2(bmax / BIAS_MANT_MAX))) if bmax > BIAS_MANT_MAX else 0
    if netx:  # netx's CUBA neuron fixes the exponent; the scale bound keeps the mantissa in range
        bexp = NETX_BIAS_EXP
    mant = np.clip(np.rint(b_v / 2.0**bexp), -BIAS_MANT_MAX - 1, BIAS_MANT_MAX).astype(np.int64)
    bias_err = float(np.abs(mant * 2.0**bexp - b_v).max(initial=0)) / lam
    pop = Population(name=layer.name, shape=layer.shape, dv=dv, vth=vth, bias_mant=mant,
                     bias_exp=bexp, scale=lam, provenance=layer.provenance,
                     du=layer.lif["du"] if layer.lif else DECAY_MAX, bias_into=layer.bias_into,
                     **({"spike_rule": layer.lif["cond"], "reset": layer.lif["reset"],
                         "multi_spike": layer.lif["multi"]} if firing else {}))
    row = {"population": layer.name, "nodes": layer.provenance, "scale": lam, "vth": vth,
           "v_threshold": layer.lif["v_th"] if layer.lif else None,
           "weight_exp": exps, "clipped_weights": clipped,
           "weight_rel_error": max(w_err, default=0.0), "decay_error": decay_err,
           "dv": sorted({int(d) for d in dv}), "bias_exp": bexp, "bias_into": layer.bias_into,
           "bias_abs_error": bias_err,
           "bias_max": float(np.abs(layer.bias_f).max(initial=0))}
    return pop, syns, row, records


def _graph_meta(graph: nir.NIRGraph, timesteps, encoding, dt) -> tuple[int, Encoding, float]:
    from .nir_to_torch import resolve_dt

    md = graph.metadata if isinstance(graph.metadata, dict) else {}
    t = timesteps if timesteps is not None else md.get("timesteps")
    enc = encoding or md.get("input_encoding")
    if t is None or enc is None:
        raise DaLifError("the graph has no 'timesteps'/'input_encoding' metadata (not exported "
                         "by dalif-deploy?); pass --timesteps and --encoding explicitly")
    enc = Encoding.from_name(str(enc), "input encoding")
    t = integer(t, "timesteps" if timesteps is not None else "metadata.timesteps", 1,
                TIMESTEPS_MAX)
    # a foreign graph's dt is unknown (NIR nodes carry none): never assume one silently
    return t, enc, resolve_dt(graph, dt)


def _check_fusion_memory(graph: nir.NIRGraph, paths: dict[str, list[Path]],
                         shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse, before any fusion starts, a graph whose quantisation cannot fit this machine:
    the largest fusion probe (:func:`~.nir_fuse.fusion_bytes`) plus four float64 copies of
    every parameter (the graph's, fused, quantised, and the program's int64), plus the
    interpreter with torch loaded (QUANTISE_BASE_BYTES). Calibration's emulator runs check their
    own memory."""
    params = sum(int(np.asarray(v).size) for node in graph.nodes.values()
                 for v in vars(node).values() if isinstance(v, np.ndarray))
    probe, where = 0, ""
    for target, ps in paths.items():
        for p in ps:
            b = fusion_bytes(graph, p, shapes[p.source], shapes[target])
            if b > probe:
                probe, where = b, f"{p.source} -> {target}"
    need = QUANTISE_BASE_BYTES + probe + 4 * 8 * params
    check_memory(need, f"quantising this graph ({params:,} parameters; its largest fusion "
                 f"probe, {where}, {format_bytes(probe)})", "quantise a narrower network "
                 "(a smaller --width) or on a machine with more memory")


def _build_layers(graph: nir.NIRGraph, dt: float, netx: bool = False):
    order = topo_order(graph)
    in_name, out_name = io_nodes(graph)
    shapes = infer_shapes(graph)
    in_shape = shapes[in_name]
    ops = {n: op_for(graph.nodes[n], n) for n in order}
    lifs = [n for n in order if ops[n].population]  # neuron layers: the table's populations
    for n in order:
        if not (ops[n].population or ops[n].linear or n in (in_name, out_name)):
            kinds = " or ".join(op.name for op in OPS.values() if op.population)
            raise DaLifError(f"node {n}: {type(graph.nodes[n]).__name__} is not supported "
                             f"(neuron layers must be {kinds})")

    def is_source(name: str) -> bool:
        return name == in_name or name in lifs

    delayed = set(recurrent_edges(graph))
    targets = [*lifs, out_name]
    all_paths = {n: graph_paths(graph, n, is_source) for n in targets}
    _check_fusion_memory(graph, all_paths, shapes)
    layers = []
    for n in targets:
        paths = all_paths[n]
        for p in paths:
            # a path that leaves its source over a recurrent edge carries the source's previous
            # step: a program delays only a population's own loop (its recurrent synapse)
            first = (p.source, p.nodes[0] if p.nodes else n)
            if first in delayed and p.source != n:
                raise DaLifError(f"node {n}: its input through {p.nodes} reads {p.source}'s "
                                 "output of the previous step (the path leaves it over the "
                                 f"recurrent edge {first[0]} -> {first[1]}); a program can "
                                 f"delay only a population's own loop: feed {n} from "
                                 f"{p.source} directly, not from inside its loop")
            if p.source == in_name:
                p.source = "__input__"
        tshape = shapes[n]
        fused: list[Fused] = [fuse_path(graph, p, in_shape if p.source == "__input__"
                                        else shapes[p.source], tshape, f"{n}")
                              for p in paths]
        bias = zero_input_response(graph, n, shapes, is_source).reshape(tshape)
        lif = ops[n].dalif(n, graph.nodes[n], tshape, dt) if n != out_name else None
        prov = sorted({x for p in paths for x in p.nodes} | {n})
        # a bias into u where the neuron has current memory (it ramps in as NIR's CubaLIF
        # integrates it); netx's CUBA neuron adds its bias to v only: the steady value there
        ramp = lif is not None and lif["du"] < DECAY_MAX and not netx
        gain = (lif["alpha"] if ramp else lif["bias_gain"]) if lif else 1.0
        layers.append(_Layer("readout" if n == out_name else n, tshape, paths, fused,
                             gain * bias, lif, prov, "u" if ramp else "v"))
    return in_shape, layers


def calibrated_input_scale(x: np.ndarray, bits: int = 8) -> float:
    """``(2^(bits-1) - 1) / max|x|``, or, when the data lie on a grid ``k / d`` (d <= 64, like
    the digits' ``pixel / 16``), the largest multiple of d within range: then every input value
    is represented exactly."""
    qmax = 2 ** (bits - 1) - 1
    xmax = float(np.abs(x).max(initial=0))
    if not np.isfinite(xmax):
        raise DaLifError("calibration data contains NaN or infinite values")
    if xmax == 0:
        return float(qmax)
    for d in range(1, 65):
        if np.all(np.abs(x * d - np.rint(x * d)) < 1e-6) and math.floor(qmax / (d * xmax)) >= 1:
            return float(d * math.floor(qmax / (d * xmax)))
    return qmax / xmax


def quantize_graph(graph: nir.NIRGraph, weight_bits: int = 8, calibration: Any = None, *,
                   run: CalibrationRun | None = None, timesteps: int | None = None,
                   encoding: str | None = None, input_scale: float | None = None,
                   dt: float | None = None, netx: bool = False) -> FixedProgram:
    """Quantise a NIR graph (as exported by dalif-deploy) to a :class:`FixedProgram`.

    ``calibration``: float samples as ``load_dataset`` gives them; sets the analog input scale
    to ``127 / max|x|`` and re-quantises populations that wrap or saturate when ``run(program,
    calibration)`` (see :data:`CalibrationRun`; pass the emulator) runs them. Without it the
    analog input is assumed to lie in [-1, 1] (scale 127) unless ``input_scale`` is given.
    Every synapse's weight errors are recorded in ``program.weight_errors``.

    ``netx=True`` quantises onto what lava-dl netx's CUBA layers can hold exactly (for
    :func:`~dalif_deploy.converters.fxp_to_netx.write_netx`): every bias on netx's fixed
    ``bias_exp = 6`` grid (multiples of 64 in v units; the scale is bounded so the 13-bit
    mantissa holds it) and dense weights as plain integers in [-256, 254] (mantissa exponent 0
    .. 9 - weight_bits, so no floor of a negative weight exponent and no bias compensation).
    """
    weight_bits = check_weight_bits(weight_bits)
    if calibration is not None and run is None:
        raise DaLifError("quantize_graph: calibration data needs run=, a function run(program, "
                         "x) that runs a program unchecked, e.g. functools.partial("
                         "dalif_deploy.emulate, check=False)")
    t, enc, dt = _graph_meta(graph, timesteps, encoding, dt)
    in_shape, layers = _build_layers(graph, dt, netx)
    bits = INPUT_BITS_RANGE[1]
    if input_scale is None:
        input_scale = float(2 ** (bits - 1) - 1)
        if calibration is not None and enc is ANALOG:
            input_scale = calibrated_input_scale(np.asarray(calibration, np.float64), bits)
    if enc is EVENTS:
        input_scale = 1.0
    targets = {ly.name: ly.targets(input_scale) for ly in layers}
    caps = {ly.name: 64 * VTH_CAP / ly.lif["v_th"] if ly.lif else math.inf
            for ly in layers}
    rnd, repairs = 0, 0
    while True:
        pops, syns, table, errors = [], [], [], {}
        for ly in layers:
            p, s, row, err = _quantise_layer(ly, targets[ly.name], caps[ly.name],
                                             int(weight_bits), t, enc is ANALOG, netx)
            pops.append(p)
            syns += s
            table.append(row)
            errors.update(err)
        out_scale = pops[-1].scale
        counts = {p.name for p in pops if p.multi_spike}
        for syn in syns:  # a spike count multiplies its weights: a graded synapse
            syn.graded = syn.graded or syn.source in counts
        program = FixedProgram(
            input=InputEncoding(enc.name, in_shape, input_scale, bits), populations=pops,
            synapses=syns, readout=Readout("readout", out_scale), timesteps=t, quant_table=table,
            metadata={"source": "nir", "weight_bits": int(weight_bits), "dt": dt,
                      "calibrated": calibration is not None, "calibration_rounds": rnd,
                      **({"netx": True} if netx else {}),
                      **{k: v for k, v in (graph.metadata or {}).items()
                         if isinstance(v, (str, int, float, bool))}},
            weight_errors=errors)
        over = {v.where for v in check_program(program) if v.rule == "u-overflow"}
        if over and repairs < U_OVERFLOW_ROUNDS:  # mantissa rounding broke the bound
            repairs += 1
            for p in pops:
                if p.name in over:
                    caps[p.name] = p.scale * U_OVERFLOW_FILL
            continue
        if calibration is None or run is None:
            break
        bad = _calibration_problems(program, calibration, run)
        for row in table:
            row.update(bad.get(row["population"], {"u_wraps": 0, "v_saturations": 0}))
        worse = [k for k, v in bad.items() if v["u_wraps"] or v["v_saturations"]]
        if not worse or rnd == CAL_ROUNDS:
            break
        for k in worse:
            caps[k] = pops[[p.name for p in pops].index(k)].scale / 2
        rnd += 1
    require_valid(program)
    return program


def calibration_effect(program: FixedProgram, samples: int) -> tuple[bool, str]:
    """What ``--calibrate`` changed in ``program`` (quantised with ``samples`` calibration
    samples): ``(changed anything, one line saying what or why not)``.

    Calibration does two things: it sets the analog input scale from the data, and it
    re-quantises populations that u-wrap or v-saturate on the data at half scale. Event input
    is binary (scale 1: a spike is one unit), so only the second applies; when no population
    wraps or saturates, the program equals the uncalibrated one."""
    rounds = int(program.metadata.get("calibration_rounds", 0))
    rescaled = (f"{rounds} re-quantisation round(s) at lower scale for populations that "
                f"u-wrapped or v-saturated on the {samples} calibration samples")
    if program.input.encoding is EVENTS:
        if rounds:
            return True, (f"event input: calibration sets no input scale (events are binary, "
                          f"scale 1); it made {rescaled}")
        return False, ("--calibrate changed nothing: event input is binary (scale 1: no input "
                       "scale to calibrate) and no population u-wrapped or v-saturated on the "
                       f"{samples} calibration samples (the only other thing calibration "
                       "adjusts); the program equals the uncalibrated one")
    return True, (f"calibrated: analog input scale {program.input.scale:g} from the "
                  f"{samples} samples" + (f"; {rescaled}" if rounds else
                                          "; no population wrapped or saturated"))


def _calibration_problems(program: FixedProgram, x: Any, run: CalibrationRun
                          ) -> dict[str, dict[str, int]]:
    r = run(program, x)
    return {k: {"u_wraps": r.u_wraps[k], "v_saturations": r.v_saturations[k]}
            for k in r.u_wraps}


def format_table(table: list[dict[str, Any]]) -> str:
    """The per-layer quantisation table as aligned text."""
    head = ("population", "scale", "vth", "w_exp", "clipped", "w_err%", "decay_err", "bias_exp",
            "bias_err")
    rows = [head]
    for r in table:
        rows.append((r["population"], f"{r['scale']:.4g}", str(r["vth"]),
                     ",".join(map(str, r["weight_exp"])), str(r["clipped_weights"]),
                     percent(r["weight_rel_error"], ""), f"{r['decay_error']:.2e}",
                     str(r["bias_exp"]), f"{r['bias_abs_error']:.2e}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     for r in rows)
