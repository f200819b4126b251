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

from ..errors import DaLifError
from ..neuron import (
    SURROGATES,
    NeuronModel,
    NeuronModule,
    fire,
    get_parametrization,
    integrate,
    per_channel,
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

    @property
    def granularity(self) -> str:
        return "channel" if self.alpha.dim() == 1 else "layer"


@dataclass(frozen=True)
class DaLifState:
    """``h``: the membrane after reset, carried to the next step (None before the first step,
    meaning 0). ``v``: the potential ``V`` of the last step, before threshold and reset (read
    only, e.g. to measure how close a layer came to its threshold)."""

    h: torch.Tensor | None = None
    v: torch.Tensor | None = None


def dalif_step(
    x: torch.Tensor,
    h: torch.Tensor | None,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    v_th: float,
    surrogate: str = "atan",
    width: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DA-LIF equation on tensors: ``(x, h) -> (spikes, h_next, v)``.

    ``V = beta * H + alpha * X``, ``S = [V >= v_th]``, ``H' = V * (1 - S)``. ``alpha`` and
    ``beta`` broadcast against ``x`` (scalars, or per channel shaped ``(1, C, 1, ...)``).
    """
    v = integrate(x, h, beta, alpha)
    s, h_next = fire(v, v_th, surrogate=surrogate, width=width)
    return s, h_next, v


def _f64(t: torch.Tensor | float) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().to(torch.float64).numpy().copy()
    return np.asarray(t, dtype=np.float64)


def _meta_value(a: np.ndarray) -> float | np.ndarray:
    """Metadata value: a float for a scalar (HDF5 cannot compress 0-d arrays), else float64."""
    return float(a) if a.ndim == 0 else a


def _reduce(a: np.ndarray, per_channel: bool, what: str, name: str) -> np.ndarray:
    """A full-shape array as one value (``()``) or one per channel (``(C,)``, dimension 0)."""
    flat = a.reshape(a.shape[0], -1) if per_channel and a.ndim else a.reshape(1, -1)
    if flat.size == 0 or not np.all(flat == flat[:, :1]):
        raise DaLifError(f"LIF node {name!r}: {what} varies within a "
                         f"{'channel' if per_channel else 'layer'}; DA-LIF has one value per "
                         "layer or per channel")
    return flat[:, 0] if per_channel else flat[0, 0]


class DaLif(NeuronModel):
    """DA-LIF as a :class:`~dalif_deploy.neuron.NeuronModel` (see the module docstring)."""

    name = "DA-LIF"

    def init_state(self) -> DaLifState:
        return DaLifState()

    def step(self, state: DaLifState, x: torch.Tensor, params: DaLifParams
             ) -> tuple[torch.Tensor, DaLifState]:
        """``V = beta * H + alpha * X``; ``S = [V >= v_th]``; ``H' = V * (1 - S)``.

        Returns ``(S, DaLifState(h=H', v=V))``; per-channel decays broadcast over dimension 1.
        """
        a = per_channel(params.alpha, x, "DA-LIF")
        b = per_channel(params.beta, x, "DA-LIF")
        s, h, v = dalif_step(x, state.h, a, b, params.v_th, params.surrogate,
                             params.surrogate_width)
        return s, DaLifState(h, v)

    def to_nir(self, params: DaLifParams, shape: Sequence[int], name: str = "") -> Any:
        """The ``nir.LIF`` of a DA-LIF layer whose neurons have ``shape`` (without batch)."""
        import nir

        shape = tuple(int(d) for d in shape)
        alpha, beta = _f64(params.alpha), _f64(params.beta)
        meta_alpha, meta_beta = _meta_value(alpha), _meta_value(beta)
        if not (np.isfinite(alpha).all() and np.isfinite(beta).all()):
            raise DaLifError(f"DA-LIF layer {name!r}: alpha/beta are not finite")
        if (beta >= 1).any() or (beta < 0).any() or (alpha <= 0).any():
            raise DaLifError(f"DA-LIF layer {name!r}: needs 0 <= beta < 1 and alpha > 0 to be "
                             f"expressed as a NIR LIF (got alpha {alpha}, beta {beta})")
        if alpha.ndim == 1:  # per channel: channel is dimension 0 of the neuron shape
            if not shape or shape[0] != alpha.shape[0]:
                raise DaLifError(f"DA-LIF layer {name!r} has {alpha.shape[0]} channels but its "
                                 f"input has shape {shape}")
            expand = (-1,) + (1,) * (len(shape) - 1)
            alpha, beta = alpha.reshape(expand), beta.reshape(expand)
        full = np.ones(shape, dtype=np.float64)
        a, b = alpha * full, beta * full
        meta = {
            "neuron_model": self.name,
            "equation": EQUATION,
            "dt": 1.0,
            "discretisation": "euler",
            "spike_condition": ">=",
            "reset": "hard reset to v_reset = 0 (H = V * (1 - S))",
            "granularity": params.granularity,
            "alpha": meta_alpha,
            "beta": meta_beta,
        }
        return nir.LIF(tau=1.0 / (1.0 - b), r=a / (1.0 - b), v_leak=np.zeros(shape),
                       v_reset=np.zeros(shape), v_threshold=np.full(shape, float(params.v_th)),
                       metadata=meta)

    def from_nir(self, node: Any, name: str = "", dtype: torch.dtype = torch.float32
                 ) -> DaLifParams:
        """The DA-LIF parameters of a ``nir.LIF`` at dt = 1: ``beta = 1 - 1/tau``,
        ``alpha = r/tau``, per channel when the node's metadata says so (else when the values
        differ between channels), computed in float64 and cast to ``dtype``."""
        import nir

        if not isinstance(node, nir.LIF):
            raise DaLifError(f"node {name!r}: a DA-LIF layer is a nir.LIF, not "
                             f"{type(node).__name__}")
        meta = node.metadata or {}
        if str(meta.get("spike_condition", ">=")) != ">=":
            raise DaLifError(f"LIF node {name!r} fires on {meta['spike_condition']}; DA-LIF "
                             "fires on V >= v_th")
        for field in ("v_leak", "v_reset"):
            value = getattr(node, field, None)
            if value is not None and np.any(np.asarray(value) != 0):
                raise DaLifError(f"LIF node {name!r}: {field} != 0 has no DA-LIF equivalent")
        k = 1.0 / np.asarray(node.tau, dtype=np.float64)
        beta, alpha = 1.0 - k, k * np.asarray(node.r, dtype=np.float64)
        granularity = meta.get("granularity")
        if granularity is None:
            granularity = "layer" if np.all(alpha == alpha.flat[0]) and np.all(
                beta == beta.flat[0]) else "channel"
        chan = str(granularity) == "channel"
        a, b = (_reduce(v, chan, what, name) for v, what in ((alpha, "alpha"), (beta, "beta")))
        th = _reduce(np.asarray(node.v_threshold, dtype=np.float64), False, "v_threshold", name)
        return DaLifParams(torch.as_tensor(a).to(dtype), torch.as_tensor(b).to(dtype), float(th))


DALIF_NEURON = DaLif()


class DALIF(NeuronModule):
    """DA-LIF neuron layer (a thin module around :meth:`DaLif.step`).

    Args:
        channels: number of channels (dimension 1 of the input ``[B, C, ...]``); required for
            ``granularity="channel"``.
        granularity: ``"layer"`` (one alpha/beta pair, the paper's) or ``"channel"``.
        v_th: firing threshold (fires on ``V >= v_th``).
        init_alpha, init_beta: initial effective decays.
        parametrization: ``"tanh"`` (default) or ``"sigmoid"``.
        surrogate, surrogate_width: surrogate gradient name and width.

    Calling conventions: see :class:`~dalif_deploy.neuron.NeuronModule` (``lif(x, state)``
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
                           self.surrogate_width)

    def extra_repr(self) -> str:
        return (
            f"granularity={self.granularity}, channels={self.channels}, v_th={self.v_th}, "
            f"parametrization={self.parametrization}, surrogate={self.surrogate}"
            f"({self.surrogate_width})"
        )


DaLif.module_type = DALIF
