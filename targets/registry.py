"""The backend registry behind ``dalif-deploy simulate`` and the file-kind detection it shares
with ``inspect``.

A backend is a class implementing :class:`dalif_deploy.targets.protocol.Backend` (name, file kind,
options, ``input``, ``run``); it is registered here by one line ``name: "module:Class"`` and
imported only when used (so lava is never imported unless ``--backend lava`` is asked for, and
naming the backends costs no import). :func:`run_backend` does what every backend shares, once:
file-kind and option checks, data loading (:func:`load_for_model`), timing, accuracy and the
result (:class:`~dalif_deploy.targets.protocol.SimulationResult`; :func:`simulate` returns its JSON
dict).
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dalif_deploy.base.encoding import ANALOG, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.filekind import KINDS, sniff, wrong_kind
from dalif_deploy.base.files import check_input_file

from .options import EMULATOR_OPTIONS, LAVA_OPTIONS, NIR_OPTIONS
from .protocol import Backend, BackendRun, Option, SimulationResult

#: model file kind -> (suffixes, what it is): the kinds a backend runs (filekind.KINDS has all)
FILE_KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    k: (KINDS[k].suffixes, KINDS[k].what) for k in ("checkpoint", "nir", "program", "onnx")}


@dataclass(frozen=True)
class Registered:
    """A backend's registration: its class (``"module:Class"``, imported only when used), the
    file ``kind`` it runs and its ``options`` (from :mod:`.options`, light), so the command
    line names the backends and their options without importing any (torch, lava, ...)."""

    target: str
    kind: str
    options: tuple[Option, ...] = ()


#: backend name -> its registration; adding a backend is one line here
BACKENDS: dict[str, Registered] = {
    "torch": Registered("dalif_deploy.targets.torch_float:TorchBackend", "checkpoint"),
    "nir": Registered("dalif_deploy.targets.nir_float:NirBackend", "nir", NIR_OPTIONS),
    "norse": Registered("dalif_deploy.targets.norse:NorseBackend", "nir", NIR_OPTIONS),
    "emulator": Registered("dalif_deploy.targets.emulator:EmulatorBackend", "program",
                           EMULATOR_OPTIONS),
    "lava": Registered("dalif_deploy.targets.lava.backend:LavaBackend", "program",
                       LAVA_OPTIONS),
    "onnx": Registered("dalif_deploy.targets.onnxruntime:OnnxBackend", "onnx"),
}


def file_kind(path: str | Path) -> str:
    """The kind of a model file (a FILE_KINDS key): by its content (:func:`filekind.sniff`),
    else by its suffix; another file the tool writes (a data set, a netx network, a result) is
    refused, saying what it is."""
    models = ", ".join(s[0] for s, _ in FILE_KINDS.values())
    path = check_input_file(path, "a model file: " + models)
    suffix = path.suffix.lower()
    kind = sniff(path)
    if kind is not None and kind not in FILE_KINDS:
        raise wrong_kind(path, kind, f"a model: {models}")
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


def get_backend(name: str) -> type[Backend]:
    """The class of backend ``name``, imported now; checked against its registration."""
    try:
        entry = BACKENDS[name]
    except KeyError:
        raise DaLifError(f"unknown backend {name!r}; choose one of {list(BACKENDS)}") from None
    target = entry.target
    module, cls_name = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise DaLifError(f"backend {name!r} is not available in this installation "
                             f"({module} is missing)") from None
        raise DaLifError(f"backend {name!r} needs the package {e.name!r}, which is "
                         "not installed; run `make install`") from None
    cls = getattr(mod, cls_name, None)
    if (getattr(cls, "name", None) != name or getattr(cls, "kind", None) != entry.kind
            or entry.kind not in FILE_KINDS
            or tuple(getattr(cls, "options", ())) != tuple(entry.options)):
        raise DaLifError(f"{target} is registered as backend {name!r} but declares name "
                         f"{getattr(cls, 'name', None)!r}, kind {getattr(cls, 'kind', None)!r} "
                         "or options other than its registration's (a bug in the "
                         "registration)")
    return cls


def available() -> dict[str, type[Backend]]:
    """The registered backends this installation can import, by name (registry order)."""
    found = {}
    for name in BACKENDS:
        try:
            found[name] = get_backend(name)
        except DaLifError:  # not installed: running it says why
            pass
    return found


def backend_options() -> dict[str, tuple[Option, list[str]]]:
    """Every backend option by name, with the backends that take it (registry order; from
    the registrations, so nothing is imported); one name means one option (same type, help
    and default) across backends."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for name, entry in BACKENDS.items():
        for opt in entry.options:
            if opt.name in found and found[opt.name][0] != opt:
                raise DaLifError(f"backend {name!r} declares option {opt.flag} unlike "
                                 f"{found[opt.name][1]} do; share one Option")
            found.setdefault(opt.name, (opt, []))[1].append(name)
    return found


