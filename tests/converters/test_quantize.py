"""NIR -> fixed-point quantiser: fusion exactness, threshold mapping, accuracy, errors, CLI."""

from __future__ import annotations

import functools

import nir
import numpy as np
import pytest
import torch
from dalif_deploy.converters.nir_fuse import fuse_path, graph_paths, path_function
from dalif_deploy.converters.nir_to_fixed import calibrated_input_scale, quantize_graph
from dalif_deploy.converters.torch_to_nir import export_nir, write_nir
from dalif_deploy.targets.emulator import emulate
from helpers import REPO_ROOT
from helpers.nir_helpers import lively_model

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.fixedpoint.fxp_format import load_program
from dalif_deploy.float_model.zoo import run_model

CKPTS = REPO_ROOT / "dalif_deploy" / "checkpoints"
RUN = functools.partial(emulate, check=False)  # calibration's run(program, x)


def _lif(shape, beta=0.6, alpha=0.7, v_th=0.5, **kw):
    return nir.LIF(tau=np.full(shape, 1 / (1 - beta)), r=np.full(shape, alpha / (1 - beta)),
                   v_leak=np.zeros(shape), v_reset=np.zeros(shape),
                   v_threshold=np.full(shape, v_th), **kw)


def pool_conv_graph(rng, pool=2, size=6, shortcut=False) -> nir.NIRGraph:
    """Input -> conv -> LIF -> AvgPool -> conv -> LIF (-> + LIF shortcut via pool) -> fc."""
    c1, c2, h2 = 3, 4, size // pool
    nodes = {
        "in": nir.Input(np.array([1, size, size])),
        "conv1": nir.Conv2d((size, size), rng.normal(0, 0.5, (c1, 1, 3, 3)), 1, 1, 1, 1,
                            rng.normal(0, 0.1, c1)),
        "lif1": _lif((c1, size, size)),
        "pool": nir.AvgPool2d(np.array([pool, pool]), np.array([pool, pool]), np.array([0, 0])),
        "conv2": nir.Conv2d((h2, h2), rng.normal(0, 0.5, (c2, c1, 3, 3)), 1, 1, 1, 1,
                            rng.normal(0, 0.1, c2)),
        "lif2": _lif((c2, h2, h2), beta=0.3),
        "flat": nir.Flatten({"input": np.array([c2, h2, h2])}, 0),
        "fc": nir.Affine(rng.normal(0, 0.3, (5, c2 * h2 * h2)), rng.normal(0, 0.1, 5)),
        "out": nir.Output(np.array([5])),
    }
    edges = [("in", "conv1"), ("conv1", "lif1"), ("lif1", "pool"), ("pool", "conv2"),
             ("conv2", "lif2"), ("lif2", "flat"), ("flat", "fc"), ("fc", "out")]
    if shortcut:  # a second path into lif2: pooled lif1 spikes through a 1x1 conv
        nodes["sc"] = nir.Conv2d((h2, h2), rng.normal(0, 0.5, (c2, c1, 1, 1)), 1, 0, 1, 1,
                                 np.zeros(c2))
        edges += [("pool", "sc"), ("sc", "lif2")]
    # as dalif-deploy writes it: its dt is known (a foreign graph needs an explicit dt)
    return nir.NIRGraph(nodes, edges, metadata={"timesteps": 3, "input_encoding": "analog",
                                                "producer": "dalif-deploy", "dt": 1.0},
                        type_check=False)


