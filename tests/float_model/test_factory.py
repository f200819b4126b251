"""User architectures (issue 25): checkpoints recording a factory, ``--model-code`` on every
command, and a factory string in a file never imported on its own."""

from __future__ import annotations

import pytest
import torch

import dalif_deploy as dd
from dalif_deploy.cli import main

NET = '''
import torch
from torch import nn
import dalif_deploy as dd


class Small(nn.Module):
    def __init__(self, width=4, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.lif = dd.DALIF(width)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(width * 64, classes)

    def forward(self, x):
        return self.fc(self.flat(self.lif(self.conv(x))))


def build(width=4, classes=10):
    return Small(width, classes)


def build_with(neuron="dalif", width=4):  # compare's form: the neuron model by its key
    from dalif_deploy.neurons import neuron_for_key

    model = Small(width)
    model.lif = neuron_for_key(neuron).module_type(channels=width)
    return model
'''
#: a 1-D (time-series) network: Conv1d, AvgPool1d on [N, C, L] data
NET_1D = '''
from torch import nn
import dalif_deploy as dd


class Series(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.conv = nn.Conv1d(2, width, 3, padding=1)
        self.lif = dd.DALIF(width, v_th=0.3)
        self.pool = nn.AvgPool1d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(width * 8, 10)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.lif(self.conv(x)))))


def build(width=4):
    return Series(width)
'''
#: a module that leaves a file behind when imported: it must never be imported by a file's say
EVIL = '''
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("ran")


def build(**kw):
    raise SystemExit("never")
'''


def _dataset() -> dict:
    return {"name": "digits", "encoding": "analog", "input_shape": [1, 8, 8],
            "normalization": "x/16"}


def _save(tmp_path, factory: str, name: str = "mynet", width: int = 4):
    (tmp_path / "mynet.py").write_text(NET)
    torch.manual_seed(0)
    ns: dict = {}
    exec(compile(NET, "mynet", "exec"), ns)  # the same class, built here without importing
    model = ns["build"](width=width)
    path = tmp_path / f"{name}.pt"
    dd.save_checkpoint(path, model, dd.factory_config(name, factory, {"width": width},
                                                      [1, 8, 8], 10), 2, _dataset(), {})
    return path, model


def test_a_factory_checkpoint_loads_only_with_the_factory_named(tmp_path):
    factory = f"{tmp_path / 'mynet.py'}:build"
    path, model = _save(tmp_path, factory)
    with pytest.raises(dd.DaLifError, match=r"--model-code .*mynet.py:build"):
        dd.load_model(path)
    net, ckpt = dd.load_model(path, model_code=factory)
    assert ckpt.config["factory"] == factory and ckpt.config["config"] == {"width": 4}
    for k, v in model.state_dict().items():
        assert torch.equal(net.state_dict()[k], v)
    with dd.use_model_code(factory):  # what the CLI's --model-code does
        assert dd.load_model(path)[1].model_name == "mynet"


