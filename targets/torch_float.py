"""The ``torch`` backend: run a checkpoint in float PyTorch (the reference every other stage is
compared with)."""

from __future__ import annotations

from typing import Any

from dalif_deploy.base.encoding import ANALOG
from dalif_deploy.datasets.loaders import Dataset
from dalif_deploy.float_model.loading import load_model
from dalif_deploy.float_model.training import predict

from .protocol import BackendRun, ModelInput, Option


class TorchBackend:
    """Accuracy and per-sample predictions of a checkpoint on a data set split.

    Event data sets are generated with the checkpoint's T. The data set must give the input the
    model was trained on (encoding and shape), else a DaLifError says which one to use.
    """

    name = "torch"
    kind = "checkpoint"
    options: tuple[Option, ...] = ()

    def __init__(self, model_path: str, **options: Any) -> None:
        self.model, self.ckpt = load_model(model_path)
        self.input = ModelInput(self.ckpt.dataset.get("encoding", ANALOG.name),
                                self.ckpt.config["input_shape"], self.ckpt.timesteps,
                                self.ckpt.dataset.get("name"), self.ckpt.num_classes)

    def run(self, data: Dataset, *, batch_size: int, progress: bool) -> BackendRun:
        T = self.ckpt.timesteps
        pred = predict(self.model, data, T, batch_size, progress)
        return BackendRun(pred, {"model_name": self.ckpt.model_name, "timesteps": T,
                                 "encoding": data.encoding,
                                 "checkpoint_sha256": self.ckpt.sha256})
