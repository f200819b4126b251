"""The NIR operation table (converters/nir_ops): every node type in it, alone in a tiny generated
graph, goes through nir.write -> read_nir -> infer_shapes -> run_graph and matches an independent
numpy reference of its equation; read_nir accepts exactly the table's node types."""

from __future__ import annotations

from collections.abc import Callable

import h5py
import nir
import numpy as np
import pytest
import torch
from dalif_deploy.converters.ir.graph import infer_shapes, read_nir
from dalif_deploy.converters.ir.ops import OPS, NodeOp, op_for, register, supported_names
from dalif_deploy.converters.nir_to_torch import run_graph

from dalif_deploy.base.errors import DaLifError

DT, T, B = 0.5, 5, 3
#: float64 run against a float64 numpy reference: only summation order differs
TOL = 1e-12

Ref = Callable[[np.ndarray], np.ndarray]  # x [B, T, *in] -> outputs [T, B, *out]


def _per_step(f: Callable[[np.ndarray], np.ndarray]) -> Ref:
    return lambda x: np.stack([f(x[:, t]) for t in range(x.shape[1])])


def _np_window(x: np.ndarray, k, s, p, d=(1, 1)):
    """Windows of a zero-padded [B, C, H, W] batch: [B, C, H', W', kh, kw]."""
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    ho = (xp.shape[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (xp.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    out = np.empty((*x.shape[:2], ho, wo, *k))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = xp[:, :, i * s[0]:i * s[0] + d[0] * (k[0] - 1) + 1:d[0],
                                 j * s[1]:j * s[1] + d[1] * (k[1] - 1) + 1:d[1]]
    return out


def _case_io(rng):
    return (3, 4), nir.Input(np.array([3, 4])), _per_step(lambda x: x)


def _case_affine(rng):
    w, b = rng.normal(size=(3, 5)), rng.normal(size=3)
    return (5,), nir.Affine(w, b), _per_step(lambda x: x @ w.T + b)


def _case_linear(rng):
    w = rng.normal(size=(3, 5))
    return (5,), nir.Linear(w), _per_step(lambda x: x @ w.T)


def _case_scale(rng):
    s = rng.uniform(-2, 2, size=5)
    return (5,), nir.Scale(s), _per_step(lambda x: x * s)


def _case_conv(rng):
    """Grouped, non-square, strided, padded and dilated: every geometry field matters."""
    w, b = rng.normal(size=(4, 2, 3, 2)), rng.normal(size=4)
    k, s, p, d = (3, 2), (2, 1), (1, 0), (1, 2)

    def f(x):
        win = _np_window(x, k, s, p, d)  # [B, 4, H', W', 3, 2]
        groups = [np.einsum("bchwyx,ocyx->bohw", win[:, 2 * g:2 * g + 2], w[2 * g:2 * g + 2])
                  for g in range(2)]
        return np.concatenate(groups, axis=1) + b.reshape(-1, 1, 1)
    node = nir.Conv2d(input_shape=(7, 6), weight=w, stride=s, padding=p, dilation=d, groups=2,
                      bias=b)
    return (4, 7, 6), node, _per_step(f)


def _pool(cls, divide: bool):
    def case(rng):
        k, s, p = (2, 3), (2, 1), (1, 1)
        node = cls(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))
        return (2, 5, 6), node, _per_step(
            lambda x: _np_window(x, k, s, p).sum((4, 5)) / (k[0] * k[1] if divide else 1))
    return case


def _case_flatten(rng):
    node = nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=1, end_dim=2)
    return (2, 3, 4), node, _per_step(lambda x: x.reshape(x.shape[0], 2, 12))


def _case_threshold(rng):
    th = rng.choice([0.25, 0.5, 0.75], size=6)  # on the input grid: x == th must not fire
    return (6,), nir.Threshold(th), _per_step(lambda x: (x > th).astype(float))


def _euler(x: np.ndarray, step) -> np.ndarray:
    """Run ``step(state, x_t) -> (out, state)`` over T from the zero state."""
    state, outs = None, []
    for t in range(x.shape[1]):
        out, state = step(state, x[:, t])
        outs.append(out)
    return np.stack(outs)


def _spike(v, th, reset):
    s = v > th
    return s.astype(float), np.where(s, reset, v)


def _case_lif(rng):
    tau, r, vl = rng.uniform(1, 3, 6), rng.uniform(0.5, 2, 6), rng.normal(0, 0.1, 6)
    th, reset = rng.uniform(0.2, 0.4, 6), np.full(6, -0.1)

    def step(v, x):
        v = (0 if v is None else v)
        return _spike(v + DT / tau * (vl - v + r * x), th, reset)
    node = nir.LIF(tau=tau, r=r, v_leak=vl, v_threshold=th, v_reset=reset)
    return (6,), node, lambda x: _euler(x, step)


def _case_cubalif(rng):
    ts, tm, r = rng.uniform(1, 3, 6), rng.uniform(1, 3, 6), rng.uniform(0.5, 2, 6)
    vl, w_in = rng.normal(0, 0.1, 6), rng.uniform(0.5, 2, 6)
    th, reset = rng.uniform(0.1, 0.3, 6), np.full(6, 0.05)

    def step(state, x):
        i, v = state if state is not None else (0, 0)
        i = i + DT / ts * (w_in * x - i)
        s, v = _spike(v + DT / tm * (vl - v + r * i), th, reset)
        return s, (i, v)
    node = nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=r, v_leak=vl, v_threshold=th, v_reset=reset,
                       w_in=w_in)
    return (6,), node, lambda x: _euler(x, step)


