"""The Loihi 2 resource and cost model (dalif_deploy.fixedpoint.cost) on hand-computed programs, its
overrides, and its keys in inspect / simulate / verify."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import REPO_ROOT

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint import cost
from dalif_deploy.fixedpoint.fxp_format import save_program
from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
)

CKPT = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


def _pop(name, shape, vth=10):
    return Population(name, shape, dv=np.array([0 if vth == 2**17 - 1 else 100]), vth=vth,
                      bias_mant=np.zeros(shape, np.int64))


def _dense_program(w_in=None, w_out=None, t=4) -> FixedProgram:
    """input (4,) -dense-> h (3,) -dense-> readout (2,)."""
    w_in = np.array([[1, 2, 0, 3], [0, 0, 4, 0], [5, 0, 0, 0]]) if w_in is None else w_in
    w_out = np.array([[1, 0, 2], [0, 3, 4]]) if w_out is None else w_out
    n_h = w_in.shape[0]
    syns = [Synapse("in", "input", "h", "dense", w_in, graded=True, input_shape=(w_in.shape[1],),
                    output_shape=(n_h,)),
            Synapse("out", "h", "ro", "dense", w_out, input_shape=(n_h,),
                    output_shape=(w_out.shape[0],))]
    return FixedProgram(InputEncoding("analog", (w_in.shape[1],), scale=10.0),
                        [_pop("h", (n_h,)), _pop("ro", (w_out.shape[0],), vth=2**17 - 1)],
                        syns, Readout("ro", 1.0), timesteps=t)


def _conv_program(kernel=None, n=4) -> FixedProgram:
    """input (1, n, n) -conv 3x3, stride 1, pad 1-> c (2, n, n) -dense-> readout (2,)."""
    k = np.ones((2, 1, 3, 3), np.int64) if kernel is None else kernel
    syns = [Synapse("conv", "input", "c", "conv", k, graded=True, padding=(1, 1),
                    input_shape=(1, n, n), output_shape=(2, n, n)),
            Synapse("fc", "c", "ro", "dense", np.ones((2, 2 * n * n), np.int64),
                    input_shape=(2, n, n), output_shape=(2,))]
    return FixedProgram(InputEncoding("analog", (1, n, n), scale=10.0),
                        [_pop("c", (2, n, n)), _pop("ro", (2,), vth=2**17 - 1)], syns,
                        Readout("ro", 1.0), timesteps=2)


def _pops(res):
    return {r["population"]: r for r in res["populations"]}


def test_dense_counts_by_hand():
    hw = cost.Hardware()
    res = cost.resources(_dense_program(), hw)
    # 12 + 6 structural synapses; 5 + 4 nonzero; no conv, so kernel entries = matrix entries
    assert (res["neurons"], res["synapses"], res["synapses_nonzero"]) == (5, 18, 9)
    assert res["kernel_entries_nonzero"] == 9
    syn = {s["name"]: s for s in res["per_synapse"]}
    # dense 12 * 8 = 96 bits beats sparse 5 * (8 + 13) = 105 bits
    assert hw.index_bits == 13 and syn["in"]["format"] == "dense"
    assert syn["in"]["memory_bits"] == 96 and syn["out"]["memory_bits"] == 48
    assert syn["in"]["fan_in_max"] == 4 and syn["in"]["fan_in_nonzero_max"] == 3
    assert syn["in"]["fan_out_max"] == 3
    p = _pops(res)
    assert p["h"]["memory_bits"] == 3 * 64 + 96 and p["ro"]["memory_bits"] == 2 * 64 + 48
    assert (p["h"]["cores"], p["ro"]["cores"], res["cores"], res["chips"]) == (1, 1, 2, 1)
    # h: 3 / 8192 neurons, 288 / 1572864 bits, 4 / 4096 axons in, 3 * 1 / 4096 axons out
    assert p["h"]["load_by_limit"]["axons_in"] == round(4 / 4096, 4)
    assert p["h"]["binding_limit"] == "axons_in"


def test_dense_synops_from_known_spike_counts():
    prog = _dense_program()
    act = cost.activity(prog, {"h": np.array([2.0, 0.0, 1.0])}, np.array([4.0, 4.0, 0.0, 4.0]))
    layers = {r["population"]: r for r in act["layers"]}
    assert layers["h"]["synops_in"] == 12 * 3  # every input event visits 3 stored synapses
    assert layers["ro"]["synops_in"] == 3 * 2
    assert act["synops"] == 42 and act["synops_from_input"] == 36
    assert act["neuron_updates"] == 5 * 4 and act["spikes"] == 3
    assert (act["depth"], act["latency_steps"]) == (2, 4 + 2)  # one step per synapse (Lava)
    # a total instead of per-neuron counts uses the mean fan-out (exact for dense)
    assert cost.activity(prog, {"h": 3.0}, 12.0)["synops"] == 42


def test_sparse_format_for_a_mostly_zero_dense_synapse():
    w = np.zeros((10, 10), np.int64)
    w[0, 3], w[7, 3], w[2, 9] = 1, -2, 5
    prog = _dense_program(w_in=w, w_out=np.ones((2, 10), np.int64))
    syn = {s["name"]: s for s in cost.resources(prog)["per_synapse"]}
    assert syn["in"]["format"] == "sparse" and syn["in"]["memory_bits"] == 3 * (8 + 13)
    assert syn["in"]["fan_out_max"] == 2  # input 3 reaches two neurons; zeros are not stored
    act = cost.activity(prog, {"h": np.zeros(10)}, np.eye(10)[3] * 4)
    assert act["synops_from_input"] == 4 * 2


def test_conv_counts_by_hand():
    k = np.ones((2, 1, 3, 3), np.int64)
    k[0, 0, 1, 1] = 0
    res = cost.resources(_conv_program(k))
    syn = {s["name"]: s for s in res["per_synapse"]}["conv"]
    # outputs reached per tap along an axis (n=4, k=3, pad 1): 3, 4, 3 -> 10 * 10 per channel
    assert syn["synapses"] == 2 * 100 and syn["kernel_entries"] == 18
    assert syn["kernel_entries_nonzero"] == 17
    assert syn["synapses_nonzero"] == 200 - 4 * 4  # the centre tap reaches all 16 outputs
    assert syn["memory_bits"] == 18 * 8 and syn["format"] == "conv"
    assert syn["fan_in_max"] == 9 and syn["fan_in_nonzero_max"] == 9
    # fan-out of pixel (y, x) = 2 channels * f[y] * f[x], f = [2, 3, 3, 2]
    assert (syn["fan_out_max"], syn["fan_out_mean"]) == (18, 200 / 16)
    c = _pops(res)["c"]
    assert c["memory_bits"] == 32 * 64 + 144  # the kernel once on its one core
    corner = np.zeros((1, 4, 4))
    corner[0, 0, 0] = 1.0
    act = cost.activity(_conv_program(k), {"c": np.zeros((2, 4, 4))}, corner)
    assert act["synops_from_input"] == 2 * 2 * 2


def _recurrent_program() -> FixedProgram:
    """_dense_program with h fed back to itself through a 3x3 dense synapse (4 nonzero)."""
    prog = _dense_program()
    prog.synapses.insert(1, Synapse("rec", "h", "h", "dense",
                                    np.array([[0, 1, 0], [2, 0, 3], [0, 0, 4]]),
                                    input_shape=(3,), output_shape=(3,)))
    return prog


def test_recurrent_synapse_counts_its_synops_memory_and_own_axons():
    """A recurrent synapse is one more synapse into h: its memory, fan-in and SynOps (each
    spike of h visits h's 3 stored recurrent synapses too), no extra depth; its axons go back
    to each of h's own k cores, so the axons-out load depends on k: the smallest k that holds
    with them is taken."""
    prog = _recurrent_program()
    res = cost.resources(prog)
    p = _pops(res)
    assert p["h"]["synapses_in"] == 12 + 9 and p["h"]["memory_bits"] == 3 * 64 + 96 + 72
    act = cost.activity(prog, {"h": np.array([2.0, 0.0, 1.0])}, np.array([4.0, 4.0, 0.0, 4.0]))
    layers = {r["population"]: r for r in act["layers"]}
    assert layers["h"]["synops_in"] == 12 * 3 + 3 * 3  # input events, then h's 3 spikes
    assert (act["depth"], act["latency_steps"]) == (2, 4 + 2)
    # axons out: h's 3 neurons each send one axon to ro's core and one to each of h's k cores;
    # with 4 axons out per core: 3 (1 + k) / 4 cores' worth -> k = 2 fails (9/4 > 2), k = 3 holds
    h = _pops(cost.resources(prog, cost.hardware(axons_out_per_core=4)))["h"]
    assert (h["cores"], h["binding_limit"]) == (3, "axons_out")
    assert h["load_by_limit"]["axons_out"] == 3 * (1 + 3) / 4


def test_overrides_change_the_binding_limit(tmp_path):
    prog = _dense_program()
    few = cost.hardware(neurons_per_core=2)
    h = _pops(cost.resources(prog, few))["h"]
    assert (h["binding_limit"], h["cores"], h["cores_by_limit"]["neurons"]) == ("neurons", 2, 2)
    f = tmp_path / "hw.json"
    f.write_text(json.dumps({"core_memory_bits": 100}))
    h = _pops(cost.resources(prog, cost.hardware(f)))["h"]
    assert h["binding_limit"] == "memory" and h["cores"] == 3  # 288 bits over 100-bit cores
    h = _pops(cost.resources(prog, cost.hardware(axons_out_per_core=1)))["h"]
    assert h["binding_limit"] == "axons_out" and h["cores"] == 3
    with pytest.raises(DaLifError, match="unknown hardware figure"):
        cost.hardware(neurons_per_cores=2)
    with pytest.raises(DaLifError, match=r"cores_per_chip: must be an integer in \[1, "):
        cost.hardware({"cores_per_chip": 0})
    with pytest.raises(DaLifError, match="finite number"):
        cost.hardware(energy_synop_pj=float("nan"))


def test_a_dense_source_wider_than_the_axon_limit_is_infeasible():
    res = cost.resources(_dense_program(), cost.hardware(axons_in_per_core=4))
    h = _pops(res)["h"]
    assert res["feasible"] is False and h["feasible"] is False
    assert "axons_in" in h["problem"]


def test_energy_is_the_stated_sums():
    hw = cost.Hardware()
    prog = _dense_program()
    rep = cost.cost_report(prog, {"h": np.array([2.0, 0.0, 1.0])},
                           np.array([4.0, 4.0, 0.0, 4.0]), hw)
    act, e = rep["activity"], rep["energy"]
    lo = e["loihi"]
    assert lo["synaptic"] == pytest.approx(42 * 23.6e-3)
    assert lo["neuron"] == pytest.approx((20 * 52 + 3 * (81 - 52)) * 1e-3)
    assert lo["static"] == pytest.approx(0.815 * 2 * act["latency_us"])
    assert lo["total"] == pytest.approx(lo["synaptic"] + lo["neuron"] + lo["messages"]
                                        + lo["static"])
    p = e["paper_45nm"]
    # analog input: the first layer's 12 MACs every step, the 6 spike-driven SynOps accumulate
    assert p["snn"] == pytest.approx((12 * 4 * 4.6 + 6 * 0.9) * 1e-3)
    assert p["spikes_from"] == "fixed-point emulator" and p["snn_fixed_point"] == p["snn"]
    # with the float model's spikes (h: 3 and 1 spikes instead of 2, 0, 1): 4 * 2 SynOps
    rep = cost.cost_report(prog, {"h": np.array([2.0, 0.0, 1.0])},
                           np.array([4.0, 4.0, 0.0, 4.0]), hw,
                           float_spikes={"h": np.array([3.0, 0.0, 1.0])})
    p = rep["energy"]["paper_45nm"]
    assert p["spikes_from"] == "float model" and p["snn_synops"] == 36 + 8
    assert p["snn"] == pytest.approx((12 * 4 * 4.6 + 8 * 0.9) * 1e-3)
    assert p["snn_fixed_point"] == pytest.approx((12 * 4 * 4.6 + 6 * 0.9) * 1e-3)
    assert rep["energy"]["loihi"] == e["loihi"]  # Loihi runs the program: fixed-point spikes
    assert p["ann"] == pytest.approx(18 * 4.6e-3) and e["estimate"] is True


def test_input_spikes_counts_nonzero_values_per_step():
    prog = _dense_program()
    frames = np.broadcast_to(np.array([[3, 0, -1, 0], [0, 0, 2, 0]])[:, None], (2, 4, 4))
    assert cost.input_spikes(prog, frames).tolist() == [2.0, 0.0, 4.0, 0.0]
    assert cost.input_spikes(prog, np.ascontiguousarray(frames)).tolist() == [2.0, 0, 4, 0]


def _two_class_digits(tmp_path, samples: int = 5):
    """The first digits test samples labelled 0..1 (y % 2), for the 2-class test programs here
    (a label the model cannot output is refused)."""
    from dalif_deploy.datasets.loaders import load_dataset

    d = load_dataset("digits", "test")
    path = tmp_path / "two_class.npz"
    np.savez(path, x=d.x[:samples], y=(d.y[:samples] % 2).astype(np.int64), encoding="analog")
    return str(path)


def test_inspect_and_simulate_json_carry_the_cost_keys(tmp_path):
    from dalif_deploy.targets.registry import simulate

    from dalif_deploy.verification.describe import describe

    prog = _conv_program()
    path = tmp_path / "p.fxp"
    save_program(prog, path)
    d = describe(path)
    assert d["resources"]["synapses"] == 200 + 64 and d["resources"]["cores"] == 2
    assert d["nonzero_weights"] == 18 + 64  # kernel entries, kept as before
    path8 = tmp_path / "p8.fxp"
    save_program(_conv_program(n=8), path8)
    r = simulate(str(path8), "emulator", dataset=_two_class_digits(tmp_path), samples=5,
                 progress=False)
    for key in ("resources", "activity", "energy"):
        assert key in r, key
    assert r["activity"]["layers"][0]["spikes"] == pytest.approx(
        np.asarray(r["spike_counts"]).mean(0)[0])



def test_simulate_synops_count_each_neurons_spikes_exactly(tmp_path):
    """A spiking conv layer feeding a conv: border neurons reach fewer synapses, so SynOps
    need per-neuron spike counts (the population's mean fan-out would be off)."""
    from dalif_deploy.targets.emulator import emulate, encode_input
    from dalif_deploy.targets.registry import simulate

    from dalif_deploy.datasets.loaders import load_dataset

    base = _conv_program(n=8)
    c2 = Synapse("conv2", "c", "d", "conv", np.ones((2, 2, 3, 3), np.int64), padding=(1, 1),
                 input_shape=(2, 8, 8), output_shape=(2, 8, 8))
    fc = Synapse("fc", "d", "ro", "dense", np.ones((2, 128), np.int64), input_shape=(2, 8, 8),
                 output_shape=(2,))
    prog = FixedProgram(base.input, [base.populations[0], _pop("d", (2, 8, 8)),
                                     base.populations[1]], [base.synapses[0], c2, fc],
                        base.readout, timesteps=2)
    path = tmp_path / "p.fxp"
    save_program(prog, path)
    r = simulate(str(path), "emulator", dataset=_two_class_digits(tmp_path), samples=5,
                 progress=False)
    x = load_dataset("digits", "test").x[:5]
    rec = emulate(prog, x, record=True)
    per_neuron = {k: rec.spikes[k].sum((0, 1)) / 5 for k in ("c", "d")}
    inputs = cost.input_spikes(prog, encode_input(prog, x))
    exact = cost.activity(prog, per_neuron, inputs)
    mean = cost.activity(prog, {k: float(v.sum()) for k, v in per_neuron.items()}, inputs)
    assert exact["synops"] != pytest.approx(mean["synops"], rel=1e-3)  # the test can tell
    assert r["activity"]["synops"] == pytest.approx(exact["synops"], rel=1e-12)


def test_verify_json_and_report_carry_the_cost_table(tmp_path):
    from dalif_deploy.verification.pipeline import VerifyOptions, verify_checkpoint, write_report

    r, art = verify_checkpoint(CKPT, options=VerifyOptions(lava_samples=0, progress=False))
    for key in ("resources", "activity", "energy"):
        assert key in r, key
    assert r["resources"]["neurons"] == 1546 and r["activity"]["latency_steps"] == 4 + 3
    assert r["energy"]["loihi"]["total"] > 0 and r["energy"]["paper_45nm"]["ann_macs"] == 74816
    # the 45 nm SNN figure papers quote is the float model's; the emulator's is beside it
    paper = r["energy"]["paper_45nm"]
    assert paper["spikes_from"] == "float model"
    float_synops = paper["snn_synops"]
    assert float_synops != r["activity"]["synops"]  # the float and fixed spikes differ a little
    assert paper["snn"] == pytest.approx(paper["snn_first_layer_mac"] + 0.9e-3 * (
        float_synops - r["activity"]["synops_from_input"]))
    assert paper["snn_fixed_point"] == pytest.approx(paper["snn_first_layer_mac"] + 0.9e-3 * (
        r["activity"]["synops"] - r["activity"]["synops_from_input"]))
    write_report(r, art, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "Loihi 2 resources and cost (estimates)" in html and "binding limit" in html


@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_emulator_spike_totals_are_the_recorded_spikes_per_neuron(mode):
    """The per-neuron totals behind exact SynOps equal the recorded spikes summed over samples
    and steps, across batches (5 samples in batches of 2)."""
    from dalif_deploy.targets.emulator import emulate

    prog = _conv_program(n=8)
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    r = emulate(prog, x, record=True, batch_size=2, mode=mode)
    assert set(r.spike_totals) == set(r.spiking) == {"c"}
    assert r.spike_totals["c"].sum() > 0
    assert np.array_equal(r.spike_totals["c"], r.spikes["c"].sum((0, 1), dtype=np.int64))
    assert r.spike_totals["c"].sum() == r.spike_counts.sum()


def test_memory_per_core_by_hand():
    """Split synapses and neuron state divide over a population's cores; a conv kernel is
    held whole on each of them."""
    small = cost.hardware(core_memory_bits=200)
    res = cost.resources(_dense_program(), small)
    h = _pops(res)["h"]
    # h: 3 * 64 + 96 = 288 bits over 200-bit cores -> 2 cores; its dense input synapse,
    # 12 * 8 = 96 bits, split between them
    assert h["cores"] == 2 and h["binding_limit"] == "memory"
    assert h["synaptic_memory_bits_per_core"] == 48
    assert h["memory_bits_per_core"] == (3 * 64 + 96) // 2
    syn = {s["name"]: s for s in res["per_synapse"]}
    assert syn["in"]["memory_bits_per_core"] == 48 and syn["out"]["memory_bits_per_core"] == 48
    res = cost.resources(_conv_program(), cost.hardware(neurons_per_core=16))
    c = _pops(res)["c"]  # 32 neurons on 2 cores, the 18-entry kernel (144 bits) on both
    assert c["cores"] == 2 and c["synaptic_memory_bits_per_core"] == 144
    assert c["memory_bits_per_core"] == 16 * 64 + 144 and c["memory_bits"] == 32 * 64 + 2 * 144
    assert {s["name"]: s for s in res["per_synapse"]}["conv"]["memory_bits_per_core"] == 144
