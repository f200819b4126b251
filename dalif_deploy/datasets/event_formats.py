"""Readers of the published event-camera file formats, parsed against their specifications.

Each reader turns one file into :class:`Events` (timestamps in microseconds, pixel
coordinates, polarity 1 = ON / 0 = OFF) and refuses a damaged or hostile file with one
DaLifError naming the file: sizes are checked before anything is read or allocated, and the
decoded events are checked (coordinates inside the sensor, timestamps never going backwards).
Nothing here downloads or executes anything; parsing is vectorised numpy (``np.frombuffer``).

Formats:

* **AEDAT 3.1** (:func:`read_aedat31`; DVS128 Gesture). iniVation's specification
  (docs.inivation.com, "AEDAT 3.1"; libcaer ``events/common.h`` and ``events/polarity.h``):
  ASCII header lines starting with ``#``, the first ``#!AER-DAT3.1``, the last
  ``#!END-HEADER``, each ending ``\\r\\n``. Then packets, little endian, each a 28-byte header
  ``int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
  int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid`` followed by
  ``eventNumber * eventSize`` bytes of events (cAER's file input reads exactly that; the
  compressed flag, bit 15 of eventType, is refused). Polarity events (type 1) are 8 bytes:
  ``uint32 data`` (bit 0 validity, bit 1 polarity, bits 2..16 y, bits 17..31 x) and
  ``int32 timestamp``; the full time is ``eventTSOverflow << 31 | timestamp`` microseconds.
  Events whose validity bit is 0 are not events (the specification's invalid mark) and are
  skipped; packets of every other type (special, frame, IMU, ...) are skipped whole.
  ``(0, 0)`` is the sensor's upper-left pixel.
* **AEDAT 2.0** with the DVS128 address layout (:func:`read_aedat2_dvs128`; CIFAR10-DVS's
  original release, jAER): ASCII header lines starting with ``#`` (the first
  ``#!AER-DAT2.0``), then big-endian ``uint32 address, uint32 timestamp`` (microseconds) per
  event. DVS128 addresses (jAER's DVS128 extractor, iniLabs' ``loadaerdat``): bit 0 the event
  type (1 = OFF), bits 1..7 the column, bits 8..14 the row; bit 15 marks jAER's special
  (synchronisation) events, which are not pixel events and are skipped; an address with any of
  bits 16..31 set is not this layout and refused. For CIFAR10-DVS the field's usual reader
  (spikingjelly's, and tonic's before CIFAR10-DVS was re-released as AEDAT 4) presents the
  events as ``x = 127 - row, y = 127 - column, ON = 1 - type``, and so does this reader
  (``orientation="cifar10-dvs"``), so frames match the ones most published models were trained
  on; ``orientation="sensor"`` keeps the address fields (``x = column, y = row``; jAER's
  display also mirrors x).
* **N-MNIST binary** (:func:`read_nmnist_bin`; Orchard et al. 2015, ``Read_Ndataset.m``): 5
  bytes per event: ``x`` (byte 0), ``y`` (byte 1), polarity bit 7 of byte 2 (1 = ON), and a
  23-bit timestamp (bits 6..0 of byte 2, bytes 3 and 4, big endian) in microseconds. An event
  with ``y == 240`` is a timestamp-overflow marker: it adds 2**13 us to every later timestamp
  and is not a pixel event (as ``Read_Ndataset.m`` does).
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import check_input_file
from dalif_deploy.base.resources import check_memory, format_bytes

#: bytes of ASCII header a file may carry before its events (real headers: under 1 KiB)
HEADER_MAX = 1 << 20
#: events one file may hold (DVS128 Gesture's longest recordings: a few million)
EVENTS_PER_FILE_MAX = 1 << 28
#: bytes of one recording (every event at 8 bytes, plus the header)
FILE_BYTES_MAX = 8 * EVENTS_PER_FILE_MAX + HEADER_MAX
AEDAT_PACKET_HEADER = np.dtype([("type", "<i2"), ("source", "<i2"), ("size", "<i4"),
                                ("ts_offset", "<i4"), ("ts_overflow", "<i4"),
                                ("capacity", "<i4"), ("number", "<i4"), ("valid", "<i4")])
_PACKET = struct.Struct("<hhiiiiii")  # AEDAT_PACKET_HEADER, read field by field
POLARITY_EVENT = 1  # AEDAT 3.1 eventType of polarity events
POLARITY_EVENT_SIZE = 8
POLARITY_TS_OFFSET = 4
COMPRESSED_FLAG = 0x8000  # eventType bit 15: a compressed packet
NMNIST_OVERFLOW_Y = 240
NMNIST_OVERFLOW_US = 1 << 13


@dataclass(frozen=True)
class Events:
    """Decoded events of one recording, in file order.

    Attributes:
        t: int64 timestamps in microseconds, never decreasing.
        x: int64 column, ``0 <= x < width``.
        y: int64 row, ``0 <= y < height``.
        p: uint8 polarity, 1 = ON (brighter), 0 = OFF.
        sensor: ``(height, width)`` of the sensor.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    sensor: tuple[int, int]

    def __post_init__(self) -> None:
        n = len(self.t)
        if not (len(self.x) == len(self.y) == len(self.p) == n):
            raise DaLifError(f"events: t, x, y, p differ in length ({n}, {len(self.x)}, "
                             f"{len(self.y)}, {len(self.p)})")

    def __len__(self) -> int:
        return len(self.t)

    def take(self, keep: np.ndarray | slice) -> Events:
        """The events selected by a mask, index array or slice."""
        return Events(self.t[keep], self.x[keep], self.y[keep], self.p[keep], self.sensor)


