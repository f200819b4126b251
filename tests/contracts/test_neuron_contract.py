"""The neuron registry's contract: a neuron model is one file in dalif_deploy/neurons/ plus one
``NeuronSpec`` in ``SPECS``; train's --neuron choices, help and options, compare's default set
and the zoo's config schema come from the specs, and a config key no spec declares is refused."""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import sys
import types

import pytest

import dalif_deploy.cli.compare as cli_compare
import dalif_deploy.neurons as neurons
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import build_parser
from dalif_deploy.float_model.zoo import default_config, validate_config
from dalif_deploy.neurons import SPECS, NeuronSpec, Setting, neuron_for_key
from dalif_deploy.neurons.protocol import PARAMETRIZATIONS, SURROGATES, NeuronModel


def _subparser(name: str):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    p = sub.choices[name]
    p.format_usage()
    return p


def test_every_neuron_module_is_registered():
    """A module of dalif_deploy/neurons defining a NeuronModel instance is in SPECS."""
    models = set()
    for info in pkgutil.iter_modules(neurons.__path__):
        mod = __import__(f"dalif_deploy.neurons.{info.name}", fromlist=["_"])
        models |= {f"{mod.__name__}:{k}" for k, v in vars(mod).items()
                   if isinstance(v, NeuronModel) and v.__module__ == mod.__name__}
    assert models == {s.model for s in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_each_spec_matches_its_model(spec):
    model = neuron_for_key(spec.key)
    assert (model.key, model.name) == (spec.key, spec.name)
    takes = set(inspect.signature(model.module_type.__init__).parameters) - {"self", "channels"}
    assert takes == set(spec.settings)  # every setting reaches the module, and only those


def test_the_named_choices_are_the_protocols():
    assert set(neurons.PARAMETRIZATION_NAMES) == set(PARAMETRIZATIONS)
    assert set(neurons.SURROGATE_NAMES) == set(SURROGATES)


def test_a_registered_neuron_shows_up_everywhere(monkeypatch):
    """A throwaway neuron registered by one spec: train's --neuron choices and help, its own
    option, compare's default set and help, and the zoo's config schema take it."""
    r_in = Setting(lambda v, w: __import__("dalif_deploy.base.schema").base.schema.number(
        v, w, 0.0, lo_open=True), help="the input resistance, > 0", type=float)
    from dalif_deploy.neurons.lif import LifModel

    class Izh(LifModel):  # a throwaway model in a module of its own
        key, name = "izh", "IZH"

    mod = types.ModuleType("fake_neurons.izh")
    mod.IZH_NEURON = Izh()
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    spec = NeuronSpec("izh", "IZH", "a throwaway model", "fake_neurons.izh:IZH_NEURON",
                      {"r_in": r_in, **neurons.COMMON})
    monkeypatch.setattr(neurons, "SPECS", [*SPECS, spec])
    try:
        importlib.reload(cli_compare)  # its description and pipeline line name the models
        _shows_up([s.key for s in neurons.SPECS])
        assert neurons.NEURONS["IZH"] is mod.IZH_NEURON
    finally:
        monkeypatch.undo()
        importlib.reload(cli_compare)
    assert "IZH" not in cli_compare.COMMAND.description


def _shows_up(keys: list[str]) -> None:
    train = _subparser("train")
    neuron = next(a for a in train._actions if a.dest == "neuron")
    assert "izh" in neuron.choices and "izh (a throwaway model)" in neuron.help
    r_opt = next(a for a in train._actions if a.dest == "r_in")
    assert r_opt.option_strings == ["--r-in"] and r_opt.help.startswith("izh: ")
    compare = _subparser("compare")
    assert next(a for a in compare._actions if a.dest == "neurons").default.endswith(",izh")
    from dalif_deploy.converters.torch_to_nir import SUPPORTED

    from dalif_deploy.studies.compare import CompareOptions

    assert CompareOptions().neurons[-1] == "izh"
    assert list(neuron.choices) == keys and "IZH" in compare.description
    assert "DA-LIF vs PLIF vs LIF vs IZH" in build_parser().epilog
    assert "LIF" in SUPPORTED  # the front end names every registered model's module
    cfg = validate_config({"name": "digits-cnn", "neuron": "izh", "r_in": 2.0})
    assert cfg["r_in"] == 2.0
    with pytest.raises(DaLifError, match=r"model config\.r_in: must be a finite number > 0\.0, "
                                         r"got nan"):
        validate_config({"name": "digits-cnn", "neuron": "izh", "r_in": math.nan})


def test_an_unknown_config_key_is_refused_naming_it_and_the_accepted_ones():
    with pytest.raises(DaLifError) as e:
        validate_config({"name": "digits-cnn", "r_in": math.nan})
    text = str(e.value)
    assert "unknown field(s) 'r_in'" in text and "accepted fields: name, neuron" in text
    assert "\n" not in text
    with pytest.raises(DaLifError, match="unknown field"):
        default_config("digits-cnn", neuron="lif", r_in=1.0)


def test_every_setting_has_one_rule_across_models():
    """A key two models take is one Setting (one check, one option)."""
    shared = neurons.neuron_settings()
    assert shared["granularity"][1] == ["dalif", "plif"]
    assert shared["v_th"][1] == [s.key for s in SPECS]
