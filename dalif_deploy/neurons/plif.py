"""PLIF (Parametric LIF), a baseline beside DA-LIF: ONE learnable decay for both terms.

PLIF is Fang et al. 2021 ("Incorporating Learnable Membrane Time Constant to Enhance Learning
of Spiking Neural Networks", ICCV): the membrane time constant ``tau`` of a LIF is learned
through ``k = 1/tau = sigmoid(w)``, one ``w`` per layer (theirs) or per channel (ours). Their
charge equation ``H[t] = V[t-1] + k (X[t] - (V[t-1] - V_reset))`` with ``V_reset = 0``, written
with this project's names (``V`` before, ``H`` after threshold and reset; dt = 1)::

    k    = sigmoid(w)                             one learnable value
    V[t] = (1 - k) * H[t-1] + k * X[t]            H[-1] = 0
    S[t] = 1 if V[t] >= v_th else 0               (surrogate gradient when training)
    H[t] = V[t] * (1 - S[t])                      (hard reset to 0)

This is the "conventional adaptive LIF" the DA-LIF paper compares against (Zhang et al. 2025,
"DA-LIF: Dual Adaptive Leaky Integrate-and-Fire Model for Deep Spiking Neural Networks", arXiv
2502.10422, Fig. 1b): one learnable time constant couples the temporal decay of the membrane
and the spatial scaling of the input, where DA-LIF learns them apart (``V = beta H + alpha X``).
PLIF is DA-LIF with ``alpha = k`` and ``beta = 1 - k`` tied, and one parameter per layer fewer.

NIR mapping: a ``nir.LIF`` with Euler discretisation and dt = 1, ``tau = 1/k``, ``r = 1``,
``v_leak = 0``, ``v_reset = 0``, ``v_threshold = v_th``, every array of the full neuron shape:
NIR's ``v += dt/tau * (v_leak - v + r*I)`` is then exactly ``V = (1 - k) H + k X``. The
quantiser reads it as any LIF (``beta = 1 - 1/tau``, ``alpha = r/tau``): the same Loihi 2 CUBA
program as DA-LIF, with ``dv = round(4096 k)`` and ``k`` folded into the integer weights.
"""

from __future__ import annotations

import math
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
    integrate,
    lif_node,
    meta_value,
    per_channel,
    read_lif_node,
    reduce_granularity,
)

EQUATION = "V[t] = (1-k)*H[t-1] + k*X[t]; S[t] = V[t] >= v_th; H[t] = V[t]*(1-S[t])"


