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
interpreter), the Heaviside spike with surrogate gradients, and the decay parametrisations.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import DaLifError

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
    if surrogate not in SURROGATES:
        raise DaLifError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
    return _SpikeFn.apply(x, surrogate, width)


# ---------------------------------------------------------------------------------------------
# The integrate-and-fire equation (one place; neuron models and the NIR interpreter use it).


def integrate(x: torch.Tensor, h: torch.Tensor | None, decay: torch.Tensor | float,
              gain: torch.Tensor | float, leak: torch.Tensor | None = None) -> torch.Tensor:
    """Leaky integration ``V = decay * H + gain * X (+ leak)``; ``H = None`` (before the first
    step) means ``H = 0`` and gives ``V = gain * X (+ leak)``."""
    v = gain * x if h is None else decay * h + gain * x
    return v if leak is None else v + leak


def fire(v: torch.Tensor, threshold: torch.Tensor | float, reset: torch.Tensor | None = None,
         inclusive: bool = True, surrogate: str = "atan", width: float = 2.0
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold and hard reset: returns ``(S, H)``.

    ``S = [V >= threshold]`` (``inclusive``, with the named surrogate gradient) or
    ``S = [V > threshold]``. ``H = V * (1 - S)`` (reset to 0; the gradient flows through S)
    when ``reset`` is None, else ``H = reset where S else V``.
    """
    s = spike(v - threshold, surrogate, width) if inclusive else (v > threshold).to(v.dtype)
    h = v * (1 - s) if reset is None else torch.where(s != 0, reset, v)
    return s, h


def per_channel(d: torch.Tensor, x: torch.Tensor, what: str = "neuron") -> torch.Tensor:
    """A parameter of shape ``()`` as is, or of shape ``(C,)`` viewed to broadcast against
    ``x = [B, C, ...]``."""
    if d.dim() == 0:
        return d
    if x.dim() < 2 or x.shape[1] != d.shape[0]:
        raise DaLifError(f"per-channel {what} with {d.shape[0]} channels got input of shape "
                         f"{tuple(x.shape)}; expected [B, {d.shape[0]}, ...]")
    return d.view(1, -1, *([1] * (x.dim() - 2)))


# ---------------------------------------------------------------------------------------------
# The protocol.


class NeuronModel(ABC):
    """A neuron model: explicit parameters and state, a pure step, its NIR mapping.

    Implementations are stateless singletons registered in :data:`dalif_deploy.neurons.NEURONS`
    under :attr:`name` (also written to NIR node metadata as ``neuron_model``).
    """

    name: ClassVar[str]
    #: the nn.Module of this model (a :class:`NeuronModule` subclass)
    module_type: ClassVar[type[NeuronModule]]

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

    def effective_params(self) -> Any:
        """The model's parameters computed from this module's learnable ones."""
        raise NotImplementedError(f"{type(self).__name__} must define effective_params()")

    def params(self) -> Any:
        """The parameters a call uses: :attr:`fixed_params` if set, else the effective ones."""
        return self.fixed_params if self.fixed_params is not None else self.effective_params()

    def forward(self, x: torch.Tensor, state: Any = _UNSET) -> Any:
        explicit = state is not _UNSET
        prev = state if explicit else self.state
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
