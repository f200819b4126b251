"""Data sets, with no downloads, ever.

* ``digits``: scikit-learn's bundled 8x8 digits (1797 images). Fixed stratified split
  (``train_test_split(test_size=0.25, random_state=0, stratify=y)``: 1347 train, 450 test).
  Normalisation: ``x = pixel / 16`` (pixels are 0..16), shape ``[N, 1, 8, 8]``, fed as the same
  analog frame every step.
* ``digits-events``: binary ON/OFF event frames ``[N, T, 2, 8, 8]`` generated deterministically
  from ``digits`` by small saccade-like shifts of the normalised image: at step t the image is
  shifted by ``SACCADE[t % 8]`` pixels (zero fill); ON where the intensity rose by more than
  ``EVENT_THRESHOLD`` since the previous position, OFF where it fell by more (the position
  before step 0 is the last of the cycle, so step 0 has events too).
* ``cifar10``: a reader for the standard python-pickle folder (``cifar-10-batches-py``) a user
  already has. The batches are unpickled with a restricted unpickler that only rebuilds numpy
  arrays and plain containers: any other object in the file is refused, never executed.
  Normalisation: ``(pixel / 255 - mean) / std`` per channel with the usual CIFAR-10 statistics.
* ``dvs128-gesture``, ``cifar10-dvs``, ``nmnist``: the paper's event data sets from the folders
  their publishers distribute (``--data-dir``), binned into T binary ON/OFF frames
  ``[N, T, 2, H, W]``; options after the name, ``nmnist:bin=count,downsample=2``. Formats,
  splits and the binning rule: :mod:`dalif_deploy.datasets.event_sets`.
* your own data: the path of an ``.npz`` (anything not a built-in name) in the format the
  ``dataset`` command writes, read by :func:`load_npz_dataset`. Members (``np.savez`` keys):

  - ``x`` (or ``inputs``): the samples exactly as the model receives them, real and finite:
    ``[N, *frame]`` for ``analog`` or binary (0/1) ``[N, T, *frame]`` for ``events``;
  - ``y`` (or ``labels``): integer labels ``[N]`` in ``0 .. num_classes - 1``;
  - ``encoding``: ``"analog"`` or ``"events"``;
  - optional: ``T`` (events: must equal ``x.shape[1]``), ``num_classes`` (default 10, or more
    when the labels need it), ``normalization`` (text, informational).

  Declared sizes are checked before anything is read (zip members, each ``.npy`` header), then
  shapes, dtypes, values and labels; members not named here are never read. An npz has no
  splits: ``--split`` does not select anything in it, and its data set's ``split`` is None.

Where a data set meets a model, its labels must lie below the model's class count
(:func:`check_labels`), and values clearly outside the range of the built-in data set the model
records get a warning (:func:`range_warning`, rule: :data:`RANGE_SLACK`).
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dalif_deploy.base.encoding import ANALOG, EVENTS, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.filekind import expect
from dalif_deploy.base.files import check_data_file, check_input_file
from dalif_deploy.base.resources import INPUT_ELEMENTS_MAX, check_memory, check_zip, read_npz_rows
from dalif_deploy.base.schema import integer, real_array, text
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX

from .event_sets import EVENT_SETS, EventBinning, load_event_split

# Saccade-like cycle of (dy, dx) shifts in pixels.
SACCADE = ((0, 0), (0, 1), (1, 1), (1, 0), (0, 0), (0, -1), (-1, -1), (-1, 0))
EVENT_THRESHOLD = 0.1
DEFAULT_EVENT_TIMESTEPS = 8

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Dataset:
    """Samples exactly as the model receives them."""

    name: str
    split: str | None  # None: a user's file, which has no splits
    x: np.ndarray  # float32, [N, C, H, W] (analog) or [N, T, C, H, W] (events); 1-D: [.., C, L]
    y: np.ndarray  # int64 [N]
    encoding: str  # the stored name of an Encoding (dalif_deploy.base.encoding)
    input_shape: tuple[int, ...]
    normalization: str
    num_classes: int = 10

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DaLifError(f"{self.name}: {len(self.x)} samples but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def label(self) -> str:
        """How outputs name it: ``digits/test``, or the path alone for a file (no splits)."""
        return self.name if self.split is None else f"{self.name}/{self.split}"

    def head(self, n: int | None) -> Dataset:
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 1:
            raise DaLifError(f"--samples must be >= 1, got {n}")
        return Dataset(self.name, self.split, self.x[:n], self.y[:n], self.encoding,
                       self.input_shape, self.normalization, self.num_classes)


DIGITS_NORMALIZATION = "x = pixel / 16 (sklearn digits pixels are 0..16)"


def _digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=0.25,
                                          random_state=0, stratify=d.target)
    return (xtr, ytr) if split == "train" else (xte, yte)


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(img)
    h, w = img.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = img[..., ys, xs]
    return out


def digits_to_events(x: np.ndarray, timesteps: int) -> np.ndarray:
    """``[N, 1, H, W]`` intensities -> binary ON/OFF frames ``[N, T, 2, H, W]`` (deterministic)."""
    frames = []
    prev = _shift(x[:, 0], *SACCADE[-1])
    for t in range(timesteps):
        cur = _shift(x[:, 0], *SACCADE[t % len(SACCADE)])
        diff = cur - prev
        frames.append(np.stack([diff > EVENT_THRESHOLD, diff < -EVENT_THRESHOLD], axis=1))
        prev = cur
    return np.stack(frames, axis=1).astype(np.float32)


ROW_LEVELS = (0.25, 0.5, 0.75)  # digits-rows: one binary channel per level (x = pixel / 16)


def digits_to_rows(x: np.ndarray) -> np.ndarray:
    """``[N, 1, 8, 8]`` intensities -> binary frames ``[N, 8, 3, 1, 8]``: step t is image row t,
    each pixel thermometer-coded (channel k: ``x >= ROW_LEVELS[k]``)."""
    rows = x[:, 0]  # [N, H, W]: H is time
    return np.stack([rows >= lv for lv in ROW_LEVELS], axis=2)[:, :, :, None].astype(np.float32)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _whole_numbers(value: object, where: str, lo: int, hi: int) -> np.ndarray:
    """An array of whole numbers in ``lo..hi``: NaN, 300 (which uint8 would wrap to 44) and
    1.5 (which int64 would truncate to 1) are refused, never cast."""
    try:
        a = real_array(np.asarray(value), where)
    except (ValueError, TypeError) as e:  # ragged lists
        raise DaLifError(f"{where}: not a numeric array ({e})") from None
    if a.size and (a.min() < lo or a.max() > hi):
        raise DaLifError(f"{where}: values must lie in {lo}..{hi}, got {a.min()}..{a.max()}")
    if a.dtype.kind == "f" and a.size and not np.array_equal(a, np.round(a)):
        raise DaLifError(f"{where}: values must be whole numbers, got fractions")
    return a


def _load_cifar_batch(path: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    check_data_file(path, root, "a batch of the standard cifar-10-batches-py folder "
                    "(data_batch_1..5, test_batch)")
    # the bytes, the unpickled arrays and their float32 copy (4x)
    check_memory(6 * path.stat().st_size, f"{path}: reading the CIFAR-10 batch")
    try:
        raw = path.read_bytes()
        d = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except FileNotFoundError:
        raise DaLifError(f"{path}: missing; expected the standard cifar-10-batches-py folder "
                         "(data_batch_1..5, test_batch)") from None
    except DaLifError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of an untrusted file is bad input
        raise DaLifError(f"{path}: not a readable CIFAR-10 batch ({e})") from None
    if not isinstance(d, dict):
        raise DaLifError(f"{path}: not a CIFAR-10 batch (expected a dict)")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        missing = "data" if "data" not in d else "labels"
        raise DaLifError(f"{path}: malformed CIFAR-10 batch (no {missing!r})")
    data = _whole_numbers(d["data"], f"{path}: pixel data", 0, 255)
    labels = _whole_numbers(d["labels"], f"{path}: labels", 0, 9)
    if data.size % 3072 or labels.ndim != 1:
        raise DaLifError(f"{path}: malformed CIFAR-10 batch (data of {data.size} values is not "
                         f"N x 3072, or labels of shape {labels.shape} are not a list)")
    data = data.astype(np.uint8).reshape(-1, 3, 32, 32)
    labels = labels.astype(np.int64)
    if len(data) != len(labels):
        raise DaLifError(f"{path}: labels do not match the images")
    return data, labels


def _cifar10(split: str, data_dir: str | None, samples: int | None = None) -> Dataset:
    """The split from the standard folder; with ``samples``, only the batch files its first
    ``samples`` images need are read and only those images converted to float32 (calibrating
    on 256 training images reads one batch file of five, not 600 MB of floats)."""
    if not data_dir:
        raise DaLifError("cifar10 needs --data-dir pointing at your cifar-10-batches-py folder "
                         "(nothing is downloaded)")
    root = Path(data_dir)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for n in names:
        if samples is not None and sum(len(p[1]) for p in parts) >= samples:
            break
        parts.append(_load_cifar_batch(root / n, Path(data_dir)))
    data = np.concatenate([p[0] for p in parts])[:samples]
    y = np.concatenate([p[1] for p in parts])[:samples]
    mean = np.array(CIFAR_MEAN, np.float32)[:, None, None]
    std = np.array(CIFAR_STD, np.float32)[:, None, None]
    x = ((data.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    return Dataset("cifar10", split, x, y, ANALOG.name, (3, 32, 32),
                   f"x = (pixel / 255 - mean) / std per channel, mean={CIFAR_MEAN}, "
                   f"std={CIFAR_STD}")


#: npz member -> its accepted names (the first is what ``dataset`` writes)
NPZ_KEYS = {"x": ("x", "inputs"), "y": ("y", "labels"), "encoding": ("encoding",),
            "T": ("T",), "num_classes": ("num_classes",), "normalization": ("normalization",)}
NUM_CLASSES_MAX = 2**16


def is_dataset_file(name: str) -> bool:
    """Whether ``--dataset name`` is a path (not a built-in name): ``.npz`` or an existing
    file."""
    return split_name(name)[0] not in DATASETS and (name.lower().endswith(".npz")
                                                     or Path(name).exists())


def _npz_members(path: Path, where: str, rows: int | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The data set members of ``path`` (x and y only their first ``rows`` samples, when
    given) and the sample count each of x and y declares."""
    import zipfile

    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise DaLifError(f"{where}: a plain .npy array; a data set is an .npz with members "
                             "x, y and encoding (as `dalif-deploy dataset` writes)")
    try:
        with zipfile.ZipFile(path) as z:
            members = check_zip(z, path.stat().st_size, where)
            out, declared = {}, {}
            for key, names in NPZ_KEYS.items():
                found = [n for n in names if n + ".npy" in members]
                if len(found) > 1:
                    raise DaLifError(f"{where}: holds both {found[0]!r} and {found[1]!r}; "
                                     "keep one")
                if found:
                    out[key], shape = read_npz_rows(
                        z, members[found[0] + ".npy"], f"{where}: member {found[0]!r}",
                        rows if key in ("x", "y") else None)
                    if key in ("x", "y") and shape:
                        declared[key] = shape[0]
            return out, declared
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as e:
        raise DaLifError(f"{where}: not a readable .npz ({type(e).__name__}: {e}); write it "
                         "with numpy.savez or `dalif-deploy dataset`") from None