def test_the_cli_names_the_recorded_factory_and_the_flag(tmp_path, capsys):
    factory = f"{tmp_path / 'mynet.py'}:build"
    path, _ = _save(tmp_path, factory)
    for argv in (["export", str(path), "-o", str(tmp_path / "m.nir")],
                 ["simulate", str(path), "--backend", "torch", "--samples", "2"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
        assert f"pass --model-code {factory}" in err[0]
    assert not (tmp_path / "m.nir").exists()
    assert main(["export", str(path), "--model-code", factory, "-o",
                 str(tmp_path / "m.nir")]) == 0
    assert main(["simulate", str(path), "--model-code", factory, "--backend", "torch",
                 "--samples", "4", "--quiet"]) == 0
    assert main(["inspect", str(path), "--model-code", factory]) == 0
    out = capsys.readouterr().out
    assert "mynet" in out and "parameters" in out and "conv" in out


def test_inspect_describes_a_factory_record_without_building_it(tmp_path, capsys):
    factory = f"{tmp_path / 'mynet.py'}:build"
    path, _ = _save(tmp_path, factory)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert factory in out and '"width": 4' in out and "T=2" in out and "digits" in out
    assert f"pass --model-code {factory} to build it" in out and "layers:" not in out
    assert main(["inspect", str(path), "--json"]) == 0
    import json

    d = json.loads(capsys.readouterr().out)
    assert d["config"]["factory"] == factory and d["num_parameters"] is None


@pytest.mark.parametrize("form", ["module", "path"])
def test_a_hostile_factory_in_a_file_is_never_imported(tmp_path, monkeypatch, capsys, form):
    (tmp_path / "evil_model.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, were anything to import it
    monkeypatch.chdir(tmp_path)
    factory = "evil_model:build" if form == "module" else f"{tmp_path / 'evil_model.py'}:build"
    path, _ = _save(tmp_path, factory, "evil")
    assert main(["inspect", str(path)]) == 0  # the record is shown, the code never run
    assert f"--model-code {factory}" in capsys.readouterr().out
    for argv in (["export", str(path), "-o", "e.nir"],
                 ["simulate", str(path), "--backend", "torch"],
                 ["verify", str(path), "--lava-samples", "0"],
                 ["sweep", str(path), "--weight-bits", "8"],
                 ["finetune", str(path), "--weight-bits", "4", "-o", "f.pt"]):
        assert main(argv) == 2, argv
        assert "--model-code" in capsys.readouterr().err
    with pytest.raises(dd.DaLifError):
        dd.load_model(path)
    assert not (tmp_path / "IMPORTED").exists()


def test_weights_that_do_not_fit_the_factory_name_the_first_key(tmp_path, capsys):
    factory = f"{tmp_path / 'mynet.py'}:build"
    path, _ = _save(tmp_path, factory, width=4)
    other = tmp_path / "wide.py"
    other.write_text(NET.replace("return Small(width, classes)", "return Small(6, classes)"))
    assert main(["export", str(path), "--model-code", f"{other}:build", "-o",
                 str(tmp_path / "w.nir")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'conv.weight' is [4, 1, 3, 3] in the checkpoint but " \
        "[6, 1, 3, 3] in the model" in err[0], err


def test_bad_factories_are_one_error_line(tmp_path, capsys):
    path, _ = _save(tmp_path, f"{tmp_path / 'mynet.py'}:build")
    for code, says in (("not a factory", "is not a factory"),
                       (f"{tmp_path / 'none.py'}:build", "no such file"),
                       (f"{tmp_path / 'mynet.py'}:nothing", "has no function 'nothing'"),
                       ("no_such_module_here:build", "importing no_such_module_here failed")):
        assert main(["inspect", str(path), "--model-code", code]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err


def test_a_zoo_checkpoint_refuses_model_code_and_an_unknown_name_needs_a_factory(tmp_path):
    with pytest.raises(dd.DaLifError, match="drop --model-code"):
        dd.load_model(dd.shipped_checkpoint(), model_code="x.py:build")
    with pytest.raises(dd.DaLifError, match="record your architecture's factory"):
        dd.save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2), {"name": "mynet"}, 2,
                           _dataset(), {})
    assert not (tmp_path / "x.pt").exists()


def test_a_plain_state_dict_loads_with_model_code(tmp_path):
    (tmp_path / "mynet.py").write_text(NET)
    factory = f"{tmp_path / 'mynet.py'}:build"
    net = dd.load_model(_save(tmp_path, factory)[0], model_code=factory)[0]
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(dd.DaLifError, match="--model-code FACTORY"):
        dd.load_model(tmp_path / "plain.pt")
    again, ckpt = dd.load_model(tmp_path / "plain.pt", model_code=factory)
    assert ckpt.config["input_shape"] == [1, 8, 8] and ckpt.model_name == "build"


def test_train_takes_any_module_deterministically(tmp_path):
    ns: dict = {}
    exec(compile(NET, "mynet", "exec"), ns)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model, metrics = dd.train(ns["build"](), "digits", epochs=1, timesteps=2, seed=3,
                                  progress=False)
        runs.append(model.state_dict())
        assert 0.0 <= metrics["test_accuracy"] <= 1.0 and not model.training
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_train_cli_with_model_code_records_the_factory(tmp_path, capsys):
    (tmp_path / "mynet.py").write_text(NET)
    factory = f"{tmp_path / 'mynet.py'}:build"
    out = tmp_path / "t.pt"
    assert main(["train", "--model-code", factory, "--config", '{"width": 3}', "--name",
                 "mine", "--epochs", "1", "-T", "2", "--out", str(out), "--quiet"]) == 0
    ckpt = dd.load_checkpoint(out)  # reading the record imports nothing
    assert ckpt.config == {"name": "mine", "factory": factory, "config": {"width": 3},
                           "input_shape": [1, 8, 8], "num_classes": 10}
    assert ckpt.dataset["name"] == "digits" and ckpt.timesteps == 2
    net = dd.load_model(out, model_code=factory)[0]
    assert net.conv.out_channels == 3
    assert main(["train", "--model-code", factory, "--config", "[1]", "--out",
                 str(tmp_path / "u.pt")]) == 2
    assert "JSON object" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "u.pt")]) == 2
    assert "--model-code FACTORY" in capsys.readouterr().err


def test_sweep_and_finetune_take_model_code(tmp_path, capsys):
    factory = f"{tmp_path / 'mynet.py'}:build"
    path, _ = _save(tmp_path, factory)
    assert main(["sweep", str(path), "--model-code", factory, "--weight-bits", "8,4"]) == 0
    assert "mynet" in capsys.readouterr().out
    out = tmp_path / "ft.pt"
    assert main(["finetune", str(path), "--model-code", factory, "--weight-bits", "4",
                 "--epochs", "1", "-o", str(out), "--quiet"]) == 0
    ckpt = dd.load_checkpoint(out)  # still a user architecture, recording the same factory
    assert ckpt.config["factory"] == factory and ckpt.finetune["weight_bits"] == 4


def test_compare_trains_the_named_architecture_with_each_neuron(tmp_path, capsys):
    (tmp_path / "mynet.py").write_text(NET)
    factory = f"{tmp_path / 'mynet.py'}:build_with"
    assert main(["compare", "--model-code", factory, "--neurons", "dalif,lif", "-T", "2",
                 "--epochs", "1", "--dataset", "digits", "--samples", "16", "--json",
                 str(tmp_path / "c.json"), "--quiet"]) == 0
    import json

    runs = json.loads((tmp_path / "c.json").read_text())["runs"]
    assert [r["neuron"] for r in runs] == ["dalif", "lif"]
    assert runs[0]["neuron_parameters"] == 2 and runs[1]["neuron_parameters"] == 0


def test_model_code_that_builds_nothing_is_a_warning(tmp_path, capsys):
    factory = f"{tmp_path / 'mynet.py'}:build"
    path, _ = _save(tmp_path, factory)
    assert main(["export", str(path), "--model-code", factory, "-o",
                 str(tmp_path / "m.nir")]) == 0
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "m.nir"), "--model-code", factory, "--backend",
                 "nir", "--samples", "2", "--quiet"]) == 0
    assert "warning: --model-code" in capsys.readouterr().err