@pytest.mark.parametrize("size,kind", [(6, "conv"), (5, "dense")])
def test_pool_then_conv_fuses_exactly(size, kind):
    """Pool(2)+conv3x3 becomes one 6x6/stride-2 conv when the pool tiles the map, else dense;
    either way it equals the sequential float64 map (tolerance: float64 summation order)."""
    g = pool_conv_graph(np.random.default_rng(0), size=size)
    (path,) = graph_paths(g, "lif2", lambda n: n in ("in", "lif1"))
    assert path.source == "lif1" and path.nodes == ["pool", "conv2"]
    h2 = size // 2
    fused = fuse_path(g, path, (3, size, size), (4, h2, h2), "lif2")
    assert fused.kind == kind
    x = torch.rand(4, 3, size, size, dtype=torch.float64)
    ref = path_function(g, path)(x)
    if kind == "conv":
        assert fused.weight.shape[2:] == (6, 6) and fused.stride == (2, 2)
        got = torch.nn.functional.conv2d(x, torch.as_tensor(fused.weight), None, fused.stride,
                                         fused.padding)
    else:
        got = (x.reshape(4, -1) @ torch.as_tensor(fused.weight).T).reshape(ref.shape)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_threshold_mapping_is_exact():
    """lambda * v_th == 64 * vth exactly and the population fires by the node's rule (>= or
    NIR's >); netx mode (Lava's LIF: '>' only) keeps >= as lambda * v_th == 64 * vth + 1."""
    g = pool_conv_graph(np.random.default_rng(1), shortcut=True)
    for cond, netx, extra in ((">=", False, 0), (">", False, 0), (">=", True, 1)):
        for n in ("lif1", "lif2"):
            g.nodes[n].metadata = {"spike_condition": cond}
        prog = quantize_graph(g, netx=netx)
        for p in prog.populations[:-1]:
            assert p.scale * 0.5 == 64 * p.vth + extra
            assert p.spike_rule == (">" if netx else cond)
        assert len(prog.incoming("lif2")) == 2  # residual fan-in kept as two synapses


def test_lively_models_follow_float():
    """Random-weight models: quantised predictions agree with float on most samples (random
    nets have near-tied logits, hence no exact bound) and the program passes every check."""
    torch.manual_seed(0)
    x = torch.rand(48, 1, 8, 8)
    for name, gran in (("digits-cnn", "channel"), ("digits-resnet", "layer")):
        m = lively_model(name, granularity=gran)
        prog = quantize_graph(export_nir(m, (1, 8, 8), 4), calibration=x.numpy(), run=RUN)
        if gran == "channel":
            assert prog.populations[0].dv.size == prog.populations[0].shape[0]
        r = emulate(prog, x.numpy())
        with torch.no_grad():
            ref = run_model(m, x, 4).argmax(1).numpy()
        assert (r.predictions == ref).mean() >= 0.8, name


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_shipped_checkpoints_within_one_point(name):
    """Issue target: 8-bit programs within 1 percentage point of float on the digits test set."""
    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.float_model.loading import load_model

    model, ck = load_model(CKPTS / f"{name}.pt")
    ds, tr = load_dataset("digits", "test"), load_dataset("digits", "train")
    prog = quantize_graph(export_nir(model, (1, 8, 8), ck.timesteps), calibration=tr.x[:256],
                          run=RUN)
    r = emulate(prog, ds.x)
    with torch.no_grad():
        fl = run_model(model, torch.from_numpy(ds.x), ck.timesteps).argmax(1).numpy()
    assert abs((r.predictions == ds.y).mean() - (fl == ds.y).mean()) <= 0.01
    assert all(v == 0 for v in r.u_wraps.values())


def test_weight_errors_are_within_half_an_lsb():
    """Unclipped weights round to nearest: every dequantised weight lies within half a step
    (2^weight_exp / 2) of the float weight it approximates; the quantiser's records cover every
    weight of every synapse (the verify report's histogram) and survive the file round trip."""
    torch.manual_seed(1)
    m = lively_model("digits-resnet")
    g = export_nir(m, (1, 8, 8), 4)
    prog = quantize_graph(g, calibration=torch.rand(32, 1, 8, 8).numpy(), run=RUN)
    errs = prog.weight_errors
    assert set(errs) == {s.name for s in prog.synapses}
    for s in prog.synapses:
        assert errs[s.name].size == s.weights.size
        assert errs[s.name].max_abs > 0  # 8 bits cannot hold random floats exactly
    row = {r["population"]: r for r in prog.quant_table}
    for s in prog.synapses:
        if row[s.target]["clipped_weights"] == 0:
            # errors are relative to m = max|float|, which lies within half a step of
            # max|dequantised|: so |err| <= (step / 2) / (max|deq| - step / 2)
            step = 2.0 ** s.weight_exp
            bound = 0.5 * step / (np.abs(s.weights).max() * step - 0.5 * step)
            assert errs[s.name].max_abs <= bound * (1 + 1e-9), s.name
            assert max(abs(errs[s.name].edges[0]), abs(errs[s.name].edges[-1])) \
                <= bound * (1 + 1e-9), s.name


