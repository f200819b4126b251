"""What the CLI says where users tripped (issue 23): a foreign NIR graph's missing options named
at once, how to make data for it, verify's advice and reference named for the file given, and
no ``None`` or ``± 0.0`` standing in for what was not measured.

The foreign graphs are generated here with nir alone: Flatten -> Affine -> LIF over 10 classes,
taking digits' analog (1, 8, 8) or events' (2, 8, 8).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import nir
import numpy as np
import pytest

from dalif_deploy.base.wording import counted
from dalif_deploy.cli import main
from dalif_deploy.verification import plots as report_plots
from dalif_deploy.verification.verdict import verdict


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(ln.startswith("error: ") for ln in lines) == 1, err
    return lines[-1]


def foreign_graph(path: Path, frame: tuple[int, ...] = (1, 8, 8), constant: int | None = None
                  ) -> Path:
    """A graph without dalif-deploy metadata; ``constant``: every output but that class gets
    (almost) no input, so the graph predicts that one class (a model at chance)."""
    rng = np.random.default_rng(0)
    n_in = int(np.prod(frame))
    w = rng.normal(0, 0.3, (10, n_in))
    b = np.zeros(10)
    if constant is not None:
        w *= 1e-3
        b[constant] = 5.0
    shape = np.array(frame)
    nodes = {"input": nir.Input(shape),
             "flat": nir.Flatten(input_type={"input": shape}, start_dim=0),
             "fc": nir.Affine(weight=w, bias=b),
             "lif": nir.LIF(tau=np.full(10, 2e-3), r=np.ones(10), v_leak=np.zeros(10),
                            v_threshold=np.ones(10)),
             "output": nir.Output(np.array([10]))}
    names = list(nodes)
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:], strict=False)),
                                 type_check=False))
    return path


def _example(line: str) -> list[str]:
    """The example command line of an error, as argv for ``main``."""
    m = re.search(r"e\.g\. `dalif-deploy (.*)`$", line)
    assert m, line
    return shlex.split(m.group(1))


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> dict[str, str]:
    """digits and digits-events written by `dataset` (an .npz says its encoding)."""
    d = tmp_path_factory.mktemp("npz")
    for name in ("digits", "digits-events"):
        assert main(["dataset", name, "-o", str(d / f"{name}.npz")]) == 0
    return {name: str(d / f"{name}.npz") for name in ("digits", "digits-events")}


@pytest.mark.parametrize("command", ["simulate", "quantize", "verify"])
def test_a_foreign_graph_names_every_missing_option_at_once(tmp_path, capsys, command, npz):
    g = foreign_graph(tmp_path / "f.nir")
    head = {"simulate": ["simulate", str(g), "--backend", "nir"],
            "quantize": ["quantize", str(g), "-o", str(tmp_path / "q.fxp")],
            "verify": ["verify", str(g)]}[command]
    assert main(head) == 2
    line = _one_error(capsys)
    assert "--from" in line and "--dt" in line and "-T" in line
    assert ("--encoding" in line) == (command == "quantize")
    argv = _example(line)
    assert argv[:len(head)] == head  # the user's own command, completed
    # following the example, no second round trip: the command runs
    more = {"simulate": ["--samples", "5"], "quantize": [],
            "verify": ["--lava-samples", "0", "--min-agreement", "0",
                       "--max-accuracy-drop", "100"]}[command]
    assert main(argv + more) == 0, capsys.readouterr().err
    # what is given is not asked for; event data give their own T
    assert main([*head, "--dt", "1e-3"]) == 2
    line = _one_error(capsys)
    ex = _example(line)
    assert "-T" in line and "--from" not in line and ex[ex.index("--dt") + 1] == "0.001"
    if command != "quantize":
        for data, static in (("digits-events", False), (npz["digits-events"], False),
                             (npz["digits"], True)):
            assert main([*head, "--dataset", data]) == 2
            line = _one_error(capsys)
            assert "--from" in line and ("-T" in line) == static, line


def test_a_foreign_graph_without_fitting_data_says_how_to_make_them(tmp_path, capsys):
    g = foreign_graph(tmp_path / "ev.nir", frame=(2, 8, 8))
    for argv in (["simulate", str(g), "--backend", "nir"], ["verify", str(g)]):
        assert main([*argv, "--from", "norse", "-T", "4"]) == 2
        line = _one_error(capsys)
        assert "dalif-deploy dataset NAME -o data.npz" in line, line
        assert "x: float32 [N, T, 2, 8, 8]" in line and "y: int labels [N]" in line
        assert "--dataset data.npz" in line


def test_verify_of_a_foreign_graph_speaks_of_its_reference_and_advice(tmp_path, capsys,
                                                                       monkeypatch):
    g = foreign_graph(tmp_path / "c.nir", constant=3)  # predicts class 3: at chance
    plotted = []
    for name in ("plot_agreement", "plot_firing_rates"):
        monkeypatch.setattr(report_plots, name,
                            lambda rows, reference="float": plotted.append(reference) or "x")
    html = tmp_path / "r.html"
    assert main(["verify", str(g), "--dt", "1e-3", "-T", "4", "--lava-samples", "0",
                 "--report", str(html)]) == 0
    out = capsys.readouterr().out
    assert "warning: the NIR graph itself is at chance" in out
    assert "framework that made the graph" in out
    assert "train longer or wider" not in out  # the advice for a checkpoint of ours
    assert "None" not in out and "spikes differing from float" not in out
    assert "agreement with NIR reference (interpreter)" in out
    assert "rate NIR " in out and "rate float" not in out
    page = html.read_text()
    assert "NIR reference (interpreter) rate (%)" in page
    assert "between NIR reference (interpreter) and fixed point" in page
    assert "float rate" not in page and "\u2260 float" not in page
    assert plotted == ["NIR reference (interpreter)"] * 2
    # a program alone: the NIR stage did not run, and nothing prints None
    fxp = tmp_path / "c.fxp"
    assert main(["quantize", str(g), "-o", str(fxp), "--dt", "1e-3", "-T", "4", "--encoding",
                 "analog"]) == 0
    capsys.readouterr()
    assert main(["verify", str(fxp), "--lava-samples", "0"]) == 0
    out = capsys.readouterr().out
    assert "None" not in out and "not measured (no float reference)" in out


def test_fewer_weight_bits_advice_fits_a_graph():
    """finetune takes a checkpoint: a graph is told to train for the bits where it was made."""
    check = {"check": "prediction agreement NIR/fixed", "id": "agreement", "unit": "fraction",
             "value": 0.5, "limit": 0.99, "ok": False}
    graph = {"reference": "nir", "weight_bits": 3, "checks": [check]}
    (v,) = verdict(graph)
    assert not any("finetune" in t for t in v["try"])
    assert any("framework that made the graph" in t for t in v["try"])
    (v,) = verdict({**graph, "reference": "float"})
    assert any("dalif-deploy finetune --weight-bits 3" in t for t in v["try"])


def test_plot_labels_name_the_reference(monkeypatch):
    monkeypatch.setattr(report_plots, "_png", lambda fig: fig)
    layers = [{"name": "l0", "spike_agreement": 0.9, "float_rate": 0.1, "fixed_rate": 0.2}]
    ref = "NIR reference (interpreter)"
    a, _ = report_plots.plot_agreement(layers, ref).axes
    assert a.get_title().startswith(ref)
    (ax,) = report_plots.plot_firing_rates(layers, ref).axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [ref, "fixed"]
    f = np.zeros((2, 1, 3), np.uint8)
    f[0, 0, 0] = 1
    (ax,) = report_plots.plot_raster(f, np.zeros_like(f), "h", ref).axes
    assert f"{ref} only (1)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_counts_are_singular_for_one():
    assert [counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert counted(1, "test sample") == "1 test sample" and counted(3, "core") == "3 cores"
