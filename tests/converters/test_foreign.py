"""Foreign NIR graphs (issue 13): graphs in the shape snnTorch, Sinabs and Norse export them,
generated here with nir alone (no framework at test time), run with ``--from`` on the nir and
norse backends and compared with an independent numpy simulation of the exporting framework's
own equations; the dt/tau refusal; data sets from an .npz, hostile ones included.

The numpy references use each framework's own parameters (snnTorch's ``beta``, Sinabs' ``tau``
counted in steps with exact decay, Norse's ``tau_mem_inv``), spike on ``v > threshold`` and
reset to 0 in the step of the spike, which is what NIR's LIF/IF say the exporter did (what
NIR cannot say, e.g. snnTorch's subtract reset, is what the printed note is about).
"""

from __future__ import annotations

import functools
import json
import os
import re
import zipfile
from pathlib import Path

import nir
import numpy as np
import pytest
from dalif_deploy.converters.ir.graph import read_nir
from dalif_deploy.converters.nir_conventions import EXPORTERS, exact_to_euler, read_conventions
from dalif_deploy.converters.torch_to_nir import export_nir, write_nir
from helpers import REPO_ROOT
from helpers.foreign_graphs import HIDDEN, conv3x3_same, prototype_readout
from helpers.hostile_files import lying_zip_sizes, npy_bytes, torch_zip
from helpers.nir_helpers import lively_model

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import load_dataset, load_npz_dataset

N = 150  # test samples per check
T_STATIC = 8  # -T for the static digits
@functools.cache
def train(name: str):
    """The first 400 training samples of ``name`` (for the prototype weights)."""
    return load_dataset(name, "train").head(400)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


def _write(path: Path, nodes: dict, edges: list | None = None) -> Path:
    names = list(nodes)
    edges = edges or list(zip(names[:-1], names[1:], strict=True))
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return path


# --- the exporters' graphs and their frameworks' own equations -----------------------------

def snntorch_mlp(rng, train) -> tuple[dict, dict]:
    """snnTorch 1.0.0 ``export_to_nir`` of Flatten -> Linear -> Leaky -> Linear -> Leaky:
    ``tau = dt/(1 - beta)``, ``r = tau/dt`` at its dt = 1e-4, full-shape tensors."""
    dt = 1e-4
    w1, b1, w2, b2 = prototype_readout(rng, train.x, train.y, 1.5)
    w2, b2 = 3 * w2, 3 * b2
    beta1, beta2 = rng.uniform(0.7, 0.95, HIDDEN), rng.uniform(0.7, 0.95, 10)

    def leaky(beta):
        tau = dt / (1 - beta)
        return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros_like(beta),
                       v_threshold=np.ones_like(beta), v_reset=np.zeros_like(beta))

    nodes = {"input": nir.Input(np.array([1, 8, 8])),
             "flat": nir.Flatten(input_type={"input": np.array([1, 8, 8])}, start_dim=0),
             "fc1": nir.Affine(w1, b1), "lif1": leaky(beta1),
             "fc2": nir.Affine(w2, b2), "lif2": leaky(beta2), "output": nir.Output(np.array([10]))}
    return nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "beta1": beta1, "beta2": beta2}


def snntorch_reference(p: dict, x: np.ndarray, T: int) -> np.ndarray:
    """snnTorch Leaky: ``mem = beta mem + W s + b``, spike ``mem > 1``, reset to 0; readout the
    output spike count (static input every step)."""
    s0 = x.reshape(len(x), -1).astype(np.float64)
    m1, m2, count = np.zeros((len(x), HIDDEN)), np.zeros((len(x), 10)), np.zeros((len(x), 10))
    for _ in range(T):
        m1 = p["beta1"] * m1 + s0 @ p["w1"].T + p["b1"]
        s1 = (m1 > 1).astype(np.float64)
        m1[s1 > 0] = 0
        m2 = p["beta2"] * m2 + s1 @ p["w2"].T + p["b2"]
        s2 = (m2 > 1).astype(np.float64)
        m2[s2 > 0] = 0
        count += s2
    return count.argmax(1)


