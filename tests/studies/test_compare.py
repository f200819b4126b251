"""``compare``: every neuron at every T trained, deployed and measured; the table, the JSON and
the plot agree with each other and with the models' parameter counts."""

from __future__ import annotations

import json
import re

import pytest

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.neurons import neuron_keys
from dalif_deploy.studies.compare import (
    FIGURES,
    CompareOptions,
    compare_neurons,
    format_table,
    summarise,
)

TINY = {"model": "digits-cnn", "epochs": 1, "width": 4, "samples": 48, "progress": False}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    opt = CompareOptions(neurons=neuron_keys(), timesteps=(1, 2), seeds=(0,),
                         workdir=tmp_path_factory.mktemp("compare"), **TINY)
    return compare_neurons(opt)


def test_one_run_per_neuron_and_T_with_consistent_figures(compared):
    runs, table = compared["runs"], compared["table"]
    assert [(r["neuron"], r["timesteps"]) for r in runs] == [
        (n, t) for t in (1, 2) for n in neuron_keys()]
    assert compared["settings"]["test_samples"] == 48
    by = {(r["neuron"], r["timesteps"]): r for r in table}
    for t in (1, 2):
        lif, plif, dalif = by["lif", t], by["plif", t], by["dalif", t]
        # the same architecture: only the neuron parameters differ (2 layers)
        assert lif["neuron_parameters"] == 0
        assert plif["parameters"] == lif["parameters"] + 2 == lif["parameters"] + \
            plif["neuron_parameters"]
        assert dalif["parameters"] == lif["parameters"] + 4 == lif["parameters"] + \
            dalif["neuron_parameters"]
        for r in (lif, plif, dalif):
            assert 0 <= r["float_accuracy"] <= 1 and 0 <= r["fixed_accuracy"] <= 1
            assert r["synops"] > 0 and r["spikes"] > 0
            assert r["accuracy_drop_pp"] == pytest.approx(
                100 * (r["float_accuracy"] - r["fixed_accuracy"]))
            assert r["float_accuracy_std"] is None  # one seed: undefined
    text = format_table(compared)
    for n in neuron_keys():
        assert f"\n{n:<6}" in text
    assert f"{by['dalif', 2]['parameters']:,}" in text


def test_summary_averages_seeds_with_the_sample_std():
    runs = [{"neuron": "lif", "timesteps": 2, "seed": s, "float_accuracy": a,
             "fixed_accuracy": a - 0.1, "synops": 100.0 * (s + 1), "spikes": 10.0,
             "parameters": 7, "neuron_parameters": 0, "neuron_layers": 2}
            for s, a in ((0, 0.5), (1, 0.7))]
    (row,) = summarise(runs)
    assert row["seeds"] == [0, 1] and row["float_accuracy"] == pytest.approx(0.6)
    assert row["float_accuracy_std"] == pytest.approx(0.1414213562, rel=1e-9)
    assert row["synops"] == 150.0 and row["accuracy_drop_pp"] == pytest.approx(10.0)


def test_cli_prints_the_table_and_writes_json_and_plot(tmp_path, capsys):
    js, png = tmp_path / "c.json", tmp_path / "c.png"
    rc = main(["compare", "--neurons", "lif,plif", "-T", "1", "--epochs", "1", "--width", "4",
               "--samples", "16", "--json", str(js), "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and "lif" in out and "plif" in out and "SynOps/inf" in out
    # one seed: its std is undefined, said as n=1 (not a "± 0.0" that reads as measured)
    assert "n=1" in out and "±" not in out and ": 1 epoch, " in out
    data = json.loads(js.read_text())
    assert all(r[f"{k}_std"] is None for r in data["table"] for k in FIGURES)
    assert [r["neuron"] for r in data["table"]] == ["lif", "plif"]
    assert data["settings"]["timesteps"] == [1] and data["settings"]["epochs"] == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,match", [
    (["--neurons", "dalif,izhikevich"], "unknown neuron 'izhikevich'"),
    (["--neurons", "lif,lif"], "repeat"),
    (["-T", "0"], r"--timesteps: must be an integer in \[1, 65536\], got 0"),
    (["--seeds", "1,1"], "repeats"),
    (["--samples", "0"], r"--samples: must be an integer in \[1, "),
    (["--dataset", "nope"], "unknown data set"),
])
def test_cli_bad_input_is_one_error_line(argv, match, capsys, tmp_path):
    rc = main(["compare", "--epochs", "1", "--width", "2", "--json", str(tmp_path / "x.json"),
               *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(match, err), err
    assert not (tmp_path / "x.json").exists()


def test_a_setting_one_neuron_cannot_take_fails_before_training():
    with pytest.raises(DaLifError, match="tau not a setting of neuron 'dalif'"):
        compare_neurons(CompareOptions(neurons=("lif", "dalif"), config={"tau": 3.0}, **TINY))


def test_a_user_npz_needs_its_test_samples(tmp_path):
    with pytest.raises(DaLifError, match="give the test samples with --test-dataset"):
        compare_neurons(CompareOptions(dataset=str(tmp_path / "train.npz"), **TINY))


def test_compare_runs_the_recurrent_digits_rnn_with_every_neuron(tmp_path):
    """digits-rnn on digits-rows (T = 8) with each neuron: the same architecture, W_rec counted
    as a synapse (not a neuron parameter), each deployed through NIR and the 8-bit program."""
    opt = CompareOptions(model="digits-rnn", dataset="digits-rows", neurons=neuron_keys(),
                         timesteps=(8,), seeds=(0,), epochs=1, width=6, samples=24,
                         progress=False, workdir=tmp_path)
    by = {r["neuron"]: r for r in compare_neurons(opt)["table"]}
    lif, plif, dalif = by["lif"], by["plif"], by["dalif"]
    weights = 24 * 6 + 6 + 6 * 6 + 6 * 10 + 10  # fc1, W_rec, readout
    assert lif["parameters"] == weights and lif["neuron_parameters"] == 0
    assert (plif["neuron_parameters"], dalif["neuron_parameters"]) == (1, 2)
    assert all(0 <= r["fixed_accuracy"] <= 1 for r in by.values())
