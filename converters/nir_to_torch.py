"""NIR graph -> PyTorch float reference: our own mapping of every node, run step by step.

We do not use nirtorch's default maps (its Affine map drops the bias, nodes arrive in
alphabetical order, ...). Each node is a pure step function ``(state, input) -> (output,
state)``; nodes run in the order given by the edges and a node's input is the SUM of all its
incoming edges (NIR semantics; this is how residual branches meet).

What each node type computes (the neuron equations included) is its entry in the operation
table :mod:`.nir_ops`; here nodes are only compiled from it and run.

Conventions (printed by :func:`describe_conventions`): a spike is ``v > v_threshold`` (the NIR
definition) unless the node's metadata says ``spike_condition ">="`` (our DA-LIF export); after
a spike ``v`` is set to ``v_reset`` (hard reset; a framework's subtractive reset, e.g.
snnTorch's default, is not representable in NIR and is not reproduced); state starts at zero;
spikes of a step reach the next layer in the same step (no synaptic delay), except over a
recurrent edge (:func:`~.nir_graph.recurrent_edges`: a neuron into its own loop), which carries
the neuron's output of the previous step (zero at step 0).

``dt``: our graphs carry ``dt`` in their metadata (1.0, with which the LIF update is exactly
the DA-LIF ``V = beta H + alpha X``). A graph without it (written by snnTorch, which assumes
``dt = 1e-4``, Norse ``1e-3``, ...) needs an explicit ``dt``; there is no default.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import nir
import numpy as np
import torch
from dalif_deploy.converters.ir.graph import (
    infer_shapes,
    io_nodes,
    predecessors,
    recurrent_edges,
    topo_order,
    validate,
)
from dalif_deploy.converters.ir.neuron_math import multi_spike, reset_mode, spike_rule
from dalif_deploy.converters.ir.ops import State, Step, op_for

from dalif_deploy.base.encoding import ANALOG, EVENTS, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.geometry import fit_frames
from dalif_deploy.base.schema import number
from dalif_deploy.float_model.unroll import unroll


def is_ours(graph: nir.NIRGraph) -> bool:
    """Whether ``graph`` was written by dalif-deploy (it then carries dt and conventions)."""
    return str((graph.metadata or {}).get("producer", "")) == "dalif-deploy"


def resolve_dt(graph: nir.NIRGraph, dt: float | None) -> float:
    """The time step to run ``graph`` with: from our metadata, or the explicit ``dt``."""
    meta = graph.metadata or {}
    if dt is not None and not (float(dt) > 0 and np.isfinite(dt)):
        raise DaLifError(f"--dt must be a positive finite number, got {dt}")
    if "dt" in meta and is_ours(graph):
        mdt = number(meta["dt"], "the graph's metadata.dt", 0.0, lo_open=True)
        if dt is not None and float(dt) != mdt:
            raise DaLifError(f"the graph was exported with dt={mdt} (in its metadata) but "
                             f"dt={dt} was given; drop --dt for dalif-deploy graphs")
        return mdt
    if dt is None:
        raise DaLifError("this NIR graph has no dalif-deploy metadata, so its time step is "
                         "unknown (NIR nodes carry no dt): pass --dt explicitly (snnTorch "
                         "exports assume dt=1e-4, Norse dt=1e-3)")
    return float(dt)


def describe_conventions(graph: nir.NIRGraph, dt: float | None = None) -> list[str]:
    """Human-readable lines stating the dt and the spike/reset conventions assumed."""
    d = resolve_dt(graph, dt)
    src = "from the graph metadata" if is_ours(graph) else "given explicitly"
    lines = [f"dt = {d:g} ({src}); forward-Euler discretisation of the NIR equations"]
    ops = {k: op_for(n, k) for k, n in graph.nodes.items()}
    rules = sorted({f"{type(n).__name__}: spike when v {spike_rule(n)} v_threshold"
                    for k, n in graph.nodes.items() if ops[k].spiking})
    lines += rules
    modes = sorted({(reset_mode(n), multi_spike(n)) for k, n in graph.nodes.items()
                    if ops[k].resets})
    for mode, multi in modes:
        lines.append({"zero": "reset: v := v_reset after a spike (hard reset)",
                      "subtract": "reset: v := v - v_threshold per spike",
                      "zero-next": "reset: the step after a spike starts from 0 (its integral "
                                   "is zeroed)",
                      "subtract-next": "reset: v_threshold comes off the integral of the step "
                                       "after a spike"}[mode]
                     + ("; spike counts (floor of v over v_threshold)" if multi else "")
                     + " (node metadata reset_mode; NIR itself resets to v_reset); all state "
                     "starts at 0")
    lines.append("inputs of a node are summed over its incoming edges; no synaptic delay")
    rec = recurrent_edges(graph)
    if rec:
        lines.append("recurrent edges carry their neuron's output of the previous step (zero "
                     "at step 0): " + ", ".join(f"{a} -> {b}" for a, b in rec))
    meta = graph.metadata or {}
    lines.append(f"readout: {meta.get('readout', 'mean over T of the Output node')}")
    return lines


#: the state key of the outputs recurrent edges carry to the next step (no node name: not a str)
_PREVIOUS = ("recurrent", "previous")


@dataclass
class CompiledNode:
    """One executable node: its step ``(state, x) -> (out, state)`` and whether it spikes."""

    name: str
    kind: str
    step: Step
    spiking: bool = False


def compile_node(name: str, node: nir.NIRNode, dt: float, dtype: torch.dtype) -> CompiledNode:
    """One NIR node as its op's step function (:meth:`.nir_ops.NodeOp.compile`)."""
    op = op_for(node, name)
    return CompiledNode(name, type(node).__name__, op.compile(name, node, dt, dtype), op.spiking)


