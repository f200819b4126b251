"""Importing NIR graphs: foreign graphs (built the way snnTorch and Norse export them) with an
explicit dt, every supported node type against its documented equation, and bad input."""

from __future__ import annotations

import h5py
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dalif_deploy.converters.ir.graph import infer_shapes, read_nir
from dalif_deploy.converters.nir_to_torch import describe_conventions, run_graph
from dalif_deploy.converters.torch_to_nir import export_nir, write_nir

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.float_model.zoo import build_model, default_config

rng = np.random.default_rng(0)
T = 6


def _graph(nodes: dict, edges: list, tmp_path, name="g.nir") -> nir.NIRGraph:
    """Write and read back a graph (the file path is what users give us)."""
    path = tmp_path / name
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return read_nir(path)


def _chain(*named) -> tuple[dict, list]:
    nodes = dict(named)
    names = list(nodes)
    return nodes, list(zip(names[:-1], names[1:], strict=True))


def test_snntorch_style_leaky_with_dt_1e4(tmp_path):
    """snnTorch exports Leaky(beta) as LIF(tau = dt/(1-beta), r = tau/dt) assuming dt = 1e-4;
    with that dt the reference runs mem = beta*mem + I, spike mem > thr, reset to 0."""
    dt, beta, thr = 1e-4, np.array([0.9, 0.8, 0.7]), np.array([0.5, 0.4, 0.6])
    tau = dt / (1 - beta)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3) * 0.1
    w2 = rng.normal(size=(2, 3))
    nodes, edges = _chain(("input", nir.Input(np.array([4]))), ("fc1", nir.Affine(w, b)),
                          ("lif1", nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(3),
                                           v_threshold=thr)),
                          ("fc2", nir.Linear(w2)), ("output", nir.Output(np.array([2]))))
    g = _graph(nodes, edges, tmp_path)
    x = torch.rand(8, T, 4, dtype=torch.float64)
    with pytest.raises(DaLifError, match="--dt"):
        run_graph(g, x, T, dtype=torch.float64)
    out, spikes = run_graph(g, x, T, dt=dt, dtype=torch.float64)
    mem, total, ref_s = torch.zeros(8, 3, dtype=torch.float64), 0, []
    for t in range(T):
        mem = torch.from_numpy(beta) * mem + x[:, t] @ torch.from_numpy(w).T + torch.from_numpy(b)
        s = (mem > torch.from_numpy(thr)).double()
        mem = mem * (1 - s)
        ref_s.append(s)
        total = total + s @ torch.from_numpy(w2).T
    assert torch.equal(spikes["lif1"], torch.stack(ref_s))
    assert torch.allclose(out, total / T, atol=1e-12)
    wrong, _ = run_graph(g, x, T, dt=1e-3, dtype=torch.float64)  # Norse's default: wrong here
    assert not torch.allclose(wrong, out)
    lines = describe_conventions(g, 1e-4)
    assert any("v > v_threshold" in ln for ln in lines) and any("dt = 0.0001" in ln
                                                                  for ln in lines)


def test_snntorch_style_synaptic_cubalif(tmp_path):
    """snnTorch Synaptic(alpha, beta): tau_syn = dt/(1-alpha), w_in = tau_syn/dt,
    tau_mem = dt/(1-beta), r = tau_mem/dt -> syn = alpha*syn + x, mem = beta*mem + syn."""
    dt, a, b, thr = 1e-4, 0.6, 0.85, 0.7
    ts, tm = np.full(3, dt / (1 - a)), np.full(3, dt / (1 - b))
    nodes, edges = _chain(("input", nir.Input(np.array([3]))),
                          ("syn", nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=tm / dt,
                                              v_leak=np.zeros(3), v_threshold=np.full(3, thr),
                                              w_in=ts / dt)),
                          ("output", nir.Output(np.array([3]))))
    g = _graph(nodes, edges, tmp_path)
    x = torch.rand(4, T, 3, dtype=torch.float64)
    _, spikes = run_graph(g, x, T, dt=dt, dtype=torch.float64)
    syn = mem = torch.zeros(4, 3, dtype=torch.float64)
    for t in range(T):
        syn = a * syn + x[:, t]
        mem = b * mem + syn
        s = (mem > thr).double()
        mem = mem * (1 - s)
        assert torch.equal(spikes["syn"][t], s), t


