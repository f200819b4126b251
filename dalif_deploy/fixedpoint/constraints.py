"""Named Loihi 2 / Lava constraint rules, checked on every fixed-point program.

:func:`check_program` returns a list of :class:`Violation` (rule name, place, what is wrong and
how to fix it); :func:`require_valid` raises :class:`~dalif_deploy.base.errors.DaLifError` when any
has severity ``error``. Errors are things Lava or the chip would silently change (clip,
truncate, ignore, overflow); warnings are risks that the emulator counts at run time (u wraps,
v saturation) or limits of real hardware that the CPU simulation does not enforce.

These rules are the ONE definition of what a program may be: the Lava lowering
(``targets/lava/lower.py``) runs :func:`require_valid` and makes no refusals of its own, so a
program passes the check exactly when it lowers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dalif_deploy.base.encoding import ANALOG
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.geometry import conv_output_shape

from .cost import resources
from .fxp_format import PROGRAM_FORMAT, PROGRAM_VERSION, load_program
from .limits import (
    BIAS_EXP_RANGE,
    BIAS_MANT_MAX,
    CONV_BITS,
    DECAY_MAX,
    FAN_IN_MAX,
    GRADED_PAYLOAD_MAX,
    INPUT_BITS_RANGE,
    INT32_SAFE,
    LAVA_CONV_PARAM_MAX,
    MAX_DELAY,
    SIGN_RANGES,
    U_LIMIT,
    V_MAX,
    VTH_MAX,
    WEIGHT_BITS_RANGE,
    WEIGHT_EXP_RANGE,
)
from .program import FixedProgram, Population, Synapse
from .timing import synapse_delays, synaptic_depths


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``rule`` (a name from :data:`RULES`), ``where`` (population or synapse),
    ``message`` (what and how to fix), ``severity`` (``error`` or ``warning``)."""

    rule: str
    where: str
    message: str
    severity: str = "error"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}")
        if self.severity not in ("error", "warning"):
            raise ValueError(f"severity must be 'error' or 'warning', not {self.severity!r}")

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


RULES: dict[str, str] = {
    "weight-bits": "weight_bits must be 1..8",
    "weight-range": "weights must fit the 8-bit range of their sign mode",
    "weight-lsb": "weight_bits-bit weights must have the low bits Lava floors away equal to 0",
    "weight-exp": "weight_exp must lie in the Loihi range",
    "conv-weight-exp": "Lava's Conv ignores weight_exp (else lowered as a sparse matrix)",
    "conv-limits": "Lava's Conv limits (int8 kernel/stride/padding/groups)",
    "shape": "synapse shapes must match its source and target populations",
    "graded-input": "analog input must reach its synapses as graded spikes",
    "input-bits": "graded input values must be 2..8 bits",
    "vth-range": "vth is a 17-bit unsigned integer",
    "bias-range": "bias mantissa is 13-bit signed, exponent within range",
    "decay-range": "du and dv are 12-bit unsigned",
    "headroom": "synaptic input and v must fit the 24-bit state and Lava's int32 arithmetic",
    "u-overflow": "with du < 4095, a << 6 must stay within 2^24 (Lava keeps u in int32)",
    "delay": f"residual paths must meet with delays of at most {MAX_DELAY} steps",
    "fan-in": "nonzero synapses per neuron",
    "topology": "populations in topological order (a synapse back to its own population is the "
                "one cycle allowed), every one driven, the readout feeds none",
    "readout": "the readout is a non-spiking integrator (dv = 0, du = 4095, vth max)",
    "multi-spike": "spike counts go out as graded spikes whose payload holds every count",
}


def source_max(program: FixedProgram, s: Synapse) -> int:
    """Largest |value| a synapse's source sends: 2^(bits-1) for graded analog input, the
    largest spike count of a multi-spike population (:func:`spike_count_max`) into a graded
    synapse, else 1 (binary spikes)."""
    if s.source == "input" and s.graded and program.input.encoding is ANALOG:
        return 2 ** (program.input.bits - 1)
    if s.source != "input" and s.graded and program.population(s.source).multi_spike:
        return spike_count_max(program, s.source)
    return 1


