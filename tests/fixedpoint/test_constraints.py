"""One set of rules decides what a program may be: the constraint check and the Lava lowering
agree (issue 11, "Lava runs").

* each rule the lowering used to enforce on its own (every population driven, delays of at most
  ``MAX_DELAY``) and the u-overflow rule (``du < 4095`` with ``a << 6`` beyond 2^24) is refused by
  the check AND by :func:`plan_program`, with the rule's name;
* a property test: over seeded random small programs (dense/conv, fan-in, residual paths of
  different lengths, random du/dv/weight_exp), the check accepts exactly what lowers;
* pipelined emulation of a dense synapse feeding a 2-D/3-D population (it used to crash), equal
  to sync emulation after re-timing, and to Lava;
* the emulator equals Lava bit for bit on accepted random programs with ``du < 4095``.
"""

from __future__ import annotations

import numpy as np
import pytest
from dalif_deploy.targets.emulator import emulate
from dalif_deploy.targets.lava.lower import plan_program
from helpers.programs import random_samples

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.constraints import check_program, require_valid
from dalif_deploy.fixedpoint.limits import DECAY_MAX, MAX_DELAY, U_LIMIT, VTH_MAX
from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
)
from dalif_deploy.fixedpoint.timing import synapse_delays, synaptic_depths

TIMEOUT = 240.0


# ---------------------------------------------------------------- building blocks
def _pop(name, shape, rng, *, du=DECAY_MAX, dv=None, vth=None, bias=0):
    dv = rng.integers(0, 4096, 1) if dv is None else np.atleast_1d(dv)
    bias_mant = rng.integers(-bias, bias + 1, shape) if bias else np.zeros(shape, np.int64)
    return Population(name, shape, dv=dv, vth=int(rng.integers(20, 300) if vth is None else vth),
                      bias_mant=bias_mant, du=du)


def _dense(name, src, tgt, in_shape, out_shape, rng, *, exp=0, graded=False, lo=-128, hi=127):
    """A dense synapse; ``out_shape`` may be 2-D/3-D (its flat output takes the target shape)."""
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    return Synapse(name, src, tgt, "dense", rng.integers(lo, hi + 1, (n_out, n_in)),
                   weight_exp=exp, graded=graded, input_shape=tuple(in_shape),
                   output_shape=(n_out,))


