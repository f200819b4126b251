"""Issue 29, hostile input on the newer surfaces, one test per class: option values (one rule
per option on every command), strict JSON in and out, derived figures, output integrity
(names never forge a line; internal errors never read as a verdict)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import hostile_files as hf

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.schema import load_json, non_finite
from dalif_deploy.base.wording import printable, shown
from dalif_deploy.cli import emit_json, main


def _stderr_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ln.strip()]


def _one_error(capsys) -> str:
    lines = _stderr_lines(capsys)
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prog")
    assert main(["export", str(hf.SHIPPED), "-o", str(d / "m.nir")]) == 0
    assert main(["quantize", str(d / "m.nir"), "-o", str(d / "m.fxp")]) == 0
    return d / "m.fxp"


# --- option values: one rule per option, every command -------------------------------------

BAD_OPTIONS = [
    (["verify", "{ckpt}", "--max-accuracy-drop", "nan"], "--max-accuracy-drop"),
    (["verify", "{ckpt}", "--min-agreement", "nan"], "--min-agreement"),
    (["verify", "{ckpt}", "--min-agreement", "1.5"], "--min-agreement"),
    (["verify", "{ckpt}", "--max-lava-memory", "nan"], "--max-lava-memory"),
    (["verify", "{ckpt}", "--timeout", "nan"], "--timeout"),
    (["verify", "{ckpt}", "--timeout=-inf"], "--timeout"),
    (["verify", "{ckpt}", "--batch-size", str(2**40)], "--batch-size"),
    (["simulate", "{ckpt}", "--backend", "torch", "--batch-size", str(2**40)], "--batch-size"),
    (["simulate", "{ckpt}", "--backend", "torch", "--samples", "0"], "--samples"),
    (["finetune", "{ckpt}", "--weight-bits", "4", "--lr", "1e300", "-o", "{out}"], "--lr"),
    (["compare", "--lr", "1e300"], "--lr"),
    (["compare", "--lr=-inf"], "--lr"),
    (["compare", "--seeds", "0,-1"], "--seeds"),
    (["compare", "-T", "1,70000"], "--timesteps"),
    (["train", "--model", "digits-cnn", "-o", "{out}", "--epochs", "0"], "--epochs"),
    (["train", "--model", "digits-cnn", "-o", "{out}", "--tau", "nan"], "--tau"),
    (["train", "--model", "digits-cnn", "-o", "{out}", "--width", str(2**40)], "--width"),
    (["quantize", "{ckpt}", "-o", "{out}", "--dt", "1e300"], "--dt"),
]


def test_the_option_rules_use_the_projects_limits():
    from dalif_deploy.base import resources, schema
    from dalif_deploy.cli import guard

    assert (guard.BATCH_MAX, guard.WIDTH_MAX, guard.FLOAT32_MAX) == (
        resources.BATCH_MAX, resources.WIDTH_MAX, schema.FLOAT32_MAX)


@pytest.mark.parametrize("argv,flag", BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:])
                                                         for a, _ in BAD_OPTIONS])
def test_option_values_follow_one_rule(argv, flag, tmp_path, capsys):
    argv = [a.format(ckpt=hf.SHIPPED, out=tmp_path / "o.pt") for a in argv]
    assert main(argv) == 2
    line = _one_error(capsys)
    assert line.startswith((f"error: {flag} ", f"error: {flag}: ")), line
    assert list(tmp_path.iterdir()) == []


def test_timeout_inf_is_the_documented_no_limit():
    """``--timeout inf`` lifts the Lava watchdog's time limit (docs/cli.md); the one rule lets
    it through, and only it: NaN and -inf are refused above."""
    import argparse

    from dalif_deploy.cli.guard import check_option_values

    check_option_values(argparse.Namespace(command="verify", timeout=float("inf")))
    with pytest.raises(DaLifError, match="--lr"):  # inf means no limit for --timeout alone
        check_option_values(argparse.Namespace(command="verify", lr=float("inf")))


# --- strict JSON, in and out ---------------------------------------------------------------

def test_json_in_refuses_duplicate_keys_and_nan():
    with pytest.raises(DaLifError, match="'a' appears twice"):
        load_json('{"a": 1, "a": 2}', "f.json")
    with pytest.raises(DaLifError, match="twice"):
        load_json('{"x": {"b": 1, "b": 1}}', "f.json")
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(DaLifError, match="not a JSON number"):
            load_json(f'{{"a": {constant}}}', "f.json")
    with pytest.raises(DaLifError, match="nested"):
        load_json("[" * 100 + "]" * 100, "f.json")
    assert load_json('{"a": [1, 2.5]}', "f.json") == {"a": [1, 2.5]}


def test_hardware_file_with_a_duplicate_key_is_refused(program, tmp_path, capsys):
    hw = tmp_path / "hw.json"
    hw.write_text('{"neurons_per_core": 4096, "neurons_per_core": 1024}')
    assert main(["inspect", str(program), "--hardware", str(hw)]) == 2
    assert "neurons_per_core" in _one_error(capsys)


def test_hardware_figures_whose_energy_would_overflow_are_refused(program, capsys):
    assert main(["inspect", str(program), "--json", "--hw",
                 "energy_neuron_update_pj=1e308"]) == 2
    assert "energy_neuron_update_pj" in _one_error(capsys)


def test_our_json_output_is_always_strict(tmp_path):
    out = tmp_path / "r.json"
    for data in ({"energy": {"total": float("nan")}}, {"x": [1.0, float("inf")]}):
        with pytest.raises(DaLifError, match="not a finite number"):
            emit_json(data, str(out))
        assert not out.exists()
    assert non_finite({"a": {"b": [0.0, float("-inf")]}}) == "a.b[1]"
    emit_json({"a": 1.5}, str(out))
    assert json.loads(out.read_text()) == {"a": 1.5}


def test_every_json_dump_of_ours_is_strict():
    """Every ``json.dump``/``dumps`` call in the package passes ``allow_nan=False``."""
    from helpers import REPO_ROOT

    calls = []
    for folder in ("dalif_deploy", "converters", "targets"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            text = path.read_text()
            start = 0
            while (i := text.find("json.dump", start)) >= 0:
                start = i + 1
                call = text[i:text.find("\n\n", i)]
                depth, end = 0, 0
                for j, c in enumerate(call):
                    depth += c == "("
                    depth -= c == ")"
                    if c == ")" and depth == 0:
                        end = j
                        break
                calls.append((path.name, call[:end + 1]))
    assert calls and all("allow_nan=False" in c for _, c in calls), calls


# --- output integrity: names never forge a line, bugs never read as verdicts ---------------

def test_printable_escapes_what_would_break_a_line():
    assert printable("a\nerror: forged.bin") == "a\\nerror: forged.bin"
    assert printable("x\r\x1b[2Ky\u2028z\t") == "x\\r\\x1b[2Ky\\u2028z\\t"
    assert printable("plain name.pt") == "plain name.pt"
    assert shown("a\nb") == "'a\\nb'" and shown("ok.pt") == "ok.pt"


def test_a_forged_file_name_prints_one_error_line(tmp_path, capsys):
    bad = tmp_path / "a\nerror: forged.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["inspect", str(bad)]) == 2
    line = _one_error(capsys)
    assert "\\nerror: forged" in line


def test_an_internal_error_is_one_line_and_exit_3(monkeypatch, capsys):
    import dalif_deploy.verification.describe as describe

    def broken(*args):
        raise ZeroDivisionError("a bug\nerror: second line")

    monkeypatch.setattr(describe, "describe", broken)  # inspect's work, imported when run
    assert main(["inspect", str(hf.SHIPPED)]) == 3
    line = _one_error(capsys)
    assert line.startswith("error: internal error (ZeroDivisionError: a bug)")
    assert "please report" in line


def test_memory_that_runs_out_is_one_error_line(monkeypatch, capsys):
    import numpy as np

    import dalif_deploy.verification.describe as describe

    def hungry(*args):
        return np.zeros(2**62, np.uint8)  # numpy's _ArrayMemoryError

    monkeypatch.setattr(describe, "describe", hungry)  # inspect's work, imported when run
    assert main(["inspect", str(hf.SHIPPED)]) == 2
    assert _one_error(capsys).startswith("error: out of memory")


# --- records: unknown fields refused, nesting bounded --------------------------------------

def _nested(depth: int) -> list:
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


def _deep_checkpoint(path: Path, edit) -> Path:
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # pickling 5000 levels recurses in the writer (not ours)
    try:
        return hf.edited_checkpoint(path, edit)
    finally:
        sys.setrecursionlimit(limit)


def _finetune_record(**extra) -> dict:
    return {"method": "qat", "weight_bits": 4, "epochs": 1, "lr": 1e-3, **extra}


@pytest.mark.parametrize("field", ["finetune", "created", "unknown_top_level"])
def test_a_record_nested_5000_deep_is_one_error_line(field, tmp_path, capsys):
    def edit(obj):
        if field == "finetune":
            obj["finetune"] = _finetune_record(extra=_nested(5000))
        elif field == "created":
            obj["created"] = {"by": _nested(5000)}
        else:
            obj["extra"] = _nested(5000)

    path = _deep_checkpoint(tmp_path / "deep.pt", edit)
    for argv in (["inspect", str(path)], ["inspect", str(path), "--json"],
                 ["export", str(path), "-o", str(tmp_path / "m.nir")]):
        assert main(argv) == 2
        assert "nested more than" in _one_error(capsys)
    assert not (tmp_path / "m.nir").exists()


@pytest.mark.parametrize("record", ["finetune", "dataset"])
def test_a_records_unknown_fields_are_refused_naming_them(record, tmp_path, capsys):
    """A record's field outside its schema is never carried along (issue 29) nor ignored
    (issue 24: an unknown key is an error): one error line naming it, nothing written."""
    def edit(o):
        if record == "finetune":
            o["finetune"] = _finetune_record(smuggled={"a": 1})
        else:
            o["dataset"] = {**o["dataset"], "smuggled": "x"}

    path = hf.edited_checkpoint(tmp_path / "x.pt", edit)
    for argv in (["inspect", str(path), "--json"],
                 ["export", str(path), "-o", str(tmp_path / "m.nir")]):
        assert main(argv) == 2
        line = _one_error(capsys)
        assert "unknown field(s) 'smuggled'" in line and record in line
    assert not (tmp_path / "m.nir").exists()


# --- plots draw names literally -------------------------------------------------------------

BAD_MATH = ["$\\frac{$", "a$b", "$x^{$", "$\\undefinedcommand$"]


def test_plots_draw_names_with_dollar_signs_literally(tmp_path):
    import numpy as np

    from dalif_deploy.fixedpoint.program import WeightErrors
    from dalif_deploy.studies.sweep import plot_sweep  # noqa: F401 - uses the same pyplot()
    from dalif_deploy.verification import plots

    layers = [{"name": n, "spike_agreement": 0.9, "float_rate": 0.1, "fixed_rate": 0.1}
              for n in BAD_MATH]
    for uri in (plots.plot_agreement(layers, "$ref$"), plots.plot_firing_rates(layers),
                plots.plot_weight_error({n: WeightErrors((1, 1), (-0.1, 0.0, 0.1), 0.1)
                                         for n in BAD_MATH}),
                plots.plot_raster(np.zeros((2, 3)), np.ones((2, 3)), "$\\frac{$")):
        assert uri.startswith("data:image/png;base64,")


# --- the run grid: bounded, and its size said before the work -------------------------------

@pytest.mark.parametrize("argv", [["--seeds", ",".join(map(str, range(20_000)))],
                                  ["-T", ",".join(map(str, range(1, 20_001)))],
                                  ["-T", "1,2,3,4,5,6,7,8,9,10,11", "--seeds",
                                   "0,1,2,3"]])
def test_a_run_grid_beyond_the_limit_is_refused_before_training(argv, monkeypatch, capsys):
    import dalif_deploy.float_model.training as training

    def never(*a, **k):
        raise AssertionError("trained although the grid is refused")

    monkeypatch.setattr(training, "train", never)
    assert main(["compare", *argv]) == 2
    line = _one_error(capsys)
    assert "training runs" in line and "more than the 100 runs" in line


def test_compare_says_the_total_before_starting(monkeypatch, capsys):
    import dalif_deploy.studies.compare as study

    def stop(*a, **k):
        raise DaLifError("stopped here")

    monkeypatch.setattr(study, "_run", stop)
    assert main(["compare", "--neurons", "dalif,lif", "-T", "1,2", "--seeds", "0,1,2",
                 "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert ("compare: 2 neurons x 2 values of T x 3 seeds = 12 training runs of 2 epochs each"
            in err.splitlines()[0]), err


# --- a failed command leaves none of its outputs --------------------------------------------

def test_export_that_fails_at_netx_leaves_no_nir_either(tmp_path, capsys):
    resnet = hf.ROOT / "dalif_deploy" / "checkpoints" / "digits-resnet.pt"
    argv = ["export", str(resnet), "-o", str(tmp_path / "res.nir"), "--onnx",
            str(tmp_path / "res.onnx"), "--netx", str(tmp_path / "res.h5")]
    assert main(argv) == 2
    _one_error(capsys)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_a_failed_command_undoes_every_output(tmp_path):
    from dalif_deploy.base.errors import VerificationFailed
    from dalif_deploy.base.files import atomic_write_text, output_transaction

    a, b, scratch = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "scratch.txt"
    b.write_text("old")
    with pytest.raises(DaLifError), output_transaction([a, b]):
        atomic_write_text(a, "new a")
        assert a.read_text() == "new a"  # a command may read its output back
        atomic_write_text(scratch, "not an output")
        atomic_write_text(b, "new b")
        atomic_write_text(b, "newer b")
        raise DaLifError("a later step fails")
    assert not a.exists() and b.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "scratch.txt"]
    with pytest.raises(VerificationFailed), output_transaction(
            [a, b], commit_on=(VerificationFailed,)):
        atomic_write_text(a, "report")
        raise VerificationFailed("thresholds")  # a verdict keeps its report
    assert a.read_text() == "report" and b.read_text() == "old"
    with output_transaction([a, b]):
        atomic_write_text(b, "new b")
    assert b.read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "scratch.txt"]


def test_result_lines_show_a_forged_output_name_escaped(tmp_path, capsys):
    out = tmp_path / "x\nerror: forged.nir"
    assert main(["export", str(hf.SHIPPED), "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "\\nerror: forged.nir" in lines[0], lines
    assert out.exists()