def spike_count_max(program: FixedProgram, name: str) -> int:
    """Most spikes a multi-spike population can send in one step (1 for one-spike ones).

    Before firing ``v <= r + u_max + |bias|`` (``u_max = 64 a_max``, at most 2^23): ``r``,
    what a step leaves in v, is below ``theta = vth << 6`` or equal to it (``zero`` leaves 0;
    ``subtract`` leaves ``0 <= v <= theta``, and decay only shrinks it), and v saturates at
    2^23 - 1. The count is then at most
    ``floor(v / theta)``. Refused (rule ``multi-spike``) where it exceeds the payload."""
    p = program.population(name)
    if not p.multi_spike:
        return 1
    theta = p.vth << 6
    if theta < 1:
        return V_MAX
    rest = theta if p.reset == "subtract" else 0
    # u: this step's a << 6, or with current memory (du < 4095) or a wrap anything up to 2^23
    u = U_LIMIT if p.du < DECAY_MAX else min(U_LIMIT, math.ceil(64 * _input_max(program, name)))
    v_max = min(V_MAX, rest + u + _bias_max(p))
    return max(1, v_max // theta)


def _bias_max(p: Population) -> int:
    """A bound of |effective bias| (``bias_mant`` shifted by ``bias_exp``, a floor shift when
    negative) of population ``p``: ``ceil(max |bias_mant| * 2^bias_exp)``, exact for the
    negative mantissas a floor shift rounds away from 0."""
    m = int(np.abs(p.bias_mant).max(initial=0))
    return m << p.bias_exp if p.bias_exp >= 0 else -(-m >> -p.bias_exp)


def _syn_max_abs_sum(program: FixedProgram, s: Synapse) -> int:
    """Largest |accumulated input| of one output neuron (before shift / wrap)."""
    w = np.abs(s.weights).reshape(s.weights.shape[0], -1)
    return int(w.sum(1).max(initial=0)) * source_max(program, s)


def _input_max(program: FixedProgram, name: str) -> float:
    """Largest |a| population ``name`` can receive in one step: the sum over its incoming
    synapses of max |accumulated input| * 2^max(weight_exp, 0) (a right shift only shrinks
    it; counting it as 0 keeps the bound safe)."""
    return sum(_syn_max_abs_sum(program, s) * 2.0 ** max(s.weight_exp, 0)
               for s in program.incoming(name))


def _syn_a_max(program: FixedProgram, s: Synapse) -> int:
    """Largest |a| one synapse delivers after its ``weight_exp`` shift: ``bound << e``, or
    ``ceil(bound / 2^-e)`` for a floor shift right; a Lava Conv (``weight_exp == 0``) wraps
    to signed 24 bits, so at most 2^23."""
    bound, e = _syn_max_abs_sum(program, s), s.weight_exp
    if s.kind == "conv" and e == 0:
        return min(bound, 2 ** (CONV_BITS - 1))
    return bound << e if e >= 0 else -((-bound) >> -e)


def _check_synapse(program: FixedProgram, s: Synapse) -> Iterator[Violation]:
    w = s.weights
    bits_lo, bits_hi = WEIGHT_BITS_RANGE
    if not bits_lo <= s.weight_bits <= bits_hi:
        yield Violation("weight-bits", s.name, f"weight_bits={s.weight_bits}; use "
                        f"{bits_lo}..{bits_hi}")
        return
    lo, hi = SIGN_RANGES[s.sign_mode]
    if w.size and (w.min() < lo or w.max() > hi):
        yield Violation("weight-range", s.name,
                        f"weights span [{w.min()}, {w.max()}] but {s.sign_mode} weights must "
                        f"lie in [{lo}, {hi}] (Lava clips them); raise weight_exp and "
                        "re-quantise the mantissas")
    k = bits_hi - s.weight_bits
    mag = -w if s.sign_mode == "inhibitory" else w
    if k > 0 and w.size and np.any(mag & ((1 << k) - 1)):
        yield Violation("weight-lsb", s.name,
                        f"{s.weight_bits}-bit weights must be multiples of 2^{k} (Lava floors "
                        f"the low bits); store mantissa << {k} with weight_exp lowered by {k}")
    if not WEIGHT_EXP_RANGE[0] <= s.weight_exp <= WEIGHT_EXP_RANGE[1]:
        yield Violation("weight-exp", s.name,
                        f"weight_exp={s.weight_exp} outside {list(WEIGHT_EXP_RANGE)}; rescale "
                        "the target population")
    if s.kind == "conv":
        if s.weight_exp != 0:
            yield Violation("conv-weight-exp", s.name,
                            f"weight_exp={s.weight_exp}: Lava's Conv ignores it, so this conv "
                            "must be lowered as a sparse matrix; fold the exponent into the "
                            "target's scale to keep a Conv", "warning")
        elif _syn_max_abs_sum(program, s) >= 2 ** (CONV_BITS - 1):
            yield Violation("headroom", s.name, "conv sums may exceed 24 bits, where Lava's "
                            "Conv wraps them (a sparse lowering would not); lower the target's "
                            "scale")
        kh, kw = w.shape[2:]
        if max(kh, kw, *s.stride, *s.padding, s.groups) > LAVA_CONV_PARAM_MAX:
            yield Violation("conv-limits", s.name,
                            f"kernel {kh}x{kw}, stride {s.stride}, padding {s.padding}, "
                            f"groups {s.groups}: Lava's Conv stores these as int8 "
                            f"(<= {LAVA_CONV_PARAM_MAX}); express the layer as dense")
    src = program.input.shape if s.source == "input" else program.population(s.source).shape
    tgt = program.population(s.target).shape
    if s.input_shape != src or int(np.prod(s.output_shape)) != int(np.prod(tgt)):
        yield Violation("shape", s.name, f"maps {s.input_shape} -> {s.output_shape} but "
                        f"connects {s.source} {src} -> {s.target} {tgt}")
    elif s.kind == "conv":
        oh, ow = conv_output_shape(s.input_shape[1:], w.shape[2:], s.stride, s.padding)
        if (w.shape[0], oh, ow) != tuple(s.output_shape) or s.output_shape != tgt:
            yield Violation("shape", s.name, f"conv of {s.input_shape} gives "
                            f"{(w.shape[0], oh, ow)}, target {s.target} is {tgt}")
    if s.source == "input" and program.input.encoding is ANALOG and not s.graded:
        yield Violation("graded-input", s.name, "analog input would be binarised by a binary "
                        "synapse; mark it graded (num_message_bits > 0)")
    fan = np.count_nonzero(w.reshape(w.shape[0], -1), axis=1).max(initial=0)
    if fan > FAN_IN_MAX:
        yield Violation("fan-in", s.name, f"up to {fan} nonzero synapses per neuron (> "
                        f"{FAN_IN_MAX}); may not fit a Loihi 2 core, split the layer",
                        "warning")


def _check_population(program: FixedProgram, p: Population) -> Iterator[Violation]:
    if not 0 <= p.vth <= VTH_MAX:
        yield Violation("vth-range", p.name, f"vth={p.vth} outside [0, {VTH_MAX}]; lower the "
                        "population's scale")
    bm = p.bias_mant
    if bm.size and (bm.min() < -BIAS_MANT_MAX - 1 or bm.max() > BIAS_MANT_MAX):
        yield Violation("bias-range", p.name, f"bias mantissa spans [{bm.min()}, {bm.max()}], "
                        f"outside [{-BIAS_MANT_MAX - 1}, {BIAS_MANT_MAX}]; raise bias_exp")
    if not BIAS_EXP_RANGE[0] <= p.bias_exp <= BIAS_EXP_RANGE[1]:
        yield Violation("bias-range", p.name, f"bias_exp={p.bias_exp} outside "
                        f"{list(BIAS_EXP_RANGE)}; lower the population's scale")
    for name, d in (("du", np.array([p.du])), ("dv", p.dv)):
        if d.min() < 0 or d.max() > DECAY_MAX:
            yield Violation("decay-range", p.name, f"{name} spans [{d.min()}, {d.max()}], "
                            f"outside [0, {DECAY_MAX}] (decay factors must lie in [0, 1]: "
                            "check beta)")
    a_max = _input_max(program, p.name)
    a_u = sum(_syn_a_max(program, s) for s in program.incoming(p.name))  # after the shifts
    # a bias into u joins a << 6 before u's wrap (in u's units, not shifted)
    b_u = -(-_bias_max(p) // 64) if p.bias_into == "u" else 0
    if a_max > INT32_SAFE:
        yield Violation("headroom", p.name, f"synaptic input up to {a_max:.0f} overflows "
                        "Lava's int32 arithmetic after << 6; lower the scale")
    elif p.du < DECAY_MAX and (a_u + b_u) * 64 > 2 * U_LIMIT:
        what = f"synaptic input up to {a_u}" + (f" and its bias into u ({b_u} x 64)"
                                                  if b_u else "")
        yield Violation("u-overflow", p.name, f"du={p.du} keeps current memory and {what} "
                        f"gives a << 6 = {(a_u + b_u) * 64} > 2^24: "
                        "Lava keeps u in int32, so one wrap by 2^24 cannot bring u back into "
                        "24 bits and it later wraps at 2^31 (docs/DESIGN.md section 9); lower the "
                        f"population's scale (weights or weight_exp) so that |a| <= "
                        f"{2 * U_LIMIT // 64}, or use du={DECAY_MAX}")
    elif (a_max + b_u) * 64 >= U_LIMIT:
        yield Violation("headroom", p.name, f"synaptic input up to {a_max:.0f} (x64) can wrap "
                        "the 24-bit current u; the emulator counts u wraps", "warning")
    if p.multi_spike:
        yield from _check_multi_spike(program, p)
    if p.name != program.readout.population and 64 * p.vth > V_MAX // 2:
        yield Violation("headroom", p.name, f"64*vth = {64 * p.vth} leaves less than 1 bit "
                        "of v headroom in 24 bits; lower the scale", "warning")


def _check_multi_spike(program: FixedProgram, p: Population) -> Iterator[Violation]:
    """A count needs theta >= 1, a payload that holds it and graded synapses that multiply it
    (a binary synapse would count any number of spikes as one)."""
    if p.vth < 1:
        yield Violation("multi-spike", p.name, "vth = 0: a multi-spike population divides v "
                        "by vth << 6; give it a positive threshold")
        return
    n = spike_count_max(program, p.name)
    if n > GRADED_PAYLOAD_MAX:
        yield Violation("multi-spike", p.name, f"may send up to {n} spikes in one step, more "
                        f"than a graded spike's payload carries (<= {GRADED_PAYLOAD_MAX}); "
                        "raise vth relative to the weights (lower the population's scale) or "
                        "bound the input")
    for s in program.synapses:
        if s.source == p.name and not s.graded:
            yield Violation("multi-spike", s.name, f"{p.name} sends spike counts, which a "
                            "binary synapse would count as one spike; mark it graded")


def _check_topology(program: FixedProgram) -> Iterator[Violation]:
    seen = {"input"}
    for p in program.populations:
        inc = program.incoming(p.name)
        if not inc:
            yield Violation("topology", p.name, "has no incoming synapse; every population "
                            "must be driven (from the input or an earlier population): connect "
                            "it or remove it")
        for s in inc:
            if s.source not in seen and not s.recurrent:
                yield Violation("topology", s.name, f"source {s.source} comes after target "
                                f"{p.name}; list populations in topological order (the only "
                                "cycle a program may hold is a recurrent synapse from a "
                                "population to itself)")
        if not [s for s in inc if not s.recurrent]:
            yield Violation("topology", p.name, "is driven only by its own recurrent synapse, "
                            "so it never receives input: connect it to the input or an earlier "
                            "population")
        seen.add(p.name)
    ro = program.readout.population
    for s in program.synapses:
        if s.source == ro:
            yield Violation("topology", s.name, f"the readout {ro} must not feed other "
                            "populations")
    r = program.population(ro)
    if r.du != DECAY_MAX or np.any(r.dv != 0) or r.vth != VTH_MAX or not r.plain:
        yield Violation("readout", ro, f"readout needs du={DECAY_MAX}, dv=0, vth={VTH_MAX}, "
                        "spike rule '>', reset 'zero', one spike (got du="
                        f"{r.du}, dv={sorted(set(r.dv.tolist()))}, vth={r.vth}, spike rule "
                        f"{r.spike_rule!r}, reset {r.reset!r}, multi_spike={r.multi_spike})")
    else:
        a_max = _input_max(program, ro)
        bias = float(np.abs(r.bias_mant).max(initial=0)) * 2.0 ** r.bias_exp
        if program.timesteps * (a_max * 64 + bias) >= 64 * VTH_MAX:
            yield Violation("headroom", ro, "the readout integral may reach 64*vth and fire "
                            "(which resets it); lower the readout scale", "warning")


def _check_delays(program: FixedProgram) -> Iterator[Violation]:
    """Where residual branches of different lengths meet, the shorter one waits
    ``depth(target) - depth(source) - 1`` steps
    (:func:`~dalif_deploy.fixedpoint.timing.synapse_delays`);
    Lava's DelaySparse allows at most MAX_DELAY."""
    try:
        depth = synaptic_depths(program)
    except DaLifError:  # not in topological order: the topology rule reports it
        return
    delays = synapse_delays(program, depth)
    for s in program.synapses:
        d = delays[s.name]
        if d > MAX_DELAY:
            yield Violation("delay", s.name, f"{s.source} (depth {depth[s.source]}) -> "
                            f"{s.target} (depth {depth[s.target]}) needs a delay of {d} steps "
                            f"to meet the longer path, but Lava's DelaySparse allows at most "
                            f"{MAX_DELAY}; shorten the longer branch into {s.target}")


def check_program(program: FixedProgram) -> list[Violation]:
    """All rule violations of ``program`` (empty when it is fine)."""
    out: list[Violation] = []
    enc = program.input
    if enc.encoding is ANALOG and not INPUT_BITS_RANGE[0] <= enc.bits <= INPUT_BITS_RANGE[1]:
        out.append(Violation("input-bits", "input", f"bits={enc.bits}; graded input values "
                             f"must be {INPUT_BITS_RANGE[0]}..{INPUT_BITS_RANGE[1]} bits"))
    for s in program.synapses:
        out.extend(_check_synapse(program, s))
    for p in program.populations:
        out.extend(_check_population(program, p))
    out.extend(_check_topology(program))
    out.extend(_check_delays(program))
    return out


def require_valid(program: FixedProgram, on_warning: Callable[[Violation], None] | None = None
                  ) -> list[Violation]:
    """Raise DaLifError listing every error; pass warnings to ``on_warning``; return all."""
    found = check_program(program)
    errors = [v for v in found if v.severity == "error"]
    if errors:
        lines = "; ".join(str(v) for v in errors)
        raise DaLifError(f"program breaks {len(errors)} constraint(s): {lines}")
    if on_warning:
        for v in found:
            on_warning(v)
    return found


def describe_program(path: str | os.PathLike, hardware: Any = None) -> dict[str, Any]:
    """A JSON-able summary of a program file for ``dalif-deploy inspect``; ``resources`` with
    the hardware figures ``hardware`` (a :class:`~dalif_deploy.fixedpoint.hardware.Hardware`; None:
    the
    defaults)."""
    prog = load_program(path)
    syn_count = {s.name: int(np.count_nonzero(s.weights)) for s in prog.synapses}
    return {
        "kind": "fixed-point program",
        "format": f"{PROGRAM_FORMAT} v{PROGRAM_VERSION}",
        "timesteps": prog.timesteps,
        "input": {"kind": prog.input.kind, "shape": list(prog.input.shape),
                  "scale": prog.input.scale, "bits": prog.input.bits},
        "readout": {"population": prog.readout.population, "scale": prog.readout.scale},
        "neurons": int(sum(p.size for p in prog.populations)),
        "nonzero_weights": int(sum(syn_count.values())),
        "populations": [
            {"name": p.name, "shape": list(p.shape), "vth": p.vth, "du": p.du,
             "dv": sorted({int(d) for d in p.dv}), "bias_exp": p.bias_exp,
             "bias_mant_range": [int(p.bias_mant.min()), int(p.bias_mant.max())],
             "scale": p.scale, "provenance": p.provenance, "spike_rule": p.spike_rule,
             "reset": p.reset, "multi_spike": p.multi_spike, "bias_into": p.bias_into}
            for p in prog.populations],
        "synapses": [
            {"name": s.name, "source": s.source, "target": s.target, "kind": s.kind,
             "weights_shape": list(s.weights.shape), "nonzero": syn_count[s.name],
             "weight_range": [int(s.weights.min()), int(s.weights.max())]
             if s.weights.size else [0, 0],
             "weight_exp": s.weight_exp, "weight_bits": s.weight_bits, "graded": s.graded,
             "recurrent": s.recurrent,
             **({"stride": list(s.stride), "padding": list(s.padding), "groups": s.groups}
                if s.kind == "conv" else {}),
             "provenance": s.provenance}
            for s in prog.synapses],
        "quant_table": prog.quant_table,
        "constraint_violations": [v.to_dict() for v in check_program(prog)],
        "metadata": prog.metadata,
        "resources": resources(prog, hardware),
    }
