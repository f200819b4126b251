"""Lava's bit-accurate fixed-point neuron and synapse arithmetic as batched torch ops.

docs/DESIGN.md section 4 defines the arithmetic; :func:`lif_step` states it and is the reference
step used everywhere. :func:`lif_step_f32` is the same step specialised for the common case the
emulator proves safe at compile time (no current memory, no u wrap, every value an integer below
2^24 held in float32) and computed with a few in-place ops; the emulator's tests check it
against an independent Python-int reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .limits import (
    DECAY_BITS,
    DECAY_MAX,
    DECAY_UNIT,
    LAVA_WEIGHT_CLIP,
    U_LIMIT,
    V_MAX,
    WEIGHT_BITS_RANGE,
)

_UNIT_F = float(DECAY_UNIT)


# ---------------------------------------------------------------------------------------------
# Integer primitives (work on int64 tensors and on float64 tensors holding integers).


def rtz_div4096(p: torch.Tensor) -> torch.Tensor:
    """``sign(p) * (|p| >> 12)``: the product divided by 4096, rounded toward zero."""
    if p.dtype.is_floating_point:  # exact: power-of-two scaling, |p| < 2^53
        return torch.floor(p.abs() * (1.0 / DECAY_UNIT)).copysign(p)  # (torch.trunc is 7x slower)
    return torch.sign(p) * (p.abs() >> DECAY_BITS)


def floor_shift(x: torch.Tensor, exp: int) -> torch.Tensor:
    """``x << exp`` for exp >= 0, ``x >> -exp`` (floor) otherwise, as Lava's Dense does."""
    if exp == 0:
        return x
    if x.dtype.is_floating_point:
        return x * 2.0**exp if exp > 0 else torch.floor(x * 2.0**exp)
    return x << exp if exp > 0 else x >> -exp


