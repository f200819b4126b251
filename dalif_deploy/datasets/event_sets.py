"""The paper's event data sets from local files, binned into T binary ON/OFF frames.

Three data sets, read from the folders their publishers distribute (nothing is downloaded):

* ``dvs128-gesture`` (Amir et al. 2017): ``DIR`` holds the ``userXX_<lighting>.aedat``
  recordings (AEDAT 3.1), their ``userXX_<lighting>_labels.csv`` (a header
  ``class,startTime_usec,endTime_usec``, then one row per gesture: class 1..11 and the window
  ``[start, end)`` in the recording's microseconds) and the split files ``trials_to_train.txt``
  / ``trials_to_test.txt`` (one recording name per line). One sample per label row, label
  ``class - 1`` (11 classes, the 11th "other gestures"); 128x128 sensor. Samples in the split
  list's order, then the label file's (each recording holds every gesture).
* ``cifar10-dvs`` (Li et al. 2017): ``DIR/<class>/*.aedat`` (AEDAT 2.0, DVS128) for the ten
  CIFAR-10 classes in CIFAR-10's order (airplane .. truck), 1000 recordings each, 128x128. It
  has no official split; the common 9:1 rule is used: within each class, recordings sorted by
  the number in their name, the last ``n // 10`` are the test split and the rest train.
  Samples are ordered round-robin over the classes (the first recording of each class, then
  the second, ...), so the first N samples of a split cover every class.
* ``nmnist`` (Orchard et al. 2015): ``DIR/Train/<digit>/*.bin`` and ``DIR/Test/<digit>/*.bin``,
  34x34, one sample per file, label the digit folder, files in name order within a digit,
  ordered round-robin over the digits as CIFAR10-DVS is.

The file formats are parsed in :mod:`dalif_deploy.datasets.event_formats` (specifications cited
there).

**Binning** (:func:`bin_events`): a sample's events (time-ordered) are split into T bins, then
each bin becomes a frame ``[2, H', W']``: channel 0 ON, channel 1 OFF (as ``digits-events``).

* ``bin=time`` (default): equal time windows over the sample's span ``[t0, t1)``, event at time
  ``t`` in bin ``(t - t0) * T // (t1 - t0)``. The span is the label window for DVS128 Gesture
  and ``[first event, last event + 1 us)`` for a whole recording.
* ``bin=count``: equal event counts, the ``i``-th of ``n`` events in bin ``i * T // n``.
* ``downsample=K`` (default 1): the event at ``(x, y)`` falls in pixel ``(x // K, y // K)``
  of a ``ceil(H / K) x ceil(W / K)`` frame (K x K blocks; the last block of a row or column is
  partial when K does not divide the size).

Frames are **binary**: a pixel is 1 when at least one event of that polarity fell in its block
during the bin, else 0. The ``events`` input encoding (:mod:`dalif_deploy.base.encoding`) is binary
spikes, which is what Loihi's input receives, so event counts are clipped to one spike per pixel
and step; a sample with no events is all zeros.

Options are written after the name, ``nmnist:bin=count,downsample=2`` (the CLI's
``--event-bins`` and ``--downsample`` write them there); a data set's name as recorded in a
checkpoint carries its non-default options, so the same frames are rebuilt from it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import check_data_file
from dalif_deploy.base.resources import check_memory, format_bytes
from dalif_deploy.base.schema import integer
from dalif_deploy.base.wording import shown
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX

from .event_formats import Events, read_aedat2_dvs128, read_aedat31, read_nmnist_bin

BIN_MODES = ("time", "count")
DOWNSAMPLE_MAX = 128
TEXT_FILE_MAX = 1 << 20  # bytes of a label CSV or split list (real ones: a few KiB)
DEFAULT_TIMESTEPS = 8
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
GESTURE_CLASSES = 11
GESTURE_CSV_HEADER = ("class", "starttime_usec", "endtime_usec")
#: a time in microseconds a label row may give (2^62 us: 146,000 years); with the span's check
#: in bin_events, no integer arithmetic on a file's times can overflow int64
TIME_US_MAX = 2**62


@dataclass(frozen=True)
class EventBinning:
    """How a sample's events become T frames (module docstring): ``mode`` ``"time"`` or
    ``"count"``, spatial down-sampling factor ``downsample``."""

    mode: str = "time"
    downsample: int = 1

    def __post_init__(self) -> None:
        if self.mode not in BIN_MODES:
            raise DaLifError(f"event binning must be {' or '.join(BIN_MODES)}, not "
                             f"{self.mode!r}")
        integer(self.downsample, "downsample", 1, DOWNSAMPLE_MAX)

    @staticmethod
    def parse(options: str, where: str = "data set options") -> EventBinning:
        """``"bin=count,downsample=2"`` (either, both or neither) -> EventBinning."""
        given: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in options.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key.strip() not in ("bin", "downsample") or key.strip() in given:
                raise DaLifError(f"{where}: {item!r} is not an option; event data sets take "
                                 "bin=time|count and downsample=K once each, e.g. "
                                 "nmnist:bin=count,downsample=2")
            given[key.strip()] = value.strip()
        try:
            k = int(given.get("downsample", "1"))
        except ValueError:
            raise DaLifError(f"{where}: downsample={given['downsample']!r} is not an integer"
                             ) from None
        return EventBinning(given.get("bin", "time"), k)

    def spec(self) -> str:
        """The options that differ from the defaults, as :meth:`parse` reads them."""
        parts = ([f"bin={self.mode}"] if self.mode != "time" else []) + (
            [f"downsample={self.downsample}"] if self.downsample != 1 else [])
        return ",".join(parts)

    def frame_shape(self, sensor: tuple[int, int]) -> tuple[int, int, int]:
        """``(2, ceil(H / K), ceil(W / K))``."""
        k = self.downsample
        return 2, -(-sensor[0] // k), -(-sensor[1] // k)

    def describe(self) -> str:
        k = self.downsample
        rule = ("equal time windows over the sample's span" if self.mode == "time"
                else "equal event counts")
        block = f", {k}x{k} pixel blocks" if k > 1 else ""
        return (f"binary ON/OFF frames: events in T bins by {rule}{block}; a pixel is 1 where "
                "at least one event of that polarity fell in the bin")


def bin_events(ev: Events, timesteps: int, binning: EventBinning,
               span: tuple[int, int] | None = None) -> np.ndarray:
    """Events -> binary frames ``[T, 2, H', W']`` float32 (the module docstring's rule).

    ``span`` is the ``[t0, t1)`` window for ``bin=time`` (default: first event to last event
    + 1 us); every event must lie inside it."""
    t_steps = integer(timesteps, "timesteps", 1, TIMESTEPS_MAX)
    _, h, w = binning.frame_shape(ev.sensor)
    out = np.zeros((t_steps, 2, h, w), np.float32)
    n = len(ev)
    if n == 0:
        return out
    if binning.mode == "count":
        b = np.arange(n, dtype=np.int64) * t_steps // n
    else:
        t0, t1 = span if span is not None else (int(ev.t[0]), int(ev.t[-1]) + 1)
        if t1 <= t0 or int(ev.t[0]) < t0 or int(ev.t[-1]) >= t1:
            raise DaLifError(f"events at {int(ev.t[0])}..{int(ev.t[-1])} us outside their "
                             f"span [{t0}, {t1})")
        # (t - t0) * T is computed in int64: refuse, never wrap, a span it cannot hold
        # (Python's ints are exact, so this test itself cannot overflow)
        if not 0 <= t0 < t1 <= np.iinfo(np.int64).max or (t1 - t0) * t_steps > np.iinfo(
                np.int64).max:
            raise DaLifError(f"a sample spanning {t0}..{t1} us cannot be split into T={t_steps} "
                             "bins exactly (the span times T exceeds 2^63 us); the recording's "
                             "timestamps are damaged, or choose bin=count")
        b = (ev.t - t0) * t_steps // (t1 - t0)
    k = binning.downsample
    channel = 1 - ev.p.astype(np.int64)  # ON -> 0, OFF -> 1
    flat = ((b * 2 + channel) * h + ev.y // k) * w + ev.x // k
    out.reshape(-1)[flat] = 1.0
    return out


# --- the data sets' folders ------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """One file and the samples it gives: ``(label, window)`` pairs, ``window`` the
    ``[start, end)`` microseconds of a labelled part, or None for the whole recording."""

    path: Path
    samples: tuple[tuple[int, tuple[int, int] | None], ...]


def _read_text(path: Path, what: str, root: Path) -> list[str]:
    path = check_data_file(path, root, what)
    size = path.stat().st_size
    if size > TEXT_FILE_MAX:
        raise DaLifError(f"{path}: {format_bytes(size)} is far more than {what} holds; check "
                         "the file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DaLifError(f"{path}: not a text file (expected {what})") from None


def _natural(p: Path) -> tuple:
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name))


def _files(folder: Path, suffix: str, what: str, root: Path) -> list[Path]:
    if not folder.is_dir():
        raise DaLifError(f"{folder}: missing; expected {what}")
    files = sorted((f for f in folder.iterdir() if f.suffix == suffix), key=_natural)
    for f in files:  # nothing outside the data folder (a link to elsewhere) is read
        check_data_file(f, root, what)
    if not files:
        raise DaLifError(f"{folder}: no {suffix} files; expected {what}")
    return files


def _root(data_dir: str | None, name: str, layout: str, subfolder: str) -> Path:
    if not data_dir:
        raise DaLifError(f"{name} needs --data-dir pointing at your copy ({layout}); nothing "
                         "is downloaded")
    root = Path(data_dir)
    if not root.is_dir():
        raise DaLifError(f"--data-dir {shown(data_dir)}: not a folder; expected {layout}")
    inner = root / subfolder
    if inner.is_dir():
        base = os.path.realpath(root)
        if os.path.commonpath([base, os.path.realpath(inner)]) != base:
            raise DaLifError(f"{shown(inner)}: a symbolic link that leads outside --data-dir; "
                             "data-folder readers read only files inside it")
        return inner
    return root


def _gesture_labels(path: Path, root: Path) -> tuple[tuple[int, tuple[int, int]], ...]:
    what = "a DVS128 Gesture label file (class,startTime_usec,endTime_usec)"
    lines = _read_text(path, what, root)
    head = tuple(s.strip().lower() for s in lines[0].split(",")) if lines else ()
    if head != GESTURE_CSV_HEADER:
        raise DaLifError(f"{path}: the first line must be class,startTime_usec,endTime_usec "
                         f"(found {lines[0][:60] if lines else 'an empty file'!r})")
    rows = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            c, start, end = (int(v) for v in line.split(","))
        except ValueError:
            raise DaLifError(f"{path}: line {i} {line[:60]!r} is not three integers "
                             "class,startTime_usec,endTime_usec") from None
        if not 1 <= c <= GESTURE_CLASSES:
            raise DaLifError(f"{path}: line {i}: unknown class {c}; DVS128 Gesture has classes "
                             f"1..{GESTURE_CLASSES}")
        if not 0 <= start < end:
            raise DaLifError(f"{path}: line {i}: the window {start}..{end} us is empty or "
                             "negative (start must be >= 0 and before end)")
        if end > TIME_US_MAX:
            raise DaLifError(f"{path}: line {i}: the end time {end:.3g} us is beyond any "
                             f"recording (at most 2^62 us); check the file")
        rows.append((c - 1, (start, end)))
    if not rows:
        raise DaLifError(f"{path}: no label rows")
    return tuple(rows)


def _gesture(split: str, root: Path) -> list[Recording]:
    lst = root / f"trials_to_{split}.txt"
    names = [s.strip() for s in _read_text(lst, "DVS128 Gesture's split list "
                                           "(one recording name per line)", root) if s.strip()]
    recs = []
    first: dict[tuple[int, int], tuple[int, str]] = {}  # (device, inode) -> (line, name)
    for i, name in enumerate(names, start=1):
        if not re.fullmatch(r"[\w.-]+\.aedat", name) or name.startswith("."):
            raise DaLifError(f"{lst}: line {i} {name[:60]!r} is not a recording name "
                             "(userXX_<lighting>.aedat, no folders)")
        path = check_data_file(root / name, root, "a DVS128 Gesture recording (.aedat)")
        st = path.stat()  # the same file twice (by name, link or hard link): read once only
        if (st.st_dev, st.st_ino) in first:
            j, other = first[(st.st_dev, st.st_ino)]
            raise DaLifError(f"{lst}: line {i} names the recording of line {j} "
                             f"({shown(other)}) again; each recording is listed once (a "
                             "repeated name would be read and counted again)")
        first[(st.st_dev, st.st_ino)] = (i, name)
        recs.append(Recording(path, _gesture_labels(
            root / (name[:-len(".aedat")] + "_labels.csv"), root)))
    if not recs:
        raise DaLifError(f"{lst}: lists no recordings")
    return recs


def _round_robin(recs: list[Recording]) -> list[Recording]:
    """One-sample recordings reordered round-robin over their classes: the first of each class
    (in class order), then the second of each, ...; so any first N samples (``--samples``,
    calibration) cover every class, as the class-by-class folders would not."""
    seen: dict[int, int] = {}
    keys = []
    for i, r in enumerate(recs):
        label = r.samples[0][0]
        seen[label] = seen.get(label, 0) + 1
        keys.append((seen[label], label, i))
    return [recs[i] for _, _, i in sorted(keys)]


def _cifar10_dvs(split: str, root: Path) -> list[Recording]:
    recs = []
    for label, cls in enumerate(CIFAR10_CLASSES):
        files = _files(root / cls, ".aedat", f"CIFAR10-DVS's {cls} recordings (.aedat)",
                       root)
        n_test = len(files) // 10
        if n_test == 0:
            raise DaLifError(f"{root / cls}: {len(files)} recordings; the 9:1 train/test split "
                             "needs at least 10 per class")
        part = files[len(files) - n_test:] if split == "test" else files[:len(files) - n_test]
        recs += [Recording(f, ((label, None),)) for f in part]
    return _round_robin(recs)


def _nmnist(split: str, root: Path) -> list[Recording]:
    folder = root / ("Train" if split == "train" else "Test")
    recs = []
    for digit in range(10):
        recs += [Recording(f, ((digit, None),)) for f in
                 _files(folder / str(digit), ".bin", f"N-MNIST's digit {digit} (.bin files)",
                        root)]
    return _round_robin(recs)


@dataclass(frozen=True)
class EventSet:
    """One event data set: its sensor, classes, folder layout and file reader."""

    name: str
    sensor: tuple[int, int]
    num_classes: int
    layout: str  # what --data-dir must hold, for messages
    subfolder: str  # a folder inside --data-dir that holds the layout, if the user's has one
    recordings: Callable[[str, Path], list[Recording]]
    read: Callable[[Path], Events]


EVENT_SETS: dict[str, EventSet] = {s.name: s for s in (
    EventSet("dvs128-gesture", (128, 128), GESTURE_CLASSES,
             "the DvsGesture folder: userXX_*.aedat, their _labels.csv, trials_to_train.txt "
             "and trials_to_test.txt", "DvsGesture", _gesture, read_aedat31),
    EventSet("cifar10-dvs", (128, 128), 10,
             "a folder with the ten class folders airplane .. truck of .aedat files",
             "CIFAR10-DVS", _cifar10_dvs, read_aedat2_dvs128),
    EventSet("nmnist", (34, 34), 10, "a folder with Train/0..9 and Test/0..9 of .bin files",
             "N-MNIST", _nmnist, read_nmnist_bin),
)}


def _windows(ev: Events, rec: Recording) -> list[tuple[Events, tuple[int, int] | None]]:
    """The events of each sample of ``rec``; a label window outside the recording is refused."""
    out = []
    for i, (_, window) in enumerate(rec.samples):
        if window is None:
            out.append((ev, None))
            continue
        start, end = window
        if len(ev) == 0 or start > int(ev.t[-1]) or end <= int(ev.t[0]):
            have = (f"events at {int(ev.t[0])}..{int(ev.t[-1])} us" if len(ev)
                    else "no events")
            raise DaLifError(f"{rec.path}: label row {i + 1} ({start}..{end} us) lies outside "
                             f"the recording ({have}); check its _labels.csv")
        lo, hi = np.searchsorted(ev.t, [start, end], side="left")
        out.append((ev.take(slice(int(lo), int(hi))), window))
    return out


def load_event_split(name: str, split: str, data_dir: str | None, timesteps: int | None,
                     options: str = "", samples: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], str]:
    """``(x [N, T, 2, H', W'] float32 binary, y [N] int64, frame shape, description)`` of one
    split of event data set ``name`` with the binning ``options`` (module docstring). With
    ``samples``, only the recordings the first ``samples`` samples need are read (N may
    exceed ``samples`` by the rest of the last recording's label rows)."""
    s = EVENT_SETS[name]
    binning = EventBinning.parse(options, f"{name}:{options}")
    t_steps = (DEFAULT_TIMESTEPS if timesteps is None
               else integer(timesteps, "timesteps", 1, TIMESTEPS_MAX))
    frame = binning.frame_shape(s.sensor)
    if binning.downsample > max(s.sensor):
        raise DaLifError(f"downsample={binning.downsample} exceeds the {s.sensor[1]}x"
                         f"{s.sensor[0]} sensor of {name}")
    recs = s.recordings(split, _root(data_dir, name, s.layout, s.subfolder))
    if samples is not None:
        counts = np.cumsum([len(r.samples) for r in recs])
        recs = recs[:int(np.searchsorted(counts, samples)) + 1]
    n = sum(len(r.samples) for r in recs)
    nbytes = 2 * n * t_steps * math.prod(frame) * 4
    check_memory(nbytes, f"{name}/{split}: {n} samples x T={t_steps} x {frame} float32 frames",
                 "use downsample=K (--downsample) or a smaller -T")
    x = np.zeros((n, t_steps, *frame), np.float32)
    y = np.zeros(n, np.int64)
    i = 0
    for rec in tqdm(recs, desc=f"read {name}/{split}", unit="file", leave=False,
                    disable=True if len(recs) < 50 else None):
        for (label, _), (ev, window) in zip(rec.samples, _windows(s.read(rec.path), rec),
                                            strict=True):
            x[i] = bin_events(ev, t_steps, binning, window)
            y[i] = label
            i += 1
    return x, y, frame, (f"{name} ({s.sensor[1]}x{s.sensor[0]} sensor), T={t_steps}: "
                         f"{binning.describe()}")
