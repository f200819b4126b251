"""The backend contract: every registered backend, run through the registry on a small model
file of its kind, gives the shared result (type, keys, predictions, accuracy); a wrong file
kind or a foreign option is refused with a message that says what to do; a new backend is one
class plus one registry line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dalif_deploy.targets.protocol import (
    RESULT_KEYS,
    BackendRun,
    FixedPointResult,
    ModelInput,
    Option,
    SimulationResult,
)
from dalif_deploy.targets.registry import (
    BACKENDS,
    backend_options,
    get_backend,
    run_backend,
    simulate,
)
from helpers.model_files import BACKEND_PARAMS, DIGITS_CNN, KIND_FILE

from dalif_deploy import DaLifError
from dalif_deploy.datasets.loaders import load_dataset

SAMPLES = 12  # with batch size 5: two full batches and a partial one

#: the JSON keys of each backend after the common ones (RESULT_KEYS), in order
EXTRA_KEYS = {
    "torch": ["model_name", "timesteps", "encoding", "checkpoint_sha256"],
    "nir": ["timesteps", "dt", "encoding", "conventions"],
    "norse": ["timesteps", "dt", "encoding", "conventions", "adaptations"],
    "emulator": ["mode", "timesteps", "outputs", "populations", "spike_counts", "u_wraps",
                 "v_saturations", "input_clipped", "resources", "activity", "energy",
                 "neurobench"],
    "lava": ["lava_run_seconds", "timesteps", "outputs", "populations", "spike_counts",
             "samples_per_compiled_run", "input_clipped"],
    "onnx": ["timesteps", "encoding"],
}
#: file kind -> the model file fixture key
def test_every_test_here_covers_every_registered_backend():
    assert set(EXTRA_KEYS) == set(BACKENDS)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_result_contract(name, model_files):
    cls = get_backend(name)
    r = run_backend(model_files[KIND_FILE[cls.kind]], name, samples=SAMPLES, batch_size=5,
                    progress=False)
    assert isinstance(r, SimulationResult) and r.backend == name
    assert r.dataset == "digits" and r.split == "test"  # the data set the file records
    assert r.samples == len(r.predictions) == SAMPLES
    assert r.predictions.dtype == np.int64 and set(r.predictions.tolist()) <= set(range(10))
    labels = load_dataset("digits", "test").y[:SAMPLES]
    assert r.accuracy == float((r.predictions == labels).mean())
    assert r.accuracy >= 0.5  # a trained model: its predictions are not noise
    assert r.seconds >= 0
    d = r.to_dict()
    assert list(d) == [*RESULT_KEYS, *EXTRA_KEYS[name]]
    assert d["predictions"] == r.predictions.tolist() and d["samples"] == SAMPLES
    json.dumps(d)  # JSON-able as it is


@pytest.mark.lava
def test_emulator_and_lava_agree_through_the_registry(model_files):
    """Same program, same samples: the two fixed-point backends report the same integers."""
    emu, lava = (simulate(model_files["fxp"], n, samples=6, batch_size=4, progress=False)
                 for n in ("emulator", "lava"))
    for key in ("predictions", "outputs", "spike_counts", "populations", "input_clipped"):
        assert emu[key] == lava[key], key


@pytest.mark.parametrize("name", list(BACKENDS))
def test_wrong_file_kind_names_the_backends_that_fit(name, model_files):
    other = "nir" if get_backend(name).kind == "checkpoint" else "checkpoint"
    fits = " or ".join(n for n in BACKENDS if get_backend(n).kind == other)
    with pytest.raises(DaLifError, match=f"backend '{name}' runs a .*Use --backend {fits},"):
        run_backend(model_files[KIND_FILE[other]], name, samples=2, progress=False)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_foreign_option_is_refused(name, model_files):
    own = {o.name for o in get_backend(name).options}
    foreign = next(k for k in backend_options() if k not in own)
    users = ", ".join(backend_options()[foreign][1])
    with pytest.raises(DaLifError, match=f"--{foreign} do not apply to backend '{name}' "
                                         rf"\(only to {users}\)"):
        run_backend(model_files[KIND_FILE[get_backend(name).kind]], name, samples=2, progress=False,
                    **{foreign: 1.0})


def test_unknown_backend_lists_the_registered_ones():
    with pytest.raises(DaLifError, match=r"unknown backend 'gpu'; choose one of \['torch'"):
        get_backend("gpu")


class ConstantBackend:
    """A backend written as a test: predicts ``label`` for every sample of a checkpoint's data."""

    name = "constant"
    kind = "checkpoint"
    options = (Option("label", int, "the class every sample gets", 3),)

    def __init__(self, model_path: str, *, label: int = 3) -> None:
        self.label = label
        self.input = ModelInput("analog", (1, 8, 8), 4, "digits")

    def run(self, data, *, batch_size: int, progress: bool) -> BackendRun:
        return BackendRun(np.full(len(data), self.label), {"label": self.label})


def test_a_new_backend_is_one_class_and_one_registry_line(monkeypatch, capsys):
    """Registered by one line, it runs through the registry and gets its own CLI option."""
    from dalif_deploy.targets import registry as backends

    from dalif_deploy.cli import main

    monkeypatch.setitem(backends.BACKENDS, "constant", backends.Registered(
        f"{__name__}:ConstantBackend", "checkpoint", ConstantBackend.options))
    r = run_backend(DIGITS_CNN, "constant", samples=20, progress=False, label=7)
    labels = load_dataset("digits", "test").y[:20]
    assert r.predictions.tolist() == [7] * 20 and r.accuracy == float((labels == 7).mean())
    assert r.to_dict()["label"] == 7
    assert main(["simulate", str(DIGITS_CNN), "--backend", "constant", "--label", "2", "--samples",
                 "5", "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictions"] == [2] * 5 and out["backend"] == "constant"


def test_a_registration_that_does_not_match_its_class_is_refused(monkeypatch):
    from dalif_deploy.targets import registry as backends

    monkeypatch.setitem(backends.BACKENDS, "other", backends.Registered(
        f"{__name__}:ConstantBackend", "checkpoint", ConstantBackend.options))
    with pytest.raises(DaLifError, match="registered as backend 'other' but declares name "
                                         "'constant'"):
        get_backend("other")


def test_extras_may_not_overwrite_the_common_keys():
    r = SimulationResult("x", "m", "digits", "test", np.zeros(2, np.int64), 0.5, 0.1,
                         {"accuracy": 1.0})
    with pytest.raises(DaLifError, match=r"reports \['accuracy'\] as extras"):
        r.to_dict()


def test_fixed_point_result_is_what_the_emulator_returns(model_files):
    from dalif_deploy.targets.emulator import emulate

    from dalif_deploy.fixedpoint.fxp_format import load_program

    prog = load_program(model_files["fxp"])
    x = load_dataset("digits", "test").head(3).x
    r = emulate(prog, x, record=True)
    assert isinstance(r, FixedPointResult)
    assert r.spiking == [p.name for p in prog.populations if p.name != prog.readout.population]
    for p in prog.populations:  # final v: the recorded v after the last step
        np.testing.assert_array_equal(r.final_v[p.name], r.v[p.name][-1])
    assert emulate(prog, x).final_v == {}  # not recorded: no per-neuron state kept
