"""Float building blocks of the NIR operation table (:mod:`.nir_ops`): size pairs, parameter
tensors, the channel-diagonal conv, and the neuron steps.

Neuron steps are pure functions in Norse's style, ``step(state, x, params) -> (out, state)``,
built on the one integrate-and-fire equation of :mod:`dalif_deploy.neurons.protocol` (``integrate``,
``fire``): parameters are precomputed once (:func:`leaky`, :func:`integrator`, :func:`firing`),
the state is passed in and returned explicitly, and ``state = None`` is the zero state. They
compute the
forward-Euler form ``v' = decay v + gain x + leak`` of ``tau dv/dt = v_leak - v + r x``
(``decay = 1 - dt/tau``, ``gain = dt r / tau``, ``leak = dt v_leak / tau``, in float64, cast
once), which with dt = 1 and our export is the DA-LIF ``V = beta H + alpha X`` in the same
operation order.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import nir
import numpy as np
import torch

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.limits import DECAY_MAX, DECAY_UNIT
from dalif_deploy.fixedpoint.program import RESET_MODES
from dalif_deploy.neurons.protocol import fire, float_bits, integrate

Pair = tuple[int, int]


def int_pair(v: Any, what: str, node: str) -> Pair:
    """A NIR size parameter (an int or a pair, e.g. a stride) as ``(y, x)``; anything else (None,
    three entries, fractions) is a DaLifError naming ``node``, never cut or rounded silently."""
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2 or not np.all(np.isfinite(a)) or np.any(a != np.rint(a)):
        raise DaLifError(f"node {node}: {what} must be an int or a pair of ints, got {v!r}")
    return int(a[0]), int(a[1])


def spike_rule(node: nir.NIRNode) -> str:
    """``">="`` when the node's metadata says so (our DA-LIF export), else NIR's ``">"``."""
    return ">=" if str((node.metadata or {}).get("spike_condition", ">")) == ">=" else ">"


def reset_mode(node: nir.NIRNode) -> str:
    """The node's ``reset_mode`` metadata (one of
    :data:`~dalif_deploy.fixedpoint.program.RESET_MODES`:
    our export's, or what ``--from``/``--reset`` stated, :mod:`.nir_conventions`), else NIR's
    reset to ``v_reset`` in the spike's step (``zero``)."""
    mode = str((node.metadata or {}).get("reset_mode", "zero"))
    if mode not in RESET_MODES:
        raise DaLifError(f"node metadata reset_mode {mode!r}: choose one of {list(RESET_MODES)}")
    return mode


def multi_spike(node: nir.NIRNode) -> bool:
    """Whether the node sends spike counts (metadata ``multi_spike``; NIR: one spike)."""
    return bool((node.metadata or {}).get("multi_spike", False))


def f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def tensor(a: Any, dtype: torch.dtype) -> torch.Tensor:
    """``a`` in ``dtype`` on the default device (``with torch.device(...)`` sets it: a
    :class:`~dalif_deploy.converters.nir_to_torch.GraphRunner` compiles its ops in one)."""
    return torch.as_tensor(f64(a), device=torch.get_default_device()).to(dtype)


def neuron_param(a: Any, dtype: torch.dtype) -> torch.Tensor:
    """A neuron parameter in ``dtype`` at its smallest broadcast shape: one value (``()``)
    where every neuron's is bit for bit the same, one per channel (``(C, 1, ...)``) where each
    channel's are, else as given. Every neuron sees the same value as before, so each step's
    arithmetic is unchanged; a step reads a scalar instead of another layer-sized tensor.
    The shape is chosen on the host; the result goes to the default device, as :func:`tensor`."""
    host = torch.as_tensor(f64(a), device="cpu").to(dtype)
    return _smallest_broadcast(host).to(torch.get_default_device())


def _smallest_broadcast(t: torch.Tensor) -> torch.Tensor:
    if t.numel() <= 1 or not t.is_floating_point():
        return t
    bits = float_bits(t)
    flat = bits.reshape(-1)
    if bool((flat == flat[0]).all()):
        return t.reshape(-1)[0].clone()
    if t.dim() >= 2:
        head = bits.reshape(t.shape[0], -1)
        if bool((head == head[:, :1]).all()):
            return t.reshape(t.shape[0], -1)[:, 0].reshape(t.shape[0], *[1] * (t.dim() - 1))
    return t


