"""The backend registry behind ``dalif-deploy simulate`` and the file-kind detection it shares
with ``inspect``.

Every backend is a function ``"module:function"`` with the signature::

    simulate(model_path: str, *, dataset: str | None, split: str = "test",
             samples: int | None = None,
             batch_size: int = 256, data_dir: str | None = None, progress: bool = True,
             **opts) -> dict

(``dataset=None``: the data set the model file records, via ``load_for_model``) returning
at least ``backend``, ``dataset``, ``samples``, ``accuracy``, ``predictions`` (ints,
data set order) and ``seconds``. Backend modules are imported only when used (so lava is never
imported unless ``--backend lava`` is asked for).
"""

from __future__ import annotations

import argparse
import importlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encoding import ANALOG, Encoding
from .errors import DaLifError
from .io import check_input_file

#: file kind -> (suffixes, what it is)
FILE_KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "checkpoint": ((".pt", ".pth"), "PyTorch checkpoint"),
    "nir": ((".nir",), "NIR graph"),
    "program": ((".fxp",), "fixed-point program"),
    "onnx": ((".onnx",), "ONNX graph"),
}


@dataclass(frozen=True)
class Backend:
    """A simulate backend: where its function lives, which file kind it runs, its options."""

    name: str
    target: str  # "module:function"
    kind: str  # a FILE_KINDS key
    options: tuple[str, ...] = ()  # CLI options it takes (passed as **opts)

    def __post_init__(self) -> None:
        if self.kind not in FILE_KINDS:
            raise DaLifError(f"backend {self.name!r}: unknown file kind {self.kind!r}")
        if self.target.count(":") != 1:
            raise DaLifError(f"backend {self.name!r}: target must be 'module:function'")

    def load(self) -> Callable[..., dict]:
        module, func = self.target.split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (module == e.name or module.startswith(e.name + ".")):
                raise DaLifError(f"backend {self.name!r} is not available in this installation "
                                 f"({module} is missing)") from None
            raise DaLifError(f"backend {self.name!r} needs the package {e.name!r}, which is "
                             "not installed; run `make install`") from None
        return getattr(mod, func)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "dalif_deploy.targets.torch_float:simulate", "checkpoint"),
    Backend("nir", "dalif_deploy.targets.nir_float:simulate", "nir", ("dt",)),
    Backend("norse", "dalif_deploy.targets.norse:simulate", "nir", ("dt",)),
    Backend("emulator", "dalif_deploy.targets.emulator:simulate", "program"),
    Backend("lava", "dalif_deploy.targets.lava:simulate", "program",
            ("timeout", "max_lava_processes", "max_lava_memory")),
    Backend("onnx", "dalif_deploy.targets.onnxruntime:simulate", "onnx"),
)}


