"""The model zoo and the time-stepping runner."""

import pytest
import torch
from torch import nn

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.float_model.zoo import (
    ZOO_DEFAULTS,
    build_model,
    dalif_layers,
    default_config,
    run_model,
)
from dalif_deploy.neurons import network_step

# (name, config overrides, batch input shape): paper-scale models at a small width
ZOO_CASES = [
    ("digits-cnn", {}, (3, 1, 8, 8)),
    ("digits-resnet", {}, (3, 1, 8, 8)),
    ("digits-cnn", {"granularity": "channel", "input_shape": [2, 8, 8]}, (3, 2, 8, 8)),
    ("resnet19", {"width": 4}, (2, 3, 32, 32)),
    ("vgg11", {"width": 4}, (2, 3, 32, 32)),
    ("digits-rnn", {"width": 12}, (3, 3, 1, 8)),
]


def test_every_zoo_model_has_a_case():
    assert {c[0] for c in ZOO_CASES} == set(ZOO_DEFAULTS)


@pytest.mark.parametrize("name,over,shape", ZOO_CASES)
def test_forward_backward(name, over, shape):
    torch.manual_seed(0)
    model = build_model(default_config(name, **over))
    x = torch.rand(shape) * 2
    logits, spikes = run_model(model, x, 2, record_spikes=True)
    assert logits.shape == (shape[0], 10)
    assert set(spikes) == set(dalif_layers(model))
    for s in spikes.values():
        assert s.shape[:2] == (2, shape[0])
        assert ((s == 0) | (s == 1)).all()
    logits.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # the decays of the first DA-LIF layer get a learning signal
    first = next(iter(dalif_layers(model).values()))
    assert (first.alpha_raw.grad != 0).all() and (first.beta_raw.grad != 0).all()


@pytest.mark.parametrize("neuron", ["dalif", "plif", "lif"])
def test_recurrent_layer_adds_its_previous_spikes(neuron):
    """digits-rnn's layer with any neuron: step t's input is X[t] + W_rec S[t-1] (S[-1] = 0),
    the neuron's own pure step on it; explicit state equals the stateful calls."""
    from dalif_deploy.neurons.protocol import RecurrentState

    torch.manual_seed(0)
    model = build_model(default_config("digits-rnn", width=12, neuron=neuron)).eval()
    lif, x = model.lif1, torch.rand(5, 3, 12) * 2
    state, prev, spikes = lif.neuron.init_state(), torch.zeros(3, 12), []
    with torch.no_grad():
        for t in range(5):
            s, state = lif.neuron.step(state, x[t] + prev @ lif.w_rec.T, lif.params())
            spikes.append(s)
            prev = s
        assert torch.equal(lif.forward_sequence(x), torch.stack(spikes))
        rs = RecurrentState()
        for t in range(5):
            s, rs = lif(x[t], rs)
            assert torch.equal(s, spikes[t]) and torch.equal(rs.spikes, s)
    assert torch.stack(spikes).sum() > 0 and lif.w_rec.abs().sum() > 0
    with pytest.raises(DaLifError, match=r"12 neurons takes flat input \[B, 12\], got "
                                         r"\[3, 2, 6\] \(put it after a Linear\)"):
        lif(torch.zeros(3, 2, 6))


def test_granularity_reaches_every_layer():
    model = build_model(default_config("digits-resnet", granularity="channel"))
    for name, lif in dalif_layers(model).items():
        assert lif.alpha.shape == (lif.channels,), name


def test_digits_resnet_has_identity_and_strided_conv_shortcuts():
    model = build_model(default_config("digits-resnet"))
    blocks = list(model.layers)
    assert isinstance(blocks[0].shortcut, nn.Identity)
    conv = blocks[1].shortcut[0]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert isinstance(model.pool, nn.AvgPool2d)


def test_run_model_is_stateless_between_calls_and_averages_the_readout():
    torch.manual_seed(0)
    model = build_model(default_config("digits-cnn")).eval()
    x = torch.rand(4, 1, 8, 8) * 3
    a, b = run_model(model, x, 4), run_model(model, x, 4)
    assert torch.equal(a, b)  # states are reset at the start and the end
    # readout mean over T, by hand from the recorded last-layer spikes
    _, spikes = run_model(model, x, 4, record_spikes=True)
    by_hand = torch.stack([model.fc(model.flatten(s)) for s in spikes["lif2"]]).mean(0)
    assert torch.allclose(a, by_hand, atol=1e-6)  # summation order of the mean differs
    # spikes recorded as uint8 (verify's float reference) are the same 0/1 spikes
    c, small = run_model(model, x, 4, record_spikes=True, spike_dtype=torch.uint8)
    assert torch.equal(c, a) and small.keys() == spikes.keys()
    assert all(small[k].dtype == torch.uint8 and torch.equal(small[k].float(), spikes[k])
               for k in spikes) and sum(int(s.sum()) for s in small.values()) > 0


def test_event_input_is_indexed_per_step():
    torch.manual_seed(0)
    model = build_model(default_config("digits-cnn", input_shape=[2, 8, 8])).eval()
    x = torch.rand(2, 3, 2, 8, 8) * 4  # strong frames so that spikes occur
    _, spikes = run_model(model, x, 3, "events", record_spikes=True)
    # by hand: step t feeds frame t to the first layer, its state carried across steps
    with torch.no_grad():
        syn = torch.stack([model.bn1(model.conv1(x[:, t])) for t in range(3)])
        expected = model.lif1.forward_sequence(syn)
    assert spikes["lif1"].sum() > 0
    assert torch.equal(spikes["lif1"], expected)
    _, const = run_model(model, x[:, 0], 3, "analog", record_spikes=True)
    assert not torch.equal(const["lif1"], expected)  # the frames really differed
    with pytest.raises(DaLifError, match="T=4"):
        run_model(model, x, 4, "events")
    with pytest.raises(DaLifError, match="encoding"):
        run_model(model, x, 3, "rate")


def test_unknown_models_and_configs_are_refused():
    with pytest.raises(DaLifError, match="unknown model"):
        default_config("alexnet")
    with pytest.raises(DaLifError, match="name"):
        build_model({"width": 3})


def test_network_step_threads_explicit_state_and_leaves_the_model_clean():
    torch.manual_seed(0)
    model = build_model(default_config("digits-cnn")).eval()
    with torch.no_grad():  # strong weights so that the second layer spikes
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    x = torch.rand(3, 1, 8, 8) * 3
    step = network_step(model)
    with torch.no_grad():
        out0, st0 = step(x, None)
        assert set(st0) == set(dalif_layers(model))
        assert all(m.state is None for m in dalif_layers(model).values())
        out1, st1 = step(x, st0)
        again, _ = step(x, st0)  # the same state in gives the same output: nothing hidden
        assert torch.equal(out1, again)
        assert not torch.equal(out0, out1)  # the state really carried something
        ref = run_model(model, x, 2)
    assert torch.equal(ref, (out0 + out1) / 2)
