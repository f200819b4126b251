"""Foreign models whose firing NIR cannot say (issue 27): snnTorch's subtract reset (its
default) and its Synaptic reset, Sinabs' MultiSpike with MembraneSubtract (its default), and a
SpikingJelly 2.0.0 graph. Each graph is built in its exporter's exact shape (as
tests/test_foreign_exported.py builds them, docs/MEASURED.md "Foreign exporters, measured")
and run with ``--from`` plus what the file cannot say (``--reset``, ``--multi-spike``): the nir
backend must give the predictions of an independent numpy simulation of the framework's own
equations on every sample, and the fixed-point program quantised with the same options must
agree with it (bound stated per test).
"""

from __future__ import annotations

import nir
import numpy as np
import pytest
from helpers.foreign_exported import DT, _f32, _leaky, _run, _write
from helpers.foreign_graphs import HIDDEN as H
from helpers.foreign_graphs import prototype_readout as _prototypes

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.fixedpoint.fxp_format import load_program


def _mlp(p: dict, neuron) -> dict:
    """Flatten -> Affine -> neuron -> Affine -> neuron, nodes named by position."""
    return {"input": nir.Input(np.array([2, 8, 8])),
            "0": nir.Flatten(input_type={"input": np.array([2, 8, 8])}, start_dim=0,
                             end_dim=-1),
            "1": nir.Affine(_f32(p["w1"]), _f32(p["b1"])), "2": neuron(1),
            "3": nir.Affine(_f32(p["w2"]), _f32(p["b2"])), "4": neuron(2),
            "output": nir.Output(np.array([10]))}


def _layers(p: dict, x: np.ndarray, step) -> np.ndarray:
    """The output layer's spike count over T of an MLP whose neuron ``step(k, state, i) ->
    (spikes, state)`` (k = 1, 2), argmax (first of ties)."""
    b = len(x)
    st: list = [None, None]
    count = np.zeros((b, 10))
    for t in range(x.shape[1]):
        s = x[:, t].reshape(b, -1).astype(np.float64)
        for k in (1, 2):
            s, st[k - 1] = step(k, st[k - 1], s @ p[f"w{k}"].T + p[f"b{k}"])
        count += s
    return count.argmax(1)


def _fixed_agreement(tmp_path, graph, npz, train_npz, want, *options: str) -> float:
    """Quantise ``graph`` with ``options`` (calibrated on the training split), run the
    emulator: the share of samples predicting ``want``."""
    assert main(["quantize", str(graph), "-o", str(tmp_path / "m.fxp"), "-T", "8",
                 "--encoding", "events", "--calibrate", str(train_npz),
                 "--calibration-samples", "64", *options]) == 0
    fixed = _run(tmp_path / "m.fxp", "emulator", npz)
    return float(np.mean(np.array(fixed["predictions"]) == want))


def _nir_predictions(graph, npz, *options: str) -> tuple[np.ndarray, list[str]]:
    res = _run(graph, "nir", npz, *options)
    return np.array(res["predictions"]), res["conventions"]


# --- snnTorch Leaky, reset_mechanism="subtract" (its default) -------------------------------

def snntorch_subtract_reference(p: dict, x: np.ndarray) -> np.ndarray:
    """snnTorch 1.0.0 ``Leaky`` (leaky.py ``_base_sub``): ``reset = [mem > 1]`` of the
    previous step, ``mem = beta mem + I - reset * 1``, spike ``mem > 1``."""
    def step(k, mem, i):
        mem = np.zeros_like(i) if mem is None else mem
        mem = p[f"beta{k}"] * mem + i - (mem > 1)
        return (mem > 1).astype(np.float64), mem
    return _layers(p, x, step)


def test_snntorch_subtract_reset(tmp_path, events):
    """``--reset subtract`` reads snnTorch's default Leaky exactly (subtract-next: the threshold
    comes off the next step's integral); read as written (a hard reset) it differs."""
    ds, npz, train, train_npz = events
    rng = np.random.default_rng(11)
    w1, b1, w2, b2 = _prototypes(rng, train.x.mean(1), train.y, 0.8)
    p = {"w1": w1, "b1": b1 - 0.2, "w2": 2 * w2, "b2": 2 * b2,
         "beta1": rng.uniform(0.7, 0.95, H), "beta2": rng.uniform(0.7, 0.95, 10)}
    g = _write(tmp_path / "snn_sub.nir", _mlp(p, lambda k: _leaky(p[f"beta{k}"])))
    want = snntorch_subtract_reference(p, ds.x)
    assert len(set(want.tolist())) >= 6
    got, conv = _nir_predictions(g, npz, "--from", "snntorch", "--reset", "subtract")
    assert got.tolist() == want.tolist()
    assert any("subtract-next (node(s) 2, 4)" in c and "given with --reset" in c for c in conv)
    as_written, _ = _nir_predictions(g, npz, "--from", "snntorch")
    assert as_written.tolist() != want.tolist()
    agree = _fixed_agreement(tmp_path, g, npz, train_npz, want, "--from", "snntorch",
                             "--reset", "subtract")
    assert agree >= 0.95, agree


