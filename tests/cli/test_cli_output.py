"""What the commands print: --quiet and progress bars, every --help option explained, the
paths verify wrote, and the warning when --calibrate cannot change an event-input program."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT

from dalif_deploy.cli import build_parser, main

ROOT = REPO_ROOT
CKPT = ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"
BAR = re.compile(r"\r|\d+%\||it/s|batch/s|step/s")  # what a tqdm bar leaves in a stream


class _Terminal(io.StringIO):
    """A captured stderr that says it is a terminal (tqdm and the CLI then show bars)."""

    def isatty(self) -> bool:
        return True


def _run(argv: list[str], monkeypatch, tty: bool) -> tuple[int, str, str]:
    out, err = io.StringIO(), (_Terminal() if tty else io.StringIO())
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    rc = main(argv)
    monkeypatch.undo()
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_program(tmp_path_factory) -> Path:
    """The shipped digits-cnn quantised without calibration (a .fxp in a temp dir)."""
    d = tmp_path_factory.mktemp("prog")
    assert main(["export", str(CKPT), "-o", str(d / "m.nir")]) == 0
    assert main(["quantize", str(d / "m.nir"), "-o", str(d / "m.fxp"), "--quiet"]) == 0
    return d / "m.fxp"


def test_progress_bars_on_a_terminal_off_when_redirected_and_with_quiet(small_program,
                                                                        monkeypatch):
    argv = ["simulate", str(small_program), "--backend", "emulator", "--samples", "20",
            "--batch-size", "5"]
    rc, out, err = _run(argv, monkeypatch, tty=True)
    assert rc == 0 and BAR.search(err), err  # the bar is there on a terminal ...
    rc, out, err = _run(argv, monkeypatch, tty=False)
    assert rc == 0 and not BAR.search(err) and "accuracy" in out  # ... not in a log file
    rc, out, err = _run([*argv, "--quiet"], monkeypatch, tty=True)
    assert rc == 0 and err == "" and not BAR.search(out)  # nor with --quiet on a terminal
    assert "20 samples, accuracy" in out  # the result is still printed


def test_quiet_keeps_errors(small_program, monkeypatch):
    rc, out, err = _run(["simulate", str(small_program), "--backend", "emulator",
                         "--samples", "0", "--quiet"], monkeypatch, tty=True)
    assert rc == 2 and err.startswith("error: --samples") and err.count("\n") == 1


def test_verify_quiet_prints_the_summary_and_every_path_it_wrote(tmp_path, monkeypatch):
    paths = {k: tmp_path / f"v.{k}" for k in ("json", "fxp")}
    rc, out, err = _run(["verify", str(CKPT), "--lava-samples", "0", "--quiet",
                         "--json", str(paths["json"]), "--save-program", str(paths["fxp"])],
                        monkeypatch, tty=True)
    assert rc == 0 and err == "", err
    assert f"JSON: {paths['json']}" in out and f"program: {paths['fxp']}" in out
    assert "PASSED" in out and not BAR.search(out)
    assert json.loads(paths["json"].read_text())["passed"] is True


@pytest.mark.parametrize("command", ["train", "quantize", "simulate", "verify", "demo", "sweep",
                                     "finetune"])
def test_long_commands_take_quiet(command):
    assert build_parser().parse_args(
        {"train": ["train", "--model", "m", "-o", "x.pt"], "quantize": ["quantize", "g", "-o", "p"],
         "simulate": ["simulate", "m", "--backend", "emulator"], "verify": ["verify", "m"],
         "demo": ["demo"], "sweep": ["sweep", "c.pt"],
         "finetune": ["finetune", "c.pt", "--weight-bits", "4", "-o", "o.pt"]}[command]
        + ["--quiet"]).quiet is True


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_option_of_every_command_is_explained_once(command):
    """Each option and argument has help text, and no option states its default twice (the
    formatter appends "(default: X)" to every option with one)."""
    p = _subcommands()[command]
    text = p.format_help()  # completes a deferred parser (simulate, verify)
    for a in p._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        name = "/".join(a.option_strings) or a.dest
        assert a.help and a.help != argparse.SUPPRESS and len(a.help) > 8, (command, name)
        if a.option_strings and not any(a.default is v for v in (None, False, True,
                                                                   argparse.SUPPRESS)):
            assert "default" not in a.help, (command, name, a.help)
    assert "(default: out) (default: out)" not in text


def test_dataset_split_and_train_seed_show_help_and_default():
    subs = _subcommands()
    flat = {c: " ".join(subs[c].format_help().split()) for c in ("dataset", "train")}
    assert "--split {train,test} which split to write (default: test)" in flat["dataset"]
    assert "--seed SEED training is deterministic for a seed (default: 0)" in flat["train"]


@pytest.fixture(scope="module")
def event_graph(tmp_path_factory) -> Path:
    """An untrained digits-cnn (width 2) on digits-events, T = 3, as a NIR file."""
    import dalif_deploy as dd

    cfg = dd.default_config("digits-cnn", input_shape=[2, 8, 8], width=2)
    path = tmp_path_factory.mktemp("ev") / "ev.nir"
    dd.write_nir(dd.export_nir(dd.build_model(cfg), (2, 8, 8), 3, encoding="events"), path)
    return path


def test_calibrate_on_event_data_warns_that_it_changed_nothing(event_graph, tmp_path,
                                                               monkeypatch):
    from dalif_deploy.fixedpoint.fxp_format import load_program

    cal, plain = tmp_path / "cal.fxp", tmp_path / "plain.fxp"
    rc, out, err = _run(["quantize", str(event_graph), "-o", str(cal), "--calibrate",
                         "digits-events", "--calibration-samples", "16", "--quiet",
                         "--json", str(tmp_path / "q.json")], monkeypatch, tty=True)
    assert rc == 0 and err.startswith("warning: --calibrate changed nothing: event input "
                                      "is binary") and err.count("\n") == 1, err
    info = json.loads((tmp_path / "q.json").read_text())["calibration"]
    assert info["changed"] is False and info["samples"] == 16 and info["rounds"] == 0
    # and the warning is true: the program is the uncalibrated one, array for array
    assert main(["quantize", str(event_graph), "-o", str(plain), "--quiet"]) == 0
    a, b = load_program(cal), load_program(plain)
    assert a.input == b.input
    for pa, pb in zip(a.populations, b.populations, strict=True):
        assert pa.scale == pb.scale and pa.vth == pb.vth
    for sa, sb in zip(a.synapses, b.synapses, strict=True):
        assert np.array_equal(sa.weights, sb.weights) and sa.weight_exp == sb.weight_exp


def test_calibration_effect_says_what_changed(event_graph):
    import dataclasses

    from dalif_deploy.converters.nir_to_fixed import calibration_effect

    import dalif_deploy as dd

    prog = dd.quantize_graph(dd.read_nir(event_graph))
    redone = dataclasses.replace(prog, metadata={**prog.metadata, "calibration_rounds": 2})
    changed, text = calibration_effect(redone, 16)
    assert changed and "2 re-quantisation round(s)" in text and "no input scale" in text
    assert calibration_effect(prog, 16)[0] is False
