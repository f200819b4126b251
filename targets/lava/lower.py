"""Lower a FixedProgram to a Lava network plan (pure numpy; no lava import here).

The plan says which Lava processes to build (:mod:`.run` builds them in the watchdog child):

* every population becomes ONE :class:`~.procs.DaLifPopulation` process whatever its decays
  (per-neuron ``du``/``dv``/``vth``/bias arrays) and firing (spike rule, reset mode, spike
  counts sent as graded spikes into graded synapses: ``num_message_bits = 8``), so a network
  has ``populations + synapses + 1`` Lava processes (the 1: the input source);
* every synapse becomes one Lava ``Conv`` (conv synapse, ``weight_exp == 0``, no delay), a
  ``Dense`` (dense, no delay) or a ``Sparse``/``DelaySparse`` (everything else: any linear map
  is a sparse matrix); each synapse sees its whole source and target, so its sum is floor-shifted
  by ``weight_exp`` once, as the emulator does;
* depth: input 0, a population ``1 + max(depth of its sources)``; a synapse whose source is
  shallower gets a delay ``depth(target) - depth(source) - 1`` so residual branches meet in step;
* streaming: sample n, step t reaches a population of depth k at Lava step ``n*T + t + 1 + k``
  (the source sends column j at step j + 1, each synapse adds one step, LIF none), so each
  population resets with interval T and offset ``(1 + k) % T``: when a sample's first input
  arrives;
* recurrence: a recurrent synapse (a population back to itself) is a Dense (a Sparse if conv)
  into the population's ``a_rec`` port, with no delay and left out of the depths: at Lava step
  ``n*T + t + 1 + k`` it delivers the spikes of step ``n*T + t + k``, i.e. program step t-1, the
  recurrence's one-step delay; at the reset step (t = 0) the population drops it (those spikes
  belong to the previous sample), as the program's recurrence gives none at step 0.

Exact parameter transforms: Lava's Dense/Sparse floor the LSB of mixed-sign 8-bit weights, so
a weight w goes in as ``2*w`` with ``weight_exp - 1``; Lava's Conv (which neither clips, floors
nor shifts) is a true convolution on (W, H, C) with kernels (C_out, kW, kH, C_in): a torch
kernel ``k[o, i, y, x]`` becomes ``k[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.geometry import conv_output_shape
from dalif_deploy.fixedpoint.arithmetic import effective_weights
from dalif_deploy.fixedpoint.constraints import require_valid
from dalif_deploy.fixedpoint.limits import MAX_DELAY
from dalif_deploy.fixedpoint.program import FixedProgram, Population, Synapse
from dalif_deploy.fixedpoint.timing import synapse_delays, synaptic_depths


@dataclass
class PopPlan:
    """One Lava population process, its neurons in Lava's order.

    ``index[j]`` is the population's C-order flat index of Lava neuron j; ``lava_shape`` is
    ``(W, H, C)`` for conv layouts and ``(n,)`` otherwise; ``dv`` and ``bias_mant`` are
    per-neuron arrays shaped ``lava_shape``.
    """

    name: str
    index: np.ndarray
    lava_shape: tuple[int, ...]
    du: int
    dv: np.ndarray
    vth: int
    bias_mant: np.ndarray
    bias_exp: int
    depth: int
    spike_rule: str = ">"
    reset: str = "zero"
    multi_spike: bool = False
    bias_into: str = "v"


@dataclass
class ConnPlan:
    """One Lava synapse process from a population (or the input) to a population."""

    synapse: str
    source: str  # population name or "input"
    target: str  # population name
    kind: str  # "conv" | "dense" | "sparse"
    weights: np.ndarray | sp.csr_matrix  # already transformed for Lava
    weight_exp: int
    num_weight_bits: int
    sign_mode: str
    num_message_bits: int
    delay: int = 0
    recurrent: bool = False  # source == target: into the population's a_rec port
    conv: dict = field(default_factory=dict)  # input_shape, padding, stride, groups (Lava order)


@dataclass
class LavaPlan:
    program: FixedProgram
    pops: list[PopPlan]
    conns: list[ConnPlan]
    depth: dict[str, int]
    input_index: np.ndarray  # input C-order flat index of each Lava source neuron
    input_lava_shape: tuple[int, ...]

    @property
    def max_depth(self) -> int:
        return max(self.depth.values())

    @property
    def process_count(self) -> int:
        """Lava processes this plan builds: one per population and synapse, plus the source."""
        return len(self.pops) + len(self.conns) + 1


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
    if (ho, wo) != conv_output_shape((h, wd), (kh, kw), syn.stride, syn.padding):  # rule "shape"
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


def _neuron_dv(pop: Population) -> np.ndarray:
    """The population's decay per neuron, C order (``dv`` is per channel or one value)."""
    return np.repeat(pop.dv, pop.size // pop.dv.size)


def plan_program(program: FixedProgram, *, use_conv: bool = True) -> LavaPlan:
    """Lower ``program`` to a :class:`LavaPlan` (see the module docstring for the rules).

    The constraint check (:func:`dalif_deploy.fixedpoint.constraints.require_valid`) is the only
    refusal:
    what it guarantees (every population driven, topological order, delays <= MAX_DELAY, shapes
    that match) is asserted here, never re-decided. ``use_conv=False`` lowers every conv
    synapse as a Sparse matrix.
    """
    require_valid(program)
    depth = synaptic_depths(program)
    delays = synapse_delays(program, depth)
    assert all(program.incoming(p.name) for p in program.populations), "rule 'topology'"
    assert all(0 <= d <= MAX_DELAY for d in delays.values()), "rule 'delay'"
    conv_path = {s.name: use_conv and s.kind == "conv" and s.weight_exp == 0
                 and delays[s.name] == 0 and not s.recurrent for s in program.synapses}
    whc = {s.source for s in program.synapses if conv_path[s.name]}
    whc |= {s.target for s in program.synapses if conv_path[s.name]}

    def layout(name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
        if name in whc:
            return whc_index(shape), tuple(reversed(shape))
        n = int(np.prod(shape))
        return np.arange(n), (n,)

    pops: list[PopPlan] = []
    index: dict[str, np.ndarray] = {}
    for p in program.populations:
        idx, lava_shape = layout(p.name, p.shape)
        index[p.name] = idx
        pops.append(PopPlan(p.name, idx, lava_shape, du=p.du,
                            dv=_neuron_dv(p)[idx].reshape(lava_shape), vth=p.vth,
                            bias_mant=p.bias_mant.reshape(-1)[idx].reshape(lava_shape),
                            bias_exp=p.bias_exp, depth=depth[p.name], spike_rule=p.spike_rule,
                            reset=p.reset, multi_spike=p.multi_spike, bias_into=p.bias_into))
    input_index, input_lava_shape = layout("input", program.input.shape)
    index["input"] = input_index

    conns: list[ConnPlan] = []
    for s in program.synapses:
        bits = 8 if s.graded else 0
        if conv_path[s.name]:
            conns.append(ConnPlan(
                s.name, s.source, s.target, "conv",
                torch_to_lava_kernel(effective_weights(s.weights, s.weight_bits, s.sign_mode)),
                0, 8, "mixed", bits,
                conv={"input_shape": tuple(reversed(s.input_shape)),
                      "padding": (s.padding[1], s.padding[0]),
                      "stride": (s.stride[1], s.stride[0]), "groups": s.groups}))
            continue
        full = conv_matrix(s) if s.kind == "conv" else sp.csr_matrix(s.weights)
        w, exp, nbits, mode = lava_weights(s, full[index[s.target]][:, index[s.source]])
        if s.kind == "dense" and delays[s.name] == 0:
            conns.append(ConnPlan(s.name, s.source, s.target, "dense", w.toarray(), exp, nbits,
                                  mode, bits, recurrent=s.recurrent))
        else:
            conns.append(ConnPlan(s.name, s.source, s.target, "sparse", w.tocsr(), exp, nbits,
                                  mode, bits, delay=delays[s.name], recurrent=s.recurrent))
    return LavaPlan(program, pops, conns, depth, input_index, input_lava_shape)
