"""The exporters' graph shapes and framework references shared by the foreign-graph tests
(tests/converters/test_foreign_*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np

from dalif_deploy.cli import main
from helpers.foreign_graphs import HIDDEN, conv3x3_same, prototype_readout

N = 120  # test samples per check


DT = 1e-4  # snnTorch's hard-coded export time step


def _f32(a) -> np.ndarray:
    return np.asarray(a, np.float32)


def _write(path: Path, nodes: dict) -> Path:
    names = list(nodes)
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:],
                                                                strict=True))))
    return path


def _run(graph: Path, backend: str, npz: Path, *extra: str) -> dict:
    out = graph.with_suffix(f".{backend}.json")
    assert main(["simulate", str(graph), "--backend", backend, "--dataset", str(npz),
                 "--samples", str(N), "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def assert_framework_predictions(nodes: dict, path: Path, npz: Path, exporter: str,
                                 want: np.ndarray, note: str | None = None) -> None:
    """The graph written to ``path``, run on nir and norse with ``--from exporter``, predicts
    ``want`` on every sample (a lively ``want``: at least 6 classes), and, if ``note`` is
    given, the conventions in the JSON include a note with that text naming the neuron nodes."""
    assert len(set(want.tolist())) >= 6
    g = _write(path, nodes)
    neurons = ", ".join(sorted(k for k, v in nodes.items()
                               if isinstance(v, (nir.LIF, nir.IF, nir.CubaLIF))))
    for backend in ("nir", "norse"):
        res = _run(g, backend, npz, "--from", exporter)
        assert res["predictions"] == want.tolist(), backend
        if note:
            assert any(note in line and f"node(s) {neurons})" in line
                       for line in res["conventions"]), res["conventions"]


def _step(mem: np.ndarray, s: np.ndarray) -> np.ndarray:
    return mem * (1 - s)


def _readout(rng, feats: np.ndarray, y: np.ndarray, scale: float):
    """A class-prototype Linear layer (10 outputs) on ``feats`` and a small positive bias."""
    w, b, _, _ = prototype_readout(rng, feats, y, scale)
    return w[:10], b[:10] - 0.25


def _leaky(beta: np.ndarray) -> nir.LIF:
    """snnTorch's ``Leaky`` as ``export_to_nir`` writes it: ``tau = dt/(1-beta)``, ``r =
    tau/dt``, float32, full shape."""
    tau = _f32(DT / (1 - _f32(beta)))
    return nir.LIF(tau=tau, r=_f32(tau / DT), v_leak=_f32(0 * beta), v_threshold=_f32(1 + 0 * beta),
                   v_reset=_f32(0 * beta))


def _snntorch_conv_spikes(p: dict, x: np.ndarray) -> np.ndarray:
    """snnTorch ``Leaky(reset_mechanism="zero")`` after the conv: ``mem = beta mem + conv(x)``,
    spike ``mem > 1``; its delayed reset starts the next step from 0. ``[T, B, C*H*W]``."""
    mem, out = np.zeros((len(x), *p["beta1"].shape)), []
    for t in range(x.shape[1]):
        mem = p["beta1"] * mem + conv3x3_same(x[:, t].astype(np.float64), p["wc"], p["bc"])
        s = (mem > 1).astype(np.float64)
        mem = _step(mem, s)
        out.append(s.reshape(len(x), -1))
    return np.stack(out)


def snntorch_conv(rng, train) -> tuple[dict, dict]:
    c = 4
    wc = rng.normal(0, 0.15, (c, 2, 3, 3))
    wc[np.arange(c), np.arange(c) % 2, 1, 1] += rng.uniform(1.0, 1.5, c)  # event detectors
    p = {"wc": wc, "bc": rng.normal(0, 0.05, c),
         "beta1": rng.uniform(0.6, 0.95, (c, 1, 1)) * np.ones((c, 8, 8)),
         "beta2": rng.uniform(0.6, 0.95, 10)}
    p["w"], p["b"] = _readout(rng, _snntorch_conv_spikes(p, train.x).mean(0), train.y, 1.0)
    nodes = {"input": nir.Input(np.array([2, 8, 8])),
             "0": nir.Conv2d(input_shape=np.array([8, 8]), weight=_f32(p["wc"]),
                             stride=np.array([1, 1]), padding=np.array([1, 1]),
                             dilation=np.array([1, 1]), groups=1, bias=_f32(p["bc"])),
             "1": _leaky(p["beta1"]),
             "2": nir.Flatten(input_type={"input": np.array([c, 8, 8])}, start_dim=0,
                              end_dim=-1),
             "3": nir.Affine(_f32(p["w"]), _f32(p["b"])), "4": _leaky(p["beta2"]),
             "output": nir.Output(np.array([10]))}
    return nodes, p


def snntorch_conv_reference(p: dict, x: np.ndarray) -> np.ndarray:
    """The output Leaky's spike count, argmax (first of ties, as torch)."""
    mem, count = np.zeros((len(x), 10)), np.zeros((len(x), 10))
    for s in _snntorch_conv_spikes(p, x):
        mem = p["beta2"] * mem + s @ p["w"].T + p["b"]
        s2 = (mem > 1).astype(np.float64)
        mem = _step(mem, s2)
        count += s2
    return count.argmax(1)


