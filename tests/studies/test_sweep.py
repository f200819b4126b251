"""Precision: ``verify --weight-bits``, ``sweep`` (table, plot, JSON) and their bad values."""

import json

import numpy as np
import pytest
from dalif_deploy.targets.emulator import emulate
from helpers import REPO_ROOT

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import load_dataset
from dalif_deploy.float_model.loading import load_model
from dalif_deploy.studies.finetune import quantize_model
from dalif_deploy.studies.sweep import SweepOptions, parse_weight_bits
from dalif_deploy.verification.pipeline import VerifyOptions, verify_model

ROOT = REPO_ROOT
SHIPPED = ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


def test_verify_runs_at_the_precision_asked():
    model, ckpt = load_model(SHIPPED)
    test = load_dataset("digits", "test", timesteps=4).head(96)
    cal = load_dataset("digits", "train", timesteps=4).x[:512]
    result, art = verify_model(model, test, cal, 4,
                               options=VerifyOptions(weight_bits=3, lava_samples=0,
                                                     progress=False))
    program = art["program"]
    assert result["weight_bits"] == 3 and {s.weight_bits for s in program.synapses} == {3}
    want = emulate(quantize_model(model, test, cal, 4, 3), test.x).predictions
    assert result["fixed_accuracy"] == float((want == test.y).mean())
    conv = next(s for s in program.synapses if s.kind == "conv")
    assert np.all(conv.weights % 2 ** 5 == 0)  # 3-bit mantissas in Lava's 8-bit field


@pytest.mark.parametrize("bits", [0, 1, 9, 2.5, "4", True])
def test_verify_options_refuse_weight_bits_outside_2_to_8(bits):
    with pytest.raises(DaLifError, match="--weight-bits"):
        VerifyOptions(weight_bits=bits)


@pytest.mark.parametrize("text,want", [("8,6,4,3,2", (8, 6, 4, 3, 2)), (" 3 , 8", (3, 8)),
                                       ("2", (2,))])
def test_parse_weight_bits(text, want):
    assert parse_weight_bits(text) == want


@pytest.mark.parametrize("text", ["", "4,x", "0", "9", "4,4", "4,,3", "3.5"])
def test_parse_weight_bits_refuses(text):
    with pytest.raises(DaLifError, match="--weight-bits"):
        parse_weight_bits(text)


def test_sweep_options_lava_bits_must_be_swept_and_need_samples():
    with pytest.raises(DaLifError, match="not in --weight-bits"):
        SweepOptions((8, 4), lava_samples=2, lava_bits=(3,))
    with pytest.raises(DaLifError, match="needs --lava-samples"):
        SweepOptions((8, 4), lava_bits=(4,))
    assert SweepOptions((8, 4), lava_samples=2, lava_bits=(4,)).lava_for(8) == 0


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv", [
    ["verify", str(SHIPPED), "--weight-bits", "0"],
    ["verify", str(SHIPPED), "--weight-bits", "9"],
    ["verify", str(SHIPPED), "--weight-bits", "4,x"],
    ["sweep", str(SHIPPED), "--weight-bits", "4,x"],
    ["sweep", str(SHIPPED), "--weight-bits", "0"],
    ["sweep", str(SHIPPED), "--weight-bits", "9,8"],
    ["sweep", str(SHIPPED), "--weight-bits", "8", "--lava-bits", "4", "--lava-samples", "1"],
    ["sweep", str(SHIPPED), "--plot", "out.txt"],
])
def test_bad_precision_arguments_are_one_error_line(argv, capsys):
    assert main(argv) == 2
    assert "weight-bits" in _error_line(capsys) or "--plot" in argv


def test_verify_refuses_other_weight_bits_for_a_program_as_given(tmp_path, capsys):
    fxp = tmp_path / "m.fxp"
    assert main(["verify", str(SHIPPED), "--weight-bits", "4", "--lava-samples", "0",
                 "--save-program", str(fxp), "--max-accuracy-drop", "100",
                 "--min-agreement", "0"]) == 0
    assert "4-bit weights" in capsys.readouterr().out
    assert main(["verify", str(fxp), "--weight-bits", "3", "--lava-samples", "0"]) == 2
    assert "as given" in _error_line(capsys)


def test_sweep_cli_prints_one_table_writes_plot_and_json(tmp_path, capsys):
    png, js = tmp_path / "sweep.png", tmp_path / "sweep.json"
    assert main(["sweep", str(SHIPPED), "--weight-bits", "8,3", "--plot", str(png),
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "bits" in out and "syn KiB" in out and "cores" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = json.loads(js.read_text())
    rows = {row["weight_bits"]: row for row in r["rows"]}
    assert list(rows) == [8, 3] and r["samples"] == 450
    assert rows[8]["fixed_accuracy"] == pytest.approx(0.9822, abs=1e-4)  # docs/MEASURED.md
    assert rows[3]["fixed_accuracy"] == pytest.approx(0.9556, abs=1e-4)
    assert rows[3]["synaptic_memory_bits"] * 8 == rows[8]["synaptic_memory_bits"] * 3
    assert rows[8]["float_accuracy"] == rows[3]["float_accuracy"]
    assert rows[3]["lava_bit_exact"] is None and rows[3]["cores"] >= 1


@pytest.mark.lava
def test_sweep_lava_stays_bit_exact_at_low_precision():
    """Lava against the emulator at 2 bits (the sparsest, most floored weights; every
    precision is checked by benchmarks/bench_finetune.py)."""
    from dalif_deploy.studies.sweep import sweep_precision

    r = sweep_precision(SHIPPED, SweepOptions((2,), lava_samples=2, progress=False))
    for row in r["rows"]:
        assert row["lava_bit_exact"] is True, row["lava_first_divergence"] or row["lava_error"]
        assert row["lava_samples"] == 2


def test_verify_a_nir_graph_at_the_precision_asked(tmp_path):
    from dalif_deploy.converters.torch_to_nir import export_checkpoint

    from dalif_deploy.verification.files import verify_file

    nir_path = tmp_path / "m.nir"
    export_checkpoint(SHIPPED, nir_path)
    result, art = verify_file(nir_path, options=VerifyOptions(weight_bits=4, lava_samples=0,
                                                              progress=False))
    assert result["weight_bits"] == 4 and {s.weight_bits for s in art["program"].synapses} == {4}
    assert result["fixed_accuracy"] == pytest.approx(0.9778, abs=1e-4)  # as the checkpoint's


def test_the_html_report_names_the_precision(tmp_path):
    from dalif_deploy.verification.report import render_html

    model, _ = load_model(SHIPPED)
    test = load_dataset("digits", "test", timesteps=4).head(32)
    cal = load_dataset("digits", "train", timesteps=4).x[:128]
    result, _ = verify_model(model, test, cal, 4, options=VerifyOptions(
        weight_bits=3, lava_samples=0, progress=False))
    assert "3-bit weights" in render_html(result, {})