def check_fits(backend: type[Backend], path: str | Path) -> str:
    """Raise a DaLifError unless ``path`` is a file the backend runs; returns its kind."""
    kind = file_kind(path)
    if kind != backend.kind:
        fitting = [n for n, e in BACKENDS.items() if e.kind == kind]
        raise DaLifError(
            f"{path} is a {FILE_KINDS[kind][1]}; backend {backend.name!r} runs a "
            f"{FILE_KINDS[backend.kind][1]} ({'/'.join(FILE_KINDS[backend.kind][0])}). "
            f"Use --backend {' or '.join(fitting)}, or convert the file first "
            "(export: .pt -> .nir/.onnx; quantize: .nir -> .fxp)")
    return kind


def _check_options(backend: type[Backend], opts: dict[str, Any]) -> dict[str, Any]:
    """The options ``backend`` takes that are set (or have an Option default); options it does
    not take are an error unless unset (None)."""
    own = {o.name: o for o in backend.options}
    foreign = sorted(k for k, v in opts.items() if v is not None and k not in own)
    if foreign:
        users = [n for n, e in BACKENDS.items() if set(foreign) & {o.name for o in e.options}]
        flags = {k: o.flag for k, (o, _) in backend_options().items()}
        raise DaLifError(f"option(s) {', '.join(flags.get(k, '--' + k) for k in foreign)} do "
                         "not apply to "
                         f"backend {backend.name!r} (only to {', '.join(users) or 'none'})")
    given = {k: o.default if opts.get(k) is None else opts[k] for k, o in own.items()}
    return {k: v for k, v in given.items() if v is not None}  # unset: the backend's default


def load_for_model(model_path: str | Path, dataset: str | None, split: str,
                   data_dir: str | None,
                   samples: int | None, *, encoding: str | None, input_shape: Any,
                   timesteps: int | None, made_for: str | None = None,
                   at_most: bool = False, classes: int | None = None,
                   warn_values: bool = True):
    """The first ``samples`` of a data set split, checked to give the input a model expects
    (event data are generated with the model's T; ``encoding=None``: a model that does not say,
    e.g. a foreign NIR graph, takes either) and labels below its ``classes`` (None: unknown).
    Asking for more samples than the split has is an error unless ``at_most`` (then the whole
    split is used). ``dataset=None`` means the one the model file records (``made_for``), else
    ``digits``; values clearly outside that data set's range get a ``warning:``
    (:func:`~dalif_deploy.datasets.loaders.range_warning`) unless ``warn_values`` is False (a
    second split
    of the same data)."""
    from dalif_deploy.base.geometry import fit_frames, lift_1d
    from dalif_deploy.datasets.loaders import load_dataset, warn_range

    if isinstance(made_for, bytes):
        made_for = made_for.decode("utf8", "replace")
    made_for = made_for if isinstance(made_for, str) and made_for else None
    dataset = dataset or made_for or "digits"
    ds = load_dataset(dataset, split, data_dir,
                      timesteps=None if Encoding.find(encoding) is ANALOG else timesteps,
                      samples=samples, classes=classes)
    want = tuple(int(d) for d in input_shape)
    fits = not encoding or Encoding.find(encoding) is Encoding.from_name(ds.encoding)
    if fits and len(ds.input_shape) == 2 and lift_1d(tuple(ds.input_shape)) == want:
        # 1-D data [N, C, L] for a graph that writes 1-D maps as (C, 1, L)
        ds = dataclasses.replace(ds, input_shape=want,
                                 x=fit_frames(ds.x, want, ds.x.ndim - len(ds.input_shape)))
    if not fits or tuple(ds.input_shape) != want:
        hint = f"; use --dataset {made_for}" if made_for else _data_hint(want)
        raise DaLifError(f"{model_path}: the model takes {encoding or 'any'} input {want}, "
                         f"data set {dataset!r} gives {ds.encoding} {tuple(ds.input_shape)}{hint}")
    if samples is not None and samples > len(ds) and not at_most:
        raise DaLifError(f"--samples {samples}: the {split} split of {dataset} has only "
                         f"{len(ds)} samples")
    ds = ds.head(samples)
    if warn_values:
        warn_range(ds, made_for)
    return ds


def _data_hint(shape: tuple[int, ...]) -> str:
    """How to make data for a model that names none (a foreign NIR graph)."""
    frame = ", ".join(map(str, shape))
    return (f"; make data that fit: `dalif-deploy dataset NAME -o data.npz` writes one of its "
            f"own sets (NAME: digits, digits-events, ...), or write an .npz with numpy.savez "
            f"(x: float32 [N, T, {frame}] of 0/1 events or [N, {frame}] analog; y: int labels "
            f"[N]; encoding: 'events' or 'analog'), then pass --dataset data.npz")