def sinabs_convnet(rng, train) -> tuple[dict, dict]:
    """Sinabs 3.1.3 ``to_nir`` (after the repairs nir.write needs) of Conv2d -> LIF -> Flatten
    -> Linear -> IAF -> Linear: tau counted in steps (dt = 1), r = 1, the IAF as a NIR IF."""
    c = 4
    wc = rng.normal(0, 1.2, (c, 2, 3, 3))
    bc = rng.normal(0.0, 0.05, c)
    tau = np.repeat(rng.uniform(1.5, 6.0, c), 64).reshape(c, 8, 8)
    p = {"wc": wc, "bc": bc, "tau": tau}
    w1, b1, w2, b2 = prototype_readout(rng, sinabs_features(p, train.x).mean(0), train.y, 2.0)
    p.update(w1=w1, b1=b1, w2=w2, b2=b2)
    nodes = {"input": nir.Input(np.array([2, 8, 8])),
             "conv": nir.Conv2d(input_shape=(8, 8), weight=wc, stride=1, padding=1,
                                dilation=1, groups=1, bias=bc),
             "lif": nir.LIF(tau=tau, r=np.ones_like(tau), v_leak=np.zeros_like(tau),
                            v_threshold=np.ones_like(tau), v_reset=np.zeros_like(tau)),
             "flat": nir.Flatten(input_type={"input": np.array([c, 8, 8])}, start_dim=0),
             "fc1": nir.Affine(w1, b1),
             "iaf": nir.IF(r=np.ones(HIDDEN), v_threshold=np.ones(HIDDEN),
                           v_reset=np.zeros(HIDDEN)),
             "fc2": nir.Affine(w2, b2), "output": nir.Output(np.array([10]))}
    return nodes, p


def sinabs_features(p: dict, x: np.ndarray) -> np.ndarray:
    """Sinabs LIF (norm_input) after the conv: ``v = a v + (1 - a) I``, ``a = exp(-1/tau)``,
    spike ``v > 1``, reset to 0; returns its spikes ``[T, B, C*H*W]``."""
    a = np.exp(-1.0 / p["tau"])
    v, out = np.zeros((len(x), *a.shape)), []
    for t in range(x.shape[1]):
        v = a * v + (1 - a) * conv3x3_same(x[:, t].astype(np.float64), p["wc"], p["bc"])
        s = (v > 1).astype(np.float64)
        v[s > 0] = 0
        out.append(s.reshape(len(x), -1))
    return np.stack(out)


def sinabs_reference(p: dict, x: np.ndarray) -> np.ndarray:
    """:func:`sinabs_features`, then Sinabs IAF ``v = v + I`` (one spike per step, as the NIR
    IF says), spike ``v > 1``, reset to 0; readout the mean of the last Linear over the event
    frames."""
    u, out = np.zeros((len(x), HIDDEN)), np.zeros((len(x), 10))
    for s in sinabs_features(p, x):
        u = u + s @ p["w1"].T + p["b1"]
        s1 = (u > 1).astype(np.float64)
        u[s1 > 0] = 0
        out += s1 @ p["w2"].T + p["b2"]
    return out.argmax(1)


def norse_mlp(rng, train) -> tuple[dict, dict]:
    """Norse 1.1.0's LIFBox export: ``tau = 1/tau_mem_inv`` (its default 100/s, here varied),
    r = 1, at its dt = 1e-3; Linear readout."""
    in_shape = tuple(train.input_shape)
    feats = train.x.mean(1) if train.x.ndim == 5 else train.x  # events: the mean frame
    w1, b1, w2, b2 = prototype_readout(rng, feats, train.y, 3.0)
    inv = rng.uniform(50, 200, HIDDEN)  # tau_mem_inv
    nodes = {"input": nir.Input(np.array(in_shape)),
             "flat": nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0),
             "fc1": nir.Affine(w1, b1),
             "lif": nir.LIF(tau=1 / inv, r=np.ones(HIDDEN), v_leak=np.zeros(HIDDEN),
                            v_threshold=np.ones(HIDDEN), v_reset=np.zeros(HIDDEN)),
             "fc2": nir.Affine(w2, b2), "output": nir.Output(np.array([10]))}
    return nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "inv": inv}


