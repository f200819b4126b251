"""The neuron protocol, and what every spiking neuron model shares.

A neuron model (one per file in :mod:`dalif_deploy.neurons`, registered there) is described by
a :class:`NeuronModel`:

* its parameters and its state are explicit values (frozen dataclasses of tensors);
* :meth:`NeuronModel.step` is a pure function ``step(state, x, params) -> (spikes, state)``;
* :meth:`NeuronModel.to_nir` / :meth:`NeuronModel.from_nir` map its parameters to a NIR node
  and back;
* :attr:`NeuronModel.module_type` is its ``nn.Module``, a thin :class:`NeuronModule` around the
  pure step, called ``s = layer(x)`` inside networks (one time step per call).

Shared here: the integrate-and-fire equation every neuron model is built from
(:func:`integrate`, :func:`fire`; also used for NIR's LIF/LI/CubaLIF nodes by the float NIR
interpreter), the Heaviside spike with surrogate gradients, the decay parametrisations, the
membrane state every model here carries (:class:`MembraneState`) and the NIR ``LIF`` helpers
the models' mappings are written with (:func:`lif_node`, :func:`read_lif_node`).
"""

from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from dalif_deploy.base.errors import DaLifError

# ---------------------------------------------------------------------------------------------
# Parametrisations: raw parameter -> effective decay, and the inverse used for initialisation.