def _conv(name, src, tgt, in_shape, c_out, rng, *, exp=0, graded=False, k=3):
    c_in, h, w = in_shape
    return Synapse(name, src, tgt, "conv", rng.integers(-128, 128, (c_out, c_in, k, k)),
                   weight_exp=exp, graded=graded, padding=(k // 2, k // 2),
                   input_shape=in_shape, output_shape=(c_out, h, w))


def _readout(src, in_shape, rng, n_out=3):
    pop = Population("out", (n_out,), dv=[0], vth=VTH_MAX, bias_mant=np.zeros(n_out, np.int64))
    return pop, _dense(f"{src}->out", src, "out", in_shape, (n_out,), rng)


def _program(pops, syns, shape=(8,), graded=True, t=4):
    enc = InputEncoding("analog" if graded else "events", shape, scale=30.0)
    return FixedProgram(enc, pops, syns, Readout("out", 64.0), timesteps=t)


def _chain_program(relays, rng):
    """input -> a -> r0 .. r{relays-1} -> b -> out, plus a skip a -> b that must wait
    ``relays`` steps (b's longest path is ``relays + 1`` synapses longer than a)."""
    names = [f"r{i}" for i in range(relays)]
    pops = [_pop("a", (4,), rng)] + [_pop(n, (2,), rng, dv=0, vth=1) for n in names]
    pops.append(_pop("b", (4,), rng))
    syns = [_dense("in->a", "input", "a", (8,), (4,), rng, graded=True, exp=-3)]
    path = ["a", *names, "b"]
    for s, t in zip(path, path[1:], strict=False):
        syns.append(_dense(f"{s}->{t}", s, t, (pops[path.index(s)].size,),
                           (pops[path.index(t)].size,), rng, lo=-8, hi=8))
    syns.append(_dense("skip", "a", "b", (4,), (4,), rng))
    ro, fc = _readout("b", (4,), rng)
    return _program(pops + [ro], syns + [fc])


def _assert_refused(program, rule):
    """The check names ``rule`` as an error, and both require_valid and plan_program refuse
    the program with the rule's name."""
    assert rule in {v.rule for v in check_program(program) if v.severity == "error"}
    with pytest.raises(DaLifError, match=rf"\[{rule}\]"):
        require_valid(program)
    with pytest.raises(DaLifError, match=rf"\[{rule}\]"):
        plan_program(program)


# ---------------------------------------------------------------- one test per rule
def test_undriven_population_is_refused_by_check_and_lowering():
    rng = np.random.default_rng(0)
    pops = [_pop("a", (4,), rng), _pop("idle", (4,), rng, bias=50), _pop("b", (5,), rng)]
    syns = [_dense("in->a", "input", "a", (8,), (4,), rng, graded=True, exp=-2),
            _dense("a->b", "a", "b", (4,), (5,), rng),
            _dense("idle->b", "idle", "b", (4,), (5,), rng)]
    ro, fc = _readout("b", (5,), rng)
    program = _program(pops + [ro], syns + [fc])
    _assert_refused(program, "topology")
    with pytest.raises(DaLifError, match="idle: has no incoming synapse"):
        require_valid(program)


def test_delay_above_max_is_refused_by_check_and_lowering_and_max_is_accepted():
    rng = np.random.default_rng(1)
    ok = _chain_program(MAX_DELAY, rng)
    assert synapse_delays(ok)["skip"] == MAX_DELAY
    assert [v for v in check_program(ok) if v.severity == "error"] == []
    plan = plan_program(ok)
    assert {c.synapse: c.delay for c in plan.conns}["skip"] == MAX_DELAY
    bad = _chain_program(MAX_DELAY + 1, rng)
    _assert_refused(bad, "delay")
    with pytest.raises(DaLifError, match=rf"skip: a \(depth 1\) -> b \(depth {MAX_DELAY + 3}\) "
                       rf"needs a delay of {MAX_DELAY + 1} steps.*at most {MAX_DELAY}"):
        require_valid(bad)


def _u_program(du, exp):
    """Graded input -> a (du) with 8 inputs of weight 127: |a| <= 8 * 127 * 128 << exp."""
    rng = np.random.default_rng(2)
    pops = [_pop("a", (4,), rng, du=du)]
    syns = [_dense("in->a", "input", "a", (8,), (4,), rng, graded=True, exp=exp, lo=127, hi=127)]
    ro, fc = _readout("a", (4,), rng)
    return _program(pops + [ro], syns + [fc])


def test_u_overflow_is_refused_when_u_has_memory():
    a_max = 8 * 127 * 128
    exp = next(e for e in range(8) if (a_max << e) * 64 > 2 * U_LIMIT)  # first exp past 2^24
    bad = _u_program(100, exp)
    _assert_refused(bad, "u-overflow")
    with pytest.raises(DaLifError, match=rf"a: du=100 .* a << 6 = {(a_max << exp) * 64} > 2\^24"
                       rf".*\|a\| <= {2 * U_LIMIT // 64}, or use du={DECAY_MAX}"):
        require_valid(bad)
    # one step less shift fits (u may wrap once, within the 24-bit spec); du = 4095 has no
    # current memory, so u is rebuilt every step: both accepted
    for program in (_u_program(100, exp - 1), _u_program(DECAY_MAX, exp)):
        assert "u-overflow" not in {v.rule for v in check_program(program)}
        plan_program(program)
    # a right shift counts: the same weights with weight_exp -2 fit
    assert "u-overflow" not in {v.rule for v in check_program(_u_program(100, exp - 2))}


# ---------------------------------------------------------------- property: check == lowering
def random_program(seed):
    """A small random program: 1-4 layers (dense or conv, 1-D or 3-D, dense outputs feeding
    3-D populations too), residual fan-in from random earlier nodes (paths of different
    lengths), random du/dv/weight_exp/bias; sometimes an undriven population, a relay chain
    making a skip wait 62..65 steps, or populations with a recurrent synapse."""
    rng = np.random.default_rng(seed)
    graded = bool(rng.random() < 0.6)
    in_shape = (2, 3, 3) if rng.random() < 0.5 else (int(rng.integers(3, 9)),)
    nodes = {"input": in_shape}
    pops, syns = [], []

    def add_syn(src, tgt, tgt_shape, main):
        src_shape, exp = nodes[src], int(rng.integers(-4, 4))
        g = graded and src == "input"
        if len(src_shape) == 3 and len(tgt_shape) == 3 and src_shape[1:] == tgt_shape[1:] and (
                rng.random() < 0.6):
            syns.append(_conv(f"{src}->{tgt}", src, tgt, src_shape, tgt_shape[0], rng,
                              exp=exp if rng.random() < 0.5 else 0, graded=g,
                              k=int(rng.choice([1, 3]))))
        else:
            syns.append(_dense(f"{src}->{tgt}", src, tgt, src_shape, tgt_shape, rng, exp=exp,
                               graded=g, lo=-128 if main else -16, hi=127 if main else 16))

    prev = "input"
    for i in range(int(rng.integers(1, 5))):
        name = f"p{i}"
        shape = (int(rng.integers(2, 4)), 3, 3) if rng.random() < 0.5 else (
            int(rng.integers(2, 10)),)
        du = DECAY_MAX if rng.random() < 0.4 else int(rng.integers(0, DECAY_MAX))
        dv = rng.integers(0, 4096, shape[0] if rng.random() < 0.3 else 1)
        pops.append(_pop(name, shape, rng, du=du, dv=dv, bias=int(rng.integers(0, 40))))
        if rng.random() < 0.1:  # undriven
            nodes[name] = shape
        else:
            add_syn(prev, name, shape, True)
            nodes[name] = shape
            for src in list(nodes)[:-2]:  # residual fan-in from an earlier node
                if rng.random() < 0.3:
                    add_syn(src, name, shape, False)
            prev = name
    if rng.random() < 0.08:  # a relay chain: the skip around it waits `relays` steps
        relays = int(rng.integers(MAX_DELAY - 1, MAX_DELAY + 3))
        chain = [f"r{i}" for i in range(relays)]
        for r in chain:
            pops.append(_pop(r, (2,), rng, dv=0, vth=1))
            nodes[r] = (2,)
        for s, t in zip([prev, *chain[:-1]], chain, strict=True):
            add_syn(s, t, (2,), False)
        pops.append(_pop("tail", (3,), rng))
        add_syn(chain[-1], "tail", (3,), False)
        add_syn(prev, "tail", (3,), False)
        nodes["tail"] = (3,)
        prev = "tail"
    # recurrent synapses from a draw of their own (the programs above stay as they were)
    rec = np.random.default_rng(10_000 + seed)
    for p in pops:
        if rec.random() < 0.25:
            syns.append(_dense(f"{p.name}->{p.name}", p.name, p.name, p.shape, p.shape, rec,
                               exp=int(rec.integers(-3, 2)), lo=-16, hi=16))
    last = prev if prev != "input" else pops[-1].name
    ro, fc = _readout(last, nodes[last], rng)
    return _program(pops + [ro], syns + [fc], in_shape, graded, int(rng.integers(2, 6)))


PROPERTY_SEEDS = range(300)


def test_check_accepts_exactly_what_lowers():
    """Over 300 random programs: plan_program succeeds exactly when the check reports no error,
    and when it refuses, it names every rule the check names; no other exception escapes."""
    accepted, refused_rules = 0, set()
    for seed in PROPERTY_SEEDS:
        program = random_program(seed)
        errors = {v.rule for v in check_program(program) if v.severity == "error"}
        try:
            plan = plan_program(program)
        except DaLifError as exc:
            assert errors, f"seed {seed}: lowering refused what the check accepts: {exc}"
            for rule in errors:
                assert f"[{rule}]" in str(exc), f"seed {seed}: {rule} not named in {exc}"
            refused_rules |= errors
            continue
        assert not errors, f"seed {seed}: the check refuses {errors} but the program lowers"
        accepted += 1
        depth = synaptic_depths(program)
        assert {c.synapse: c.delay for c in plan.conns} == synapse_delays(program, depth)
    # not vacuous: both sides of the property are exercised, by the rules at stake
    assert 60 <= accepted <= 280, accepted
    assert {"topology", "delay", "u-overflow"} <= refused_rules, refused_rules


def _pick(predicate, max_neurons=120):
    """The first property-test program the check accepts that is small (no relay chain), has a
    population with du < 4095, and whose sync emulation on ``_samples(program, 2)`` satisfies
    ``predicate(program, result)``."""
    for seed in PROPERTY_SEEDS:
        p = random_program(seed)
        if (sum(q.size for q in p.populations) <= max_neurons
                and any(q.du < DECAY_MAX for q in p.populations)
                and not [v for v in check_program(p) if v.severity == "error"]
                and predicate(p, emulate(p, _samples(p, 2), record=True))):
            return p
    raise AssertionError("no accepted random program fits the predicate")


def _u_wraps_with_memory(program, r):
    """u wraps (within the 24-bit spec) in a population with current memory."""
    return any(r.u_wraps[q.name] for q in program.populations if q.du < DECAY_MAX)


def _all_spike_through_conv(program, r):
    """Every spiking population fires and a conv synapse is on the way."""
    return (all(r.spikes[q.name].any() for q in program.populations[:-1])
            and any(s.kind == "conv" for s in program.synapses))


def _recurrent_firing_3d(program, r):
    """A 3-D population (Lava's (W, H, C) layout next to a conv) with a recurrent synapse
    fires."""
    rec = {s.target for s in program.synapses if s.recurrent}
    return any(len(q.shape) == 3 and q.name in rec and r.spikes[q.name].any()
               for q in program.populations)


def _samples(program, n):
    return random_samples(program, n, rate=0.5)


def _assert_lava_equals_emulator(program, x, result):
    emu = emulate(program, x, record=True)
    for p in program.populations:
        np.testing.assert_array_equal(result.spikes[p.name], emu.spikes[p.name].astype(bool),
                                      err_msg=p.name)
        np.testing.assert_array_equal(result.final_v[p.name], emu.v[p.name][-1], err_msg=p.name)
        np.testing.assert_array_equal(result.u[p.name], emu.u[p.name], err_msg=p.name)
    np.testing.assert_array_equal(result.outputs, emu.outputs)
    return emu


@pytest.mark.lava
def test_accepted_random_programs_with_current_memory_match_lava():
    """Three accepted random programs with du < 4095 (one where u wraps within 24 bits, one
    where every population fires through a conv, one where a 3-D population with a recurrent
    synapse fires): Lava's spikes, final v and every step's u equal the emulator's, every
    population (record=True)."""
    from dalif_deploy.targets.lava.run import run_lava

    for program in (_pick(_u_wraps_with_memory), _pick(_all_spike_through_conv),
                    _pick(_recurrent_firing_3d)):
        x = _samples(program, 2)
        result = run_lava(program, x, timeout=TIMEOUT, record=True)
        _assert_lava_equals_emulator(program, x, result)


# ---------------------------------------------------------------- pipelined, dense -> 2-D/3-D
def flat_to_grid_program(seed=0):
    """input (8,) -dense-> a (2, 3, 3) -conv-> c (2, 3, 3) -dense-> b (3, 2) -dense-> out:
    dense synapses whose flat outputs feed a 3-D and a 2-D population, and 3-D populations in
    Lava's (W, H, C) conv layout (paths balanced: pipelined mode has no delays)."""
    rng = np.random.default_rng(seed)
    pops = [_pop("a", (2, 3, 3), rng, du=3000, bias=30), _pop("c", (2, 3, 3), rng, vth=40),
            _pop("b", (3, 2), rng, dv=[500, 900, 0], vth=30)]
    syns = [_dense("fc1", "input", "a", (8,), (2, 3, 3), rng, graded=True, exp=-3),
            _conv("conv", "a", "c", (2, 3, 3), 2, rng, exp=0),
            _dense("fc3", "c", "b", (2, 3, 3), (3, 2), rng, exp=-2)]
    ro, fc = _readout("b", (3, 2), rng)
    return _program(pops + [ro], syns + [fc], (8,), True, 5)


def _assert_pipelined_is_sync_retimed(program, x):
    """Without bias, pipelined spikes of a depth-k population at steps k..k+T-1 are the sync
    spikes, nothing fires before, and the readouts agree."""
    for p in program.populations:
        p.bias_mant[...] = 0
    sync = emulate(program, x, record=True)
    pipe = emulate(program, x, record=True, mode="pipelined")
    depth = synaptic_depths(program)
    t = program.timesteps
    for p in program.populations:
        k = depth[p.name]
        np.testing.assert_array_equal(pipe.spikes[p.name][k:k + t], sync.spikes[p.name],
                                      err_msg=p.name)
        assert not pipe.spikes[p.name][:k].any()
    np.testing.assert_array_equal(pipe.outputs, sync.outputs)
    assert any(sync.spikes[p.name].any() for p in program.populations[:-1])
    return sync


def test_pipelined_dense_into_2d_and_3d_populations():
    program = flat_to_grid_program()
    _assert_pipelined_is_sync_retimed(program, _samples(program, 3))


@pytest.mark.lava
def test_dense_into_2d_and_3d_populations_matches_lava():
    """The same program in Lava (a Conv between two 3-D populations, dense into 3-D and 2-D
    ones) equals sync emulation, hence re-timed pipelined emulation too."""
    from dalif_deploy.targets.lava.run import run_lava

    program = flat_to_grid_program()
    x = _samples(program, 3)
    sync = _assert_pipelined_is_sync_retimed(program, x)
    result = run_lava(program, x, timeout=TIMEOUT, record=True)
    assert {c.synapse: c.kind for c in plan_program(program).conns}["conv"] == "conv"
    _assert_lava_equals_emulator(program, x, result)
    np.testing.assert_array_equal(result.outputs, sync.outputs)