@dataclass(frozen=True)
class PlifParams:
    """Effective PLIF parameters: ``k = 1/tau`` of shape ``()`` (per layer) or ``(C,)`` (per
    channel, channel = dimension 1 of the input ``[B, C, ...]``)."""

    k: torch.Tensor
    v_th: float = 1.0
    surrogate: str = "atan"
    surrogate_width: float = 2.0
    reset: str = "zero"  # or "subtract" (H = V - v_th * S)

    @property
    def granularity(self) -> str:
        return "channel" if self.k.dim() == 1 else "layer"

    @property
    def gains(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta) = (k, 1 - k)`` of ``V = beta * H + alpha * X``."""
        return self.k, 1 - self.k


class PlifModel(NeuronModel):
    """PLIF as a :class:`~dalif_deploy.neurons.protocol.NeuronModel` (see the module docstring)."""

    name = "PLIF"
    key = "plif"

    def init_state(self) -> MembraneState:
        return MembraneState()

    def step(self, state: MembraneState, x: torch.Tensor, params: PlifParams
             ) -> tuple[torch.Tensor, MembraneState]:
        """``V = (1 - k) * H + k * X``; ``S = [V >= v_th]``; ``H' = V * (1 - S)``.

        Returns ``(S, MembraneState(h=H', v=V))``; a per-channel ``k`` broadcasts over
        dimension 1."""
        k = per_channel(params.k, x, "PLIF")
        v = integrate(x, state.h, 1 - k, k)
        s, h = fire(v, params.v_th, surrogate=params.surrogate, width=params.surrogate_width,
                    subtract=params.reset == "subtract")
        return s, MembraneState(h, v)

    def to_nir(self, params: PlifParams, shape: Sequence[int], name: str = "") -> Any:
        """The ``nir.LIF`` of a PLIF layer: ``tau = 1/k``, ``r = 1`` (full neuron shape)."""
        k = f64(params.k)
        if not np.isfinite(k).all() or (k <= 0).any() or (k > 1).any():
            raise DaLifError(f"PLIF layer {name!r}: needs 0 < k <= 1 to be expressed as a NIR "
                             f"LIF (got k {k})")
        full = full_shape(k, shape, "PLIF", name)
        meta = {"neuron_model": self.name, "equation": EQUATION,
                "granularity": params.granularity, "k": meta_value(k)}
        return lif_node(1.0 / full, np.ones_like(full), params.v_th, shape, meta, params.reset)

    def from_nir(self, node: Any, name: str = "", dtype: torch.dtype = torch.float32
                 ) -> PlifParams:
        """The PLIF parameters of a ``nir.LIF`` at dt = 1: ``k = 1/tau``; the node must have
        ``r = 1`` (PLIF ties its input gain to its decay; a LIF with another ``r`` is a DA-LIF
        layer), computed in float64 and cast to ``dtype``."""
        rd = read_lif_node(node, name, "PLIF")
        if not np.all(rd.r == 1.0):
            raise DaLifError(f"LIF node {name!r}: r != 1, but PLIF's input gain is its decay "
                             "k = 1/tau (r = 1); read it as a DA-LIF layer instead")
        k = reduce_granularity(rd.k, rd.per_channel, "tau", name, "PLIF")
        return PlifParams(torch.as_tensor(k).to(dtype), rd.v_th, reset=rd.reset)


PLIF_NEURON = PlifModel()


class PLIF(NeuronModule):
    """PLIF neuron layer (a thin module around :meth:`PlifModel.step`).

    Args:
        channels: number of channels (dimension 1 of the input ``[B, C, ...]``); required for
            ``granularity="channel"``.
        granularity: ``"layer"`` (one ``k``, Fang et al.'s) or ``"channel"``.
        v_th: firing threshold (fires on ``V >= v_th``).
        init_tau: initial time constant (> 1; ``k = 1/init_tau``; Fang et al. start at 2).
        surrogate, surrogate_width: surrogate gradient name and width.
        reset: ``"zero"`` (the paper's hard reset) or ``"subtract"`` (``H = V - v_th * S``).

    The learnable parameter is ``k_raw`` with ``k = sigmoid(k_raw)``.
    """

    neuron = PLIF_NEURON

    def __init__(
        self,
        channels: int | None = None,
        granularity: str = "layer",
        v_th: float = 1.0,
        init_tau: float = 2.0,
        surrogate: str = "atan",
        surrogate_width: float = 2.0,
        reset: str = "zero",
    ) -> None:
        super().__init__()
        shape = self.init_layer(channels, granularity, v_th, surrogate, surrogate_width,
                                reset)
        if not (math.isfinite(init_tau) and init_tau > 1.0):
            raise DaLifError(f"init_tau must be a finite number > 1, got {init_tau}")
        self.k_raw = nn.Parameter(torch.full(shape, -math.log(init_tau - 1.0)))

    @property
    def k(self) -> torch.Tensor:
        """Effective decay ``1/tau = sigmoid(k_raw)``: shape ``()`` (layer) or ``(C,)``."""
        return torch.sigmoid(self.k_raw)

    def effective_params(self) -> PlifParams:
        return PlifParams(self.k, self.v_th, self.surrogate, self.surrogate_width,
                          self.reset)

    def extra_repr(self) -> str:
        return (f"granularity={self.granularity}, channels={self.channels}, v_th={self.v_th}, "
                f"surrogate={self.surrogate}({self.surrogate_width})")


PlifModel.module_type = PLIF
