"""The baseline neurons beside DA-LIF: PLIF (one learnable decay) and LIF (a fixed decay).

Their exact float equations, their NIR mapping (and what it refuses), their zoo config keys,
and each neuron end to end on a tiny trained model: float vs NIR vs fixed point, the NIR round
trip exact, Lava bit-exact with the emulator (marked ``lava``). The protocol contract over every
registered model (pure step, explicit state, round trip) is in test_neuron.py.
"""

from __future__ import annotations

import dataclasses

import nir
import numpy as np
import pytest
import torch
from dalif_deploy.converters.ir.neuron_math import lif_as_dalif
from helpers.nir_helpers import assert_accuracies_agree_up_to_ties, away_from_ties

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import build_parser, main
from dalif_deploy.float_model.checkpoint import save_checkpoint
from dalif_deploy.float_model.loading import load_model
from dalif_deploy.float_model.training import train
from dalif_deploy.float_model.zoo import build_model, default_config
from dalif_deploy.neurons import fixed_params, neuron_for_key, neuron_keys, neuron_layers
from dalif_deploy.neurons.dalif import DALIF, DaLifParams
from dalif_deploy.neurons.lif import LIF, LIF_NEURON, LifParams
from dalif_deploy.neurons.plif import PLIF, PLIF_NEURON
from dalif_deploy.verification.pipeline import VerifyOptions, export_round_trip, verify_model

