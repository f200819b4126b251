"""DA-LIF (Dual Adaptive LIF), the first neuron model: equation, parameters, NIR mapping, module.

Float semantics (docs/DESIGN.md section 2, dt = 1)::

    V[t] = beta * H[t-1] + alpha * X[t]          H[-1] = 0
    S[t] = 1 if V[t] >= v_th else 0               (surrogate gradient when training)
    H[t] = V[t] * (1 - S[t])                      (hard reset to 0)

``alpha`` (spatial decay) and ``beta`` (temporal decay) are learnable, per layer (the paper's
granularity) or per channel (our extension). They are produced from raw parameters by a named
parametrisation (``tanh`` by default, ``sigmoid`` available); checkpoints store the raw
parameters (``alpha_raw``, ``beta_raw``), everything after export uses only the effective values
(:class:`DaLifParams`).

NIR mapping (docs/DESIGN.md section 3): a ``nir.LIF`` with Euler discretisation and dt = 1,
``tau = 1/(1-beta)``, ``r = alpha/(1-beta)``, ``v_leak = 0``, ``v_reset = 0``,
``v_threshold = v_th``, every array of the full neuron shape; with dt = 1 the NIR update
``v += dt/tau * (v_leak - v + r*I)`` is exactly ``V = beta*H + alpha*X``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dalif_deploy.base.errors import DaLifError

from .protocol import (
    MembraneState,
    NeuronModel,
    NeuronModule,
    f64,
    fire,
    full_shape,
    get_parametrization,
    integrate,
    lif_node,
    meta_value,
    per_channel,
    read_lif_node,
    reduce_granularity,
)

EQUATION = "V[t] = beta*H[t-1] + alpha*X[t]; S[t] = V[t] >= v_th; H[t] = V[t]*(1-S[t])"


@dataclass(frozen=True)
class DaLifParams:
    """Effective DA-LIF parameters: ``alpha``/``beta`` of shape ``()`` (per layer) or ``(C,)``
    (per channel, channel = dimension 1 of the input ``[B, C, ...]``)."""

    alpha: torch.Tensor
    beta: torch.Tensor
    v_th: float = 1.0
    surrogate: str = "atan"
    surrogate_width: float = 2.0
    reset: str = "zero"  # or "subtract" (H = V - v_th * S)

    @property
    def granularity(self) -> str:
        return "channel" if self.alpha.dim() == 1 else "layer"

    @property
    def gains(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)`` of ``V = beta * H + alpha * X``."""
        return self.alpha, self.beta


#: DA-LIF's state: the membrane after reset ``h`` and the last potential ``v``
DaLifState = MembraneState