def test_a_1d_network_runs_every_command_on_a_1d_npz(tmp_path, capsys):
    import json

    import numpy as np

    (tmp_path / "series.py").write_text(NET_1D)
    factory = f"{tmp_path / 'series.py'}:build"
    rng = np.random.default_rng(0)
    data = tmp_path / "series.npz"
    np.savez(data, x=rng.random((40, 2, 16), dtype=np.float32),
             y=rng.integers(0, 10, 40), encoding="analog")
    ns: dict = {}
    exec(compile(NET_1D, "series", "exec"), ns)
    torch.manual_seed(0)
    path = tmp_path / "series.pt"
    dd.save_checkpoint(path, ns["build"](), dd.factory_config("series", factory, {"width": 4},
                                                              [2, 16], 10), 2,
                       {"name": str(data), "encoding": "analog", "input_shape": [2, 16],
                        "normalization": "as generated"}, {})
    nir_path, fxp = tmp_path / "s.nir", tmp_path / "s.fxp"
    assert main(["export", str(path), "--model-code", factory, "-o", str(nir_path)]) == 0
    assert main(["quantize", str(nir_path), "--calibrate", str(data), "-o", str(fxp),
                 "--quiet"]) == 0
    for model, backend in ((path, "torch"), (nir_path, "nir"), (fxp, "emulator")):
        code = ["--model-code", factory] if backend == "torch" else []
        assert main(["simulate", str(model), *code, "--backend", backend, "--dataset",
                     str(data), "--samples", "8", "--quiet"]) == 0, backend
    out = tmp_path / "v.json"
    assert main(["verify", str(path), "--model-code", factory, "--dataset", str(data),
                 "--lava-samples", "0", "--min-agreement", "0", "--max-accuracy-drop", "100",
                 "--json", str(out), "--quiet"]) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["nir_spike_mismatches"] == 0 and result["layers"][0]["neurons"] == 4 * 16