# --- snnTorch Synaptic, reset_mechanism="zero" ------------------------------------------------

def test_snntorch_synaptic_zero_reads_as_snntorch(tmp_path, events):
    """snnTorch's Synaptic zeroes the integral of the step AFTER a spike (zero-next): read so by
    ``--from snntorch``, the nir backend equals snnTorch; Norse (NIR's reset) refuses it."""
    from helpers.foreign_exported import snntorch_synaptic, snntorch_synaptic_reference

    ds, npz, train, train_npz = events
    nodes, p = snntorch_synaptic(np.random.default_rng(6), train)
    for k, name in ((1, "2"), (2, "4")):  # one alpha per layer: Loihi's du is per population
        p[f"a{k}"] = np.full_like(p[f"a{k}"], 0.5)
        ts = _f32(DT / (1 - _f32(p[f"a{k}"])))
        nodes[name].tau_syn, nodes[name].w_in = ts, _f32(ts / DT)
    g = _write(tmp_path / "snn_syn.nir", nodes)
    want = snntorch_synaptic_reference(p, ds.x, refractory=True)
    got, conv = _nir_predictions(g, npz, "--from", "snntorch")
    assert got.tolist() == want.tolist()
    assert any("zero-next (node(s) 2, 4)" in c for c in conv)
    with pytest.raises(DaLifError, match="--backend nir"):
        from dalif_deploy.targets.norse import NorseBackend
        NorseBackend(str(g), exporter="snntorch")
    # the layers' biases ramp in through the current as snnTorch's syn (bias into u): 119 of
    # 120 here; with the steady bias into v from step 1 (before issue 27) 115 of 120
    agree = _fixed_agreement(tmp_path, g, npz, train_npz, want, "--from", "snntorch")
    assert agree >= 0.98, agree
    assert all(pop.bias_into == "u" for pop in load_program(tmp_path / "m.fxp").populations
               if pop.du < 4095)


# --- Sinabs: MultiSpike with MembraneSubtract (its default) ----------------------------------

def sinabs_multi_reference(p: dict, x: np.ndarray, lif: bool) -> np.ndarray:
    """Sinabs 3.1.3 ``IAF``/``LIF`` with MultiSpike and MembraneSubtract (threshold 1): ``v =
    v + I`` (LIF, norm_input: ``v = a v + (1 - a) I``, ``a = e^(-1/tau)``), ``n = (v > 0) *
    trunc(v / 1)`` spikes, ``v = v - n``."""
    def step(k, v, i):
        v = np.zeros_like(i) if v is None else v
        if lif:
            a = np.exp(-1 / _f32(p[f"tau{k}"]).astype(np.float64))
            v = a * v + (1 - a) * i
        else:
            v = v + i
        n = (v > 0) * np.trunc(v)
        return n, v - n
    return _layers(p, x, step)


def sinabs_lif(tau: np.ndarray) -> nir.LIF:
    """Sinabs' ``to_nir`` of a LIF after the repair (0-d parameters broadcast): tau in steps,
    ``r = 1``, threshold 1, float32."""
    return nir.LIF(tau=_f32(tau), r=_f32(1 + 0 * tau), v_leak=_f32(0 * tau),
                   v_threshold=_f32(1 + 0 * tau), v_reset=_f32(0 * tau))


def _if(n: int) -> nir.IF:
    """Sinabs' ``to_nir`` of an IAF (after the repair nir.write needs): r = 1, threshold 1."""
    return nir.IF(r=_f32(np.ones(n)), v_threshold=_f32(np.ones(n)), v_reset=_f32(np.zeros(n)))


