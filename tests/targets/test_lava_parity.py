"""Parity of the Lava target with the synchronous fixed-point semantics, running Lava for real.

Each test builds a small generated FixedProgram, runs it through Lava (one compiled network
streaming all samples) and compares every population's spikes and final v, every sample, with
the synchronous emulator (targets/emulator.py). The comparison is exact (equal integers,
identical spikes): the arithmetic is integer on both sides.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.lava_parity import TIMEOUT, assert_parity
from helpers.programs import (
    conv_program,
    dense_program,
    per_channel_program,
    random_dense,
    random_population,
    random_readout,
    random_samples,
)

from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Readout,
)

pytestmark = pytest.mark.lava



# ---------------------------------------------------------------- generated programs
# ---------------------------------------------------------------- tests
def extreme_program(seed=3):
    """Dense graded program driven to u-wrap (a << 6 beyond 2^23) and v-saturation (dv = 0)."""
    rng = np.random.default_rng(seed)
    pops = [random_population("hot", (6,), rng, dv=0, vth=2**17 - 1),
            random_population("l2", (5,), rng, vth=100)]
    syns = [random_dense("fc1", "input", "hot", 8, 6, rng, exp=1, graded=True, lo=100, hi=127),
            random_dense("fc2", "hot", "l2", 6, 5, rng)]
    syns[0].weights[3:] *= -1  # half the neurons saturate negative, half wrap/spike positive
    ro, fc = random_readout("l2", 5, 2, rng)
    return FixedProgram(InputEncoding("analog", (8,), scale=127.0), pops + [ro], syns + [fc],
                        Readout("out", 64.0), timesteps=6)




CASES = {
    "dense-graded-residual-channel-bias": lambda: dense_program(
        0, residual=True, channel_dv=True, bias=300),
    "dense-events-plain": lambda: dense_program(3, graded=False, exp=0),
    "conv-graded-residual": lambda: conv_program(2, residual=True),
    "conv-events-channel-bias": lambda: conv_program(
        3, graded=False, channel_dv=True, bias=200, vth2=20),
    "per-channel-graded-residual-negexp": lambda: per_channel_program(4),
    "per-channel-events-residual-negexp": lambda: per_channel_program(5, graded=False),
    "dense-graded-recurrent-residual": lambda: dense_program(
        6, residual=True, bias=300, recurrent=True, t=5),
    "dense-events-recurrent": lambda: dense_program(7, graded=False, exp=0, recurrent=True,
                                                    t=6, bias=200),
    "conv-graded-recurrent-residual": lambda: conv_program(8, residual=True, recurrent=True,
                                                           t=4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_program_parity(case):
    from dalif_deploy.targets.lava.lower import plan_program
    from dalif_deploy.targets.lava.run import run_lava

    program = CASES[case]()
    plan = plan_program(program)
    # one Lava process per population and per synapse, whatever the decays
    assert [p.name for p in plan.pops] == [p.name for p in program.populations]
    assert plan.process_count == len(program.populations) + len(program.synapses) + 1
    if "channel" in case:  # several distinct decays in one population really exercised
        assert max(np.unique(p.dv).size for p in plan.pops) > 1
    if case.startswith("per-channel"):  # every channel its own decay, one process each
        assert [np.unique(p.dv).size for p in plan.pops] == [5, 6, 7, 1]
        assert {c.synapse: (c.kind, c.delay) for c in plan.conns}["skip"] == ("sparse", 1)
    if "recurrent" in case:  # into the a_rec port, no delay, depths as without them
        rec = {c.synapse: (c.kind, c.delay) for c in plan.conns if c.recurrent}
        assert rec == ({"rec": ("sparse", 0)} if case.startswith("conv")
                       else {"rec1": ("dense", 0), "rec2": ("dense", 0)})
        assert plan.max_depth == 3
    x = random_samples(program, 3)
    result = run_lava(program, x, timeout=TIMEOUT)
    spikes, _, _ = assert_parity(program, x, result)
    # Not vacuous: every spiking population fires, and samples differ.
    for name in result.spiking:
        assert spikes[name].any(), f"{case}: {name} never spikes; the test would prove little"
    assert result.outputs.shape == (3, program.population("out").size)
    assert not np.array_equal(result.outputs[0], result.outputs[1])
    np.testing.assert_array_equal(
        result.spike_counts,
        np.stack([spikes[n].reshape(program.timesteps, 3, -1).sum(axis=(0, 2))
                  for n in result.spiking], axis=1))


def test_u_wrap_and_v_saturation_parity_with_full_traces():
    """Every step's v and u equal the reference where u wraps and v saturates (record=True)."""
    from dalif_deploy.targets.lava.run import run_lava

    program = extreme_program()
    x = random_samples(program, 2, seed=5)
    result = run_lava(program, x, timeout=TIMEOUT, record=True)
    _, vs, us = assert_parity(program, x, result)
    for p in program.populations:
        np.testing.assert_array_equal(result.v[p.name], vs[p.name], err_msg=p.name)
        np.testing.assert_array_equal(result.u[p.name], us[p.name], err_msg=p.name)
    hot_u, hot_v = us["hot"], vs["hot"]
    assert (np.abs(hot_u) > 2**22).any() and (hot_u < 0).any() and (hot_u > 0).any()
    assert (hot_v == -(2**23 - 1)).any(), "no negative v-saturation happened"