def check_events(ev: Events, where: str) -> Events:
    """Refuse coordinates outside the sensor, polarities other than 0/1 and timestamps going
    backwards; returns ``ev``."""
    h, w = ev.sensor
    for name, a, size in (("x", ev.x, w), ("y", ev.y, h)):
        bad = np.flatnonzero((a < 0) | (a >= size))
        if len(bad):
            i = int(bad[0])
            raise DaLifError(f"{where}: event {i} has {name} = {int(a[i])}, outside the "
                             f"{w}x{h} sensor ({len(bad)} such events): not a recording of "
                             "this sensor, or a damaged file")
    if len(ev.p) and int(ev.p.max()) > 1:
        raise DaLifError(f"{where}: polarity values other than 0/1")
    back = np.flatnonzero(np.diff(ev.t) < 0)
    if len(back):
        i = int(back[0]) + 1
        raise DaLifError(f"{where}: the timestamp goes backwards at event {i} "
                         f"({int(ev.t[i - 1])} -> {int(ev.t[i])} us); event streams must be in "
                         "time order (a damaged or concatenated file): re-export it")
    return ev


def read_bounded(path: str | Path, what: str, factor: int = 6) -> tuple[Path, bytes]:
    """The bytes of a regular file, its memory need (``factor`` x its size, for the decoded
    arrays) checked first."""
    path = check_input_file(path, what)
    size = path.stat().st_size
    if size > FILE_BYTES_MAX:
        raise DaLifError(f"{path}: {format_bytes(size)} is more than one recording can be "
                         f"(at most {EVENTS_PER_FILE_MAX:,} events); expected {what}")
    check_memory(factor * size, f"{path}: reading {format_bytes(size)} of events")
    try:
        return path, path.read_bytes()
    except OSError as e:
        raise DaLifError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None