@dataclass(frozen=True)
class Parametrization:
    """A named map from a raw learnable parameter to an effective decay."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[float], float]


PARAMETRIZATIONS: dict[str, Parametrization] = {
    # decay = tanh(w): the paper's choice (it beat sigmoid in its ablation).
    "tanh": Parametrization("tanh", torch.tanh, math.atanh),
    # decay = 1 / (1 + exp(-w))
    "sigmoid": Parametrization("sigmoid", torch.sigmoid, lambda d: math.log(d / (1.0 - d))),
}


def get_parametrization(name: str) -> Parametrization:
    try:
        return PARAMETRIZATIONS[name]
    except KeyError:
        raise DaLifError(
            f"unknown decay parametrisation {name!r}; choose one of {sorted(PARAMETRIZATIONS)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Surrogate gradients: Heaviside forward (fires on >= 0), smooth derivative backward.


def _atan_grad(x: torch.Tensor, width: float) -> torch.Tensor:
    # d/dx [atan(pi/2 * width * x) / pi + 1/2]
    return (width / 2) / (1 + (math.pi / 2 * width * x) ** 2)


def _sigmoid_grad(x: torch.Tensor, width: float) -> torch.Tensor:
    s = torch.sigmoid(width * x)
    return width * s * (1 - s)


def _rectangular_grad(x: torch.Tensor, width: float) -> torch.Tensor:
    return (x.abs() < 0.5 / width).to(x.dtype) * width


SURROGATES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "atan": _atan_grad,
    "sigmoid": _sigmoid_grad,
    "rectangular": _rectangular_grad,
}


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, name: str, width: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.name, ctx.width = name, width
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.name](x, ctx.width), None, None


def spike(x: torch.Tensor, surrogate: str = "atan", width: float = 2.0) -> torch.Tensor:
    """Heaviside step ``x >= 0`` with the named surrogate gradient of the given width."""
    _check_surrogate(surrogate)
    return _SpikeFn.apply(x, surrogate, width)


def _check_surrogate(name: str) -> None:
    if name not in SURROGATES:
        raise DaLifError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")


# ---------------------------------------------------------------------------------------------
# The integrate-and-fire equation (one place; neuron models and the NIR interpreter use it).


def integrate(x: torch.Tensor, h: torch.Tensor | None, decay: torch.Tensor | float,
              gain: torch.Tensor | float, leak: torch.Tensor | None = None) -> torch.Tensor:
    """Leaky integration ``V = decay * H + gain * X (+ leak)``; ``H = None`` (before the first
    step) means ``H = 0`` and gives ``V = gain * X (+ leak)``."""
    v = gain * x
    if h is not None:
        v = _add(v, decay * h)
    return v if leak is None else _add(v, leak)


def _in_place_ok() -> bool:
    """Eager inference: no autograd, and no tracer (an ONNX export records the operations
    themselves, which must stay the autograd path's)."""
    onnx = sys.modules.get("torch.onnx")  # not imported: no export under way (and no import)
    return not (torch.is_grad_enabled() or torch.jit.is_tracing()
                or (onnx is not None and onnx.is_in_onnx_export()))


def _add(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``a + b``; without autograd into ``a`` itself when ``a`` is a fresh result that already
    has the sum's shape and dtype (the same IEEE sums: fewer fresh tensors to fault in, which
    is a quarter of an inference step's time at paper scale)."""
    if not _in_place_ok() or not isinstance(b, torch.Tensor) or \
            torch.broadcast_shapes(a.shape, b.shape) != a.shape or \
            torch.result_type(a, b) != a.dtype:
        return a + b
    return a.add_(b)


#: how a neuron model resets after a spike (``train --reset``): to 0, or by subtracting the
#: threshold (``H = V - v_th * S``), both in the spike's step
RESETS = ("zero", "subtract")


def fire(v: torch.Tensor, threshold: torch.Tensor | float, reset: torch.Tensor | None = None,
         inclusive: bool = True, surrogate: str = "atan", width: float = 2.0,
         subtract: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold and reset: returns ``(S, H)``.

    ``S = [V >= threshold]`` (``inclusive``, with the named surrogate gradient) or
    ``S = [V > threshold]``. ``H = V * (1 - S)`` (reset to 0; the gradient flows through S)
    when ``reset`` is None, else ``H = reset where S else V``; ``subtract``: ``H = V -
    threshold * S`` (the reset by subtraction, gradient through S).
    """
    if inclusive and not subtract and _in_place_ok():
        # inference: the same values (the forward of spike(v - threshold), then v * (1 - s) or
        # the reset where s), computed in place: two or three fresh tensors instead of five
        _check_surrogate(surrogate)
        s = (v - threshold).ge_(0)
        if reset is None or _zero_reset_is_a_product(v, s, threshold, reset):
            return s, torch.rsub(s, 1).mul_(v)
        return s, torch.where(s != 0, reset, v)
    s = spike(v - threshold, surrogate, width) if inclusive else (v > threshold).to(v.dtype)
    if subtract:
        return s, v - threshold * s
    h = v * (1 - s) if reset is None else torch.where(s != 0, reset, v)
    return s, h


def _zero_reset_is_a_product(v: torch.Tensor, s: torch.Tensor,
                             threshold: torch.Tensor | float, reset: torch.Tensor) -> bool:
    """Whether ``v * (1 - s)`` equals ``where(s, reset, v)`` bit for bit (dtype included): a
    reset of +0.0, a positive threshold (a spiking v is then positive, and v * 0 is +0.0) and
    no v of +inf (inf * 0 is NaN). The product is 8x faster than ``where`` here (NIR's LIF
    resets to its v_reset)."""
    if reset.numel() != 1 or not (reset.dtype == v.dtype == s.dtype) or v.numel() == 0 or \
            int(float_bits(reset).reshape(1)) != 0:
        return False
    positive = threshold > 0 if not isinstance(threshold, torch.Tensor) \
        else bool((threshold > 0).all())
    return positive and bool(v.max() < math.inf)  # NaN anywhere: False (where keeps it)


def float_bits(t: torch.Tensor) -> torch.Tensor:
    """A float tensor's bits as the same-sized integers (a view): equal exactly where the floats
    are the same value, -0.0 and NaNs told apart."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def per_channel(d: torch.Tensor, x: torch.Tensor, what: str = "neuron") -> torch.Tensor:
    """A parameter of shape ``()`` as is, or of shape ``(C,)`` viewed to broadcast against
    ``x = [B, C, ...]``."""
    if d.dim() == 0:
        return d
    if x.dim() < 2 or x.shape[1] != d.shape[0]:
        raise DaLifError(f"per-channel {what} with {d.shape[0]} channels got input of shape "
                         f"{tuple(x.shape)}; expected [B, {d.shape[0]}, ...]")
    return d.view(1, -1, *([1] * (x.dim() - 2)))


@dataclass(frozen=True)
class MembraneState:
    """The state of a one-membrane neuron (DA-LIF, PLIF, LIF). ``h``: the membrane after reset,
    carried to the next step (None before the first step, meaning 0). ``v``: the potential
    ``V`` of the last step, before threshold and reset (read only, e.g. to measure how close a
    layer came to its threshold)."""

    h: torch.Tensor | None = None
    v: torch.Tensor | None = None


@dataclass(frozen=True)
class RecurrentState:
    """The state of a recurrent neuron layer: its model's state (``inner``) and the spikes of
    its last step (None before the first step, meaning none). ``v`` is the inner state's, for
    readers of the last potential."""

    inner: Any = None
    spikes: torch.Tensor | None = None

    @property
    def v(self) -> torch.Tensor | None:
        return getattr(self.inner, "v", None)


def recurrent_step(model: NeuronModel, state: RecurrentState, x: torch.Tensor, params: Any,
                   w_rec: torch.Tensor) -> tuple[torch.Tensor, RecurrentState]:
    """One step of a recurrent layer: the model's step on ``x + W_rec S[t-1]`` (``S[-1] = 0``,
    docs/DESIGN.md section 3.1), so for DA-LIF ``V = beta H + alpha (X + W_rec S[t-1])``.
    ``x``: ``[B, n]``; ``w_rec``: ``[n, n]``."""
    if x.dim() != 2 or x.shape[1] != w_rec.shape[0]:
        raise DaLifError(f"a recurrent layer of {w_rec.shape[0]} neurons takes flat input "
                         f"[B, {w_rec.shape[0]}], got {list(x.shape)} (put it after a Linear)")
    if state.spikes is not None:
        x = x + state.spikes @ w_rec.T
    s, inner = model.step(model.init_state() if state.inner is None else state.inner, x, params)
    return s, RecurrentState(inner, s)


# ---------------------------------------------------------------------------------------------
# NIR LIF helpers: every model here is a nir.LIF at dt = 1 with v_leak = v_reset = 0.


def f64(t: torch.Tensor | float) -> np.ndarray:
    """A tensor or number as a float64 numpy array (a copy)."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().to(torch.float64).numpy().copy()
    return np.asarray(t, dtype=np.float64)


def meta_value(a: np.ndarray) -> float | np.ndarray:
    """Metadata value: a float for a scalar (HDF5 cannot compress 0-d arrays), else float64."""
    return float(a) if a.ndim == 0 else a


def full_shape(values: np.ndarray, shape: Sequence[int], model: str, name: str) -> np.ndarray:
    """A per-layer (``()``) or per-channel (``(C,)``, channel = dimension 0 of the neuron
    ``shape``) parameter broadcast to the full neuron shape."""
    shape = tuple(int(d) for d in shape)
    if values.ndim == 1:
        if not shape or shape[0] != values.shape[0]:
            raise DaLifError(f"{model} layer {name!r} has {values.shape[0]} channels but its "
                             f"input has shape {shape}")
        values = values.reshape((-1,) + (1,) * (len(shape) - 1))
    return values * np.ones(shape, dtype=np.float64)


def reduce_granularity(a: np.ndarray, per_channel: bool, what: str, name: str,
                       model: str) -> np.ndarray:
    """A full-shape array as one value (``()``) or one per channel (``(C,)``, dimension 0);
    DaLifError when it varies within a layer (or channel)."""
    flat = a.reshape(a.shape[0], -1) if per_channel and a.ndim else a.reshape(1, -1)
    if flat.size == 0 or not np.all(flat == flat[:, :1]):
        raise DaLifError(f"LIF node {name!r}: {what} varies within a "
                         f"{'channel' if per_channel else 'layer'}; {model} has one value per "
                         "layer" + (" or per channel" if per_channel or model != "LIF" else ""))
    return flat[:, 0] if per_channel else flat[0, 0]


def lif_node(tau: np.ndarray, r: np.ndarray, v_th: float, shape: Sequence[int],
             meta: dict[str, Any], reset: str = "zero") -> Any:
    """The ``nir.LIF`` (Euler, dt = 1, ``v_leak = v_reset = 0``, fires on ``>=``, hard reset
    or, with ``reset="subtract"``, a subtract reset stated in the metadata's ``reset_mode``)
    with full-shape ``tau`` and ``r``; ``meta`` adds the model's own entries."""
    import nir

    shape = tuple(int(d) for d in shape)
    how = ("hard reset to v_reset = 0 (H = V * (1 - S))" if reset == "zero"
           else "subtract reset (H = V - v_th * S)")
    md = {"dt": 1.0, "discretisation": "euler", "spike_condition": ">=", "reset": how,
          "reset_mode": reset, **meta}
    return nir.LIF(tau=tau, r=r, v_leak=np.zeros(shape), v_reset=np.zeros(shape),
                   v_threshold=np.full(shape, float(v_th)), metadata=md)


@dataclass(frozen=True)
class LifReading:
    """A ``nir.LIF`` read at dt = 1: ``k = 1/tau`` and ``r`` (full shape, float64), the one
    threshold, and whether its parameters are per channel."""

    k: np.ndarray
    r: np.ndarray
    v_th: float
    per_channel: bool
    reset: str = "zero"


def read_lif_node(node: Any, name: str, model: str) -> LifReading:
    """Check that ``node`` is a ``nir.LIF`` a one-membrane model can be (fires on ``>=``,
    ``v_leak = v_reset = 0``) and read it; per channel when its metadata says so (else when
    ``tau`` or ``r`` differ between channels)."""
    import nir

    if not isinstance(node, nir.LIF):
        raise DaLifError(f"node {name!r}: a {model} layer is a nir.LIF, not "
                         f"{type(node).__name__}")
    meta = node.metadata or {}
    if str(meta.get("spike_condition", ">=")) != ">=":
        raise DaLifError(f"LIF node {name!r} fires on {meta['spike_condition']}; {model} "
                         "fires on V >= v_th")
    for field in ("v_leak", "v_reset"):
        value = getattr(node, field, None)
        if value is not None and np.any(np.asarray(value) != 0):
            raise DaLifError(f"LIF node {name!r}: {field} != 0 has no {model} equivalent")
    k = 1.0 / np.asarray(node.tau, dtype=np.float64)
    r = np.asarray(node.r, dtype=np.float64) * np.ones_like(k)
    granularity = meta.get("granularity")
    if granularity is None:
        granularity = "layer" if np.all(k == k.flat[0]) and np.all(r == r.flat[0]) else "channel"
    th = reduce_granularity(np.asarray(node.v_threshold, dtype=np.float64), False,
                            "v_threshold", name, model)
    reset = str(meta.get("reset_mode", "zero"))
    if reset not in RESETS:
        raise DaLifError(f"LIF node {name!r} resets by {reset!r}; {model} resets in the "
                         f"spike's step by {' or '.join(RESETS)}")
    return LifReading(k, r, float(th), str(granularity) == "channel", reset)


# ---------------------------------------------------------------------------------------------
# The protocol.


class NeuronModel(ABC):
    """A neuron model: explicit parameters and state, a pure step, its NIR mapping.

    Implementations are stateless singletons registered in :data:`dalif_deploy.neurons.NEURONS`
    under :attr:`name` (also written to NIR node metadata as ``neuron_model``).
    """

    name: ClassVar[str]
    #: the name a zoo config and ``train --neuron`` use (``"dalif"``, ``"plif"``, ``"lif"``)
    key: ClassVar[str]
    #: the nn.Module of this model (a :class:`NeuronModule` subclass)
    module_type: ClassVar[type[NeuronModule]]
    # its config settings (passed to module_type besides ``channels``) are declared in its
    # registry entry (dalif_deploy.neurons.SPECS), readable without torch

    @abstractmethod
    def init_state(self) -> Any:
        """The state before the first step (all zero)."""

    @abstractmethod
    def step(self, state: Any, x: torch.Tensor, params: Any) -> tuple[torch.Tensor, Any]:
        """One time step ``(state, x, params) -> (spikes, state)``; pure (no side effect)."""

    @abstractmethod
    def to_nir(self, params: Any, shape: Sequence[int], name: str = "") -> Any:
        """The NIR node of a layer with these parameters and neuron shape (without batch)."""

    @abstractmethod
    def from_nir(self, node: Any, name: str = "") -> Any:
        """The parameters of a NIR node written by :meth:`to_nir`; DaLifError if the node
        cannot be expressed by this model."""


_UNSET = object()


class NeuronModule(nn.Module):
    """The ``nn.Module`` of a neuron model: a thin wrapper around :meth:`NeuronModel.step`.

    Calling conventions:

    * ``layer(x, state)`` - explicit state: returns ``(spikes, state)`` and changes nothing in
      the module; ``state=None`` is the model's initial state.
    * ``layer(x)`` - the single-step call networks make (``s = self.lif(x)``): continues from
      :attr:`state` and stores the new state there; :meth:`reset_state` clears it (and
      :func:`dalif_deploy.neurons.network_step` runs a whole network with explicit state).
    * ``layer.forward_sequence(x_seq)`` - all of ``[T, B, ...]`` from the initial state.

    Public attributes: :attr:`state` (the state a single-step call continues from, None =
    initial) and :attr:`fixed_params` (when set, used instead of :meth:`effective_params`, e.g.
    by an exporter that freezes the parameters into constants).
    """

    neuron: ClassVar[NeuronModel]

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = None
        self.fixed_params: Any = None
        self.w_rec: nn.Parameter | None = None  # a recurrent layer's weight (make_recurrent)

    def make_recurrent(self, size: int, std: float = 0.0) -> None:
        """Give the layer (of ``size`` neurons, flat input ``[B, size]``) a learnable recurrent
        weight ``W_rec [size, size]`` (normal, ``std``): its input becomes ``X + W_rec S[t-1]``
        (:func:`recurrent_step`) and its state a :class:`RecurrentState`; export writes the loop
        ``name -> name.w_rec -> name`` (docs/DESIGN.md section 3.1)."""
        self.w_rec = nn.Parameter(torch.randn(size, size) * std)

    def init_layer(self, channels: int | None, granularity: str, v_th: float, surrogate: str,
                   surrogate_width: float, reset: str = "zero") -> tuple[int, ...]:
        """Check and set the settings every neuron layer has (``channels``, ``granularity``,
        ``v_th``, ``surrogate``, ``surrogate_width``, ``reset``); returns the shape of a
        learnable parameter: ``()`` per layer, ``(channels,)`` per channel."""
        if reset not in RESETS:
            raise DaLifError(f"reset must be one of {list(RESETS)}, not {reset!r}")
        self.reset = reset
        if granularity not in ("layer", "channel"):
            raise DaLifError(f"granularity must be 'layer' or 'channel', not {granularity!r}")
        if granularity == "channel" and not channels:
            raise DaLifError("granularity='channel' needs the number of channels")
        if surrogate not in SURROGATES:
            raise DaLifError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
        self.channels = channels
        self.granularity = granularity
        self.v_th = float(v_th)
        self.surrogate = surrogate
        self.surrogate_width = float(surrogate_width)
        return (channels,) if granularity == "channel" and channels else ()

    def effective_params(self) -> Any:
        """The model's parameters computed from this module's learnable ones."""
        raise NotImplementedError(f"{type(self).__name__} must define effective_params()")

    def params(self) -> Any:
        """The parameters a call uses: :attr:`fixed_params` if set, else the effective ones."""
        return self.fixed_params if self.fixed_params is not None else self.effective_params()

    def forward(self, x: torch.Tensor, state: Any = _UNSET) -> Any:
        explicit = state is not _UNSET
        prev = state if explicit else self.state
        if self.w_rec is not None:
            s, new = recurrent_step(self.neuron, prev or RecurrentState(), x, self.params(),
                                    self.w_rec)
        else:
            s, new = self.neuron.step(self.neuron.init_state() if prev is None else prev, x,
                                      self.params())
        if explicit:
            return s, new
        self.state = new
        return s

    def forward_sequence(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Multi-step over ``[T, B, ...]``; returns spikes ``[T, B, ...]`` (state starts at 0)."""
        state, out = None, []
        for x in x_seq:
            s, state = self.forward(x, state)
            out.append(s)
        return torch.stack(out)

    def reset_state(self) -> None:
        self.state = None
