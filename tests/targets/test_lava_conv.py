"""Our Lava Conv process model (targets/lava/conv.py) against Lava's own conv arithmetic, and
both against the emulator in real Lava runs. Integers throughout: every comparison is exact."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers.lava_parity import TIMEOUT, assert_parity
from helpers.programs import (
    conv_program,
    random_conv,
    random_population,
    random_readout,
    random_samples,
)

from dalif_deploy.fixedpoint.program import FixedProgram, InputEncoding, Readout, Synapse

utils = pytest.importorskip("lava.proc.conv.utils")

from dalif_deploy.targets.lava import conv  # noqa: E402

SHAPES = [  # (W, H, C_in, C_out, kW, kH, stride, padding, dilation, groups)
    (6, 5, 3, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (7, 6, 2, 5, 3, 3, (2, 2), (1, 1), (1, 1), 1),
    (9, 8, 4, 6, 5, 3, (2, 1), (2, 0), (1, 1), 2),
    (8, 8, 4, 4, 1, 1, (1, 1), (0, 0), (1, 1), 4),
    (10, 9, 3, 2, 3, 2, (1, 2), (0, 1), (2, 1), 1),
    (5, 7, 6, 6, 2, 2, (3, 2), (1, 1), (1, 2), 3),
]


def _case(shape, rng, lo, hi):
    w, h, c_in, c_out, kw, kh, stride, padding, dilation, groups = shape
    x = rng.integers(lo, hi, (w, h, c_in)).astype(np.int32)
    weight = rng.integers(-128, 128, (c_out, kw, kh, c_in // groups)).astype(np.int32)
    return x, weight, (kw, kh), stride, padding, dilation, groups


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lo,hi", [(0, 2), (-(2**15), 2**15)])
def test_exact_conv_is_lavas_conv(shape, lo, hi):
    """conv_exact gives conv_scipy's float64 sums exactly: binary spikes and graded values,
    stride, padding, dilation and groups."""
    args = _case(shape, np.random.default_rng(hash(shape) % 2**32), lo, hi)
    got, ref = conv.conv_exact(*args), utils.conv_scipy(*args)
    assert got.shape == ref.shape and np.array_equal(got, ref)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_step_wraps_at_24_bits_as_lava(shape):
    """The whole step (cast, signed 24-bit wrap) equals Lava's, with sums far beyond 2^23."""
    args = _case(shape, np.random.default_rng(7), 2**20, 2**21)
    ref = utils.signed_clamp(utils.conv(*args), bits=24)
    got = conv.conv_step(*args, conv.kernel_row_bound(args[1]))
    assert np.abs(utils.conv_scipy(*args)).max() > 2**23  # the wrap really happens
    assert got.dtype == ref.dtype and np.array_equal(got, ref)


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_product_is_lavas_conv_for_spikes(shape):
    """Binary spikes into 8-bit kernels: every sum is within 2^24, so the float32 product
    gives conv_scipy's sums exactly too (including an all-ones input and extreme kernels)."""
    args = _case(shape, np.random.default_rng(hash(shape) % 2**31), 0, 2)
    ones = (np.ones_like(args[0]), np.full_like(args[1], -128), *args[2:])
    for a in (args, ones):
        k32 = [k.astype(np.float32) for k in conv.kernel_matrices(a[1], a[5], a[6])]
        got, ref = conv.conv_exact(*a, k32), utils.conv_scipy(*a)
        assert got.dtype == np.float32 and np.array_equal(got, ref)


def test_each_bound_picks_its_arithmetic(monkeypatch):
    """Within 2^24 the step's product is float32, below 2^53 float64; past it Lava's own
    conv_scipy runs, never the matrix product."""
    args = _case(SHAPES[0], np.random.default_rng(3), 0, 2)
    used = []
    monkeypatch.setattr(conv, "conv_exact", lambda *a: used.append(a[7][0].dtype) or
                        utils.conv_scipy(*a[:7]))
    conv.conv_step(*args, conv.kernel_row_bound(args[1]))
    assert used == [np.float32]
    conv.conv_step(*args, 2.0**30)
    assert used == [np.float32, np.float64]
    conv.conv_step(*args, 2.0**53)
    assert used == [np.float32, np.float64]


def grouped_program(seed=6) -> FixedProgram:
    """A grouped (2 groups), padded conv into c1, then a strided conv into c2, and a readout."""
    rng = np.random.default_rng(seed)
    pops = [random_population("c1", (4, 6, 5), rng, bias=100),
            random_population("c2", (4, 3, 3), rng, vth=20)]
    grouped = Synapse(name="conv1", source="input", target="c1", kind="conv",
                      weights=rng.integers(-128, 128, (4, 1, 3, 3)), weight_exp=0, graded=True,
                      padding=(1, 1), groups=2, input_shape=(2, 6, 5), output_shape=(4, 6, 5))
    syns = [grouped, random_conv("conv2", "c1", "c2", 4, 4, (6, 5), rng, stride=2, exp=-1)]
    ro, fc = random_readout("c2", (4, 3, 3), 3, rng)
    return FixedProgram(InputEncoding("analog", (2, 6, 5), scale=30.0), pops + [ro],
                        syns + [fc], Readout("out", 64.0), timesteps=3)


@pytest.mark.lava
@pytest.mark.parametrize("make", [lambda: conv_program(2, residual=True), grouped_program])
def test_exact_model_equals_stock_lava_and_the_emulator(make):
    """Our conv model, Lava's stock model and the emulator: the same spikes and v everywhere."""
    from dalif_deploy.targets.lava.run import run_lava

    program = make()
    x = random_samples(program, 2)
    exact = run_lava(program, x, timeout=TIMEOUT, conv="exact")
    stock = run_lava(program, x, timeout=TIMEOUT, conv="stock")
    assert_parity(program, x, exact)
    assert_parity(program, x, stock)
    for name in exact.spikes:
        assert np.array_equal(exact.spikes[name], stock.spikes[name])


@pytest.mark.lava
def test_the_exact_model_is_the_one_lava_runs(monkeypatch):
    """A sabotaged conv_exact (forked into Lava's processes) changes what Lava computes: the
    default run really uses our model, not Lava's stock one."""
    from dalif_deploy.targets.lava.run import run_lava

    program = conv_program(2, residual=True)
    x = random_samples(program, 1)
    monkeypatch.setattr(conv, "conv_exact", lambda *a: np.zeros_like(utils.conv_scipy(*a[:7])))
    silent = run_lava(program, x, timeout=TIMEOUT)
    assert not silent.spikes["c1"].any()


@pytest.mark.lava
def test_the_cached_delay_sparse_model_is_the_one_lava_runs(monkeypatch):
    """The residual skip (a DelaySparse) runs our model: counting its calc_act calls in a file
    (the Lava processes are forked, so the patch reaches them) finds one per step."""
    from dalif_deploy.targets.lava.lower import plan_program
    from dalif_deploy.targets.lava.run import lava_steps, run_lava

    program = conv_program(2, residual=True)
    assert any(c.delay for c in plan_program(program).conns)
    real = conv.PyCachedDelaySparseModel.calc_act
    log = Path(tempfile.mkdtemp()) / "calls"

    def counting(self, s_in):
        with open(log, "a") as fh:
            fh.write("x")
        return real(self, s_in)

    monkeypatch.setattr(conv.PyCachedDelaySparseModel, "calc_act", counting)
    x = random_samples(program, 1)
    assert_parity(program, x, run_lava(program, x, timeout=TIMEOUT))
    assert len(log.read_text()) == lava_steps(program, 1)