def _header_end(data: bytes, where: str, magic: bytes, end_line: bytes | None) -> int:
    """Offset of the first byte after the ASCII header: lines starting with ``#`` (the first
    ``magic``), through the line ``end_line`` when the format has one."""
    if not data.startswith(magic):
        found = data[:len(magic) + 8].split(b"\n")[0].strip()
        raise DaLifError(f"{where}: not an {magic[2:].decode()} file (it starts with "
                         f"{found[:40]!r}, expected {magic.decode()!r})")
    pos = 0
    while pos < len(data) and data[pos:pos + 1] == b"#":
        nl = data.find(b"\n", pos, pos + HEADER_MAX)
        if nl < 0 or nl >= HEADER_MAX:
            raise DaLifError(f"{where}: the ASCII header has no end within "
                             f"{format_bytes(HEADER_MAX)} (damaged file)")
        line, pos = data[pos:nl + 1], nl + 1
        if end_line is not None and line.rstrip(b"\r\n") == end_line:
            return pos
    if end_line is not None:
        raise DaLifError(f"{where}: the header never ends with {end_line.decode()!r} "
                         "(truncated or damaged file)")
    return pos


def read_aedat31(path: str | Path, sensor: tuple[int, int] = (128, 128)) -> Events:
    """The polarity events of an AEDAT 3.1 file (module docstring: the specification)."""
    path, data = read_bounded(path, "an AEDAT 3.1 recording (.aedat)")
    where = str(path)
    pos = _header_end(data, where, b"#!AER-DAT3.1", b"#!END-HEADER")
    # the polarity packets as three int64 columns (offset, events, overflow): 24 bytes per
    # packet, less than the packet's own 28-byte header, so memory stays proportional to the
    # file however many packets it holds; packets without events are not kept at all
    index = array("q")
    sources: set[int] = set()
    n_total = packet = 0
    hsize = AEDAT_PACKET_HEADER.itemsize
    while pos < len(data):
        if len(data) - pos < hsize:
            raise DaLifError(f"{where}: packet {packet} at byte {pos}: {len(data) - pos} bytes "
                             f"left, less than a {hsize}-byte packet header (truncated file)")
        etype, source, size, ts_offset, overflow, _, number, _ = _PACKET.unpack_from(data, pos)
        at = f"{where}: packet {packet} at byte {pos}"
        if etype & COMPRESSED_FLAG:
            raise DaLifError(f"{at} is compressed (eventType {etype:#x}); write the recording "
                             "uncompressed (AEDAT 3.1 as DV/cAER save it by default)")
        if size < 1 or number < 0:
            raise DaLifError(f"{at} declares {number} events of {size} bytes (damaged file)")
        body = number * size
        pos += hsize
        if body > len(data) - pos:
            raise DaLifError(f"{at} declares {number:,} events of {size} bytes "
                             f"({format_bytes(body)}) but only {format_bytes(len(data) - pos)} "
                             "remain in the file (truncated or damaged)")
        if etype == POLARITY_EVENT:
            if size != POLARITY_EVENT_SIZE or ts_offset != POLARITY_TS_OFFSET:
                raise DaLifError(f"{at}: polarity events of {size} bytes with the timestamp at "
                                 f"byte {ts_offset}; the format's are "
                                 f"{POLARITY_EVENT_SIZE} bytes with it at byte "
                                 f"{POLARITY_TS_OFFSET} (damaged file)")
            n_total += number
            if n_total > EVENTS_PER_FILE_MAX:
                raise DaLifError(f"{where}: more than {EVENTS_PER_FILE_MAX:,} events")
            if overflow < 0:
                raise DaLifError(f"{at}: negative timestamp overflow counter (damaged file)")
            if number:
                sources.add(source)
                index.extend((pos, number, overflow))
        pos += body
        packet += 1
    if len(sources) > 1:
        raise DaLifError(f"{where}: polarity events from sources {sorted(sources)}; one camera "
                         "per recording is expected (split the file per source)")
    raw = np.empty((n_total, 2), np.uint32)
    at_event = 0
    for k in range(0, len(index), 3):  # no per-packet objects kept
        offset, number = index[k], index[k + 1]
        raw[at_event:at_event + number] = np.frombuffer(data, "<u4", 2 * number,
                                                        offset).reshape(number, 2)
        at_event += number
    packets = np.frombuffer(index, np.int64).reshape(-1, 3)
    overflow = np.repeat(packets[:, 2], packets[:, 1])
    del packets
    word, ts = raw[:, 0], raw[:, 1].view(np.int32).astype(np.int64)
    if len(ts) and int(ts.min()) < 0:
        raise DaLifError(f"{where}: negative event timestamps (damaged file)")
    valid = (word & 1).astype(bool)
    word, ts, overflow = word[valid], ts[valid], overflow[valid]
    ev = Events(t=(overflow << 31) | ts, x=((word >> 17) & 0x7FFF).astype(np.int64),
                y=((word >> 2) & 0x7FFF).astype(np.int64),
                p=((word >> 1) & 1).astype(np.uint8), sensor=sensor)
    return check_events(ev, where)


