"""Hostile input, one parametrized test per class of issue 11 (Resources and Values), every
file format: each case is a small file (or option) that DECLARES something huge or wrong; the
command line answers with exit code 2 and one ``error:`` line naming the problem, never a
traceback, and nothing big is allocated (measured in a subprocess for the declared sizes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import hostile_files as hf

from dalif_deploy.base import resources
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main

Case = Callable[[Path, dict[str, Path]], list[str]]


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The shipped checkpoint, its NIR graph, its program and its ONNX graph."""
    d = tmp_path_factory.mktemp("files")
    assert main(["export", str(hf.SHIPPED), "-o", str(d / "m.nir"),
                 "--onnx", str(d / "m.onnx")]) == 0
    assert main(["quantize", str(d / "m.nir"), "-o", str(d / "m.fxp")]) == 0
    return {"pt": hf.SHIPPED, "nir": d / "m.nir", "fxp": d / "m.fxp", "onnx": d / "m.onnx"}


def _inspect(make: Callable[[Path, dict[str, Path]], Path]) -> Case:
    return lambda tmp, files: ["inspect", str(make(tmp, files))]


def _ckpt(edit: Callable[[dict], None]) -> Case:
    return _inspect(lambda tmp, files: hf.edited_checkpoint(tmp / "c.pt", edit))


def _set(obj: dict, path: str, value) -> None:
    *keys, last = path.split(".")
    for k in keys:
        obj = obj[k]
    obj[last] = value


def _cfg(field: str, value) -> Case:
    return _ckpt(lambda o: _set(o, field, value))


def _weights(value: torch.Tensor) -> Case:
    return _ckpt(lambda o: o["state_dict"].__setitem__("fc.bias", value))


def _fxp(edit: Callable[[dict[str, bytes]], None]) -> Case:
    return _inspect(lambda tmp, files: hf.edited_program(files["fxp"], tmp / "p.fxp", edit))


def _fxp_header(edit: Callable[[dict], None]) -> Case:
    def make(tmp: Path, files: dict[str, Path]) -> Path:
        h = hf.program_header(files["fxp"])
        edit(h)
        return hf.edited_program(files["fxp"], tmp / "p.fxp",
                                 lambda m: m.__setitem__("header.npy", hf.header_npy(h)))
    return _inspect(make)


def _unused_member(tmp: Path, files: dict[str, Path]) -> Path:
    """The program plus a 256 MiB member nothing reads (it compresses to 256 KiB)."""
    import shutil
    import zipfile

    path = shutil.copy(files["fxp"], tmp / "p.fxp")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z, z.open("junk.npy", "w") as f:
        f.write(hf.npy_bytes((2**25,)))
        for _ in range(256):
            f.write(bytes(1 << 20))
    return Path(path)


def _uint64_weights(m: dict[str, bytes]) -> None:
    import io

    w = np.load(io.BytesIO(m["syn0.weights.npy"]))
    buf = io.BytesIO()
    np.save(buf, np.full(w.shape, 2**64 - 1, np.uint64))
    m["syn0.weights.npy"] = buf.getvalue()


def _nir(argv: list[str], **edits) -> Case:
    """``argv`` ({nir}: the edited graph, {tmp}: the test folder) on the shipped graph with
    ``edits`` ({"metadata/dt": value}, relative to node/)."""
    def make(tmp: Path, files: dict[str, Path]) -> list[str]:
        path = hf.edited_nir(files["nir"], tmp / "g.nir",
                             {f"node/{k.replace('__', '/')}": v for k, v in edits.items()})
        return [a.replace("{nir}", str(path)).replace("{tmp}", str(tmp)) for a in argv]
    return make


def _onnx(edit: Callable[[object], None], command: str = "inspect") -> Case:
    def make(tmp: Path, files: dict[str, Path]) -> list[str]:
        path = hf.edited_onnx(files["onnx"], tmp / "m.onnx", edit)
        return (["inspect", str(path)] if command == "inspect" else
                ["simulate", str(path), "--backend", "onnx", "--samples", "4"])
    return make


def _onnx_meta(key: str, value: str, command: str = "inspect") -> Case:
    return _onnx(lambda p: hf.set_onnx_metadata(p, key, value), command)


