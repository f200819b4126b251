"""Lower a FixedProgram to a Lava network plan (pure numpy; no lava import here).

The plan says which Lava processes to build (:mod:`.run` builds them in the watchdog child):

* every population becomes one or more ``RecordingLIF`` parts (Lava's LIFReset); a population
  with per-channel decays is split into one part per distinct ``dv`` (Lava's ``du``/``dv`` are
  per-process scalars: per-neuron arrays simulate but hang on ``get``, DESIGN.md section 4);
* every synapse becomes, per (source part, target part) pair, a Lava ``Conv`` (conv synapse,
  ``weight_exp == 0``, no delay, unsplit ends), a ``Dense`` (dense, no delay) or a
  ``Sparse``/``DelaySparse`` (everything else: any linear map is a sparse matrix);
* a split population feeding a synapse with ``weight_exp < 0`` goes through a relay LIF that
  copies its spikes one step later: Lava floor-shifts each synapse process's sum separately, so
  per-part partial sums would not add up (and Lava 0.10 cannot concatenate ports);
* depth: input 0, a population ``1 + max(depth of its sources)``; a synapse whose source is
  shallower gets a delay ``depth(target) - depth(source) - 1`` so residual branches meet in step;
* streaming: sample n, step t reaches a population of depth k at Lava step ``n*T + t + 1 + k``
  (the source sends column j at step j + 1, each synapse adds one step, LIF none), so each part
  is a ``LIFReset`` with interval T and offset ``(1 + k) % T``: reset when a sample's first input
  arrives.

Exact parameter transforms: Lava's Dense/Sparse floor the LSB of mixed-sign 8-bit weights, so
a weight w goes in as ``2*w`` with ``weight_exp - 1``; Lava's Conv (which neither clips, floors
nor shifts) is a true convolution on (W, H, C) with kernels (C_out, kW, kH, C_in): a torch
kernel ``k[o, i, y, x]`` becomes ``k[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dalif_deploy.constraints import require_valid
from dalif_deploy.errors import DaLifError
from dalif_deploy.fixed_point import effective_weights
from dalif_deploy.geometry import conv_output_shape
from dalif_deploy.limits import DECAY_MAX, MAX_DELAY
from dalif_deploy.program import FixedProgram, Population, Synapse
from dalif_deploy.timing import synaptic_depths


@dataclass
class PartPlan:
    """One Lava LIF process: a channel subset of a population, in Lava's neuron order.

    ``index[j]`` is the population's C-order flat index of Lava neuron j; ``lava_shape`` is
    ``(W, H, C)`` for conv layouts and ``(n,)`` otherwise.
    """

    population: str
    part: int
    index: np.ndarray
    lava_shape: tuple[int, ...]
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray  # in Lava order, shaped lava_shape
    bias_exp: int
    depth: int

    @property
    def key(self) -> str:
        return f"{self.population}#{self.part}"


@dataclass
class ConnPlan:
    """One Lava synapse process from a source part (or the input) to a target part."""

    synapse: str
    source: str  # part key or "input"
    target: str  # part key
    kind: str  # "conv" | "dense" | "sparse"
    weights: np.ndarray | sp.csr_matrix  # already transformed for Lava
    weight_exp: int
    num_weight_bits: int
    sign_mode: str
    num_message_bits: int
    delay: int = 0
    conv: dict = field(default_factory=dict)  # input_shape, padding, stride, groups (Lava order)


@dataclass
class LavaPlan:
    program: FixedProgram
    parts: list[PartPlan]
    conns: list[ConnPlan]
    depth: dict[str, int]
    input_index: np.ndarray  # input C-order flat index of each Lava source neuron
    input_lava_shape: tuple[int, ...]

    @property
    def max_depth(self) -> int:
        return max(self.depth.values())

    def parts_of(self, population: str) -> list[PartPlan]:
        return [p for p in self.parts if p.population == population]


def whc_index(shape: tuple[int, ...]) -> np.ndarray:
    """C-order flat index (C, H, W) of each neuron listed in Lava's (W, H, C) C-order."""
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(2, 1, 0).reshape(-1)