def load_npz_dataset(path: str | Path, split: str = "test", timesteps: int | None = None,
                     classes: int | None = None, samples: int | None = None) -> Dataset:
    """A data set from an ``.npz`` in the ``dataset`` command's format (module docstring),
    checked on load; ``timesteps`` (the model's T) must match event data's; ``classes`` (the
    model's class count, None: no model) bounds the labels as :func:`check_labels` says. A
    file has no splits: ``split`` is ignored and the data set's is None. ``samples``: read
    only the first ones (calibrating on 256 samples of a large file reads 256), checked as
    a whole file would be."""
    path = check_input_file(path, "a data set (.npz with x, y, encoding)")
    expect(path, "dataset", "a data set (.npz with x, y, encoding)")
    where = str(path)
    m, declared = _npz_members(path, where, samples)
    missing = [k for k in ("x", "y", "encoding") if k not in m]
    if missing:
        raise DaLifError(f"{where}: missing member(s) {missing}; a data set .npz holds x "
                         "(inputs), y (labels) and encoding ('analog' or 'events')")
    enc = Encoding.from_name(text(m["encoding"], f"{where}: encoding"), f"{where}: encoding")
    x = real_array(m["x"], f"{where}: x", float32=True)
    lead = 2 if enc.time_axis else 1
    if x.ndim < lead + 1 or 0 in x.shape:
        raise DaLifError(f"{where}: x has shape {x.shape}; {enc.name} data are "
                         f"[N, {'T, ' if enc.time_axis else ''}*frame] with N >= 1")
    frame = tuple(int(d) for d in x.shape[lead:])
    if math.prod(frame) > INPUT_ELEMENTS_MAX:
        raise DaLifError(f"{where}: frames of shape {frame} exceed {INPUT_ELEMENTS_MAX:,} "
                         "elements")
    if enc.time_axis:
        t = int(x.shape[1])
        if t > TIMESTEPS_MAX:
            raise DaLifError(f"{where}: T = {t} exceeds {TIMESTEPS_MAX}")
        if "T" in m and integer(m["T"], f"{where}: T") != t:
            raise DaLifError(f"{where}: T = {m['T']} but x has {t} steps")
        if timesteps is not None and int(timesteps) != t:
            raise DaLifError(f"{where}: the events have T = {t}, the model runs T = "
                             f"{timesteps}; write the data with T = {timesteps}")
    elif "T" in m:
        raise DaLifError(f"{where}: T given for analog data (T comes from the model or -T)")
    enc.check_values(x, f"{where}: x")
    y = m["y"]
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DaLifError(f"{where}: y must be integer labels [N], got {y.dtype} {y.shape}")
    if declared.get("x", len(x)) != declared.get("y", len(y)):
        raise DaLifError(f"{where}: {declared.get('x', len(x))} samples in x but "
                         f"{declared.get('y', len(y))} labels in y")
    declared = (integer(m["num_classes"], f"{where}: num_classes", lo=1, hi=NUM_CLASSES_MAX)
                if "num_classes" in m else None)
    y = y.astype(np.int64)
    check_labels(y, where, model_classes=classes, file_classes=declared)
    hi = int(y.max()) if len(y) else 0
    norm = (text(m["normalization"], f"{where}: normalization") if "normalization" in m
            else "as stored in the file")
    return Dataset(where, None, np.ascontiguousarray(x, dtype=np.float32), y, enc.name, frame,
                   norm, declared or max(10, hi + 1))


