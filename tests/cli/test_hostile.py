"""Hostile and careless input through the command line and the converters: every case ends in
one ``error:`` line with exit code 2 (no traceback, nothing written), or works exactly."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from dalif_deploy.converters.ir.graph import read_nir
from dalif_deploy.converters.nir_to_fixed import quantize_graph
from dalif_deploy.converters.nir_to_torch import run_graph
from dalif_deploy.converters.torch_to_nir import export_nir, write_nir
from dalif_deploy.targets.emulator import emulate
from dalif_deploy.targets.registry import file_kind
from helpers import REPO_ROOT
from torch import nn

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import atomic_write_text
from dalif_deploy.cli import main
from dalif_deploy.fixedpoint.fxp_format import load_program, save_program
from dalif_deploy.fixedpoint.program import InputEncoding, Population, Synapse
from dalif_deploy.float_model.loading import load_model
from dalif_deploy.float_model.zoo import run_model
from dalif_deploy.neurons.dalif import DALIF

SHIPPED = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The shipped checkpoint, its NIR graph and its (uncalibrated) program."""
    d = tmp_path_factory.mktemp("files")
    ckpt = d / "m.pt"
    shutil.copy(SHIPPED, ckpt)
    assert main(["export", str(ckpt), "-o", str(d / "m.nir")]) == 0
    assert main(["quantize", str(d / "m.nir"), "-o", str(d / "m.fxp")]) == 0
    return {"pt": ckpt, "nir": d / "m.nir", "fxp": d / "m.fxp"}


# --- output paths: refused before any work, never a traceback, nothing left behind ---------

