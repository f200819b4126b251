"""Checkpoints: one documented, versioned format, written atomically, read without unpickling.

This module is the format and its safe reading (declared sizes checked through
:mod:`dalif_deploy.base.pickle_scan`, then ``weights_only=True``); building the model a
checkpoint names is :mod:`.loading`'s.

A checkpoint is a ``torch.save`` of a plain dict (only tensors, numbers, strings, lists and
dicts, so ``torch.load(weights_only=True)`` reads it and no code is ever executed)::

    format       "dalif-deploy.checkpoint"
    version      1
    model        model config dict (``name`` plus zoo options, see models.default_config;
                 or a user architecture's factory record, see factory.py)
    state_dict   parameter and buffer tensors
    timesteps    T used in training and evaluation
    dataset      {"name", "encoding", "input_shape", "normalization"}
    metrics      {"test_accuracy", "train_accuracy", ...} (fractions in [0, 1])
    created      {"time", "dalif_deploy", "torch", "command", "seed"}
    finetune     optional (absent in older files, which still load): how ``finetune`` made this
                 checkpoint, {"method", "weight_bits", "epochs", "lr", "batch_size", "seed",
                 "source_checkpoint", "source_sha256", "calibration_samples", ...} (see
                 FINETUNE_SCHEMA; fields beyond it are kept as they are)
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

from dalif_deploy.base.encoding import ANALOG, EVENTS
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.filekind import expect
from dalif_deploy.base.files import atomic_open, check_input_file
from dalif_deploy.base.pickle_scan import declared_storages
from dalif_deploy.base.resources import INPUT_ELEMENTS_MAX, check_memory, check_zip, format_bytes
from dalif_deploy.base.schema import (
    FLOAT32_MAX,
    Check,
    check_plain,
    integer,
    mapping,
    non_finite,
    number,
    optional,
    shape,
    text,
    validate,
)
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX

from . import factory
from .zoo import ZOO_DEFAULTS, default_config, validate_config

CHECKPOINT_FORMAT = "dalif-deploy.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "state_dict", "timesteps", "dataset", "metrics")


def _metric(value: Any, where: str) -> Any:
    """A metric: a finite number (accuracies in [0, 1]), a string or None."""
    if value is None or isinstance(value, str):
        return value
    if where.endswith("_accuracy"):
        return number(value, where, 0.0, 1.0)
    return integer(value, where) if isinstance(value, int) else number(value, where)


def _metrics(value: Any, where: str) -> dict[str, Any]:
    return {k: _metric(v, f"{where}.{k}") for k, v in mapping(value, where).items()}


DATASET_SCHEMA: dict[str, tuple[Check, bool]] = {
    "name": (optional(text), False),
    "encoding": (optional(lambda v, w: text(v, w, ("analog", "events"))), False),
    "input_shape": (optional(lambda v, w: list(shape(v, w, (2, 3), INPUT_ELEMENTS_MAX))),
                    False),  # [C, H, W], or [C, L] for 1-D data
    "normalization": (optional(text), False),
}
#: the ``finetune`` record of a fine-tuned checkpoint (dalif_deploy.studies.finetune writes it)
FINETUNE_SCHEMA: dict[str, tuple[Check, bool]] = {
    "method": (text, True),
    "weight_bits": (lambda v, w: integer(v, w, 1, 8), True),
    "epochs": (lambda v, w: integer(v, w, 1), True),
    "lr": (lambda v, w: number(v, w, 0.0, lo_open=True), True),
    "batch_size": (lambda v, w: integer(v, w, 1), False),
    "seed": (integer, False),
    "source_checkpoint": (text, False),
    "source_sha256": (text, False),
    "calibration_samples": (lambda v, w: integer(v, w, 0), False),
    "dataset": (optional(text), False),
    **{f"{kind}_test_accuracy_{when}": (lambda v, w: number(v, w, 0.0, 1.0), False)
       for kind in ("float", "fixed") for when in ("before", "after")},
}
#: the fields of a checkpoint dict (``model``'s own: zoo.config_schema)
CHECKPOINT_SCHEMA: dict[str, tuple[Check, bool]] = {
    "format": (text, True),  # its value and the version's: checked before (load_checkpoint)
    "version": (integer, True),
    "model": (mapping, True),  # the zoo's validate_config checks its fields
    "timesteps": (lambda v, w: integer(v, w, 1, TIMESTEPS_MAX), True),
    "state_dict": (mapping, True),
    "dataset": (lambda v, w: validate(v, DATASET_SCHEMA, w), True),
    "metrics": (_metrics, True),
    "created": (optional(mapping), False),
    "finetune": (optional(lambda v, w: validate(v, FINETUNE_SCHEMA, w)), False),
    "content_sha256": (text, False),
}


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
    finetune: dict[str, Any] | None = None  # how `finetune` made it (None: not fine-tuned)
    plain_state_dict: bool = False  # read from a plain state_dict file (--model, --timesteps)

    @property
    def model_name(self) -> str:
        return str(self.config.get("name"))

    @property
    def num_classes(self) -> int | None:
        """The model's number of classes: its config's, else its zoo model's default (None: a
        model outside the zoo that does not say)."""
        n = self.config.get("num_classes", ZOO_DEFAULTS.get(self.model_name, {}).get(
            "num_classes"))
        return None if n is None else int(n)

    def _full_config(self) -> dict[str, Any]:
        if "factory" in self.config:  # a user model records its own input shape
            return self.config
        return default_config(self.model_name,
                              **{k: v for k, v in self.config.items() if k != "name"})

    def model_input(self) -> dict[str, Any]:
        """What the model takes, for exporters: ``dataset`` (name), ``encoding``,
        ``input_shape`` (C, H, W, from the model config with zoo defaults) and
        ``normalization``. A plain state_dict records only the data set name: the encoding
        then follows from the name, the normalisation from the data set when it loads."""
        from dalif_deploy.datasets.loaders import DATASETS, EVENT_SETS, load_dataset, split_name

        name = self.dataset.get("name")
        encoding = self.dataset.get("encoding")
        if not encoding:
            base = split_name(str(name))[0]
            if base not in DATASETS:
                raise DaLifError(f"{self.path}: checkpoint names an unknown data set {name!r} "
                                 f"and no input encoding; known: {list(DATASETS)}")
            events = base.endswith("-events") or base in EVENT_SETS
            encoding = (EVENTS if events else ANALOG).name
        normalization = self.dataset.get("normalization")
        if not normalization:
            try:
                normalization = load_dataset(str(name), timesteps=self.timesteps).normalization
            except DaLifError:  # e.g. cifar10 without --data-dir
                normalization = "unspecified"
        cfg = self._full_config()
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
    h.update(json.dumps(plain, sort_keys=True, default=repr, allow_nan=False).encode())
    for k in sorted(obj["state_dict"]):
        t = obj["state_dict"][k].detach().cpu().contiguous()
        h.update(f"\n{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _check_storages(path: Path, z: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]
                    ) -> None:
    """Every storage ``data.pkl`` declares must fit its ``data/KEY`` record, before torch.load
    allocates it (torch sizes a storage from the pickle's element count)."""
    pkl = [n for n in members if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(pkl) != 1:
        return  # not torch's zip layout: torch.load refuses it
    root = pkl[0][: -len("data.pkl")]
    try:
        storages = declared_storages(z.read(pkl[0]))
    except Exception as e:  # noqa: BLE001 - any failure to parse an untrusted file is bad input
        raise DaLifError(f"{path}: not a readable checkpoint (its data.pkl does not parse: "
                         f"{str(e)[:120] or type(e).__name__})") from None
    total = 0
    for key, nbytes in storages:
        record = members.get(f"{root}data/{key}")
        if record is None:
            raise DaLifError(f"{path}: corrupted checkpoint: storage {key!r} has no record")
        if nbytes > record.file_size:
            raise DaLifError(f"{path}: corrupted or hostile checkpoint: storage {key!r} "
                             f"declares {format_bytes(nbytes)} but its record holds "
                             f"{format_bytes(record.file_size)}")
        total += nbytes
    check_memory(total, f"{path}: loading the checkpoint's tensors")


def _check_archive(path: Path, data: bytes) -> None:
    """Check a zip-format checkpoint (``data`` is the file) before torch.load sees it.

    Declared sizes first (:func:`resources.check_zip`: unique names, members inside the file,
    and only stored members, as torch.save writes them; every storage the pickle declares fits
    its record), then the CRC of every member: ``torch.load`` checks no CRC, so a flipped bit
    inside a tensor would load silently as a different weight. Legacy (non-zip) torch files
    are refused by the caller.
    """
    try:
        if not zipfile.is_zipfile(io.BytesIO(data)):
            return
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = check_zip(z, len(data), str(path))
            packed = [n for n, i in members.items() if i.compress_type != zipfile.ZIP_STORED]
            if packed:
                raise DaLifError(f"{path}: member {packed[0]!r} is compressed; torch.save "
                                 "writes every member stored, so this is not a checkpoint it "
                                 "wrote (re-save it with torch.save)")
            _check_storages(path, z, members)
            bad = z.testzip()
    except DaLifError:
        raise
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
    check_input_file(path, "a checkpoint (.pt)")
    expect(path, "checkpoint", "a checkpoint (.pt)")
    check_memory(2 * path.stat().st_size, f"{path}: reading the checkpoint")  # bytes + tensors
    data = path.read_bytes()
    head = data[:4]
    if head[:1] == b"\x80":
        raise DaLifError(f"{path}: a legacy (pre-zip) torch file, whose storage sizes cannot "
                         "be checked before loading; re-save it with torch.save of torch >= "
                         "1.6 (the zip format)")
    if head[:2] != b"PK":  # not a zip archive
        raise DaLifError(f"{path}: not a readable checkpoint (not a torch file: it starts with "
                         f"{head!r})")
    _check_archive(path, data)
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


def _check_tensors(state_dict: dict[str, Any], path: Path) -> None:
    """Every entry a real tensor; float ones finite and within float32 (the run dtype)."""
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise DaLifError(f"{path}: state_dict entry {k!r} is not a tensor")
        if v.is_complex():
            raise DaLifError(f"{path}: parameter {k!r} is complex ({v.dtype}); weights must "
                             "be real (complex values are not cast silently)")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise DaLifError(f"{path}: parameter {k!r} contains NaN or Inf; the model cannot "
                             "be deployed (retrain or repair the checkpoint)")
        if (v.is_floating_point() and v.element_size() > 4 and v.numel()
                and float(v.abs().max()) > FLOAT32_MAX):
            raise DaLifError(f"{path}: parameter {k!r} holds {float(v.abs().max()):.3g}, "
                             f"beyond float32's {FLOAT32_MAX:.3g} (it would become Inf when "
                             "the model runs in float32)")


def _full_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """The checked config with the zoo defaults of the fields it leaves out."""
    cfg = validate_config(cfg, where)
    return default_config(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})


def _is_plain_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_checkpoint(path: str | Path, model: str | None = None,
                    timesteps: int | None = None, model_code: str | None = None) -> Checkpoint:
    """Read and validate a checkpoint file (its weights are not fitted to a model here: see
    :func:`dalif_deploy.float_model.loading.load_checkpoint`).

    A plain ``state_dict`` file is accepted when ``model`` (a zoo name) or ``model_code`` (a
    factory, :mod:`.factory`) is given (``timesteps`` defaults to 4); its data set defaults to
    the zoo model's (digits for digits models and factories).
    """
    path = Path(path)
    obj, sha = _torch_load(path)
    code = model_code or factory.named_model_code()
    if _is_plain_state_dict(obj):
        if not model and not code:
            raise DaLifError(f"{path}: a plain state_dict; pass --model NAME (one of "
                             f"{sorted(ZOO_DEFAULTS)}) or {factory.FLAG} FACTORY (your own "
                             "architecture) to say which architecture it is")
        _check_tensors(obj, path)
        if code and not model:
            return _plain_user_model(path, obj, sha, code, timesteps)
        t = 4 if timesteps is None else integer(timesteps, "--timesteps", 1, TIMESTEPS_MAX)
        ckpt = Checkpoint(_full_config({"name": model}, "--model"), obj, t,
                          {"name": "digits" if model.startswith("digits") else "cifar10"},
                          {}, {"note": "plain state_dict"}, sha, str(path),
                          plain_state_dict=True)
        return ckpt
    if not isinstance(obj, dict):
        raise DaLifError(f"{path}: not a dalif-deploy checkpoint (top level is "
                         f"{type(obj).__name__})")
    # before anything prints, hashes or compares a field: those recurse, a record nested
    # thousands deep would crash them
    plain = {k: v for k, v in obj.items() if k != "state_dict"}
    check_plain(plain, f"{path}: checkpoint")
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
    if isinstance(cfg, dict) and "factory" in cfg:  # a user architecture (never imported here)
        cfg = factory.user_config(cfg, f"{path}: model config")
    elif code:
        raise DaLifError(f"{path}: holds zoo model {cfg.get('name')!r:.80}, not a user "
                         f"architecture; drop {factory.FLAG}")
    elif not isinstance(cfg, dict) or cfg.get("name") not in ZOO_DEFAULTS:
        name = cfg.get("name") if isinstance(cfg, dict) else cfg
        raise DaLifError(f"{path}: unknown model {name!r:.80}; this dalif-deploy knows "
                         f"{sorted(ZOO_DEFAULTS)}")
    if model and model != cfg["name"]:  # --model is for plain state_dicts; never ignore it
        raise DaLifError(f"{path}: the checkpoint holds a {cfg['name']!r} model but --model "
                         f"{model!r} was given; drop --model (it is for plain state_dicts)")
    fields = validate(obj, CHECKPOINT_SCHEMA, f"{path}: checkpoint")
    t = fields["timesteps"]
    if timesteps is not None and timesteps != t:  # -T is for plain state_dicts too
        raise DaLifError(f"{path}: the checkpoint was trained with T={t} but --timesteps "
                         f"{timesteps} was given; drop --timesteps (it is for plain "
                         "state_dicts)")
    _check_tensors(obj["state_dict"], path)
    config = cfg if "factory" in cfg else _full_config(cfg, f"{path}: model config")
    bad = non_finite(plain)  # the digest is strict JSON: no NaN anywhere in the plain fields
    if bad is not None:
        raise DaLifError(f"{path}: checkpoint field {bad} is not a finite number (NaN or "
                         "infinite); re-export it from a sound model")
    if "content_sha256" in obj and obj["content_sha256"] != content_digest(obj):
        raise DaLifError(f"{path}: corrupted checkpoint: its content does not match the "
                         "recorded content_sha256; restore the file from its source or retrain")
    return Checkpoint(config, obj["state_dict"], t,
                      fields["dataset"], fields["metrics"], fields.get("created") or {}, sha,
                      str(path), fields.get("finetune"))


def _plain_user_model(path: Path, state_dict: dict[str, Any], sha: str, code: str,
                      timesteps: int | None) -> Checkpoint:
    """A plain state_dict of the architecture ``--model-code`` names (factory called with no
    config), on digits: its input shape is the data set's (loading fits the weights)."""
    from dalif_deploy.datasets.loaders import load_dataset

    t = 4 if timesteps is None else integer(timesteps, "--timesteps", 1, TIMESTEPS_MAX)
    probe = load_dataset("digits", "test", timesteps=t, samples=1)
    cfg = factory.factory_config(code.rpartition(":")[2], code, {}, probe.input_shape,
                                 probe.num_classes)
    return Checkpoint(cfg, state_dict, t, {"name": "digits"}, {}, {"note": "plain state_dict"},
                      sha, str(path), plain_state_dict=True)


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any],
                    timesteps: int, dataset: dict[str, Any], metrics: dict[str, Any],
                    seed: int | None = None, finetune: dict[str, Any] | None = None) -> None:
    """Write a versioned checkpoint atomically (temporary file, then rename); ``finetune``
    (checked against :data:`FINETUNE_SCHEMA`) records how a fine-tuned one was made."""
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise DaLifError(f"metric {k!r} is not finite")
    if isinstance(config, dict) and "factory" in config:
        config = factory.user_config(config, "model config")
    elif not isinstance(config, dict) or config.get("name") not in ZOO_DEFAULTS:
        raise DaLifError(f"model config {config!r:.80}: not a zoo model "
                         f"({sorted(ZOO_DEFAULTS)}); record your architecture's factory: "
                         '{"name": ..., "factory": "module:function" or "file.py:function", '
                         '"config": {...}, "input_shape": [...]} (dd.factory_config builds it)')
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
    if finetune is not None:
        obj["finetune"] = validate(finetune, FINETUNE_SCHEMA, "finetune record")
    obj["content_sha256"] = content_digest(obj)
    with atomic_open(path) as f:
        torch.save(obj, f)  # a file object: the archive's root is "archive", not the tmp name