def check_labels(y: np.ndarray, where: str, *, model_classes: int | None = None,
                 file_classes: int | None = None) -> None:
    """Refuse labels outside ``0 .. classes - 1``, ``classes`` the model's when a model reads
    the data (a label 10 on a 10-class model would count as a plain miss), else the file's
    ``num_classes``, else only the :data:`NUM_CLASSES_MAX` bound and negatives; one
    ``error:`` line naming the class count the labels broke."""
    if not len(y):
        return
    lo, hi = int(y.min()), int(y.max())
    for classes, whose in ((model_classes, "the model has"), (file_classes, "the file declares")):
        if classes is not None and (lo < 0 or hi >= classes):
            raise DaLifError(f"{where}: labels must lie in 0..{classes - 1} ({whose} "
                             f"{classes} classes), found {lo}..{hi}")
    if lo < 0 or hi >= NUM_CLASSES_MAX:
        raise DaLifError(f"{where}: labels are class numbers 0, 1, ... (below "
                         f"{NUM_CLASSES_MAX}), found {lo}..{hi}")


Loader = Callable[[str, str | None, int | None, str, int | None], Dataset]


def _no_options(name: str, options: str) -> None:
    if options:
        raise DaLifError(f"{name} takes no options (found {name}:{options}); options such as "
                         f"bin= and downsample= are for the event data sets {list(EVENT_SETS)}")