def snntorch_synaptic(rng, train) -> tuple[dict, dict]:
    """Flatten -> Linear -> Synaptic -> Linear -> Synaptic as ``export_to_nir`` writes it:
    ``tau_syn = dt/(1-alpha)``, ``tau_mem = dt/(1-beta)``, ``r = tau_mem/dt``, ``w_in =
    tau_syn/dt``."""
    w1, b1, w2, b2 = prototype_readout(rng, train.x.mean(1), train.y, 0.8)
    p = {"w1": w1, "b1": b1 * 0.2, "w2": 0.5 * w2, "b2": 0.5 * b2,
         "a1": rng.uniform(0.3, 0.7, HIDDEN), "be1": rng.uniform(0.6, 0.9, HIDDEN),
         "a2": rng.uniform(0.3, 0.7, 10), "be2": rng.uniform(0.6, 0.9, 10)}

    def synaptic(alpha, beta):
        ts, tm = _f32(DT / (1 - _f32(alpha))), _f32(DT / (1 - _f32(beta)))
        return nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=_f32(tm / DT), w_in=_f32(ts / DT),
                           v_leak=_f32(0 * beta), v_threshold=_f32(1 + 0 * beta),
                           v_reset=_f32(0 * beta))

    nodes = {"input": nir.Input(np.array([2, 8, 8])),
             "0": nir.Flatten(input_type={"input": np.array([2, 8, 8])}, start_dim=0,
                              end_dim=-1),
             "1": nir.Affine(_f32(p["w1"]), _f32(p["b1"])), "2": synaptic(p["a1"], p["be1"]),
             "3": nir.Affine(_f32(p["w2"]), _f32(p["b2"])), "4": synaptic(p["a2"], p["be2"]),
             "output": nir.Output(np.array([10]))}
    return nodes, p


def snntorch_synaptic_reference(p: dict, x: np.ndarray, refractory: bool) -> np.ndarray:
    """snnTorch Synaptic: ``syn = alpha syn + I``, ``mem = beta mem + syn``, spike ``mem > 1``.
    Its reset_mechanism="zero" zeroes the whole ``beta mem + syn`` of the step AFTER a spike
    (``refractory``: one step at 0, the measured snnTorch behaviour); NIR's CubaLIF resets v in
    the spike's step and integrates the next input (``refractory=False``)."""
    b = len(x)
    state = [[np.zeros((b, n)), np.zeros((b, n)), np.zeros((b, n))] for n in (HIDDEN, 10)]
    count = np.zeros((b, 10))
    for t in range(x.shape[1]):
        s = x[:, t].reshape(b, -1).astype(np.float64)
        for k, (syn_mem_prev, w, bias, a, be) in enumerate(
                [(state[0], p["w1"], p["b1"], p["a1"], p["be1"]),
                 (state[1], p["w2"], p["b2"], p["a2"], p["be2"])]):
            syn, mem, prev = syn_mem_prev
            syn = a * syn + s @ w.T + bias
            mem = be * mem + syn
            if refractory:
                mem = mem * (1 - prev)
            s = (mem > 1).astype(np.float64)
            if not refractory:
                mem = _step(mem, s)
            state[k] = [syn, mem, s]
        count += s
    return count.argmax(1)


def sinabs_lif_mlp(rng, train) -> tuple[dict, dict]:
    """Sinabs ``LIFSqueeze`` layers after the repair nir.write needs (each 0-d parameter
    broadcast to the layer, types inferred): tau in steps, ``r = 1``, float32."""
    w1, b1, w2, b2 = prototype_readout(rng, train.x.mean(1), train.y, 6.0)
    p = {"w1": w1, "b1": b1, "w2": 6 * w2, "b2": 6 * b2,
         "tau1": np.full(HIDDEN, rng.uniform(2, 6)), "tau2": np.full(10, rng.uniform(2, 6))}

    def lif(tau):
        return nir.LIF(tau=_f32(tau), r=_f32(1 + 0 * tau), v_leak=_f32(0 * tau),
                       v_threshold=_f32(1 + 0 * tau), v_reset=_f32(0 * tau))

    nodes = {"input": nir.Input(np.array([2, 8, 8])),
             "0": nir.Flatten(input_type={"input": np.array([2, 8, 8])}, start_dim=0,
                              end_dim=-1),
             "1": nir.Affine(_f32(p["w1"]), _f32(p["b1"])), "2": lif(p["tau1"]),
             "3": nir.Affine(_f32(p["w2"]), _f32(p["b2"])), "4": lif(p["tau2"]),
             "output": nir.Output(np.array([10]))}
    return nodes, p


def sinabs_lif_reference(p: dict, x: np.ndarray) -> np.ndarray:
    """Sinabs LIF (norm_input, SingleSpike, MembraneReset): ``v = a v + (1 - a) I``, ``a =
    exp(-1/tau)``, spike ``v >= 1``, reset to 0; the output LIF's spike count."""
    b = len(x)
    v1, v2, count = np.zeros((b, HIDDEN)), np.zeros((b, 10)), np.zeros((b, 10))
    a1, a2 = np.exp(-1 / _f32(p["tau1"]).astype(np.float64)), np.exp(
        -1 / _f32(p["tau2"]).astype(np.float64))
    for t in range(x.shape[1]):
        i1 = x[:, t].reshape(b, -1).astype(np.float64) @ p["w1"].T + p["b1"]
        v1 = a1 * v1 + (1 - a1) * i1
        s1 = (v1 >= 1).astype(np.float64)
        v1 = _step(v1, s1)
        v2 = a2 * v2 + (1 - a2) * (s1 @ p["w2"].T + p["b2"])
        s2 = (v2 >= 1).astype(np.float64)
        v2 = _step(v2, s2)
        count += s2
    return count.argmax(1)
