"""The ``nir`` backend: run a NIR graph with our float reference (converters/nir_to_torch)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..backend import BackendRun, ModelInput, Option, in_batches
from ..converters.nir_graph import io_nodes, read_nir
from ..converters.nir_to_torch import GraphRunner, describe_conventions, resolve_dt
from ..encoding import EVENTS, Encoding
from ..errors import DaLifError

#: (graph, x batch, T) -> logits [B, classes]
BatchFn = Callable[[Any, torch.Tensor, int], torch.Tensor]


def graph_timesteps(graph: Any, ds_x: np.ndarray | None = None, encoding: str | None = None
                    ) -> int:
    """T from the graph metadata; for a foreign graph on event data, the data's T."""
    meta = graph.metadata or {}
    if "timesteps" in meta:
        return int(np.asarray(meta["timesteps"]))
    if Encoding.find(encoding) is EVENTS and ds_x is not None:
        return int(ds_x.shape[1])
    raise DaLifError("the graph records no number of timesteps (no dalif-deploy metadata) and "
                     "the data set is static; export it with dalif-deploy or use event data")


#: the option both NIR backends take
DT_OPTION = Option("dt", float, "time step for foreign NIR graphs (required when the graph has "
                   "no dalif-deploy metadata)")


class NirBackend:
    """A NIR graph run by our float reference (converters/nir_to_torch), in batches.

    Option ``dt``: required for graphs without dalif-deploy metadata (foreign graphs). A
    subclass changes :meth:`batch_fn` (and ``name``) to run the graph with another simulator.
    """

    name = "nir"
    kind = "nir"
    options = (DT_OPTION,)

    def __init__(self, model_path: str, *, dt: float | None = None) -> None:
        self.graph = read_nir(model_path)
        # resolves dt (error when a foreign graph has none)
        self.conventions = describe_conventions(self.graph, dt)
        self.dt = resolve_dt(self.graph, dt)
        meta = self.graph.metadata or {}
        in_shape = self.graph.nodes[io_nodes(self.graph)[0]].input_type["input"]
        enc = meta.get("input_encoding")  # None: a foreign graph takes either kind of data
        self.input = ModelInput(None if enc is None else str(enc), in_shape,
                                graph_timesteps(self.graph) if "timesteps" in meta else None,
                                meta.get("dataset"))

    def batch_fn(self) -> BatchFn:
        runner = GraphRunner(self.graph, self.dt)
        return lambda g, x, T: runner.run(x, T, record=False)[0]

    def extras(self) -> dict[str, Any]:
        """Backend-specific keys added after a run."""
        return {}

    def run(self, data: Any, *, batch_size: int, progress: bool) -> BackendRun:
        if progress:
            for line in self.conventions:
                print(f"[{self.name}] {line}", file=sys.stderr)
        T = graph_timesteps(self.graph, data.x, data.encoding)
        fn = self.batch_fn()
        preds = [fn(self.graph, torch.from_numpy(data.x[b]), T).argmax(1).cpu().numpy()
                 for b in in_batches(len(data), batch_size, desc=self.name, progress=progress)]
        pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
        return BackendRun(pred, {"timesteps": T, "dt": self.dt, "encoding": data.encoding,
                                 "conventions": self.conventions, **self.extras()})

