"""Training and evaluation of zoo models, or any module of the package's layers, on the data
sets.

Training is deterministic for a seed: weights are initialised after ``torch.manual_seed(seed)``,
batches are shuffled by ``numpy.random.default_rng(seed)``, torch runs single-threaded with
deterministic algorithms, so the same command gives bit-identical weights on a machine.

Loss: cross-entropy on :func:`~dalif_deploy.float_model.zoo.run_model`'s readout (mean over T of
the final
linear layer). Optimiser: Adam with a cosine learning-rate schedule over all steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dalif_deploy.base.encoding import Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.resources import BATCH_MAX, check_memory
from dalif_deploy.datasets.loaders import Dataset, load_dataset
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX

from .zoo import run_model


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch, run single-threaded with deterministic algorithms; restore settings after."""
    threads = torch.get_num_threads()
    was_det = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_det)


def batch_indices(n: int, batch_size: int, order: np.ndarray | None = None) -> list[np.ndarray]:
    """The sample indices of each batch: ``order`` (default ``0..n-1``) cut every ``batch_size``."""
    idx = np.arange(n) if order is None else order
    return [idx[i:i + batch_size] for i in range(0, n, batch_size)]


def predict(model: nn.Module, ds: Dataset, timesteps: int, batch_size: int = 256,
            progress: bool = False) -> np.ndarray:
    """Predicted class per sample of ``ds`` (data set order), model in eval mode, no grad."""
    if batch_size < 1:
        raise DaLifError(f"batch size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    preds = []
    try:
        with torch.no_grad():
            for b in tqdm(batch_indices(len(ds), batch_size), desc="evaluate", unit="batch",
                          disable=not progress, leave=False):
                x = torch.from_numpy(ds.x[b])
                preds.append(run_model(model, x, timesteps, ds.encoding).argmax(1).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def evaluate(model: nn.Module, dataset: Dataset | str, timesteps: int,
             batch_size: int = 256, split: str = "test", data_dir: str | None = None) -> float:
    """Accuracy (fraction in [0, 1]) of ``model`` on a data set (a Dataset or its name)."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, split, data_dir, timesteps)
    return float((predict(model, ds, timesteps, batch_size) == ds.y).mean())


def _check_args(epochs: int, timesteps: int, batch_size: int, lr: float) -> None:
    for name, v, hi in (("epochs", epochs, 10**6), ("timesteps", timesteps, TIMESTEPS_MAX),
                        ("batch size", batch_size, BATCH_MAX)):
        if not isinstance(v, int) or v < 1:
            raise DaLifError(f"{name} must be a positive integer, got {v!r}")
        if v > hi:
            raise DaLifError(f"{name} must be at most {hi}, got {v}")
    if not lr > 0:
        raise DaLifError(f"learning rate must be > 0, got {lr}")


def _check_fits(model: nn.Module, name: str, ds: Dataset) -> None:
    """One float step on a zero sample, so a model that cannot take the data set's input (e.g.
    vgg11's five poolings on 8x8 digits) is bad input, not a traceback mid-training."""
    from dalif_deploy.neurons import reset_states

    model.eval()  # batch-norm statistics untouched, so training stays deterministic
    try:
        with torch.no_grad():
            steps = ds.x.shape[1] if Encoding.from_name(ds.encoding).time_axis else 1
            run_model(model, torch.zeros((1, *ds.x.shape[1:])), steps, ds.encoding)
    except (RuntimeError, ValueError) as e:
        raise DaLifError(f"model {name!r} cannot take {ds.name} input "
                         f"{tuple(ds.input_shape)} ({str(e).splitlines()[0][:120]}); choose a "
                         "model made for this input size") from None
    finally:
        reset_states(model)
        model.train()


def train(
    config: dict[str, Any] | nn.Module,
    dataset: str = "digits",
    epochs: int = 30,
    timesteps: int = 4,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the zoo model described by ``config``, or any single-step ``nn.Module`` built
    from the package's layers (trained in place), on ``dataset``; deterministic for ``seed``
    (a module's initial weights are its caller's: build it after ``torch.manual_seed``).

    ``config['input_shape']`` is set from the data set. Returns ``(model in eval mode,
    metrics)`` with ``train_accuracy``/``test_accuracy`` (fractions), ``final_loss``,
    ``epochs``, ``batch_size``, ``lr``, ``seconds``.
    """
    _check_args(epochs, timesteps, batch_size, lr)
    train_ds = load_dataset(dataset, "train", data_dir, timesteps)
    test_ds = load_dataset(dataset, "test", data_dir, timesteps)
    if isinstance(config, nn.Module):
        module = config
        return _fit(lambda: module, type(module).__name__, train_ds, test_ds, epochs,
                    timesteps, batch_size, lr, seed, progress)
    from .zoo import build_model, training_bytes

    if list(config.get("input_shape", train_ds.input_shape)) != list(train_ds.input_shape):
        raise DaLifError(f"model input shape {config['input_shape']} does not match data set "
                         f"{dataset!r} {list(train_ds.input_shape)}")
    config["input_shape"] = list(train_ds.input_shape)
    config["in_channels"] = train_ds.input_shape[0]
    classes = int(config.get("num_classes", 10))
    if max(train_ds.num_classes, int(train_ds.y.max(initial=0)) + 1) > classes:
        raise DaLifError(f"data set {dataset!r} has {train_ds.num_classes} classes, the model "
                         f"config {classes}; set num_classes={train_ds.num_classes}")
    batch = min(batch_size, len(train_ds))
    check_memory(training_bytes(config, batch, timesteps),
                 f"training {config['name']} with batch {batch} and T={timesteps}",
                 "lower --batch-size, -T or --width")
    return _fit(lambda: build_model(config), config["name"], train_ds, test_ds, epochs,
                timesteps, batch_size, lr, seed, progress)


def _fit(make: Callable[[], nn.Module], name: str, train_ds: Dataset, test_ds: Dataset,
         epochs: int, timesteps: int, batch_size: int, lr: float, seed: int, progress: bool
         ) -> tuple[nn.Module, dict[str, Any]]:
    """The training loop (module docstring) of the model ``make()`` returns (called seeded),
    trained in place, and its metrics."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    with deterministic(seed):
        model = make()
        _check_fits(model, name, train_ds)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps = epochs * len(batch_indices(len(train_ds), batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        loss_fn = nn.CrossEntropyLoss()
        bar = tqdm(total=steps, desc=f"train {name}", unit="batch",
                   disable=not progress)
        loss_value = float("nan")
        for epoch in range(epochs):
            model.train()
            for b in batch_indices(len(train_ds), batch_size, rng.permutation(len(train_ds))):
                x = torch.from_numpy(train_ds.x[b])
                y = torch.from_numpy(train_ds.y[b])
                loss = loss_fn(run_model(model, x, timesteps, train_ds.encoding), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                loss_value = loss.item()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_value:.3f}")
            if not np.isfinite(loss_value):
                bar.close()
                raise DaLifError(f"training diverged (loss {loss_value} in epoch {epoch + 1}); "
                                 "lower --lr")
        bar.close()
        model.eval()
        metrics = {
            "train_accuracy": evaluate(model, train_ds, timesteps),
            "test_accuracy": evaluate(model, test_ds, timesteps),
            "final_loss": loss_value,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return model, metrics
