"""The one float time loop (dalif_deploy/float_model/unroll.py) against a hand-written loop."""

import pytest
import torch

from dalif_deploy.base.encoding import ANALOG, EVENTS
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.float_model.unroll import unroll


def _leaky_sum(x: torch.Tensor, state: torch.Tensor | None):
    """A stateful step whose output depends on the whole input history."""
    state = x if state is None else 0.5 * state + x
    return state * 3.0, state


@pytest.mark.parametrize("encoding", [ANALOG, EVENTS, "analog", "events"])
def test_unroll_equals_a_hand_loop(encoding):
    gen = torch.Generator().manual_seed(0)
    events = encoding in (EVENTS, "events")
    x = torch.rand((4, 5, 3) if events else (4, 3), generator=gen)
    T = 5
    state, total = None, None
    for t in range(T):
        out, state = _leaky_sum(x[:, t] if events else x, state)
        total = out if total is None else total + out
    expected = total / T
    got = unroll(_leaky_sum, x, T, encoding)
    assert torch.equal(got, expected)  # same additions in the same order: same bits
    if events:  # the frames really differ: feeding frame 0 every step gives another result
        assert not torch.equal(got, unroll(_leaky_sum, x[:, 0], T, ANALOG))


def test_unroll_starts_from_the_given_state_and_refuses_unknown_encodings():
    x = torch.ones(2, 3)
    start = torch.full((2, 3), 4.0)
    # step 0: 0.5*4 + 1 = 3 -> out 9; step 1: 0.5*3 + 1 = 2.5 -> out 7.5; mean 8.25
    assert torch.equal(unroll(_leaky_sum, x, 2, ANALOG, start), torch.full((2, 3), 8.25))
    with pytest.raises(DaLifError, match="encoding must be 'analog' or 'events', not 'rate'"):
        unroll(_leaky_sum, x, 2, "rate")
