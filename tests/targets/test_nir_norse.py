"""Norse 1.1.0 runs our graphs (through targets/norse's adapter) and agrees with our float
reference on the whole digits test set: identical predictions away from threshold ties, at most
0.1 % of spikes differ (Norse integrates v += dt/tau (r x - v) in float32, we compute
beta*v + alpha*x: rounding can flip a spike whose membrane sits at the threshold, and which way
depends on the CPU; nir_helpers.away_from_ties says which samples are ties)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from dalif_deploy.converters.ir.graph import read_nir
from dalif_deploy.converters.nir_to_torch import run_graph
from dalif_deploy.converters.torch_to_nir import export_checkpoint, export_nir, write_nir
from dalif_deploy.targets.norse import run_norse
from helpers import REPO_ROOT
from helpers.nir_helpers import away_from_ties, lively_model, spike_diff

from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import load_dataset
from dalif_deploy.float_model.loading import load_model

ROOT = REPO_ROOT
MAX_SPIKE_FRACTION = 1e-3


@pytest.fixture(scope="module")
def x():
    return torch.from_numpy(load_dataset("digits").x)


def _agree(graph, model, x, T):
    ref_logits, ref_spikes = run_graph(graph, x, T)
    logits, spikes, notes = run_norse(graph, x, T, 1.0, record=True)
    diff, total, rate = spike_diff(ref_spikes, spikes)
    assert rate > 0.05
    decisive = torch.from_numpy(away_from_ties(model, x, T)[0])
    assert decisive.float().mean() >= 0.5  # the comparison is not vacuous
    assert torch.equal(ref_logits.argmax(1)[decisive], logits.argmax(1)[decisive])
    assert diff <= MAX_SPIKE_FRACTION * total, f"{diff} of {total} spikes differ"
    return notes


def test_norse_agrees_on_random_resnet(x, tmp_path):
    """Per-channel decays (r != 1 everywhere), identity and conv shortcuts, average pooling."""
    path = tmp_path / "r.nir"
    model = lively_model("digits-resnet", granularity="channel")
    write_nir(export_nir(model, (1, 8, 8), 4), path)
    notes = " | ".join(_agree(read_nir(path), model, x, 4))
    for needed in ("r folded", "identity shortcut", "AvgPool2d", "Flatten", "execution order"):
        assert needed in notes, needed


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_norse_agrees_on_shipped_checkpoints(name, x, tmp_path):
    ckpt = ROOT / "dalif_deploy" / "checkpoints" / f"{name}.pt"
    if not ckpt.exists():
        pytest.skip(f"{ckpt.name} not trained yet")
    export_checkpoint(ckpt, tmp_path / "m.nir")
    g = read_nir(tmp_path / "m.nir")
    _agree(g, load_model(ckpt)[0], x, int(g.metadata["timesteps"]))


def test_simulate_cli_nir_and_norse(tmp_path, capsys):
    path = tmp_path / "c.nir"
    model = lively_model("digits-cnn", width=4)
    write_nir(export_nir(model, (1, 8, 8), 3), path)
    preds = {}
    for backend in ("nir", "norse"):
        out = tmp_path / f"{backend}.json"
        assert main(["simulate", str(path), "--backend", backend, "--samples", "60",
                     "--json", str(out)]) == 0
        res = json.loads(out.read_text())
        assert res["samples"] == 60 and res["dt"] == 1.0 and res["timesteps"] == 3
        preds[backend] = res["predictions"]
    decisive = away_from_ties(model, torch.from_numpy(load_dataset("digits").x[:60]), 3)[0]
    assert decisive.mean() >= 0.5
    assert (np.array(preds["nir"]) == np.array(preds["norse"]))[decisive].all()
    assert main(["simulate", str(path), "--backend", "nir", "--dt", "0.5"]) == 2  # not ours
