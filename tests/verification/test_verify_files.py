"""`verify` on the file a user deploys: a NIR graph or a program, and `--save-program`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from dalif_deploy.targets.emulator import emulate
from helpers import REPO_ROOT
from helpers.nir_helpers import assert_accuracies_agree_up_to_ties, away_from_ties

from dalif_deploy import VerifyOptions, verify_file
from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import load_dataset
from dalif_deploy.fixedpoint.fxp_format import load_program
from dalif_deploy.float_model.loading import load_model

CKPT = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"
QUIET = VerifyOptions(lava_samples=0, progress=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The shipped digits-cnn exported to NIR, and verify's runs on the .pt and the .nir (the
    latter saving the program it checked)."""
    d = tmp_path_factory.mktemp("verify-files")
    assert main(["export", str(CKPT), "-o", str(d / "m.nir")]) == 0
    assert main(["verify", str(d / "m.nir"), "--lava-samples", "0", "--json",
                 str(d / "nir.json"), "--save-program", str(d / "m.fxp")]) == 0
    pt, _ = verify_file(CKPT, options=QUIET)
    return d, pt, json.loads((d / "nir.json").read_text())


def test_nir_graph_verifies_like_its_checkpoint(files):
    _, pt, nir = files
    assert pt["fixed_accuracy"] > 0.95
    assert nir["fixed_accuracy"] == pt["fixed_accuracy"]
    assert nir["prediction_agreement"] == pt["prediction_agreement"]
    assert nir["nir_accuracy"] == pt["nir_accuracy"]  # the same interpreter on the same graph
    model, meta = load_model(CKPT)  # torch float32 vs the interpreter: equal up to ties
    near = away_from_ties(model, torch.from_numpy(load_dataset("digits").x), meta.timesteps)[1]
    assert_accuracies_agree_up_to_ties(pt["nir_accuracy"], pt["float_accuracy"], 450, near)
    assert nir["float_accuracy"] is None and "NIR interpreter" in nir["absent"]["float"]
    assert nir["reference"] == "nir" and "reference" not in pt and "absent" not in pt
    assert [c["check"] for c in nir["checks"]] == ["accuracy drop NIR -> fixed (pp)",
                                                   "prediction agreement NIR/fixed"]
    assert [ly["name"] for ly in nir["layers"]] == [ly["name"] for ly in pt["layers"]]
    assert nir["passed"] is True


def test_save_program_is_what_quantize_writes(files):
    d, _, _ = files
    assert main(["quantize", str(d / "m.nir"), "-o", str(d / "q.fxp"), "--calibrate",
                 "digits", "--calibration-samples", "512"]) == 0
    assert (d / "m.fxp").read_bytes() == (d / "q.fxp").read_bytes()


def test_program_alone_reports_float_and_nir_absent(files):
    d, _, nir = files
    r, art = verify_file(d / "m.fxp", options=QUIET)
    assert r["fixed_accuracy"] == nir["fixed_accuracy"]
    for key in ("float_accuracy", "nir_accuracy", "prediction_agreement",
                "nir_spike_mismatches"):
        assert r[key] is None, key
    assert set(r["absent"]) == {"float", "nir"} and "--reference" in r["absent"]["nir"]
    assert r["layers"] == [] and r["checks"] == []
    assert art["graph"] is None


@pytest.mark.lava
def test_saved_program_verifies_identically_and_bit_exact_on_lava(files):
    d, _, nir = files
    r, art = verify_file(d / "m.fxp", reference=d / "m.nir",
                         options=VerifyOptions(lava_samples=2, progress=False))
    assert r["fixed_accuracy"] == nir["fixed_accuracy"]
    assert r["prediction_agreement"] == nir["prediction_agreement"]
    assert r["lava_samples"] == 2 and r["lava_bit_exact"] is True and r["passed"] is True
    x = load_dataset("digits", "test").x
    saved = load_program(d / "m.fxp")
    assert np.array_equal(emulate(saved, x).predictions, emulate(art["program"], x).predictions)


def test_program_with_checkpoint_reference(files):
    d, pt, _ = files
    r, _ = verify_file(d / "m.fxp", reference=CKPT, options=QUIET)
    for key in ("float_accuracy", "nir_accuracy", "fixed_accuracy", "prediction_agreement"):
        assert r[key] == pt[key], key
    assert "absent" not in r


@pytest.mark.parametrize("extra, match", [
    (["--reference", "{nir}"], r"--reference: not for a checkpoint"),
    (["--from", "snntorch"], r"--from: not for a checkpoint"),
    (["-T", "4"], r"-T: not for a checkpoint"),
])
def test_bad_combinations_with_a_checkpoint_exit_2(files, capsys, extra, match):
    d, _, _ = files
    capsys.readouterr()
    rc = main(["verify", str(CKPT), *(a.format(nir=d / "m.nir") for a in extra)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert re.search(match, err[0])


@pytest.mark.parametrize("args, match", [
    (["{fxp}", "--from", "snntorch"], r"apply only to a NIR graph"),
    (["{fxp}", "-T", "4", "--reference", "{nir}"], r"apply only to a NIR graph"),
    (["{fxp}", "--reference", "{fxp}"], r"give a NIR graph \(.nir\) or a checkpoint"),
    (["{nir}", "--reference", "{nir}"], r"a NIR graph is its own float reference"),
    (["{nir}", "--from", "snntorch"], r"written by dalif-deploy .* drop --from"),
    (["{nir}", "-T", "7"], r"-T 7: the graph records T = 4"),
    (["{nir}", "--save-program", "-"], r"--save-program -: this output cannot go to stdout"),
    (["{nir}", "--save-program", "{nir}"], r"m.nir"),
])
def test_bad_combinations_with_files_exit_2(files, capsys, args, match):
    d, _, _ = files
    capsys.readouterr()
    rc = main(["verify", *(a.format(nir=d / "m.nir", fxp=d / "m.fxp") for a in args),
               "--lava-samples", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(match, err[0]), err[0]
