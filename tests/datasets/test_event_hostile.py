"""Issue 29, event folders from someone else: times that would overflow, work out of proportion
to the input, and links that leave the data folder; each case refused with one DaLifError (or
read in memory proportional to the file)."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
from helpers.event_files import packet_header, polarity_packet, write_aedat31, write_nmnist
from helpers.event_folders import _gesture_dir, _nmnist_dir

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.datasets.event_formats import Events, read_aedat31
from dalif_deploy.datasets.event_sets import EventBinning, bin_events
from dalif_deploy.datasets.loaders import load_dataset

HEAD = "class,startTime_usec,endTime_usec\n"


# --- times: bounded, never wrapped ---------------------------------------------------------

def test_a_label_end_beyond_any_recording_is_one_error_line(tmp_path, capsys):
    d = _gesture_dir(tmp_path)
    (d / "user02_led_labels.csv").write_text(HEAD + f"1,50,{10**30}\n")
    with pytest.raises(DaLifError, match="beyond any recording"):
        load_dataset("dvs128-gesture", "test", str(d), 2)
    assert main(["dataset", "dvs128-gesture", "--data-dir", str(d), "-T", "2",
                 "-o", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("t_last", [2**61, 2**62, 2**63 - 2])
def test_a_span_whose_bins_would_overflow_int64_is_refused(t_last):
    ev = Events(np.array([0, 5, t_last], np.int64), np.zeros(3, np.int64),
                np.zeros(3, np.int64), np.ones(3, np.uint8), (2, 2))
    with pytest.raises(DaLifError, match="cannot be split into T=8 bins"):
        bin_events(ev, 8, EventBinning())
    # bin=count never multiplies times: the same events bin exactly
    out = bin_events(ev, 3, EventBinning("count"))
    assert out[:, 0, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_timestamps_near_2_61_from_a_recording_are_refused_not_misbinned(tmp_path):
    d = _gesture_dir(tmp_path)
    write_aedat31(d / "user02_led.aedat", [polarity_packet([(4, 8, 1, 50)]),
                                          polarity_packet([(4, 9, 0, 60)], overflow=2**30)])
    (d / "user02_led_labels.csv").write_text(HEAD + f"1,50,{2**61 + 100}\n")
    with pytest.raises(DaLifError, match="cannot be split"):
        load_dataset("dvs128-gesture", "test", str(d), 8)


# --- work in proportion to the input -------------------------------------------------------

@pytest.mark.parametrize("how", ["name", "symlink", "hardlink"])
def test_a_split_list_naming_one_recording_twice_is_refused(tmp_path, how):
    d = _gesture_dir(tmp_path)
    if how == "name":
        names = "user02_led.aedat\n" * 5000
    else:
        link = d / "user09_led.aedat"
        (os.symlink if how == "symlink" else os.link)(d / "user02_led.aedat", link)
        (d / "user09_led_labels.csv").write_text(HEAD + "1,50,70\n")
        names = "user02_led.aedat\nuser09_led.aedat\n"
    (d / "trials_to_test.txt").write_text(names)
    with pytest.raises(DaLifError, match="line 2 names the recording of line 1"):
        load_dataset("dvs128-gesture", "test", str(d), 2)


def _peak_reading(path) -> int:
    tracemalloc.start()
    try:
        ev = read_aedat31(path)
        return tracemalloc.get_traced_memory()[1], ev
    finally:
        tracemalloc.stop()


def test_many_empty_packets_cost_memory_in_proportion_to_the_file(tmp_path):
    """20,000 empty polarity packets around one event: the reader keeps nothing per empty
    packet (it kept a numpy view and a tuple, about ten times the packet's 28 bytes)."""
    empty = packet_header(1, 8, 0)
    path = write_aedat31(tmp_path / "e.aedat", [empty] * 10_000 + [polarity_packet(
        [(1, 2, 1, 7)])] + [empty] * 10_000)
    peak, ev = _peak_reading(path)
    assert ev.t.tolist() == [7] and ev.x.tolist() == [1]
    assert peak < 2 * path.stat().st_size


def test_many_one_event_packets_stay_within_the_readers_budget(tmp_path):
    packets = [polarity_packet([(k % 128, 3, k % 2, k)]) for k in range(20_000)]
    path = write_aedat31(tmp_path / "o.aedat", packets)
    peak, ev = _peak_reading(path)
    assert ev.t.tolist() == list(range(20_000))
    assert peak < 6 * path.stat().st_size  # read_bounded's factor


# --- the data folder's boundary: links that leave it are refused ---------------------------

SECRET = "root:x:0:0:secret-content-never-quoted"


def _outside(tmp_path, name="passwd"):
    f = tmp_path / "elsewhere" / name
    f.parent.mkdir(exist_ok=True)
    f.write_text(SECRET + "\n")
    return f


def test_a_label_file_linking_outside_is_refused_unread(tmp_path, capsys):
    d = _gesture_dir(tmp_path)
    (d / "user02_led_labels.csv").unlink()
    os.symlink(_outside(tmp_path), d / "user02_led_labels.csv")
    with pytest.raises(DaLifError, match="leads outside the data folder") as e:
        load_dataset("dvs128-gesture", "test", str(d), 2)
    assert "secret" not in str(e.value)
    assert main(["dataset", "dvs128-gesture", "--data-dir", str(d), "-T", "2",
                 "-o", str(tmp_path / "x.npz")]) == 2
    assert "secret" not in capsys.readouterr().err


@pytest.mark.parametrize("which", ["recording", "split list"])
def test_gesture_files_linking_outside_are_refused(tmp_path, which):
    d = _gesture_dir(tmp_path)
    name = "user02_led.aedat" if which == "recording" else "trials_to_test.txt"
    target = tmp_path / "elsewhere" / name
    target.parent.mkdir()
    os.replace(d / name, target)
    os.symlink(target, d / name)
    with pytest.raises(DaLifError, match="leads outside the data folder"):
        load_dataset("dvs128-gesture", "test", str(d), 2)


def test_links_inside_the_data_folder_are_followed(tmp_path):
    d = _gesture_dir(tmp_path)
    (d / "store").mkdir()
    os.replace(d / "user02_led.aedat", d / "store" / "user02_led.aedat")
    os.symlink(d / "store" / "user02_led.aedat", d / "user02_led.aedat")
    ds = load_dataset("dvs128-gesture", "test", str(d), 2)
    assert ds.y.tolist() == [0]


def test_nmnist_and_folder_links_leading_outside_are_refused(tmp_path):
    root = _nmnist_dir(tmp_path / "a")
    outside = write_nmnist(tmp_path / "b" / "x.bin", [(1, 1, 1, 5)])
    os.symlink(outside, root / "N-MNIST" / "Test" / "4" / "00002.bin")
    with pytest.raises(DaLifError, match="leads outside the data folder"):
        load_dataset("nmnist", "test", str(root), 2)
    os.unlink(root / "N-MNIST" / "Test" / "4" / "00002.bin")
    os.replace(root / "N-MNIST" / "Test" / "7", tmp_path / "b" / "7")
    os.symlink(tmp_path / "b" / "7", root / "N-MNIST" / "Test" / "7")
    with pytest.raises(DaLifError, match="leads outside the data folder"):
        load_dataset("nmnist", "test", str(root), 2)


def test_a_cifar10_batch_linking_outside_is_refused(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    os.symlink(_outside(tmp_path), d / "test_batch")
    with pytest.raises(DaLifError, match="leads outside the data folder") as e:
        load_dataset("cifar10", "test", str(tmp_path / "cifar-10-batches-py"))
    assert "secret" not in str(e.value)