def channelwise_conv(channels: int, kernel: Any, stride: Any, padding: Any, value: np.ndarray,
                     in_hw: tuple[int, ...]) -> nir.Conv2d:
    """A per-channel linear map (a pooling window or a scaling) as a dense Conv2d with a diagonal
    channel matrix (Norse builds ``Conv2d(in_channels=weight.shape[1], groups=g)``, which fails
    for depthwise weights)."""
    k = np.atleast_1d(np.asarray(kernel)).astype(int)
    k = (int(k[0]), int(k[0])) if k.size == 1 else (int(k[0]), int(k[1]))
    w = np.zeros((channels, channels, *k))
    w[np.arange(channels), np.arange(channels)] = f64(value).reshape(-1, 1, 1)
    return nir.Conv2d(input_shape=in_hw, weight=w, stride=tuple(np.broadcast_to(stride, 2)),
                      padding=tuple(np.broadcast_to(padding, 2)), dilation=(1, 1),
                      groups=1, bias=np.zeros(channels))


class Leaky(NamedTuple):
    """Euler coefficients of ``tau dv/dt = v_leak - v + r x``: ``v' = decay v + gain x +
    leak`` (``leak`` None when 0)."""

    decay: torch.Tensor
    gain: torch.Tensor
    leak: torch.Tensor | None


class Fire(NamedTuple):
    """Spike when ``v > v_threshold`` (``v >= v_threshold`` if ``ge``), then reset by ``reset``
    (``zero``: ``v := v_reset``; the other modes: :func:`fire_after`); ``multi``: send the
    spike count."""

    v_threshold: torch.Tensor
    v_reset: torch.Tensor
    ge: bool
    reset: str = "zero"
    multi: bool = False


class SpikingParams(NamedTuple):
    """A membrane and its firing rule (LIF, IF)."""

    membrane: Leaky
    fire: Fire


class CubaParams(NamedTuple):
    """CubaLIF: a synaptic current filter before a spiking membrane."""

    synapse: Leaky
    membrane: Leaky
    fire: Fire


def leaky(tau: Any, r: Any, v_leak: Any, dt: float, dtype: torch.dtype) -> Leaky:
    """``decay = 1 - dt/tau``, ``gain = dt r / tau``, ``leak = dt v_leak / tau`` (float64)."""
    k = dt / f64(tau)
    vl = k * f64(v_leak)
    return Leaky(neuron_param(1.0 - k, dtype), neuron_param(k * f64(r), dtype),
                 neuron_param(vl, dtype) if np.any(vl != 0) else None)


def integrator(r: Any, dt: float, dtype: torch.dtype) -> Leaky:
    """``dv/dt = r x``: ``decay = 1``, ``gain = dt r``."""
    return Leaky(neuron_param(np.ones_like(f64(r)), dtype), neuron_param(dt * f64(r), dtype),
                 None)


def firing(node: nir.NIRNode, dtype: torch.dtype) -> Fire:
    """The node's threshold, reset (0 when absent) and spike rule."""
    reset = getattr(node, "v_reset", None)
    return Fire(neuron_param(node.v_threshold, dtype),
                neuron_param(np.zeros_like(f64(node.v_threshold)) if reset is None else reset,
                             dtype),
                spike_rule(node) == ">=", reset_mode(node), multi_spike(node))