class GraphRunner:
    """A NIR graph compiled to step functions; :meth:`step` runs one time step."""

    def __init__(self, graph: nir.NIRGraph, dt: float | None = None,
                 dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        validate(graph)
        self.graph, self.dt, self.dtype = graph, resolve_dt(graph, dt), dtype
        self.device = torch.device(device)
        self.order = topo_order(graph)
        self.pre = predecessors(graph)
        self.shapes = infer_shapes(graph)
        with self._placed():  # every parameter tensor the ops build is made there
            self.nodes = {n: compile_node(n, graph.nodes[n], self.dt, dtype)
                          for n in self.order}
        self.input, self.output = io_nodes(graph)
        self.spiking = [n for n in self.order if self.nodes[n].spiking]
        self.recurrent = set(recurrent_edges(graph))
        self.delayed = sorted({a for a, _ in self.recurrent})  # neurons read one step late

    def _placed(self) -> contextlib.AbstractContextManager[Any]:
        """Where new tensors go: the runner's device. None on CPU, torch's default, where the
        device context's per-call dispatch would only cost time."""
        return contextlib.nullcontext() if self.device.type == "cpu" else self.device

    def step(self, x: torch.Tensor, state: dict[str, State]
             ) -> tuple[dict[str, torch.Tensor], dict[str, State]]:
        """One time step: every node's output for input ``x`` and the previous ``state`` (which
        also holds, under the key ``_PREVIOUS``, the outputs recurrent edges carry)."""
        vals: dict[str, torch.Tensor] = {}
        new: dict[Any, State] = {}
        before = state.get(_PREVIOUS) or {
            a: x.new_zeros((x.shape[0], *self.shapes[a])) for a in self.delayed}
        for n in self.order:
            if n == self.input:
                inp = x
            else:
                ins = [before[s] if (s, n) in self.recurrent else vals[s] for s in self.pre[n]]
                inp = ins[0]
                for v in ins[1:]:
                    inp = inp + v
            vals[n], new[n] = self.nodes[n].step(state.get(n), inp)
        if self.delayed:
            new[_PREVIOUS] = {a: vals[a] for a in self.delayed}
        return vals, new

    def run(self, x: torch.Tensor, timesteps: int, encoding: Encoding | str | None = None,
            record: bool = True, spike_dtype: torch.dtype | None = None
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run T steps; returns (readout mean over T, spikes ``{node: [T, B, ...]}``), on the
        runner's device (``x`` is moved there).

        ``spike_dtype`` (e.g. ``torch.uint8``) stores a one-spike node's 0/1 spikes in that
        dtype, converted step by step; a multi-spike node's counts, unbounded in float, stay in
        the graph's dtype."""
        in_shape = tuple(self.shapes[self.input])
        if encoding is None:
            stored = str((self.graph.metadata or {}).get("input_encoding", ""))
            encoding = stored or (EVENTS if x.dim() == len(in_shape) + 2 else ANALOG)
        enc = Encoding.from_name(encoding, "input encoding")
        x = fit_frames(x, in_shape, 1 if enc is ANALOG else 2)  # 1-D data, height-1 graph
        want = enc.batch_shape(x.shape[0], timesteps, in_shape)
        if tuple(x.shape) != want:
            raise DaLifError(f"input has shape {tuple(x.shape)}; this graph ({enc.name} "
                             f"input) expects {want}")
        x = x.to(device=self.device, dtype=self.dtype)
        spikes: dict[str, list[torch.Tensor]] = {n: [] for n in self.spiking} if record else {}
        as_is = {n for n in self.spiking if spike_dtype is None
                 or multi_spike(self.graph.nodes[n])}

        def step(frame: torch.Tensor, state: dict[str, State] | None):
            vals, state = self.step(frame, state or {})
            for n in spikes:
                spikes[n].append(vals[n] if n in as_is else vals[n].to(spike_dtype))
            return vals[self.output], state

        with torch.no_grad(), self._placed():  # state a step creates is made there too
            logits = unroll(step, x, timesteps, enc)
        return logits, {n: torch.stack(v) for n, v in spikes.items()}


def run_graph(graph: nir.NIRGraph, x: torch.Tensor, timesteps: int, record: bool = True,
              dt: float | None = None, dtype: torch.dtype = torch.float32,
              encoding: str | None = None, spike_dtype: torch.dtype | None = None,
              device: str | torch.device = "cpu"
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``graph`` on ``x`` (``[B, ...]`` analog or ``[B, T, ...]`` events) for ``timesteps``
    steps; returns ``(logits = mean over T of the Output, spikes per spiking node [T, B, ...])``
    (spikes empty unless ``record``; one-spike nodes' in ``spike_dtype`` when given, see
    :meth:`GraphRunner.run`), computed on and returned on ``device``."""
    return GraphRunner(graph, dt, dtype, device).run(x, timesteps, encoding, record,
                                                      spike_dtype)
