"""The ``norse`` backend: run a NIR graph in Norse 1.1.0 (an independent simulator) as a
cross-check of our float reference.

Norse's importer (``norse.torch.from_nir``, built on ``nirtorch.load``) does not run a NIR graph
as written; :func:`adapt_for_norse` rewrites the graph into an equivalent one it does run, and
:func:`norse_module` repairs the execution order. What it needed (measured on norse 1.1.0 and
nirtorch 2.6; each item is listed in the result's ``adaptations``; what each node type needs is
its op's ``to_norse``/``norse_fold_r`` in :mod:`dalif_deploy.converters.ir.ops`):

* ``r`` of ``nir.LIF`` is ignored (only a warning): fold ``r`` into the rows of the preceding
  Affine/Conv2d when that node feeds only this LIF, else insert a per-channel scaling node (a
  channel-diagonal 1x1 Conv2d, or a diagonal Affine) on the edge; then set ``r = 1``.
* ``v_reset`` is ignored (Norse resets to 0): refused unless it is 0.
* ``nir.Flatten(start_dim)`` is passed to ``torch.nn.Flatten`` as is, so NIR's start_dim 0
  flattens the batch: shift the dims by one.
* ``nir.AvgPool2d`` has no mapping: the node would be dropped silently. ``SumPool2d`` becomes
  ``LPPool2d(1)`` which takes |x| and ignores padding. Both become a Conv2d with
  constant weights (1/k^2 or 1) on the channel diagonal (Norse cannot build grouped convs).
* nirtorch's executor orders nodes depth-first, not topologically: at a residual merge it can
  read a branch's output of the PREVIOUS time step. Its order is replaced by ours from the edges.
* dt: ``from_nir(dt=...)`` with the graph's dt (1 for ours; a foreign graph's from its
  exporter's conventions, ``--from``, read exactly as the nir backend reads it, and fed the
  data's encoding like there: :class:`NorseBackend` is a :class:`NirBackend`); Norse integrates
  ``v += dt/tau (v_leak - v + i)``, equal to ``beta*v + alpha*x`` up to float rounding.
* Norse fires on ``v > v_th`` (strict), ours on ``>=``: irrelevant for float data.
* Recurrence (a loop through one neuron, :func:`~dalif_deploy.converters.ir.graph.
  recurrent_edges`): nirtorch's executor reads a node not yet run in this step from the
  previous step's outputs, and skips it at step 0. Run in reading order (each loop after its
  neuron), the neuron thus gets its loop's output of the previous step, as NIR's rule says,
  except at step 0, where the loop gives nothing instead of its constant offset: exact when
  the loop's nodes have no bias (snnTorch's and Norse's recurrent weights), else refused.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import nir
import numpy as np
import torch
from dalif_deploy.converters.ir.graph import (
    infer_shapes,
    loop_nodes,
    predecessors,
    reading_order,
    validate,
)
from dalif_deploy.converters.ir.neuron_math import channelwise_conv, multi_spike, reset_mode
from dalif_deploy.converters.ir.ops import op_for

from dalif_deploy.base.encoding import ANALOG, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.float_model.unroll import unroll

from .nir_float import NirBackend


def adapt_for_norse(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[str]]:
    """An equivalent graph that Norse's importer runs correctly, and the list of changes."""
    validate(graph)
    for name in loop_nodes(graph):
        b = getattr(graph.nodes[name], "bias", None)
        if b is not None and np.any(np.asarray(b) != 0):
            raise DaLifError(f"node {name!r} is in a recurrent loop and has a bias: Norse's "
                             "executor gives a loop no value at step 0, so that bias would be "
                             "missing at step 0 (NIR adds it from step 0 on); run this graph "
                             "with --backend nir")
    shapes = infer_shapes(graph)
    pre = predecessors(graph)
    nodes = {k: copy.deepcopy(v) for k, v in graph.nodes.items()}
    edges = [tuple(e) for e in graph.edges]
    notes: set[str] = set()
    ops = {name: op_for(node, name) for name, node in graph.nodes.items()}
    for name, node in graph.nodes.items():  # per node: what its op says Norse needs
        in_shape = shapes[pre[name][0]] if pre[name] else shapes[name]
        replaced = ops[name].to_norse(name, node, in_shape)
        if replaced is not None:
            nodes[name], note = replaced
            notes.add(note)
    for name, node in graph.nodes.items():
        if not ops[name].resets:
            continue
        if reset_mode(node) != "zero" or multi_spike(node):
            raise DaLifError(f"node {name!r}: resets by {reset_mode(node)!r}"
                             + (" and sends spike counts" if multi_spike(node) else "")
                             + "; Norse's neurons send one spike and reset to 0 in the "
                             "spike's step: run this graph with --backend nir")
        if node.v_reset is not None and np.any(np.asarray(node.v_reset) != 0):
            raise DaLifError(f"node {name!r}: v_reset != 0, which Norse ignores (it resets to "
                             "0); run this graph with --backend nir")
        r = np.asarray(node.r, dtype=np.float64)
        if not ops[name].norse_fold_r or np.all(r == 1):
            continue
        shape = shapes[name]
        for src in pre[name]:
            s = nodes[src]
            sole = [b for a, b in edges if a == src] == [name]
            if len(shape) == 3:
                per_ch = r.reshape(shape[0], -1)
                if not np.all(per_ch == per_ch[:, :1]):
                    raise DaLifError(f"node {name!r}: r varies within a channel; it cannot be "
                                     "folded into a convolution for Norse")
                rc = per_ch[:, 0]
            else:
                rc = r.reshape(-1)
            if sole and op_for(s, src).scale_rows(s, rc):
                notes.add("LIF r folded into the rows of the preceding Affine/Conv2d, r := 1 "
                          "(Norse ignores r)")
                continue
            new = f"{src}__r_to__{name}"
            nodes[new] = (channelwise_conv(shape[0], 1, 1, 0, rc, shape[1:]) if len(shape) == 3
                          else nir.Affine(weight=np.diag(rc), bias=np.zeros(rc.size)))
            edges.remove((src, name))
            edges += [(src, new), (new, name)]
            notes.add("LIF r on an edge from a non-foldable source (e.g. an identity shortcut) "
                      "-> inserted a channel-diagonal 1x1 Conv2d / diagonal Affine, r := 1")
        nodes[name].r = np.ones_like(r)
    out = nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata or {}),
                       type_check=False)
    reading_order(out)  # (its Flatten dims now count the batch: not a valid NIR graph to validate)
    return out, sorted(notes)