def _sniff(path: Path) -> str | None:
    """Guess a file's kind from its bytes when its suffix says nothing."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return "nir"
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return None
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return "checkpoint"
        if names and all(n.endswith(".npy") for n in names):
            return "program"
    return None


def file_kind(path: str | Path) -> str:
    """The kind of a model file (a FILE_KINDS key): by suffix, else by its first bytes."""
    path = check_input_file(path, "a model file: "
                            + ", ".join(s[0] for s, _ in FILE_KINDS.values()))
    suffix = path.suffix.lower()
    kind = _sniff(path)
    for named, (suffixes, what) in FILE_KINDS.items():
        if suffix in suffixes:
            if kind is not None and kind != named:  # e.g. a checkpoint renamed to .nir
                raise DaLifError(f"{path}: named like a {what} ({suffix}) but it holds a "
                                 f"{FILE_KINDS[kind][1]}; rename it to "
                                 f"{FILE_KINDS[kind][0][0]}")
            return named
    if kind is None:
        known = ", ".join(f"{s[0]} ({d})" for s, d in FILE_KINDS.values())
        raise DaLifError(f"{path}: cannot tell what kind of file this is; expected {known}")
    return kind


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise DaLifError(f"unknown backend {name!r}; choose one of {list(BACKENDS)}") from None


def check_fits(backend: Backend, path: str | Path) -> str:
    """Raise a DaLifError unless ``path`` is a file the backend runs; returns its kind."""
    kind = file_kind(path)
    if kind != backend.kind:
        fitting = [b.name for b in BACKENDS.values() if b.kind == kind]
        raise DaLifError(
            f"{path} is a {FILE_KINDS[kind][1]}; backend {backend.name!r} runs a "
            f"{FILE_KINDS[backend.kind][1]} ({'/'.join(FILE_KINDS[backend.kind][0])}). "
            f"Use --backend {' or '.join(fitting)}, or convert the file first "
            "(export: .pt -> .nir/.onnx; quantize: .nir -> .fxp)")
    return kind


def load_for_model(model_path: str | Path, dataset: str | None, split: str,
                   data_dir: str | None,
                   samples: int | None, *, encoding: str | None, input_shape: Any,
                   timesteps: int | None, made_for: str | None = None,
                   at_most: bool = False):
    """The first ``samples`` of a data set split, checked to give the input a model expects
    (event data are generated with the model's T; ``encoding=None``: a model that does not say,
    e.g. a foreign NIR graph, takes either). Asking for more samples than the split has is an
    error unless ``at_most`` (then the whole split is used). ``dataset=None`` means the one the
    model file records (``made_for``), else ``digits``."""
    from .data import load_dataset

    if isinstance(made_for, bytes):
        made_for = made_for.decode("utf8", "replace")
    made_for = made_for if isinstance(made_for, str) and made_for else None
    dataset = dataset or made_for or "digits"
    ds = load_dataset(dataset, split, data_dir,
                      timesteps=None if Encoding.find(encoding) is ANALOG else timesteps)
    want = tuple(int(d) for d in input_shape)
    fits = not encoding or Encoding.find(encoding) is Encoding.from_name(ds.encoding)
    if not fits or tuple(ds.input_shape) != want:
        hint = f"; use --dataset {made_for}" if made_for else ""
        raise DaLifError(f"{model_path}: the model takes {encoding or 'any'} input {want}, "
                         f"data set {dataset!r} gives {ds.encoding} {tuple(ds.input_shape)}{hint}")
    if samples is not None and samples > len(ds) and not at_most:
        raise DaLifError(f"--samples {samples}: the {split} split of {dataset} has only "
                         f"{len(ds)} samples")
    return ds.head(samples)


def backend_result(backend: str, model_path: str | Path, ds: Any, predictions: Any,
                   seconds: float, **extra: Any) -> dict:
    """The keys every backend returns, plus backend-specific ``extra`` ones."""
    import numpy as np

    pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
    return {"backend": backend, "model": str(model_path), "dataset": ds.name,
            "split": ds.split, "samples": int(len(ds)),
            "accuracy": float((pred == ds.y).mean()) if len(ds) else 0.0,
            "predictions": pred.tolist(), "seconds": float(seconds), **extra}


def simulate(model_path: str, backend: str, *, dataset: str | None = None, split: str = "test",
             samples: int | None = None, batch_size: int = 256, data_dir: str | None = None,
             progress: bool = True, **opts: Any) -> dict:
    """Run ``model_path`` on the named backend after checking the file kind fits it."""
    b = get_backend(backend)
    check_fits(b, model_path)
    if samples is not None and samples < 1:
        raise DaLifError(f"--samples must be >= 1, got {samples}")
    from .resources import BATCH_MAX

    if not 1 <= batch_size <= BATCH_MAX:
        raise DaLifError(f"--batch-size must lie in 1..{BATCH_MAX}, got {batch_size}")
    foreign = sorted(k for k, v in opts.items() if v is not None and k not in b.options)
    if foreign:
        users = [n for n, x in BACKENDS.items() if set(foreign) & set(x.options)]
        raise DaLifError(f"option(s) {', '.join('--' + k for k in foreign)} do not apply to "
                         f"backend {b.name!r} (only to {', '.join(users) or 'none'})")
    fn = b.load()  # dataset=None: the backend uses the one its model file records
    result = fn(str(model_path), dataset=dataset, split=split, samples=samples,
                batch_size=batch_size, data_dir=data_dir, progress=progress,
                **{k: v for k, v in opts.items() if v is not None})
    missing = [k for k in ("backend", "dataset", "samples", "accuracy", "predictions",
                           "seconds") if k not in result]
    if missing:
        raise DaLifError(f"backend {b.name!r} returned no {missing} (a bug in {b.target})")
    return result


def cli_simulate(args: argparse.Namespace) -> int:
    """``dalif-deploy simulate MODEL --backend B [--dataset D] [--samples N] [--json P]``."""
    import sys

    from .cli import emit_json

    b = get_backend(args.backend)
    opts = {"dt": args.dt, "max_lava_processes": args.max_lava_processes,
            "max_lava_memory": args.max_lava_memory}
    if "timeout" in b.options:
        opts["timeout"] = args.timeout
    result = simulate(args.model, args.backend, dataset=args.dataset, split=args.split,
                      samples=args.samples, batch_size=args.batch_size,
                      data_dir=args.data_dir, **opts)
    line = (f"{result['backend']}: {args.model} on {result['dataset']}/{args.split}, "
            f"{result['samples']} samples, accuracy {100 * result['accuracy']:.2f} % "
            f"({result['seconds']:.2f} s)")
    print(line, file=sys.stderr if args.json == "-" else sys.stdout)
    emit_json(result, args.json)
    return 0
