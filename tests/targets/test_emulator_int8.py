"""The emulator's int8 conv kernels (oneDNN via torch): the same integers as the float32 path,
the start-up self-test and its fallback, and ``--kernels float32|int8|check``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dalif_deploy.targets import emulator_kernels as ek
from dalif_deploy.targets.emulator import emulate
from helpers.programs import random_program

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.fixedpoint.fxp_format import save_program

pytestmark = pytest.mark.skipif(not ek.int8_available(), reason="torch without oneDNN int8")

SHAPES = [  # (C_out, C_in, kH, kW, H, W, stride, padding, groups)
    (4, 3, 3, 3, 7, 6, (1, 1), (1, 1), 1),
    (6, 4, 3, 3, 9, 9, (2, 2), (1, 1), 1),
    (8, 4, 5, 3, 10, 7, (1, 2), (2, 0), 2),
    (5, 2, 6, 6, 12, 12, (2, 2), (2, 2), 1),
    (4, 4, 3, 3, 5, 5, (1, 1), (0, 0), 4),
    (16, 64, 3, 3, 4, 4, (1, 1), (1, 1), 1),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fill", ["random", "extreme"])
def test_int8_conv_equals_float32(shape, fill):
    """Random and extreme weights (all 127, all -128: the largest sums) on all-ones, dense and
    sparse spike maps: oneDNN's int8 sums equal float32's exactly."""
    co, ci, kh, kw, h, w, stride, padding, groups = shape
    gen = torch.Generator().manual_seed(co * 100 + ci)
    wt = torch.randint(-128, 128, (co, ci // groups, kh, kw), dtype=torch.int8, generator=gen)
    if fill == "extreme":
        wt[: co // 2], wt[co // 2:] = 127, -128
    x = torch.cat([torch.ones(2, ci, h, w), (torch.rand(3, ci, h, w, generator=gen) < 0.5),
                   (torch.rand(2, ci, h, w, generator=gen) < 0.05)]).float()
    got = ek.Int8Conv.build(wt, stride, padding, groups)(x)
    ref = F.conv2d(x, wt.float(), None, stride, padding, 1, groups)
    assert got.dtype == torch.float32 and torch.equal(got, ref)
    assert got.is_contiguous(memory_format=torch.channels_last)  # the emulator's CPU layout


def _program(seed=3):
    """A random conv program whose a->b synapse (3x3 from spikes) is int8-eligible."""
    return random_program(np.random.default_rng(seed), "conv", "events", True)


def _x(program, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, program.timesteps, *program.input.shape)) < 0.4).astype(np.float32)


def test_every_kernel_choice_gives_the_same_integers(monkeypatch):
    monkeypatch.setattr(ek, "INT8_MIN_PATCH", 0)  # small test convs: int8 under auto too
    program = _program()
    chosen = {s.name: ek.compile_synapse(program, s, kernels="auto").int8 is not None
              for s in program.synapses}
    assert chosen["a->b"], "the test needs an int8 synapse"
    x = _x(program)
    runs = {k: emulate(program, x, record=True, kernels=k, check=False)
            for k in ("float32", "int8", "check", "auto")}
    ref = runs.pop("float32")
    for r in runs.values():
        assert np.array_equal(r.outputs, ref.outputs)
        for name in ref.spikes:
            assert np.array_equal(r.spikes[name], ref.spikes[name])
            assert np.array_equal(r.v[name], ref.v[name])


def test_1x1_and_graded_input_convs_stay_float32():
    """The 1x1 int8 kernel raced in measurements, and analog input is signed: both float32."""
    program = random_program(np.random.default_rng(4), "conv", "analog", True)
    one = program.synapses[1]
    one.weights = one.weights[:, :, 1:2, 1:2].copy()
    one.padding = (0, 0)
    compiled = {s.name: ek.compile_synapse(program, s, kernels="int8")
                for s in program.synapses}
    assert compiled["in->a"].int8 is None and compiled["a->b"].int8 is None


def test_auto_keeps_small_convs_float32():
    """Under auto a conv below INT8_MIN_PATCH weights per output stays float32 (no gain)."""
    program = _program()
    syn = next(s for s in program.synapses if s.name == "a->b")
    assert syn.weights[0].size < ek.INT8_MIN_PATCH
    assert ek.compile_synapse(program, syn, kernels="auto").int8 is None
    assert ek.compile_synapse(program, syn, kernels="int8").int8 is not None


def _sabotage(monkeypatch):
    """An int8 kernel that is off by one everywhere, and no cached self-test verdicts."""
    real = ek.Int8Conv.__call__
    monkeypatch.setattr(ek.Int8Conv, "__call__", lambda self, x: real(self, x) + 1)
    monkeypatch.setattr(ek, "_INT8_TESTED", {})
    monkeypatch.setattr(ek, "INT8_MIN_PATCH", 0)


def test_a_failing_self_test_warns_and_falls_back_to_float32(monkeypatch, capsys):
    program = _program()
    x = _x(program)
    ref = emulate(program, x, kernels="float32", check=False)
    _sabotage(monkeypatch)
    got = emulate(program, x, check=False)  # auto
    err = capsys.readouterr().err
    assert "warning: synapse a->b: oneDNN's int8 convolution" in err and "float32" in err
    assert np.array_equal(got.outputs, ref.outputs)
    assert np.array_equal(got.spike_counts, ref.spike_counts)


def test_check_mode_refuses_a_differing_int8_kernel(monkeypatch):
    program = _program()
    _sabotage(monkeypatch)
    with pytest.raises(DaLifError, match=r"synapse \S+: oneDNN's int8 convolution differs "
                                         r"from float32 in \d+ of \d+ values"):
        emulate(program, _x(program), kernels="check", check=False)


def test_kernels_option_on_the_command_line(tmp_path, capsys):
    program = _program()
    path = tmp_path / "p.fxp"
    save_program(program, path)
    np.savez(tmp_path / "d.npz", x=_x(program, 3), y=np.zeros(3, np.int64), encoding="events")
    outs = {}
    for k in ("float32", "int8", "check"):
        out = tmp_path / f"{k}.json"
        assert main(["simulate", str(path), "--backend", "emulator", "--dataset",
                     str(tmp_path / "d.npz"), "--kernels", k, "--json", str(out)]) == 0
        outs[k] = json.loads(out.read_text())["outputs"]
    assert outs["float32"] == outs["int8"] == outs["check"]
    capsys.readouterr()
    assert main(["simulate", str(path), "--backend", "emulator", "--dataset",
                 str(tmp_path / "d.npz"), "--kernels", "int4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --kernels must be one of auto, float32, int8, check, got 'int4'"]


def test_prepacked_kernels_are_reused_only_for_the_same_weights():
    """A repeated compile of one program reuses its prepacked int8 kernels; a program whose
    weights changed in place (same array, same shape) gets a new kernel and its own sums."""
    program = _program()
    syn = next(s for s in program.synapses if s.name == "a->b")
    first = ek.compile_synapse(program, syn, kernels="int8").int8
    assert ek.compile_synapse(program, syn, kernels="int8").int8 is first
    x = (torch.rand(3, *syn.input_shape, generator=torch.Generator().manual_seed(1)) < 0.5
         ).float()
    syn.weights[...] = -syn.weights  # in place: only the contents differ
    again = ek.compile_synapse(program, syn, kernels="int8")
    assert again.int8 is not first
    assert torch.equal(again.int8(x), -first(x))
    assert torch.equal(again.int8(x), F.conv2d(x, again.weight, None, syn.stride, syn.padding,
                                               1, syn.groups))
