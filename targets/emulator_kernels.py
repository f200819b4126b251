"""The emulator's compiled program: synapse kernels with their exactness guards, neuron
parameters, on a torch device, and the device settings that keep every operation exact.

Why the integers are the same bit for bit on every device. Every value the emulator holds is an
integer; a float type represents an integer exactly when its magnitude is at most 2^24
(float32) or 2^53 (float64). Before a program runs, each synapse's worst case is bounded
(``bound = max_o sum_i |W[o, i]| * max|input|``) and its kernel runs in float32 only when
``bound <= 2^24``, else float64 (``bound < 2^53``, which the constraint check guarantees);
neuron state is float32 only where :func:`compile_population`'s bounds keep every
intermediate below 2^24, else float64. Consequences, on any device:

* **Sums in any order.** Every partial sum of a synapse's products, over any subset of its terms
  in any order or grouping (blocked GEMM, split-K, parallel reductions, atomics), is an integer
  of magnitude <= ``bound``: representable, so each addition is exact and the result does not
  depend on the order. Nondeterministic reduction orders therefore still give identical bits;
  ``torch.use_deterministic_algorithms`` is not needed (and is not set: it would make cuBLAS
  demand ``CUBLAS_WORKSPACE_CONFIG``).
* **Fused multiply-add.** A product of two such integers is an exact integer below the bound, so
  ``fma(a, b, c)`` (one rounding) and ``a * b + c`` (two roundings) both round nothing: equal.
* **Divisions.** Every division is by a power of two (4096, ``4096 / f`` for power-of-two
  ``f``), which CUDA's ``a * (1 / b)`` rewrite of a division by a scalar also computes exactly;
  ``floor``/``trunc``/``copysign``/``fmod`` are exact IEEE operations.
* **No reduced precision.** TF32 (10-bit mantissa) on Ampere and later would round products of
  values above 2^11: :func:`exact_kernels` sets cuBLAS float32 GEMMs to full IEEE precision
  (``torch.backends.cuda.matmul.fp32_precision = "ieee"``) for the run and restores the setting
  after. Half/bfloat16 are never used.
* **No transform-based convolutions.** cuDNN may pick Winograd or FFT convolution algorithms,
  which multiply by non-integer transform constants and round; on CUDA a convolution is
  therefore never handed to cuDNN: :func:`conv_gemm` does it as im2col (``F.unfold``: copies
  only) and a batched GEMM (cuBLAS, IEEE float32 or float64), exact by the points above. On CPU
  ``F.conv2d`` (oneDNN's direct convolution, the path every exactness test has covered) stays:
  it is faster there, and :func:`conv_gemm` is tested against it on CPU.

Spike counts are summed as float32 only below 2^24 neurons (else float64), u-wrap and v-clip
counters are integer (``bool.sum``). So the emulator gives the same integers on cpu and cuda.

**int8 conv kernels (CPU).** On a CPU whose torch has oneDNN, a conv synapse may run as oneDNN's
int8 convolution (:class:`Int8Conv`: ``torch.ops.onednn.qconv_prepack`` /
``qconv_pointwise``): u8 spikes (0/1), s8 weights, unit scales, zero points 0, an int32 sum
returned as float32. Integer arithmetic: exact whatever the order, and the float32 result is
exact because the synapse's bound is <= 2^24 (else it is float64 and never int8). Where
measured (docs/MEASURED.md) it is 1.15-2.6x faster than float32 ``F.conv2d`` on the same
NHWC input (more at more channels), including the cast to u8. A synapse runs int8 only
when all hold: a conv with a window larger than 1x1 (oneDNN's 1x1 int8 kernel
``jit_uni_int8_1x1:avx2`` raced with 2 threads: wrong in 45 of 300 calls at batch 6; the 3x3
kernel was never wrong), a binary source (spikes of a population, binarised or event input;
analog input is signed and graded), effective weights within s8, bound <= 2^24, not a
channel-diagonal 1x1 shortcut, on CPU.
Other platforms and CUDA keep float32 as the reference path.

**Layout, chosen by measurement (CPU).** The emulator keeps every conv-shaped (``[C, H, W]``)
population's tensors channels-last (NHWC) on CPU: state, spikes, bias, the float32 kernels'
weights, and the int8 kernel's output as oneDNN returns it. Measured on the ResNet-19 programs
(docs/MEASURED.md), NHWC with int8 3x3 synapses beat torch's NCHW (with the int8 kernel
converting in and out) at every width. The values do not depend on the layout (elementwise
operations, exact sums), which ``tests/targets/test_emulator_layout.py`` checks field by
field; CUDA keeps NCHW.

``kernels`` (``--kernels`` of the emulator backend and ``verify``; :data:`KERNELS`):

* ``auto`` (default): int8 where eligible and of a measured size (at least
  :data:`INT8_MIN_PATCH` weights per output; smaller windows were not measured),
  and where its shape passed :func:`int8_self_test`
  on this machine and thread count (random and extreme s8 weights, all-ones, dense and sparse
  spikes, twice at batch 6, against float32, cached per shape); a difference prints a
  ``warning:`` line and that synapse runs float32;
* ``float32``: never int8 (the reference);
* ``int8``: int8 wherever eligible, without the self-test;
* ``check``: int8 where eligible AND float32, every integer compared at every call; a difference
  is a DaLifError naming the synapse.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dalif_deploy.base.encoding import ANALOG
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.geometry import conv_output_shape
from dalif_deploy.fixedpoint.arithmetic import (
    LifF32Params,
    LifParams,
    effective_bias,
    effective_weights,
    floor_shift,
    wrap_signed,
)
from dalif_deploy.fixedpoint.constraints import source_max
from dalif_deploy.fixedpoint.limits import (
    CONV_BITS,
    DECAY_MAX,
    DECAY_UNIT,
    FLOAT32_EXACT,
    FLOAT64_EXACT,
    U_LIMIT,
    V_MAX,
)
from dalif_deploy.fixedpoint.program import FixedProgram, Population, Synapse

CPU = torch.device("cpu")
#: values of one im2col block in :func:`conv_gemm` (memory only: 256 MiB of float32)
CONV_GEMM_ELEMENTS = 2**26


@contextmanager
def exact_kernels(device: torch.device) -> Iterator[None]:
    """Full-precision (IEEE) float32 GEMMs and cuDNN convolutions on CUDA while a run lasts
    (TF32, cuDNN's default for convolutions, would round to a 10-bit mantissa); restores the
    previous settings. Nothing to do on CPU. The emulator's CUDA convolutions are GEMMs
    (:func:`conv_gemm`); verify's float and NIR references on CUDA are cuDNN's."""
    if device.type != "cuda":
        yield
        return
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9 (mixing with
        # allow_tf32 is refused)
        knobs = (backends.cuda.matmul, backends.cudnn.conv)
        old = [k.fp32_precision for k in knobs]
        for k in knobs:
            k.fp32_precision = "ieee"
        try:
            yield
        finally:
            for k, o in zip(knobs, old, strict=True):
                k.fp32_precision = o
        return
    old_precision, old_cudnn = torch.get_float32_matmul_precision(), backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")  # also sets allow_tf32 = False
    backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old_precision)
        backends.cudnn.allow_tf32 = old_cudnn


def conv_gemm(x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int],
              padding: tuple[int, int], groups: int) -> torch.Tensor:
    """``F.conv2d(x, w, None, stride, padding, 1, groups)`` as im2col and one batched GEMM.

    ``F.unfold`` gathers every output's receptive field (pure copies, zero padding), then
    ``W[g] @ cols[b, g]`` per group: a GEMM, exact for integer values within the float type's
    exact range whatever the library's summation order (see the module docstring). Samples
    are taken ``CONV_GEMM_ELEMENTS // (values per sample)`` at a time to bound the memory.
    """
    b, c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    oh, ow = conv_output_shape((h, wd), (kh, kw), stride, padding)
    k = cig * kh * kw
    wm = w.reshape(groups, co // groups, k)
    step = max(1, CONV_GEMM_ELEMENTS // max(1, c * kh * kw * oh * ow))
    outs = []
    for i in range(0, b, step):
        cols = F.unfold(x[i:i + step], (kh, kw), padding=padding, stride=stride)
        outs.append(torch.matmul(wm, cols.view(cols.shape[0], groups, k, oh * ow))
                    .view(-1, co, oh, ow))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


#: ``--kernels``: how conv synapses are computed (see the module docstring)
KERNELS = ("auto", "float32", "int8", "check")
#: ``auto`` runs int8 only from this many weights per output (C_in / groups * kH * kW; 4
#: channels of 3x3): the smallest measured, where int8 on NHWC input was still 1.15x float32
#: (docs/MEASURED.md); smaller windows are unmeasured and stay float32
INT8_MIN_PATCH = 36
_INT8_TESTED: dict[tuple, bool] = {}  # self-test verdict per kernel shape and thread count


def check_kernels(kernels: str) -> str:
    """``kernels`` if it is one of :data:`KERNELS`, else a DaLifError naming them."""
    if kernels not in KERNELS:
        raise DaLifError(f"--kernels must be one of {', '.join(KERNELS)}, got {kernels!r:.40}")
    return kernels


def int8_available(device: torch.device = CPU) -> bool:
    """Whether oneDNN's int8 convolution can run here (torch's CPU build with oneDNN)."""
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.onednn, "qconv_pointwise"))


@dataclass
class Int8Conv:
    """One conv synapse as oneDNN's int8 convolution: u8 spikes (0/1), s8 weights, unit scales,
    zero points 0, the int32 sum returned as float32 (exact below 2^24). Computed in NHWC
    (channels-last); the output is left NHWC, the layout the emulator keeps conv-shaped
    populations in on CPU (any layout gives the same values)."""

    packed: torch.Tensor
    c_out: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    scales: torch.Tensor = field(default_factory=lambda: torch.ones(0))  # unit, per channel
    zero_points: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @classmethod
    def build(cls, w: np.ndarray | torch.Tensor, stride: tuple[int, int],
              padding: tuple[int, int], groups: int) -> Int8Conv:
        wt = torch.as_tensor(w).to(torch.int8)
        packed = torch.ops.onednn.qconv_prepack(wt, torch.ones(wt.shape[0]), 1.0, 0,
                                                list(stride), list(padding), [1, 1], groups,
                                                None)
        c_out = wt.shape[0]
        return cls(packed, c_out, tuple(stride), tuple(padding), groups, torch.ones(c_out),
                   torch.zeros(c_out, dtype=torch.long))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # one pass: the cast to u8 and the NHWC layout together (a plain cast when x is NHWC)
        q = torch.empty(x.shape, dtype=torch.uint8, device=x.device,
                        memory_format=torch.channels_last).copy_(x)
        out = torch.ops.onednn.qconv_pointwise(
            q, 1.0, 0, self.packed, self.scales, self.zero_points, None,
            list(self.stride), list(self.padding), [1, 1], self.groups, 1.0, 0, torch.float32,
            "none", [], "")
        return out  # NHWC, as the emulator keeps conv-shaped populations on CPU


def int8_self_test(weight_shape: tuple[int, ...], in_shape: tuple[int, ...],
                   stride: tuple[int, int], padding: tuple[int, int], groups: int) -> bool:
    """Whether the int8 kernel of this shape gives float32's integers here: random s8 weights
    with an all-127 and an all--128 output channel, on all-ones, half and sparse spike maps
    (twice, batch 6: the batch at which oneDNN's 1x1 int8 kernel raced). Cached per shape and
    torch thread count."""
    key = (tuple(weight_shape), tuple(in_shape), tuple(stride), tuple(padding), groups,
           torch.get_num_threads())
    if key not in _INT8_TESTED:
        gen = torch.Generator().manual_seed(0)
        w = torch.randint(-128, 128, weight_shape, dtype=torch.int8, generator=gen)
        w[0], w[-1] = 127, -128
        rand = torch.rand((4, *in_shape), generator=gen)
        x = torch.cat([torch.ones((2, *in_shape)), (rand[:2] < 0.5).float(),
                       (rand[2:] < 0.1).float()])
        ref = F.conv2d(x, w.float(), None, stride, padding, 1, groups)
        conv = Int8Conv.build(w, stride, padding, groups)
        _INT8_TESTED[key] = all(torch.equal(conv(x), ref) for _ in range(2))
    return _INT8_TESTED[key]


def _int8_conv(program: FixedProgram, syn: Synapse, w: np.ndarray, bound: int,
               binarize: bool, kernels: str, device: torch.device) -> Int8Conv | None:
    """The int8 kernel of ``syn`` when ``kernels`` asks for it and it is exact: a conv with a
    window (the 1x1 kernel races, see the module docstring) on binary spikes, weights within
    s8, sums within float32's exact range, on a CPU with oneDNN; with ``auto`` only after its
    shape is of a measured size (:data:`INT8_MIN_PATCH`) and passed :func:`int8_self_test`
    (else a ``warning:`` and float32)."""
    binary = syn.source != "input" or binarize or program.input.encoding is not ANALOG
    if (kernels == "float32" or syn.kind != "conv" or w.shape[2] * w.shape[3] == 1
            or not binary or bound > FLOAT32_EXACT or w.min(initial=0) < -128
            or w.max(initial=0) > 127 or not int8_available(device)):
        return None
    if kernels == "auto" and w[0].size < INT8_MIN_PATCH:
        return None
    if kernels == "auto" and not int8_self_test(w.shape, syn.input_shape, syn.stride,
                                                syn.padding, syn.groups):
        print(f"warning: synapse {syn.name}: oneDNN's int8 convolution {tuple(w.shape)} on "
              f"{tuple(syn.input_shape)} differs from float32 on this machine; using float32",
              file=sys.stderr)
        return None
    return _packed_int8(w, syn.stride, syn.padding, syn.groups)


#: prepacked int8 kernels by content, most recent last (prepacking a kernel takes as long as
#: running it a few times: a repeated emulate() of one program reuses them)
_INT8_PACKED: OrderedDict[tuple, Int8Conv] = OrderedDict()
_INT8_PACKED_MAX = 512


def _packed_int8(w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int],
                 groups: int) -> Int8Conv:
    """:meth:`Int8Conv.build`, cached by the weights' bytes (a digest of them: a program whose
    weights change gets a new kernel) and the conv's geometry."""
    w8 = np.ascontiguousarray(w, dtype=np.int8)
    key = (hashlib.blake2b(w8.tobytes(), digest_size=20).digest(), w8.shape, tuple(stride),
           tuple(padding), groups)
    conv = _INT8_PACKED.pop(key, None) or Int8Conv.build(w8, stride, padding, groups)
    _INT8_PACKED[key] = conv
    while len(_INT8_PACKED) > _INT8_PACKED_MAX:
        _INT8_PACKED.popitem(last=False)
    return conv


