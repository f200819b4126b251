"""The input encoding type (dalif_deploy/base/encoding.py): lookup, frames, validation, and the rule
that no other module compares encoding strings."""

import ast

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT

from dalif_deploy.base.encoding import ANALOG, ENCODING_NAMES, ENCODINGS, EVENTS, Encoding
from dalif_deploy.base.errors import DaLifError

ROOT = REPO_ROOT


def test_names_map_to_the_singletons():
    assert ENCODINGS == (ANALOG, EVENTS) and ENCODING_NAMES == ("analog", "events")
    assert Encoding.from_name("analog") is ANALOG and Encoding.from_name("events") is EVENTS
    assert Encoding.from_name(EVENTS) is EVENTS
    assert str(EVENTS) == "events" and Encoding.find("rate") is None
    assert EVENTS.time_axis and EVENTS.binary and not ANALOG.time_axis and not ANALOG.binary


@pytest.mark.parametrize("bad", ["rate", "Analog", "", None])
def test_unknown_names_are_refused(bad):
    with pytest.raises(DaLifError, match=f"input encoding must be 'analog' or 'events', not "
                                         f"{bad!r}"):
        Encoding.from_name(bad, "input encoding")


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_frame_at_step_t(lib):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    x = torch.from_numpy(x) if lib == "torch" else x
    assert ANALOG.frame(x, 2) is x  # the same frame every step
    for t in range(3):
        got = EVENTS.frame(x, t)
        assert tuple(got.shape) == (2, 4) and (got == x[:, t]).all()
    assert EVENTS.timesteps_of(x) == 3 and ANALOG.timesteps_of(x) is None


def test_shapes_and_shape_checks():
    assert ANALOG.batch_shape(5, 4, (1, 8, 8)) == (5, 1, 8, 8)
    assert EVENTS.batch_shape(5, 4, (2, 8, 8)) == (5, 4, 2, 8, 8)
    assert EVENTS.lead(5, 4) == (5, 4) and ANALOG.lead(5, 4) == (5,)
    EVENTS.check(np.zeros((3, 4, 2, 8, 8)), 4, (2, 8, 8))
    ANALOG.check(np.zeros((3, 1, 8, 8)), 4, (1, 8, 8))
    with pytest.raises(DaLifError, match=r"event input must be \[B, T=4, \.\.\.\], got \(3, 5"):
        EVENTS.check(np.zeros((3, 5, 2, 8, 8)), 4)
    with pytest.raises(DaLifError, match=r"analog input for T=4 expects \(3, 1, 8, 8\)"):
        ANALOG.check(np.zeros((3, 1, 8, 9)), 4, (1, 8, 8))


def test_event_values_must_be_binary():
    EVENTS.check_values(np.array([[0.0, 1.0], [1.0, 0.0]]))
    ANALOG.check_values(np.array([0.25, -3.0]))  # analog frames are graded
    with pytest.raises(DaLifError, match="events input must be binary"):
        EVENTS.check_values(torch.tensor([0.0, 0.5]), "frames")


def _string_comparisons(source: str) -> list[int]:
    """Lines comparing with the literal "analog"/"events" (==, !=, in, not in)."""
    def lit(n: ast.AST) -> bool:
        if isinstance(n, ast.Constant):
            return n.value in ENCODING_NAMES
        return isinstance(n, (ast.Tuple, ast.List, ast.Set)) and any(lit(e) for e in n.elts)

    return [n.lineno for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Compare) and any(lit(c) for c in [n.left, *n.comparators])]


def test_the_scanner_finds_string_comparisons():
    assert _string_comparisons('a = "events"\nif enc == "events":\n    pass') == [2]
    assert _string_comparisons('ok = kind not in ("analog", "events")') == [1]
    assert _string_comparisons('kind = ANALOG.name if x else "events"') == []


def test_no_module_but_encoding_compares_encoding_strings():
    files = [f for d in ("dalif_deploy", "converters", "targets") for f in (ROOT / d).rglob("*.py")
             if f != ROOT / "dalif_deploy" / "base" / "encoding.py"]
    assert len(files) > 20
    found = {str(f.relative_to(ROOT)): lines for f in files
             if (lines := _string_comparisons(f.read_text()))}
    assert not found, f"compare through dalif_deploy.base.encoding instead: {found}"
