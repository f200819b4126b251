"""NIR export: the encoding of docs/DESIGN.md section 3, every zoo model, unsupported layers, the
checkpoint/CLI path and ``inspect``."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch
from dalif_deploy.converters.ir.graph import describe_nir, read_nir
from dalif_deploy.converters.nir_to_torch import run_graph
from dalif_deploy.converters.torch_to_nir import export_checkpoint, export_nir, write_nir
from helpers.nir_helpers import lively_model, spike_diff
from torch import nn

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.float_model.checkpoint import file_sha256, save_checkpoint
from dalif_deploy.float_model.zoo import dalif_layers, default_config, run_model
from dalif_deploy.neurons.dalif import DALIF


def test_lif_encoding_recovers_decays_exactly():
    """tau = 1/(1-beta), r = alpha/(1-beta), full-shape arrays, v_leak = v_reset = 0, metadata;
    1 - 1/tau and r/tau give back the float32 alpha and beta exactly."""
    model = lively_model("digits-cnn", granularity="channel")
    g = export_nir(model, (1, 8, 8), 4)
    for name, lif in dalif_layers(model).items():
        node = g.nodes[name]
        assert isinstance(node, nir.LIF)
        shape = tuple(node.tau.shape)
        assert shape[0] == lif.channels and len(shape) == 3
        for arr in (node.r, node.v_leak, node.v_reset, node.v_threshold):
            assert arr.shape == shape
        assert not node.v_leak.any() and not node.v_reset.any()
        assert (node.v_threshold == lif.v_th).all()
        beta = torch.from_numpy(1 - 1 / node.tau).float()[:, 0, 0]
        alpha = torch.from_numpy(node.r / node.tau).float()[:, 0, 0]
        assert torch.equal(beta, lif.beta.detach()) and torch.equal(alpha, lif.alpha.detach())
        md = node.metadata
        assert md["spike_condition"] == ">=" and md["dt"] == 1.0
        assert md["neuron_model"] == "DA-LIF" and md["discretisation"] == "euler"
        assert np.allclose(md["alpha"], lif.alpha.detach().numpy())
    assert isinstance(g.nodes["fc"], nir.Affine) and ("fc", "output") in g.edges
    assert g.metadata["readout"] == "mean over T" and g.metadata["timesteps"] == 4


def test_residual_fanin_is_summed_edges():
    g = export_nir(lively_model("digits-resnet"), (1, 8, 8), 4)
    into = sorted(a for a, b in g.edges if b == "layers.0.lif2")
    assert into == ["layers.0.conv2", "lif1"]  # identity shortcut: LIF spikes straight in
    into = sorted(a for a, b in g.edges if b == "layers.1.lif2")
    assert into == ["layers.1.conv2", "layers.1.shortcut.0"]  # 1x1 conv (+ folded BN)
    assert not any(isinstance(n, type(None)) for n in g.nodes.values())
    assert not [k for k in g.nodes if "bn" in k or k.endswith("shortcut.1")]


@pytest.mark.parametrize("name", ["resnet19", "vgg11"])
def test_all_zoo_models_export_and_run(name, tmp_path):
    """Small-width resnet19/vgg11 with random weights export, re-import and reproduce."""
    model = lively_model(name, width=4)
    shape = tuple(default_config(name)["input_shape"])
    write_nir(export_nir(model, shape, 2), tmp_path / "m.nir")
    g = read_nir(tmp_path / "m.nir")
    assert sum(isinstance(n, nir.LIF) for n in g.nodes.values()) == len(dalif_layers(model))
    x = torch.rand(3, *shape)
    with torch.no_grad():
        ref, ref_s = run_model(model.double(), x.double(), 2, record_spikes=True)
    out, s = run_graph(g, x, 2, dtype=torch.float64)
    diff, total, _ = spike_diff(ref_s, s)
    assert diff == 0 and torch.allclose(ref, out, atol=1e-9)


class _Custom(nn.Module):
    """Not a zoo model: Linear -> BN1d -> DA-LIF -> Identity -> torch.flatten -> Linear."""

    def __init__(self, bad: nn.Module | None = None):
        super().__init__()
        self.fc1, self.bn = nn.Linear(12, 6), nn.BatchNorm1d(6)
        self.lif, self.id, self.fc2 = DALIF(v_th=0.2), nn.Identity(), nn.Linear(6, 3)
        self.bad = bad

    def forward(self, x):
        s = self.lif(self.bn(self.fc1(torch.flatten(x, 1))))
        if self.bad is not None:
            s = self.bad(s)
        return self.fc2(self.id(s))


def test_custom_module_exports():
    m = _Custom().eval()
    g = export_nir(m, (3, 4), 3)
    assert [type(g.nodes[k]).__name__ for k in ("flatten", "fc1", "lif", "fc2")] == [
        "Flatten", "Affine", "LIF", "Affine"]
    assert g.nodes["lif"].tau.shape == (6,)
    x = torch.rand(5, 3, 4)
    with torch.no_grad():
        ref = run_model(m.double(), x.double(), 3)
    assert torch.allclose(run_graph(g, x, 3, dtype=torch.float64)[0], ref, atol=1e-12)


@pytest.mark.parametrize("bad,word", [(nn.ReLU(), "ReLU"), (nn.MaxPool1d(1), "MaxPool1d"),
                                      (nn.BatchNorm1d(6), "batch-norm")])
def test_unsupported_module_is_named(bad, word):
    with pytest.raises(DaLifError, match=word):
        export_nir(_Custom(bad).eval(), (3, 4), 3)


def test_unsupported_function_is_named():
    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.sigmoid(x))

    with pytest.raises(DaLifError, match="sigmoid"):
        export_nir(Sig(), (4,), 2)


def test_export_checkpoint_cli_and_inspect(tmp_path, capsys):
    """CLI export of a versioned checkpoint and of a plain state_dict; metadata; inspect."""
    model = lively_model("digits-cnn", width=4)
    ckpt = tmp_path / "m.pt"
    cfg = default_config("digits-cnn", width=4, v_th=0.3)
    save_checkpoint(ckpt, model, cfg, 3, {"name": "digits", "encoding": "analog",
                                          "input_shape": [1, 8, 8],
                                          "normalization": "x = pixel / 16"}, {})
    out = tmp_path / "m.nir"
    assert main(["export", str(ckpt), "-o", str(out)]) == 0
    md = read_nir(out).metadata
    assert md["source_checkpoint_sha256"] == file_sha256(ckpt)
    assert (md["timesteps"], md["input_encoding"], md["readout"]) == (3, "analog",
                                                                      "mean over T")
    assert list(md["input_shape"]) == [1, 8, 8] and md["input_normalization"]
    assert md["dalif_deploy_version"] and md["dt"] == 1.0
    d = describe_nir(out)
    assert [n["name"] for n in d["nodes"]][:3] == ["input", "conv1", "lif1"]
    assert d["nodes"][2]["output_shape"] == [4, 8, 8]
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["metadata"]["timesteps"] == 3 and len(shown["nodes"]) == 8
    sd = tmp_path / "sd.pt"
    torch.save(model.state_dict(), sd)
    assert main(["export", str(sd), "-o", str(tmp_path / "sd.nir")]) == 2  # needs --model
    with pytest.raises(DaLifError, match="weights do not fit"):
        export_checkpoint(sd, tmp_path / "sd.nir", model="digits-cnn", timesteps=2)  # width 16
    assert not (tmp_path / "sd.nir").exists()
