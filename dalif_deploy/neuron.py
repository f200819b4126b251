"""The DA-LIF neuron (Dual Adaptive LIF) in PyTorch: a functional core and a thin module.

Float semantics (DESIGN.md section 2, dt = 1)::

    V[t] = beta * H[t-1] + alpha * X[t]          H[-1] = 0
    S[t] = 1 if V[t] >= v_th else 0               (surrogate gradient when training)
    H[t] = V[t] * (1 - S[t])                      (hard reset to 0)

``alpha`` (spatial decay) and ``beta`` (temporal decay) are learnable, per layer (the paper's
granularity) or per channel (our extension). They are produced from raw parameters by a named
parametrisation (``tanh`` by default, ``sigmoid`` available); checkpoints store the raw
parameters, everything after export uses only the effective values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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
# Functional core.


def dalif_step(
    x: torch.Tensor,
    h: torch.Tensor | None,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    v_th: float,
    surrogate: str = "atan",
    width: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One DA-LIF step: ``(x, h) -> (spikes, h_next, v)``.

    ``V = beta * H + alpha * X``, ``S = [V >= v_th]``, ``H' = V * (1 - S)``. ``alpha`` and
    ``beta`` broadcast against ``x`` (scalars, or per channel shaped ``(C, 1, ...)``).
    """
    v = alpha * x if h is None else beta * h + alpha * x
    s = spike(v - v_th, surrogate, width)
    return s, v * (1 - s), v


# ---------------------------------------------------------------------------------------------
# Module.

_UNSET = object()


class DALIF(nn.Module):
    """DA-LIF neuron layer.

    Args:
        channels: number of channels (dimension 1 of the input ``[B, C, ...]``); required for
            ``granularity="channel"``.
        granularity: ``"layer"`` (one alpha/beta pair, the paper's) or ``"channel"``.
        v_th: firing threshold (fires on ``V >= v_th``).
        init_alpha, init_beta: initial effective decays.
        parametrization: ``"tanh"`` (default) or ``"sigmoid"``.
        surrogate, surrogate_width: surrogate gradient name and width.

    Calling conventions:
        * ``lif(x, state)`` - functional single step, returns ``(spikes, state)``; pass
          ``state=None`` for the first step. This is what exporters trace.
        * ``lif(x)`` - stateful single step for use inside networks: the state is kept in
          the module between calls and cleared by :func:`reset_states`; returns spikes.
        * ``lif.forward_sequence(x_seq)`` - multi-step over ``[T, B, ...]``, returns spikes.
    """

    def __init__(
        self,
        channels: int | None = None,
        granularity: str = "layer",
        v_th: float = 1.0,
        init_alpha: float = 0.5,
        init_beta: float = 0.5,
        parametrization: str = "tanh",
        surrogate: str = "atan",
        surrogate_width: float = 2.0,
    ) -> None:
        super().__init__()
        if granularity not in ("layer", "channel"):
            raise DaLifError(f"granularity must be 'layer' or 'channel', not {granularity!r}")
        if granularity == "channel" and not channels:
            raise DaLifError("granularity='channel' needs the number of channels")
        if surrogate not in SURROGATES:
            raise DaLifError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
        for name, d in (("init_alpha", init_alpha), ("init_beta", init_beta)):
            if not 0.0 < d < 1.0:
                raise DaLifError(f"{name} must lie in (0, 1), got {d}")
        self.channels = channels
        self.granularity = granularity
        self.v_th = float(v_th)
        self.parametrization = parametrization
        self.surrogate = surrogate
        self.surrogate_width = float(surrogate_width)
        p = get_parametrization(parametrization)
        shape = (channels,) if granularity == "channel" else ()
        self.alpha_raw = nn.Parameter(torch.full(shape, p.inverse(init_alpha)))
        self.beta_raw = nn.Parameter(torch.full(shape, p.inverse(init_beta)))
        self._state: torch.Tensor | None = None

    # Effective decays ------------------------------------------------------------------------
    @property
    def alpha(self) -> torch.Tensor:
        """Effective spatial decay: shape ``()`` (layer) or ``(C,)`` (channel)."""
        return get_parametrization(self.parametrization).forward(self.alpha_raw)

    @property
    def beta(self) -> torch.Tensor:
        """Effective temporal decay: shape ``()`` (layer) or ``(C,)`` (channel)."""
        return get_parametrization(self.parametrization).forward(self.beta_raw)

    def _broadcast(self, d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if d.dim() == 0:
            return d
        if x.dim() < 2 or x.shape[1] != d.shape[0]:
            raise DaLifError(
                f"per-channel DA-LIF with {d.shape[0]} channels got input of shape "
                f"{tuple(x.shape)}; expected [B, {d.shape[0]}, ...]"
            )
        return d.view(1, -1, *([1] * (x.dim() - 2)))

    # Forward ---------------------------------------------------------------------------------
    def step(
        self, x: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Functional single step: ``(x, state) -> (spikes, state)``."""
        a = self._broadcast(self.alpha, x)
        b = self._broadcast(self.beta, x)
        s, h, _ = dalif_step(x, state, a, b, self.v_th, self.surrogate, self.surrogate_width)
        return s, h

    def forward(self, x: torch.Tensor, state=_UNSET):
        if state is not _UNSET:
            return self.step(x, state)
        s, self._state = self.step(x, self._state)
        return s

    def forward_sequence(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Multi-step over ``[T, B, ...]``; returns spikes ``[T, B, ...]`` (state starts at 0)."""
        state = None
        out = []
        for x in x_seq:
            s, state = self.step(x, state)
            out.append(s)
        return torch.stack(out)

    def reset_state(self) -> None:
        self._state = None

    def extra_repr(self) -> str:
        return (
            f"granularity={self.granularity}, channels={self.channels}, v_th={self.v_th}, "
            f"parametrization={self.parametrization}, surrogate={self.surrogate}"
            f"({self.surrogate_width})"
        )


def reset_states(model: nn.Module) -> None:
    """Clear the state of every DA-LIF layer in ``model`` (call before each new sample batch)."""
    for m in model.modules():
        if isinstance(m, DALIF):
            m.reset_state()
