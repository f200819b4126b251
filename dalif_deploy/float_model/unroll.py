"""The float time loop, once: every float runner and the ONNX exporter unroll through here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from dalif_deploy.base.encoding import Encoding

S = TypeVar("S")

def unroll(step: Callable[[torch.Tensor, S | None], tuple[torch.Tensor, S]], x: torch.Tensor,
           timesteps: int, encoding: Encoding | str, state: S | None = None) -> torch.Tensor:
    """The readout mean over T of ``step`` run for ``timesteps`` steps on ``x``::

        for t in 0 .. T-1:  y[t], state = step(encoding.frame(x, t), state)
        return (((y[0] + y[1]) + y[2]) + ... + y[T-1]) / T

    ``encoding.frame`` is the same frame every step (analog, ``x = [B, ...]``) or frame t
    (events, ``x = [B, T, ...]``); ``state`` starts as given (None: the runner's initial state).
    The additions run in this order, then one division, so every runner gives the same bits.
    """
    enc = Encoding.from_name(encoding)
    total = None
    for t in range(timesteps):
        out, state = step(enc.frame(x, t), state)
        total = out if total is None else total + out
    return total / timesteps
