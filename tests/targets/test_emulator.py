"""The emulator against hand-computed Lava arithmetic and an independent Python-int reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dalif_deploy.targets import emulator
from dalif_deploy.targets.emulator import emulate, encode_input
from helpers.emulator_reference import reference_run
from helpers.programs import random_program, tie_program

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.arithmetic import (
    LifParams,
    effective_bias,
    effective_weights,
    lif_state_zeros,
    lif_step,
    rtz_div4096,
    wrap_signed,
)
from dalif_deploy.fixedpoint.limits import V_MAX, VTH_MAX
from dalif_deploy.fixedpoint.timing import synaptic_depths


def _step(v0, u0, a, *, du=4095, dv=0, vth=10, bias=0, dtype=torch.int64):
    st = lif_state_zeros(1, (len(a),), dtype)
    st = type(st)(torch.tensor([u0], dtype=dtype), torch.tensor([v0], dtype=dtype),
                  st.u_wraps, st.v_saturations)
    p = LifParams(du=du, dv=torch.tensor(dv, dtype=dtype), vth=vth,
                  bias=torch.tensor(bias, dtype=dtype))
    return lif_step(st, torch.tensor([a], dtype=dtype), p)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_rtz_rounds_toward_zero(dtype):
    p = torch.tensor([4097, -4097, 8191, -8191, 0, 4095, -4095], dtype=dtype)
    assert rtz_div4096(p).tolist() == [1, -1, 1, -1, 0, 0, 0]


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_lif_quirks_hand_computed(dtype):
    # du + 1 quirk: du = 0 still decays u by 1/4096: rtz(5000 * 4095 / 4096) = 4998
    _, st = _step([0], [5000], [0], du=0, vth=VTH_MAX, dtype=dtype)
    assert st.u.tolist() == [[4998]]
    # v decay rtz on negatives: rtz(-1000 * (4096 - 2048) / 4096) = -500; plus u = 3 << 6
    s, st = _step([-1001], [0], [3], dv=2048, vth=VTH_MAX, dtype=dtype)
    assert st.v.tolist() == [[-500 + 192]] and not s.any()
    # strict threshold: v == vth << 6 does not fire, one more does and resets v only
    s, st = _step([0], [0], [10], vth=10, dtype=dtype)
    assert not s.any() and st.v.tolist() == [[640]]
    s, st = _step([0], [0], [10], vth=10, bias=1, dtype=dtype)
    assert s.all() and st.v.tolist() == [[0]] and st.u.tolist() == [[640]]
    # u wrap: (2^17 + 1) << 6 = 2^23 + 64 > 2^23 -> - 2^24; -2^17 << 6 = -2^23 -> + 2^24
    _, st = _step([0, 0], [0, 0], [2**17 + 1, -(2**17)], vth=VTH_MAX, dtype=dtype)
    assert st.u.tolist() == [[64 - 2**23, 2**23]] and st.u_wraps.tolist() == [2]
    # v saturation at +-(2^23 - 1), counted; 2^23 - 1 > VTH_MAX << 6, so the top one fires
    s, st = _step([2**23 - 100, -(2**23) + 100], [0, 0], [2, -2], vth=VTH_MAX, dtype=dtype)
    assert st.v.tolist() == [[0, -(2**23) + 1]] and s.tolist() == [[True, False]]
    assert st.v_saturations.tolist() == [2]


def test_bias_weights_and_wrap_quirks():
    assert effective_bias(np.array([5, -5]), -1).tolist() == [2, -3]  # floor, not *64
    assert effective_bias(np.array([5, -5]), 3).tolist() == [40, -40]
    # mixed 8-bit: doubled in lowering, so exact; 4-bit: the 4 low bits floored (as Lava)
    w = np.array([-128, -3, 0, 3, 127])
    assert effective_weights(w, 8, "mixed").tolist() == w.tolist()
    assert effective_weights(np.array([-17, 17, 200]), 4, "mixed").tolist() == [-32, 16, 112]
    assert effective_weights(np.array([300, 17]), 8, "excitatory").tolist() == [255, 17]
    assert wrap_signed(torch.tensor([2**23, -(2**23) - 1]), 24).tolist() == [-(2**23), 2**23 - 1]


# --------------------------------------------------------------------------------------------
# Independent reference with Python ints (sync semantics, docs/DESIGN.md section 4).


def _assert_traces_equal(prog, r, spikes, vs, n):
    for p in prog.populations:
        for got, ref in ((r.spikes, spikes), (r.v, vs)):
            want = np.array(ref[p.name]).reshape(n, prog.timesteps, *p.shape).swapaxes(0, 1)
            assert np.array_equal(got[p.name], want), p.name


def _matches_reference(prog, rng, n=3):
    """Emulate ``n`` random event samples (batches of 2) and require outputs, spikes and v
    traces equal to the one-int reference, with some spikes; returns (result, x, outputs)."""
    x = (rng.random((n, prog.timesteps, *prog.input.shape)) < 0.5).astype(np.float32)
    r = emulate(prog, x, record=True, check=False, batch_size=2)
    outs, spikes, vs = reference_run(prog, encode_input(prog, x))
    assert r.outputs.tolist() == outs
    _assert_traces_equal(prog, r, spikes, vs, n)
    assert r.spike_counts.sum() > 0
    return r, x, outs


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("encoding", ["analog", "events"])
@pytest.mark.parametrize("residual", [False, True])
def test_emulator_matches_python_int_reference(kind, encoding, residual, monkeypatch):
    """Spikes and final readout v equal the reference exactly (random programs incl. wraps)."""
    # a fixed seed per case (hash() of strings is salted per interpreter run: not reproducible)
    seed = ["dense", "conv"].index(kind) * 4 + ["analog", "events"].index(encoding) * 2 + residual
    rng = np.random.default_rng(1000 + seed)
    prog = random_program(rng, kind, encoding, residual)
    n = 3
    if encoding == "analog":
        x = rng.uniform(-1.3, 1.3, (n, *prog.input.shape)).astype(np.float32)
    else:
        x = (rng.random((n, prog.timesteps, *prog.input.shape)) < 0.4).astype(np.float32)
    frames = encode_input(prog, x)
    r = emulate(prog, x, record=True, check=False, batch_size=2)
    outs, spikes, vs = reference_run(prog, frames)
    assert r.outputs.tolist() == outs
    _assert_traces_equal(prog, r, spikes, vs, n)
    assert r.spike_counts.sum() > 0  # the test exercises spiking
    # without traces, one step per synapse batch: same integers
    monkeypatch.setattr(emulator, "BLOCK_ELEMENTS", 1)
    fast = emulate(prog, x, check=False, batch_size=2)
    assert fast.outputs.tolist() == outs
    assert np.array_equal(fast.spike_counts, r.spike_counts)
    assert fast.u_wraps == r.u_wraps and fast.v_saturations == r.v_saturations


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("encoding", ["analog", "events"])
def test_recurrent_synapses_match_python_int_reference(kind, encoding, monkeypatch):
    """A recurrent synapse (a population back to itself) delivers the population's spikes of
    the previous step, none at step 0: equal to the reference, also across sync blocks of one
    step and on the float32 path (du = 4095 populations)."""
    rng = np.random.default_rng(2000 + ["dense", "conv"].index(kind) * 2
                                + ["analog", "events"].index(encoding))
    prog = random_program(rng, kind, encoding, residual=True, recurrent=True)
    prog.timesteps = 6
    n = 3
    if encoding == "analog":
        x = rng.uniform(-1.3, 1.3, (n, *prog.input.shape)).astype(np.float32)
    else:
        x = (rng.random((n, prog.timesteps, *prog.input.shape)) < 0.4).astype(np.float32)
    outs, spikes, vs = reference_run(prog, encode_input(prog, x))
    r = emulate(prog, x, record=True, check=False, batch_size=2)
    assert r.outputs.tolist() == outs
    _assert_traces_equal(prog, r, spikes, vs, n)
    assert r.spike_counts.sum() > 0
    monkeypatch.setattr(emulator, "BLOCK_ELEMENTS", 1)  # blocks of one step: r.last carries
    fast = emulate(prog, x, check=False, batch_size=2)
    assert fast.outputs.tolist() == outs
    assert np.array_equal(fast.spike_counts, r.spike_counts)
    for p in prog.populations[:2]:
        p.du = 4095
    outs, _, _ = reference_run(prog, encode_input(prog, x))
    assert emulate(prog, x, check=False).outputs.tolist() == outs


@pytest.mark.parametrize("rule", [">", ">="])
@pytest.mark.parametrize("decay", ["none", "half", "scalar", "channel"])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_float32_fast_path_matches_python_int_reference(decay, kind, rule, monkeypatch):
    """Programs the emulator proves safe for its float32 fast path (du = 4095, small weights, so
    no u wrap) give the reference integers, for every v-decay form (none, dv = 2048 as one
    division, non-power-of-two scalar and per-channel dv) and with v saturating; synapses run
    in blocks of 3 steps (the last one partial)."""
    from dalif_deploy.targets.emulator_kernels import compile_population, compile_synapse

    rng = np.random.default_rng(7)
    prog = random_program(rng, kind, "analog", True)
    prog.timesteps = 20  # 20 * (-4000 << 7) < -(2^23 - 1)
    for s in prog.synapses:
        s.weights = rng.integers(-20, 21, s.weights.shape)
    for p in prog.populations[:2]:
        p.du, p.spike_rule = 4095, rule
        p.dv = {"none": np.zeros(1), "half": np.full(1, 2048), "scalar": np.full(1, 1001),
                "channel": rng.integers(0, 4096, p.shape[0])}[decay].astype(np.int64)
        p.bias_exp = 0  # odd v values, so that rtz and floor differ
    a = prog.populations[0]  # no decay, strong negative bias: v saturates at -(2^23 - 1)
    a.dv, a.bias_mant, a.bias_exp = np.zeros(1, np.int64), np.full(a.shape, -4000), 7
    compiled = {s.name: compile_synapse(prog, s) for s in prog.synapses}
    for p in prog.populations:
        c = compile_population(p, [compiled[s.name] for s in prog.incoming(p.name)],
                                prog.timesteps, False)
        assert c.fast is not None, p.name
    x = rng.uniform(-1.3, 1.3, (3, *prog.input.shape)).astype(np.float32)
    outs, spikes, vs = reference_run(prog, encode_input(prog, x))
    monkeypatch.setattr(emulator, "BLOCK_ELEMENTS", 3 * 3 * 50)  # 3 samples x 50 inputs x 3
    r = emulate(prog, x, check=False, record=True)
    assert r.outputs.tolist() == outs
    _assert_traces_equal(prog, r, spikes, vs, 3)
    assert ((r.v["b"] < 0) & (r.v["b"] % 2 == 1)).any()  # decayed odd negatives: rtz != floor
    assert r.spike_counts[:, 1].sum() > 0 and r.v_saturations["a"] > 0


def test_float32_guard_exact_for_large_weights():
    """Weights whose partial sums exceed 2^24 take the float64 path and stay exact."""
    rng = np.random.default_rng(1)
    prog = random_program(rng, "dense", "analog", False)
    s = prog.synapses[0]
    s.weights = np.full_like(s.weights, 127)  # 50 * 127 * 128 > 2^19; scale up the input
    prog.input.bits = 24
    x = np.full((1, *prog.input.shape), 2**20, dtype=np.int64)
    frames = np.broadcast_to(x[:, None], (1, prog.timesteps, *prog.input.shape))
    r = emulate(prog, frames, record=True, check=False)
    outs, _, _ = reference_run(prog, frames)
    assert r.outputs.tolist() == outs


@pytest.mark.parametrize("row_sum", [4095, 4096])
def test_fast_path_guard_at_its_bound(row_sum):
    """The float32 step without u's wrap is taken only when bounds prove |u| + |bias| < 2^23:
    with weight_exp 5, a row of |weights| summing to 4095 gives |u| <= 4095 << 11 < 2^23; 4096
    reaches -2^23, which Lava wraps to +2^23: the float32 step that applies the wrap first
    (``wrap_f32``). Both equal the reference."""
    from dalif_deploy.targets.emulator_kernels import compile_population, compile_synapse

    prog = random_program(np.random.default_rng(5), "dense", "events", False)
    s, a = prog.synapses[0], prog.populations[0]
    s.weights[...], s.weight_exp = 0, 5
    s.weights[0, :32] = -128
    s.weights[0, 0] += 4096 - row_sum
    a.du, a.bias_mant[...] = 4095, 0
    c = compile_population(a, [compile_synapse(prog, s)], prog.timesteps, False)
    assert c.fast is not None and c.wrap_f32 == (row_sum == 4096)
    frames = np.ones((2, prog.timesteps, *prog.input.shape), np.int64)
    r = emulate(prog, frames, record=True, check=False)
    outs, spikes, vs = reference_run(prog, frames)
    assert r.outputs.tolist() == outs
    _assert_traces_equal(prog, r, spikes, vs, 2)
    assert r.u[a.name].min() == -4095 * 2**11 if row_sum == 4095 else r.u_wraps[a.name] > 0


@pytest.mark.parametrize(("weight_exp", "wrap_f32"), [(5, True), (6, False)])
def test_float32_step_with_u_wrap_at_its_bounds(weight_exp, wrap_f32):
    """du = 4095 with a << 6 up to 3 * 2^23 (one wrap brings u back within 2^23) and a bias
    just below 2^23: the float32 step wraps u first, and where decay(v) + u + bias passes 2^24
    (rounding in float32) the exact sum is past it too, so the clip gives the same v. Spikes,
    v, u traces, wraps and saturations equal the one-int reference. Rows of 50 weights of
    127 / -128: a << 6 reaches 1.6 * 2^23 with weight_exp 5 (float32 step) and 3.1 * 2^23 with
    6, past the bound (float64 step)."""
    from dalif_deploy.targets.emulator_kernels import compile_population, compile_synapse

    rng = np.random.default_rng(9)
    prog = random_program(rng, "dense", "events", False)
    s, a = prog.synapses[0], prog.populations[0]
    s.weight_exp = weight_exp
    s.weights[...] = np.where(np.arange(s.weights.shape[0])[:, None] % 2, -128, 127)
    a.du, a.dv[...], a.vth = 4095, 100, 2**17 - 1
    a.bias_exp, a.bias_mant = 11, rng.integers(-4095, 4096, a.shape)  # |bias| < 2^23
    c = compile_population(a, [compile_synapse(prog, s)], prog.timesteps, False)
    assert (c.fast is not None) == wrap_f32 and c.wrap_f32 == wrap_f32
    frames = (rng.random((4, prog.timesteps, *prog.input.shape)) < 0.8).astype(np.int64)
    r = emulate(prog, frames, record=True, check=False, batch_size=3)
    outs, spikes, vs = reference_run(prog, frames)
    assert r.outputs.tolist() == outs
    _assert_traces_equal(prog, r, spikes, vs, 4)
    # u itself: wrap((W x) << (weight_exp + 6)), one correction by 2^24
    w = effective_weights(s.weights, s.weight_bits, s.sign_mode)
    u = np.einsum("oi,nti->tno", w, frames.reshape(4, prog.timesteps, -1)) << (weight_exp + 6)
    u = np.where(u > 2**23, u - 2**24, np.where(u <= -(2**23), u + 2**24, u))
    assert np.array_equal(r.u[a.name].reshape(u.shape), u)
    assert r.u_wraps[a.name] > 0 and r.v_saturations[a.name] > 0


def test_wide_integer_input_stays_exact():
    """26-bit input values are not rounded to float32: (2^24 + 1) - 2^24 reaches v as 1 << 6."""
    prog = random_program(np.random.default_rng(2), "dense", "analog", False)
    prog.input.bits = 26
    s, a = prog.synapses[0], prog.populations[0]
    s.weights[...], s.weight_exp = 0, 0
    s.weights[0, :2] = 1
    a.dv[...], a.bias_mant[...], a.vth, a.du = 0, 0, VTH_MAX, 4095
    frames = np.zeros((1, prog.timesteps, *prog.input.shape), np.int64)
    frames[0, :, 0, 0, :2] = [2**24 + 1, -(2**24)]
    for mode in ("sync", "pipelined"):
        r = emulate(prog, frames, record=True, check=False, mode=mode)
        assert r.v["a"][-1, 0, 0, 0, 0] == 64 * prog.timesteps, mode


def test_integer_frames_outside_the_input_range_are_refused():
    prog = random_program(np.random.default_rng(0), "dense", "analog", False)
    frames = np.zeros((1, prog.timesteps, *prog.input.shape), np.int64)
    emulate(prog, frames + 127, check=False)
    with pytest.raises(DaLifError, match=r"\[-128, 127\]"):
        emulate(prog, frames + 128, check=False)
    ev = random_program(np.random.default_rng(0), "dense", "events", False)
    with pytest.raises(DaLifError, match="binary"):
        emulate(ev, frames + 2, check=False)


@pytest.mark.parametrize(("step_max", "f", "steps"),
                         [(1000, 4096, 5), (3_300_000, 731, 4), (2**22, 2048, 30), (777, 4095, 9)])
def test_v_bound_covers_the_worst_case(step_max, f, steps):
    """The bound that switches v clipping off is never below the largest |v| the recurrence
    can reach (input at its maximum every step, no reset), and at most one unit per step
    above it (the bound rounds up where rtz rounds down)."""
    from dalif_deploy.targets.emulator_kernels import v_growth_bound

    v, worst = 0, 0
    for _ in range(steps):
        v = (v * f >> 12) + step_max
        worst = max(worst, v)
    bound = v_growth_bound(step_max, f, steps)
    if bound <= V_MAX:
        assert worst <= bound <= worst + steps
    else:
        assert worst > V_MAX or bound <= worst + steps


@pytest.mark.parametrize("stride", [1, 2])
def test_diagonal_1x1_conv_matches_reference(stride):
    """A 1x1 conv mapping each channel to itself (a residual shortcut) runs as one product per
    output; with stride 2 it subsamples. Same integers as the reference, also for a 1x1 conv
    with one off-diagonal weight (the general kernel)."""
    from dalif_deploy.targets.emulator_kernels import compile_synapse

    rng = np.random.default_rng(11)
    prog = random_program(rng, "conv", "events", True)
    b, s_ab, s_in = prog.populations[1], prog.synapses[1], prog.synapses[2]
    h = (5 - 1) // stride + 1
    b.shape, b.bias_mant = (2, h, h), rng.integers(-300, 300, (2, h, h))
    s_ab.weights = np.diag([100, -90]).reshape(2, 2, 1, 1)
    s_in.weights = rng.integers(-128, 128, (2, 2, 1, 1))
    for syn in (s_ab, s_in):
        syn.stride, syn.padding, syn.output_shape = (stride, stride), (0, 0), b.shape
    prog.synapses[3].weights = rng.integers(-128, 128, (3, 2 * h * h))
    prog.synapses[3].input_shape = b.shape
    assert compile_synapse(prog, s_ab).diagonal and not compile_synapse(prog, s_in).diagonal
    x = (rng.random((3, prog.timesteps, *prog.input.shape)) < 0.5).astype(np.float32)
    outs, spikes, vs = reference_run(prog, encode_input(prog, x))
    r = emulate(prog, x, record=True, check=False)
    assert r.outputs.tolist() == outs
    _assert_traces_equal(prog, r, spikes, vs, 3)
    assert r.spike_counts[:, 1].sum() > 0


@pytest.mark.parametrize("recurrent", [False, True])
def test_pipelined_shifts_each_layer_by_its_depth(recurrent):
    """Without bias, a depth-k population's spikes at step t+k equal the sync spikes at t; a
    recurrent synapse adds no depth (its step of latency is the recurrence's delay)."""
    rng = np.random.default_rng(3)
    prog = random_program(rng, "conv", "events", False)
    for p in prog.populations:
        p.bias_mant[...] = 0
    x = (rng.random((2, prog.timesteps, *prog.input.shape)) < 0.5).astype(np.float32)
    sync = emulate(prog, x, record=True, check=False)
    pipe = emulate(prog, x, record=True, check=False, mode="pipelined")
    depth = synaptic_depths(prog)
    assert pipe.steps == prog.timesteps + depth["out"] == sync.steps + 3
    for p in prog.populations:
        k = depth[p.name]
        assert np.array_equal(pipe.spikes[p.name][k:k + prog.timesteps], sync.spikes[p.name])
        assert not pipe.spikes[p.name][:k].any()


def test_encode_input_contract():
    prog = random_program(np.random.default_rng(0), "dense", "analog", False)
    x = np.array([0.5, -0.5, 2.0, 0.004, 0.006] * 10, np.float32).reshape(1, 2, 5, 5)
    f = encode_input(prog, x)
    assert f.shape == (1, 3, 2, 5, 5) and f[0, 2, 0, 0].tolist() == [50, -50, 127, 0, 1]
    ev = random_program(np.random.default_rng(0), "dense", "events", False)
    with pytest.raises(DaLifError, match="binary"):
        encode_input(ev, np.full((1, 3, 2, 5, 5), 2.0))
    with pytest.raises(DaLifError, match="shape|must be"):
        encode_input(prog, np.zeros((1, 3, 3)))


def test_clipped_analog_input_is_counted_not_hidden():
    """Values whose round(x * scale) leaves [-128, 127] are clipped by the encoding; emulate
    reports how many (per sample value, not per step) so the user learns the input changed."""
    from dalif_deploy.targets.emulator import emulate, input_clip_count

    prog = random_program(np.random.default_rng(0), "dense", "analog", False)
    scale = prog.input.scale
    x = np.zeros((2, 2, 5, 5), np.float32)
    x[0, 0, 0, :3] = [127.4 / scale, 127.6 / scale, -128.6 / scale]  # in, out, out
    x[1, 1, 4, 4] = 1000.0 / scale  # out
    assert input_clip_count(prog, x) == 3
    assert emulate(prog, x).input_clipped == 3
    assert emulate(prog, encode_input(prog, x)).input_clipped == 0  # integers: nothing to clip


FIRINGS = [(">", "subtract", False), (">=", "zero", False), (">=", "subtract", False),
           (">", "zero-next", False), (">=", "subtract-next", False), (">", "zero", True),
           (">", "subtract", True), (">=", "subtract", True)]


@pytest.mark.parametrize(("rule", "reset", "multi"), FIRINGS)
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_firing_modes_match_python_int_reference(rule, reset, multi, kind, monkeypatch):
    """Every spike rule, reset mode and multi-spike output equals the one-int-at-a-time
    reference, spikes (counts) and v traces included, in both sync kernels."""
    i = FIRINGS.index((rule, reset, multi))
    rng = np.random.default_rng(2000 + 2 * i + (kind == "conv"))
    prog = random_program(rng, kind, "events", residual=True)
    for p in prog.populations[:2]:
        p.spike_rule, p.reset, p.multi_spike = rule, reset, multi
        # fire often; counts (multi-spike) of a few, within the traces' uint8
        p.vth = 6 * p.vth if multi else max(p.vth // 4, 1)
    for s in prog.synapses:
        s.graded = s.graded or multi and s.source != "input"
    r, x, outs = _matches_reference(prog, rng)
    if multi:
        assert max(int(r.spikes[p.name].max()) for p in prog.populations[:2]) > 1
    monkeypatch.setattr(emulator, "BLOCK_ELEMENTS", 1)
    fast = emulate(prog, x, check=False, batch_size=2)
    assert fast.outputs.tolist() == outs


@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_record_spikes_only_gives_the_same_spikes_without_v_and_u(mode):
    """``record="spikes"`` (what verify's test loop needs) records the spike traces that
    ``record=True`` does and no v/u traces; everything else is the same run."""
    rng = np.random.default_rng(77)
    prog = random_program(rng, "conv", "events", residual=True)
    x = (rng.random((3, prog.timesteps, *prog.input.shape)) < 0.5).astype(np.float32)
    full = emulate(prog, x, record=True, check=False, mode=mode, batch_size=2)
    spikes = emulate(prog, x, record="spikes", check=False, mode=mode, batch_size=2)
    assert spikes.v == {} and spikes.u == {} and spikes.final_v == {}
    assert spikes.spikes.keys() == full.spikes.keys()
    for k in full.spikes:
        assert np.array_equal(spikes.spikes[k], full.spikes[k]), k
    assert np.array_equal(spikes.outputs, full.outputs)
    assert np.array_equal(spikes.spike_counts, full.spike_counts)
    with pytest.raises(DaLifError, match="record must be"):
        emulate(prog, x, record="v", check=False)


@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_multi_spike_totals_count_messages_not_spikes(mode):
    """A count of n goes out as ONE graded spike: the per-neuron totals the cost model reads
    (``spike_totals``) count the steps a multi-spike neuron sent anything, while
    ``spike_counts`` keeps the n; one-spike populations count spikes as before."""
    rng = np.random.default_rng(2024)
    prog = random_program(rng, "dense", "events", residual=True)
    multi = prog.populations[0]
    multi.multi_spike, multi.reset, multi.vth = True, "subtract", 10 * multi.vth  # payloads
    for s in prog.synapses:
        s.graded = s.graded or s.source == multi.name
    x = (rng.random((3, prog.timesteps, *prog.input.shape)) < 0.5).astype(np.float32)
    r = emulate(prog, x, record=True, mode=mode)  # checked: counts within the payload
    spikes = r.spikes[multi.name].astype(np.int64)
    assert spikes.max() > 1, "counts above 1 for the test to mean something"
    assert np.array_equal(r.spike_totals[multi.name], (spikes != 0).sum((0, 1)))
    one = prog.populations[1]
    assert np.array_equal(r.spike_totals[one.name], r.spikes[one.name].sum((0, 1)))
    i = r.spiking.index(multi.name)
    assert r.spike_counts[:, i].sum() == spikes.sum()


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_bias_into_u_matches_python_int_reference(kind):
    """A bias added to the current u (before u's wrap) instead of v, with and without current
    memory, equals the one-int-at-a-time reference (spikes, v, outputs, u wraps counted); and
    with du < 4095 it ramps in as the recurrence u_t = rtz(u_(t-1) (4096 - (du + 1))) + b."""
    rng = np.random.default_rng(3100 + (kind == "conv"))
    prog = random_program(rng, kind, "events", residual=True)
    for i, p in enumerate(prog.populations[:2]):
        p.bias_into, p.du = "u", (1000, 4095)[i]
        p.bias_mant = rng.integers(-400, 900, p.shape)
    _matches_reference(prog, rng)
    # no input: u_t = rtz(u_(t-1) (4096 - 1001) / 4096) + bias, the bias's ramp
    p = prog.populations[0]
    zero = np.zeros((1, prog.timesteps, *prog.input.shape), np.float32)
    u_got = emulate(prog, zero, record=True, check=False).u[p.name][:, 0]
    b = effective_bias(p.bias_mant, p.bias_exp)
    u = np.zeros(p.shape, np.int64)
    for t in range(prog.timesteps):
        d = u * (4096 - 1001)
        u = np.sign(d) * (np.abs(d) >> 12) + b
        assert np.array_equal(u_got[t], u), t
    assert np.abs(u).max() > 2 * np.abs(b).max()  # grown past one step's bias


@pytest.mark.parametrize(("rule", "want"), [(">", [0, 1]), (">=", [1, 1])])
def test_tie_on_the_threshold_follows_the_spike_rule(rule, want):
    """v = vth << 6 = 192 exactly at step 1: '>' waits (step 2: 384 > 192), '>=' fires at
    once; the rule is a flag of the population, not vth - 1 (docs/DESIGN.md section 4)."""
    prog = tie_program(rule)
    r = emulate(prog, np.ones((1, 2, 1), np.float32), record=True)
    assert r.spikes["a"][:, 0, 0].tolist() == want


def test_simulate_lowers_the_emulator_batch_to_what_memory_holds(monkeypatch, capsys):
    """Where --batch-size samples at once would not fit, the emulator backend runs as many as
    do, says so in a note, and gives the same results (its integers do not depend on the
    batch)."""
    from types import SimpleNamespace

    from dalif_deploy.targets.emulator import EmulatorBackend

    rng = np.random.default_rng(5)
    prog = random_program(rng, "conv", "events", residual=True)
    x = (rng.random((9, prog.timesteps, *prog.input.shape)) < 0.5).astype(np.float32)
    backend = EmulatorBackend.__new__(EmulatorBackend)
    backend.program, backend.device, backend.kernels = prog, "cpu", "auto"
    data = SimpleNamespace(x=x)
    full = backend.run_shard(data, batch_size=256, progress=False)
    assert "note:" not in capsys.readouterr().err
    per_sample = emulator.emulator_bytes(prog, 1, 0)
    monkeypatch.setattr(emulator, "mem_available", lambda trim=False: int(3 * per_sample / 0.9) + 1)
    small = backend.run_shard(data, batch_size=256, progress=False)
    assert "note: emulator batches of 3 samples: 256 at once" in capsys.readouterr().err
    assert np.array_equal(small.outputs, full.outputs)
    assert np.array_equal(small.spike_counts, full.spike_counts)