def _case_if(rng):
    """v moves on a grid of 1/8 and reaches the threshold exactly: v == th must not fire."""
    r, th, reset = np.ones(6), rng.choice([0.5, 0.625], size=6), np.full(6, -0.25)

    def step(v, x):
        return _spike((0 if v is None else v) + DT * r * x, th, reset)
    return (6,), nir.IF(r=r, v_threshold=th, v_reset=reset), lambda x: _euler(x, step)


def _case_li(rng):
    tau, r, vl = rng.uniform(1, 3, 6), rng.uniform(0.5, 2, 6), rng.normal(0, 0.5, 6)

    def step(v, x):
        v = (0 if v is None else v)
        v = v + DT / tau * (vl - v + r * x)
        return v, v
    return (6,), nir.LI(tau=tau, r=r, v_leak=vl), lambda x: _euler(x, step)


def _case_i(rng):
    r = rng.uniform(0.5, 2, 6)

    def step(v, x):
        v = (0 if v is None else v) + DT * r * x
        return v, v
    return (6,), nir.I(r=r), lambda x: _euler(x, step)


#: one generated case per node type of the table: (input shape, the node, numpy reference)
CASES = {"Input": _case_io, "Output": _case_io, "Affine": _case_affine, "Linear": _case_linear,
         "Scale": _case_scale, "Conv2d": _case_conv, "SumPool2d": _pool(nir.SumPool2d, False),
         "AvgPool2d": _pool(nir.AvgPool2d, True), "Flatten": _case_flatten,
         "Threshold": _case_threshold, "LIF": _case_lif, "CubaLIF": _case_cubalif,
         "IF": _case_if, "LI": _case_li, "I": _case_i}


def _tiny_graph(tmp_path, node_type: str, seed: int):
    """Input -> node -> Output written with nir.write and read back with read_nir."""
    rng = np.random.default_rng(seed)
    in_shape, node, ref = CASES[node_type](rng)
    probe = ref(np.zeros((1, 1, *in_shape)))
    out_shape = probe.shape[2:]
    nodes = {"input": nir.Input(np.array(in_shape)), "output": nir.Output(np.array(out_shape))}
    edges = [("input", "output")]
    if not isinstance(node, nir.Input):
        nodes["node"] = node
        edges = [("input", "node"), ("node", "output")]
    path = tmp_path / f"{node_type}.nir"
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return read_nir(path), in_shape, out_shape, ref, rng


