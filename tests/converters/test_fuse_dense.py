"""The dense fallback of fusion in bounded memory: the same float64 matrix (and so the same
program, byte for byte) as the old one-batch ``f(eye)`` probe, which stays here as the oracle."""

from __future__ import annotations

import functools

import nir
import numpy as np
import pytest
import torch
from dalif_deploy.converters import nir_fuse, nir_to_fixed
from dalif_deploy.converters.nir_fuse import fuse_path, graph_paths, path_function
from dalif_deploy.converters.nir_to_fixed import quantize_graph
from dalif_deploy.converters.torch_to_nir import export_nir
from dalif_deploy.targets.emulator import emulate
from helpers.nir_helpers import lively_model

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.fxp_format import program_to_arrays


def old_dense(f, in_shape, out_shape, where, widest=None) -> np.ndarray:
    """The test oracle: the quantiser's former dense probe, one float64 identity batch of
    n_in x n_in (n_in^2 memory: 8 GiB for a width-128 ResNet-19 readout)."""
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
    return f(eye).reshape(n_in, n_out).T.contiguous().numpy()


def readout_graph(pool: int, size: int, channels: int = 6, classes: int = 5) -> nir.NIRGraph:
    """input -> AvgPool(pool) -> Flatten -> Linear: the zoo's readout path."""
    rng = np.random.default_rng(pool * 100 + size)
    h = (size - pool) // pool + 1
    nodes = {"in": nir.Input(np.array([channels, size, size])),
             "pool": nir.AvgPool2d(np.array([pool, pool]), np.array([pool, pool]),
                                   np.array([0, 0])),
             "flat": nir.Flatten({"input": np.array([channels, h, h])}, 0),
             "fc": nir.Linear(rng.normal(0, 0.3, (classes, channels * h * h))),
             "out": nir.Output(np.array([classes]))}
    edges = [("in", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", "out")]
    return nir.NIRGraph(nodes, edges, type_check=False)


def _readout(pool: int, size: int, channels: int = 6, classes: int = 5):
    g = readout_graph(pool, size, channels, classes)
    (path,) = graph_paths(g, "out", lambda n: n == "in")
    return g, path, (channels, size, size), (classes,)


@pytest.mark.parametrize("pool,size", [(2, 6), (3, 9), (7, 7), (5, 11)])
def test_dense_is_the_old_probe_bit_for_bit_in_small_chunks(monkeypatch, pool, size):
    """Forward columns in chunks of a few probes: exactly the one-batch identity probe's
    float64 (non-power-of-two pools included, where W/9 and W*(1/9) differ by an ulp)."""
    g, path, in_shape, out_shape = _readout(pool, size)
    monkeypatch.setattr(nir_fuse, "DENSE_PROBE_BYTES", 8 * 1024)  # a handful of probes a chunk
    fused = fuse_path(g, path, in_shape, out_shape, "out")
    assert fused.kind == "dense"
    oracle = old_dense(path_function(g, path), in_shape, out_shape, "out")
    assert fused.weight.dtype == np.float64 and np.array_equal(fused.weight, oracle)


def test_dense_memory_grows_with_n_in_not_its_square(monkeypatch):
    """No probe batch holds more than the chunk budget: the old probe pushed all n_in unit
    vectors through at once (n_in x n_in); now at most DENSE_PROBE_BYTES at a time."""
    g, path, in_shape, out_shape = _readout(2, 16, channels=8)
    n_in = int(np.prod(in_shape))
    budget = 64 * 1024
    monkeypatch.setattr(nir_fuse, "DENSE_PROBE_BYTES", budget)
    seen: list[int] = []
    real = nir_fuse.path_function

    def recording(graph, p):
        f = real(graph, p)

        def probe(x: torch.Tensor) -> torch.Tensor:
            seen.append(x.numel() * x.element_size())
            return f(x)
        return probe

    monkeypatch.setattr(nir_fuse, "path_function", recording)
    fuse_path(g, path, in_shape, out_shape, "out")
    assert seen and max(seen) <= budget < n_in * n_in * 8


def test_rows_by_backward_passes_when_forward_would_be_too_much_work(monkeypatch):
    """Past DENSE_FORWARD_WORK, n_out backward passes give the rows: the same linear map,
    within one ulp where a pool divides by 9 (bound: 2 ulp of each entry)."""
    g, path, in_shape, out_shape = _readout(3, 9)
    monkeypatch.setattr(nir_fuse, "DENSE_FORWARD_WORK", 0)
    calls: list[bool] = []
    real = nir_fuse.path_function

    def recording(graph, p):
        f = real(graph, p)

        def probe(x: torch.Tensor) -> torch.Tensor:
            calls.append(x.requires_grad)
            return f(x)
        return probe

    monkeypatch.setattr(nir_fuse, "path_function", recording)
    fused = fuse_path(g, path, in_shape, out_shape, "out")
    oracle = old_dense(real(g, path), in_shape, out_shape, "out")
    assert calls and all(calls) and len(calls) <= out_shape[0]
    assert np.allclose(fused.weight, oracle, rtol=4.5e-16, atol=0)


@pytest.mark.parametrize("name,over,shape", [
    ("digits-resnet", {}, (1, 8, 8)),
    ("resnet19", {"width": 2}, (3, 32, 32)),
    ("vgg11", {"width": 2, "input_shape": [2, 32, 32]}, (2, 32, 32)),
])
def test_programs_are_identical_to_the_old_probe(monkeypatch, name, over, shape):
    """Every array of the calibrated program (integers and metadata) as the old probe gave."""
    model = lively_model(name, **over)
    x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)
    if name == "vgg11":
        x = (x < 0.2).astype(np.float32)
    graph = export_nir(model, shape, 2)
    run = functools.partial(emulate, check=False)
    new = program_to_arrays(quantize_graph(graph, calibration=x, run=run))
    monkeypatch.setattr(nir_fuse, "_dense", old_dense)
    old = program_to_arrays(quantize_graph(graph, calibration=x, run=run))
    assert new.keys() == old.keys()
    for key in old:
        assert np.array_equal(np.asarray(new[key]), np.asarray(old[key])), key


def test_a_graph_too_large_for_the_machine_is_refused_before_fusing(monkeypatch, tmp_path,
                                                                       capsys):
    """One `error:` line with the figure, before any fusion probe runs (exit 2, no file)."""
    from dalif_deploy.converters.torch_to_nir import write_nir

    from dalif_deploy.base import resources
    from dalif_deploy.cli import main

    graph = export_nir(lively_model("resnet19", width=2), (3, 32, 32), 2)
    monkeypatch.setattr(resources, "mem_available", lambda trim=False: 64 * 2**20)
    monkeypatch.setattr(nir_to_fixed, "fuse_path", lambda *a: pytest.fail("fusion started"))
    with pytest.raises(DaLifError, match=r"quantising this graph .* needs about \d+\.\d MiB"):
        quantize_graph(graph)
    write_nir(graph, tmp_path / "m.nir")
    out = tmp_path / "m.fxp"
    assert main(["quantize", str(tmp_path / "m.nir"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: quantising this graph")
    assert "smaller --width" in err[0] and not out.exists()


def test_calibration_emulates_in_memory_bounded_batches(monkeypatch):
    """quantize's calibration run emulates in batches whose state fits the budget (1 sample
    each here), with the integers of one big batch."""
    from dalif_deploy.targets import emulator

    graph = export_nir(lively_model("digits-cnn"), (1, 8, 8), 2)
    x = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    program = quantize_graph(graph)
    whole = emulate(program, x, check=False, batch_size=6)
    monkeypatch.setattr(emulator, "CALIBRATION_BATCH_BYTES", 1)
    batches = []
    real = emulator.emulate
    monkeypatch.setattr(emulator, "emulate",
                        lambda *a, **k: batches.append(k["batch_size"]) or real(*a, **k))
    got = emulator.calibration_run(program, x)
    assert batches == [1]
    assert np.array_equal(got.outputs, whole.outputs)
    assert np.array_equal(got.spike_counts, whole.spike_counts)
