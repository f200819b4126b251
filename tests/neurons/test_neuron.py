"""The DA-LIF neuron: exact float semantics, parametrisations, granularity, gradients; and the
neuron protocol's contract over every registered model (DA-LIF, PLIF, LIF)."""

import dataclasses
import math

import nir
import numpy as np
import pytest
import torch
from torch import nn

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.neurons import NEURONS, fixed_params, get_neuron, reset_states
from dalif_deploy.neurons.dalif import DALIF, DALIF_NEURON, dalif_step
from dalif_deploy.neurons.lif import LIF
from dalif_deploy.neurons.plif import PLIF
from dalif_deploy.neurons.protocol import PARAMETRIZATIONS, SURROGATES, spike

# alpha = beta = 0.5, v_th = 1: every value below is exact in binary floating point.
X_SEQ = [1.0, 1.5, 2.0, 1.0, 1.0, 1.0]
# V[t] = 0.5 H[t-1] + 0.5 X[t];  S = V >= 1;  H = V (1 - S)
V_EXPECTED = [0.5, 1.0, 1.0, 0.5, 0.75, 0.875]
#   t0: 0.5            no spike, H = 0.5
#   t1: 0.25 + 0.75 = 1.0   spike on the >= boundary, H reset to 0
#   t2: 0 + 1.0 = 1.0       spike again (the reset left nothing behind), H = 0
#   t3: 0 + 0.5 = 0.5       H = 0.5
#   t4: 0.25 + 0.5 = 0.75   H = 0.75
#   t5: 0.375 + 0.5 = 0.875 below threshold
S_EXPECTED = [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_dalif_step_matches_hand_computed_sequence_exactly():
    a, b = torch.tensor(0.5), torch.tensor(0.5)
    h = None
    vs, ss = [], []
    for x in X_SEQ:
        s, h, v = dalif_step(torch.tensor([x]), h, a, b, 1.0)
        vs.append(float(v))
        ss.append(float(s))
        # hard reset: H is exactly 0 after a spike, else exactly V
        assert float(h) == (0.0 if float(s) else float(v))
    assert vs == V_EXPECTED
    assert ss == S_EXPECTED


def test_threshold_is_inclusive_and_just_below_does_not_fire():
    one = torch.tensor(1.0)
    below = torch.nextafter(one, torch.tensor(0.0))
    s, _, _ = dalif_step(torch.stack([one, below]), None, torch.tensor(1.0), torch.tensor(0.0), 1.0)
    assert s.tolist() == [1.0, 0.0]


def _layer(alpha, beta, **kw):
    lif = DALIF(**kw)
    with torch.no_grad():
        p = PARAMETRIZATIONS[lif.parametrization]
        lif.alpha_raw.fill_(p.inverse(alpha))
        lif.beta_raw.fill_(p.inverse(beta))
    return lif


@pytest.mark.parametrize("param", sorted(PARAMETRIZATIONS))
def test_module_conventions_agree(param):
    """forward_sequence, the functional step and the stateful call give identical spikes."""
    torch.manual_seed(0)
    lif = _layer(0.7, 0.6, parametrization=param)
    x = torch.rand(5, 3, 4) * 2
    seq = lif.forward_sequence(x)
    state, funct, stateful = None, [], []
    for xt in x:
        s, state = lif(xt, state)
        funct.append(s)
        stateful.append(lif(xt))
    assert torch.equal(seq, torch.stack(funct))
    assert torch.equal(seq, torch.stack(stateful))
    # and against dalif_step with the effective decays
    h, ref = None, []
    for xt in x:
        s, h, _ = dalif_step(xt, h, lif.alpha, lif.beta, lif.v_th)
        ref.append(s)
    assert torch.equal(seq, torch.stack(ref))
    reset_states(lif)
    assert lif.state is None


@pytest.mark.parametrize("param", sorted(PARAMETRIZATIONS))
def test_parametrisation_initialises_effective_decays(param):
    lif = DALIF(init_alpha=0.3, init_beta=0.8, parametrization=param)
    assert lif.alpha.item() == pytest.approx(0.3, abs=1e-6)  # float32 round trip of inverse
    assert lif.beta.item() == pytest.approx(0.8, abs=1e-6)
    expected = {"tanh": math.tanh, "sigmoid": lambda w: 1 / (1 + math.exp(-w))}[param]
    assert lif.alpha.item() == pytest.approx(expected(lif.alpha_raw.item()), abs=1e-6)


def test_granularity_shapes_and_per_channel_broadcast():
    assert DALIF().alpha.shape == ()
    ch = DALIF(channels=3, granularity="channel")
    assert ch.alpha.shape == (3,) and ch.beta.shape == (3,)
    with torch.no_grad():
        ch.alpha_raw.copy_(torch.atanh(torch.tensor([0.25, 0.5, 0.75])))
    x = torch.ones(4, 2, 3, 5, 5)  # [T, B, C, H, W]
    out = ch.forward_sequence(x)
    assert out.shape == x.shape
    # each channel behaves like a per-layer neuron with that channel's decays
    for c in range(3):
        h, ref = None, []
        for xt in x[:, :, c]:
            s, h, _ = dalif_step(xt, h, ch.alpha[c], ch.beta[c], 1.0)
            ref.append(s)
        assert torch.equal(out[:, :, c], torch.stack(ref))


def test_bad_configurations_are_refused():
    with pytest.raises(DaLifError, match="channels"):
        DALIF(granularity="channel")
    with pytest.raises(DaLifError, match="granularity"):
        DALIF(granularity="neuron")
    with pytest.raises(DaLifError, match="parametrisation"):
        DALIF(parametrization="relu")
    with pytest.raises(DaLifError, match="surrogate"):
        DALIF(surrogate="nope")
    with pytest.raises(DaLifError, match="init_beta"):
        DALIF(init_beta=1.0)
    with pytest.raises(DaLifError, match="4 channels"):
        DALIF(channels=4, granularity="channel")(torch.ones(2, 3, 5))


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("param", sorted(PARAMETRIZATIONS))
def test_gradients_reach_alpha_and_beta(granularity, param):
    torch.manual_seed(1)
    lif = DALIF(channels=3, granularity=granularity, parametrization=param)
    x = torch.rand(4, 2, 3, 6) * 3
    lif.forward_sequence(x).sum().backward()
    for p in (lif.alpha_raw, lif.beta_raw):
        assert p.grad is not None and p.grad.shape == p.shape
        assert torch.isfinite(p.grad).all() and (p.grad != 0).all()


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_forward_is_heaviside_and_backward_is_named_derivative(name):
    x = torch.tensor([-0.3, 0.0, 0.1], requires_grad=True)
    s = spike(x, name, 2.0)
    assert s.tolist() == [0.0, 1.0, 1.0]
    s.sum().backward()
    assert torch.allclose(x.grad, SURROGATES[name](x.detach(), 2.0))
    assert x.grad[1] > 0  # the surrogate is non-zero at the threshold


# ---------------------------------------------------------------------------------------------
# The neuron protocol: one contract over every registered neuron model.


def _dalif_channel() -> DALIF:
    lif = DALIF(channels=3, granularity="channel", v_th=0.75)
    with torch.no_grad():
        lif.alpha_raw.copy_(torch.atanh(torch.tensor([0.3, 0.6, 0.9])))
        lif.beta_raw.copy_(torch.atanh(torch.tensor([0.2, 0.5, 0.8])))
    return lif


def _plif(k, **kw) -> PLIF:
    lif = PLIF(**kw)
    with torch.no_grad():
        lif.k_raw.copy_(torch.logit(torch.tensor(k)))
    return lif


#: registered name -> {case id: a layer with non-trivial parameters for input [B, 3, 4, 5]}
CASES = {
    "DA-LIF": {"layer": lambda: _layer(0.7, 0.6), "channel": _dalif_channel},
    "PLIF": {"layer": lambda: _plif(0.6),
             "channel": lambda: _plif([0.3, 0.6, 0.9], channels=3, granularity="channel",
                                      v_th=0.75)},
    "LIF": {"tau2": lambda: LIF(), "tau3": lambda: LIF(tau=3.0, v_th=0.75)},
}
CONTRACT = [(name, case) for name in sorted(CASES) for case in sorted(CASES[name])]


def _input(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(6, 2, 3, 4, 5, generator=gen) * 2  # [T, B, C, H, W]


def test_every_registered_neuron_has_contract_cases():
    assert set(CASES) == set(NEURONS)
    assert get_neuron("DA-LIF") is DALIF_NEURON
    with pytest.raises(DaLifError, match="unknown neuron model 'Izhikevich'"):
        get_neuron("Izhikevich")


@pytest.mark.parametrize("name,case", CONTRACT)
def test_pure_step_equals_the_module(name, case):
    neuron, layer = NEURONS[name], CASES[name][case]()
    assert isinstance(layer, neuron.module_type) and layer.neuron is neuron
    x = _input()
    state, pure = neuron.init_state(), []
    for xt in x:
        s, state = neuron.step(state, xt, layer.params())
        pure.append(s)
    pure = torch.stack(pure)
    assert 0 < pure.mean() < 1  # spikes and silence both occur: the comparison can fail
    assert torch.equal(pure, layer.forward_sequence(x))
    layer.reset_state()
    assert torch.equal(pure, torch.stack([layer(xt) for xt in x]))  # single-step calls


@pytest.mark.parametrize("name,case", CONTRACT)
def test_explicit_state_is_a_value_and_the_step_is_pure(name, case):
    neuron, layer = NEURONS[name], CASES[name][case]()
    x = _input(1)
    s0, st0 = layer(x[0], None)
    assert layer.state is None  # an explicit call leaves the module as it was
    assert dataclasses.is_dataclass(st0) and dataclasses.is_dataclass(layer.params())
    s1, st1 = layer(x[1], st0)
    again, st1b = neuron.step(st0, x[1], layer.params())  # same state in, same values out
    assert torch.equal(s1, again)
    for f in dataclasses.fields(st1):
        a, b = getattr(st1, f.name), getattr(st1b, f.name)
        assert (a is None and b is None) or torch.equal(a, b), f.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        st0.h = None  # states cannot be changed behind the step's back


@pytest.mark.parametrize("name,case", CONTRACT)
def test_nir_mapping_round_trip(name, case):
    neuron, layer = NEURONS[name], CASES[name][case]()
    params = layer.params()
    node = neuron.to_nir(params, (3, 4, 5), "lif")
    assert node.metadata["neuron_model"] == name
    back = neuron.from_nir(node, "lif")
    assert type(back) is type(params)
    for f in dataclasses.fields(params):
        a, b = getattr(params, f.name), getattr(back, f.name)
        if isinstance(a, torch.Tensor):
            assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b), f.name
        else:
            assert a == b, f.name


def test_dalif_nir_mapping_follows_the_design_and_refuses_other_lifs():
    lif = _dalif_channel()
    node = DALIF_NEURON.to_nir(lif.params(), (3, 2), "lif")
    beta = lif.beta.detach().double().reshape(3, 1)
    np.testing.assert_allclose(node.tau, np.broadcast_to(1 / (1 - beta.numpy()), (3, 2)))
    np.testing.assert_allclose(node.r, np.broadcast_to(
        (lif.alpha.detach().double().reshape(3, 1) / (1 - beta)).numpy(), (3, 2)))
    assert (node.v_threshold == 0.75).all() and not node.v_leak.any() and not node.v_reset.any()
    leaky = nir.LIF(tau=node.tau, r=node.r, v_leak=np.full((3, 2), 0.1), v_reset=node.v_reset,
                    v_threshold=node.v_threshold)
    with pytest.raises(DaLifError, match="v_leak != 0"):
        DALIF_NEURON.from_nir(leaky, "foreign")
    strict = nir.LIF(tau=node.tau, r=node.r, v_leak=node.v_leak, v_reset=node.v_reset,
                     v_threshold=node.v_threshold, metadata={"spike_condition": ">"})
    with pytest.raises(DaLifError, match="fires on >"):
        DALIF_NEURON.from_nir(strict, "foreign")
    mixed = nir.LIF(tau=node.tau * np.array([[1.0, 2.0]]), r=node.r, v_leak=node.v_leak,
                    v_reset=node.v_reset, v_threshold=node.v_threshold,
                    metadata={"granularity": "channel"})
    with pytest.raises(DaLifError, match="varies within a channel"):
        DALIF_NEURON.from_nir(mixed, "foreign")


def test_fixed_params_replace_the_effective_ones_and_are_cleared():
    model = nn.Sequential(_layer(0.5, 0.5))
    x = torch.full((1, 4), 1.5)
    assert model(x).eq(0).all()  # V = 0.75 < 1
    model[0].reset_state()
    frozen = dataclasses.replace(model[0].params(), alpha=torch.tensor(1.0))
    with fixed_params(model, {"0": frozen}):
        assert model(x).eq(1).all()  # V = 1.5
    assert model[0].fixed_params is None
    with pytest.raises(DaLifError, match="not neuron layers"):
        with fixed_params(model, {"1": frozen}):
            pass


@pytest.mark.parametrize("per_channel", [False, True])
def test_inference_steps_in_place_give_the_autograd_steps_values_bit_for_bit(per_channel):
    """Without autograd, integrate and fire work in place in fresh tensors (fewer of them); the
    values, spikes, resets (to 0 and to a reset value), NaN and a threshold tie included, are
    identical to the autograd path's, which training runs."""
    from dalif_deploy.neurons.protocol import fire, integrate

    g = torch.Generator().manual_seed(7)
    shape = (3, 4, 5, 5)
    x, h = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    x[0, 0, 0, :2] = torch.tensor([float("nan"), 0.0])
    view = (1, 4, 1, 1) if per_channel else ()
    a = torch.rand(view, generator=g) + 0.5
    b = torch.rand(view, generator=g)
    th = torch.full(view, 0.25)
    leak = torch.randn(shape[1:], generator=g)
    results = []
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            xs = x.clone().requires_grad_(grad)
            v = integrate(xs, h, b, a, leak)
            v[0, 1, 0, :3] = torch.tensor([0.25, 0.2499999, -0.0])  # a tie at the threshold
            clean = v.detach().nan_to_num(0.0)  # no NaN: a +0.0 reset may be a product
            hot = clean.clone()
            hot[0, 2, 0, 0] = float("inf")  # inf * 0 is NaN: the reset must stay where()'s
            resets = [fire(u, t, torch.full(view, r)) for u in (v, clean, hot)
                      for t in (th, -th) for r in (-0.5, 0.0, -0.0)]
            results.append([t.detach() for t in (v, *fire(v, th), *sum(resets, ()))])
    for got, want in zip(results[1], results[0], strict=True):
        assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
        assert torch.equal(got.isnan(), want.isnan())
    assert 0 < int(results[1][1].sum()) < x.numel()
    from dalif_deploy.neurons.protocol import _zero_reset_is_a_product as product
    v = results[1][0].nan_to_num(0.0)
    s = (v - th).ge_(0)
    zero = torch.zeros(())
    assert product(v, s, th, zero)  # the fast path is the one compared above
    assert not product(v, s, th, torch.tensor(-0.0)) and not product(v, s, -th, zero)
    assert not product(results[1][0], s, th, zero)  # NaN
    with torch.no_grad(), pytest.raises(DaLifError, match="surrogate"):
        fire(x, th, surrogate="nope")