@pytest.mark.parametrize("node_type", supported_names())
def test_node_type_follows_its_equation(node_type, tmp_path):
    """Each step's output of every node type equals its numpy reference (float64, within TOL);
    spikes are compared exactly."""
    if node_type not in CASES:
        pytest.fail(f"no test case for NIR node type {node_type}: add one to CASES")
    graph, in_shape, out_shape, ref, rng = _tiny_graph(tmp_path, node_type, seed=10)
    shapes = infer_shapes(graph)
    assert shapes["output"] == tuple(out_shape)
    x = np.round(rng.uniform(0, 1, size=(B, T, *in_shape)) * 4) / 4  # exact on a 1/4 grid
    want = ref(x)  # [T, B, *out]
    op = OPS[getattr(nir, node_type)]
    if op.spiking:
        rate = float(want.mean())
        assert 0.05 < rate < 0.95, f"the case must spike sometimes, rate {rate}"
    xt = torch.from_numpy(x)
    for t in range(1, T + 1):  # the readout is the mean over T: each prefix pins one step
        mean, spikes = run_graph(graph, xt[:, :t], t, dt=DT, dtype=torch.float64)
        np.testing.assert_allclose(mean.numpy(), want[:t].mean(0), rtol=TOL, atol=TOL)
    assert sorted(spikes) == (["node"] if op.spiking else [])
    if op.spiking:
        assert np.array_equal(spikes["node"].numpy(), want)


def _nir_node_classes() -> list[str]:
    return sorted(n for n, c in vars(nir).items() if isinstance(c, type)
                  and issubclass(c, nir.NIRNode) and c is not nir.NIRGraph)


def test_table_holds_nir_node_classes_only():
    assert set(supported_names()) <= set(_nir_node_classes())
    assert all(op.nir_type is cls and isinstance(op, NodeOp) for cls, op in OPS.items())


@pytest.mark.parametrize("node_type", _nir_node_classes())
def test_read_nir_accepts_exactly_the_table(node_type, tmp_path):
    """A file node of each nir class: refused as unsupported exactly when the table lacks it."""
    path = tmp_path / "g.nir"
    nodes = {"input": nir.Input(np.array([3])), "fc": nir.Affine(np.eye(3), np.zeros(3)),
             "output": nir.Output(np.array([3]))}
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "output")]))
    with h5py.File(path, "r+") as f:
        del f["node/nodes/fc/type"]
        f["node/nodes/fc"].create_dataset("type", data=node_type, dtype=h5py.string_dtype())
    if node_type in supported_names():
        try:
            read_nir(path)  # an Affine's fields under another supported type may not fit
        except DaLifError as e:
            assert "unsupported" not in str(e), e
    else:
        with pytest.raises(DaLifError, match=f"unsupported node type '{node_type}' at node 'fc'"):
            read_nir(path)


def test_op_lookup_names_an_unsupported_node():
    with pytest.raises(DaLifError, match="node 'd': unsupported node type Delay; supported: In"):
        op_for(nir.Delay(np.ones(3)), "d")


def test_a_node_type_is_registered_once():
    class Again(NodeOp):
        nir_type = nir.LIF

    with pytest.raises(DaLifError, match="LIF is registered twice"):
        register(Again)
    assert type(OPS[nir.LIF]).__name__ == "LIFOp"


def test_run_graph_records_one_spike_nodes_as_uint8_and_keeps_counts_whole():
    """``spike_dtype=torch.uint8`` (verify's float reference) stores a one-spike node's 0/1
    spikes as uint8 and a multi-spike node's counts, here over 255, in the graph's dtype: equal
    to the unconverted run's, none wrapped."""
    nodes = {"in": nir.Input(np.array([2])),
             "fc1": nir.Affine(np.array([[400.0, 0.0], [0.0, 1.0]]), np.zeros(2)),
             "n1": nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.zeros(2),
                          metadata={"multi_spike": True}),
             "fc2": nir.Affine(np.eye(2), np.zeros(2)),
             "n2": nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.zeros(2)),
             "out": nir.Output(np.array([2]))}
    graph = nir.NIRGraph(nodes, [("in", "fc1"), ("fc1", "n1"), ("n1", "fc2"), ("fc2", "n2"),
                                 ("n2", "out")])
    x = torch.tensor([[1.0, 1.0], [0.9, 0.0]])
    ref_out, ref = run_graph(graph, x, 3, dt=1.0)
    out, got = run_graph(graph, x, 3, dt=1.0, spike_dtype=torch.uint8)
    assert torch.equal(out, ref_out)
    assert got["n2"].dtype == torch.uint8 and torch.equal(got["n2"].float(), ref["n2"])
    assert got["n1"].dtype == torch.float32 and torch.equal(got["n1"], ref["n1"])
    assert ref["n1"].max() >= 360 and ref["n2"].max() == 1