def fire_after(v: torch.Tensor, before: torch.Tensor | None, p: Fire
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fire the integrated potential ``v`` of a neuron whose previous potential was ``before``
    (None: the first step). The float form of the program's firing (docs/DESIGN.md section 4,
    :func:`dalif_deploy.fixedpoint.arithmetic.fire_and_reset`)::

        *-next   v := v (1 - S_prev)  or  v - th S_prev,  S_prev = [before > th] (or >=)
        S = [v > th] (or >=);  multi: n = ceil(v / th) - 1 (>=: floor(v / th)) where S
        zero: v := v_reset where S;  subtract: v - n th;  *-next: v as it is

    Returns ``(S or n, v')``."""
    th = p.v_threshold
    if p.reset.endswith("-next") and before is not None:
        fb = (before >= th if p.ge else before > th).to(v.dtype)
        v = v * (1 - fb) if p.reset == "zero-next" else v - th * fb
    if p.reset == "zero" and not p.multi:
        return fire(v, th, p.v_reset, inclusive=p.ge)
    s = (v >= th if p.ge else v > th).to(v.dtype)
    n = s * (torch.floor(v / th) if p.ge else torch.ceil(v / th) - 1) if p.multi else s
    if p.reset == "zero":
        return n, torch.where(s != 0, p.v_reset, v)
    return n, (v - th * n if p.reset == "subtract" else v)


def lif_step(state: torch.Tensor | None, x: torch.Tensor, p: SpikingParams
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """LIF/IF: ``V = decay v + gain x (+ leak)``, ``S = V > th`` (or ``>=``), ``v' = v_reset
    where S else V`` (other resets and spike counts: :func:`fire_after`); returns ``(S, v')``."""
    return fire_after(integrate(x, state, *p.membrane), state, p.fire)


def li_step(state: torch.Tensor | None, x: torch.Tensor, p: Leaky
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """LI/I: ``v' = decay v + gain x (+ leak)``; the output is ``v'``."""
    v = integrate(x, state, *p)
    return v, v


def cuba_lif_step(state: tuple | None, x: torch.Tensor, p: CubaParams
                  ) -> tuple[torch.Tensor, tuple]:
    """CubaLIF: the current ``i`` integrates ``x``, the membrane integrates the new ``i``."""
    i, v = state if state is not None else (None, None)
    i = integrate(x, i, *p.synapse)
    s, v = fire_after(integrate(i, v, *p.membrane), v, p.fire)
    return s, (i, v)


def _layer_array(kind: str, name: str, shape: tuple[int, ...]):
    def arr(v: Any, what: str) -> np.ndarray:
        a = f64(v)
        if a.size == 1:
            a = np.full(shape, float(a.reshape(-1)[0]))
        if a.size != int(np.prod(shape)):
            raise DaLifError(f"{kind} {name}: {what} has {a.size} values, the layer {shape}")
        if not np.all(np.isfinite(a)):
            raise DaLifError(f"{kind} {name}: {what} is not finite")
        return a.reshape(shape)
    return arr


def _firing_reading(kind: str, name: str, node: nir.NIRNode, arr) -> float:
    """The one positive threshold; v_leak and v_reset must be 0 (Loihi's CUBA LIF resets v to
    0 and has no leak target)."""
    for what in ("v_leak", "v_reset"):
        v = getattr(node, what, None)
        if v is not None and np.any(arr(v, what) != 0):
            raise DaLifError(f"{kind} {name}: {what} must be 0 for Loihi's CUBA LIF (fold it "
                             "into the bias before export)")
    vth = arr(node.v_threshold, "v_threshold")
    if np.ptp(vth) != 0 or vth.reshape(-1)[0] <= 0:
        raise DaLifError(f"{kind} {name}: v_threshold must be one positive value per layer")
    return float(vth.reshape(-1)[0])


def _per_channel(kind: str, name: str, what: str, a: np.ndarray, shape: tuple[int, ...]
                 ) -> np.ndarray:
    per_chan = a.reshape(shape[0], -1)
    if np.any(np.ptp(per_chan, axis=1) > 1e-12):
        raise DaLifError(f"{kind} {name}: {what} varies within a channel; Loihi decays are per "
                         "population (or per channel)")
    return per_chan[:, 0]


def _reading(node: nir.NIRNode, beta_c: np.ndarray, alpha: np.ndarray, v_th: float, cond: str,
             du: int = DECAY_MAX, bias_gain: np.ndarray | None = None) -> dict[str, Any]:
    return {"beta_c": beta_c, "alpha": alpha, "v_th": v_th, "cond": cond, "du": int(du),
            "bias_gain": alpha if bias_gain is None else bias_gain,
            "reset": reset_mode(node), "multi": multi_spike(node)}


def lif_as_dalif(name: str, node: nir.LIF, shape: tuple[int, ...], dt: float) -> dict[str, Any]:
    """``beta = 1 - dt/tau`` (one per channel), ``alpha = r dt/tau``, the one threshold and
    the spike condition; checked against the node's alpha/beta metadata when present.

    The reading (all neuron readings): ``beta_c`` per channel, ``alpha`` (the gain from the
    input x into v, folded into the weights), ``v_th``, ``cond`` (``>`` or ``>=``), ``du``
    (Loihi's current decay; 4095 = no current memory), ``bias_gain`` (the gain from a
    constant input into v per step, at its steady value, for a bias into v; with current
    memory, du < 4095, a bias into u takes the weights' ``alpha`` and ramps in as the input
    does), ``reset`` and ``multi`` (the firing)."""
    arr = _layer_array("LIF", name, shape)
    tau, r = arr(node.tau, "tau"), arr(node.r, "r")
    vth = _firing_reading("LIF", name, node, arr)
    if np.any(tau <= 0):
        raise DaLifError(f"LIF {name}: tau must be positive")
    beta, alpha = 1.0 - dt / tau, r * dt / tau
    md = node.metadata or {}
    for key, val in (("beta", beta), ("alpha", alpha)):
        if key not in md:
            continue
        m = np.asarray(md[key], float).reshape(-1)  # one value, or one per channel
        if m.size not in (1, shape[0]):
            raise DaLifError(f"LIF {name}: metadata {key} has {m.size} values, the layer "
                             f"{shape[0]} channels; the graph is inconsistent")
        m = m.reshape(-1, *([1] * (len(shape) - 1)))
        if not np.allclose(np.broadcast_to(m, shape), val, rtol=1e-5, atol=1e-7):
            raise DaLifError(f"LIF {name}: metadata {key} disagrees with tau/r at dt={dt}; "
                             "the graph is inconsistent (wrong dt?)")
    cond = str(md.get("spike_condition", ">=" if "alpha" in md else ">"))
    if cond not in (">=", ">"):
        raise DaLifError(f"LIF {name}: unknown spike condition {cond!r}")
    return _reading(node, _per_channel("LIF", name, "beta", beta, shape), alpha, vth, cond)


def if_as_dalif(name: str, node: nir.IF, shape: tuple[int, ...], dt: float) -> dict[str, Any]:
    """IF ``v = v + dt r x`` is LIF without leak: ``beta = 1`` (dv = 0, exact), ``alpha = dt
    r``, du = 4095; spikes on NIR's ``>`` (or the node's ``spike_condition``)."""
    arr = _layer_array("IF", name, shape)
    r = arr(node.r, "r")
    vth = _firing_reading("IF", name, node, arr)
    return _reading(node, np.ones(shape[0]), dt * r, vth, spike_rule(node))


def cuba_as_dalif(name: str, node: nir.CubaLIF, shape: tuple[int, ...], dt: float
                  ) -> dict[str, Any]:
    """CubaLIF onto Loihi's CUBA neuron. NIR (Euler, dt)::

        i' = (1 - ks) i + ks w_in x,   v' = (1 - km) v + km r i',   ks = dt/tau_syn, km = dt/tau_mem

    With ``U = lambda km r i`` (lambda volts -> integer v) this is Loihi's ``u' = u (4096 -
    (du + 1))/4096 + (a << 6)``, ``v' = v (4096 - dv)/4096 + u'`` for ``du + 1 = 4096 ks``
    (``du = round(4096 ks) - 1``; one du per layer), ``dv = round(4096 km)`` and ``a << 6 =
    lambda alpha W x`` with ``alpha = km r ks w_in`` folded into the weights. A constant input
    b (a bias) enters i as any input does: with ks < 1 it becomes a bias into u with the
    weights' gain ``alpha``, ramping in over ~tau_syn/dt steps as in NIR;
    with ks = 1 (no current memory) a v bias with ``bias_gain = km r w_in``, the same thing.
    (``bias_gain`` stays the steady-current reading for a target whose bias can enter only v,
    netx's CUBA neuron, where the ramp-in is dropped.)"""
    arr = _layer_array("CubaLIF", name, shape)
    ts, tm = arr(node.tau_syn, "tau_syn"), arr(node.tau_mem, "tau_mem")
    r, w_in = arr(node.r, "r"), arr(node.w_in, "w_in")
    vth = _firing_reading("CubaLIF", name, node, arr)
    if np.any(ts <= 0) or np.any(tm <= 0):
        raise DaLifError(f"CubaLIF {name}: tau_syn and tau_mem must be positive")
    ks, km = dt / ts, dt / tm
    if np.ptp(ks) > 1e-12:
        raise DaLifError(f"CubaLIF {name}: tau_syn varies within the layer; Loihi's current "
                         "decay du is one per population (split the layer)")
    du1 = round(DECAY_UNIT * float(ks.reshape(-1)[0]))
    if not 1 <= du1 <= DECAY_UNIT:
        raise DaLifError(f"CubaLIF {name}: dt/tau_syn = {float(ks.reshape(-1)[0]):.3g} gives "
                         f"du + 1 = {du1}, outside [1, {DECAY_UNIT}]; check dt (--dt/--from)")
    return _reading(node, _per_channel("CubaLIF", name, "tau_mem", 1.0 - km, shape),
                    km * r * ks * w_in, vth, spike_rule(node), du1 - 1, km * r * w_in)
