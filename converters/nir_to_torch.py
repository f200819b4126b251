"""NIR graph -> PyTorch float reference: our own mapping of every node, run step by step.

We do not use nirtorch's default maps (its Affine map drops the bias, nodes arrive in
alphabetical order, ...). Each node is a pure step function ``(input, state) -> (output,
state)``; nodes run in the order given by the edges and a node's input is the SUM of all its
incoming edges (NIR semantics; this is how residual branches meet).

Neuron equations: forward Euler of the NIR ODEs with time step ``dt`` (parameters precomputed
in float64, then cast to the run dtype)::

    LIF      v = (1 - dt/tau) v + dt/tau (v_leak + r x)            spike, reset to v_reset
    CubaLIF  i = (1 - dt/tau_syn) i + dt/tau_syn w_in x
             v = (1 - dt/tau_mem) v + dt/tau_mem (v_leak + r i)     (uses the NEW current)
    IF       v = v + dt r x                                        spike, reset to v_reset
    LI       v = (1 - dt/tau) v + dt/tau (v_leak + r x)            output v
    I        v = v + dt r x                                        output v
    Threshold  out = [x > threshold]

Conventions (printed by :func:`describe_conventions`): a spike is ``v > v_threshold`` (the NIR
definition) unless the node's metadata says ``spike_condition ">="`` (our DA-LIF export); after
a spike ``v`` is set to ``v_reset`` (hard reset; a framework's subtractive reset, e.g.
snnTorch's default, is not representable in NIR and is not reproduced); state starts at zero;
spikes of a step reach the next layer in the same step (no synaptic delay).

``dt``: our graphs carry ``dt`` in their metadata (1.0, with which the LIF update is exactly
the DA-LIF ``V = beta H + alpha X``). A graph without it (written by snnTorch, which assumes
``dt = 1e-4``, Norse ``1e-3``, ...) needs an explicit ``dt``; there is no default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nir
import numpy as np
import torch
import torch.nn.functional as F

from dalif_deploy.encoding import ANALOG, EVENTS, Encoding
from dalif_deploy.errors import DaLifError
from dalif_deploy.neuron import fire, integrate
from dalif_deploy.unroll import unroll

from .nir_graph import infer_shapes, int_pair, io_nodes, predecessors, topo_order, validate

SPIKING = (nir.LIF, nir.CubaLIF, nir.IF, nir.Threshold)
State = Any


def is_ours(graph: nir.NIRGraph) -> bool:
    """Whether ``graph`` was written by dalif-deploy (it then carries dt and conventions)."""
    return str((graph.metadata or {}).get("producer", "")) == "dalif-deploy"


def resolve_dt(graph: nir.NIRGraph, dt: float | None) -> float:
    """The time step to run ``graph`` with: from our metadata, or the explicit ``dt``."""
    meta = graph.metadata or {}
    if "dt" in meta and is_ours(graph):
        mdt = float(np.asarray(meta["dt"]))
        if dt is not None and float(dt) != mdt:
            raise DaLifError(f"the graph was exported with dt={mdt} (in its metadata) but "
                             f"dt={dt} was given; drop --dt for dalif-deploy graphs")
        return mdt
    if dt is None:
        raise DaLifError("this NIR graph has no dalif-deploy metadata, so its time step is "
                         "unknown (NIR nodes carry no dt): pass --dt explicitly (snnTorch "
                         "exports assume dt=1e-4, Norse dt=1e-3)")
    if not (float(dt) > 0 and np.isfinite(dt)):
        raise DaLifError(f"dt must be a positive number, got {dt}")
    return float(dt)


def _spike_rule(node: nir.NIRNode) -> str:
    return ">=" if str((node.metadata or {}).get("spike_condition", ">")) == ">=" else ">"


def describe_conventions(graph: nir.NIRGraph, dt: float | None = None) -> list[str]:
    """Human-readable lines stating the dt and the spike/reset conventions assumed."""
    d = resolve_dt(graph, dt)
    src = "from the graph metadata" if is_ours(graph) else "given explicitly"
    lines = [f"dt = {d:g} ({src}); forward-Euler discretisation of the NIR equations"]
    rules = sorted({f"{type(n).__name__}: spike when v {_spike_rule(n)} v_threshold"
                    for n in graph.nodes.values() if isinstance(n, SPIKING)})
    lines += rules
    if any(isinstance(n, (nir.LIF, nir.CubaLIF, nir.IF)) for n in graph.nodes.values()):
        lines.append("reset: v := v_reset after a spike (hard reset; subtractive resets are "
                     "not representable in NIR); all state starts at 0")
    lines.append("inputs of a node are summed over its incoming edges; no synaptic delay")
    meta = graph.metadata or {}
    lines.append(f"readout: {meta.get('readout', 'mean over T of the Output node')}")
    return lines


# ---------------------------------------------------------------------------------------------
# Step functions: (x, state) -> (out, state). Neurons use the one integrate-and-fire equation
# of dalif_deploy.neuron (integrate, fire); with dt = 1 and our parameters decay = beta and
# gain = alpha: the DA-LIF update, same operation order. Params are tensors in the run dtype.


@dataclass
class CompiledNode:
    """One executable node: its step function, parameters and whether it spikes."""

    name: str
    kind: str
    step: Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]
    spiking: bool = False


def _t(a: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype)


def _neuron_params(node: nir.NIRNode, dt: float, dtype: torch.dtype) -> dict[str, Any]:
    """Euler coefficients in float64, cast once: decay = 1 - dt/tau, gain = dt*r/tau, ..."""
    def f(a):
        return np.asarray(a, dtype=np.float64)

    if isinstance(node, (nir.LIF, nir.LI)):
        k = dt / f(node.tau)
        decay, gain, vl = 1.0 - k, k * f(node.r), k * f(node.v_leak)
    elif isinstance(node, (nir.IF, nir.I)):
        decay, gain, vl = np.ones_like(f(node.r)), dt * f(node.r), np.zeros_like(f(node.r))
    else:  # CubaLIF membrane part
        k = dt / f(node.tau_mem)
        decay, gain, vl = 1.0 - k, k * f(node.r), k * f(node.v_leak)
    p: dict[str, Any] = {"decay": _t(decay, dtype), "gain": _t(gain, dtype),
                         "leak": _t(vl, dtype) if np.any(vl != 0) else None}
    if hasattr(node, "v_threshold"):
        p["th"] = _t(node.v_threshold, dtype)
        reset = getattr(node, "v_reset", None)
        p["reset"] = _t(np.zeros_like(f(node.v_threshold)) if reset is None else reset, dtype)
    return p


def _pairs(node: nir.NIRNode, name: str, *fields: str) -> tuple[tuple[int, int], ...]:
    return tuple(int_pair(getattr(node, f), f, name) for f in fields)


def compile_node(name: str, node: nir.NIRNode, dt: float, dtype: torch.dtype) -> CompiledNode:
    """Map one NIR node to a step function (see the module docstring for the equations)."""
    kind = type(node).__name__
    if isinstance(node, (nir.Input, nir.Output)):
        return CompiledNode(name, kind, lambda x, s: (x, s))
    if isinstance(node, nir.Affine):
        w, b = _t(node.weight, dtype), _t(node.bias, dtype)
        return CompiledNode(name, kind, lambda x, s: (F.linear(x, w, b), s))
    if isinstance(node, nir.Linear):
        w = _t(node.weight, dtype)
        return CompiledNode(name, kind, lambda x, s: (F.linear(x, w), s))
    if isinstance(node, nir.Scale):
        k = _t(node.scale, dtype)
        return CompiledNode(name, kind, lambda x, s: (x * k, s))
    if isinstance(node, nir.Conv2d):
        w, b = _t(node.weight, dtype), _t(node.bias, dtype)
        st, pad, dil = _pairs(node, name, "stride", "padding", "dilation")
        g = int(node.groups)
        return CompiledNode(name, kind, lambda x, s: (F.conv2d(x, w, b, st, pad, dil, g), s))
    if isinstance(node, nir.AvgPool2d):
        k, st, pad = _pairs(node, name, "kernel_size", "stride", "padding")
        return CompiledNode(name, kind, lambda x, s: (F.avg_pool2d(x, k, st, pad), s))
    if isinstance(node, nir.SumPool2d):
        k, st, pad = _pairs(node, name, "kernel_size", "stride", "padding")
        return CompiledNode(name, kind, lambda x, s: (
            F.avg_pool2d(x, k, st, pad, divisor_override=1), s))
    if isinstance(node, nir.Flatten):
        a, e = int(node.start_dim), int(node.end_dim)
        return CompiledNode(name, kind, lambda x, s: (
            x.flatten(a % (x.dim() - 1) + 1, e % (x.dim() - 1) + 1), s))
    if isinstance(node, nir.Threshold):
        th = _t(node.threshold, dtype)
        return CompiledNode(name, kind, lambda x, s: ((x > th).to(x.dtype), s), spiking=True)
    if isinstance(node, (nir.LIF, nir.IF)):
        p, ge = _neuron_params(node, dt, dtype), _spike_rule(node) == ">="

        def neuron(x, v):
            return fire(integrate(x, v, p["decay"], p["gain"], p["leak"]), p["th"], p["reset"],
                        inclusive=ge)
        return CompiledNode(name, kind, neuron, spiking=True)
    if isinstance(node, (nir.LI, nir.I)):
        p = _neuron_params(node, dt, dtype)

        def integ(x, v):
            v = integrate(x, v, p["decay"], p["gain"], p["leak"])
            return v, v
        return CompiledNode(name, kind, integ)
    if isinstance(node, nir.CubaLIF):
        p, ge = _neuron_params(node, dt, dtype), _spike_rule(node) == ">="
        ks = dt / np.asarray(node.tau_syn, dtype=np.float64)
        syn = {"decay": _t(1.0 - ks, dtype), "gain": _t(ks * np.asarray(node.w_in), dtype)}

        def cuba(x, state):
            i, v = state if state is not None else (None, None)
            i = integrate(x, i, syn["decay"], syn["gain"])
            s, v = fire(integrate(i, v, p["decay"], p["gain"], p["leak"]), p["th"], p["reset"],
                        inclusive=ge)
            return s, (i, v)
        return CompiledNode(name, kind, cuba, spiking=True)
    raise DaLifError(f"node {name!r}: unsupported NIR node type {kind}")


class GraphRunner:
    """A NIR graph compiled to step functions; :meth:`step` runs one time step."""

    def __init__(self, graph: nir.NIRGraph, dt: float | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        validate(graph)
        self.graph, self.dt, self.dtype = graph, resolve_dt(graph, dt), dtype
        self.order = topo_order(graph)
        self.pre = predecessors(graph)
        self.shapes = infer_shapes(graph)
        self.nodes = {n: compile_node(n, graph.nodes[n], self.dt, dtype) for n in self.order}
        self.input, self.output = io_nodes(graph)
        self.spiking = [n for n in self.order if self.nodes[n].spiking]

    def step(self, x: torch.Tensor, state: dict[str, State]
             ) -> tuple[dict[str, torch.Tensor], dict[str, State]]:
        """One time step: every node's output for input ``x`` and the previous ``state``."""
        vals: dict[str, torch.Tensor] = {}
        new: dict[str, State] = {}
        for n in self.order:
            if n == self.input:
                inp = x
            else:
                srcs = self.pre[n]
                inp = vals[srcs[0]]
                for s in srcs[1:]:
                    inp = inp + vals[s]
            vals[n], new[n] = self.nodes[n].step(inp, state.get(n))
        return vals, new

    def run(self, x: torch.Tensor, timesteps: int, encoding: Encoding | str | None = None,
            record: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run T steps; returns (readout mean over T, spikes ``{node: [T, B, ...]}``)."""
        in_shape = tuple(self.shapes[self.input])
        if encoding is None:
            stored = str((self.graph.metadata or {}).get("input_encoding", ""))
            encoding = stored or (EVENTS if x.dim() == len(in_shape) + 2 else ANALOG)
        enc = Encoding.from_name(encoding, "input encoding")
        want = enc.batch_shape(x.shape[0], timesteps, in_shape)
        if tuple(x.shape) != want:
            raise DaLifError(f"input has shape {tuple(x.shape)}; this graph ({enc.name} "
                             f"input) expects {want}")
        x = x.to(self.dtype)
        spikes: dict[str, list[torch.Tensor]] = {n: [] for n in self.spiking} if record else {}

        def step(frame: torch.Tensor, state: dict[str, State] | None):
            vals, state = self.step(frame, state or {})
            for n in spikes:
                spikes[n].append(vals[n])
            return vals[self.output], state

        with torch.no_grad():
            logits = unroll(step, x, timesteps, enc)
        return logits, {n: torch.stack(v) for n, v in spikes.items()}


def run_graph(graph: nir.NIRGraph, x: torch.Tensor, timesteps: int, record: bool = True,
              dt: float | None = None, dtype: torch.dtype = torch.float32,
              encoding: str | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``graph`` on ``x`` (``[B, ...]`` analog or ``[B, T, ...]`` events) for ``timesteps``
    steps; returns ``(logits = mean over T of the Output, spikes per spiking node [T, B, ...])``
    (spikes empty unless ``record``)."""
    return GraphRunner(graph, dt, dtype).run(x, timesteps, encoding, record)
