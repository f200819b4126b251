"""Event data sets from tiny files written here in the exact published formats: decoded events
and binned frames against hand-computed values; damaged and hostile files refused."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.event_files import (
    AEDAT2_HEADER,
    AEDAT31_HEADER,
    dvs128_address,
    frames,
    packet_header,
    polarity_packet,
    write_aedat2,
    write_aedat31,
    write_nmnist,
)
from helpers.event_folders import OVERFLOW, _cifar_dir, _gesture_dir, _nmnist_dir

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.datasets.event_formats import (
    Events,
    read_aedat2_dvs128,
    read_aedat31,
    read_nmnist_bin,
)
from dalif_deploy.datasets.event_sets import EVENT_SETS, EventBinning, bin_events
from dalif_deploy.datasets.loaders import dataset_spec, load_dataset

# --- the readers: exact decoded events --------------------------------------------------------


def test_aedat31_decodes_polarity_packets_and_skips_the_rest(tmp_path):
    ev = read_aedat31(_gesture_dir(tmp_path) / "user01_led.aedat")
    assert ev.t.tolist() == [100, 150, 199, OVERFLOW + 10]  # overflow << 31 | ts
    assert ev.x.tolist() == [0, 5, 127, 2] and ev.y.tolist() == [0, 3, 127, 2]
    assert ev.p.tolist() == [1, 0, 1, 0]  # the invalid event (bit 0 clear) is not an event


def test_aedat2_dvs128_decodes_addresses_in_the_cifar10_dvs_orientation(tmp_path):
    path = write_aedat2(tmp_path / "a.aedat", [(dvs128_address(5, 3, 1), 10),
                                                 (0x8000 | 7, 11),  # special: skipped
                                                 (dvs128_address(127, 0, 0), 12)])
    ev = read_aedat2_dvs128(path)
    assert ev.t.tolist() == [10, 12]
    assert ev.x.tolist() == [127 - 3, 127 - 0] and ev.y.tolist() == [127 - 5, 127 - 127]
    assert ev.p.tolist() == [0, 1]  # type 1 is OFF
    raw = read_aedat2_dvs128(path, orientation="sensor")
    assert raw.x.tolist() == [5, 127] and raw.y.tolist() == [3, 0]


def test_nmnist_decodes_5_byte_events_and_timestamp_overflow_markers(tmp_path):
    # the 23-bit timestamp is bits 6..0 of byte 2 and bytes 3, 4 (big endian)
    path = write_nmnist(tmp_path / "a.bin", [(1, 2, 1, 0x10203), (3, 4, 0, 0x7FFFFF)])
    ev = read_nmnist_bin(path)
    assert ev.x.tolist() == [1, 3] and ev.y.tolist() == [2, 4] and ev.p.tolist() == [1, 0]
    assert ev.t.tolist() == [0x10203, 0x7FFFFF]
    # y == 240 marks an overflow: 2**13 us added to every later event, the marker dropped
    path = write_nmnist(tmp_path / "c.bin", [(1, 1, 1, 8000), (0, 240, 0, 0), (2, 2, 0, 10)])
    ev = read_nmnist_bin(path)
    assert ev.t.tolist() == [8000, 8192 + 10] and ev.x.tolist() == [1, 2]


# --- the binning rule ----------------------------------------------------------------------


def _events(t, x, y, p, sensor=(4, 6)):
    return Events(np.array(t), np.array(x), np.array(y), np.array(p, np.uint8), sensor)


def test_bin_by_time_uses_equal_windows_over_the_span():
    ev = _events([0, 3, 4, 9], [0, 1, 2, 5], [0, 1, 2, 3], [1, 0, 1, 1])
    out = bin_events(ev, 2, EventBinning("time"))  # span [0, 10): bins [0, 5), [5, 10)
    assert np.array_equal(out, frames(2, (4, 6), {0: [(0, 0), (2, 2)], 1: [(3, 5)]},
                                      {0: [(1, 1)]}))
    out = bin_events(ev, 2, EventBinning("time"), span=(0, 20))  # bins [0, 10), [10, 20)
    assert np.array_equal(out, frames(2, (4, 6), {0: [(0, 0), (2, 2), (3, 5)]}, {0: [(1, 1)]}))
    with pytest.raises(DaLifError, match="outside their span"):
        bin_events(ev, 2, EventBinning("time"), span=(1, 20))


def test_bin_by_count_puts_equal_event_counts_in_each_bin():
    ev = _events([0, 1, 2, 100], [0, 1, 2, 5], [0, 1, 2, 3], [1, 0, 1, 1])
    out = bin_events(ev, 2, EventBinning("count"))  # i * T // n: 0, 0, 1, 1
    assert np.array_equal(out, frames(2, (4, 6), {0: [(0, 0)], 1: [(2, 2), (3, 5)]},
                                      {0: [(1, 1)]}))
    # T larger than the events: i * 3 // 2 = 0, 1; bin 2 stays empty
    out = bin_events(ev.take(slice(0, 2)), 3, EventBinning("count"))
    assert np.array_equal(out, frames(3, (4, 6), {0: [(0, 0)]}, {1: [(1, 1)]}))


def test_downsampling_merges_blocks_and_frames_stay_binary():
    # three ON events in the same 4x4 block, one OFF at the partial last block (6 = 4 + 2)
    ev = _events([0, 1, 2, 3], [0, 3, 1, 5], [0, 3, 2, 3], [1, 1, 1, 0])
    out = bin_events(ev, 1, EventBinning("time", downsample=4))
    assert out.shape == (1, 2, 1, 2)  # ceil(4 / 4) x ceil(6 / 4)
    assert np.array_equal(out, frames(1, (1, 2), {0: [(0, 0)]}, {0: [(0, 1)]}))
    assert set(np.unique(out)) == {0.0, 1.0}  # three events -> one spike
    assert not bin_events(_events([], [], [], []), 3, EventBinning()).any()


# --- the data sets -------------------------------------------------------------------------


def test_dvs128_gesture_one_sample_per_label_row(tmp_path):
    d = _gesture_dir(tmp_path)
    tr = load_dataset("dvs128-gesture", "train", str(tmp_path), timesteps=2)
    assert tr.name == "dvs128-gesture" and tr.encoding == "events" and tr.num_classes == 11
    assert tr.x.shape == (2, 2, 2, 128, 128) and tr.y.tolist() == [2, 10]
    # row 1: window [100, 200), T = 2 -> bins [100, 150), [150, 200)
    assert np.array_equal(tr.x[0], frames(2, (128, 128), {0: [(0, 0)], 1: [(127, 127)]},
                                          {1: [(3, 5)]}))
    # row 2: the event after the overflow, at 10 us into its 40 us window: bin 0
    assert np.array_equal(tr.x[1], frames(2, (128, 128), {}, {0: [(2, 2)]}))
    cnt = load_dataset("dvs128-gesture:bin=count,downsample=4", "train", str(d), timesteps=2)
    assert cnt.name == "dvs128-gesture:bin=count,downsample=4" and cnt.input_shape == (2, 32, 32)
    # count: events 0, 1 in bin 0, event 2 in bin 1; 4x4 blocks
    assert np.array_equal(cnt.x[0], frames(2, (32, 32), {0: [(0, 0)], 1: [(31, 31)]},
                                           {0: [(0, 1)]}))
    te = load_dataset("dvs128-gesture", "test", str(d), timesteps=1)
    assert te.y.tolist() == [0]
    assert np.array_equal(te.x[0], frames(1, (128, 128), {0: [(8, 4)]}, {0: [(9, 4)]}))


def test_nmnist_train_and_test_folders(tmp_path):
    root = _nmnist_dir(tmp_path)
    tr = load_dataset("nmnist", "train", str(root), timesteps=2)
    assert tr.x.shape == (11, 2, 2, 34, 34) and tr.num_classes == 10
    assert tr.y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3]  # round-robin over the digits
    # Train/3/00002.bin: one ON event at (1, 1); its span [5, 6) puts it in bin 0
    assert np.array_equal(tr.x[10], frames(2, (34, 34), {0: [(1, 1)]}, {}))
    # digit 7: ON (x=7, y=14) at t=10, OFF (33, 33) at 30; span [10, 31): bins split at 20.5
    assert np.array_equal(tr.x[7], frames(2, (34, 34), {0: [(14, 7)]}, {1: [(33, 33)]}))
    ds = load_dataset("nmnist:downsample=4", "test", str(root / "N-MNIST"), timesteps=1)
    assert ds.input_shape == (2, 9, 9)  # ceil(34 / 4): the last block is partial
    assert np.array_equal(ds.x[7], frames(1, (9, 9), {0: [(3, 1)]}, {0: [(8, 8)]}))


def test_cifar10_dvs_classes_and_the_9_to_1_split(tmp_path):
    root = _cifar_dir(tmp_path)
    te = load_dataset("cifar10-dvs", "test", str(root), timesteps=1)
    tr = load_dataset("cifar10-dvs", "train", str(root), timesteps=1)
    assert len(te) == 10 and len(tr) == 100  # 11 // 10 = 1 per class tested
    assert te.y.tolist() == list(range(10)) and np.bincount(tr.y).tolist() == [10] * 10
    assert tr.y[:20].tolist() == list(range(10)) * 2  # round-robin: any prefix has every class
    # the test file of each class is number 10 (sorted by number, not as text: 10 > 9)
    c = 4
    assert np.array_equal(te.x[c, 0], frames(1, (128, 128), {0: [(127 - c, 127 - 10)]},
                                             {0: [(127 - c, 127 - 10)]})[0])


def test_options_are_checked_and_written_into_the_name(tmp_path):
    assert dataset_spec("nmnist", "count") == "nmnist:bin=count"
    assert dataset_spec("nmnist:bin=count", None, 2) == "nmnist:bin=count,downsample=2"
    assert dataset_spec("nmnist:downsample=2", "time", 1) == "nmnist"
    for bad, match in (("nmnist:bin=fast", "time or count"), ("nmnist:foo=1", "not an option"),
                       ("nmnist:downsample=0", "downsample"), ("digits:bin=count", "no options"),
                       ("nmnist:downsample=x", "not an integer")):
        with pytest.raises(DaLifError, match=match):
            load_dataset(bad, "test", str(tmp_path), 2)
    with pytest.raises(DaLifError, match="event data sets"):
        dataset_spec("digits", "count")
    with pytest.raises(DaLifError, match="--data-dir"):
        load_dataset("nmnist")


# --- damaged and hostile files ------------------------------------------------------------


def _aedat(tmp_path, *packets, header=AEDAT31_HEADER):
    return write_aedat31(tmp_path / "h.aedat", list(packets), header)


A31, A2, NM = read_aedat31, read_aedat2_dvs128, read_nmnist_bin
COMPRESSED_POLARITY = -32767  # eventType 1 with bit 15 (compressed) set, as an int16


@pytest.mark.parametrize("reader,make,match", [
    (A31, lambda p: _aedat(p, packet_header(1, 8, 2**31 - 1)), "declares 2,147,483,647 events"),
    (A31, lambda p: _aedat(p, polarity_packet([(1, 1, 1, 5), (1, 1, 1, 6)])[:-3]), "truncated"),
    (A31, lambda p: _aedat(p, polarity_packet([(1, 1, 1, 5)])[:20]), "less than a 28-byte"),
    (A31, lambda p: _aedat(p, header=b"#!AER-DAT2.0\r\n#!END-HEADER\r\n"), "not an AER-DAT3.1"),
    (A31, lambda p: _aedat(p, header=b"#!AER-DAT3.1\r\n#Format: RAW\r\n"), "never ends"),
    (A31, lambda p: _aedat(p, packet_header(1, 12, 1) + b"x" * 12), "polarity events of 12 bytes"),
    (A31, lambda p: _aedat(p, packet_header(1, 8, -1)), "declares -1 events"),
    (A31, lambda p: _aedat(p, packet_header(COMPRESSED_POLARITY, 8, 0)), "compressed"),
    (A31, lambda p: _aedat(p, polarity_packet([(1, 1, 1, 50), (1, 1, 1, 40)])), "backwards"),
    (A31, lambda p: _aedat(p, polarity_packet([(200, 1, 1, 5)])), "x = 200, outside the 128x128"),
    (A31, lambda p: _aedat(p, polarity_packet([(1, 1, 1, 5)]),
                           polarity_packet([(1, 1, 1, 6)], source=2)), "sources"),
    (A2, lambda p: write_aedat2(p / "h.aedat", [(1 << 22, 5)]), "not the DVS128 layout"),
    (A2, lambda p: write_aedat2(p / "h.aedat", [(0, 1)], header=b"#!AER-DAT3.1\r\n"),
     "not an AER-DAT2.0"),
    (A2, lambda p: write_aedat2(p / "h.aedat", [(2, 9), (2, 5)]), "backwards"),
    (A2, lambda p: _raw(p / "h.aedat", AEDAT2_HEADER + bytes(12)), "truncated"),
    (NM, lambda p: _raw(p / "h.bin", bytes(7)), "5-byte events"),
    (NM, lambda p: write_nmnist(p / "h.bin", [(40, 1, 1, 5)]), "x = 40, outside the 34x34"),
    (NM, lambda p: write_nmnist(p / "h.bin", [(1, 1, 1, 5), (1, 1, 1, 4)]), "backwards"),
])
def test_damaged_event_files_are_refused(tmp_path, reader, make, match):
    path = make(tmp_path)
    with pytest.raises(DaLifError, match=match) as e:
        reader(path)
    assert str(path) in str(e.value)


def _raw(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("labels,match", [
    ("class,startTime_usec,endTime_usec\n12,50,70\n", "unknown class 12"),
    ("class,startTime_usec,endTime_usec\n0,50,70\n", "unknown class 0"),
    ("class,startTime_usec,endTime_usec\n1,5000,7000\n", "outside the recording"),
    ("class,startTime_usec,endTime_usec\n1,70,50\n", "empty or negative"),
    ("class,startTime_usec,endTime_usec\n1,a,50\n", "not three integers"),
    ("class,start,end\n1,50,70\n", "first line"),
    ("class,startTime_usec,endTime_usec\n", "no label rows"),
])
def test_bad_gesture_labels_are_refused(tmp_path, labels, match):
    d = _gesture_dir(tmp_path)
    (d / "user02_led_labels.csv").write_text(labels)
    with pytest.raises(DaLifError, match=match) as e:
        load_dataset("dvs128-gesture", "test", str(d), 2)
    assert "user02_led" in str(e.value)


def test_split_lists_name_only_recordings_in_the_folder(tmp_path):
    d = _gesture_dir(tmp_path)
    (d / "trials_to_test.txt").write_text("../../etc/passwd.aedat\n")
    with pytest.raises(DaLifError, match="not a recording name"):
        load_dataset("dvs128-gesture", "test", str(d), 2)
    (d / "trials_to_test.txt").write_text("user03_led.aedat\n")
    with pytest.raises(DaLifError, match="no such file"):
        load_dataset("dvs128-gesture", "test", str(d), 2)


def test_oversized_label_files_are_refused_unread(tmp_path):
    d = _gesture_dir(tmp_path)
    with open(d / "user02_led_labels.csv", "wb") as f:
        f.truncate(2 << 20)  # sparse: 2 MiB of zeros
    with pytest.raises(DaLifError, match="far more than"):
        load_dataset("dvs128-gesture", "test", str(d), 2)


def test_frames_beyond_memory_are_refused_before_allocating(tmp_path, monkeypatch):
    import dalif_deploy.base.resources as resources

    root = _nmnist_dir(tmp_path)
    monkeypatch.setattr(resources, "mem_available", lambda trim=False: 100_000)
    with pytest.raises(DaLifError, match="needs about .*downsample"):
        load_dataset("nmnist", "test", str(root), 8)


def test_missing_folders_name_the_layout(tmp_path):
    with pytest.raises(DaLifError, match="Train/0: missing"):
        load_dataset("nmnist", "train", str(tmp_path), 2)
    root = _cifar_dir(tmp_path)
    for f in (root / "truck").iterdir():
        f.unlink()
    with pytest.raises(DaLifError, match="no .aedat files"):
        load_dataset("cifar10-dvs", "test", str(root), 2)


# --- the command line ------------------------------------------------------------------------


def test_cli_dataset_train_and_simulate_on_nmnist(tmp_path, capsys):
    from dalif_deploy.cli import main
    from dalif_deploy.float_model.loading import load_checkpoint

    root = _nmnist_dir(tmp_path)
    out = tmp_path / "x.npz"
    assert main(["dataset", "nmnist", "--data-dir", str(root), "-T", "4", "-o", str(out)]) == 0
    with np.load(out) as z:
        want = load_dataset("nmnist", "test", str(root), 4)
        assert np.array_equal(z["x"], want.x) and np.array_equal(z["y"], want.y)
        assert z["x"].shape == (10, 4, 2, 34, 34) and str(z["encoding"]) == "events"
    ckpt = tmp_path / "m.pt"
    assert main(["train", "--model", "digits-cnn", "--dataset", "nmnist", "--data-dir",
                 str(root), "--event-bins", "count", "--downsample", "2", "-T", "2",
                 "--epochs", "1", "--width", "2", "--batch-size", "4", "-o", str(ckpt)]) == 0
    # the checkpoint records the binning, so simulate rebuilds the same 17x17 frames unasked
    assert load_checkpoint(ckpt).dataset["name"] == "nmnist:bin=count,downsample=2"
    capsys.readouterr()
    assert main(["simulate", str(ckpt), "--backend", "torch", "--data-dir", str(root),
                 "--json", "-"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "nmnist:bin=count,downsample=2" and result["samples"] == 10
    # verify rebuilds the recorded frames too (float, NIR and fixed point on the test split)
    assert main(["verify", str(ckpt), "--data-dir", str(root), "--lava-samples", "0",
                 "--min-agreement", "0", "--max-accuracy-drop", "100", "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "nmnist:bin=count,downsample=2" and result["samples"] == 10
    # quantize --calibrate takes the options too; a mismatching binning's shape is refused
    nir, fxp = tmp_path / "m.nir", tmp_path / "m.fxp"
    assert main(["export", str(ckpt), "-o", str(nir)]) == 0
    assert main(["quantize", str(nir), "-o", str(fxp), "--calibrate", "nmnist", "--data-dir",
                 str(root), "--event-bins", "count", "--downsample", "2"]) == 0
    capsys.readouterr()
    assert main(["quantize", str(nir), "-o", str(fxp), "--calibrate", "nmnist", "--data-dir",
                 str(root)]) == 2
    assert "gives events (2, 34, 34)" in capsys.readouterr().err
    # options without a data set, and options on a static data set, are one error line
    assert main(["simulate", str(ckpt), "--backend", "torch", "--event-bins", "time"]) == 2
    assert "give --dataset too" in capsys.readouterr().err
    assert main(["dataset", "digits", "--downsample", "2", "-o", str(out)]) == 2
    assert "apply to the event data sets" in capsys.readouterr().err


def test_cli_damaged_recording_is_one_error_line(tmp_path, capsys):
    from dalif_deploy.cli import main

    d = _gesture_dir(tmp_path)
    data = (d / "user02_led.aedat").read_bytes()
    (d / "user02_led.aedat").write_bytes(data[:-5])
    assert main(["dataset", "dvs128-gesture", "--data-dir", str(d), "-T", "2", "-o",
                 str(tmp_path / "g.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "user02_led.aedat" in err[0]
    assert "truncated" in err[0]


def test_training_refuses_a_readout_smaller_than_the_classes(tmp_path):
    from dalif_deploy.float_model.training import train
    from dalif_deploy.float_model.zoo import default_config

    _gesture_dir(tmp_path)
    cfg = default_config("digits-cnn", input_shape=[2, 16, 16], num_classes=10, width=2)
    with pytest.raises(DaLifError, match="11 classes, the model config 10"):
        train(cfg, "dvs128-gesture:downsample=8", epochs=1, timesteps=2,
              data_dir=str(tmp_path), progress=False)


#: a tiny folder in each event data set's layout; a new EVENT_SETS entry needs one here
FOLDERS = {"dvs128-gesture": lambda p: _gesture_dir(p), "cifar10-dvs": _cifar_dir,
           "nmnist": _nmnist_dir}


@pytest.mark.parametrize("name", sorted(EVENT_SETS))
def test_every_event_set_gives_binary_frames_of_its_sensor(tmp_path, name):
    assert name in FOLDERS, f"add a tiny {name} folder to FOLDERS"
    s = EVENT_SETS[name]
    root = FOLDERS[name](tmp_path)
    for split in ("train", "test"):
        ds = load_dataset(f"{name}:downsample=2", split, str(root), 3)
        assert ds.encoding == "events" and ds.x.dtype == np.float32
        assert ds.x.shape[1:] == (3, 2, -(-s.sensor[0] // 2), -(-s.sensor[1] // 2))
        assert set(np.unique(ds.x)) <= {0.0, 1.0} and ds.x.any()
        assert 0 <= ds.y.min() and ds.y.max() < s.num_classes == ds.num_classes
    with pytest.raises(DaLifError, match=f"{name} needs --data-dir"):
        load_dataset(name, "test", None, 3)


def test_a_sample_limit_reads_only_the_files_it_needs(tmp_path):
    root = _nmnist_dir(tmp_path)
    (root / "N-MNIST" / "Train" / "3" / "00001.bin").write_bytes(b"\0" * 7)  # damaged
    ds = load_dataset("nmnist", "train", str(root), 2, samples=3)  # digits 0, 1, 2: unread
    assert ds.y.tolist() == [0, 1, 2]
    assert np.array_equal(ds.x, load_dataset("nmnist", "test", str(root), 2).x[:3])
    with pytest.raises(DaLifError, match="00001.bin: 7 bytes"):
        load_dataset("nmnist", "train", str(root), 2, samples=4)
    # a recording gives several gesture samples: the limit keeps the first of them
    g = load_dataset("dvs128-gesture", "train", str(_gesture_dir(tmp_path)), 2, samples=1)
    assert g.y.tolist() == [2]
