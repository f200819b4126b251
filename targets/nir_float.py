"""The ``nir`` backend: run a NIR graph with our float reference (converters/nir_to_torch)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..backends import backend_result, load_for_model
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


def simulate_graph(backend: str, model_path: str, make_batch_fn: Callable[[Any, float], BatchFn],
                   *, dataset: str | None, split: str, samples: int | None, batch_size: int,
                   data_dir: str | None, progress: bool, dt: float | None) -> dict:
    """Shared driver of the NIR backends: load graph and data, check they fit, run in batches."""
    graph = read_nir(model_path)
    lines = describe_conventions(graph, dt)  # resolves dt (error when a foreign graph has none)
    run_dt = resolve_dt(graph, dt)
    if progress:
        for line in lines:
            print(f"[{backend}] {line}", file=sys.stderr)
    meta = graph.metadata or {}
    in_shape = graph.nodes[io_nodes(graph)[0]].input_type["input"]
    enc = meta.get("input_encoding")  # None: a foreign graph takes either kind of data
    ds = load_for_model(model_path, dataset, split, data_dir, samples,
                        encoding=None if enc is None else str(enc), input_shape=in_shape,
                        timesteps=graph_timesteps(graph) if "timesteps" in meta else None,
                        made_for=meta.get("dataset"))
    T = graph_timesteps(graph, ds.x, ds.encoding)
    fn = make_batch_fn(graph, run_dt)
    from tqdm import tqdm

    preds = []
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(ds), batch_size), desc=backend, disable=not progress,
                  leave=False):
        logits = fn(graph, torch.from_numpy(ds.x[i:i + batch_size]), T)
        preds.append(logits.argmax(1).cpu().numpy())
    seconds = time.perf_counter() - t0
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    return backend_result(backend, model_path, ds, pred, seconds, timesteps=T, dt=run_dt,
                          encoding=ds.encoding, conventions=lines)


def simulate(model_path: str, *, dataset: str | None, split: str = "test",
             samples: int | None = None, batch_size: int = 256,
             data_dir: str | None = None, progress: bool = True,
             **opts: Any) -> dict:
    """Accuracy and predictions of NIR graph ``model_path`` run by the float reference.

    Option ``dt``: required for graphs without dalif-deploy metadata (foreign graphs).
    """
    dt = opts.pop("dt", None)
    if opts:
        raise DaLifError(f"the nir backend takes only the option dt, not {sorted(opts)}")

    def make(graph: Any, run_dt: float) -> BatchFn:
        runner = GraphRunner(graph, run_dt)
        return lambda g, x, T: runner.run(x, T, record=False)[0]

    return simulate_graph("nir", model_path, make, dataset=dataset, split=split,
                          samples=samples, batch_size=batch_size, data_dir=data_dir,
                          progress=progress, dt=dt)
