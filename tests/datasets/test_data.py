"""Data sets: fixed digits split, deterministic events, a safe CIFAR-10 reader."""

import hashlib
import os
import pickle

import numpy as np
import pytest

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import (
    CIFAR_MEAN,
    CIFAR_STD,
    SACCADE,
    digits_to_events,
    load_dataset,
)

# sha256 of x.tobytes() + y.tobytes(); fixes the split (and the normalisation) for good:
# a change here silently invalidates every stored accuracy.
DIGITS_SHA256 = {
    "train": "f541b0d032e3210675adf643d0256c422524cd624a663230e2812f66a5d03cdb",
    "test": "35dd0961baaaedb40454e3f7a5796f6b7cd16d99bded9fe797a67bbc2a59ac0b",
}


@pytest.mark.parametrize("split,n", [("train", 1347), ("test", 450)])
def test_digits_split_is_fixed(split, n):
    ds = load_dataset("digits", split)
    assert len(ds) == n and ds.x.shape == (n, 1, 8, 8) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64 and ds.encoding == "analog"
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0  # pixel / 16
    assert hashlib.sha256(ds.x.tobytes() + ds.y.tobytes()).hexdigest() == DIGITS_SHA256[split]


def test_digits_split_is_stratified_and_disjoint():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    counts = np.bincount(te.y, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46  # 25 % of each class (173..183 images)
    train_rows = {r.tobytes() for r in tr.x}
    overlap = sum(r.tobytes() in train_rows for r in te.x)
    assert overlap == 0  # no test image appears in the training split


def test_event_frames_are_deterministic_binary_and_shaped():
    a = load_dataset("digits-events", "test", timesteps=5)
    b = load_dataset("digits-events", "test", timesteps=5)
    assert a.x.shape == (450, 5, 2, 8, 8) and a.encoding == "events"
    assert np.array_equal(a.x, b.x)
    assert set(np.unique(a.x)) <= {0.0, 1.0}
    assert (a.x[:, :, 0] * a.x[:, :, 1]).sum() == 0  # never ON and OFF at once
    assert a.x[:, 0].sum() > 0  # step 0 has events (previous position = end of cycle)


def test_events_by_hand_for_one_pixel():
    img = np.zeros((1, 1, 8, 8), np.float32)
    img[0, 0, 4, 4] = 1.0
    ev = digits_to_events(img, 3)  # shifts: (-1,0) before, then (0,0), (0,1), (1,1)
    assert SACCADE[-1] == (-1, 0) and SACCADE[:3] == ((0, 0), (0, 1), (1, 1))
    on = [sorted(zip(*np.nonzero(ev[0, t, 0]), strict=True)) for t in range(3)]
    off = [sorted(zip(*np.nonzero(ev[0, t, 1]), strict=True)) for t in range(3)]
    assert on == [[(4, 4)], [(4, 5)], [(5, 5)]]
    assert off == [[(3, 4)], [(4, 4)], [(4, 5)]]


def test_unknown_names_and_splits_are_refused():
    with pytest.raises(DaLifError, match="unknown data set"):
        load_dataset("mnist")
    with pytest.raises(DaLifError, match="split"):
        load_dataset("digits", "val")
    with pytest.raises(DaLifError, match="data-dir"):
        load_dataset("cifar10")


# --- CIFAR-10 reader on a tiny generated folder in the real format ---------------------------


def _write_batch(path, data, labels):
    # the real files are Python-2 pickles of a dict with bytes keys
    obj = {b"batch_label": b"generated", b"labels": labels, b"data": data,
           b"filenames": [b"x.png"] * len(labels)}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture
def cifar_dir(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _write_batch(root / f"data_batch_{i}", rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                     [int(v) for v in rng.integers(0, 10, 3)])
    data = np.zeros((2, 3072), np.uint8)
    data[1, :1024] = 255  # sample 1: red channel full
    _write_batch(root / "test_batch", data, [3, 7])
    return tmp_path


def test_cifar_reader_reads_the_pickle_folder(cifar_dir):
    tr = load_dataset("cifar10", "train", str(cifar_dir))
    assert tr.x.shape == (15, 3, 32, 32) and len(tr.y) == 15
    te = load_dataset("cifar10", "test", str(cifar_dir / "cifar-10-batches-py"))
    assert te.y.tolist() == [3, 7]
    for c in range(3):
        assert te.x[0, c, 0, 0] == pytest.approx((0 - CIFAR_MEAN[c]) / CIFAR_STD[c], rel=1e-6)
    assert te.x[1, 0, 5, 5] == pytest.approx((1 - CIFAR_MEAN[0]) / CIFAR_STD[0], rel=1e-6)


def test_cifar_reader_reads_only_the_batches_the_first_samples_need(cifar_dir):
    """``samples`` (calibration's 256) reads the batch files in order until it has them: the
    first samples of the whole split, with the later files never opened."""
    whole = load_dataset("cifar10", "train", str(cifar_dir))
    root = cifar_dir / "cifar-10-batches-py"
    for i in (3, 4, 5):
        (root / f"data_batch_{i}").write_bytes(b"not a pickle")
    head = load_dataset("cifar10", "train", str(cifar_dir), samples=5)
    assert np.array_equal(head.x, whole.x[:5]) and head.y.tolist() == whole.y[:5].tolist()
    with pytest.raises(DaLifError, match="data_batch_3"):
        load_dataset("cifar10", "train", str(cifar_dir), samples=7)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))  # would create a directory if ever unpickled


def test_hostile_cifar_pickle_is_refused_without_running(cifar_dir):
    marker = cifar_dir / "pwned"
    root = cifar_dir / "cifar-10-batches-py"
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": _Payload(str(marker)), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DaLifError, match="refusing to load posix.mkdir|refusing"):
        load_dataset("cifar10", "test", str(cifar_dir))
    assert not marker.exists()


def test_broken_cifar_batches_are_refused(cifar_dir):
    root = cifar_dir / "cifar-10-batches-py"
    (root / "test_batch").write_bytes(b"\x80\x02}q\x00(")  # truncated pickle
    with pytest.raises(DaLifError, match="test_batch"):
        load_dataset("cifar10", "test", str(cifar_dir))
    _write_batch(root / "test_batch", np.zeros((2, 3072), np.uint8), [1, 12])
    with pytest.raises(DaLifError, match="labels"):
        load_dataset("cifar10", "test", str(cifar_dir))
    (root / "data_batch_3").unlink()
    with pytest.raises(DaLifError, match="data_batch_3"):
        load_dataset("cifar10", "train", str(cifar_dir))


def test_dataset_command_writes_what_the_model_receives(tmp_path, capsys):
    out = tmp_path / "d.npz"
    assert main(["dataset", "digits-events", "-T", "3", "-o", str(out)]) == 0
    assert "digits-events/test" in capsys.readouterr().out
    ref = load_dataset("digits-events", "test", timesteps=3)
    with np.load(out, allow_pickle=False) as z:
        assert np.array_equal(z["x"], ref.x) and np.array_equal(z["y"], ref.y)
        assert str(z["encoding"]) == "events"
