"""The ``torch`` backend: run a checkpoint in float PyTorch (the reference every other stage is
compared with)."""

from __future__ import annotations

import time
from typing import Any

from ..checkpoint import load_model
from ..data import load_dataset
from ..errors import DaLifError
from ..training import predict


def simulate(model_path: str, *, dataset: str, split: str = "test", samples: int | None = None,
             batch_size: int = 256, data_dir: str | None = None, progress: bool = True,
             **opts: Any) -> dict:
    """Accuracy and per-sample predictions of checkpoint ``model_path`` on a data set split.

    Event data sets are generated with the checkpoint's T. The data set must give the input the
    model was trained on (encoding and shape), else a DaLifError says which one to use.
    """
    if opts:
        raise DaLifError(f"the torch backend takes no option(s) {sorted(opts)}")
    model, ckpt = load_model(model_path)
    T = ckpt.timesteps
    ds = load_dataset(dataset, split, data_dir, timesteps=T)
    want_shape = list(ckpt.config.get("input_shape", ds.input_shape))
    want_enc = ckpt.dataset.get("encoding", ds.encoding)
    if list(ds.input_shape) != want_shape or ds.encoding != want_enc:
        raise DaLifError(f"{model_path}: the model takes {want_enc} input {want_shape}, data set "
                         f"{dataset!r} gives {ds.encoding} {list(ds.input_shape)}; use --dataset "
                         f"{ckpt.dataset.get('name', '?')}")
    ds = ds.head(samples)
    t0 = time.perf_counter()
    pred = predict(model, ds, T, batch_size, progress)
    seconds = time.perf_counter() - t0
    return {
        "backend": "torch",
        "model": str(model_path),
        "model_name": ckpt.model_name,
        "dataset": dataset,
        "split": split,
        "samples": int(len(ds)),
        "accuracy": float((pred == ds.y).mean()),
        "predictions": [int(p) for p in pred],
        "seconds": seconds,
        "timesteps": T,
        "encoding": ds.encoding,
        "checkpoint_sha256": ckpt.sha256,
    }
