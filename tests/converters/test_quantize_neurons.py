"""IF and CubaLIF through the quantiser: exact where the mapping is exact, close to the float
NIR interpreter where decays round, the u-overflow bound, refusals, Lava bit-exactness, CLI."""

from __future__ import annotations

import functools

import nir
import numpy as np
import pytest
import torch
from dalif_deploy.converters.nir_to_fixed import quantize_graph
from dalif_deploy.converters.nir_to_torch import run_graph
from dalif_deploy.targets.emulator import emulate

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.fixedpoint.constraints import check_program
from dalif_deploy.fixedpoint.fxp_format import load_program

N_IN, N_HID, N_OUT, T = 16, 12, 4, 12


def _graph(neuron: nir.NIRNode, w1: np.ndarray, w2: np.ndarray, b1=None) -> nir.NIRGraph:
    b1 = np.zeros(N_HID) if b1 is None else b1
    nodes = {"input": nir.Input(np.array([N_IN])), "fc1": nir.Affine(w1, b1), "hid": neuron,
             "fc2": nir.Affine(w2, np.zeros(N_OUT)), "output": nir.Output(np.array([N_OUT]))}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:], strict=True)),
                        type_check=False)


def _if(v_th=1.0, **kw) -> nir.IF:
    return nir.IF(r=np.ones(N_HID), v_threshold=np.full(N_HID, v_th),
                  v_reset=kw.pop("v_reset", np.zeros(N_HID)))


def _cuba(tau_syn=2.0, tau_mem=4.0, v_th=1.0, **kw) -> nir.CubaLIF:
    p = {"tau_syn": np.full(N_HID, tau_syn), "tau_mem": np.full(N_HID, tau_mem),
         "r": np.full(N_HID, 1.5), "v_leak": np.zeros(N_HID), "w_in": np.full(N_HID, 2.0),
         "v_threshold": np.full(N_HID, v_th), "v_reset": np.zeros(N_HID)}
    p.update(kw)
    return nir.CubaLIF(**p)


def _weights(rng, grid=False):
    w1 = rng.normal(0.15, 0.5, (N_HID, N_IN))
    w2 = rng.normal(0, 1.0, (N_OUT, N_HID))
    return (np.round(w1 * 16) / 16, np.round(w2 * 16) / 16) if grid else (w1, w2)


def _events(rng, n=64):
    return (rng.random((n, T, N_IN)) < 0.3).astype(np.float32)


def _compare(graph, program, x):
    """(hidden spike agreement, prediction agreement, emulator result) against the float64 NIR
    interpreter at dt = 1."""
    logits, spikes = run_graph(graph, torch.as_tensor(x, dtype=torch.float64), T, dt=1.0,
                               dtype=torch.float64, encoding="events")
    emu = emulate(program, x, record=True)
    want = spikes["hid"].numpy().astype(bool)
    got = emu.spikes["hid"].astype(bool).reshape(want.shape)
    pred = float((emu.outputs.argmax(1) == logits.numpy().argmax(1)).mean())
    return float((want == got).mean()), pred, emu, want


def test_if_maps_exactly_onto_loihi():
    """IF = LIF without leak (dv = 0, du = 4095); with event input and weights on a 1/16 grid
    every integer is exact, so the spikes equal NIR's float spikes exactly (NIR's `>`); only
    the readout's weights round (its scale is bounded by the readout range)."""
    rng = np.random.default_rng(0)
    g = _graph(_if(), *_weights(rng, grid=True))
    prog = quantize_graph(g, timesteps=T, encoding="events", dt=1.0)
    hid = prog.population("hid")
    assert hid.du == 4095 and hid.dv.tolist() == [0]
    agree, pred, emu, want = _compare(g, prog, _events(rng))
    assert 0.05 < want.mean() < 0.6, "the IF layer must fire for the test to mean something"
    assert agree == 1.0 and pred >= 0.95, pred


def test_cuba_lif_current_decay_and_agreement():
    """CubaLIF: du = round(4096 dt/tau_syn) - 1 (Loihi's du + 1), dv = round(4096 dt/tau_mem);
    decays 1/2 and 3/4 are exact factors but Loihi's rtz rounds u and v each step, so spikes
    agree to within a small bound, predictions nearly always."""
    rng = np.random.default_rng(1)
    g = _graph(_cuba(), *_weights(rng))
    prog = quantize_graph(g, timesteps=T, encoding="events", dt=1.0)
    hid = prog.population("hid")
    assert hid.du == 2047 and hid.dv.tolist() == [1024]
    agree, pred, _, want = _compare(g, prog, _events(rng))
    assert 0.05 < want.mean() < 0.6
    assert agree >= 0.98 and pred >= 0.9, (agree, pred)
    # a rounded decay (dt/tau_syn = 1/3) and a bias (into u, ramping in)
    g = _graph(_cuba(tau_syn=3.0, tau_mem=5.0), *_weights(rng), b1=rng.normal(0, 0.05, N_HID))
    prog = quantize_graph(g, timesteps=T, encoding="events", dt=1.0)
    assert prog.population("hid").du == round(4096 / 3) - 1
    agree, pred, _, _ = _compare(g, prog, _events(rng))
    assert agree >= 0.9 and pred >= 0.8, (agree, pred)