def test_norse_style_graph_matches_norse_itself(tmp_path):
    """A Norse-style graph (LIF with r = 1 and v_leak, Affine with bias) read by Norse's own
    importer at its default dt = 1e-3 and by our reference with --dt 1e-3: same spikes.
    (Measured: Norse's *exporter* writes tau = dt/tau_mem_inv while its importer reads
    tau_mem_inv = 1/tau, so its own files do not round-trip; we follow the NIR equations.)"""
    import norse.torch as nt

    torch.manual_seed(0)
    dt = 1e-3
    tau = np.array([0.01, 0.005, 0.02])
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3) * 0.1
    nodes, edges = _chain(("input", nir.Input(np.array([4]))), ("fc", nir.Affine(w, b)),
                          ("lif", nir.LIF(tau=tau, r=np.ones(3), v_leak=np.full(3, 0.01),
                                          v_threshold=np.full(3, 0.05))),
                          ("output", nir.Output(np.array([3]))))
    g = _graph(nodes, edges, tmp_path)
    x = torch.rand(5, 40, 4) * 2
    _, spikes = run_graph(g, x, 40, dt=dt)
    module = nt.from_nir(g, dt=dt)
    state, ref = None, []
    with torch.no_grad():
        for t in range(40):
            z, state = module(x[:, t], state)
            ref.append(z)
    assert torch.stack(ref).sum() > 50
    assert torch.equal(spikes["lif"], torch.stack(ref))


def test_every_other_node_type_follows_its_equation(tmp_path):
    """Conv2d, SumPool2d, AvgPool2d, Flatten, Linear, Scale, IF, Affine, LI, I, Threshold against
    the equations in nir_to_torch's docstring (dt = 0.5, float64)."""
    dt = 0.5
    cw, cb = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    lw, sc = rng.normal(size=(5, 12)), rng.uniform(0.5, 2, size=5)
    aw, ab = rng.normal(size=(4, 5)), rng.normal(size=4)
    r_if, th_if = rng.uniform(0.5, 1.5, 5), np.full(5, 0.8)
    tau_li, r_li, vl_li = rng.uniform(1, 3, 4), rng.uniform(0.5, 1.5, 4), rng.normal(size=4)
    r_i, th = rng.uniform(0.5, 1.5, 4), np.full(4, 0.3)
    nodes, edges = _chain(
        ("input", nir.Input(np.array([2, 8, 8]))),
        ("conv", nir.Conv2d(input_shape=(8, 8), weight=cw, stride=1, padding=1, dilation=1,
                            groups=1, bias=cb)),
        ("sum", nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0]))),
        ("avg", nir.AvgPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0]))),
        ("flat", nir.Flatten(input_type={"input": np.array([3, 2, 2])}, start_dim=0)),
        ("lin", nir.Linear(lw)), ("scale", nir.Scale(sc)),
        ("if", nir.IF(r=r_if, v_threshold=th_if)), ("aff", nir.Affine(aw, ab)),
        ("li", nir.LI(tau=tau_li, r=r_li, v_leak=vl_li)), ("int", nir.I(r=r_i)),
        ("thr", nir.Threshold(th)), ("output", nir.Output(np.array([4]))))
    g = _graph(nodes, edges, tmp_path)
    x = torch.rand(3, T, 2, 8, 8, dtype=torch.float64)
    out, spikes = run_graph(g, x, T, dt=dt, dtype=torch.float64)
    d = {k: torch.from_numpy(v) for k, v in dict(cw=cw, cb=cb, lw=lw, sc=sc, aw=aw, ab=ab,
                                                    r_if=r_if, th_if=th_if, tau_li=tau_li,
                                                    r_li=r_li, vl_li=vl_li, r_i=r_i,
                                                    th=th).items()}
    v_if = v_li = v_i = torch.zeros(1, dtype=torch.float64)
    total = 0
    for t in range(T):
        h = F.avg_pool2d(F.conv2d(x[:, t], d["cw"], d["cb"], padding=1), 2) * 4  # sum pool
        h = (F.avg_pool2d(h, 2).flatten(1) @ d["lw"].T) * d["sc"]
        v_if = v_if + dt * d["r_if"] * h
        s = v_if > d["th_if"]
        v_if = torch.where(s, 0.0, v_if)
        assert torch.equal(spikes["if"][t], s.double()), t
        h = s.double() @ d["aw"].T + d["ab"]
        v_li = v_li + dt / d["tau_li"] * (d["vl_li"] - v_li + d["r_li"] * h)
        v_i = v_i + dt * d["r_i"] * v_li
        z = (v_i > d["th"]).double()
        assert torch.equal(spikes["thr"][t], z), t
        total = total + z
    assert torch.allclose(out, total / T)