def torch_to_lava_kernel(k: np.ndarray) -> np.ndarray:
    """torch cross-correlation kernel [O, I, kH, kW] -> Lava true-conv kernel [O, kW, kH, I]."""
    return np.ascontiguousarray(k[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def conv_matrix(syn: Synapse) -> sp.csr_matrix:
    """The conv synapse as a sparse matrix [n_out, n_in] over C-order flat (C, H, W) neurons."""
    w = syn.weights
    c_out, cin_g, kh, kw = w.shape
    c_in, h, wd = syn.input_shape
    _, ho, wo = syn.output_shape
    (sh, sw), (ph, pw) = syn.stride, syn.padding
    if (ho, wo) != conv_output_shape((h, wd), (kh, kw), syn.stride, syn.padding):
        raise DaLifError(f"synapse {syn.name}: conv output shape {syn.output_shape} does not "
                         f"follow from input {syn.input_shape}, kernel {w.shape}, stride "
                         f"{syn.stride}, padding {syn.padding}")
    cout_g = c_out // syn.groups
    o = np.arange(c_out)[:, None, None, None]
    ci = (o // cout_g) * cin_g + np.arange(cin_g)[None, :, None, None]  # input channel
    yo = np.arange(ho)[None, None, :, None]
    xo = np.arange(wo)[None, None, None, :]
    rows, cols, vals = [], [], []
    for ky in range(kh):
        for kx in range(kw):
            yi, xi = yo * sh - ph + ky, xo * sw - pw + kx
            ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < wd)
            full = np.broadcast_to(ok, (c_out, cin_g, ho, wo))
            r = np.broadcast_to((o * ho + yo) * wo + xo, full.shape)[full]
            c = np.broadcast_to((ci * h + yi) * wd + xi, full.shape)[full]
            v = np.broadcast_to(w[:, :, ky, kx][:, :, None, None], full.shape)[full]
            rows.append(r)
            cols.append(c)
            vals.append(v)
    m = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(c_out * ho * wo, c_in * h * wd), dtype=np.int64).tocsr()
    m.eliminate_zeros()
    return m


def lava_weights(syn: Synapse, m: sp.spmatrix) -> tuple[sp.spmatrix, int, int, str]:
    """(weights, weight_exp, num_weight_bits, sign_mode) for a Lava Dense/Sparse process.

    Lava floors ``8 - num_weight_bits + 1`` low bits of mixed-sign weights, so signed 8-bit
    program weights go in doubled with ``weight_exp - 1``; excitatory/inhibitory ones as they
    are. Lava then uses exactly the emulator's ``effective_weights``.
    """
    if syn.sign_mode == "mixed":
        return m * 2, syn.weight_exp - 1, syn.weight_bits, "mixed"
    return m, syn.weight_exp, syn.weight_bits, syn.sign_mode


def _via_relay(syn: Synapse, n_parts: dict[str, int]) -> bool:
    """Does ``syn`` read its split source through the relay (see :func:`plan_program`)?"""
    return syn.source != "input" and n_parts[syn.source] > 1 and syn.weight_exp < 0


def _depths(program: FixedProgram, n_parts: dict[str, int]) -> dict[str, int]:
    """Synapse depth of each population (input 0); a relay adds one step to its source."""
    for pop in program.populations:
        if not program.incoming(pop.name):
            raise DaLifError(f"population {pop.name} has no incoming synapse; Lava lowering "
                             f"needs every population driven from the input")
    return synaptic_depths(program, extra=lambda s: int(_via_relay(s, n_parts)))


def _channel_groups(pop: Population) -> list[tuple[int, np.ndarray]]:
    """(dv, channels) per distinct decay; one group for per-population decays."""
    if pop.dv.size == 1:
        return [(int(pop.dv[0]), np.arange(pop.shape[0]))]
    return [(int(d), np.flatnonzero(pop.dv == d)) for d in np.unique(pop.dv)]


def _conv_eligible(syn: Synapse, delay: int, n_src_parts: int, n_tgt_parts: int,
                   use_conv: bool) -> bool:
    return (use_conv and syn.kind == "conv" and syn.weight_exp == 0 and delay == 0
            and n_src_parts == 1 and n_tgt_parts == 1)


def plan_program(program: FixedProgram, *, use_conv: bool = True) -> LavaPlan:
    """Lower ``program`` to a :class:`LavaPlan` (see the module docstring for the rules).

    The program must pass the constraint check (:func:`dalif_deploy.constraints.require_valid`).
    """
    require_valid(program)
    groups = {p.name: _channel_groups(p) for p in program.populations}
    n_parts = {"input": 1, **{k: len(v) for k, v in groups.items()}}
    depth = _depths(program, n_parts)
    delays, conv_path = {}, {}
    for s in program.synapses:
        d = depth[s.target] - depth[s.source] - _via_relay(s, n_parts) - 1
        if d > MAX_DELAY:
            raise DaLifError(f"synapse {s.name}: needs a delay of {d} steps to balance paths; "
                             f"Lava's DelaySparse allows at most {MAX_DELAY}")
        delays[s.name] = d
        conv_path[s.name] = _conv_eligible(s, d, n_parts[s.source], n_parts[s.target], use_conv)
    whc = {s.source for s in program.synapses if conv_path[s.name]}
    whc |= {s.target for s in program.synapses if conv_path[s.name]}

    parts: list[PartPlan] = []
    for p in program.populations:
        chan_size = p.size // p.shape[0]
        for i, (dv, chans) in enumerate(groups[p.name]):
            if p.name in whc:
                index, lava_shape = whc_index(p.shape), tuple(reversed(p.shape))
            else:
                index = (chans[:, None] * chan_size + np.arange(chan_size)[None, :]).reshape(-1)
                lava_shape = (index.size,)
            parts.append(PartPlan(p.name, i, index, lava_shape, du=p.du, dv=dv, vth=p.vth,
                                  bias_mant=p.bias_mant.reshape(-1)[index].reshape(lava_shape),
                                  bias_exp=p.bias_exp, depth=depth[p.name]))
    shape_in = program.input.shape
    if "input" in whc:
        input_index, input_lava_shape = whc_index(shape_in), tuple(reversed(shape_in))
    else:
        input_index = np.arange(int(np.prod(shape_in)))
        input_lava_shape = (input_index.size,)

    def targets(name: str) -> list[tuple[str, np.ndarray]]:
        return [(q.key, q.index) for q in parts if q.population == name]

    relays = sorted({s.source for s in program.synapses if _via_relay(s, n_parts)})
    conns: list[ConnPlan] = []
    for name in relays:
        # Relay: one LIF copying a split population's spikes, one step later. Lava floors
        # each synapse's sum by weight_exp < 0 separately, so partial sums from separate parts
        # would not add up exactly: such synapses read the whole population from the relay.
        pop = program.population(name)
        relay = PartPlan(f"{name}@relay", 0, np.arange(pop.size), (pop.size,), du=DECAY_MAX,
                         dv=DECAY_MAX, vth=0, bias_mant=np.zeros(pop.size, np.int64), bias_exp=0,
                         depth=depth[name] + 1)
        parts.append(relay)
        for q in targets(name):
            eye = sp.csr_matrix((np.full(q[1].size, 2), (q[1], np.arange(q[1].size))),
                                shape=(pop.size, q[1].size))  # 2*1 with weight_exp -1
            conns.append(ConnPlan(f"{name}@relay", q[0], relay.key, "sparse", eye, -1, 8,
                                  "mixed", 0))

    def source(syn: Synapse) -> list[tuple[str, np.ndarray]]:
        if syn.source == "input":
            return [("input", input_index)]
        if _via_relay(syn, n_parts):
            return [(f"{syn.source}@relay#0", np.arange(program.population(syn.source).size))]
        return targets(syn.source)

    for s in program.synapses:
        bits = 8 if s.graded else 0
        if conv_path[s.name]:
            (src, _), (tgt, _) = source(s)[0], targets(s.target)[0]
            conns.append(ConnPlan(
                s.name, src, tgt, "conv",
                torch_to_lava_kernel(effective_weights(s.weights, s.weight_bits, s.sign_mode)),
                0, 8, "mixed", bits,
                conv={"input_shape": tuple(reversed(s.input_shape)),
                      "padding": (s.padding[1], s.padding[0]),
                      "stride": (s.stride[1], s.stride[0]), "groups": s.groups}))
            continue
        full = conv_matrix(s) if s.kind == "conv" else sp.csr_matrix(s.weights)
        for tgt, tgt_idx in targets(s.target):
            for j, (src, src_idx) in enumerate(source(s)):
                block = full[tgt_idx][:, src_idx]
                if block.nnz == 0 and j > 0:
                    continue  # nothing between these parts (one kept: every port stays wired)
                w, exp, nbits, mode = lava_weights(s, block)
                if s.kind == "dense" and delays[s.name] == 0:
                    conns.append(ConnPlan(s.name, src, tgt, "dense", w.toarray(), exp, nbits,
                                          mode, bits))
                else:
                    conns.append(ConnPlan(s.name, src, tgt, "sparse", w.tocsr(), exp, nbits,
                                          mode, bits, delay=delays[s.name]))
    return LavaPlan(program, parts, conns, depth, input_index, input_lava_shape)