def _digits(split: str, data_dir: str | None, timesteps: int | None, options: str,
            samples: int | None) -> Dataset:
    _no_options("digits", options)
    x, y = _digits_split(split)
    return Dataset("digits", split, x, y, ANALOG.name, (1, 8, 8), DIGITS_NORMALIZATION)


def _digits_events(split: str, data_dir: str | None, timesteps: int | None,
                   options: str, samples: int | None) -> Dataset:
    name = "digits-events"
    _no_options(name, options)
    t = (DEFAULT_EVENT_TIMESTEPS if timesteps is None
         else integer(timesteps, "timesteps", 1, TIMESTEPS_MAX))
    x, y = _digits_split(split)
    check_memory(3 * x.size * 2 * t * 4, f"generating {name}/{split} with T={t} "
                 f"({len(x)} x {t} x 2 x 8 x 8 float32 frames)", "lower -T")
    return Dataset(name, split, digits_to_events(x, t), y, EVENTS.name, (2, 8, 8),
                   f"{DIGITS_NORMALIZATION}; events: ON/OFF where the intensity changes by "
                   f"more than {EVENT_THRESHOLD} between saccade positions {SACCADE}")


def _digits_rows(split: str, data_dir: str | None, timesteps: int | None, options: str,
                 samples: int | None) -> Dataset:
    _no_options("digits-rows", options)
    if timesteps is not None and integer(timesteps, "timesteps", 1, TIMESTEPS_MAX) != 8:
        raise DaLifError(f"digits-rows has one step per image row: T is 8, not {timesteps}")
    x, y = _digits_split(split)
    return Dataset("digits-rows", split, digits_to_rows(x), y, EVENTS.name, (3, 1, 8),
                   f"{DIGITS_NORMALIZATION}; rows: step t is image row t, each pixel as 3 "
                   f"binary channels x >= {', '.join(map(str, ROW_LEVELS))}")