@pytest.mark.parametrize("lif", [False, True])
def test_sinabs_multi_spike_subtract(tmp_path, events, lif):
    """``--from sinabs --reset subtract --multi-spike`` reads Sinabs' default IAF and LIF
    exactly (counts sent as graded spikes); read as one spike, the predictions differ."""
    ds, npz, train, train_npz = events
    rng = np.random.default_rng(21 + lif)
    w1, b1, w2, b2 = _prototypes(rng, train.x.mean(1), train.y, 1.5 if lif else 0.5)
    p = {"w1": w1, "b1": b1 - 0.2, "w2": (3 if lif else 1) * w2, "b2": (3 if lif else 1) * b2}
    if lif:  # Sinabs' LIF as to_nir writes it (repaired): tau in steps, r = 1
        p["tau1"], p["tau2"] = np.full(H, rng.uniform(2, 6)), np.full(10, rng.uniform(2, 6))
        nodes = _mlp(p, lambda k: sinabs_lif(p[f"tau{k}"]))
    else:
        nodes = _mlp(p, lambda k: _if(H if k == 1 else 10))
    g = _write(tmp_path / "sinabs_multi.nir", nodes)
    want = sinabs_multi_reference(p, ds.x, lif)
    assert len(set(want.tolist())) >= 6
    opts = ("--from", "sinabs", "--reset", "subtract", "--multi-spike")
    got, conv = _nir_predictions(g, npz, *opts)
    assert got.tolist() == want.tolist()
    assert any("spike counts" in c for c in conv)
    one, _ = _nir_predictions(g, npz, "--from", "sinabs")
    assert one.tolist() != want.tolist()
    agree = _fixed_agreement(tmp_path, g, npz, train_npz, want, *opts)
    assert agree >= 0.9, agree


# --- SpikingJelly 2.0.0 ------------------------------------------------------------------------

def spikingjelly_lif(tau: np.ndarray) -> nir.LIF:
    """SpikingJelly 2.0.0's ``map_lif`` (decay_input, v_reset 0, threshold 1): ``tau = tau_sj *
    dt`` at its dt = 1e-4, ``r = 1``, ``v_leak = v_reset``."""
    return nir.LIF(tau=_f32(tau * DT), r=_f32(1 + 0 * tau), v_leak=_f32(0 * tau),
                   v_threshold=_f32(1 + 0 * tau), v_reset=_f32(0 * tau))


def spikingjelly_reference(p: dict, x: np.ndarray) -> np.ndarray:
    """SpikingJelly ``LIFNode`` (decay_input, hard reset to 0): ``H = V + (X - V) / tau``,
    spike ``H >= 1`` (its heaviside: ``x >= 0``), ``V = H (1 - S)``."""
    def step(k, v, i):
        v = np.zeros_like(i) if v is None else v
        h = v + (i - v) / p[f"tau{k}"]
        s = (h >= 1).astype(np.float64)
        return s, h * (1 - s)
    return _layers(p, x, step)


def test_spikingjelly_graph_reads_with_its_conventions(tmp_path, events):
    """``--from spikingjelly``: dt 1e-4, Euler, ``>=``, hard reset; its export refuses soft
    reset, so ``--reset subtract`` is refused."""
    ds, npz, train, train_npz = events
    rng = np.random.default_rng(31)
    w1, b1, w2, b2 = _prototypes(rng, train.x.mean(1), train.y, 1.5)
    p = {"w1": w1, "b1": b1 - 0.2, "w2": 3 * w2, "b2": 3 * b2,
         "tau1": np.full(H, 2.0), "tau2": np.full(10, 3.0)}
    g = _write(tmp_path / "sj.nir", _mlp(p, lambda k: spikingjelly_lif(p[f"tau{k}"])))
    want = spikingjelly_reference(p, ds.x)
    assert len(set(want.tolist())) >= 6
    got, conv = _nir_predictions(g, npz, "--from", "spikingjelly")
    assert got.tolist() == want.tolist()
    assert any("SpikingJelly fires: spike when v >= v_threshold" in c for c in conv)
    assert main(["simulate", str(g), "--backend", "nir", "--dataset", str(npz), "--from",
                 "spikingjelly", "--reset", "subtract"]) == 2
    agree = _fixed_agreement(tmp_path, g, npz, train_npz, want, "--from", "spikingjelly")
    assert agree >= 0.9, agree


def _tie_graph(path, exporter_r: float):
    """Input (1,) -> Affine 1 -> IF (r, threshold 1) -> Affine -> Output: an event of 1 puts v
    exactly on the threshold (dt * r = 1)."""
    return _write(path, {"input": nir.Input(np.array([1])),
                         "0": nir.Affine(_f32([[1.0]]), _f32([0.0])),
                         "1": nir.IF(r=_f32([exporter_r]), v_threshold=_f32([1.0]),
                                     v_reset=_f32([0.0])),
                         "2": nir.Affine(_f32([[1.0], [-1.0]]), _f32([0.0, 0.5])),
                         "output": nir.Output(np.array([2]))})