@dataclass
class CompiledSynapse:
    syn: Synapse
    weight: torch.Tensor  # float32/float64 kernel or [n_out, n_in] matrix
    bound: int  # max |accumulated sum| before shift/wrap
    a_bound: int  # max |output|
    binarize: bool  # graded values arriving at a binary synapse (Lava: astype(bool))
    weight64: torch.Tensor | None = None  # float32 weights * 2^(6 + weight_exp), where exact
    diagonal: bool = False  # a 1x1 conv that maps channel c to c only: weights [C, 1, 1]
    gemm: bool = field(default=False)  # convolutions by conv_gemm (CUDA: never cuDNN)
    int8: Int8Conv | None = None  # the int8 kernel, where chosen (see _int8_conv)
    check: bool = False  # ``--kernels check``: int8 and float32 both, every integer compared

    def __call__(self, src: torch.Tensor, times64: bool = False) -> torch.Tensor:
        """``a`` (``a << 6`` with ``times64``) for a batch of source frames ``[B, *shape]``."""
        s = self.syn
        x = (src != 0) if self.binarize else src
        if times64 and self.weight64 is not None:  # shift and << 6 folded into the weights
            if self.int8 is not None:  # the raw sum times 2^(6 + e): exact in float32
                return self._int8(x) * float(2 ** (6 + s.weight_exp))
            return self._apply(x.to(torch.float32), self.weight64)
        out = (self._int8(x) if self.int8 is not None
               else self._apply(x.to(self.weight.dtype), self.weight))
        if s.kind == "conv" and s.weight_exp == 0:  # a Lava Conv: wraps to signed 24 bits
            if self.bound >= 2 ** (CONV_BITS - 1):
                out = wrap_signed(out.double(), CONV_BITS)
        else:
            out = floor_shift(out.double() if s.weight_exp < 0 else out, s.weight_exp)
        return out * 64 if times64 else out

    def _int8(self, x: torch.Tensor) -> torch.Tensor:
        assert self.int8 is not None
        out = self.int8(x)
        if self.check:
            ref = self._apply(x.to(self.weight.dtype), self.weight).to(out.dtype)
            if not torch.equal(out, ref):
                bad = int((out != ref).sum())
                raise DaLifError(f"synapse {self.syn.name}: oneDNN's int8 convolution differs "
                                 f"from float32 in {bad} of {out.numel()} values on this "
                                 "machine; run with --kernels float32")
        return out

    def _apply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.syn
        if self.diagonal:  # (a residual shortcut) one exact product per output
            return x[:, :, ::s.stride[0], ::s.stride[1]] * w
        if s.kind == "conv" and self.gemm:
            return conv_gemm(x, w, s.stride, s.padding, s.groups)
        if s.kind == "conv":
            return F.conv2d(x, w, None, s.stride, s.padding, 1, s.groups)
        return (x.flatten(1) @ w.T).view(-1, *s.output_shape)


