"""NeuroBench's metrics (dalif_deploy.fixedpoint.neurobench): counts by hand, the real
``neurobench`` package on a zoo network's float model, and the keys verify/simulate report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT

from dalif_deploy.fixedpoint.fxp_format import save_program
from dalif_deploy.fixedpoint.neurobench import neurobench_metrics, nonzero_fan_out
from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
)

CKPT = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


def _pop(name, shape, readout=False):
    return Population(name, shape, dv=np.array([0 if readout else 100]),
                      vth=2**17 - 1 if readout else 10, bias_mant=np.zeros(shape, np.int64))


def test_conv_nonzero_fan_out_by_hand():
    """1 input channel, 4x4, a 3x3 kernel with one zero (centre), pad 1, stride 2: each
    input pixel meets the nonzero taps of the outputs that read it."""
    k = np.ones((1, 1, 3, 3), np.int64)
    k[0, 0, 1, 1] = 0
    s = Synapse("c", "input", "o", "conv", k, stride=(2, 2), padding=(1, 1),
                input_shape=(1, 4, 4), output_shape=(1, 2, 2))
    # outputs at rows 0, 2 read rows (-1,0,1) and (1,2,3): row 0 -> tap 1; row 1 -> taps 2
    # (of out 0) and 0 (of out 1); row 2 -> tap 1; row 3 -> tap 2. Same for columns.
    taps_y = [[1], [2, 0], [1], [2]]
    want = np.array([[sum(1 for ty in taps_y[y] for tx in taps_y[x] if (ty, tx) != (1, 1))
                      for x in range(4)] for y in range(4)])
    assert nonzero_fan_out(s)[0].tolist() == want.tolist()


def test_metrics_of_a_dense_program_by_hand():
    """input (3,) -dense-> h (2,) -dense-> ro (2,), T = 2, events input."""
    w_in = np.array([[1, 0, 2], [0, 0, 3]])
    w_out = np.array([[1, 1], [0, 4]])
    prog = FixedProgram(
        InputEncoding("events", (3,)), [_pop("h", (2,)), _pop("ro", (2,), readout=True)],
        [Synapse("a", "input", "h", "dense", w_in, input_shape=(3,), output_shape=(2,)),
         Synapse("b", "h", "ro", "dense", w_out, input_shape=(2,), output_shape=(2,))],
        Readout("ro", 1.0), timesteps=2)
    nb = neurobench_metrics(prog, {"h": np.array([2.0, 1.0]), "ro": np.array([0.0, 0.0])},
                            np.array([1.0, 2.0, 1.0]))
    # input: 1*1 + 2*0 + 1*2 = 3 (nonzero weights per column 1, 0, 2); h: 2*1 + 1*2 = 4
    assert nb["effective_acs"] == 7 and nb["effective_macs"] == 0
    assert nb["synaptic_operations"] == 7 and nb["dense_synaptic_operations"] == (6 + 4) * 2
    assert nb["activation_sparsity"] == 1 - 3 / (2 * 2)  # the readout is not an activation
    assert nb["connection_sparsity"] == 4 / 10
    assert nb["footprint_bytes"] == -(-(10 * 8 + 4 * 13) // 8)


def test_a_multi_spike_population_sends_macs():
    """The program above with h sending spike counts: its values are counts, not 0/1, so its
    synapse's operations are NeuroBench MACs (one per nonzero value, which is what the
    emulator's spike_totals count for it), the input's stay ACs."""
    w_in = np.array([[1, 0, 2], [0, 0, 3]])
    w_out = np.array([[1, 1], [0, 4]])
    h = _pop("h", (2,))
    h.multi_spike, h.reset, h.vth = True, "subtract", 10
    prog = FixedProgram(
        InputEncoding("events", (3,)), [h, _pop("ro", (2,), readout=True)],
        [Synapse("a", "input", "h", "dense", w_in, input_shape=(3,), output_shape=(2,)),
         Synapse("b", "h", "ro", "dense", w_out, graded=True, input_shape=(2,),
                 output_shape=(2,))],
        Readout("ro", 1.0), timesteps=2)
    nb = neurobench_metrics(prog, {"h": np.array([2.0, 1.0]), "ro": np.array([0.0, 0.0])},
                            np.array([1.0, 2.0, 1.0]))
    assert nb["effective_acs"] == 3 and nb["effective_macs"] == 4


def _digits_float_model(prune: float = 0.3):
    """The shipped digits-cnn float model with its smallest weights zeroed (so the
    connection sparsity and the nonzero fan-out are put to the test)."""
    from dalif_deploy.float_model.loading import load_checkpoint
    from dalif_deploy.float_model.zoo import build_model

    ck = load_checkpoint(CKPT)
    model = build_model(ck.config)
    model.load_state_dict(ck.state_dict)
    model.eval()
    with torch.no_grad():
        for layer in (model.conv2, model.fc) if prune else ():
            w = layer.weight
            w[w.abs() < w.abs().flatten().kthvalue(int(prune * w.numel())).values] = 0
    return model, ck.timesteps


def _program_of(model) -> FixedProgram:
    """The synapses of DigitsCNN as the converter lays them out, with the float weights'
    zero pattern (BN folding scales weights, it keeps their zeros)."""
    def nz(layer):
        return (layer.weight.detach().numpy() != 0).astype(np.int64)

    return FixedProgram(
        InputEncoding("analog", (1, 8, 8), scale=16.0),
        [_pop("lif1", (16, 8, 8)), _pop("lif2", (32, 4, 4)), _pop("ro", (10,), readout=True)],
        [Synapse("conv1", "input", "lif1", "conv", nz(model.conv1), graded=True, padding=(1, 1),
                 input_shape=(1, 8, 8), output_shape=(16, 8, 8)),
         Synapse("conv2", "lif1", "lif2", "conv", nz(model.conv2), stride=(2, 2),
                 padding=(1, 1), input_shape=(16, 8, 8), output_shape=(32, 4, 4)),
         Synapse("fc", "lif2", "ro", "dense", nz(model.fc), input_shape=(32, 4, 4),
                 output_shape=(10,))],
        Readout("ro", 1.0), timesteps=4)


def test_the_real_neurobench_gives_the_same_numbers_on_the_float_model():
    """NeuroBench 2.3.0's Benchmark on the float digits-cnn (its hooks on Conv2d/Linear and
    on our neuron layers) against ours from the same float spikes on the program's synapses."""
    pytest.importorskip("neurobench", reason="neurobench is a test-only dependency (make test "
                        "installs it with --no-deps)")
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import TorchModel

    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.fixedpoint.neurobench import (
        torch_connection_sparsity,
        torch_footprint_bytes,
    )
    from dalif_deploy.float_model.zoo import run_model
    from dalif_deploy.neurons.protocol import NeuronModule

    model, T = _digits_float_model()
    x = torch.from_numpy(load_dataset("digits", "test").x[:48]).float()
    y = torch.zeros(len(x), dtype=torch.long)

    class Unrolled(torch.nn.Module):  # NeuroBench calls net(batch): our T-step runner
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, batch):
            return run_model(self.net, batch, T)

    nb_model = TorchModel(Unrolled(model))
    nb_model.add_activation_module(NeuronModule)  # our neuron layers are its activations
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=len(x))
    with torch.no_grad():
        theirs = Benchmark(nb_model, loader, [], [], [[Footprint, ConnectionSparsity],
                           [SynapticOperations, ActivationSparsity]]).run(quiet=True)
        _, spikes = run_model(model, x, T, record_spikes=True)
    per_sample = {k: v.sum((0, 1)).numpy().astype(np.float64) / len(x)
                  for k, v in spikes.items()}
    inputs = np.count_nonzero(x.numpy(), axis=0) * T / len(x)
    ours = neurobench_metrics(_program_of(model), per_sample, inputs, spikes_from="float model")
    ops = theirs["SynapticOperations"]
    assert ops["Effective_MACs"] > 0 and ops["Effective_ACs"] > 0  # both kinds are exercised
    # float64 sums of integer counts over 48: exact to rounding of the last division
    assert ours["effective_macs"] == pytest.approx(ops["Effective_MACs"], rel=1e-12)
    assert ours["effective_acs"] == pytest.approx(ops["Effective_ACs"], rel=1e-12)
    assert ours["dense_synaptic_operations"] == pytest.approx(ops["Dense"], rel=1e-12)
    assert ours["activation_sparsity"] == pytest.approx(theirs["ActivationSparsity"], rel=1e-12)
    assert round(ours["connection_sparsity"], 4) == theirs["ConnectionSparsity"] > 0
    assert round(torch_connection_sparsity(model), 4) == theirs["ConnectionSparsity"]
    assert torch_footprint_bytes(model) == theirs["Footprint"]


