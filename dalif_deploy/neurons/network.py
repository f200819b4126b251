"""Networks of neuron layers with explicit state (any registered neuron model)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from dalif_deploy.base.errors import DaLifError

from .protocol import NeuronModule

#: the state of every neuron layer of a network, by module name (None: initial state)
NetworkState = dict[str, Any]


def neuron_layers(model: nn.Module) -> dict[str, NeuronModule]:
    """Named neuron layers (of any model) of ``model`` in registration order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, NeuronModule)}


def reset_states(model: nn.Module) -> None:
    """Clear the state of every neuron layer in ``model`` (call before each new sample batch)."""
    for m in neuron_layers(model).values():
        m.reset_state()


def network_step(model: nn.Module
                 ) -> Callable[[torch.Tensor, NetworkState | None],
                               tuple[torch.Tensor, NetworkState]]:
    """``model`` (one time step per ``forward(x)``) as a function with explicit state:
    ``step(x, states) -> (output, states)``, ``states`` by layer name (None: all initial).

    During the call each layer continues from its entry in ``states``; afterwards every layer's
    :attr:`~dalif_deploy.neurons.protocol.NeuronModule.state` is cleared again, so the model holds
    no
    tensors between calls.
    """
    layers = neuron_layers(model)

    def step(x: torch.Tensor, states: NetworkState | None) -> tuple[torch.Tensor, NetworkState]:
        for name, m in layers.items():
            m.state = (states or {}).get(name)
        try:
            out = model(x)
            return out, {name: m.state for name, m in layers.items()}
        finally:
            for m in layers.values():
                m.reset_state()

    return step


@contextmanager
def fixed_params(model: nn.Module, params: Mapping[str, Any]) -> Iterator[None]:
    """Within the block, the layers named in ``params`` use those parameters (set as their
    :attr:`~dalif_deploy.neurons.protocol.NeuronModule.fixed_params`) instead of their effective
    ones."""
    layers = neuron_layers(model)
    missing = sorted(set(params) - set(layers))
    if missing:
        raise DaLifError(f"fixed_params: {missing} are not neuron layers of the model")
    try:
        for name, p in params.items():
            layers[name].fixed_params = p
        yield
    finally:
        for name in params:
            layers[name].fixed_params = None
