"""The ``torch`` backend: run a checkpoint in float PyTorch (the reference every other stage is
compared with)."""

from __future__ import annotations

import time
from typing import Any

from ..backends import backend_result, load_for_model
from ..checkpoint import load_model
from ..encoding import ANALOG
from ..errors import DaLifError
from ..training import predict


def simulate(model_path: str, *, dataset: str | None, split: str = "test",
             samples: int | None = None, batch_size: int = 256,
             data_dir: str | None = None, progress: bool = True,
             **opts: Any) -> dict:
    """Accuracy and per-sample predictions of checkpoint ``model_path`` on a data set split.

    Event data sets are generated with the checkpoint's T. The data set must give the input the
    model was trained on (encoding and shape), else a DaLifError says which one to use.
    """
    if opts:
        raise DaLifError(f"the torch backend takes no option(s) {sorted(opts)}")
    model, ckpt = load_model(model_path)
    T = ckpt.timesteps
    ds = load_for_model(model_path, dataset, split, data_dir, samples,
                        encoding=ckpt.dataset.get("encoding", ANALOG.name),
                        input_shape=ckpt.config["input_shape"], timesteps=T,
                        made_for=ckpt.dataset.get("name"))
    t0 = time.perf_counter()
    pred = predict(model, ds, T, batch_size, progress)
    return backend_result("torch", model_path, ds, pred, time.perf_counter() - t0,
                          model_name=ckpt.model_name, timesteps=T, encoding=ds.encoding,
                          checkpoint_sha256=ckpt.sha256)