# --- bad input ------------------------------------------------------------------------------


@pytest.fixture()
def good(tmp_path):
    path = tmp_path / "good.nir"
    write_nir(export_nir(build_model(default_config("digits-cnn", width=2)).eval(), (1, 8, 8),
                         2), path)
    return path


def _cli_rc(path, *extra) -> int:
    return main(["simulate", str(path), "--backend", "nir", "--samples", "4", *extra])


def test_truncated_and_garbage_files(good, tmp_path):
    data = good.read_bytes()
    for i, blob in enumerate((data[: len(data) // 2], b"hello, not a graph", b"")):
        bad = tmp_path / f"bad{i}.nir"
        bad.write_bytes(blob)
        with pytest.raises(DaLifError, match=str(bad.name)):
            read_nir(bad)
        assert _cli_rc(bad) == 2
    assert _cli_rc(good) == 0


def test_unknown_node_type(good):
    with h5py.File(good, "r+") as f:
        del f["node/nodes/lif1/type"]
        f["node/nodes/lif1"].create_dataset("type", data="SpikingTransformer",
                                            dtype=h5py.string_dtype())
    with pytest.raises(DaLifError, match="SpikingTransformer.*lif1"):
        read_nir(good)
    assert _cli_rc(good) == 2


def test_shape_mismatch(tmp_path):
    nodes, edges = _chain(("input", nir.Input(np.array([4]))),
                          ("fc", nir.Affine(np.ones((3, 5)), np.zeros(3))),
                          ("output", nir.Output(np.array([3]))))
    with pytest.raises(DaLifError, match="shape mismatch at node 'fc'"):
        _graph(nodes, edges, tmp_path)
    assert _cli_rc(tmp_path / "g.nir", "--dt", "1") == 2


def _loop_lif(name="lif"):
    return nir.LIF(tau=np.full(3, 2.0), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3))


def test_recurrent_loop_through_one_neuron_is_read(tmp_path):
    """A loop through one neuron is read: its recurrent edge is the neuron's edge into the loop,
    the execution order runs the loop (fed by the previous step) before the neuron, and the
    reading order and shapes follow the edges."""
    from dalif_deploy.converters.ir.graph import reading_order, recurrent_edges, topo_order

    nodes = {"input": nir.Input(np.array([3])), "fc": nir.Affine(np.eye(3), np.zeros(3)),
             "lif": _loop_lif(), "rec": nir.Linear(np.eye(3)), "output": nir.Output(np.array([3]))}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    g = _graph(nodes, edges, tmp_path)
    assert recurrent_edges(g) == [("lif", "rec")]
    assert topo_order(g) == ["input", "rec", "fc", "lif", "output"]
    assert reading_order(g) == ["input", "fc", "lif", "rec", "output"]
    assert infer_shapes(g)["rec"] == (3,)


def test_loop_shape_mismatch_and_bad_nested_subgraphs_are_refused(tmp_path):
    """A loop whose recurrent map changes the shape, and a nested subgraph without its Output
    node: one error each, naming the node."""
    nodes = {"input": nir.Input(np.array([3])), "fc": nir.Affine(np.eye(3), np.zeros(3)),
             "lif": _loop_lif(), "rec": nir.Linear(np.ones((4, 3))),
             "output": nir.Output(np.array([3]))}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    with pytest.raises(DaLifError, match=r"node 'lif': the recurrent input from 'rec' has "
                                         r"shape \(4,\), its other inputs \(3,\)"):
        _graph(nodes, edges, tmp_path)
    sub = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "lif": _loop_lif()},
                       edges=[("input", "lif")], type_check=False)
    outer = {"input": nir.Input(np.array([3])), "layer": sub, "output": nir.Output(np.array([3]))}
    nir.write(tmp_path / "nested.nir", nir.NIRGraph(
        nodes=outer, edges=[("input", "layer"), ("layer", "output")], type_check=False))
    with pytest.raises(DaLifError, match="nested subgraph 'layer' needs exactly one Input and "
                                         r"one Output node, has inputs \['input'\] and "
                                         r"outputs \[\]"):
        read_nir(tmp_path / "nested.nir")


