"""FixedProgram file round trip, hostile/corrupt files, and every constraint rule."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest
from helpers.programs import small_program

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.geometry import conv_output_shape
from dalif_deploy.fixedpoint.constraints import (
    RULES,
    check_program,
    describe_program,
    require_valid,
)
from dalif_deploy.fixedpoint.fxp_format import (
    load_program,
    program_from_arrays,
    program_to_arrays,
    save_program,
)
from dalif_deploy.fixedpoint.limits import VTH_MAX
from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
    WeightErrors,
)


def _same(a, b, where: str = "program") -> None:
    """Exact equality of two objects field by field: same types, arrays of the same dtype,
    shape and values, containers element by element."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dict__"):
        _same(vars(a), vars(b), where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_valid_program_has_no_violations():
    assert check_program(small_program()) == []


def test_round_trip_every_field(tmp_path):
    prog = small_program()
    path = tmp_path / "m.fxp"
    save_program(prog, path)
    back = load_program(path)
    _same(prog, back)
    assert [p.dv.dtype for p in back.populations] == [np.int64] * 3


IN_SHAPE = (2, 6, 6)

#: every synapse kind the format holds: name -> (Synapse keywords, weight range, encoding)
SYNAPSE_KINDS = {
    "dense-binary": ({"kind": "dense"}, (-128, 128), "events"),
    "dense-graded": ({"kind": "dense", "graded": True, "weight_exp": -2}, (-128, 128),
                     "analog"),
    "dense-excitatory": ({"kind": "dense", "sign_mode": "excitatory"}, (0, 256), "events"),
    "dense-inhibitory": ({"kind": "dense", "sign_mode": "inhibitory"}, (-255, 1), "events"),
    "dense-4bit-negative-exp": ({"kind": "dense", "weight_bits": 4, "weight_exp": -3},
                                (-8, 8), "events"),
    "conv-graded-padding": ({"kind": "conv", "graded": True, "padding": (1, 1),
                             "kernel": (3, 3)}, (-128, 128), "analog"),
    "conv-groups-stride": ({"kind": "conv", "groups": 2, "stride": (2, 1), "padding": (1, 0),
                            "kernel": (3, 2)}, (-128, 128), "events"),
    "conv-excitatory-1x1": ({"kind": "conv", "sign_mode": "excitatory", "kernel": (1, 1)},
                            (0, 256), "events"),
    # plus a recurrent dense synapse p -> p (source == target: the previous step's spikes)
    "dense-recurrent": ({"kind": "dense", "recurrent": True}, (-128, 128), "events"),
}


def kind_program(kind: str, dv: str) -> FixedProgram:
    """input -> [the synapse kind] -> p -> dense -> readout, p with a scalar or per-channel
    dv; quantisation table, metadata and a weight-error record on every synapse."""
    rng = np.random.default_rng(sorted(SYNAPSE_KINDS).index(kind))
    kw, (lo, hi), enc = SYNAPSE_KINDS[kind]
    kw = dict(kw)
    recurrent = kw.pop("recurrent", False)
    if kw["kind"] == "conv":
        kh, kwd = kw.pop("kernel")
        c_out, groups = 4, kw.get("groups", 1)
        shape = (c_out, *conv_output_shape(IN_SHAPE[1:], (kh, kwd), kw.get("stride", (1, 1)),
                                           kw.get("padding", (0, 0))))
        w = rng.integers(lo, hi, (c_out, IN_SHAPE[0] // groups, kh, kwd))
    else:
        shape = (5,)
        w = rng.integers(lo, hi, (5, int(np.prod(IN_SHAPE))))
    w = w << (8 - kw.get("weight_bits", 8))  # only the top weight_bits bits count
    dvs = rng.integers(0, 4096, shape[0]) if dv == "per-channel" else [int(rng.integers(4096))]
    n = int(np.prod(shape))
    pops = [Population("p", shape, dv=dvs, vth=int(rng.integers(1, 500)),
                       bias_mant=rng.integers(-50, 50, shape), bias_exp=-1,
                       du=int(rng.integers(4096)), scale=float(rng.uniform(1, 999)),
                       provenance=["conv", "lif"]),
            Population("out", (3,), dv=[0], vth=VTH_MAX, bias_mant=rng.integers(-9, 9, 3),
                       scale=0.125)]
    syns = [Synapse("in->p", "input", "p", weights=w, input_shape=IN_SHAPE, output_shape=shape,
                    provenance=["conv"], **kw),
            Synapse("p->out", "p", "out", "dense", rng.integers(-128, 128, (3, n)),
                    weight_exp=2, input_shape=shape, output_shape=(3,))]
    if recurrent:
        syns.append(Synapse("p->p", "p", "p", "dense", rng.integers(-128, 128, (n, n)),
                            weight_exp=-1, input_shape=shape, output_shape=shape))
    errors = {s.name: WeightErrors(rng.integers(0, 9, 4), np.sort(rng.normal(0, 0.01, 5)),
                                   float(rng.uniform(0, 0.02))) for s in syns}
    return FixedProgram(InputEncoding(enc, IN_SHAPE, scale=7.5 if enc == "analog" else 1.0),
                        pops, syns, Readout("out", 3.25), timesteps=int(rng.integers(1, 50)),
                        quant_table=[{"population": "p", "weight_exp": [0, -1], "x": None}],
                        metadata={"kind": kind, "calibrated": True, "dt": 0.5},
                        weight_errors=errors)


@pytest.mark.parametrize("dv", ["scalar", "per-channel"])
@pytest.mark.parametrize("kind", sorted(SYNAPSE_KINDS))
def test_round_trip_every_synapse_and_population_kind(kind, dv, tmp_path):
    """Each kind, in a program the constraint check accepts, comes back from the .fxp file
    equal in every field and array (types and dtypes included)."""
    prog = kind_program(kind, dv)
    assert [v for v in check_program(prog) if v.severity == "error"] == []
    save_program(prog, tmp_path / "k.fxp")
    back = load_program(tmp_path / "k.fxp")
    _same(prog, back)
    assert back.population("p").dv.size == (back.population("p").shape[0]
                                            if dv == "per-channel" else 1)
    assert [s.recurrent for s in back.synapses] == [s.name == "p->p" for s in prog.synapses]
    again = program_to_arrays(back)
    for k, a in program_to_arrays(prog).items():
        assert np.array_equal(a, again[k]), k


@pytest.mark.parametrize(("rule", "reset", "multi"), [
    (">=", "zero", False), (">", "subtract", False), (">", "zero-next", False),
    (">=", "subtract-next", False), (">=", "subtract", True), (">", "zero", True)])
def test_round_trip_every_firing(rule, reset, multi, tmp_path):
    """Each spike rule, reset mode and multi-spike output comes back from the .fxp file; a
    multi-spike population's counts fit the payload and reach a graded synapse."""
    prog = kind_program("dense-binary", "scalar")
    p = prog.population("p")
    p.spike_rule, p.reset, p.multi_spike = rule, reset, multi
    if multi:
        p.vth = 20000
        prog.synapses[1].graded = True
    assert [v for v in check_program(prog) if v.severity == "error"] == []
    save_program(prog, tmp_path / "f.fxp")
    back = load_program(tmp_path / "f.fxp")
    _same(prog, back)
    assert (back.population("p").spike_rule, back.population("p").reset,
            back.population("p").multi_spike) == (rule, reset, multi)


def test_bias_into_round_trips_and_defaults_to_v(tmp_path):
    """``bias_into`` comes back from the .fxp file; files written before it (no field) mean a
    bias into v, Lava's LIF; an unknown site is refused on load, naming the field."""
    prog = kind_program("dense-binary", "scalar")
    prog.population("p").bias_into, prog.population("p").du = "u", 2047
    save_program(prog, tmp_path / "f.fxp")
    back = load_program(tmp_path / "f.fxp")
    _same(prog, back)
    assert back.population("p").bias_into == "u" and not back.population("p").plain
    arrays = program_to_arrays(prog)
    header = json.loads(arrays["header"].tobytes())
    for pop in header["populations"]:
        del pop["bias_into"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    assert all(p.bias_into == "v" for p in program_from_arrays(arrays).populations)
    header["populations"][0]["bias_into"] = "w"
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with pytest.raises(DaLifError, match="bias_into.*must be one of"):
        program_from_arrays(arrays)


def test_u_overflow_counts_a_bias_into_u():
    """With du < 4095 a bias into u joins a << 6 before u's wrap: a bias alone past 2^24 breaks
    rule u-overflow; the same bias into v does not."""
    prog = copy.deepcopy(small_program())
    b = _pop(prog, "b")
    b.du, b.bias_exp = 100, 12
    b.bias_mant = np.full(b.shape, 4095)  # 4095 << 12 plus the synaptic input > 2^24
    assert "u-overflow" not in {v.rule for v in check_program(prog)}
    b.bias_into = "u"
    assert "u-overflow" in {v.rule for v in check_program(prog)}


def test_files_without_firing_fields_mean_lava_lif():
    """Programs written before reset modes have no spike_rule/reset/multi_spike: '>', zero,
    one spike; an unknown mode is refused on load, naming the field."""
    arrays = program_to_arrays(kind_program("dense-binary", "scalar"))
    header = json.loads(arrays["header"].tobytes())
    for pop in header["populations"]:
        for key in ("spike_rule", "reset", "multi_spike"):
            del pop[key]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    back = program_from_arrays(arrays)
    assert all(p.plain for p in back.populations)
    header["populations"][0]["reset"] = "halve"
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with pytest.raises(DaLifError, match="reset.*must be one of"):
        program_from_arrays(arrays)


def test_multi_spike_bound_is_refused_with_the_count():
    """Counts beyond the payload: refused with the bound; a binary synapse out: refused."""
    prog = copy.deepcopy(small_program())
    _multi_spike(prog)
    found = {v.where: v.message for v in check_program(prog) if v.rule == "multi-spike"}
    assert "spikes in one step" in found["a"] and "127" in found["a"]
    assert "mark it graded" in found["a->b"]


def test_files_without_weight_errors_still_load():
    """Programs written before weight errors were recorded have no such header key."""
    arrays = program_to_arrays(kind_program("dense-binary", "scalar"))
    header = json.loads(arrays["header"].tobytes())
    del header["weight_errors"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    back = program_from_arrays(arrays)
    assert back.weight_errors == {} and back.metadata["kind"] == "dense-binary"


@pytest.mark.parametrize("record,match", [
    ({"counts": ["x"], "edges": [0.0, 1.0], "max_abs": 0.1}, r"counts"),
    ({"counts": [1], "edges": [0.0, 1.0]}, r"missing field.*max_abs"),
    ({"counts": [-1], "edges": [0.0, 1.0], "max_abs": 0.1}, r"non-negative counts"),
    ({"counts": [1], "edges": [0.0, 1.0], "max_abs": 0.1, "extra": 1},
     r"unknown field\(s\) 'extra'; the accepted fields: counts, edges, max_abs"),
])
def test_malformed_weight_error_records_are_refused(record, match):
    arrays = program_to_arrays(kind_program("dense-binary", "scalar"))
    header = json.loads(arrays["header"].tobytes())
    header["weight_errors"] = {"in->p": record}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with pytest.raises(DaLifError, match=match):
        program_from_arrays(arrays)


def test_an_unknown_header_field_is_refused_naming_it():
    """The schema carries nothing unchecked (issue 29) and ignores nothing (issue 24)."""
    arrays = program_to_arrays(kind_program("dense-binary", "scalar"))
    header = json.loads(arrays["header"].tobytes())
    header["smuggled"] = {"a": 1}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with pytest.raises(DaLifError, match="unknown field\\(s\\) 'smuggled'"):
        program_from_arrays(arrays)


def test_weight_errors_are_checked():
    with pytest.raises(DaLifError, match="3 non-negative counts need 4 bin edges"):
        WeightErrors([1, 2, 3], [0.0, 1.0], 0.5)
    with pytest.raises(DaLifError, match="ascending"):
        WeightErrors([1], [1.0, 0.0], 0.5)
    prog = kind_program("dense-binary", "scalar")
    with pytest.raises(DaLifError, match="unknown synapses.*nope"):
        FixedProgram(prog.input, prog.populations, prog.synapses, prog.readout, 2,
                     weight_errors={"nope": prog.weight_errors["in->p"]})


def test_describe_program(tmp_path):
    save_program(small_program(), tmp_path / "m.fxp")
    d = describe_program(tmp_path / "m.fxp")
    assert d["neurons"] == 32 + 6 + 3 and d["constraint_violations"] == []
    assert [p["name"] for p in d["populations"]] == ["a", "b", "out"]
    assert d["synapses"][1]["weight_exp"] == -2


def _write(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _damaged_files(tmp_path):
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


@pytest.mark.parametrize("name,match", [
    ("trunc", "corrupt or truncated program file"),
    ("junk", "corrupt or truncated program file"),
    ("pickle", "'syn0.weights': holds Python objects"),
    ("float", "'pop0.dv' has dtype float64, integers expected"),
    ("missing", "'syn1.weights' is missing"),
    ("nohdr", "no program header"),
    ("version", "version 99 is not supported"),
    ("json", "program header: not readable JSON"),
    ("absent", "no such file"),
])
def test_corrupt_truncated_and_pickle_files_fail_cleanly(tmp_path, name, match):
    """Each damaged file is one DaLifError naming the file once and what is wrong."""
    _damaged_files(tmp_path)
    path = tmp_path / f"{name}.fxp"
    with pytest.raises(DaLifError, match=match) as e:
        load_program(path)
    assert str(e.value).count(str(path)) == 1, str(e.value)


def test_header_is_plain_json(tmp_path):
    save_program(small_program(), tmp_path / "m.fxp")
    with zipfile.ZipFile(tmp_path / "m.fxp") as z:
        hdr = np.load(io.BytesIO(z.read("header.npy")), allow_pickle=False)
    assert b'"format": "dalif-deploy.fixed-program"' in hdr.tobytes()


def _pop(p, name):
    return p.population(name)


def _syn(p, name):
    return next(s for s in p.synapses if s.name == name)


def _long_branch(p, relays=64):
    """Route a -> b through ``relays`` populations, so in->b must wait relays + 1 steps."""
    rng = np.random.default_rng(1)
    names = [f"r{i}" for i in range(relays)]
    p.populations[1:1] = [Population(n, (6,), dv=[0], vth=1, bias_mant=np.zeros(6, int))
                          for n in names]
    ab = _syn(p, "a->b")
    pairs = zip(names, names[1:] + ["b"], strict=True)
    chain = [Synapse(f"{s}->{t}", s, t, "dense", rng.integers(-8, 8, (6, 6)),
                     input_shape=(6,), output_shape=(6,)) for s, t in pairs]
    ab.target, ab.name = names[0], "a->r0"
    p.synapses[2:2] = chain


def _u_overflow(p):
    """du < 4095 and a << 6 beyond 2^24 (weight_exp 7 on a->b)."""
    _pop(p, "b").du = 100
    _syn(p, "a->b").weight_exp = 7


def _multi_spike(p):
    """a sends spike counts (vth 1: up to hundreds a step) into a binary synapse."""
    a = _pop(p, "a")
    a.multi_spike, a.vth = True, 1


# rule -> a mutation of the valid program that must break exactly that rule
BREAKERS = {
    "u-overflow": _u_overflow,
    "delay": _long_branch,
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
    "multi-spike": _multi_spike,
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


def _self_loop(name, shape):
    n = int(np.prod(shape))
    return Synapse(f"{name}->{name}", name, name, "dense", np.ones((n, n), np.int64),
                   input_shape=shape, output_shape=shape)


def test_recurrent_synapses_pass_the_rules_and_keep_depths():
    """A population back to itself is allowed (the one cycle a program may hold) and changes no
    depth or delay; a population driven only by itself, or a cycle through two populations, is
    refused by the topology rule, naming it."""
    from dalif_deploy.fixedpoint.timing import synapse_delays, synaptic_depths

    prog = copy.deepcopy(small_program())
    depths = synaptic_depths(prog)
    prog.synapses.append(_self_loop("b", _pop(prog, "b").shape))
    assert [v for v in check_program(prog) if v.severity == "error"] == []
    assert synaptic_depths(prog) == depths and synapse_delays(prog)["b->b"] == 0
    lonely = copy.deepcopy(small_program())
    lonely.populations.insert(2, Population("x", (6,), dv=[0], vth=1, bias_mant=np.zeros(6)))
    lonely.synapses.append(_self_loop("x", (6,)))
    found = [str(v) for v in check_program(lonely) if v.rule == "topology"]
    assert found == ["[topology] x: is driven only by its own recurrent synapse, so it never "
                     "receives input: connect it to the input or an earlier population"]
    loop = copy.deepcopy(small_program())
    a, b = _pop(loop, "a"), _pop(loop, "b")
    loop.synapses.append(Synapse("b->a", "b", "a", "dense", np.ones((a.size, b.size), np.int64),
                                 input_shape=b.shape, output_shape=a.shape))
    assert any("b->a: source b comes after target a" in str(v) and "recurrent synapse from a "
               "population to itself" in str(v) for v in check_program(loop))


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