def wrap_signed(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's complement wrap to ``bits`` signed bits (Lava's ``signed_clamp``)."""
    half = 2 ** (bits - 1)
    return torch.remainder(x + half, 2 * half) - half


def effective_bias(bias_mant: np.ndarray, bias_exp: int) -> np.ndarray:
    """``bias_mant << bias_exp`` (``>> -bias_exp``, floor, when negative); NOT shifted by 6."""
    m = np.asarray(bias_mant, dtype=np.int64)
    return m << bias_exp if bias_exp >= 0 else m >> -bias_exp


def lava_dense_weights(weights: np.ndarray, weight_bits: int, sign_mode: str) -> np.ndarray:
    """What Lava's bit-accurate Dense does to the weights it is given (on its first step).

    Clip to 8 bits by sign mode (mixed [-256, 255], excitatory [0, 255], inhibitory
    [-255, 0]), then floor away ``8 - weight_bits + (sign_mode == "mixed")`` low bits of the
    (sign-oriented) magnitude: in mixed mode 8-bit weights lose their LSB.
    """
    w = np.asarray(weights, dtype=np.int64)
    mixed = sign_mode == "mixed"
    if sign_mode == "inhibitory":
        w = -w
    w = np.clip(w, LAVA_WEIGHT_CLIP[0] if mixed else 0, LAVA_WEIGHT_CLIP[1])
    k = WEIGHT_BITS_RANGE[1] - int(weight_bits) + int(mixed)
    w = (w >> k) << k
    return -w if sign_mode == "inhibitory" else w


def effective_weights(weights: np.ndarray, weight_bits: int, sign_mode: str) -> np.ndarray:
    """The program weights as Lava applies them, in program units.

    Program weights are signed integers (mixed: [-128, 127]; excitatory [0, 255]; inhibitory
    [-255, 0]) of which the top ``weight_bits`` bits count. The Lava lowering passes mixed-sign
    weights doubled (``2*w`` with ``weight_exp - 1``) so that Lava's LSB flooring keeps them;
    this returns ``lava_dense_weights(2*w) / 2`` (mixed) or ``lava_dense_weights(w)``: the
    identity on valid programs, Lava's clipping and flooring otherwise.
    """
    w = np.asarray(weights, dtype=np.int64)
    if sign_mode == "mixed":
        return lava_dense_weights(2 * w, weight_bits, sign_mode) >> 1
    return lava_dense_weights(w, weight_bits, sign_mode)


def decay_rtz(v: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
    """``rtz(v * (4096 - dv) / 4096)`` exactly, for int64, float64 or float32 integers.

    float64: ``|v| * (4096 - dv) / 4096`` has at most 36 significant bits: exact. float32 (only
    for |v| < 2^23): split ``|v| = 4096 hi + lo``; ``hi * f + floor(lo * f / 4096)`` uses exact
    products below 2^24 only.
    """
    f = DECAY_UNIT - dv
    if not v.dtype.is_floating_point:
        return rtz_div4096(v * f)
    a = v.abs()
    if v.dtype == torch.float64:
        return torch.floor(a * (f / DECAY_UNIT)).copysign(v)  # (torch.trunc is 7x slower)
    hi = torch.floor(a * (1.0 / DECAY_UNIT))
    lo = a - hi * DECAY_UNIT
    return (hi * f + torch.floor(lo * (f / DECAY_UNIT))).copysign(v)


# ---------------------------------------------------------------------------------------------
# The neuron step.


@dataclass(frozen=True)
class LifParams:
    """Per-population constants of :func:`lif_step` (tensors broadcast against ``[N, *shape]``).

    ``bias`` is the effective bias (``bias_mant`` shifted by ``bias_exp``). ``wrap_u`` /
    ``clip_v`` may be False only where bounds prove the wrap/clip can never trigger.
    ``spike_ge``, ``reset``, ``multi_spike``: the population's firing (:func:`fire_and_reset`).
    ``bias_into_u``: the bias is added to u (before its wrap) instead of v.
    """

    du: int
    dv: torch.Tensor
    vth: int
    bias: torch.Tensor
    wrap_u: bool = True
    clip_v: bool = True
    decay_v: bool = True
    spike_ge: bool = False
    reset: str = "zero"
    multi_spike: bool = False
    bias_into_u: bool = False


@dataclass(frozen=True)
class LifState:
    """u, v ``[N, *shape]`` and per-sample counters ``[N]`` of u wraps and v saturations."""

    u: torch.Tensor
    v: torch.Tensor
    u_wraps: torch.Tensor
    v_saturations: torch.Tensor


def lif_state_zeros(n: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> LifState:
    z = torch.zeros((n, *shape), dtype=dtype, device=device)
    c = torch.zeros(n, dtype=dtype, device=device)
    return LifState(z, z.clone(), c, c.clone())


def lif_step(state: LifState, a: torch.Tensor, params: LifParams
             ) -> tuple[torch.Tensor, LifState]:
    """One step of Lava's bit-accurate CUBA LIF (``PyLifModelBitAcc``), batched.

    With ``rtz(p) = sign(p) * (|p| >> 12)`` on the exact (int64) product::

        u  = rtz(u * (4096 - (du + 1))) + (a << 6)     note du + 1: du = 4095 gives u = a << 6
        u  = u - 2^24 if u > 2^23;  u + 2^24 if u <= -2^23      (one correction, counted)
        v  = clip(rtz(v * (4096 - dv)) + u + bias, -(2^23 - 1), 2^23 - 1)   (counted)
        s  = v > (vth << 6)                               strict
        v  = 0 where s                                    u is not reset

    That is the default (Lava's LIF). With ``bias_into_u`` the bias joins u instead, ``u =
    rtz(u * (4096 - (du + 1))) + (a << 6) + bias`` before the wrap, and v integrates u alone: a
    constant input that ramps in with du (NIR's CubaLIF bias). Other spike rules, reset modes
    and multi-spike output are :func:`fire_and_reset`'s (``zero-next``/``subtract-next``
    apply the previous step's spike, read from the unreset v, to this step's clipped integral
    before it fires).

    ``bias = bias_mant << bias_exp`` (floor shift when negative), not shifted by 6. Works on
    int64 tensors or float64 tensors holding integers (exact below 2^53). Returns the boolean
    spikes and the new state.
    """
    u, v = state.u, state.v
    u_wraps, v_sat = state.u_wraps, state.v_saturations
    a64 = a * 64 if a.dtype.is_floating_point else a << 6
    if params.du >= DECAY_MAX:
        u = a64
    else:
        u = rtz_div4096(u * (DECAY_UNIT - (params.du + 1))) + a64
    if params.bias_into_u:
        u = u + params.bias
    dims = tuple(range(1, u.dim()))
    if params.wrap_u:
        hi, lo = u > U_LIMIT, u <= -U_LIMIT
        u = u - (2 * U_LIMIT) * hi.to(u.dtype) + (2 * U_LIMIT) * lo.to(u.dtype)
        u_wraps = u_wraps + (hi | lo).sum(dims).to(u_wraps.dtype)
    theta = params.vth << 6
    fired_before = _fires(v, theta, params.spike_ge) if params.reset.endswith("-next") else None
    if params.decay_v:
        v = decay_rtz(v, params.dv)
    v = v + u if params.bias_into_u else v + u + params.bias
    if params.clip_v:
        sat = (v > V_MAX) | (v < -V_MAX)
        v_sat = v_sat + sat.sum(dims).to(v_sat.dtype)
        v = v.clamp(-V_MAX, V_MAX)
    if fired_before is not None:  # the previous step's spike resets this step's integral
        v = v * ~fired_before if params.reset == "zero-next" else v - theta * fired_before
    if params.reset == "zero" and not params.multi_spike and not params.spike_ge:
        keep = v <= theta
        v = v * keep  # (masked_fill is 4x slower)
        return ~keep, LifState(u, v, u_wraps, v_sat)
    spikes, v = fire_and_reset(v, theta, params)
    return spikes, LifState(u, v, u_wraps, v_sat)


def _fires(v: torch.Tensor, theta: int, ge: bool) -> torch.Tensor:
    return v >= theta if ge else v > theta


def fire_and_reset(v: torch.Tensor, theta: int, params: LifParams
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and the reset v for the threshold ``theta = vth << 6`` (integers throughout)::

        fire   s = v > theta          (spike_ge: v >= theta)
        count  n = floor((v - 1) / theta) where s   (spike_ge: floor(v / theta); multi_spike)
               n = s                                (one spike)
        reset  zero: v = 0 where s;  subtract: v = v - n * theta;  *-next: v as it is (the
               next step resets its integral, :func:`lif_step`)

    ``n`` counts how often theta can be taken from v with the rule still holding before each
    take: ``v - (n - 1) theta > theta`` (``>=``), so subtracting ``n theta`` leaves
    ``0 <= v < theta`` (``>=``) or ``0 < v <= theta`` (``>``). Multi-spike needs theta >= 1
    (constraint ``multi-spike``). Returns (spikes: bool, or the counts for multi-spike; v)."""
    s = _fires(v, theta, params.spike_ge)
    if params.multi_spike:
        num = v if params.spike_ge else v - 1
        n = torch.div(num, theta, rounding_mode="floor") * s  # exact: integer floor division
        return n, (v * ~s if params.reset == "zero" else v - n * theta)
    if params.reset == "zero":
        return s, v * ~s
    if params.reset == "subtract":
        return s, v - theta * s
    return s, v


# ---------------------------------------------------------------------------------------------
# The same step, specialised: float32 state, no current memory, no u wrap (proven by bounds).


@dataclass(frozen=True)
class LifF32Params:
    """Constants of :func:`lif_step_f32` for one population.

    ``threshold`` is ``vth << 6``. The v decay ``rtz(v * f / 4096)``, ``f = 4096 - dv``, is a
    single truncating division by ``divisor = 4096 / f`` when that is a power of two (for
    example dv = 2048), else the split form with ``factor = f`` (a scalar or per-channel
    tensor); ``divisor = 1`` and ``factor = None`` mean no decay (dv = 0).
    """

    threshold: float
    divisor: float = 1.0
    factor: torch.Tensor | None = None
    clip_v: bool = True
    spike_ge: bool = False  # fire on v >= threshold

    @staticmethod
    def from_lif(params: LifParams) -> LifF32Params:
        dv = torch.as_tensor(params.dv, dtype=torch.float64).reshape(-1)
        f = DECAY_UNIT - dv
        divisor, factor = 1.0, None
        if params.decay_v and bool((f == f[0]).all()) and int(f[0]) & (int(f[0]) - 1) == 0:
            divisor = _UNIT_F / float(f[0])
        elif params.decay_v:
            factor = (DECAY_UNIT - params.dv).to(torch.float32)
        return LifF32Params(float(params.vth << 6), divisor, factor, params.clip_v,
                            params.spike_ge)


def decay_f32(v: torch.Tensor, p: LifF32Params,
              scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``rtz(v * (4096 - dv) / 4096)`` on float32 integers ``|v| <= 2^23 - 1``, exactly, in place.

    Power-of-two ``4096 / f``: one exact division, truncated. Otherwise ``v = 4096 hi + lo``
    (hi, lo truncated, same sign as v) and ``rtz(lo * f / 4096) + hi * f``: every product is
    below 2^24, so exact; both terms share v's sign, so the sum is the truncated quotient.
    ``scratch``: two float32 tensors shaped like v for hi and lo (else allocated).
    """
    if p.factor is None:
        return v if p.divisor == 1.0 else v.div_(p.divisor, rounding_mode="trunc")
    hi, lo = scratch if scratch is not None else (torch.empty_like(v), torch.empty_like(v))
    torch.div(v, _UNIT_F, rounding_mode="trunc", out=hi)
    torch.sub(v, hi, alpha=_UNIT_F, out=lo)
    lo.mul_(p.factor).div_(_UNIT_F, rounding_mode="trunc")
    return torch.addcmul(lo, hi, p.factor, out=v)


def any_outside(x: torch.Tensor, low: int, high: int) -> bool:
    """Whether any value of ``x`` lies outside ``[low, high]`` (one min/max pass, no
    temporary: cheaper than masking when nothing is outside, the usual case)."""
    lo, hi = torch.aminmax(x)
    return bool(hi > high or lo < low)


def lif_step_f32(v: torch.Tensor, u: torch.Tensor, spikes: torch.Tensor, p: LifF32Params,
                 scratch: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`lif_step` for ``du = 4095`` and a u that cannot wrap, on float32 integers.

    ``u = (a << 6) + bias`` for this step (the caller folds the bias in; with du = 4095 there is
    no current memory, so u is a function of this step's input only)::

        v = clip(rtz(v * (4096 - dv) / 4096) + u, -(2^23 - 1), 2^23 - 1)   (only if clip_v)
        s = v > (vth << 6)  (spike_ge: >=);   v = 0 where s

    Exact when ``|u| < 2^23`` (then every intermediate is an integer below 2^24). For speed ``v``
    is updated in place and the float 0/1 spikes are written into ``spikes``; returns the new v
    and the per-sample saturation counts (None when clipping is off). ``scratch``: see
    :func:`decay_f32`.
    """
    v = decay_f32(v, p, scratch).add_(u)
    sat = None
    # on CPU one min/max pass first: v rarely saturates, and counting and clamping nothing
    # costs three passes and two allocations (on CUDA the test would stall the stream)
    if p.clip_v and (v.device.type != "cpu" or any_outside(v, -V_MAX, V_MAX)):
        sat = (v.abs() > V_MAX).sum(tuple(range(1, v.dim())))  # any layout: no copy
        v.clamp_(-V_MAX, V_MAX)
    (torch.ge if p.spike_ge else torch.gt)(v, p.threshold, out=spikes)
    return v.addcmul_(v, spikes, value=-1.0), sat  # v - v * s: exact, v or 0