@pytest.mark.parametrize("prune", [0.0, 0.3])
def test_simulate_emulator_reports_neurobench_beside_the_loihi_synops(tmp_path, prune):
    """From the same emulator spikes: with no zero weight the effective operations are the
    Loihi SynOps; with zero weights fewer (Loihi visits every stored dense/conv synapse)."""
    from dalif_deploy.targets.registry import simulate

    model, _ = _digits_float_model(prune=prune)
    path = tmp_path / "p.fxp"
    save_program(_program_of(model), path)
    r = simulate(str(path), "emulator", dataset="digits", samples=5, progress=False)
    nb, act = r["neurobench"], r["activity"]
    assert nb["loihi_synops"] == act["synops"]
    assert nb["spikes_from"] == "fixed-point emulator" and nb["definitions"] == "NeuroBench 2.3.0"
    # the analog first layer is MACs, every synapse of a spiking source ACs
    assert nb["effective_macs"] == pytest.approx(act["synops_from_input"], rel=1e-12)
    assert nb["effective_acs"] > 0
    if prune:
        assert nb["synaptic_operations"] < act["synops"] and nb["connection_sparsity"] > 0
    else:
        assert nb["synaptic_operations"] == pytest.approx(act["synops"], rel=1e-12)


def test_verify_json_and_report_carry_the_neurobench_metrics(tmp_path):
    from dalif_deploy.verification.pipeline import VerifyOptions, verify_checkpoint, write_report

    r, art = verify_checkpoint(CKPT, options=VerifyOptions(lava_samples=0, progress=False))
    nb = r["neurobench"]
    assert nb["loihi_synops"] == r["activity"]["synops"]
    fl = nb["float_model"]
    assert fl["spikes_from"] == "float model" and fl["footprint_bytes"] > 0
    assert fl["effective_acs"] != nb["effective_acs"]  # the float and fixed spikes differ
    write_report(r, art, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "NeuroBench 2.3.0 definitions" in html and "effective ACs / sample" in html