def test_neuron_parameters_keep_their_smallest_broadcast_shape_and_every_value():
    """A neuron parameter the same for every neuron becomes one value, one the same within
    each channel a (C, 1, 1) column, else it stays whole; -0.0 is not 0.0 and NaN is kept. A
    conv LIF graph with per-channel and per-neuron parameters runs bit for bit as with whole
    layer-shaped parameters."""
    from dalif_deploy.converters.ir import neuron_math

    full = np.ones((3, 4, 5))
    assert neuron_math.neuron_param(2 * full, torch.float32).shape == ()
    per_c = full * np.array([1.0, 2.0, 3.0])[:, None, None]
    got = neuron_math.neuron_param(per_c, torch.float32)
    assert got.shape == (3, 1, 1) and got.flatten().tolist() == [1.0, 2.0, 3.0]
    signed = np.zeros((3, 4, 5))
    signed[1, 2, 3] = -0.0
    assert neuron_math.neuron_param(signed, torch.float32).shape == (3, 4, 5)
    nan = full.copy()
    nan[0, 0, 0] = np.nan
    assert torch.isnan(neuron_math.neuron_param(nan, torch.float32)).any()

    rng = np.random.default_rng(3)
    shape = (3, 6, 6)
    tau = np.broadcast_to(rng.uniform(2, 5, (3, 1, 1)), shape).copy()
    thr = np.full(shape, 0.8)
    thr[2, 1, 1] = 0.7  # one neuron of its own: this parameter stays whole
    nodes = {"in": nir.Input(np.array([2, 6, 6])),
             "conv": nir.Conv2d((6, 6), rng.normal(0, 1, (3, 2, 3, 3)), 1, 1, 1, 1,
                                np.zeros(3)),
             "lif": nir.LIF(tau=tau, r=np.ones(shape), v_leak=np.full(shape, 0.1),
                            v_threshold=thr, v_reset=np.zeros(shape)),
             "out": nir.Output(np.array(shape))}
    graph = nir.NIRGraph(nodes, [("in", "conv"), ("conv", "lif"), ("lif", "out")])
    x = torch.rand(4, 2, 6, 6) * 2
    out, spikes = run_graph(graph, x, 5, dt=1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(neuron_math, "neuron_param", neuron_math.tensor)
        whole_out, whole = run_graph(graph, x, 5, dt=1.0)
    assert torch.equal(out, whole_out) and torch.equal(spikes["lif"], whole["lif"])
    assert 0 < int(spikes["lif"].sum()) < spikes["lif"].numel()


#: where a GraphRunner may be placed: "meta" (shapes only, on any machine: a parameter left on
#: the host fails a step there, as it would on a GPU) and cuda where there is one
RUNNER_DEVICES = ["meta", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here: meta checks the placement"))]


@pytest.mark.parametrize("device", RUNNER_DEVICES)
@pytest.mark.parametrize("node_type", supported_names())
def test_every_node_type_runs_on_the_device_its_runner_is_placed_on(node_type, device,
                                                                    tmp_path, monkeypatch):
    """run_graph(device=...) builds every node's parameters there and returns the readout and
    spikes there (verify's NIR reference on --device cuda); on cuda the values equal the
    CPU's within TOL. On meta the in-place reset's fast-path test (a data-dependent v.max())
    cannot run and is turned off: the general path computes the same values."""
    from dalif_deploy.neurons import protocol

    graph, in_shape, out_shape, _, rng = _tiny_graph(tmp_path, node_type, seed=10)
    x = torch.from_numpy(np.round(rng.uniform(0, 1, size=(B, T, *in_shape)) * 4) / 4)
    if device == "meta":
        monkeypatch.setattr(protocol, "_zero_reset_is_a_product", lambda *a: False)
    mean, spikes = run_graph(graph, x, T, dt=DT, dtype=torch.float64, device=device)
    assert mean.device.type == device and tuple(mean.shape) == (B, *out_shape)
    assert all(s.device.type == device for s in spikes.values())
    if device == "cuda":
        ref_mean, ref_spikes = run_graph(graph, x, T, dt=DT, dtype=torch.float64)
        np.testing.assert_allclose(mean.cpu().numpy(), ref_mean.numpy(), rtol=TOL, atol=TOL)
        assert {k: v.cpu().tolist() for k, v in spikes.items()} == \
            {k: v.tolist() for k, v in ref_spikes.items()}
