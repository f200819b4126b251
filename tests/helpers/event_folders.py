"""Tiny event data set folders in each set's layout, shared by the event tests."""

from __future__ import annotations

from helpers.event_files import (
    dvs128_address,
    frame_packet,
    polarity_packet,
    special_packet,
    write_aedat2,
    write_aedat31,
    write_nmnist,
)

#: a timestamp past the 32-bit overflow of AEDAT 3.1's packets
OVERFLOW = 1 << 31


def _gesture_dir(tmp_path):
    """user01_led (train): three valid ON/OFF events and one invalid in a first polarity
    packet, a special and a frame packet to skip, one event after a timestamp overflow; two
    label rows. user02_led (test): one row."""
    d = tmp_path / "DvsGesture"
    d.mkdir()
    write_aedat31(d / "user01_led.aedat", [
        special_packet(),
        polarity_packet([(0, 0, 1, 100), (5, 3, 0, 150), (9, 9, 1, 160, 0), (127, 127, 1, 199)]),
        frame_packet(),
        polarity_packet([(2, 2, 0, 10)], overflow=1),
    ])
    (d / "user01_led_labels.csv").write_text(
        f"class,startTime_usec,endTime_usec\n3,100,200\n11,{OVERFLOW},{OVERFLOW + 40}\n")
    write_aedat31(d / "user02_led.aedat", [polarity_packet([(4, 8, 1, 50), (4, 9, 0, 60)])])
    (d / "user02_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,50,70\n")
    (d / "trials_to_train.txt").write_text("user01_led.aedat\n\n")
    (d / "trials_to_test.txt").write_text("user02_led.aedat\n")
    return d


def _nmnist_dir(tmp_path):
    """One file per digit and split: digit d has an ON event at (x=d, y=2d) at t=10 and an OFF
    event at (33, 33) at t=30; Train/3 has a second file."""
    root = tmp_path / "N-MNIST"
    for split in ("Train", "Test"):
        for d in range(10):
            write_nmnist(root / split / str(d) / "00001.bin", [(d, 2 * d, 1, 10), (33, 33, 0, 30)])
    write_nmnist(root / "Train" / "3" / "00002.bin", [(1, 1, 1, 5)])
    return tmp_path


def _cifar_dir(tmp_path):
    """Ten class folders of eleven files (cifar10_<class>_0..10.aedat): file k of class c has
    one OFF pixel event at column c, row k and one special event (bit 15) to skip."""
    from dalif_deploy.datasets.event_sets import CIFAR10_CLASSES

    root = tmp_path / "cifar"
    for c, name in enumerate(CIFAR10_CLASSES):
        (root / name).mkdir(parents=True)
        for k in range(11):
            write_aedat2(root / name / f"cifar10_{name}_{k}.aedat",
                         [(dvs128_address(c, k, 1), 7), (0x8000, 8), (dvs128_address(c, k, 0), 9)])
    return root
