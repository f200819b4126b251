"""The ``nir`` backend: run a NIR graph with our float reference (converters/nir_to_torch).

A foreign graph is read with its exporter's conventions (``--from``, see
:mod:`dalif_deploy.converters.nir_conventions`); the ``norse`` backend subclasses
:class:`NirBackend`, so both read a graph, find T and feed the data's encoding the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from dalif_deploy.converters.ir.graph import io_nodes, output_classes
from dalif_deploy.converters.nir_conventions import read_graph
from dalif_deploy.converters.nir_to_torch import GraphRunner, describe_conventions

from dalif_deploy.base.encoding import Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX

from .options import NIR_OPTIONS
from .protocol import BackendRun, ModelInput, in_batches

#: (graph, x batch, T, encoding) -> logits [B, classes]
BatchFn = Callable[[Any, torch.Tensor, int, Encoding], torch.Tensor]


def graph_timesteps(graph: Any, ds_x: np.ndarray | None = None, encoding: str | None = None,
                    timesteps: int | None = None) -> int:
    """T from the graph metadata; else for event data the data's T, else ``timesteps``
    (``simulate -T``), which must agree with the others where they exist."""
    meta = graph.metadata or {}
    stored = int(np.asarray(meta["timesteps"])) if "timesteps" in meta else None
    data_t = (Encoding.from_name(encoding).timesteps_of(ds_x)
              if ds_x is not None and Encoding.find(encoding) is not None else None)
    if timesteps is not None:
        t = int(timesteps)
        if not 1 <= t <= TIMESTEPS_MAX:
            raise DaLifError(f"-T must lie in 1..{TIMESTEPS_MAX}, got {t}")
        for known, where in ((stored, "the graph records"), (data_t, "the event data have")):
            if known is not None and known != t:
                raise DaLifError(f"-T {t}: {where} T = {known}; drop -T")
        return t
    if stored is not None:
        return stored
    if data_t is not None:
        return data_t
    raise DaLifError("the graph records no number of timesteps (no dalif-deploy metadata) and "
                     "the data set is static; give it with -T (or use event data)")


class NirBackend:
    """A NIR graph run by our float reference (converters/nir_to_torch), in batches.

    Options for graphs without dalif-deploy metadata (foreign graphs): ``exporter``
    (``--from``: the exporter's dt and decay, read by ``read_conventions``), ``dt``
    (overrides it; required with plain NIR), ``timesteps`` (``-T``: T for a graph that records
    none), ``reset`` and ``multi_spike`` (``--reset``, ``--multi-spike``: the neurons' firing
    where the file cannot say it). Both NIR backends feed the data with the data set's
    encoding (checked against the graph's own by the registry). A subclass changes
    :meth:`batch_fn` (and ``name``) to run the graph with another simulator.
    """

    name = "nir"
    kind = "nir"
    options = NIR_OPTIONS

    def __init__(self, model_path: str, *, dt: float | None = None,
                 exporter: str | None = None, timesteps: int | None = None,
                 reset: str | None = None, multi_spike: bool | None = None) -> None:
        reading = read_graph(model_path, exporter, dt, reset, bool(multi_spike))
        self.graph, self.dt, self.exporter = reading.graph, reading.dt, reading.exporter
        # our own graphs: describe_conventions' lines; foreign: the exporter's notes first
        self.conventions = (reading.notes
                            + describe_conventions(self.graph, self.dt)[int(bool(reading.notes)):])
        meta = self.graph.metadata or {}
        self.timesteps = timesteps
        if "timesteps" in meta or timesteps is not None:
            timesteps = graph_timesteps(self.graph, timesteps=timesteps)
        in_shape = self.graph.nodes[io_nodes(self.graph)[0]].input_type["input"]
        enc = meta.get("input_encoding")  # None: a foreign graph takes either kind of data
        self.input = ModelInput(None if enc is None else str(enc), in_shape, timesteps,
                                meta.get("dataset"), output_classes(self.graph))

    def batch_fn(self) -> BatchFn:
        runner = GraphRunner(self.graph, self.dt)
        return lambda g, x, T, enc: runner.run(x, T, enc, record=False)[0]

    def extras(self) -> dict[str, Any]:
        """Backend-specific keys added after a run."""
        return {"exporter": self.exporter} if self.exporter else {}

    def run(self, data: Any, *, batch_size: int, progress: bool) -> BackendRun:
        T = graph_timesteps(self.graph, data.x, data.encoding, self.timesteps)
        enc = Encoding.from_name(data.encoding, "input encoding")  # one rule, both backends
        fn = self.batch_fn()
        preds = [fn(self.graph, torch.from_numpy(data.x[b]), T, enc).argmax(1).cpu().numpy()
                 for b in in_batches(len(data), batch_size, desc=self.name, progress=progress)]
        pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
        return BackendRun(pred, {"timesteps": T, "dt": self.dt, "encoding": data.encoding,
                                 "conventions": self.conventions, **self.extras()})

