"""The emulator's channels-last (NHWC) layout on CPU: the same integers as torch's NCHW in every
result field, and the layout it claims."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from dalif_deploy.targets import emulator
from dalif_deploy.targets import emulator_kernels as ek
from dalif_deploy.targets.emulator import emulate, population_tensor
from helpers.programs import random_program


def _assert_same(a, b):
    for f in dataclasses.fields(a):
        if f.name == "seconds":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys(), f.name
            for k in x:
                assert np.array_equal(x[k], y[k]), (f.name, k)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        else:
            assert x == y, f.name


@pytest.mark.parametrize("encoding", ["analog", "events"])
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("kernels", ["float32", "auto"])
def test_nhwc_and_nchw_give_the_same_results(encoding, recurrent, kernels, monkeypatch):
    """Random conv programs (C=2 channels of 5x5, so a transposed per-neuron total would show;
    du = 100 populations on the float64 step, du = 4095 on the float32 one; residual and
    recurrent synapses; int8 kernels under auto): outputs, spike counts, per-neuron spike
    totals, wraps, saturations and the recorded spike/v/u traces are equal in both layouts,
    sync blocks of one step included."""
    monkeypatch.setattr(ek, "INT8_MIN_PATCH", 0)  # the test's small convs: int8 under auto
    block_elements = emulator.BLOCK_ELEMENTS
    for seed in range(3):
        rng = np.random.default_rng(300 + seed)
        prog = random_program(rng, "conv", encoding, residual=True, recurrent=recurrent)
        n = 3
        if encoding == "analog":
            x = rng.uniform(-1.3, 1.3, (n, *prog.input.shape)).astype(np.float32)
        else:
            x = (rng.random((n, prog.timesteps, *prog.input.shape)) < 0.4).astype(np.float32)
        runs = {}
        for nhwc in (False, True):
            monkeypatch.setattr(emulator, "NHWC_ON_CPU", nhwc)
            runs[nhwc] = []
            for block in (block_elements, 1):
                monkeypatch.setattr(emulator, "BLOCK_ELEMENTS", block)
                runs[nhwc].append(emulate(prog, x, record=block > 1, check=False,
                                          batch_size=2, kernels=kernels))
        assert runs[False][0].spike_counts.sum() > 0  # the programs spike
        for a, b in zip(runs[False], runs[True], strict=True):
            _assert_same(a, b)


def test_population_tensor_is_channels_last_per_step():
    """Each ``[N, C, H, W]`` step of an NHWC block is channels-last, and the block flattens to
    ``[k*N, C, H, W]`` without a copy (what the synapses are handed)."""
    t = population_tensor((4,), 3, (2, 5, 7), True, torch.float32, torch.device("cpu"))
    assert t.shape == (4, 3, 2, 5, 7)
    assert t[1].is_contiguous(memory_format=torch.channels_last)
    flat = t.flatten(0, 1)
    assert flat.data_ptr() == t.data_ptr() and flat.is_contiguous(
        memory_format=torch.channels_last)
    assert population_tensor((), 3, (2, 5, 7), False, torch.float32,
                             torch.device("cpu")).is_contiguous()
