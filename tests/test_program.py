"""FixedProgram file round trip, hostile/corrupt files, and every constraint rule."""

from __future__ import annotations

import copy
import io
import zipfile

import numpy as np
import pytest

from dalif_deploy.constraints import RULES, check_program, describe_program, require_valid
from dalif_deploy.errors import DaLifError
from dalif_deploy.limits import VTH_MAX
from dalif_deploy.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
    load_program,
    program_to_arrays,
    save_program,
)


def small_program() -> FixedProgram:
    """A valid program with a conv, a residual dense synapse, per-channel decays, a readout."""
    rng = np.random.default_rng(0)
    shape = (2, 4, 4)
    pops = [
        Population("a", shape, dv=[100, 200], vth=50, bias_mant=rng.integers(-9, 9, shape),
                   bias_exp=2, scale=1234.5, provenance=["lif1"]),
        Population("b", (6,), dv=[300], vth=20, bias_mant=np.zeros(6, int), du=4095),
        Population("out", (3,), dv=[0], vth=VTH_MAX, bias_mant=[1, 2, 3]),
    ]
    syns = [
        Synapse("in->a", "input", "a", "conv", rng.integers(-128, 128, (2, 1, 3, 3)),
                graded=True, padding=(1, 1), input_shape=(1, 4, 4), output_shape=shape),
        Synapse("a->b", "a", "b", "dense", rng.integers(-128, 128, (6, 32)), weight_exp=-2,
                input_shape=shape, output_shape=(6,), provenance=["fc"]),
        Synapse("in->b", "input", "b", "dense", rng.integers(-32, 32, (6, 16)) // 16 * 16,
                weight_bits=4, graded=True, input_shape=(1, 4, 4), output_shape=(6,)),
        Synapse("b->out", "b", "out", "dense", rng.integers(-128, 128, (3, 6)),
                input_shape=(6,), output_shape=(3,)),
    ]
    return FixedProgram(InputEncoding("analog", (1, 4, 4), scale=112.0), pops, syns,
                        Readout("out", 77.0), timesteps=4,
                        quant_table=[{"population": "a", "scale": 1234.5, "weight_exp": [0]}],
                        metadata={"weight_bits": 8, "note": "test"})


def _same(a, b) -> None:
    for x, y in zip(a.__dict__.items(), b.__dict__.items(), strict=True):
        assert x[0] == y[0]
        if isinstance(x[1], np.ndarray):
            assert np.array_equal(x[1], y[1]), x[0]
        elif isinstance(x[1], list) and x[1] and hasattr(x[1][0], "__dict__"):
            for p, q in zip(x[1], y[1], strict=True):
                _same(p, q)
        elif hasattr(x[1], "__dict__"):
            _same(x[1], y[1])
        else:
            assert x[1] == y[1], x[0]


def test_valid_program_has_no_violations():
    assert check_program(small_program()) == []


def test_round_trip_every_field(tmp_path):
    prog = small_program()
    path = tmp_path / "m.fxp"
    save_program(prog, path)
    back = load_program(path)
    _same(prog, back)
    assert [p.dv.dtype for p in back.populations] == [np.int64] * 3


def test_describe_program(tmp_path):
    save_program(small_program(), tmp_path / "m.fxp")
    d = describe_program(tmp_path / "m.fxp")
    assert d["neurons"] == 32 + 6 + 3 and d["constraint_violations"] == []
    assert [p["name"] for p in d["populations"]] == ["a", "b", "out"]
    assert d["synapses"][1]["weight_exp"] == -2


