"""Checkpoints: one documented, versioned format, written atomically, read without unpickling.

A checkpoint is a ``torch.save`` of a plain dict (only tensors, numbers, strings, lists and
dicts, so ``torch.load(weights_only=True)`` reads it and no code is ever executed)::

    format       "dalif-deploy.checkpoint"
    version      1
    model        model config dict (``name`` plus zoo options, see models.default_config)
    state_dict   parameter and buffer tensors
    timesteps    T used in training and evaluation
    dataset      {"name", "encoding", "input_shape", "normalization"}
    metrics      {"test_accuracy", "train_accuracy", ...} (fractions in [0, 1])
    created      {"time", "dalif_deploy", "torch", "command", "seed"}
    content_sha256  sha256 over all of the above (see content_digest); verified on load when
                 present, because torch.load checks no CRC and a flipped bit in a tensor (or in
                 the zip directory) would otherwise load silently as a different weight
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import DaLifError
from .io import atomic_path
from .models import ZOO_DEFAULTS, build_model, default_config

CHECKPOINT_FORMAT = "dalif-deploy.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "state_dict", "timesteps", "dataset", "metrics")


@dataclass
class Checkpoint:
    """A loaded, validated checkpoint."""

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    timesteps: int
    dataset: dict[str, Any]
    metrics: dict[str, Any]
    created: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: str = ""

    @property
    def model_name(self) -> str:
        return str(self.config.get("name"))

    def model_input(self) -> dict[str, Any]:
        """What the model takes, for exporters: ``dataset`` (name), ``encoding``,
        ``input_shape`` (C, H, W, from the model config with zoo defaults) and
        ``normalization``. A plain state_dict records only the data set name: the encoding
        then follows from the name, the normalisation from the data set when it loads."""
        from .data import DATASETS, load_dataset

        name = self.dataset.get("name")
        encoding = self.dataset.get("encoding")
        if not encoding:
            if name not in DATASETS:
                raise DaLifError(f"{self.path}: checkpoint names an unknown data set {name!r} "
                                 f"and no input encoding; known: {list(DATASETS)}")
            encoding = "events" if str(name).endswith("-events") else "analog"
        normalization = self.dataset.get("normalization")
        if not normalization:
            try:
                normalization = load_dataset(str(name), timesteps=self.timesteps).normalization
            except DaLifError:  # e.g. cifar10 without --data-dir
                normalization = "unspecified"
        cfg = default_config(self.model_name,
                             **{k: v for k, v in self.config.items() if k != "name"})
        return {"dataset": "" if name is None else str(name), "encoding": str(encoding),
                "input_shape": [int(d) for d in cfg["input_shape"]],
                "normalization": str(normalization)}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_digest(obj: dict[str, Any]) -> str:
    """sha256 of a checkpoint dict's content: its plain fields as canonical JSON, then every
    tensor's name, dtype, shape and bytes in name order (``content_sha256`` excluded)."""
    h = hashlib.sha256()
    plain = {k: v for k, v in obj.items() if k not in ("state_dict", "content_sha256")}
    h.update(json.dumps(plain, sort_keys=True, default=repr).encode())
    for k in sorted(obj["state_dict"]):
        t = obj["state_dict"][k].detach().cpu().contiguous()
        h.update(f"\n{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _check_archive(path: Path, data: bytes) -> None:
    """Verify the CRC of every member of a zip-format checkpoint (``data`` is the file).

    ``torch.load`` does not check CRCs: a flipped bit inside a tensor would load silently as a
    different weight. Legacy (non-zip) torch files are left to ``torch.load``.
    """
    try:
        if not zipfile.is_zipfile(io.BytesIO(data)):
            return
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            bad = z.testzip()
    except Exception as e:  # noqa: BLE001 - any failure to parse an untrusted file is bad input
        raise DaLifError(f"{path}: not a readable checkpoint (corrupted or truncated zip "
                         f"archive: {e})") from None
    if bad is not None:
        raise DaLifError(f"{path}: corrupted checkpoint: member {bad!r} fails its CRC check; "
                         "restore the file from its source or retrain")


def _unpickling_reason(e: Exception) -> str:
    """The informative line of torch's weights_only refusal (it names the refused global)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "global" in ln or "Unsupported" in ln:
            return ln[:160]
    return (lines[-1] if lines else type(e).__name__)[:160]


def _torch_load(path: Path) -> tuple[Any, str]:
    """The file's content loaded with ``weights_only=True``, and its sha256.

    The file is read once: the CRC check, the hash and the load all see the same bytes.
    """
    if not path.is_file():
        raise DaLifError(f"{path}: " + ("is a directory, not a file" if path.is_dir()
                                        else "no such file"))
    data = path.read_bytes()
    _check_archive(path, data)
    head = data[:4]
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither a zip archive nor a legacy pickle
        raise DaLifError(f"{path}: not a readable checkpoint (not a torch file: it starts with "
                         f"{head!r})")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DaLifError(f"{path}: refusing to load: the file holds objects other than tensors "
                         f"and plain data (a pickle payload?); only weights_only files are "
                         f"accepted ({_unpickling_reason(e)})") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse an untrusted file is bad input
        raise DaLifError(f"{path}: not a readable checkpoint (corrupted or truncated: "
                         f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
                         ) from None
    return obj, hashlib.sha256(data).hexdigest()


def _check_finite(state_dict: dict[str, Any], path: Path) -> None:
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise DaLifError(f"{path}: state_dict entry {k!r} is not a tensor")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise DaLifError(f"{path}: parameter {k!r} contains NaN or Inf; the model cannot "
                             "be deployed (retrain or repair the checkpoint)")


def _is_plain_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def load_checkpoint(path: str | Path, model: str | None = None,
                    timesteps: int | None = None) -> Checkpoint:
    """Read and validate a checkpoint.

    A plain ``state_dict`` file is accepted when ``model`` (a zoo name) and ``timesteps`` are
    given; its data set defaults to the zoo model's (digits for digits models).
    """
    return _load(path, model, timesteps)[0]


def _load(path: str | Path, model: str | None, timesteps: int | None
          ) -> tuple[Checkpoint, nn.Module | None]:
    """The validated checkpoint, and for a plain state_dict the model built to validate it."""
    path = Path(path)
    obj, sha = _torch_load(path)
    if _is_plain_state_dict(obj):
        if not model:
            raise DaLifError(f"{path}: a plain state_dict; pass --model NAME (one of "
                             f"{sorted(ZOO_DEFAULTS)}) to say which architecture it is")
        _check_finite(obj, path)
        ckpt = Checkpoint({"name": model}, obj, int(timesteps or 4),
                          {"name": "digits" if model.startswith("digits") else "cifar10"},
                          {}, {"note": "plain state_dict"}, sha, str(path))
        return ckpt, build_checked(ckpt)
    if not isinstance(obj, dict):
        raise DaLifError(f"{path}: not a dalif-deploy checkpoint (top level is "
                         f"{type(obj).__name__})")
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise DaLifError(f"{path}: not a dalif-deploy checkpoint (format={obj.get('format')!r})")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise DaLifError(f"{path}: checkpoint version {obj.get('version')!r} is not supported "
                         f"(this dalif-deploy reads version {CHECKPOINT_VERSION}); re-export it "
                         "with a matching dalif-deploy")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise DaLifError(f"{path}: checkpoint is missing {missing}")
    cfg = obj["model"]
    if not isinstance(cfg, dict) or cfg.get("name") not in ZOO_DEFAULTS:
        name = cfg.get("name") if isinstance(cfg, dict) else cfg
        raise DaLifError(f"{path}: unknown model {name!r}; this dalif-deploy knows "
                         f"{sorted(ZOO_DEFAULTS)}")
    if not isinstance(obj["state_dict"], dict):
        raise DaLifError(f"{path}: state_dict is not a dict")
    if model and model != cfg["name"]:  # --model is for plain state_dicts; never ignore it
        raise DaLifError(f"{path}: the checkpoint holds a {cfg['name']!r} model but --model "
                         f"{model!r} was given; drop --model (it is for plain state_dicts)")
    t = obj["timesteps"]
    if not isinstance(t, int) or t < 1:
        raise DaLifError(f"{path}: timesteps must be a positive integer, got {t!r}")
    if timesteps is not None and timesteps != t:  # -T is for plain state_dicts too
        raise DaLifError(f"{path}: the checkpoint was trained with T={t} but --timesteps "
                         f"{timesteps} was given; drop --timesteps (it is for plain "
                         "state_dicts)")
    _check_finite(obj["state_dict"], path)
    if "content_sha256" in obj and obj["content_sha256"] != content_digest(obj):
        raise DaLifError(f"{path}: corrupted checkpoint: its content does not match the "
                         "recorded content_sha256; restore the file from its source or retrain")
    ckpt = Checkpoint(cfg, obj["state_dict"], t, dict(obj["dataset"]), dict(obj["metrics"]),
                      dict(obj.get("created", {})), sha, str(path))
    return ckpt, None


def build_checked(ckpt: Checkpoint) -> nn.Module:
    """Build the model of ``ckpt`` and load its weights; mismatches are a DaLifError."""
    model = build_model(ckpt.config)
    result = model.load_state_dict(ckpt.state_dict, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {result.missing_keys[:5]}")
    if result.unexpected_keys:
        problems.append(f"unexpected {result.unexpected_keys[:5]}")
    if problems:
        raise DaLifError(f"{ckpt.path}: weights do not fit model {ckpt.model_name!r}: "
                         + "; ".join(problems))
    return model.eval()


def load_model(path: str | Path, model: str | None = None,
               timesteps: int | None = None) -> tuple[nn.Module, Checkpoint]:
    """Load a checkpoint and return ``(model in eval mode, checkpoint)``."""
    try:
        ckpt, net = _load(path, model, timesteps)  # a plain state_dict is built once, here
        return (net if net is not None else build_checked(ckpt)), ckpt
    except RuntimeError as e:  # shape mismatches from load_state_dict
        detail = " ".join(ln.strip() for ln in str(e).splitlines()[:2])  # line 2 says which
        raise DaLifError(f"{path}: weights do not fit the model: {detail[:300]}") from None


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any],
                    timesteps: int, dataset: dict[str, Any], metrics: dict[str, Any],
                    seed: int | None = None) -> None:
    """Write a versioned checkpoint atomically (temporary file, then rename)."""
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise DaLifError(f"metric {k!r} is not finite")
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": dict(config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "timesteps": int(timesteps),
        "dataset": dict(dataset),
        "metrics": dict(metrics),
        "created": {
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "dalif_deploy": __import__("dalif_deploy").__version__,
            "torch": str(torch.__version__),
            "command": " ".join(["dalif-deploy", *sys.argv[1:]]),
            "seed": seed,
        },
    }
    obj["content_sha256"] = content_digest(obj)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)  # a file object: the archive's root is "archive", not the tmp name