def norse_reference(p: dict, x: np.ndarray, T: int, events: bool) -> np.ndarray:
    """Norse LIFBox: ``v = v + dt tau_mem_inv (0 - v + I)``, spike ``v > 1``, reset 0."""
    v, out = np.zeros((len(x), HIDDEN)), np.zeros((len(x), 10))
    for t in range(T):
        frame = (x[:, t] if events else x).reshape(len(x), -1).astype(np.float64)
        v = v + 1e-3 * p["inv"] * (-v + frame @ p["w1"].T + p["b1"])
        s = (v > 1).astype(np.float64)
        v[s > 0] = 0
        out += s @ p["w2"].T + p["b2"]
    return out.argmax(1)


# --- the data ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """The digits and digits-events test splits, and each written by our `dataset` command."""
    d = tmp_path_factory.mktemp("data")
    out = {}
    for name in ("digits", "digits-events"):
        path = d / f"{name}.npz"
        assert main(["dataset", name, "-o", str(path)]) == 0
        out[name] = (load_dataset(name).head(N), path)
    return out


def _simulate(graph: Path, backend: str, dataset: Path, *extra: str) -> dict:
    out = graph.with_suffix(f".{backend}.json")
    rc = main(["simulate", str(graph), "--backend", backend, "--dataset", str(dataset),
               "--samples", str(N), "--json", str(out), *extra])
    assert rc == 0
    return json.loads(out.read_text())


# --- predictions equal the framework's own equations ---------------------------------------

def test_snntorch_graph_equals_snntorch_on_nir_and_norse(tmp_path, data, capsys):
    nodes, p = snntorch_mlp(np.random.default_rng(1), train("digits"))
    g = _write(tmp_path / "snn.nir", nodes)
    ds, npz = data["digits"]
    want = snntorch_reference(p, ds.x, T_STATIC)
    assert len(set(want.tolist())) >= 6  # a lively network, not one constant class
    for backend in ("nir", "norse"):
        res = _simulate(g, backend, npz, "--from", "snntorch", "-T", str(T_STATIC))
        assert res["predictions"] == want.tolist(), backend
        assert res["exporter"] == "snntorch" and res["dt"] == 1e-4
        assert res["timesteps"] == T_STATIC
        assert any("subtract reset" in line for line in res["conventions"])
    assert "subtract reset" in capsys.readouterr().err  # said when the graph is read


def test_sinabs_graph_equals_sinabs_only_with_exact_decay(tmp_path, data, capsys):
    nodes, p = sinabs_convnet(np.random.default_rng(2), train("digits-events"))
    g = _write(tmp_path / "sinabs.nir", nodes)
    ds, npz = data["digits-events"]
    want = sinabs_reference(p, ds.x)
    assert len(set(want.tolist())) >= 6
    for backend in ("nir", "norse"):  # norse used to crash on event data for foreign graphs
        res = _simulate(g, backend, npz, "--from", "sinabs")
        assert res["predictions"] == want.tolist(), backend
        assert res["dt"] == 1.0 and res["timesteps"] == ds.x.shape[1]
        assert res["encoding"] == "events"
        assert any("one-spike NIR IF" in line for line in res["conventions"])
    # the same graph read as plain Euler NIR at dt = 1 is not what Sinabs computed
    euler = _simulate(g, "nir", npz, "--from", "nir", "--dt", "1")
    assert euler["predictions"] != want.tolist()
    assert "one-spike NIR IF" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["digits", "digits-events"])
def test_norse_graph_equals_norse(tmp_path, data, dataset):
    ds, npz = data[dataset]
    events = ds.x.ndim == 5
    nodes, p = norse_mlp(np.random.default_rng(3), train(dataset))
    g = _write(tmp_path / "norse.nir", nodes)
    T = ds.x.shape[1] if events else T_STATIC
    want = norse_reference(p, ds.x, T, events)
    assert len(set(want.tolist())) >= 6
    extra = () if events else ("-T", str(T))
    for backend in ("nir", "norse"):
        res = _simulate(g, backend, npz, "--from", "norse", *extra)
        assert res["predictions"] == want.tolist(), backend
        assert res["dt"] == 1e-3