def dalif_step(
    x: torch.Tensor,
    h: torch.Tensor | None,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    v_th: float,
    surrogate: str = "atan",
    width: float = 2.0,
    subtract: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DA-LIF equation on tensors: ``(x, h) -> (spikes, h_next, v)``.

    ``V = beta * H + alpha * X``, ``S = [V >= v_th]``, ``H' = V * (1 - S)`` (``subtract``:
    ``H' = V - v_th * S``). ``alpha`` and
    ``beta`` broadcast against ``x`` (scalars, or per channel shaped ``(1, C, 1, ...)``).
    """
    v = integrate(x, h, beta, alpha)
    s, h_next = fire(v, v_th, surrogate=surrogate, width=width, subtract=subtract)
    return s, h_next, v


class DaLifModel(NeuronModel):
    """DA-LIF as a :class:`~dalif_deploy.neurons.protocol.NeuronModel` (see the module
    docstring)."""

    name = "DA-LIF"
    key = "dalif"

    def init_state(self) -> MembraneState:
        return MembraneState()

    def step(self, state: MembraneState, x: torch.Tensor, params: DaLifParams
             ) -> tuple[torch.Tensor, MembraneState]:
        """``V = beta * H + alpha * X``; ``S = [V >= v_th]``; ``H' = V * (1 - S)``.

        Returns ``(S, DaLifState(h=H', v=V))``; per-channel decays broadcast over dimension 1.
        """
        a = per_channel(params.alpha, x, "DA-LIF")
        b = per_channel(params.beta, x, "DA-LIF")
        s, h, v = dalif_step(x, state.h, a, b, params.v_th, params.surrogate,
                             params.surrogate_width, params.reset == "subtract")
        return s, MembraneState(h, v)

    def to_nir(self, params: DaLifParams, shape: Sequence[int], name: str = "") -> Any:
        """The ``nir.LIF`` of a DA-LIF layer whose neurons have ``shape`` (without batch):
        ``tau = 1/(1-beta)``, ``r = alpha/(1-beta)`` (see the module docstring)."""
        alpha, beta = f64(params.alpha), f64(params.beta)
        if not (np.isfinite(alpha).all() and np.isfinite(beta).all()):
            raise DaLifError(f"DA-LIF layer {name!r}: alpha/beta are not finite")
        if (beta >= 1).any() or (beta < 0).any() or (alpha <= 0).any():
            raise DaLifError(f"DA-LIF layer {name!r}: needs 0 <= beta < 1 and alpha > 0 to be "
                             f"expressed as a NIR LIF (got alpha {alpha}, beta {beta})")
        a, b = (full_shape(v, shape, "DA-LIF", name) for v in (alpha, beta))
        meta = {"neuron_model": self.name, "equation": EQUATION,
                "granularity": params.granularity, "alpha": meta_value(alpha),
                "beta": meta_value(beta)}
        return lif_node(1.0 / (1.0 - b), a / (1.0 - b), params.v_th, shape, meta, params.reset)

    def from_nir(self, node: Any, name: str = "", dtype: torch.dtype = torch.float32
                 ) -> DaLifParams:
        """The DA-LIF parameters of a ``nir.LIF`` at dt = 1: ``beta = 1 - 1/tau``,
        ``alpha = r/tau``, per channel when the node's metadata says so (else when the values
        differ between channels), computed in float64 and cast to ``dtype``."""
        rd = read_lif_node(node, name, "DA-LIF")
        a, b = (reduce_granularity(v, rd.per_channel, what, name, "DA-LIF")
                for v, what in ((rd.k * rd.r, "alpha"), (1.0 - rd.k, "beta")))
        return DaLifParams(torch.as_tensor(a).to(dtype), torch.as_tensor(b).to(dtype), rd.v_th,
                           reset=rd.reset)


DALIF_NEURON = DaLifModel()


class DALIF(NeuronModule):
    """DA-LIF neuron layer (a thin module around :meth:`DaLifModel.step`).

    Args:
        channels: number of channels (dimension 1 of the input ``[B, C, ...]``); required for
            ``granularity="channel"``.
        granularity: ``"layer"`` (one alpha/beta pair, the paper's) or ``"channel"``.
        v_th: firing threshold (fires on ``V >= v_th``).
        init_alpha, init_beta: initial effective decays.
        parametrization: ``"tanh"`` (default) or ``"sigmoid"``.
        surrogate, surrogate_width: surrogate gradient name and width.
        reset: ``"zero"`` (the paper's hard reset) or ``"subtract"`` (``H = V - v_th * S``).

    Calling conventions: see :class:`~dalif_deploy.neurons.protocol.NeuronModule` (``lif(x, state)``
    explicit, ``lif(x)`` single step inside networks, ``lif.forward_sequence(x_seq)``).
    """

    neuron = DALIF_NEURON

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
        reset: str = "zero",
    ) -> None:
        super().__init__()
        shape = self.init_layer(channels, granularity, v_th, surrogate, surrogate_width,
                                reset)
        for name, d in (("init_alpha", init_alpha), ("init_beta", init_beta)):
            if not 0.0 < d < 1.0:
                raise DaLifError(f"{name} must lie in (0, 1), got {d}")
        self.parametrization = parametrization
        p = get_parametrization(parametrization)
        self.alpha_raw = nn.Parameter(torch.full(shape, p.inverse(init_alpha)))
        self.beta_raw = nn.Parameter(torch.full(shape, p.inverse(init_beta)))

    @property
    def alpha(self) -> torch.Tensor:
        """Effective spatial decay: shape ``()`` (layer) or ``(C,)`` (channel)."""
        return get_parametrization(self.parametrization).forward(self.alpha_raw)

    @property
    def beta(self) -> torch.Tensor:
        """Effective temporal decay: shape ``()`` (layer) or ``(C,)`` (channel)."""
        return get_parametrization(self.parametrization).forward(self.beta_raw)

    def effective_params(self) -> DaLifParams:
        return DaLifParams(self.alpha, self.beta, self.v_th, self.surrogate,
                           self.surrogate_width, self.reset)

    def extra_repr(self) -> str:
        return (
            f"granularity={self.granularity}, channels={self.channels}, v_th={self.v_th}, "
            f"parametrization={self.parametrization}, surrogate={self.surrogate}"
            f"({self.surrogate_width})"
        )


DaLifModel.module_type = DALIF