def test_conv_lowered_as_sparse_matches_too():
    """The all-Sparse lowering (use_conv=False) of a conv program gives the same results."""
    from dalif_deploy.targets.lava.run import run_lava

    program = conv_program(2, residual=True)
    x = random_samples(program, 2)
    assert_parity(program, x, run_lava(program, x, timeout=TIMEOUT, use_conv=False))


def firing_program(seed: int, rule: str, reset: str, multi: bool):
    """dense_program with both hidden populations firing by ``rule``/``reset``/``multi``
    (graded synapses out of a multi-spike population)."""
    program = dense_program(seed, bias=200, t=5)
    for p in program.populations[:2]:
        p.spike_rule, p.reset, p.multi_spike = rule, reset, multi
        p.vth = 4 * p.vth if multi else max(p.vth // 4, 1)  # counts within the payload
    for s in program.synapses:
        s.graded = s.graded or multi and s.source != "input"
    return program


FIRING_CASES = {"ge-subtract-multi": (">=", "subtract", True), "gt-zero-multi": (">", "zero", True),
                "gt-subtract": (">", "subtract", False), "ge-zero": (">=", "zero", False),
                "gt-zero-next": (">", "zero-next", False),
                "ge-subtract-next": (">=", "subtract-next", False)}


def test_bias_into_current_parity():
    """A population whose bias joins the current u (ramping in with du < 4095, and with du =
    4095) equals the emulator bit for bit, u traces included."""
    from dalif_deploy.targets.lava.run import run_lava

    from dalif_deploy.fixedpoint.constraints import require_valid

    program = dense_program(7, bias=300, t=6)
    for p, du in zip(program.populations[:2], (900, 4095), strict=True):
        p.bias_into, p.du = "u", du
    require_valid(program)
    x = random_samples(program, 2)
    result = run_lava(program, x, timeout=TIMEOUT, record=True)
    spikes, vs, us = assert_parity(program, x, result)
    for p in program.populations:
        np.testing.assert_array_equal(result.v[p.name], vs[p.name], err_msg=p.name)
        np.testing.assert_array_equal(result.u[p.name], us[p.name], err_msg=p.name)
    assert sum(int(s.sum()) for s in spikes.values()) > 0


@pytest.mark.parametrize("case", sorted(FIRING_CASES))
def test_firing_modes_parity(case):
    """Every spike rule, reset mode and multi-spike output of our population process equals
    the emulator bit for bit (spike counts as graded spikes included)."""
    from dalif_deploy.targets.lava.run import run_lava

    from dalif_deploy.fixedpoint.constraints import require_valid

    program = firing_program(sorted(FIRING_CASES).index(case), *FIRING_CASES[case])
    require_valid(program)
    x = random_samples(program, 3)
    result = run_lava(program, x, timeout=TIMEOUT)
    from dalif_deploy.targets.emulator import emulate

    emu = emulate(program, x, record=True)
    for p in program.populations:
        np.testing.assert_array_equal(result.spikes[p.name], emu.spikes[p.name], err_msg=p.name)
        np.testing.assert_array_equal(result.final_v[p.name], emu.v[p.name][-1], err_msg=p.name)
    np.testing.assert_array_equal(result.outputs, emu.outputs)
    assert emu.spike_counts.sum() > 0
    if FIRING_CASES[case][2]:
        assert max(int(emu.spikes[p].max()) for p in result.spiking) > 1


def test_tie_on_the_threshold_in_lava():
    """v = vth << 6 exactly: Lava's process fires by the population's spike rule."""
    from dalif_deploy.targets.lava.run import run_lava
    from helpers.programs import tie_program

    for rule, want in ((">", [0, 1]), (">=", [1, 1])):
        r = run_lava(tie_program(rule), np.ones((1, 2, 1), np.float32), timeout=TIMEOUT)
        assert r.spikes["a"][:, 0, 0].astype(int).tolist() == want, rule
