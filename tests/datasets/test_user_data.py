"""Data that users bring, where it meets a model (issue 23): labels the model cannot output
are refused on every command that reads a data set with a model, naming its class count;
values clearly outside the range the model was trained on get one ``warning:`` line; a user's
``.npz`` is named by its path alone (a file has no splits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dalif_deploy.targets.registry import get_backend
from helpers import REPO_ROOT
from helpers.model_files import BACKEND_PARAMS, KIND_FILE

from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import load_dataset

CKPT = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"
N = 12


def _npz(path: Path, *, scale: float = 1.0, label: int | None = None) -> Path:
    """The first N digits test samples (x times ``scale``), the last label set to ``label``."""
    ds = load_dataset("digits", "test").head(N)
    y = ds.y.copy()
    if label is not None:
        y[-1] = label
    np.savez(path, x=ds.x * np.float32(scale), y=y, encoding="analog")
    return path


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert not any(ln.startswith("error: ") for ln in lines[:-1]), err
    return lines[-1]


@pytest.mark.parametrize("name", BACKEND_PARAMS)
@pytest.mark.parametrize("label, found", [(10, "0..10"), (-1, "-1..9")])
def test_simulate_refuses_labels_the_model_cannot_output(name, label, found, model_files,
                                                         tmp_path, capsys):
    model = model_files[KIND_FILE[get_backend(name).kind]]
    npz = _npz(tmp_path / "mine.npz", label=label)
    assert main(["simulate", str(model), "--backend", name, "--dataset", str(npz)]) == 2
    line = _one_error(capsys)
    assert f"labels must lie in 0..9 (the model has 10 classes), found {found}" in line, line
    assert str(npz) in line


@pytest.mark.parametrize("kind", ["pt", "nir", "fxp"])
def test_verify_refuses_labels_the_model_cannot_output(kind, model_files, tmp_path,
                                                       capsys):
    npz = _npz(tmp_path / "mine.npz", label=10)
    argv = ["verify", str(model_files[kind]), "--dataset", str(npz), "--lava-samples", "0"]
    assert main(argv) == 2
    assert "(the model has 10 classes), found 0..10" in _one_error(capsys)


@pytest.mark.parametrize("argv", [
    ["sweep", str(CKPT), "--weight-bits", "8"],
    ["finetune", str(CKPT), "--weight-bits", "4", "--epochs", "1", "-o", "{tmp}/o.pt"],
])
def test_sweep_and_finetune_refuse_labels_the_model_cannot_output(argv, tmp_path, capsys):
    npz = _npz(tmp_path / "mine.npz", label=10)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--dataset", str(npz)]) == 2
    assert "(the model has 10 classes), found 0..10" in _one_error(capsys)
    assert not (tmp_path / "o.pt").exists()


def test_quantize_calibration_refuses_labels_the_model_cannot_output(model_files, tmp_path,
                                                                     capsys):
    npz = _npz(tmp_path / "mine.npz", label=10)
    out = tmp_path / "q.fxp"
    assert main(["quantize", str(model_files["nir"]), "-o", str(out), "--calibrate", str(npz)]) == 2
    assert "(the model has 10 classes), found 0..10" in _one_error(capsys)
    assert not out.exists()


def test_a_file_without_a_model_names_no_fake_class_range(tmp_path):
    """Without a model (and no num_classes in the file) a negative label is refused without
    the 0..65535 bound, which read as if 65535 were a fine label."""
    from dalif_deploy import DaLifError

    with pytest.raises(DaLifError) as e:
        load_dataset(str(_npz(tmp_path / "mine.npz", label=-1)))
    assert "65535" not in str(e.value) and "found -1..9" in str(e.value)


@pytest.mark.parametrize("name", ["torch", "nir", "emulator", "onnx"])
def test_values_far_outside_the_trained_range_warn(name, model_files, tmp_path,
                                                   capsys):
    """Digits pixels 0..16 fed to a model trained on pixel / 16: one warning saying the range
    seen, the one expected and the fix; the run goes on."""
    model = model_files[KIND_FILE[get_backend(name).kind]]
    npz = _npz(tmp_path / "raw.npz", scale=16.0)
    assert main(["simulate", str(model), "--backend", name, "--dataset", str(npz)]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert warnings == [f"warning: {npz}: values 0..16 seen, the model was trained on 0..1 "
                        "(digits: x = pixel / 16): divide by 16"]


def test_verify_warns_once_on_values_outside_the_trained_range(model_files, tmp_path,
                                                               capsys):
    npz = _npz(tmp_path / "raw.npz", scale=16.0)
    assert main(["verify", str(model_files["fxp"]), "--dataset", str(npz), "--lava-samples",
                 "0"]) in (0, 1)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "divide by 16" in err, err


@pytest.mark.parametrize("scale", [1.0, 1.4])
def test_values_within_the_rule_do_not_warn(scale, tmp_path, capsys):
    """The rule: warn beyond the trained range widened by half its width each side (digits:
    outside -0.5..1.5); the normal data, and data up to 1.4, get no warning."""
    npz = _npz(tmp_path / "mine.npz", scale=scale)
    assert main(["simulate", str(CKPT), "--backend", "torch", "--dataset", str(npz)]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_no_warning_when_the_model_records_no_data_set(tmp_path, capsys):
    """A model trained on a user's file records no built-in range: nothing to compare with."""
    import torch

    obj = torch.load(CKPT, map_location="cpu", weights_only=True)
    obj["dataset"] = {**obj["dataset"], "name": str(tmp_path / "theirs.npz")}
    obj.pop("content_sha256", None)
    torch.save(obj, tmp_path / "m.pt")
    npz = _npz(tmp_path / "raw.npz", scale=16.0)
    assert main(["simulate", str(tmp_path / "m.pt"), "--backend", "torch", "--dataset",
                 str(npz)]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_a_user_file_is_named_by_its_path_alone(tmp_path, capsys):
    npz = _npz(tmp_path / "mine.npz")
    assert main(["simulate", str(CKPT), "--backend", "torch", "--dataset", str(npz),
                 "--json", "-"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["dataset"] == str(npz) and result["split"] is None
    assert f"on {npz}, {N} samples" in captured.err and f"{npz}/test" not in captured.err
    assert main(["simulate", str(CKPT), "--backend", "torch", "--samples", "3"]) == 0
    assert "on digits/test, 3 samples" in capsys.readouterr().out


def test_a_user_file_reads_only_the_samples_asked_for(tmp_path, monkeypatch):
    """``samples`` reads the first samples of x and y and no more (calibrating on 256 samples
    of a large event file held all of it, 537 MB, before), equal to the whole file's head; a
    file whose x and y disagree in length is still refused, though the rows read agree."""
    import dalif_deploy.base.resources as resources
    from dalif_deploy.base.errors import DaLifError
    from dalif_deploy.datasets.loaders import load_npz_dataset

    rng = np.random.default_rng(0)
    x = (rng.random((50, 3, 2, 4, 4)) < 0.3).astype(np.float32)
    y = rng.integers(0, 10, 50)
    path = tmp_path / "ev.npz"
    np.savez(path, x=x, y=y, encoding="events", T=3)
    asked = []
    real = resources.check_memory
    monkeypatch.setattr(resources, "check_memory",
                        lambda n, *a, **k: (asked.append(n), real(n, *a, **k)))
    part = load_npz_dataset(path, timesteps=3, samples=5)
    assert np.array_equal(part.x, x[:5]) and np.array_equal(part.y, y[:5])
    assert x[:5].nbytes in asked and x.nbytes not in asked  # x read 5 samples' bytes, not 50
    whole = load_npz_dataset(path, timesteps=3)
    assert np.array_equal(whole.x, x) and np.array_equal(whole.y, y)
    np.savez(path, x=x, y=y[:40], encoding="events", T=3)
    with pytest.raises(DaLifError, match="50 samples in x but 40 labels in y"):
        load_npz_dataset(path, timesteps=3, samples=5)
