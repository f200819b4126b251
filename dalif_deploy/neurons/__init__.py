"""The neuron registry: each neuron model's declaration, read without importing torch.

Each neuron model is one file here implementing :class:`~dalif_deploy.neurons.protocol.NeuronModel`:
``dalif.py`` (DA-LIF, the project's subject), ``plif.py`` (PLIF, one learnable decay) and
``lif.py`` (LIF with a fixed decay), the two baselines the DA-LIF paper compares against.
Adding one is that file plus one :class:`NeuronSpec` in :data:`SPECS` below: its config key,
name, the words ``train --neuron``'s help gives it, where its model lives, and its config
settings (each a schema check, a default, and optionally its ``train`` option). Everything
else is derived from the specs: ``train --neuron``'s choices and help, the neuron options of
``train``, ``compare``'s default set, and the zoo's config schema (an unknown key is refused).

The specs are plain data (the model files import torch), so the command line reads them
without torch; the models are imported when first used (:data:`NEURONS`, :func:`neuron_for_key`).
Running networks of neuron layers with explicit state is :mod:`.network` (re-exported here).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dalif_deploy.base.errors import DaLifError

if TYPE_CHECKING:
    from dalif_deploy.base.schema import Check

    from .protocol import NeuronModel


@dataclass(frozen=True)
class Setting:
    """One config key of a neuron model: its schema ``check`` (value, where) -> cleaned value,
    its ``default`` in a new config (None: absent unless given), and, with ``help``, the
    ``train`` option setting it (``--<key>``, of ``type``, one of ``choices``). Models sharing
    a key share one Setting (one option, one rule)."""

    check: Check
    default: Any = None
    help: str | None = None
    type: type = str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class NeuronSpec:
    """A registered neuron model: config ``key`` (``train --neuron KEY``), display ``name``,
    ``summary`` (its words in ``--neuron``'s help), ``model`` (``"module:ATTR"``, the
    :class:`~dalif_deploy.neurons.protocol.NeuronModel` instance) and its config ``settings``."""

    key: str
    name: str
    summary: str
    model: str
    settings: dict[str, Setting] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """The settings a new config of this model gets when not given."""
        return {k: s.default for k, s in self.settings.items() if s.default is not None}


# the checks import base.schema (numpy) when they run: the command line reads the specs
def _number(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Check:
    def check(v: Any, where: str) -> float:
        from dalif_deploy.base.schema import number

        return number(v, where, lo, hi, lo_open=lo_open)
    return check


def _decay(v: Any, where: str) -> float:
    x = _number(0.0, 1.0, lo_open=True)(v, where)
    if x >= 1.0:
        raise DaLifError(f"{where}: must lie in (0, 1), got {x}")
    return x


def _choice(*names: str) -> Check:
    def check(v: Any, where: str) -> str:
        from dalif_deploy.base.schema import text

        return text(v, where, tuple(sorted(names)))
    return check


#: the parametrisations and surrogates of neurons/protocol.py, by name (a contract test checks
#: they agree)
PARAMETRIZATION_NAMES = ("tanh", "sigmoid")
SURROGATE_NAMES = ("atan", "rectangular", "sigmoid")

V_TH = Setting(_number(0.0, lo_open=True), 1.0)
SURROGATE = Setting(_choice(*SURROGATE_NAMES), "atan")
SURROGATE_WIDTH = Setting(_number(0.0, lo_open=True), 2.0)
#: how a neuron resets after a spike (neurons/protocol.py's RESETS; a contract test checks)
RESET_NAMES = ("zero", "subtract")
RESET = Setting(_choice(*RESET_NAMES), None, help="how every neuron resets after a spike: to "
                "0 (the default) or by subtracting v_th", choices=RESET_NAMES)
#: the settings every model of the shared integrate/fire equation takes
COMMON = {"v_th": V_TH, "surrogate": SURROGATE, "surrogate_width": SURROGATE_WIDTH,
          "reset": RESET}
GRANULARITY = Setting(_choice("layer", "channel"), "layer",
                      help="one learnable decay set per layer (the papers', the default) or "
                      "per channel", choices=("layer", "channel"))

#: the registered neuron models, in registration order; adding one is one entry here
SPECS: list[NeuronSpec] = [
    NeuronSpec("dalif", "DA-LIF", "learnable spatial alpha and temporal beta",
               "dalif_deploy.neurons.dalif:DALIF_NEURON", {
                   "granularity": GRANULARITY,
                   "parametrization": Setting(
                       _choice(*PARAMETRIZATION_NAMES), "tanh",
                       help="raw parameter -> decay map for alpha and beta (default tanh)",
                       choices=PARAMETRIZATION_NAMES),
                   "init_alpha": Setting(_decay), "init_beta": Setting(_decay), **COMMON}),
    NeuronSpec("plif", "PLIF", "one learnable decay k = 1/tau for both terms, Fang et al. 2021",
               "dalif_deploy.neurons.plif:PLIF_NEURON", {
                   "granularity": GRANULARITY,
                   "init_tau": Setting(_number(1.0, 1e6, lo_open=True),
                                       help="the initial time constant, > 1 (default 2)",
                                       type=float),
                   **COMMON}),
    NeuronSpec("lif", "LIF", "a fixed decay 1 - 1/tau, --tau",
               "dalif_deploy.neurons.lif:LIF_NEURON", {
                   "tau": Setting(_number(1.0, 1e6),
                                  help="the fixed time constant, >= 1 (default 2: decay 0.5, "
                                  "input gain 0.5)", type=float),
                   **COMMON}),
]


def neuron_keys() -> tuple[str, ...]:
    """The config names (``neuron`` in a zoo config, ``train --neuron``) of every registered
    model, in registration order."""
    return tuple(s.key for s in SPECS)


def neuron_names() -> tuple[str, ...]:
    """The display names (``DA-LIF``, ...) of every registered model, in registration order."""
    return tuple(s.name for s in SPECS)


def spec_for_key(key: str) -> NeuronSpec:
    """The registered spec whose config name is ``key`` (``"dalif"``, ...)."""
    for s in SPECS:
        if s.key == key:
            return s
    raise DaLifError(f"unknown neuron {key!r:.40}; choose one of {list(neuron_keys())}")


def neuron_settings() -> dict[str, tuple[Setting, list[str]]]:
    """Every config setting of every model by key, with the models (keys) taking it, in
    registration order; one key means one Setting across models."""
    found: dict[str, tuple[Setting, list[str]]] = {}
    for s in SPECS:
        for k, setting in s.settings.items():
            if k in found and found[k][0] != setting:
                raise DaLifError(f"neuron {s.key!r} declares setting {k!r} unlike "
                                 f"{found[k][1]} do; share one Setting")
            found.setdefault(k, (setting, []))[1].append(s.key)
    return found


def _load(spec: NeuronSpec) -> NeuronModel:
    module, attr = spec.model.split(":")
    model = getattr(importlib.import_module(module), attr)
    if model.key != spec.key or model.name != spec.name:
        raise DaLifError(f"{spec.model} is registered as neuron {spec.key!r} ({spec.name}) but "
                         f"declares {model.key!r} ({model.name}) (a bug in the registration)")
    return model


def neuron_for_key(key: str) -> NeuronModel:
    """The registered neuron model whose config name is ``key`` (imported now)."""
    return _load(spec_for_key(key))


class _Models(Mapping[str, "NeuronModel"]):
    """Display name -> neuron model, each imported when first looked up."""

    def __getitem__(self, name: str) -> NeuronModel:
        for s in SPECS:
            if s.name == name:
                return _load(s)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(neuron_names())

    def __len__(self) -> int:
        return len(SPECS)


#: name -> neuron model (registration order)
NEURONS: Mapping[str, NeuronModel] = _Models()


def get_neuron(name: str) -> NeuronModel:
    """The registered neuron model called ``name``."""
    try:
        return NEURONS[name]
    except KeyError:
        raise DaLifError(f"unknown neuron model {name!r}; registered: {sorted(NEURONS)}"
                         ) from None


_NETWORK = ("NetworkState", "fixed_params", "network_step", "neuron_layers", "reset_states")


def __getattr__(name: str) -> Any:
    """The network helpers of :mod:`.network` (torch), imported when first asked for."""
    if name in _NETWORK:
        return getattr(importlib.import_module(f"{__name__}.network"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