def _cifar10_loader(split: str, data_dir: str | None, timesteps: int | None,
                    options: str, samples: int | None) -> Dataset:
    _no_options("cifar10", options)
    return _cifar10(split, data_dir, samples)


def _event_loader(name: str) -> Loader:
    """The loader of event data set ``name`` (:mod:`dalif_deploy.datasets.event_sets`); it reads
    only
    the files the first ``samples`` samples need."""

    def load(split: str, data_dir: str | None, timesteps: int | None, options: str,
             samples: int | None) -> Dataset:
        x, y, frame, description = load_event_split(name, split, data_dir, timesteps, options,
                                                     samples)
        spec = EventBinning.parse(options, f"{name}:{options}").spec()
        return Dataset(f"{name}:{spec}" if spec else name, split, x, y, EVENTS.name, frame,
                       description, EVENT_SETS[name].num_classes)

    return load


#: data set name -> loader(split, data_dir, timesteps, options, samples) -> Dataset,
#: ``options`` the text after ``NAME:`` ("" if none), ``samples`` how many samples the caller
#: keeps (None: all; a loader may return more, :func:`load_dataset` keeps the first ones); a
#: new data set is one loader function plus one entry here (docs/ARCHITECTURE.md)
LOADERS: dict[str, Loader] = {
    "digits": _digits,
    "digits-events": _digits_events,
    "digits-rows": _digits_rows,
    "cifar10": _cifar10_loader,
    **{name: _event_loader(name) for name in EVENT_SETS},
}
DATASETS = tuple(LOADERS)


def split_name(name: str) -> tuple[str, str]:
    """``"nmnist:bin=count"`` -> ``("nmnist", "bin=count")``; a name that is no built-in data
    set before its first ``:`` (e.g. a path) is returned whole, with no options."""
    base, colon, options = name.partition(":")
    return (base, options) if colon and base in LOADERS else (name, "")