@pytest.mark.parametrize(("extra", "match"), [
    ({"fc2": nir.Affine(np.eye(3), np.zeros(3))},
     r"cycle through \['fc', 'fc2'\] with no neuron in it: a loop of stateless nodes has no "
     r"previous step to read, so its value is undefined \(an algebraic loop\)"),
    ({"lif2": _loop_lif()},
     r"cycle through \['fc', 'lif', 'lif2'\] with 2 neurons \['lif', 'lif2'\] in it: which "
     r"of its edges carries the one-step delay is not defined"),
])
def test_loops_without_one_neuron_are_refused_saying_why(extra, match, tmp_path):
    """A cycle of stateless nodes (an algebraic loop) or through two neurons: one error saying
    exactly what and why, from every command (here read_nir and simulate)."""
    (k, node), = extra.items()
    nodes = {"input": nir.Input(np.array([3])), "fc": nir.Affine(np.eye(3), np.zeros(3)),
             "lif": _loop_lif(), k: node, "output": nir.Output(np.array([3]))}
    back = ("fc2", "fc") if k == "fc2" else ("lif2", "fc")
    edges = [("input", "fc"), ("fc", "lif"), ("lif", k), back, ("lif", "output")]
    if k == "fc2":
        edges[2] = ("fc", "fc2")
    with pytest.raises(DaLifError, match=match):
        _graph(nodes, edges, tmp_path)
    nir.write(tmp_path / "bad.nir", nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    assert _cli_rc(tmp_path / "bad.nir", "--dt", "1") == 2


def test_missing_dt_and_nan(tmp_path):
    nodes, edges = _chain(("input", nir.Input(np.array([1, 8, 8]))),
                          ("flat", nir.Flatten(input_type={"input": np.array([1, 8, 8])},
                                               start_dim=0)),
                          ("fc", nir.Affine(np.ones((10, 64)), np.zeros(10))),
                          ("output", nir.Output(np.array([10]))))
    _graph(nodes, edges, tmp_path, "foreign.nir")
    assert _cli_rc(tmp_path / "foreign.nir") == 2  # no dt, no metadata
    nodes["fc"] = nir.Affine(np.full((10, 64), np.nan), np.zeros(10))
    with pytest.raises(DaLifError, match="NaN"):
        _graph(nodes, edges, tmp_path, "nan.nir")


@pytest.mark.parametrize("stride", [np.array([2, 2, 5]), None])
def test_malformed_pooling_pair_is_refused(stride, tmp_path):
    """A stride that is neither an int nor a pair (three entries, or None in memory) must be a
    DaLifError naming the node, not silently cut to two entries or a raw TypeError."""
    from dalif_deploy.converters.ir.graph import validate

    nodes, edges = _chain(("input", nir.Input(np.array([1, 4, 4]))),
                          ("pool", nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=stride,
                                                 padding=np.array([0, 0]))),
                          ("output", nir.Output(np.array([1, 2, 2]))))
    with pytest.raises(DaLifError, match="pool.*stride"):
        validate(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    if stride is not None:  # files cannot hold None
        with pytest.raises(DaLifError, match="pool.*stride"):
            _graph(nodes, edges, tmp_path)
