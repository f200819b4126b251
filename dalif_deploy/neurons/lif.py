"""LIF with a fixed decay, the plainest baseline beside DA-LIF and PLIF.

The LIF of the PLIF paper's form (Fang et al. 2021, ICCV; the usual SNN baseline), with a time
constant ``tau`` that is a config value, not learned (dt = 1)::

    V[t] = H[t-1] + (X[t] - H[t-1]) / tau        i.e.  V = (1 - 1/tau) H + (1/tau) X,  H[-1] = 0
    S[t] = 1 if V[t] >= v_th else 0               (surrogate gradient when training)
    H[t] = V[t] * (1 - S[t])                      (hard reset to 0)

``tau >= 1``; the default ``tau = 2`` (decay 0.5, input gain 0.5) is the field's usual choice
(and PLIF's initial value). It is DA-LIF with ``alpha = 1/tau`` and ``beta = 1 - 1/tau`` fixed,
and no learnable neuron parameter at all.

NIR mapping: a ``nir.LIF`` with Euler discretisation and dt = 1, ``tau = tau``, ``r = 1``,
``v_leak = 0``, ``v_reset = 0``, ``v_threshold = v_th``, every array of the full neuron shape:
NIR's ``v += dt/tau * (v_leak - v + r*I)`` is then exactly the equation above. The quantiser
reads it as any LIF: the same Loihi 2 CUBA program as DA-LIF, ``dv = round(4096 / tau)``, the
gain ``1/tau`` folded into the integer weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dalif_deploy.base.errors import DaLifError

from .protocol import (
    MembraneState,
    NeuronModel,
    NeuronModule,
    fire,
    integrate,
    lif_node,
    read_lif_node,
    reduce_granularity,
)

EQUATION = "V[t] = (1-1/tau)*H[t-1] + X[t]/tau; S[t] = V[t] >= v_th; H[t] = V[t]*(1-S[t])"


@dataclass(frozen=True)
class LifParams:
    """LIF parameters: the fixed time constant ``tau`` (>= 1, one per layer) and the firing
    rule."""

    tau: float = 2.0
    v_th: float = 1.0
    surrogate: str = "atan"
    surrogate_width: float = 2.0
    reset: str = "zero"  # or "subtract" (H = V - v_th * S)

    def __post_init__(self) -> None:
        if not (isinstance(self.tau, int | float) and math.isfinite(self.tau)
                and self.tau >= 1.0):
            raise DaLifError(f"LIF tau must be a finite number >= 1, got {self.tau!r}")

    @property
    def gains(self) -> tuple[float, float]:
        """``(alpha, beta) = (1/tau, 1 - 1/tau)`` of ``V = beta * H + alpha * X``."""
        return 1.0 / self.tau, 1.0 - 1.0 / self.tau


class LifModel(NeuronModel):
    """LIF with a fixed decay as a :class:`~dalif_deploy.neurons.protocol.NeuronModel`."""

    name = "LIF"
    key = "lif"

    def init_state(self) -> MembraneState:
        return MembraneState()

    def step(self, state: MembraneState, x: torch.Tensor, params: LifParams
             ) -> tuple[torch.Tensor, MembraneState]:
        """``V = (1 - 1/tau) * H + (1/tau) * X``; ``S = [V >= v_th]``; ``H' = V * (1 - S)``.

        Both coefficients are computed in float64 and applied in the input's dtype (as NIR's
        interpreter does). Returns ``(S, MembraneState(h=H', v=V))``."""
        k = 1.0 / params.tau
        v = integrate(x, state.h, 1.0 - k, k)
        s, h = fire(v, params.v_th, surrogate=params.surrogate, width=params.surrogate_width,
                    subtract=params.reset == "subtract")
        return s, MembraneState(h, v)

    def to_nir(self, params: LifParams, shape: Sequence[int], name: str = "") -> Any:
        """The ``nir.LIF`` of a LIF layer: ``tau = tau``, ``r = 1`` (full neuron shape)."""
        shape = tuple(int(d) for d in shape)
        meta = {"neuron_model": self.name, "equation": EQUATION, "granularity": "layer",
                "tau": float(params.tau)}
        return lif_node(np.full(shape, float(params.tau)), np.ones(shape), params.v_th, shape,
                        meta, params.reset)

    def from_nir(self, node: Any, name: str = "") -> LifParams:
        """The LIF parameters of a ``nir.LIF`` at dt = 1: one ``tau`` for the whole layer
        (``tau >= 1``) and ``r = 1`` (LIF's input gain is ``1/tau``)."""
        rd = read_lif_node(node, name, "LIF")
        if not np.all(rd.r == 1.0):
            raise DaLifError(f"LIF node {name!r}: r != 1, but a fixed-decay LIF's input gain is "
                             "1/tau (r = 1); read it as a DA-LIF layer instead")
        tau = reduce_granularity(np.asarray(node.tau, dtype=np.float64), False, "tau", name,
                                 "LIF")
        return LifParams(float(tau), rd.v_th, reset=rd.reset)


LIF_NEURON = LifModel()


class LIF(NeuronModule):
    """LIF neuron layer with a fixed decay (a thin module around :meth:`LifModel.step`).

    Args:
        channels: number of channels (accepted like every neuron layer's; LIF has no
            per-channel parameter).
        v_th: firing threshold (fires on ``V >= v_th``).
        tau: the fixed time constant (>= 1; decay ``1 - 1/tau``, input gain ``1/tau``).
        surrogate, surrogate_width: surrogate gradient name and width.
        reset: ``"zero"`` (the paper's hard reset) or ``"subtract"`` (``H = V - v_th * S``).

    It has no learnable parameter.
    """

    neuron = LIF_NEURON

    def __init__(
        self,
        channels: int | None = None,
        v_th: float = 1.0,
        tau: float = 2.0,
        surrogate: str = "atan",
        surrogate_width: float = 2.0,
        reset: str = "zero",
    ) -> None:
        super().__init__()
        self.init_layer(channels, "layer", v_th, surrogate, surrogate_width, reset)
        self.tau = float(LifParams(tau).tau)

    def effective_params(self) -> LifParams:
        return LifParams(self.tau, self.v_th, self.surrogate, self.surrogate_width,
                          self.reset)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, v_th={self.v_th}, "
                f"surrogate={self.surrogate}({self.surrogate_width})")


LifModel.module_type = LIF