@pytest.mark.parametrize("argv", [
    ["train", "--model", "digits-cnn", "--epochs", "1", "-o", "{dir}"],
    ["export", "{pt}", "-o", "{dir}"],
    ["export", "{pt}", "--onnx", "{pt}/x.onnx"],  # parent is a file
    ["export", "{pt}", "-o", "{pt}"],  # would replace the input
    ["export", "{pt}", "-o", "{tmp}/x.nir", "--onnx", "{tmp}/x.nir"],  # two outputs, one path
    ["quantize", "{nir}", "-o", "{nir}"],
    ["quantize", "{nir}", "-o", "{dir}"],
    ["dataset", "digits", "-o", "{dir}"],
    ["simulate", "{fxp}", "--backend", "emulator", "--json", "{fxp}"],
    ["simulate", "{pt}", "--backend", "torch", "--json", "{dir}"],
    ["verify", "{pt}", "--report", "{tmp}/r.x", "--json", "{tmp}/r.x"],
    ["verify", "{pt}", "--report", "{pt}/r.html"],
    ["demo", "--out-dir", "{pt}"],
])
def test_bad_output_paths_exit_2_and_write_nothing(argv, files, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    for k in ("pt", "nir", "fxp"):
        shutil.copy(files[k], tmp_path / files[k].name)
    before = {k: (tmp_path / files[k].name).read_bytes() for k in ("pt", "nir", "fxp")}
    subst = {"{dir}": str(tmp_path / "adir"), "{tmp}": str(tmp_path),
             **{f"{{{k}}}": str(tmp_path / files[k].name) for k in ("pt", "nir", "fxp")}}
    args = []
    for a in argv:
        for k, v in subst.items():
            a = a.replace(k, v)
        args.append(a)
    names = _files(tmp_path)
    assert main(args) == 2
    _one_error(capsys)
    assert _files(tmp_path) == names  # no temporary or partial file anywhere
    assert before == {k: (tmp_path / files[k].name).read_bytes() for k in ("pt", "nir", "fxp")}


def test_atomic_write_to_an_impossible_place_is_a_daliferror(tmp_path):
    (tmp_path / "f").write_text("x")
    for bad in (tmp_path, tmp_path / "f" / "out.json"):
        with pytest.raises(DaLifError, match="directory"):
            atomic_write_text(bad, "{}")
    assert _files(tmp_path) == {"f"}


# --- silent alterations in export and quantize ---------------------------------------------

class _GroupedNonSquare(nn.Module):
    """A non-square strided kernel and a grouped conv: nir's own type inference gets both
    wrong (C_in = weight.shape[1]; kH used for both dims)."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(1, 4, (3, 1), padding=(1, 0), stride=(1, 2))
        self.l0 = DALIF(4)
        self.c1 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(4)
        self.l1 = DALIF(4)
        self.fc = nn.Linear(4 * 8 * 4, 10)

    def forward(self, x):
        return self.fc(self.l1(self.bn(self.c1(self.l0(self.c0(x))))).flatten(1))


def test_grouped_and_non_square_convs_export_exactly(tmp_path):
    torch.manual_seed(0)
    m = _GroupedNonSquare().eval()
    with torch.no_grad():
        m.c0.weight.mul_(4)
        m.c1.weight.mul_(4)
        m.bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "g.nir"
    write_nir(export_nir(m, (1, 8, 8), 4), path)
    g = read_nir(path)  # was refused: "type mismatch: c0.output [4 8 3] -> l0.input [4 8 4]"
    assert tuple(g.nodes["c1"].input_type["input"]) == (4, 8, 4)
    x = torch.rand(32, 1, 8, 8)
    with torch.no_grad():
        ref, ref_spikes = run_model(m, x, 4, "analog", record_spikes=True)
    out, spikes = run_graph(g, x, 4)
    assert all(torch.equal(spikes[k], ref_spikes[k]) for k in ("l0", "l1"))
    assert sum(int(s.sum()) for s in spikes.values()) > 0  # the comparison is not vacuous
    assert torch.equal(out.argmax(1), ref.argmax(1))
    prog = quantize_graph(g, calibration=x.numpy(), run=functools.partial(emulate, check=False))
    assert [p.shape for p in prog.populations[:2]] == [(4, 8, 4), (4, 8, 4)]
    assert emulate(prog, x.numpy()).predictions.shape == (32,)


def test_corrupt_batchnorm_statistics_are_refused(tmp_path):
    """A negative running_var used to fold into NaN weights and export with exit code 0."""
    m, _ = load_model(SHIPPED)
    with torch.no_grad():
        m.bn1.running_var[0] = -1.0
    with pytest.raises(DaLifError, match="bn1.*running_var"):
        export_nir(m, (1, 8, 8), 4)


def _nir_file(path: Path, lif: nir.LIF, metadata: dict) -> Path:
    nodes = {"input": nir.Input(np.array([4])),
             "fc1": nir.Affine(np.full((3, 4), 0.3), np.zeros(3)), "lif1": lif,
             "fc2": nir.Affine(np.ones((2, 3)), np.zeros(2)), "output": nir.Output(np.array([2]))}
    names = list(nodes)
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:], strict=True)),
                                 metadata=metadata, type_check=False))
    return path


def test_foreign_graph_quantised_only_with_an_explicit_dt(tmp_path, capsys):
    """A foreign LIF's decay depends on dt; it used to be quantised with dt = 1 silently."""
    lif = nir.LIF(tau=np.full(3, 2.0), r=np.ones(3), v_leak=np.zeros(3),
                  v_threshold=np.full(3, 0.5))
    path = _nir_file(tmp_path / "f.nir", lif, {"timesteps": 4, "input_encoding": "analog"})
    g = read_nir(path)
    with pytest.raises(DaLifError, match="--dt"):
        quantize_graph(g)
    assert main(["quantize", str(path), "-o", str(tmp_path / "f.fxp")]) == 2
    assert "--dt" in _one_error(capsys)
    prog = quantize_graph(g, dt=0.5)  # beta = 1 - dt/tau = 0.75: dv = 4096 * 0.25
    assert list(prog.populations[0].dv) == [1024]


def test_quantize_cli_validates_the_graph(tmp_path, capsys):
    """A NaN parameter used to end in a Python traceback (nir.read without validation)."""
    lif = nir.LIF(tau=np.full(3, np.nan), r=np.ones(3), v_leak=np.zeros(3),
                  v_threshold=np.full(3, 0.5))
    path = _nir_file(tmp_path / "nan.nir", lif, {"timesteps": 4, "input_encoding": "analog"})
    assert main(["quantize", str(path), "-o", str(tmp_path / "q.fxp")]) == 2
    assert "NaN" in _one_error(capsys) and not (tmp_path / "q.fxp").exists()


# --- numeric options that used to be replaced silently ----------------------------------------

@pytest.mark.parametrize("argv, word", [
    (["dataset", "digits-events", "-T", "0", "-o", "{tmp}/d.npz"], "timesteps"),
    (["dataset", "digits", "-T", "5", "-o", "{tmp}/d.npz"], "event data only"),
    (["quantize", "{nir}", "-o", "{tmp}/q.fxp", "--calibrate", "digits",
      "--calibration-samples", "-5"], "calibration-samples"),
    (["quantize", "{nir}", "-o", "{tmp}/q.fxp", "--calibrate", "digits-events"], "events"),
    (["export", "{pt}", "-o", "{tmp}/x.nir", "-T", "0"], "timesteps"),
    (["export", "{pt}", "-o", "{tmp}/x.nir", "--model", "digits-resnet"], "digits-cnn"),
    (["verify", "{pt}", "--timeout", "0"], "timeout"),
    (["simulate", "{nir}", "--backend", "nir", "--dt=nan"], "--dt must be a positive finite"),
    (["quantize", "{nir}", "-o", "{tmp}/q.fxp", "--dt=-1"], "--dt must be a positive finite"),
    (["train", "--model", "vgg11", "--epochs", "1", "-o", "{tmp}/v.pt"], "input size"),
])
def test_bad_numbers_and_names_exit_2(argv, word, files, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{pt}", str(files["pt"]))
            .replace("{nir}", str(files["nir"])) for a in argv]
    assert main(args) == 2
    assert word in _one_error(capsys)
    assert _files(tmp_path) == set()


def test_quantize_json_to_stdout_is_json_alone(files, tmp_path, capsys):
    assert main(["quantize", str(files["nir"]), "-o", str(tmp_path / "q.fxp"),
                 "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)  # the table went to stderr
    assert out["timesteps"] == 4 and len(out["quant_table"]) == 3


# --- files: geometry checks, kinds by content --------------------------------------------------

def test_program_geometry_is_checked_on_load(files, tmp_path):
    prog = load_program(files["fxp"])
    syn = prog.synapses[0]
    for bad in ({"stride": (0, 0)}, {"padding": (-1, -1)}, {"groups": 0}):
        fields = {k: getattr(syn, k) for k in syn.__dataclass_fields__} | bad
        with pytest.raises(DaLifError, match="stride >= 1"):  # was a ZeroDivisionError
            Synapse(**fields)
    with pytest.raises(DaLifError, match="scale"):
        Population("p", (2,), np.zeros(1), 1, np.zeros(2), scale=float("nan"))
    with pytest.raises(DaLifError, match="dimension"):
        InputEncoding("analog", (-1, 8, 8))
    syn.stride = (0, 0)  # bypass the check, as a hand-edited file would
    save_program(prog, tmp_path / "bad.fxp")
    with pytest.raises(DaLifError, match="bad.fxp.*stride"):
        load_program(tmp_path / "bad.fxp")


def test_file_kind_follows_content_and_refuses_directories(files, tmp_path):
    renamed = tmp_path / "ckpt.nir"
    shutil.copy(files["pt"], renamed)
    with pytest.raises(DaLifError, match="holds a PyTorch checkpoint; rename it to .pt"):
        file_kind(renamed)
    with pytest.raises(DaLifError, match="is a directory"):
        file_kind(tmp_path)
    assert file_kind(files["nir"]) == "nir"