def test_exact_decay_rewrite():
    """``tau -> dt/(1 - e^(-dt/tau))``: Euler's decay and gain become the exact ones."""
    tau = np.array([0.5, 1.0, 2.0, 30.0])
    for dt in (1.0, 0.1):
        t2 = exact_to_euler(tau, dt)
        np.testing.assert_allclose(1 - dt / t2, np.exp(-dt / tau), rtol=1e-12)
        np.testing.assert_allclose(dt / t2, 1 - np.exp(-dt / tau), rtol=1e-12)
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([4])),
                            "lif": nir.LIF(tau=tau, r=np.ones(4), v_leak=np.zeros(4),
                                           v_threshold=np.ones(4)),
                            "output": nir.Output(np.array([4]))},
                     edges=[("input", "lif"), ("lif", "output")], type_check=False)
    reading = read_conventions(g, "sinabs")
    np.testing.assert_allclose(reading.graph.nodes["lif"].tau, exact_to_euler(tau, 1.0))
    np.testing.assert_array_equal(g.nodes["lif"].tau, tau)  # the caller's graph is untouched
    assert set(EXPORTERS) == {"snntorch", "sinabs", "spikingjelly", "norse", "nir"}


# --- refusals --------------------------------------------------------------------------------

def test_dt_that_leaves_the_unit_interval_is_refused(tmp_path, data, capsys):
    nodes, _ = snntorch_mlp(np.random.default_rng(1), train("digits"))
    g = _write(tmp_path / "snn.nir", nodes)
    graph = read_nir(g)
    with pytest.raises(DaLifError, match=r"node 'lif1' \(LIF\): dt/tau = .* leaves \(0, 1\].*"
                                         r"--from snntorch"):
        read_conventions(graph, "nir", 1.0)  # decay 1 - dt/tau ~ -5: chance accuracy before
    with pytest.raises(DaLifError, match=r"node 'lif1'.*leaves \(0, 1\]"):
        read_conventions(graph, "norse")  # Norse's dt 1e-3 on an snnTorch graph
    for argv in (["simulate", str(g), "--backend", "nir", "--dt", "1", "-T", "4"],
                 ["simulate", str(g), "--backend", "norse", "--from", "norse", "-T", "4"],
                 ["quantize", str(g), "-o", str(tmp_path / "q.fxp"), "--from", "nir", "--dt",
                  "1", "-T", "4", "--encoding", "analog"]):
        assert main(argv) == 2
        assert "leaves (0, 1]" in _one_error(capsys)


def test_foreign_graph_refusals(tmp_path, data, capsys):
    nodes, _ = snntorch_mlp(np.random.default_rng(1), train("digits"))
    g = _write(tmp_path / "snn.nir", nodes)
    graph = read_nir(g)
    with pytest.raises(DaLifError, match="unknown exporter"):
        read_conventions(graph, "rockpool")
    with pytest.raises(DaLifError, match="--from.*--dt"):
        read_conventions(graph, "nir")
    cases = [(["--from", "snntorch"], r"no dalif-deploy metadata.*number of timesteps \(-T\)"),
             (["--from", "torch2"], "unknown exporter"),
             (["--from", "snntorch", "-T", "0"], r"--timesteps: must be an integer in \[1,"),
             (["--from", "snntorch", "-T", "8", "--dataset", str(data["digits-events"][1])],
              r"takes any input \(1, 8, 8\).*gives events \(2, 8, 8\)"),
             (["--from", "sinabs", "-T", "3", "--dataset", str(data["digits-events"][1])],
              "the events have T = 8, the model runs T = 3")]
    for extra, pattern in cases:
        assert main(["simulate", str(g), "--backend", "nir", "--samples", "5", *extra]) == 2
        line = _one_error(capsys)
        assert re.search(pattern, line), line
    ours = tmp_path / "ours.nir"
    write_nir(export_nir(lively_model("digits-cnn", width=4), (1, 8, 8), 3), ours)
    assert main(["simulate", str(ours), "--backend", "nir", "--from", "snntorch"]) == 2
    assert "drop --from" in _one_error(capsys)
    shipped = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"
    assert main(["simulate", str(shipped), "--backend", "torch", "--from", "snntorch"]) == 2
    assert "--from do not apply to backend 'torch'" in _one_error(capsys)