def test_recorded_weight_errors_match_the_fused_graph():
    """The records equal what re-fusing the graph gives: each weight's error against the fused,
    alpha-folded float weight in input units, binned as numpy.histogram bins it."""
    from dalif_deploy.converters.nir_to_fixed import WEIGHT_ERROR_BINS, _build_layers

    g = pool_conv_graph(np.random.default_rng(3), shortcut=True)
    prog = quantize_graph(g, weight_bits=6)
    _, layers = _build_layers(g, 1.0)
    checked = 0
    for ly in layers:
        lam = prog.population(ly.name).scale
        for syn, t in zip(prog.incoming(ly.name), ly.targets(prog.input.scale), strict=True):
            ta = lam * t / 64
            e = ((syn.weights * 2.0 ** syn.weight_exp - ta) / np.abs(ta).max()).ravel()
            counts, edges = np.histogram(e, bins=WEIGHT_ERROR_BINS)
            rec = prog.weight_errors[syn.name]
            assert rec.counts == tuple(counts.tolist()) and rec.edges == tuple(edges.tolist())
            assert rec.max_abs == np.abs(e).max() > 0
            checked += 1
    assert checked == len(prog.synapses) == 4


def test_calibration_runs_through_the_given_function():
    """Calibration needs ``run``; what it reports decides the re-quantisation: a population
    that keeps wrapping is halved in scale every round, up to CAL_ROUNDS rounds."""
    from types import SimpleNamespace

    from dalif_deploy.converters.nir_to_fixed import CAL_ROUNDS

    g = pool_conv_graph(np.random.default_rng(4))
    x = np.random.default_rng(5).uniform(-1, 1, (8, 1, 6, 6))
    with pytest.raises(DaLifError, match="calibration data needs run="):
        quantize_graph(g, calibration=x)
    seen = []

    def run(program, xs):
        assert xs is x
        seen.append(program.population("lif1").scale)
        names = [p.name for p in program.populations]
        return SimpleNamespace(u_wraps={n: int(n == "lif1") for n in names},
                               v_saturations=dict.fromkeys(names, 0))

    prog = quantize_graph(g, calibration=x, run=run)
    assert len(seen) == CAL_ROUNDS + 1 and prog.metadata["calibration_rounds"] == CAL_ROUNDS
    assert all(b <= a / 2 for a, b in zip(seen, seen[1:], strict=False))
    row = {r["population"]: r for r in prog.quant_table}
    assert row["lif1"]["u_wraps"] == 1 and row["lif2"]["u_wraps"] == 0


def test_input_scale_from_data_grid():
    x = np.arange(17, dtype=np.float32) / 16  # digits: pixel / 16
    assert calibrated_input_scale(x) == 112.0  # 16 * 7: every value exact
    assert calibrated_input_scale(np.array([np.pi / 10, -1.7])) == pytest.approx(127 / 1.7)