def compile_synapse(program: FixedProgram, syn: Synapse,
                    device: torch.device = CPU, kernels: str = "auto") -> CompiledSynapse:
    in_max = source_max(program, syn)
    w = effective_weights(syn.weights, syn.weight_bits, syn.sign_mode)
    bound = int(np.abs(w).reshape(w.shape[0], -1).sum(1).max(initial=0)) * in_max
    e = syn.weight_exp
    if syn.kind == "conv" and e == 0:
        a_bound = min(bound, 2 ** (CONV_BITS - 1))
    else:
        a_bound = bound << e if e >= 0 else -((-bound) >> -e)
    if bound >= FLOAT64_EXACT:
        raise DaLifError(f"synapse {syn.name}: partial sums up to {bound} cannot be emulated "
                         "exactly; the constraint check should have refused this program")
    dtype = torch.float32 if bound <= FLOAT32_EXACT else torch.float64
    binarize = syn.source == "input" and program.input.encoding is ANALOG and not syn.graded
    # (a << 6) straight from the kernel: exact when there is no right shift, no conv wrap and
    # every partial sum of the scaled weights is an integer float32 represents exactly
    scaled = bound << (6 + max(e, 0))
    fold = e >= 0 and not (syn.kind == "conv" and e == 0 and bound >= 2 ** (CONV_BITS - 1))
    w64 = w << (6 + e) if fold and scaled <= FLOAT32_EXACT else None
    c_out = w.shape[0]
    diagonal = (syn.kind == "conv" and w.shape[1:] == (c_out, 1, 1) and syn.groups == 1
                and syn.padding == (0, 0) and np.count_nonzero(w) == np.count_nonzero(
                    w[np.arange(c_out), np.arange(c_out)]))
    if diagonal:  # keep the diagonal only, shaped to broadcast over [B, C, H, W]
        w = w[np.arange(c_out), np.arange(c_out)].reshape(c_out, 1, 1)
        w64 = None if w64 is None else w64[np.arange(c_out), np.arange(c_out)].reshape(c_out, 1, 1)
    check_kernels(kernels)
    int8 = None if diagonal else _int8_conv(program, syn, w, bound, binarize, kernels, device)
    return CompiledSynapse(syn, _kernel_tensor(w, dtype, device), bound, a_bound, binarize,
                           None if w64 is None else _kernel_tensor(w64, torch.float32, device),
                           diagonal, device.type == "cuda", int8, kernels == "check")