def read_aedat2_dvs128(path: str | Path, orientation: str = "cifar10-dvs") -> Events:
    """The pixel events of an AEDAT 2.0 file with DVS128 addresses (module docstring).

    ``orientation="cifar10-dvs"`` presents them as the field's CIFAR10-DVS readers do
    (``x = 127 - row, y = 127 - column``, ON = type 0); ``"sensor"`` keeps the address
    fields (``x = column, y = row``, ON = type 0)."""
    if orientation not in ("cifar10-dvs", "sensor"):
        raise DaLifError(f"orientation must be 'cifar10-dvs' or 'sensor', not {orientation!r}")
    path, data = read_bounded(path, "an AEDAT 2.0 recording (.aedat)")
    where = str(path)
    pos = _header_end(data, where, b"#!AER-DAT2.0", None)
    body = len(data) - pos
    if body % 8:
        raise DaLifError(f"{where}: {body} bytes of events after the header is not a whole "
                         "number of 8-byte events (truncated file)")
    raw = np.frombuffer(data, ">u4", body // 4, pos).reshape(-1, 2)
    addr, t = raw[:, 0], raw[:, 1].astype(np.int64)
    foreign = np.flatnonzero(addr > 0xFFFF)
    if len(foreign):
        i = int(foreign[0])
        raise DaLifError(f"{where}: event {i} has address {int(addr[i]):#x}, with bits above "
                         "15 set: not the DVS128 layout (a DAVIS recording?); this reader takes "
                         "DVS128 recordings such as CIFAR10-DVS")
    pixel = (addr & 0x8000) == 0  # bit 15: jAER special events, not pixels
    addr, t = addr[pixel], t[pixel]
    col = ((addr >> 1) & 0x7F).astype(np.int64)
    row = ((addr >> 8) & 0x7F).astype(np.int64)
    on = (1 - (addr & 1)).astype(np.uint8)
    if orientation == "cifar10-dvs":
        ev = Events(t=t, x=127 - row, y=127 - col, p=on, sensor=(128, 128))
    else:
        ev = Events(t=t, x=col, y=row, p=on, sensor=(128, 128))
    return check_events(ev, where)


def read_nmnist_bin(path: str | Path, sensor: tuple[int, int] = (34, 34)) -> Events:
    """The events of an N-MNIST (or N-Caltech101) ``.bin`` file (module docstring)."""
    path, data = read_bounded(path, "an N-MNIST recording (.bin)", factor=12)
    where = str(path)
    if len(data) % 5:
        raise DaLifError(f"{where}: {len(data)} bytes is not a whole number of 5-byte events "
                         "(truncated file, or not N-MNIST's binary format)")
    raw = np.frombuffer(data, np.uint8).reshape(-1, 5).astype(np.int64)
    y = raw[:, 1]
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    marker = y == NMNIST_OVERFLOW_Y
    if marker.any():  # each marker adds 2**13 us to the events after it
        t = t + NMNIST_OVERFLOW_US * np.cumsum(marker)
    keep = ~marker
    ev = Events(t=t[keep], x=raw[keep, 0], y=y[keep], p=(raw[keep, 2] >> 7).astype(np.uint8),
                sensor=sensor)
    return check_events(ev, where)