def test_unsupported_and_bad_graphs_are_refused():
    rng = np.random.default_rng(2)
    g = pool_conv_graph(rng)
    g.nodes["lif1"].v_leak = np.full((3, 6, 6), 0.1)
    with pytest.raises(DaLifError, match="lif1.*v_leak"):
        quantize_graph(g)
    g = pool_conv_graph(rng)
    g.nodes["lif2"] = nir.CubaLIF(tau_syn=np.ones(36), tau_mem=np.ones(36), r=np.ones(36),
                                  v_leak=np.zeros(36), v_threshold=np.ones(36))
    with pytest.raises(DaLifError, match="lif2"):
        quantize_graph(g)
    g = pool_conv_graph(rng)
    g.metadata = {}
    with pytest.raises(DaLifError, match="timesteps"):
        quantize_graph(g)
    with pytest.raises(DaLifError, match="weight-bits"):
        quantize_graph(pool_conv_graph(rng), weight_bits=12)


def test_cli_quantize(tmp_path, capsys):
    g = export_nir(lively_model("digits-cnn"), (1, 8, 8), 4)
    write_nir(g, tmp_path / "m.nir")
    out = tmp_path / "m.fxp"
    assert main(["quantize", str(tmp_path / "m.nir"), "-o", str(out), "--weight-bits", "6",
                 "--calibrate", "digits", "--calibration-samples", "32",
                 "--json", str(tmp_path / "q.json")]) == 0
    assert "population" in capsys.readouterr().out
    prog = load_program(out)
    assert prog.metadata["weight_bits"] == 6 and (tmp_path / "q.json").exists()
    assert prog.metadata["calibrated"] and set(prog.weight_errors) == {
        s.name for s in prog.synapses}  # the records travel in the file
    assert all(np.all(s.weights % 4 == 0) for s in prog.synapses)  # 6 of 8 bits used
    assert main(["quantize", str(tmp_path / "none.nir"), "-o", str(out)]) == 2
    (tmp_path / "bad.nir").write_bytes(b"garbage")
    assert main(["quantize", str(tmp_path / "bad.nir"), "-o", str(tmp_path / "b.fxp")]) == 2
    assert not (tmp_path / "b.fxp").exists()


def test_lif_metadata_of_the_wrong_size_is_refused():
    """Per-channel alpha/beta metadata with a wrong channel count (a damaged or hand-edited
    graph) is a DaLifError naming the layer, not a raw numpy broadcasting error."""
    m = lively_model("digits-cnn", width=4, granularity="channel")
    g = export_nir(m, (1, 8, 8), 2)
    g.nodes["lif1"].metadata["beta"] = np.full(3, 0.5)  # the layer has 4 channels
    with pytest.raises(DaLifError, match="lif1.*beta"):
        quantize_graph(g)


def test_a_path_out_of_another_layers_loop_is_refused_naming_it():
    """lif2 fed from inside lif1's loop (lif1 -> rec -> fc2 -> lif2) would read lif1's previous
    step: a program delays only a population's own loop, so the quantiser refuses it; the same
    graph with lif2 fed from lif1 directly quantises, lif1's loop as its recurrent synapse."""
    def lif(n):
        return nir.LIF(tau=np.full(n, 2.0), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n))

    nodes = {"input": nir.Input(np.array([4])), "fc": nir.Affine(np.ones((3, 4)), np.zeros(3)),
             "lif1": lif(3), "rec": nir.Linear(np.eye(3)),
             "fc2": nir.Affine(np.ones((2, 3)), np.zeros(2)), "lif2": lif(2),
             "output": nir.Output(np.array([2]))}
    loop = [("input", "fc"), ("fc", "lif1"), ("lif1", "rec"), ("rec", "lif1"), ("fc2", "lif2"),
            ("lif2", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=[*loop, ("rec", "fc2")], type_check=False)
    with pytest.raises(DaLifError, match=r"node lif2: its input through \['rec', 'fc2'\] reads "
                                         r"lif1's output of the previous step"):
        quantize_graph(g, timesteps=4, encoding="events", dt=1.0)
    g = nir.NIRGraph(nodes=nodes, edges=[*loop, ("lif1", "fc2")], type_check=False)
    program = quantize_graph(g, timesteps=4, encoding="events", dt=1.0)
    assert [(s.source, s.target) for s in program.synapses if s.recurrent] == [("lif1", "lif1")]