def _kernel_tensor(w: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Weights on ``device``; a CPU conv kernel channels-last, the layout of the emulator's
    conv-shaped populations there, so that oneDNN does not reorder it at every call."""
    t = torch.as_tensor(w, dtype=dtype, device=device)
    if device.type == "cpu" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


@dataclass
class CompiledPopulation:
    pop: Population
    syns: list[CompiledSynapse]
    params: LifParams
    readout: bool
    dtype: torch.dtype = torch.float64
    fast: LifF32Params | None = None  # lif_step_f32 applies (float32 state, du = 4095, no wrap)
    bias: torch.Tensor | None = None  # the effective bias as float32, None when all zero
    wrap_f32: bool = False  # fast, and u's one wrap applied (and counted) before the step


def v_growth_bound(step_max: int, f_max: int, steps: int) -> int:
    """Upper bound of |v| over ``steps`` steps without clipping: ``|v_t| <= |v_(t-1)| * f / 4096
    + step_max`` (rtz only shrinks the decayed value; a reset sets v to 0 or takes n * theta
    from a v above theta, leaving it in [0, v]; ``subtract-next``'s theta is in step_max), in
    integers rounding up, from v = 0; stops early once past V_MAX or at the fixed point."""
    b = 0
    for _ in range(steps):
        nb = -(-b * f_max // DECAY_UNIT) + step_max
        if nb == b or nb > V_MAX:
            return nb
        b = nb
    return b


def compile_population(pop: Population, syns: list[CompiledSynapse], steps: int, readout: bool,
                        device: torch.device = CPU) -> CompiledPopulation:
    a_bound = sum(s.a_bound for s in syns)
    bias = effective_bias(pop.bias_mant, pop.bias_exp)
    bias_max = int(np.abs(bias).max(initial=0))
    into_u = pop.bias_into == "u"
    u_in = a_bound * 64 + (bias_max if into_u else 0)  # what one step adds to u
    wrap_u = pop.du < DECAY_MAX or u_in >= U_LIMIT
    u_bound = U_LIMIT if wrap_u else u_in
    late = pop.vth << 6 if pop.reset == "subtract-next" else 0  # taken after the integration
    v_bound = v_growth_bound(u_bound + (0 if into_u else bias_max) + late,
                             DECAY_UNIT - int(pop.dv.min()), steps)
    # float32 holds every value exactly when u has no memory and cannot wrap: |v| < 2^23 after
    # the clip, so decay(v) + u + bias stays below 2^24 when |u| + |bias| < 2^23 (one spike
    # and a reset to 0 only: other resets, spike counts and a bias into u run lif_step in
    # float64)
    one_spike_to_zero = pop.reset == "zero" and not pop.multi_spike and not into_u
    f32 = pop.du >= DECAY_MAX and not wrap_u and u_bound + bias_max < U_LIMIT and one_spike_to_zero
    # ... and where u may wrap but has no memory (du = 4095) and no recurrent synapse adds to it
    # inside the step: a << 6 is a multiple of 64 within 3 * 2^23, so float32 holds it and its
    # one correction exactly (then |u| <= 2^23), and with |bias| < 2^23 also u + bias. decay(v)
    # + u + bias may pass 2^24 and round, but only where the exact sum is past 2^24 too: the clip
    # to 2^23 - 1 (and the saturation count) then come out the same
    wrap_f32 = (pop.du >= DECAY_MAX and wrap_u and u_in <= 3 * U_LIMIT and bias_max < U_LIMIT
                and one_spike_to_zero and not any(s.syn.recurrent for s in syns))
    f32 = f32 or wrap_f32
    dtype = torch.float32 if f32 else torch.float64
    dv = torch.as_tensor(pop.dv, dtype=dtype, device=device)
    dv = dv.view(-1, *([1] * (len(pop.shape) - 1))) if dv.numel() > 1 else dv.reshape(())
    params = LifParams(du=pop.du, dv=dv, vth=pop.vth,
                       bias=torch.as_tensor(bias).to(device, dtype),
                       wrap_u=wrap_u, clip_v=v_bound > V_MAX, decay_v=bool(np.any(pop.dv)),
                       spike_ge=pop.spike_rule == ">=", reset=pop.reset,
                       multi_spike=pop.multi_spike, bias_into_u=into_u)
    fast = LifF32Params.from_lif(params) if f32 else None
    bias_t = params.bias.to(torch.float32) if f32 and bias_max else None
    return CompiledPopulation(pop, syns, params, readout, dtype, fast, bias_t, wrap_f32)


