"""The command line: exit codes, simulate --backend torch, inspect, demo."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from dalif_deploy.targets.registry import BACKENDS, file_kind
from helpers import REPO_ROOT
from helpers.nir_helpers import assert_accuracies_agree_up_to_ties, away_from_ties

from dalif_deploy.cli import build_parser, main
from dalif_deploy.datasets.loaders import load_dataset
from dalif_deploy.float_model.loading import load_checkpoint, load_model

ROOT = REPO_ROOT
SHIPPED = ROOT / "dalif_deploy" / "checkpoints"
SIM_KEYS = {"backend", "dataset", "samples", "accuracy", "predictions", "seconds"}


@pytest.fixture(scope="module")
def event_ckpt(tmp_path_factory):
    """A digits-cnn trained for one epoch on digits-events through the CLI."""
    out = tmp_path_factory.mktemp("train") / "ev.pt"
    rc = main(["train", "--model", "digits-cnn", "--dataset", "digits-events", "--epochs", "1",
               "--timesteps", "3", "--seed", "1", "--batch-size", "128", "--out", str(out)])
    assert rc == 0
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "pipeline:" in capsys.readouterr().out


def test_train_writes_a_loadable_checkpoint_and_reports_accuracy(event_ckpt, capsys):
    ckpt = load_checkpoint(event_ckpt)
    assert ckpt.timesteps == 3 and ckpt.dataset["name"] == "digits-events"
    assert ckpt.config["input_shape"] == [2, 8, 8] and ckpt.created["seed"] == 1
    assert {"train_accuracy", "test_accuracy"} <= set(ckpt.metrics)


def test_train_prints_train_and_test_accuracy(tmp_path, capsys):
    out = tmp_path / "c.pt"
    assert main(["train", "--model", "digits-cnn", "--epochs", "1", "--timesteps", "1",
                 "--batch-size", "256", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train accuracy" in text and "test accuracy" in text and out.is_file()


@pytest.mark.parametrize("argv", [
    ["train", "--model", "alexnet", "--epochs", "1", "--out", "x.pt"],
    ["train", "--model", "digits-cnn", "--epochs", "0", "--out", "x.pt"],
    ["train", "--model", "digits-cnn", "--dataset", "mnist", "--out", "x.pt"],
])
def test_train_bad_input_exits_2(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    _error_line(capsys)
    assert not (tmp_path / "x.pt").exists()


def test_simulate_torch_json(tmp_path, capsys):
    ckpt = SHIPPED / "digits-cnn.pt"
    out = tmp_path / "r.json"
    assert main(["simulate", str(ckpt), "--backend", "torch", "--json", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert SIM_KEYS <= set(r) and r["backend"] == "torch" and r["dataset"] == "digits"
    assert r["samples"] == len(r["predictions"]) == 450
    assert all(isinstance(p, int) and 0 <= p <= 9 for p in r["predictions"])
    # the float accuracy is what training measured and stored, up to threshold ties (training
    # ran on another CPU, whose float rounding may flip a tie's spike)
    model, meta = load_model(ckpt)
    near = away_from_ties(model, torch.from_numpy(load_dataset("digits").x), meta.timesteps)[1]
    assert_accuracies_agree_up_to_ties(r["accuracy"], meta.metrics["test_accuracy"], 450, near)
    head = tmp_path / "h.json"
    assert main(["simulate", str(ckpt), "--backend", "torch", "--samples", "7",
                 "--json", str(head)]) == 0
    h = json.loads(head.read_text())
    assert h["samples"] == 7 and h["predictions"] == r["predictions"][:7]


def test_simulate_dataset_defaults_to_the_checkpoints_and_respects_an_explicit_one(
        event_ckpt, capsys):
    assert main(["simulate", str(event_ckpt), "--backend", "torch", "--samples", "5",
                 "--json", "-"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["dataset"] == "digits-events" and r["samples"] == 5
    assert main(["simulate", str(event_ckpt), "--backend", "torch", "--dataset", "digits"]) == 2
    assert "use --dataset digits-events" in _error_line(capsys)


@pytest.mark.parametrize("argv,words", [
    (["--backend", "emulator"], "use --backend torch"),
    (["--backend", "onnx"], "use --backend torch"),
    (["--backend", "torch", "--dt", "0.001"], "--dt"),
    (["--backend", "torch", "--samples", "0"], "--samples"),
])
def test_simulate_bad_input_exits_2(argv, words, capsys):
    assert main(["simulate", str(SHIPPED / "digits-cnn.pt"), *argv]) == 2
    assert words in _error_line(capsys).lower()


def test_the_command_line_imports_no_backend_until_simulate_is_parsed():
    """Building the parser costs no backend import, nor does parsing simulate: its options
    come from the backends' registrations (the backend is imported when it runs)."""
    code = ("import sys\nfrom dalif_deploy.cli import build_parser\n"
            "p = build_parser(); p.parse_args(['inspect', 'x.fxp'])\n"
            "print(sorted(m for m in ('torch', 'dalif_deploy.targets.torch_float') "
            "if m in sys.modules))\n"
            "a = p.parse_args(['simulate', 'x.fxp', '--backend', 'lava', '--timeout', '5'])\n"
            "print(a.timeout, a.dt, 'dalif_deploy.targets.torch_float' in sys.modules, "
            "'lava' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "5.0 None False False"]


def test_an_option_with_a_default_is_ignored_by_backends_that_do_not_take_it(capsys):
    """`--timeout` (lava's, default 600) on torch is left out, as before; `--dt` is refused."""
    assert main(["simulate", str(SHIPPED / "digits-cnn.pt"), "--backend", "torch",
                 "--timeout", "5", "--samples", "3", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 3


def test_every_registered_backend_is_a_cli_choice_and_nothing_else(capsys):
    """The parser takes each registry name for --backend and refuses a name not registered
    (argparse exit 2 naming the choices)."""
    parser = build_parser()
    for name in BACKENDS:
        assert parser.parse_args(["simulate", "m", "--backend", name]).backend == name
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["simulate", "m", "--backend", "loihi"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'loihi'" in err and all(repr(n) in err for n in BACKENDS)


def test_file_kinds_are_sniffed_from_the_bytes(tmp_path):
    copy = tmp_path / "model.bin"
    shutil.copy(SHIPPED / "digits-cnn.pt", copy)
    assert file_kind(copy) == "checkpoint"  # sniffed from the bytes
    (tmp_path / "x.bin").write_bytes(b"hello")
    assert main(["inspect", str(tmp_path / "x.bin")]) == 2


def test_inspect_json_and_text(capsys):
    ckpt = str(SHIPPED / "digits-resnet.pt")
    assert main(["inspect", ckpt, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"model", "timesteps", "metrics", "layers", "num_parameters"} <= set(d)
    assert d["model"] == "digits-resnet" and d["timesteps"] == 4
    lifs = [layer for layer in d["layers"] if layer["type"] == "DALIF"]
    assert len(lifs) == 5 and all(0 < x["alpha"] < 1 and 0 < x["beta"] < 1 for x in lifs)
    assert d["num_parameters"] == sum(layer["parameters"] for layer in d["layers"])
    assert main(["inspect", ckpt]) == 0
    text = capsys.readouterr().out
    assert "digits-resnet" in text and "alpha=" in text and "test_accuracy" in text


@pytest.mark.lava
def test_demo_verifies_the_shipped_checkpoint_and_writes_the_report(capsys, tmp_path):
    assert main(["demo", "--out-dir", str(tmp_path), "--lava-samples", "2"]) == 0
    out = capsys.readouterr().out
    stored = load_checkpoint(SHIPPED / "digits-cnn.pt").metrics["test_accuracy"]
    assert f"float    {100 * stored:.2f} %" in out and "PASSED" in out
    assert (tmp_path / "demo-report.html").is_file()
    assert json.loads((tmp_path / "demo-report.json").read_text())["lava_bit_exact"] is True


def test_console_entry_point_reports_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    p = subprocess.run([sys.executable, "-m", "dalif_deploy", "inspect", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1


def test_simulate_more_samples_than_the_split_has_is_refused(capsys):
    """Asking for 100000 digits test samples must not silently run the 450 that exist."""
    assert main(["simulate", str(SHIPPED / "digits-cnn.pt"), "--backend", "torch",
                 "--samples", "100000"]) == 2
    assert "has only 450 samples" in capsys.readouterr().err


def test_the_quantisers_commands_leave_glibcs_heap_settings(model_files, tmp_path,
                                                            monkeypatch):
    """``quantize`` and ``export`` (peak memory is their figure: with freed tensors kept, the
    paper-scale quantiser peaked at 2.1-2.8 GB against 1.34 GB) do not call
    ``reuse_freed_memory``; commands that step the same tensors every step (simulate here) do."""
    import dalif_deploy.base.resources as resources

    calls = []
    monkeypatch.setattr(resources, "reuse_freed_memory", lambda: calls.append(1))
    assert main(["quantize", str(model_files["nir"]), "-o", str(tmp_path / "q.fxp")]) == 0
    assert main(["export", str(model_files["pt"]), "-o", str(tmp_path / "e.nir"), "--quiet"]) == 0
    assert calls == []
    assert main(["simulate", str(model_files["fxp"]), "--backend", "emulator", "--samples", "4",
                 "--quiet"]) == 0
    assert calls == [1]


def test_event_calibration_runs_on_uint8_frames_with_the_same_program(event_ckpt, tmp_path,
                                                                      monkeypatch):
    """``quantize --calibrate`` of an event model hands the emulator binary uint8 frames (a
    quarter of float32's memory) and writes the program that float samples give, byte for
    byte; values a byte cannot hold stay as they are."""
    import numpy as np
    from dalif_deploy.targets import emulator

    from dalif_deploy.cli import quantize as quantize_cmd

    assert main(["export", str(event_ckpt), "-o", str(tmp_path / "ev.nir"), "--quiet"]) == 0
    seen = []
    real = emulator.calibration_run
    monkeypatch.setattr(emulator, "calibration_run",
                        lambda program, x: (seen.append(x.dtype), real(program, x))[1])
    argv = ["quantize", str(tmp_path / "ev.nir"), "--calibrate", "digits-events",
            "--calibration-samples", "64", "--quiet"]
    assert main([*argv, "-o", str(tmp_path / "u8.fxp")]) == 0
    assert seen and set(seen) == {np.dtype(np.uint8)}
    monkeypatch.setattr(quantize_cmd, "_as_frames", lambda x: x)  # the float samples as loaded
    assert main([*argv, "-o", str(tmp_path / "f32.fxp")]) == 0
    assert np.dtype(np.float32) in seen
    assert (tmp_path / "u8.fxp").read_bytes() == (tmp_path / "f32.fxp").read_bytes()
    counts = np.array([[0.0, 1.0, 300.0]], np.float32)
    assert quantize_cmd._as_frames(counts) is counts