def test_cuba_lif_bias_ramps_in_through_the_current():
    """A CubaLIF bias enters i like any input, so it ramps in over ~tau_syn/dt steps: the
    quantiser puts it into u (``bias_into = "u"``, the weights' gain), and a bias-driven layer
    (no input; decays 1/2 and 1/4, exact factors) fires at exactly NIR's float steps. The
    steady-current bias into v it replaced fires early and agrees on only about half the
    steps; netx's neuron, which can add a bias to v only, keeps that reading."""
    b = np.linspace(0.36, 1.4, N_HID)  # first spikes from step 1 to step 10 of 12
    rng = np.random.default_rng(5)
    g = _graph(_cuba(), rng.normal(0, 0.01, (N_HID, N_IN)), rng.normal(0, 1, (N_OUT, N_HID)),
               b1=b)
    prog = quantize_graph(g, timesteps=T, encoding="events", dt=1.0)
    hid = prog.population("hid")
    assert hid.bias_into == "u" and hid.du == 2047
    x = np.zeros((1, T, N_IN), np.float32)
    _, spikes = run_graph(g, torch.as_tensor(x, dtype=torch.float64), T, dt=1.0,
                          dtype=torch.float64, encoding="events")
    want = spikes["hid"].numpy().reshape(T, N_HID).astype(bool)
    got = emulate(prog, x, record=True).spikes["hid"].reshape(T, N_HID).astype(bool)
    first = want.argmax(0)
    assert want.any(0).all() and len(set(first.tolist())) >= 4, "spread first spikes"
    assert np.array_equal(got, want)
    hid.bias_into, hid.bias_exp = "v", hid.bias_exp + 1  # the steady current, 1/ks = 2 times
    steady = emulate(prog, x, record=True).spikes["hid"].reshape(T, N_HID).astype(bool)
    assert (steady == want).mean() < 0.75
    netx = quantize_graph(g, timesteps=T, encoding="events", dt=1.0, netx=True)
    assert netx.population("hid").bias_into == "v"


def test_u_overflow_bounds_the_scale_or_refuses():
    """With du < 4095 the scale keeps sum |a| << 6 within 2^24 (constraint u-overflow) for graded
    input; when that leaves no threshold resolution the quantiser refuses, naming the rule."""
    rng = np.random.default_rng(2)
    w1, w2 = _weights(rng)
    g = _graph(_cuba(v_th=0.01), w1 * 4, w2)
    prog = quantize_graph(g, timesteps=T, encoding="analog", dt=1.0)
    hid = prog.population("hid")
    assert hid.du < 4095 and not [v for v in check_program(prog) if v.rule == "u-overflow"]
    assert hid.scale < (64 * 2**12 + 1) / 0.01, "the u-overflow bound was not the active one"
    # the same graph with tau_syn = dt (du = 4095) is not bounded by it
    free = quantize_graph(_graph(_cuba(tau_syn=1.0, v_th=0.01), w1 * 4, w2), timesteps=T,
                          encoding="analog", dt=1.0)
    assert free.population("hid").du == 4095 and free.population("hid").scale > hid.scale
    with pytest.raises(DaLifError, match="hid: weights are too large.*u-overflow"):
        quantize_graph(_graph(_cuba(v_th=1e-5), w1 * 4, w2), timesteps=T, encoding="analog",
                       dt=1.0)


@pytest.mark.parametrize(("node", "pattern"), [
    (lambda: _if(v_reset=np.full(N_HID, 0.1)), "IF hid: v_reset must be 0"),
    (lambda: _cuba(v_leak=np.full(N_HID, 0.2)), "CubaLIF hid: v_leak must be 0"),
    (lambda: _cuba(v_reset=np.full(N_HID, -0.5)), "CubaLIF hid: v_reset must be 0"),
    (lambda: _cuba(tau_syn=np.linspace(2, 3, N_HID)), "tau_syn varies within the layer"),
    (lambda: _cuba(tau_syn=1e4), r"du \+ 1 = 0, outside \[1, 4096\]"),
])
def test_unmappable_neurons_are_refused(node, pattern):
    g = _graph(node(), *_weights(np.random.default_rng(3)))
    with pytest.raises(DaLifError, match=pattern):
        quantize_graph(g, timesteps=T, encoding="events", dt=1.0)


@pytest.mark.lava
@pytest.mark.parametrize("kind", ["if", "cuba"])
def test_lava_equals_emulator_bit_for_bit(kind):
    from dalif_deploy.targets.lava.run import run_lava

    rng = np.random.default_rng(4)
    g = _graph(_if() if kind == "if" else _cuba(), *_weights(rng), b1=rng.normal(0, 0.05, N_HID))
    prog = quantize_graph(g, timesteps=T, encoding="events", dt=1.0)
    x = _events(rng, 3)
    res = run_lava(prog, x, timeout=240.0)
    emu = emulate(prog, x, mode="sync", record=True)
    for p in prog.populations:
        np.testing.assert_array_equal(res.spikes[p.name], emu.spikes[p.name].astype(bool),
                                      err_msg=p.name)
        np.testing.assert_array_equal(res.final_v[p.name], emu.v[p.name][-1], err_msg=p.name)
    np.testing.assert_array_equal(res.outputs, emu.outputs)
    assert emu.spikes["hid"].any()


def test_sinabs_if_graph_quantizes_on_the_cli(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "sinabs.nir"
    nir.write(path, _graph(_if(), *_weights(rng)))
    out = tmp_path / "q.fxp"
    assert main(["quantize", str(path), "-o", str(out), "--from", "sinabs", "-T", str(T),
                 "--encoding", "events"]) == 0
    prog = load_program(out)
    assert prog.population("hid").dv.tolist() == [0]
    res = functools.partial(emulate, check=True)(prog, _events(rng, 4))
    assert res.outputs.shape == (4, N_OUT)