def run_backend(model_path: str | Path, backend: str, *, dataset: str | None = None,
                split: str = "test", samples: int | None = None, batch_size: int = 256,
                data_dir: str | None = None, progress: bool = True,
                **opts: Any) -> SimulationResult:
    """Run ``model_path`` on the named backend over the first ``samples`` of a data set split
    (``dataset=None``: the one the model file records, else digits) after checking the file
    kind and options fit it."""
    cls = get_backend(backend)
    check_fits(cls, model_path)
    if samples is not None and samples < 1:
        raise DaLifError(f"--samples must be >= 1, got {samples}")
    from dalif_deploy.base.resources import BATCH_MAX

    if not 1 <= batch_size <= BATCH_MAX:
        raise DaLifError(f"--batch-size must lie in 1..{BATCH_MAX}, got {batch_size}")
    runner = cls(str(model_path), **_check_options(cls, opts))
    want = runner.input
    ds = load_for_model(model_path, dataset, split, data_dir, samples, encoding=want.encoding,
                        input_shape=want.shape, timesteps=want.timesteps,
                        made_for=want.dataset, classes=want.classes)
    from dalif_deploy.base.parallel import current

    world = current()
    t0 = time.perf_counter()
    if world.size > 1:
        out = _run_sharded(runner, ds, batch_size, progress, world)
    else:
        out = runner.run(ds, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    import numpy as np  # here, not at the top: the CLI's --help names the backends only

    pred = np.asarray(out.predictions, dtype=np.int64).reshape(-1)
    if len(pred) != len(ds):
        raise DaLifError(f"backend {backend!r} returned {len(pred)} predictions for "
                         f"{len(ds)} samples (a bug in {BACKENDS[backend].target})")
    return SimulationResult(
        backend=backend, model=str(model_path), dataset=ds.name, split=ds.split,
        predictions=pred, accuracy=float((pred == ds.y).mean()) if len(ds) else 0.0,
        seconds=float(seconds), extras=dict(out.extras))


def _run_sharded(runner: Backend, ds: Any, batch_size: int, progress: bool, world: Any
                 ) -> BackendRun:
    """``runner.run(ds)`` with the data split over the processes of ``world``: each runs its
    shard (whole batches, :meth:`~dalif_deploy.base.parallel.World.shard`) with the backend's
    ``run_shard`` if it has one (what its ``merge`` needs: the emulator's integer run), else
    ``run``; every rank gets all the shards' runs and joins them in data set order with the
    backend's ``merge(data, runs)``, else :func:`merge_runs`. Every rank returns the same run."""
    sl = world.shard(len(ds), batch_size)

    def part() -> BackendRun | None:
        if sl.stop == sl.start:  # fewer batches than processes
            return None
        shard = dataclasses.replace(ds, x=ds.x[sl], y=ds.y[sl])
        run = getattr(runner, "run_shard", runner.run)
        return run(shard, batch_size=batch_size, progress=progress and world.main)

    runs = [r for r in world.gather_call(part) if r is not None]
    merge = getattr(runner, "merge", None)
    return merge(ds, runs) if merge is not None else merge_runs(runner.name, runs)


def merge_runs(backend: str, runs: list[BackendRun]) -> BackendRun:
    """Consecutive shards' runs joined: predictions in order; the extras must be the same in
    every shard (a backend whose extras depend on the samples defines ``merge``)."""
    first = runs[0].extras
    for r in runs[1:]:
        differ = sorted(k for k in set(first) | set(r.extras) if first.get(k) != r.extras.get(k))
        if differ:
            raise DaLifError(f"backend {backend!r}: shards of the data report different "
                             f"{differ}; it needs a merge(data, runs) method to be sharded "
                             "(run it without torchrun)")
    import numpy as np

    return BackendRun(np.concatenate([np.asarray(r.predictions).reshape(-1) for r in runs]),
                      dict(first))


def simulate(model_path: str | Path, backend: str, *, dataset: str | None = None,
             split: str = "test", samples: int | None = None, batch_size: int = 256,
             data_dir: str | None = None, progress: bool = True, **opts: Any) -> dict:
    """:func:`run_backend` as the JSON dict of ``simulate --json``: ``backend``, ``model``,
    ``dataset``, ``split``, ``samples``, ``accuracy``, ``predictions`` (ints, data set order),
    ``seconds``, then the backend's own keys."""
    return run_backend(model_path, backend, dataset=dataset, split=split, samples=samples,
                       batch_size=batch_size, data_dir=data_dir, progress=progress,
                       **opts).to_dict()