def _cifar(data, labels) -> Case:
    """A CIFAR-10 folder whose test batch holds ``data`` and ``labels``; ``simulate`` on it."""
    import pickle

    def make(tmp: Path, files: dict[str, Path]) -> list[str]:
        root = tmp / "cifar-10-batches-py"
        root.mkdir()
        with open(root / "test_batch", "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)
        return ["dataset", "cifar10", "--data-dir", str(tmp), "-o", str(tmp / "d.npz")]
    return make


def _cli(*argv: str) -> Case:
    return lambda tmp, files: [a.replace("{tmp}", str(tmp)) for a in argv]


PIXELS = np.zeros((2, 3072), np.float64)
SIM_NIR = ["simulate", "{nir}", "--backend", "nir", "--samples", "4"]
QUANTIZE = ["quantize", "{nir}", "-o", "{tmp}/q.fxp"]


# --- Resources: sizes a file declares are checked before anything is read ------------------

GiB = 1 << 30
DECLARED: dict[str, tuple[Case, str]] = {
    "ckpt-storage-2GiB": (_inspect(lambda t, f: hf.declared_storage(t / "c.pt", GiB // 2)),
                          r"storage '0' declares 2\.0 GiB but its record holds 16 B"),
    "ckpt-member-listed-300-times": (_inspect(lambda t, f: hf.repeated_member(t / "c.pt")),
                                     r"lists member 'archive/data/9' more than once"),
    "ckpt-member-declares-4GiB": (_inspect(lambda t, f: hf.lying_zip_sizes(t / "c.pt",
                                                                           2**32 - 1)),
                                  r"declares 4\.0 GiB from .* of stored data"),
    "ckpt-compressed-members": (_inspect(lambda t, f: hf.deflated_checkpoint(t / "c.pt")),
                                r"is compressed; torch\.save writes every member stored"),
    "fxp-array-declares-1e12-elements": (
        _fxp(lambda m: m.__setitem__("syn0.weights.npy", hf.npy_bytes((10**6, 10**6)))),
        r"array 'syn0\.weights': declares shape \(1000000, 1000000\) \(7\.3 TiB"),
    "fxp-member-declares-4GiB": (_inspect(lambda t, f: hf.lying_zip_sizes(t / "p.fxp", 2**32 - 1,
                                                                          "header.npy")),
                                 r"declares 4\.0 GiB from"),
    "fxp-unused-256MiB-member": (_inspect(_unused_member), None),  # loads: the member is unread
    "onnx-initializer-declares-3.6TiB": (_onnx(lambda p: hf.set_initializer(
        p, "alpha_0", [10**6, 10**6], bytes(4))),
        r"tensor 'alpha_0': declares shape \[1000000, 1000000\] \(3\.6 TiB\) but holds 4 B"),
    "nir-fill-value-5GiB": (_nir(["inspect", "{nir}"], metadata__huge=(
        hf.FILL, (5 * GiB // 8,), "f8")), r"dataset 'node/metadata/huge' declares shape "
                            r"\(671088640,\) \(5\.0 GiB\) backed by 0 B"),
}


@pytest.mark.parametrize("case", list(DECLARED), ids=list(DECLARED))
def test_declared_sizes_are_checked_before_reading(case, files, tmp_path, capsys):
    make, match = DECLARED[case]
    if match is None:
        assert main(make(tmp_path, files)) == 0
        return
    assert main(make(tmp_path, files)) == 2
    assert re.search(match, _one_error(capsys))


def test_declared_sizes_allocate_nothing_big(files, tmp_path):
    """Every declared-size case in one subprocess: its peak RSS stays far below what the files
    declare (2 GiB and more each)."""
    argvs = []
    for c in DECLARED:
        (tmp_path / c).mkdir()
        argvs.append(DECLARED[c][0](tmp_path / c, files))
    code = ("import json, resource, sys\n"
            "from dalif_deploy.cli import main\n"
            "codes = [main(a) for a in json.loads(sys.argv[1])]\n"
            "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
            "print(json.dumps({'codes': codes, 'peak': peak}))\n")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(argvs)], capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).parent, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["codes"] == [2 if DECLARED[c][1] else 0 for c in DECLARED], out.stderr
    assert res["peak"] < 1.0 * GiB, res  # torch alone is ~0.4 GiB; each file declares >= 2 GiB


# --- Values: every number checked for dtype, finiteness and range where it enters ----------

SIZES: dict[str, tuple[Case, str]] = {
    "ckpt-width-8000": (_cfg("model.width", 8000), r"width: must be an integer in \[1, 4096\]"),
    "ckpt-T-1e9": (_cfg("timesteps", 10**9), r"timesteps: must be an integer in \[1, 65536\]"),
    "ckpt-input-huge": (_cfg("model.input_shape", [1, 10**6, 10**6]),
                        r"input_shape: .* elements, more than the 16,777,216 allowed"),
    "nir-T-1e9": (_nir(SIM_NIR, metadata__timesteps=10**9),
                  r"metadata\.timesteps: must be an integer in \[1, 65536\], got 1000000000"),
    "nir-input-1e6x1e6": (_nir(QUANTIZE, nodes__input__shape=np.array([1, 10**6, 10**6])),
                          r"node 'input': its output \(1, 1000000, 1000000\) has "
                          r"1,000,000,000,000 elements per sample"),
    "quantize-T-1e9": (_nir([*QUANTIZE, "-T", "1000000000"]),
                       r"timesteps: must be an integer in \[1, 65536\]"),
    "onnx-T-1e9": (_onnx_meta("timesteps", "1000000000", "simulate"),
                   r"metadata\.timesteps: must be an integer in \[1, 65536\]"),
    "dataset-T-1e8": (_cli("dataset", "digits-events", "-T", "100000000", "-o", "{tmp}/d.npz"),
                      r"timesteps: must be an integer in \[1, 65536\], got 100000000"),
    "dataset-T-65536-memory": (_cli("dataset", "digits-events", "-T", "65536", "-o",
                                    "{tmp}/d.npz"),
                               r"generating digits-events/test with T=65536 .* needs about "
                               r"[\d.]+ GiB of memory, more than the"),
    "train-T-1e9": (_cli("train", "--model", "digits-cnn", "-T", "1000000000", "--epochs", "1",
                         "-o", "{tmp}/m.pt"), r"timesteps: must be an integer in \[1, 65536\]"),
    "train-width-100000": (_cli("train", "--model", "digits-cnn", "--width", "100000",
                                "--epochs", "1", "-o", "{tmp}/m.pt"),
                           r"width: must be an integer in \[1, 4096\], got 100000"),
    "train-batch-1e9": (_cli("train", "--model", "digits-cnn", "--batch-size", "1000000000",
                             "--epochs", "1", "-o", "{tmp}/m.pt"),
                        r"batch-size: must be an integer in \[1, 1048576\]"),
    "train-memory": (_cli("train", "--model", "digits-cnn", "-T", "65536", "--epochs", "1",
                          "--width", "4096", "-o", "{tmp}/m.pt"),
                     r"training digits-cnn with batch 64 and T=65536 needs about [\d.]+ TiB"),
    "export-onnx-T-65536": (lambda t, f: ["export", str(hf.edited_checkpoint(
        t / "c.pt", lambda o: _set(o, "timesteps", 65536))), "--onnx", str(t / "m.onnx")],
        r"exporting to ONNX unrolled over T=65536 \(9 modules per step\) needs about "
        r"36\.0 GiB"),
    "simulate-batch-1e9": (lambda t, f: ["simulate", str(f["pt"]), "--backend", "torch",
                                         "--batch-size", "1000000000"],
                           r"--batch-size: must be an integer in \[1, 1048576\]"),
}


@pytest.mark.parametrize("case", list(SIZES), ids=list(SIZES))
def test_size_giving_values_are_bounded(case, files, tmp_path, capsys, monkeypatch):
    """The memory estimates are compared with a fixed 16 GiB machine, so that the figures in
    the messages do not depend on where the suite runs."""
    monkeypatch.setattr(resources, "mem_available", lambda trim=False: 16 * GiB)
    make, match = SIZES[case]
    assert main(make(tmp_path, files)) == 2
    assert re.search(match, _one_error(capsys))


VALUES: dict[str, tuple[Case, str]] = {
    "ckpt-v_th-nan": (_cfg("model.v_th", float("nan")), r"model config\.v_th: must be a finite"),
    "ckpt-v_th-negative": (_cfg("model.v_th", -1.0), r"v_th: must be a finite number > 0"),
    "ckpt-init_alpha-1": (_cfg("model.init_alpha", 1.0), r"init_alpha: must lie in \(0, 1\)"),
    "ckpt-accuracy-2": (_cfg("metrics.test_accuracy", 2.0), r"test_accuracy: must be a finite"),
    "ckpt-weights-1e300": (_weights(torch.full((10,), 1e300, dtype=torch.float64)),
                           r"'fc\.bias' holds 1e\+300, beyond float32"),
    "ckpt-weights-complex": (_weights(torch.zeros(10, dtype=torch.complex64)),
                             r"'fc\.bias' is complex"),
    "ckpt-input-2d": (_cfg("model.input_shape", [8, 8]), r"input_shape: must have 3 dim"),
    "fxp-weights-uint64-max": (_fxp(_uint64_weights),
                               r"weights: holds 18446744073709551615, beyond int64"),
    "nir-T-0": (_nir(QUANTIZE, metadata__timesteps=0), r"metadata\.timesteps: must be an int"),
    "nir-dt-nan": (_nir(QUANTIZE, metadata__dt=float("nan")),
                   r"metadata\.dt: must be a finite number > 0\.0, got nan$"),
    "nir-dt-0": (_nir(SIM_NIR, metadata__dt=0.0), r"metadata\.dt: must be a finite number > 0"),
    "nir-input-fractional": (_nir(QUANTIZE, nodes__input__shape=np.array([1.0, 8.5, 8.0])),
                             r"input node 'input': shape\[1\]: must be an integer >= 1, got 8\.5"),
    "nir-tau-0": (_nir(SIM_NIR, nodes__lif1__tau=np.zeros((16, 8, 8))),
                  r"node 'lif1' \(LIF\): tau must be > 0, got min 0"),
    "nir-v_th-negative": (_nir(SIM_NIR, nodes__lif2__v_threshold=np.full((32, 4, 4), -1.0)),
                          r"node 'lif2' \(LIF\): v_threshold must be >= 0, got min -1"),
    "nir-weights-complex": (_nir(SIM_NIR, nodes__fc__weight=np.zeros((10, 512), np.complex128)),
                            r"dataset 'node/nodes/fc/weight' is complex"),
    "onnx-nan-threshold": (_onnx(lambda p: hf.set_initializer(
        p, "alpha_0", [], np.float32(np.nan).tobytes()), "simulate"),
        r"tensor 'alpha_0': holds NaN or Inf"),
    "cifar-pixel-nan": (_cifar(np.where(np.arange(2 * 3072).reshape(2, 3072) == 5, np.nan,
                                        PIXELS), [1, 2]), r"pixel data: contains NaN or Inf"),
    "cifar-pixel-300": (_cifar(PIXELS + 300, [1, 2]),
                        r"pixel data: values must lie in 0\.\.255, got 300\.0\.\.300\.0"),
    "cifar-pixel-fraction": (_cifar(PIXELS + 0.5, [1, 2]), r"pixel data: values must be whole"),
    "cifar-label-fraction": (_cifar(PIXELS, [1.5, 2.0]), r"labels: values must be whole"),
    "cifar-label-string": (_cifar(PIXELS, ["cat", "dog"]), r"labels: must hold real numbers"),
    "fxp-vth-fractional": (_fxp_header(lambda h: _set(h["populations"][0], "vth", 100.5)),
                           r"populations\[0\]\.vth: must be an integer, got 100\.5"),
}

TYPES: dict[str, tuple[Case, str]] = {
    "ckpt-v_th-string": (_cfg("model.v_th", "1.0"),
                         r"v_th: must be a finite number > 0\.0, got str"),
    "ckpt-width-string": (_cfg("model.width", "16"), r"width: must be an integer .*got str"),
    "ckpt-init_alpha-string": (_cfg("model.init_alpha", "x"), r"init_alpha: must be a finite"),
    "ckpt-dataset-string": (_cfg("dataset", "digits"), r"checkpoint\.dataset: must be a dict"),
    "ckpt-metrics-list": (_cfg("metrics", [0.9]), r"checkpoint\.metrics: must be a dict"),
    "ckpt-T-string": (_cfg("timesteps", "4"), r"timesteps: must be an integer .*got str"),
    "ckpt-model-not-dict": (_cfg("model", "digits-cnn"), r"unknown model 'digits-cnn'"),
    "fxp-nested-header": (_fxp(lambda m: m.__setitem__(
        "header.npy", hf.header_npy(b"[" * 100_000 + b"]" * 100_000))), r"nested too deeply"),
    "fxp-plain-npy": (_inspect(lambda t, f: _npy(t / "p.fxp")), r"a plain \.npy array"),
    "fxp-shape-string": (_fxp_header(lambda h: _set(h["populations"][0], "shape", "8x8")),
                         r"populations\[0\]\.shape: must be a list of positive integers"),
    "fxp-T-string": (_fxp_header(lambda h: _set(h, "timesteps", "4")),
                     r"header\.timesteps: must be an integer, got str"),
    "nir-T-string": (_nir(SIM_NIR, metadata__timesteps="four"),
                     r"metadata\.timesteps: must be an integer .*got str 'four'"),
    "nir-T-array": (_nir(QUANTIZE, metadata__timesteps=np.array([4, 4])),
                    r"metadata\.timesteps: must be an integer .*an array of shape \(2,\)"),
    "nir-input-strings": (_nir(SIM_NIR, nodes__input__shape=np.array([b"1", b"8", b"8"])),
                          r"input node 'input': shape\[0\]: must be an integer >= 1, got bytes"),
    "nir-dt-string": (_nir(SIM_NIR, metadata__dt="1.0"),
                      r"metadata\.dt: must be a finite number > 0\.0, got str"),
    "onnx-T-string": (_onnx_meta("timesteps", "four", "simulate"),
                      r"metadata\.timesteps: not readable JSON"),
    "onnx-T-float": (_onnx_meta("timesteps", "4.5"), r"metadata\.timesteps: must be an integer"),
    "onnx-input_shape-1d": (_onnx_meta("input_shape", "[64]"),  # (C, L): a 1-D network
                            r"metadata\.input_shape: must have 2 or 3 dimensions"),
    "onnx-layers-list": (_onnx_meta("dalif_layers", "[2]"),
                         r"metadata\.dalif_layers: must be an integer"),
    "fxp-graded-number": (_fxp_header(lambda h: _set(h["synapses"][0], "graded", 1)),
                          r"synapses\[0\]\.graded: must be true or false"),
}


def _npy(path: Path) -> Path:
    with open(path, "wb") as f:
        np.save(f, np.zeros(4))
    return path


@pytest.mark.parametrize("case", list(VALUES), ids=list(VALUES))
def test_numbers_are_checked_where_they_enter(case, files, tmp_path, capsys):
    make, match = VALUES[case]
    assert main(make(tmp_path, files)) == 2
    assert re.search(match, _one_error(capsys))


@pytest.mark.parametrize("case", list(TYPES), ids=list(TYPES))
def test_wrong_types_are_one_error_line(case, files, tmp_path, capsys):
    make, match = TYPES[case]
    assert main(make(tmp_path, files)) == 2
    assert re.search(match, _one_error(capsys))


def test_a_config_with_only_a_name_runs_with_the_zoo_defaults(tmp_path, capsys):
    """A config holding only the model name used to end in KeyError 'input_shape'."""
    path = hf.edited_checkpoint(tmp_path / "c.pt", lambda o: _set(o, "model",
                                                                 {"name": "digits-cnn"}))
    assert main(["simulate", str(path), "--backend", "torch", "--samples", "8",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["samples"] == 8
    assert np.isfinite(json.loads((tmp_path / "r.json").read_text())["accuracy"])


def test_memory_check_reads_meminfo_and_names_the_figures(monkeypatch):
    avail = resources.mem_available()
    assert avail is None or avail > 0
    monkeypatch.setattr(resources, "mem_available", lambda trim=False: 4 * GiB)
    resources.check_memory(3 * GiB, "a run")  # within 90 % of what is available
    with pytest.raises(DaLifError, match=r"^a run needs about 3\.8 GiB of memory, more than "
                                         r"the 4\.0 GiB this machine has available \(the least of "
                                         r"MemAvailable, .*ulimit -v.* cgroup.*\); try less$"):
        resources.check_memory(3.8 * GiB, "a run", "try less")


def test_emulator_refuses_a_run_whose_state_cannot_fit(files, monkeypatch):
    """The emulator estimates its state (six int64 per neuron and sample of a batch, three
    more per step for recorded traces) before allocating it."""
    from dalif_deploy.targets.emulator import emulate

    from dalif_deploy.fixedpoint.fxp_format import load_program

    prog = load_program(files["fxp"])
    x = np.zeros((64, 1, 8, 8), np.float32)
    monkeypatch.setattr(resources, "mem_available", lambda trim=False: 1 << 20)
    with pytest.raises(DaLifError, match=r"emulating 1,546 neurons with batch 64 and traces of "
                                         r"64 samples x T=4 needs about 13\.6 MiB of memory, "
                                         r"more than the 1\.0 MiB"):
        emulate(prog, x, record=True)
    monkeypatch.setattr(resources, "mem_available", lambda trim=False: 64 << 20)
    assert emulate(prog, x, record=True).predictions.shape == (64,)
