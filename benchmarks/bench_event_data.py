"""Time reading and binning event data sets against reading the same bytes raw.

Writes, in a temporary folder, an N-MNIST-like folder (``--files`` .bin files per split of
``--events`` random events each, 34x34) and one DVS128-Gesture-like AEDAT 3.1 recording
(``--gesture-events`` events in packets of 4096, ``--rows`` label rows), then times, each the
best of ``--repeats`` runs after one warm-up (the timed runs take turns, so both sides see the
same load):

* ``raw``: reading every file's bytes (``Path.read_bytes``), the I/O floor;
* ``load``: ``load_dataset`` (parse, checks, binning into T frames).

Ends with one line per data set: ``<name>: load/raw time ratio <R>, <E> events/s``.

Usage: .venv/bin/python benchmarks/bench_event_data.py [--files 200] [--events 4000] [-T 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from bench_emulator import _best_times  # one warm-up each, then the sides take turns

from dalif_deploy.datasets.loaders import load_dataset


def _nmnist(root: Path, files: int, events: int, rng: np.random.Generator) -> list[Path]:
    paths = []
    for split in ("Train", "Test"):
        for i in range(files):
            d = root / split / str(i % 10)
            d.mkdir(parents=True, exist_ok=True)
            t = np.sort(rng.integers(0, 300_000, events))
            raw = np.zeros((events, 5), np.uint8)
            raw[:, 0] = rng.integers(0, 34, events)
            raw[:, 1] = rng.integers(0, 34, events)
            raw[:, 2] = (rng.integers(0, 2, events) << 7) | (t >> 16)
            raw[:, 3] = (t >> 8) & 0xFF
            raw[:, 4] = t & 0xFF
            p = d / f"{i:05d}.bin"
            p.write_bytes(raw.tobytes())
            paths.append(p)
    return paths


def _gesture(root: Path, events: int, rows: int, rng: np.random.Generator) -> list[Path]:
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    t = np.sort(rng.integers(0, 2**30, events)).astype(np.uint32)
    word = ((rng.integers(0, 128, events) << 17) | (rng.integers(0, 128, events) << 2)
            | (rng.integers(0, 2, events) << 1) | 1).astype(np.uint32)
    body = bytearray()
    for s in range(0, events, 4096):
        n = min(4096, events - s)
        body += np.array([1, 1], "<i2").tobytes() + np.array([8, 4, 0, n, n, n], "<i4").tobytes()
        body += np.stack([word[s:s + n], t[s:s + n]], 1).astype("<u4").tobytes()
    edges = np.linspace(int(t[0]), int(t[-1]), rows + 1).astype(np.int64)
    csv = "class,startTime_usec,endTime_usec\n" + "".join(
        f"{1 + i % 11},{edges[i]},{edges[i + 1]}\n" for i in range(rows))
    for split in ("train", "test"):
        name = f"user01_{split}"
        (root / f"{name}.aedat").write_bytes(header + bytes(body))
        (root / f"{name}_labels.csv").write_text(csv)
        (root / f"trials_to_{split}.txt").write_text(f"{name}.aedat\n")
    return [root / "user01_test.aedat"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200, help="N-MNIST files per split")
    ap.add_argument("--events", type=int, default=4000, help="events per N-MNIST file")
    ap.add_argument("--gesture-events", type=int, default=2_000_000)
    ap.add_argument("--rows", type=int, default=10, help="label rows of the recording")
    ap.add_argument("-T", "--timesteps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "g").mkdir()
        cases = [("nmnist", root / "n", _nmnist(root / "n", a.files, a.events, rng),
                  a.files * a.events),
                 ("dvs128-gesture", root / "g", _gesture(root / "g", a.gesture_events, a.rows,
                                                         rng), a.gesture_events)]
        for name, folder, files, n_events in cases:
            test = [f for f in files if "Train" not in f.parts]
            raw, load = _best_times([lambda test=test: [f.read_bytes() for f in test],
                               lambda name=name, folder=folder: load_dataset(
                                   name, "test", str(folder), a.timesteps)], a.repeats)
            print(f"{name}: {len(test)} file(s), {n_events:,} events, T={a.timesteps}: "
                  f"raw read {raw:.3f} s, load {load:.3f} s")
            print(f"{name}: load/raw time ratio {load / raw:.1f}, "
                  f"{n_events / load:,.0f} events/s")


if __name__ == "__main__":
    main()