# decay 0.5 and input gain 0.5, v_th = 1: every value is exact in binary floating point.
X_SEQ = [1.0, 1.5, 2.0, 1.0, 1.0, 1.0]
V_EXPECTED = [0.5, 1.0, 1.0, 0.5, 0.75, 0.875]  # V = 0.5 H + 0.5 X, hard reset on V >= 1
S_EXPECTED = [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("layer", [PLIF(init_tau=2.0), LIF(tau=2.0)], ids=["plif", "lif"])
def test_k_one_half_follows_the_hand_computed_sequence_exactly(layer):
    state, vs, ss = None, [], []
    with torch.no_grad():
        for x in X_SEQ:
            s, state = layer(torch.tensor([x]), state)
            vs.append(float(state.v))
            ss.append(float(s))
            assert float(state.h) == (0.0 if float(s) else float(state.v))  # hard reset to 0
    assert vs == V_EXPECTED and ss == S_EXPECTED


def test_plif_is_dalif_with_alpha_k_and_beta_one_minus_k_tied():
    plif = PLIF(channels=3, granularity="channel", v_th=0.6)
    with torch.no_grad():
        plif.k_raw.copy_(torch.tensor([-1.2, 0.1, 1.7]))
    k = plif.k.detach()
    dalif = DALIF(channels=3, granularity="channel", v_th=0.6)
    x = torch.rand(8, 4, 3, 5, generator=torch.Generator().manual_seed(0)) * 2
    with fixed_params(torch.nn.ModuleDict({"d": dalif}), {"d": DaLifParams(k, 1 - k, 0.6)}):
        want = dalif.forward_sequence(x)
    got = plif.forward_sequence(x)
    assert 0 < got.mean() < 1 and torch.equal(got, want)


def test_plif_learns_its_decay_and_lif_has_nothing_to_learn():
    plif = PLIF(init_tau=4.0)
    assert torch.allclose(plif.k, torch.tensor(0.25))  # k = 1/init_tau
    plif.forward_sequence(torch.rand(4, 2, 6) * 3).sum().backward()
    assert plif.k_raw.grad is not None and plif.k_raw.grad != 0
    assert not list(LIF(tau=3.0).parameters())
    assert PLIF(channels=5, granularity="channel").k.shape == (5,)


@pytest.mark.parametrize("make,match", [
    (lambda: PLIF(init_tau=1.0), "init_tau must be a finite number > 1"),
    (lambda: PLIF(init_tau=float("nan")), "init_tau"),
    (lambda: PLIF(granularity="channel"), "needs the number of channels"),
    (lambda: LIF(tau=0.5), "tau must be a finite number >= 1"),
    (lambda: LIF(tau=float("inf")), "tau must be a finite number >= 1"),
    (lambda: LifParams(tau="2"), "tau must be a finite number >= 1"),
])
def test_bad_settings_are_refused(make, match):
    with pytest.raises(DaLifError, match=match):
        make()


def test_nir_mapping_is_a_lif_with_r_one_read_as_tied_dalif():
    plif = PLIF(channels=3, granularity="channel", v_th=0.75)
    with torch.no_grad():
        plif.k_raw.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    node = PLIF_NEURON.to_nir(plif.params(), (3, 2), "p")
    k = plif.k.detach().double().numpy().reshape(3, 1)
    np.testing.assert_array_equal(node.tau, np.broadcast_to(1 / k, (3, 2)))
    assert (node.r == 1).all() and (node.v_threshold == 0.75).all()
    assert node.metadata["neuron_model"] == "PLIF" and node.metadata["spike_condition"] == ">="
    reading = lif_as_dalif("p", node, (3, 2), 1.0)  # what the quantiser sees
    np.testing.assert_allclose(reading["alpha"], np.broadcast_to(k, (3, 2)), rtol=1e-15)
    np.testing.assert_allclose(reading["beta_c"].reshape(3, 1), 1 - k, rtol=1e-15)
    assert reading["cond"] == ">="

    lif_node = LIF_NEURON.to_nir(LifParams(tau=3.0, v_th=0.5), (4,), "l")
    assert (lif_node.tau == 3.0).all() and (lif_node.r == 1).all()
    assert LIF_NEURON.from_nir(lif_node, "l") == LifParams(tau=3.0, v_th=0.5)


def test_nir_nodes_a_baseline_cannot_be_are_refused():
    dalif_like = nir.LIF(tau=np.full(4, 2.0), r=np.full(4, 1.4), v_leak=np.zeros(4),
                         v_reset=np.zeros(4), v_threshold=np.ones(4))
    for neuron in (PLIF_NEURON, LIF_NEURON):
        with pytest.raises(DaLifError, match="r != 1"):
            neuron.from_nir(dalif_like, "x")
    mixed = nir.LIF(tau=np.array([2.0, 2.0, 3.0, 2.0]), r=np.ones(4), v_leak=np.zeros(4),
                    v_reset=np.zeros(4), v_threshold=np.ones(4))
    with pytest.raises(DaLifError, match="tau varies within a layer"):
        LIF_NEURON.from_nir(mixed, "x")
    with pytest.raises(DaLifError, match="0 < k <= 1"):
        PLIF_NEURON.to_nir(dataclasses.replace(PLIF().params(), k=torch.tensor(0.0)), (4,))
    with pytest.raises(DaLifError, match="a PLIF layer is a nir.LIF"):
        PLIF_NEURON.from_nir(nir.IF(r=np.ones(4), v_threshold=np.ones(4),
                                    v_reset=np.zeros(4)), "x")


# ---------------------------------------------------------------------------------------------
# Zoo configs and checkpoints.


def test_config_neuron_key_builds_that_neuron_and_counts_its_parameters():
    counts = {}
    for key in neuron_keys():
        model = build_model(default_config("digits-cnn", neuron=key, width=4))
        layers = neuron_layers(model)
        assert {type(m) for m in layers.values()} == {neuron_for_key(key).module_type}
        counts[key] = sum(p.numel() for p in model.parameters())
    assert counts["dalif"] == counts["lif"] + 2 * 2  # alpha and beta per layer, 2 layers
    assert counts["plif"] == counts["lif"] + 2  # one k per layer
    chan = build_model(default_config("digits-cnn", neuron="plif", width=4,
                                      granularity="channel"))
    assert sum(p.numel() for p in chan.parameters()) == counts["lif"] + 4 + 8  # per channel
    assert default_config("digits-cnn")["neuron"] == "dalif"  # configs without it: DA-LIF
    assert default_config("digits-cnn", neuron="lif", tau=4.0)["tau"] == 4.0


@pytest.mark.parametrize("over,match", [
    ({"neuron": "lif", "granularity": "channel"}, "granularity not a setting of neuron 'lif'"),
    ({"neuron": "plif", "init_alpha": 0.3}, "init_alpha not a setting of neuron 'plif'"),
    ({"neuron": "dalif", "tau": 2.0}, "tau not a setting of neuron 'dalif'"),
    ({"neuron": "izhikevich"}, "neuron: must be one of"),
    ({"neuron": 3}, "neuron"),
    ({"neuron": "lif", "tau": 0.5}, "tau: must be a finite number in"),
    ({"neuron": "plif", "init_tau": 1.0}, "init_tau: must be a finite number in"),
])
def test_config_refuses_settings_of_another_neuron_and_bad_values(over, match):
    with pytest.raises(DaLifError, match=match):
        default_config("digits-cnn", **over)


def test_checkpoint_keeps_the_neuron_and_an_old_config_means_dalif(tmp_path):
    cfg = default_config("digits-cnn", neuron="plif", width=4, input_shape=[2, 8, 8])
    model = build_model(cfg)
    with torch.no_grad():
        model.lif1.k_raw.fill_(0.7)
    save_checkpoint(tmp_path / "p.pt", model, cfg, 2, {"name": "digits-events"}, {})
    back, ckpt = load_model(tmp_path / "p.pt")
    assert ckpt.config["neuron"] == "plif" and isinstance(back.lif1, PLIF)
    assert torch.equal(back.lif1.k, model.lif1.k)
    old = {k: v for k, v in default_config("digits-cnn", width=4).items() if k != "neuron"}
    assert isinstance(build_model(old).lif1, DALIF)


def test_train_cli_offers_every_registered_neuron_and_refuses_foreign_options(tmp_path,
                                                                              capsys):
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    train_parser.format_usage()  # its arguments are added when it is first used
    choices = next(a.choices for a in train_parser._actions if a.dest == "neuron")
    assert tuple(choices) == neuron_keys()
    rc = main(["train", "--model", "digits-cnn", "--dataset", "digits-events", "--neuron",
               "lif", "--granularity", "channel", "-o", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "granularity" in err
    assert not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------------------------------------
# End to end on a tiny trained model: float -> NIR -> fixed point (-> Lava).


@pytest.fixture(scope="module")
def trained():
    """A tiny digits-cnn per neuron, trained one epoch on digits-events (T = 2)."""
    from dalif_deploy.datasets.loaders import load_dataset

    test = load_dataset("digits-events", "test", timesteps=2).head(96)
    calib = load_dataset("digits-events", "train", timesteps=2).head(64)
    out = {}
    for key in [*neuron_keys(), "dalif-subtract"]:
        extra = {"reset": "subtract"} if key.endswith("-subtract") else {}
        cfg = default_config("digits-cnn", neuron=key.split("-")[0], width=4, v_th=0.5,
                             input_shape=[2, 8, 8], **extra)
        model, _ = train(cfg,
                         "digits-events", epochs=1, timesteps=2, progress=False)
        out[key] = model
    return out, test, calib


@pytest.mark.parametrize("key", ["dalif", "plif", "lif", "dalif-subtract"])
def test_each_neuron_end_to_end_float_nir_fixed(trained, key, tmp_path):
    """Float vs NIR vs fixed point per neuron; a DA-LIF trained with ``--reset subtract``
    exports its reset (node metadata ``reset_mode``) and deploys as ``subtract`` populations
    firing on ``>=``."""
    models, test, calib = trained
    model = models[key]
    opt = VerifyOptions(lava_samples=0, progress=False, workdir=tmp_path)
    graph = export_round_trip(model, test, 2, "digits-cnn", None, opt)
    for name, layer in neuron_layers(model).items():  # the NIR round trip is exact
        back = layer.neuron.from_nir(graph.nodes[name], name)
        want = layer.params()
        for f in dataclasses.fields(want):
            a, b = getattr(want, f.name), getattr(back, f.name)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, (name, f.name)
    if key == "dalif-subtract":
        assert {graph.nodes[n].metadata["reset_mode"] for n in neuron_layers(model)} == {
            "subtract"}
    result, artefacts = verify_model(model, test, calib.x, 2, options=opt)
    spiking = artefacts["program"].populations[:-1]
    assert {(p.reset, p.spike_rule) for p in spiking} == {
        ("subtract" if key.endswith("subtract") else "zero", ">=")}
    # float32 on both sides: only spikes sitting exactly at threshold after batch-norm folding
    # may differ (docs/MEASURED.md), so predictions may differ only on those samples
    near = away_from_ties(model, torch.from_numpy(test.x), 2, "events")[1]
    assert_accuracies_agree_up_to_ties(result["nir_accuracy"], result["float_accuracy"],
                                       len(test.y), near)
    assert result["fixed_accuracy"] is not None
    assert result["prediction_agreement"] >= 0.85  # 8-bit weights on a one-epoch model
    assert all(row["spike_agreement"] >= 0.97 for row in result["layers"])
    assert result["activity"]["synops"] > 0


@pytest.mark.lava
@pytest.mark.parametrize("key", ["plif", "lif", "dalif-subtract"])
def test_baseline_neurons_on_lava_are_bit_exact_with_the_emulator(trained, key, tmp_path):
    models, test, calib = trained
    # the timeout is a safety net only (a loaded machine must not reach it)
    opt = VerifyOptions(lava_samples=2, progress=False, workdir=tmp_path, timeout=600)
    result, _ = verify_model(models[key], test.head(2), calib.x, 2, options=opt)
    assert result["lava_error"] is None and result["lava_bit_exact"] is True