def norse_module(adapted: nir.NIRGraph, dt: float) -> tuple[torch.nn.Module, bool]:
    """Norse's module for an adapted graph, with a topological execution order; returns
    ``(module, order_was_fixed)``."""
    import norse.torch as nt
    from nirtorch.utils import sanitize_name

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger().disabled, was = True, logging.getLogger().disabled
        try:
            module = nt.from_nir(adapted, dt=dt)
        finally:
            logging.getLogger().disabled = was
    by_name = {n.name: n for n in module.execution_order}
    ours = [sanitize_name(n) for n in reading_order(adapted)]
    if set(ours) != set(by_name):
        raise DaLifError(f"Norse built nodes {sorted(by_name)} but the graph has {sorted(ours)}")
    fixed = [n.name for n in module.execution_order] != ours
    module.execution_order = [by_name[n] for n in ours]
    return module, fixed


def build_norse(graph: nir.NIRGraph, dt: float) -> tuple[torch.nn.Module, list[str]]:
    """Adapt ``graph`` and build Norse's module for it; returns ``(module, adaptations)``."""
    adapted, notes = adapt_for_norse(graph)
    module, fixed = norse_module(adapted, dt)
    if fixed:
        notes.append("nirtorch execution order replaced by the topological order of the edges "
                     "(its depth-first order reads stale branch outputs at residual merges)")
    return module, notes


def run_norse(graph: nir.NIRGraph, x: torch.Tensor, timesteps: int, dt: float,
              record: bool = False, encoding: Encoding | str | None = None,
              built: tuple[torch.nn.Module, list[str]] | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """Run ``graph`` in Norse; returns (mean readout over T, spikes per LIF node, adaptations).

    ``encoding``: how ``x`` is fed (default: the graph's metadata, else analog); the backend
    passes the data's, exactly as the nir backend does. ``built``: :func:`build_norse`'s
    result for ``graph`` and ``dt``, to reuse across batches (default: built here).
    """
    from nirtorch.utils import sanitize_name

    module, notes = built or build_norse(graph, dt)
    enc = Encoding.from_name(encoding or str((graph.metadata or {}).get("input_encoding",
                                                                         ANALOG.name)),
                             "input encoding")
    spiking = [n for n, v in graph.nodes.items() if op_for(v, n).spiking]
    spikes: dict[str, list[torch.Tensor]] = {n: [] for n in spiking} if record else {}

    def step(frame: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out, state = module(frame.float(), state)
        for n in spikes:
            spikes[n].append(state.cache[sanitize_name(n)])
        return out, state

    with torch.no_grad():
        logits = unroll(step, x, timesteps, enc)
    return logits, {n: torch.stack(v) for n, v in spikes.items()}, notes


class NorseBackend(NirBackend):
    """A NIR graph run by Norse (see module doc), batch by batch; reports the ``adaptations``
    it needed. Options as :class:`NirBackend`'s (``dt``, ``exporter`` = ``--from``,
    ``timesteps`` = ``-T``): the graph is read and fed exactly as there."""

    name = "norse"

    def __init__(self, model_path: str, *, dt: float | None = None,
                 exporter: str | None = None, timesteps: int | None = None,
                 reset: str | None = None, multi_spike: bool | None = None) -> None:
        try:
            import norse.torch  # noqa: F401
        except ImportError as e:
            raise DaLifError(f"the norse backend needs norse 1.1.0 ({e})") from None
        super().__init__(model_path, dt=dt, exporter=exporter, timesteps=timesteps,
                         reset=reset, multi_spike=multi_spike)
        adapt_for_norse(self.graph)  # what Norse cannot run is refused before any data
        self.notes: list[str] = []

    def batch_fn(self):
        built: list[tuple[torch.nn.Module, list[str]]] = []  # adapted and built once, lazily

        def fn(g, x, T, enc):
            if not built:
                built.append(build_norse(g, self.dt))
            logits, _, n = run_norse(g, x, T, self.dt, encoding=enc, built=built[0])
            self.notes[:] = n
            return logits
        return fn

    def extras(self) -> dict[str, Any]:
        return {**super().extras(), "adaptations": self.notes}