@pytest.mark.parametrize(("exporter", "r", "fires"), [
    ("sinabs", 1.0, True), ("spikingjelly", 1 / DT, True), ("norse", 1 / 1e-3, False),
    ("snntorch", 1 / DT, False)])
def test_tie_on_the_threshold_in_the_interpreter(tmp_path, exporter, r, fires):
    """v = v_threshold exactly: the exporter's spike rule decides (Sinabs and SpikingJelly
    fire on >=; NIR, Norse and snnTorch on >), in the interpreter and in the program."""
    import torch
    from dalif_deploy.converters.nir_conventions import read_graph
    from dalif_deploy.converters.nir_to_torch import GraphRunner
    from dalif_deploy.targets.emulator import emulate

    from dalif_deploy.fixedpoint.fxp_format import load_program

    g = _tie_graph(tmp_path / "tie.nir", r)
    reading = read_graph(g, exporter)
    x = torch.ones((1, 1, 1))  # one event, T = 1
    _, spikes = GraphRunner(reading.graph, reading.dt).run(x, 1, "events")
    assert spikes["1"].flatten().tolist() == [float(fires)]
    assert main(["quantize", str(g), "-o", str(tmp_path / "t.fxp"), "--from", exporter,
                 "-T", "1", "--encoding", "events"]) == 0
    r = emulate(load_program(tmp_path / "t.fxp"), np.ones((1, 1, 1), np.float32), record=True)
    assert r.spikes["1"].flatten().tolist() == [int(fires)]


def test_files_written_by_old_nir_mean_subtract(tmp_path, events):
    """A file recording nir 1.0.4 (Sinabs 3.1.3 and Rockpool pin nir <= 1.0.4) is read with
    NIR's reset of that time, a subtract, and says so; --reset zero overrides it."""
    import h5py

    ds, npz, train, _ = events
    rng = np.random.default_rng(11)
    w1, b1, w2, b2 = _prototypes(rng, train.x.mean(1), train.y, 0.5)
    p = {"w1": w1, "b1": b1 - 0.2, "w2": w2, "b2": b2}
    g = _write(tmp_path / "old.nir", _mlp(p, lambda k: _if(H if k == 1 else 10)))
    new, _ = _nir_predictions(g, npz, "--from", "nir", "--dt", "1")
    sub, _ = _nir_predictions(g, npz, "--from", "nir", "--dt", "1", "--reset", "subtract")
    assert new.tolist() != sub.tolist()
    with h5py.File(g, "r+") as f:
        del f["version"]
        f.create_dataset("version", data="1.0.4", dtype=h5py.string_dtype())
    old, conv = _nir_predictions(g, npz, "--from", "nir", "--dt", "1")
    assert old.tolist() == sub.tolist()
    assert any("written by nir 1.0.4" in c and "subtract (node(s) 2, 4)" in c for c in conv)
    zero, _ = _nir_predictions(g, npz, "--from", "nir", "--dt", "1", "--reset", "zero")
    assert zero.tolist() == new.tolist()


@pytest.mark.lava
def test_verify_a_sinabs_multi_spike_graph_with_lava(tmp_path, events):
    """``verify g.nir --from sinabs --reset subtract --multi-spike``: the NIR interpreter is the
    float reference, the program is quantised with the same firing (graded synapses out of the
    counting populations) and Lava equals the emulator bit for bit on 2 samples."""
    from dalif_deploy.verification.files import verify_file
    from dalif_deploy.verification.pipeline import VerifyOptions

    ds, npz, train, _ = events
    rng = np.random.default_rng(21)
    w1, b1, w2, b2 = _prototypes(rng, train.x.mean(1), train.y, 0.5)
    p = {"w1": w1, "b1": b1 - 0.2, "w2": w2, "b2": b2}
    g = _write(tmp_path / "sinabs_multi.nir", _mlp(p, lambda k: _if(H if k == 1 else 10)))
    opt = VerifyOptions(lava_samples=2, progress=False, workdir=tmp_path, timeout=120,
                        min_agreement=0.0, max_accuracy_drop=100.0)
    result, art = verify_file(g, dataset=str(npz), exporter="sinabs", timesteps=8, options=opt,
                              reset="subtract", multi_spike=True)
    program = art["program"]
    assert {(q.reset, q.multi_spike) for q in program.populations[:-1]} == {("subtract", True)}
    assert all(s.graded for s in program.synapses if s.source != "input")
    assert result["lava_error"] is None and result["lava_bit_exact"] is True
    with pytest.raises(DaLifError, match="--multi-spike"):
        verify_file(g, dataset=str(npz), exporter="snntorch",
                    timesteps=8, options=opt, reset="subtract", multi_spike=True)