def dataset_spec(name: str, bins: str | None = None, downsample: int | None = None) -> str:
    """``name`` with the event binning options ``bins`` (``time``/``count``) and
    ``downsample`` set (None: as ``name`` has them), e.g. ``dataset_spec("nmnist", "count")``
    is ``"nmnist:bin=count"``; the form every loader and checkpoint uses."""
    if bins is None and downsample is None:
        return name
    base, options = split_name(name)
    if base not in EVENT_SETS:
        raise DaLifError(f"--event-bins and --downsample apply to the event data sets "
                         f"{list(EVENT_SETS)}, not {name!r}")
    b = EventBinning.parse(options, name)
    b = EventBinning(bins or b.mode, b.downsample if downsample is None else downsample)
    return f"{base}:{b.spec()}" if b.spec() else base


#: the value range of each built-in analog data set as loaded, i.e. what a model trained on
#: it saw (event data sets are binary, which loading enforces)
TRAINED_RANGES: dict[str, tuple[float, float, str]] = {
    "digits": (0.0, 1.0, "x = pixel / 16"),
    "cifar10": (min(-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD, strict=True)),
                max((1 - m) / s for m, s in zip(CIFAR_MEAN, CIFAR_STD, strict=True)),
                "x = (pixel / 255 - mean) / std per channel"),
}
#: "clearly outside": beyond the trained range widened by this fraction of its width each side
RANGE_SLACK = 0.5


def range_warning(ds: Dataset, trained_on: str | None) -> str | None:
    """A ``warning:`` text when ``ds``'s values lie clearly outside the range of the data set
    the model records (``trained_on``): below ``lo - RANGE_SLACK * (hi - lo)`` or above
    ``hi + RANGE_SLACK * (hi - lo)`` (digits, 0..1: outside -0.5..1.5). None when they do not,
    or when the model records no built-in analog data set (nothing known to compare with)."""
    base = split_name(trained_on)[0] if trained_on else None
    if base not in TRAINED_RANGES or Encoding.from_name(ds.encoding) is not ANALOG or not ds.x.size:
        return None
    lo, hi, norm = TRAINED_RANGES[base]
    seen_lo, seen_hi = float(ds.x.min()), float(ds.x.max())
    slack = RANGE_SLACK * (hi - lo)
    if lo - slack <= seen_lo and seen_hi <= hi + slack:
        return None
    fix = (f"divide by {seen_hi / hi:.3g}" if lo == 0 and seen_lo >= 0 and hi > 0
           else "normalise the data the same way")
    return (f"{ds.name}: values {seen_lo:.3g}..{seen_hi:.3g} seen, the model was trained on "
            f"{lo:.3g}..{hi:.3g} ({base}: {norm}): {fix}")


def warn_range(ds: Dataset, trained_on: str | None) -> None:
    """Print :func:`range_warning`'s ``warning:`` line on stderr, if any."""
    import sys

    from dalif_deploy.base.wording import printable

    text = range_warning(ds, trained_on)
    if text:
        print(f"warning: {printable(text)}", file=sys.stderr)


def load_dataset(name: str, split: str = "test", data_dir: str | None = None,
                 timesteps: int | None = None, samples: int | None = None,
                 classes: int | None = None) -> Dataset:
    """Load a data set split exactly as the model receives it (see the module docstring);
    with ``samples``, at most its first ``samples`` samples (event data sets then read only
    the files those need); ``classes``: the class count of the model that will read it, which
    the labels must fit (:func:`check_labels`)."""
    if split not in ("train", "test"):
        raise DaLifError(f"split must be 'train' or 'test', not {split!r}")
    if samples is not None and samples < 1:
        raise DaLifError(f"--samples must be >= 1, got {samples}")
    base, options = split_name(name)
    if base in LOADERS:
        ds = LOADERS[base](split, data_dir, timesteps, options, samples).head(samples)
        check_labels(ds.y, f"{ds.name}/{split}", model_classes=classes)
        return ds
    if is_dataset_file(name):
        return load_npz_dataset(name, split, timesteps, classes, samples).head(samples)
    raise DaLifError(f"unknown data set {name!r}; choose one of {list(DATASETS)} (event data "
                     "sets take options: nmnist:bin=count,downsample=2) or give the path of an "
                     ".npz as `dalif-deploy dataset` writes it")

