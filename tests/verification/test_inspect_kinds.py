"""``inspect`` describes every file kind the tool writes, sniffed from the content (issue 23);
a file of another kind given to a command is named, with what to do, in one ``error:`` line;
a NIR graph's text is a readable summary."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT

from dalif_deploy.base.filekind import sniff
from dalif_deploy.cli import main

SHIPPED = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"

#: result JSONs with the keys verify / sweep / compare write (running them here is slow)
RESULTS = {
    "verify": {"checkpoint": "m.pt", "model": "digits-cnn", "dataset": "digits", "samples": 8,
               "float_accuracy": 1.0, "fixed_accuracy": 0.875, "layers": [],
               "checks": [{"check": "accuracy drop", "id": "drop", "value": 12.5,
                           "limit": 2.0, "ok": False}], "passed": False, "seconds": 1.0},
    "sweep": {"checkpoint": "m.pt", "model": "digits-cnn", "dataset": "digits", "samples": 8,
              "timesteps": 4, "rows": [{"weight_bits": 8, "fixed_accuracy": 0.875}],
              "seconds": 2.0},
    "compare": {"settings": {"dataset": "digits", "epochs": 1},
                "runs": [{"neuron": "dalif", "fixed_accuracy": 0.5}],
                "table": [{"neuron": "dalif", "fixed_accuracy": 0.5}]},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One file of every kind, written by the tool's own commands (and result JSONs)."""
    d = tmp_path_factory.mktemp("kinds")
    assert main(["export", str(SHIPPED), "-o", str(d / "m.nir"), "--onnx",
                 str(d / "m.onnx")]) == 0
    assert main(["quantize", str(d / "m.nir"), "-o", str(d / "m.fxp"), "--netx",
                 str(d / "m.h5")]) == 0
    assert main(["dataset", "digits", "--split", "test", "-o", str(d / "d.npz")]) == 0
    out = {"checkpoint": SHIPPED, "nir": d / "m.nir", "onnx": d / "m.onnx",
           "program": d / "m.fxp", "netx": d / "m.h5", "dataset": d / "d.npz"}
    for name, content in RESULTS.items():
        out[f"{name}-result"] = d / f"{name}.json"
        out[f"{name}-result"].write_text(json.dumps(content))
    return out


#: per kind, a line its text shows
SHOWN = {"checkpoint": "model       digits-cnn", "nir": "topology    a chain: input -> conv1",
         "onnx": "kind: onnx", "program": "kind: fixed-point program",
         "netx": "type=conv", "dataset": "samples: 450",
         "verify-result": "passed: False", "sweep-result": "weight_bits=8",
         "compare-result": "neuron=dalif"}


@pytest.mark.parametrize("kind", list(SHOWN))
def test_inspect_describes_every_kind_the_tool_writes(kind, files, capsys):
    assert sniff(files[kind]) == kind
    assert main(["inspect", str(files[kind])]) == 0
    assert SHOWN[kind] in capsys.readouterr().out
    assert main(["inspect", str(files[kind]), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == {"program": "fixed-point program"}.get(kind, kind)


def test_kind_comes_from_the_content_not_the_suffix(files, tmp_path, capsys):
    renamed = tmp_path / "data.bin"
    renamed.write_bytes(files["dataset"].read_bytes())
    assert main(["inspect", str(renamed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 450


@pytest.mark.parametrize("argv, says", [
    (["simulate", "{dataset}", "--backend", "emulator"],
     "is a dalif-deploy data set (.npz written by `dataset`); pass it as --dataset"),
    (["quantize", "{program}", "-o", "{tmp}/x.fxp"],
     "is a fixed-point program; it is already quantised"),
    (["verify", "{netx}"], "is a lava-dl netx network (.h5 written by export/quantize --netx)"),
    (["simulate", "{program}", "--backend", "emulator", "--dataset", "{nir}"],
     "is a NIR graph; quantize it to a .fxp"),
    (["export", "{dataset}", "-o", "{tmp}/x.nir"], "is a dalif-deploy data set"),
    (["simulate", "{verify-result}", "--backend", "emulator"], "is a verify result (JSON"),
])
def test_a_file_of_another_kind_is_named_in_one_line(argv, says, files, tmp_path, capsys):
    names = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_nir_text_is_a_readable_summary_and_json_the_full_form(files, capsys):
    assert main(["inspect", str(files["nir"])]) == 0
    text = capsys.readouterr().out
    assert "node types  Affine 1, Conv2d 2, Flatten 1, Input 1, LIF 2, Output 1" in text
    assert "size        8 nodes, 7 edges" in text and "timesteps=4" in text
    assert "producer=dalif-deploy" in text
    assert "conv1            Conv2d     [1, 8, 8] -> [16, 8, 8]" in text
    assert '"' not in text and max(len(line) for line in text.splitlines()) < 200
    assert main(["inspect", str(files["nir"]), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["edges"]) == 7 and d["nodes"][1]["parameters"]["weight"]["shape"] == [16, 1, 3, 3]


def test_inspect_of_a_program_data_set_or_result_does_not_import_torch(files):
    code = ("import sys\nfrom dalif_deploy.cli import main\n"
            f"for f in {[str(files[k]) for k in ('program', 'dataset', 'verify-result')]}:\n"
            "    assert main(['inspect', f]) == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


def test_sniffing_reads_names_not_contents(tmp_path):
    """A zip is sorted by its member names (never unpickled), a JSON by its keys; anything
    else is unknown (its reader gives the precise error)."""
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("inputs.npy", b"not an array")
        f.writestr("labels.npy", b"not an array")
    assert sniff(z) == "dataset"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("archive/data.pkl", b"\x80 hostile pickle, never loaded")
    assert sniff(z) == "checkpoint"
    (tmp_path / "l.json").write_text("[1, 2]")
    (tmp_path / "o.json").write_text('{"passed": true}')
    (tmp_path / "deep.json").write_text("[" * 100000)
    (tmp_path / "h.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    np.save(tmp_path / "a.npy", np.zeros(3))
    for name in ("l.json", "o.json", "deep.json", "h.h5", "a.npy"):
        assert sniff(tmp_path / name) is None, name