def _write(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_corrupt_truncated_and_pickle_files_fail_cleanly(tmp_path):
    good = tmp_path / "good.fxp"
    save_program(small_program(), good)
    data = good.read_bytes()
    (tmp_path / "trunc.fxp").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.fxp").write_bytes(b"not a zip at all")
    arrays = program_to_arrays(small_program())
    _write(tmp_path / "pickle.fxp", {**arrays, "syn0.weights": np.array([{"x": 1}], object)})
    _write(tmp_path / "float.fxp", {**arrays, "pop0.dv": np.array([0.5, 1.5])})
    _write(tmp_path / "missing.fxp", {k: v for k, v in arrays.items() if k != "syn1.weights"})
    _write(tmp_path / "nohdr.fxp", {k: v for k, v in arrays.items() if k != "header"})
    bad_hdr = np.frombuffer(b'{"format": "dalif-deploy.fixed-program", "version": 99}', np.uint8)
    _write(tmp_path / "version.fxp", {**arrays, "header": bad_hdr})
    _write(tmp_path / "json.fxp", {**arrays, "header": np.frombuffer(b"{oops", np.uint8)})
    for name in ("trunc", "junk", "pickle", "float", "missing", "nohdr", "version", "json",
                 "absent"):
        with pytest.raises(DaLifError):
            load_program(tmp_path / f"{name}.fxp")


def test_header_is_plain_json(tmp_path):
    save_program(small_program(), tmp_path / "m.fxp")
    with zipfile.ZipFile(tmp_path / "m.fxp") as z:
        hdr = np.load(io.BytesIO(z.read("header.npy")), allow_pickle=False)
    assert b'"format": "dalif-deploy.fixed-program"' in hdr.tobytes()


def _pop(p, name):
    return p.population(name)


def _syn(p, name):
    return next(s for s in p.synapses if s.name == name)


# rule -> a mutation of the valid program that must break exactly that rule
BREAKERS = {
    "weight-bits": lambda p: setattr(_syn(p, "a->b"), "weight_bits", 9),
    "weight-range": lambda p: _syn(p, "a->b").weights.__setitem__((0, 0), 200),
    "weight-lsb": lambda p: _syn(p, "in->b").weights.__setitem__((0, 0), 17),
    "weight-exp": lambda p: setattr(_syn(p, "a->b"), "weight_exp", -9),
    "conv-weight-exp": lambda p: setattr(_syn(p, "in->a"), "weight_exp", 1),
    "conv-limits": lambda p: setattr(_syn(p, "in->a"), "groups", 200),
    "shape": lambda p: setattr(_syn(p, "in->a"), "stride", (2, 2)),
    "graded-input": lambda p: setattr(_syn(p, "in->a"), "graded", False),
    "input-bits": lambda p: setattr(p.input, "bits", 12),
    "vth-range": lambda p: setattr(_pop(p, "a"), "vth", VTH_MAX + 1),
    "bias-range": lambda p: _pop(p, "a").bias_mant.__setitem__((0, 0, 0), 5000),
    "decay-range": lambda p: _pop(p, "a").dv.__setitem__(0, 4096),
    "headroom": lambda p: setattr(_syn(p, "b->out"), "weight_exp", 7),
    "fan-in": lambda p: setattr(_syn(p, "a->b"), "weights", np.ones((6, 5000), np.int64)),
    "topology": lambda p: p.populations.reverse(),
    "readout": lambda p: setattr(_pop(p, "out"), "dv", np.array([5])),
}


def test_every_rule_has_a_breaker():
    assert set(BREAKERS) == set(RULES)


@pytest.mark.parametrize("rule", sorted(BREAKERS))
def test_each_rule_fires(rule):
    prog = copy.deepcopy(small_program())
    BREAKERS[rule](prog)
    found = check_program(prog)
    assert rule in {v.rule for v in found}, found
    for v in found:
        assert v.where and len(v.message) > 20  # names the place and says what to do
    if any(v.severity == "error" for v in found):
        with pytest.raises(DaLifError, match=rule):
            require_valid(prog)


def test_absurd_timesteps_are_refused_on_load(tmp_path):
    """A program claiming 10^9 steps per sample would make the emulator run for ages: refused
    when the file is read, naming the limit."""
    import json

    arrays = program_to_arrays(small_program())
    hdr = json.loads(arrays["header"].tobytes())
    hdr["timesteps"] = 10**9
    _write(tmp_path / "long.fxp", {**arrays, "header": np.frombuffer(
        json.dumps(hdr).encode(), np.uint8)})
    with pytest.raises(DaLifError, match="timesteps must lie in 1..65536"):
        load_program(tmp_path / "long.fxp")
