"""The backend registry's contract: a backend is one file in targets/ with a class (name,
kind, options, input, run) plus one ``Registered(...)`` line in ``BACKENDS``; ``simulate``'s
--backend choices, help and options come from the registrations without importing a backend."""

from __future__ import annotations

import pkgutil

import dalif_deploy.targets as targets
import pytest
from dalif_deploy.targets import registry
from dalif_deploy.targets.protocol import Option
from dalif_deploy.targets.registry import BACKENDS, Registered, get_backend

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import build_parser


def _backend_modules() -> list[str]:
    """The modules a backend may live in: every module of targets/, and the ``backend`` module
    of a target package (lava's others start processes or hook imports)."""
    found = []
    for info in pkgutil.iter_modules(targets.__path__, targets.__name__ + "."):
        found.append(f"{info.name}.backend" if info.ispkg else info.name)
    return found


def test_every_backend_class_is_registered():
    """A class in targets/ that declares a backend's name, kind and run is in BACKENDS."""
    classes = set()
    for name in _backend_modules():
        mod = __import__(name, fromlist=["_"])
        for k, v in vars(mod).items():
            if (isinstance(v, type) and v.__module__ == name and isinstance(
                    getattr(v, "name", None), str) and isinstance(getattr(v, "kind", None), str)
                    and callable(getattr(v, "run", None))):
                classes.add(f"{name}:{k}")
    assert classes == {e.target for e in BACKENDS.values()}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_each_registration_matches_its_class(name):
    cls = get_backend(name)  # refuses a class whose name, kind or options differ
    assert cls.options == BACKENDS[name].options


def test_a_registered_backend_shows_up_in_simulate_without_being_imported(monkeypatch):
    monkeypatch.setitem(BACKENDS, "mine", Registered(
        "no_such_module_anywhere:Mine", "nir", (Option("gain", float, "mine: the gain"),)))
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    p = sub.choices["simulate"]
    text = p.format_help()
    assert "mine" in next(a for a in p._actions if a.dest == "backend").choices
    assert "nir/norse/mine (.nir)" in text and "--gain GAIN" in text and "mine: the gain" in text
    with pytest.raises(DaLifError, match="backend 'mine' is not available"):
        get_backend("mine")


def test_a_registration_whose_options_differ_from_its_class_is_refused(monkeypatch):
    monkeypatch.setitem(BACKENDS, "nir", Registered(BACKENDS["nir"].target, "nir"))
    with pytest.raises(DaLifError, match="registered as backend 'nir'.*options"):
        registry.get_backend("nir")