def test_quantize_reads_the_exporters_conventions(tmp_path, data):
    nodes, _ = snntorch_mlp(np.random.default_rng(1), train("digits"))
    g = _write(tmp_path / "snn.nir", nodes)
    out = tmp_path / "q.json"
    assert main(["quantize", str(g), "-o", str(tmp_path / "q.fxp"), "--from", "snntorch",
                 "-T", str(T_STATIC), "--encoding", "analog", "--calibrate",
                 str(data["digits"][1]), "--calibration-samples", "32",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["exporter"] == "snntorch" and res["timesteps"] == T_STATIC
    assert any("subtract reset" in line for line in res["conventions"])


# --- data sets from an .npz --------------------------------------------------------------------

def test_npz_written_by_dataset_loads_back(data):
    for ds, path in data.values():
        got = load_dataset(str(path)).head(N)
        np.testing.assert_array_equal(got.x, ds.x)
        np.testing.assert_array_equal(got.y, ds.y)
        assert got.encoding == ds.encoding and tuple(got.input_shape) == tuple(ds.input_shape)
        assert got.name == str(path)


def _npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


_X = np.zeros((3, 1, 8, 8), np.float32)
_E = np.zeros((3, 4, 2, 8, 8), np.float32)
_Y = np.array([0, 1, 2])

HOSTILE = {
    "no-labels": (dict(x=_X, encoding="analog"), r"missing member\(s\) \['y'\]"),
    "no-encoding": (dict(x=_X, y=_Y), r"missing member\(s\) \['encoding'\]"),
    "bad-encoding": (dict(x=_X, y=_Y, encoding="spikes"), "encoding must be"),
    "encoding-array": (dict(x=_X, y=_Y, encoding=np.array([1, 2])), "encoding: must be a string"),
    "nan": (dict(x=np.full_like(_X, np.nan), y=_Y, encoding="analog"), "NaN or Inf"),
    "float32-overflow": (dict(x=np.full(_X.shape, 1e300), y=_Y, encoding="analog"),
                         "beyond float32"),
    "complex": (dict(x=_X.astype(np.complex64), y=_Y, encoding="analog"), "real numbers"),
    "text-x": (dict(x=np.array(["a", "b", "c"]), y=_Y, encoding="analog"), "real numbers"),
    "non-binary-events": (dict(x=_E + 0.5, y=_Y, encoding="events"), "binary"),
    "events-without-T-axis": (dict(x=np.zeros((3, 64), np.float32), y=_Y, encoding="events"),
                              r"\[N, T, \*frame\]"),
    "empty": (dict(x=np.zeros((0, 1, 8, 8), np.float32), y=_Y[:0], encoding="analog"),
              "N >= 1"),
    "float-labels": (dict(x=_X, y=_Y.astype(np.float32), encoding="analog"), "integer labels"),
    "2d-labels": (dict(x=_X, y=_Y[:, None], encoding="analog"), "integer labels"),
    "negative-label": (dict(x=_X, y=np.array([0, -1, 2]), encoding="analog"), "class numbers"),
    "label-out-of-range": (dict(x=_X, y=np.array([0, 1, 12]), num_classes=10,
                                encoding="analog"), r"labels must lie in 0\.\.9"),
    "label-count": (dict(x=_X, y=_Y[:2], encoding="analog"), "3 samples in x but 2 labels"),
    "both-x-and-inputs": (dict(x=_X, inputs=_X, y=_Y, encoding="analog"), "holds both"),
    "T-disagrees": (dict(x=_E, y=_Y, encoding="events", T=5), "T = 5 but x has 4 steps"),
    "T-for-analog": (dict(x=_X, y=_Y, encoding="analog", T=4), "T given for analog"),
    "object-array": (dict(x=np.array([None, 1], dtype=object), y=_Y, encoding="analog"),
                     "Python objects"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_npz_is_refused(tmp_path, case, capsys):
    arrays, pattern = HOSTILE[case]
    path = _npz(tmp_path / f"{case}.npz", **arrays)
    with pytest.raises(DaLifError, match=pattern):
        load_npz_dataset(path)
    nodes, _ = norse_mlp(np.random.default_rng(3), train("digits"))
    g = _write(tmp_path / "g.nir", nodes)
    assert main(["simulate", str(g), "--backend", "nir", "--from", "norse", "-T", "2",
                 "--dataset", str(path)]) == 2
    assert str(path) in _one_error(capsys)


def test_hostile_npz_files(tmp_path, capsys):
    """Files that are not npz archives, or declare more than they hold, refused before any
    array is read."""
    cases = {
        "plain.npy": (lambda p: np.save(p, _X), "plain .npy"),
        "garbage.npz": (lambda p: p.write_bytes(b"not a zip at all" * 10), "not a readable .npz"),
        "lying.npz": (lambda p: lying_zip_sizes(p, 2**31, "x.npy"), "declares"),
        "huge-header.npz": (lambda p: torch_zip(p, [("x.npy", npy_bytes((10**6, 1000), "<f4")),
                                                    ("y.npy", npy_bytes((3,), "<i8", bytes(24))),
                                                    ("encoding.npy", npy_bytes((), "<U6",
                                                                               bytes(24)))]),
                            "declares shape"),
        "folder.npz": (lambda p: p.mkdir(), "regular file|directory"),
    }
    for name, (make, pattern) in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(DaLifError, match=pattern):
            load_npz_dataset(path)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(DaLifError):
        load_npz_dataset(fifo)  # refused, not blocked on
    assert main(["dataset", "digits", "-o", str(tmp_path / "d.npz")]) == 0
    with zipfile.ZipFile(tmp_path / "d.npz") as z:
        assert sorted(z.namelist()) == ["encoding.npy", "normalization.npy", "x.npy", "y.npy"]
    assert main(["simulate", str(tmp_path / "nope.npz"), "--backend", "nir"]) == 2
    capsys.readouterr()


def test_npz_event_T_must_match_the_model(tmp_path, data, capsys):
    """A dalif-deploy graph records T; event data of another T are refused by name."""
    path = _npz(tmp_path / "e.npz", x=_E, y=_Y, encoding="events")
    with pytest.raises(DaLifError, match="T = 4, the model runs T = 8"):
        load_npz_dataset(path, timesteps=8)
    ok = load_npz_dataset(_npz(tmp_path / "labels.npz", inputs=_X, labels=_Y,
                               encoding=np.array("analog"), num_classes=3))
    assert ok.num_classes == 3 and len(ok) == 3 and ok.input_shape == (1, 8, 8)


def test_verify_on_an_npz(tmp_path):
    """verify --dataset PATH: the shipped checkpoint on the first 60 test samples, from a file."""
    ds = load_dataset("digits").head(60)
    path = _npz(tmp_path / "mine.npz", x=ds.x, y=ds.y, encoding="analog")
    out = tmp_path / "v.json"
    shipped = REPO_ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"
    assert main(["verify", str(shipped), "--dataset", str(path), "--lava-samples", "0",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dataset"] == str(path) and res["samples"] == 60


def test_an_output_never_replaces_the_dataset_file(tmp_path, data, capsys):
    nodes, _ = norse_mlp(np.random.default_rng(3), train("digits"))
    g = _write(tmp_path / "g.nir", nodes)
    path = _npz(tmp_path / "d.npz", x=_X, y=_Y, encoding="analog")
    before = path.read_bytes()
    assert main(["simulate", str(g), "--backend", "nir", "--from", "norse", "-T", "2",
                 "--dataset", str(path), "--json", str(path)]) == 2
    assert "also an input" in _one_error(capsys)
    assert main(["quantize", str(g), "-o", str(path), "--from", "norse", "-T", "2",
                 "--encoding", "analog", "--calibrate", str(path)]) == 2
    assert "also an input" in _one_error(capsys)
    assert path.read_bytes() == before
