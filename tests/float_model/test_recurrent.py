"""Our own recurrent models end to end: a recurrent neuron layer exported as a NIR loop, the
digits-rows data set, and the shipped digits-rnn checkpoint through verify (demo style)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from dalif_deploy.converters.ir.graph import recurrent_edges
from dalif_deploy.converters.nir_to_fixed import quantize_graph
from dalif_deploy.converters.nir_to_torch import run_graph
from dalif_deploy.converters.torch_to_nir import export_nir

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import ROW_LEVELS, load_dataset
from dalif_deploy.float_model.loading import shipped_checkpoint
from dalif_deploy.float_model.zoo import build_model, default_config, run_model


def test_digits_rows_is_one_thermometer_coded_row_per_step():
    """Step t of sample i holds row t of digit i, channel k the pixels >= ROW_LEVELS[k]; T is
    fixed at 8 (asking for another T is refused, naming why)."""
    rows, img = load_dataset("digits-rows", samples=5), load_dataset("digits", samples=5)
    assert rows.x.shape == (5, 8, 3, 1, 8) and rows.encoding == "events"
    for k, level in enumerate(ROW_LEVELS):
        assert np.array_equal(rows.x[:, :, k, 0], (img.x[:, 0] >= level).astype(np.float32))
    assert np.array_equal(rows.y, img.y)
    with pytest.raises(DaLifError, match="one step per image row: T is 8, not 4"):
        load_dataset("digits-rows", timesteps=4)


def test_recurrent_layer_exports_as_a_loop_the_interpreter_runs_like_the_model():
    """digits-rnn's recurrent layer becomes lif1 (LIF) and lif1.w_rec (Linear, W_rec) in the
    loop lif1 -> lif1.w_rec -> lif1; the NIR reference gives the model's spikes (float64 on both
    sides: the two orders of summation agree to ~1e-15, far from any threshold here), and its
    quantised program holds one recurrent dense synapse with its own weight exponent."""
    torch.manual_seed(1)
    model = build_model(default_config("digits-rnn", width=24, v_th=0.3)).eval()
    with torch.no_grad():
        model.fc1.weight.mul_(3)
        model.lif1.w_rec.mul_(4)  # a recurrence that changes spikes
    g = export_nir(model, (3, 1, 8), 8, "events")
    model.double()
    assert recurrent_edges(g) == [("lif1", "lif1.w_rec")]
    assert np.array_equal(g.nodes["lif1.w_rec"].weight, model.lif1.w_rec.detach().numpy())
    x = torch.from_numpy(load_dataset("digits-rows", samples=40).x).double()
    _, ref = run_model(model, x, 8, "events", record_spikes=True)
    _, got = run_graph(g, x, 8, dtype=torch.float64)
    assert torch.equal(got["lif1"], ref["lif1"]) and ref["lif1"].sum() > 100
    with torch.no_grad():
        model.lif1.w_rec.zero_()
    _, flat = run_model(model, x, 8, "events", record_spikes=True)
    assert not torch.equal(flat["lif1"], ref["lif1"])  # the recurrence mattered
    program = quantize_graph(g)
    rec = [s for s in program.synapses if s.recurrent]
    assert [(s.name, s.kind, s.weights.shape) for s in rec] == [("lif1->lif1#1", "dense",
                                                                  (24, 24))]


def test_inspect_names_the_recurrent_layer_of_the_shipped_checkpoint():
    from dalif_deploy.verification.describe import describe, render

    d = describe(shipped_checkpoint("digits-rnn"))
    layers = {ly["name"]: ly for ly in d["layers"]}
    assert layers["lif1"]["recurrent"] == [128, 128] and "recurrent" not in layers["fc1"]
    assert "recurrent=[128, 128]" in render(d)


@pytest.mark.lava
def test_shipped_digits_rnn_verifies_end_to_end_in_demo_style(tmp_path, capsys):
    """`demo --model digits-rnn`: float, NIR, the 8-bit program on the whole test set and Lava
    on a subset. Fixed point is within 1 point of float (measured: 91.11 % vs 90.67 %), Lava is
    bit-exact with the emulator, and the run passes at its measured agreement (95.56 %,
    docs/MEASURED.md; the default 99 % is not met by this recurrent net)."""
    ckpt = shipped_checkpoint("digits-rnn")
    assert ckpt.is_file()
    assert main(["demo", "--model", "digits-rnn", "--min-agreement", "0.95", "--out-dir",
                 str(tmp_path), "--lava-samples", "8"]) == 0
    r = json.loads((tmp_path / "demo-report.json").read_text())
    assert r["model"] == "digits-rnn" and r["timesteps"] == 8 and r["samples"] == 450
    assert abs(r["fixed_accuracy"] - r["float_accuracy"]) <= 0.01, r
    assert r["float_accuracy"] > 0.85 and r["lava_bit_exact"] is True
    assert [ly["recurrent"] for ly in r["layers"]] == [True]
    assert "layer lif1 (rec)" in capsys.readouterr().out
