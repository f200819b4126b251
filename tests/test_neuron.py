"""The DA-LIF neuron: exact float semantics, parametrisations, granularity, gradients."""

import math

import pytest
import torch

from dalif_deploy.errors import DaLifError
from dalif_deploy.neuron import PARAMETRIZATIONS, SURROGATES, spike
from dalif_deploy.neurons import reset_states
from dalif_deploy.neurons.dalif import DALIF, dalif_step

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
