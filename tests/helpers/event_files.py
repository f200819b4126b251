"""Writers of tiny event files in the published formats (for the tests; see
dalif_deploy/datasets/event_formats.py for the specifications they follow)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

AEDAT31_HEADER = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
                  b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n")
AEDAT2_HEADER = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
                 b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated "
                 b"for each event\r\n# Timestamps tick is 1 us\r\n")


def packet_header(etype: int, size: int, number: int, *, overflow: int = 0, source: int = 1,
                  valid: int | None = None, ts_offset: int = 4, capacity: int | None = None
                  ) -> bytes:
    """The 28-byte AEDAT 3.1 packet header (little endian)."""
    return struct.pack("<hhiiiiii", etype, source, size, ts_offset, overflow,
                       number if capacity is None else capacity, number,
                       number if valid is None else valid)


def polarity_packet(events: list[tuple[int, int, int, int] | tuple[int, int, int, int, int]],
                    overflow: int = 0, **kw) -> bytes:
    """A polarity packet (type 1) of ``(x, y, p, t[, valid])`` events: data word bit 0
    valid, bit 1 polarity, bits 2..16 y, bits 17..31 x; int32 timestamp."""
    body = b""
    for e in events:
        x, y, p, t = e[:4]
        valid = e[4] if len(e) > 4 else 1
        body += struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, t)
    return packet_header(1, 8, len(events), overflow=overflow, **kw) + body


def special_packet(n: int = 2) -> bytes:
    """A packet of type 0 (special events, 8 bytes each) that readers skip."""
    return packet_header(0, 8, n) + bytes(range(8 * n))


def frame_packet() -> bytes:
    """A packet of type 2 (frames) with an odd event size, skipped whole."""
    return packet_header(2, 13, 1, ts_offset=0) + b"F" * 13


def write_aedat31(path: Path, packets: list[bytes], header: bytes = AEDAT31_HEADER) -> Path:
    path.write_bytes(header + b"".join(packets))
    return path


def write_aedat2(path: Path, events: list[tuple[int, int]], header: bytes = AEDAT2_HEADER
                 ) -> Path:
    """``(address, timestamp)`` pairs, big-endian uint32 each."""
    path.write_bytes(header + b"".join(struct.pack(">II", a, t) for a, t in events))
    return path


def dvs128_address(col: int, row: int, event_type: int) -> int:
    """jAER's DVS128 address: bit 0 type (1 = OFF), bits 1..7 column, bits 8..14 row."""
    return (row << 8) | (col << 1) | event_type


def write_nmnist(path: Path, events: list[tuple[int, int, int, int]]) -> Path:
    """``(x, y, p, t)`` events, 5 bytes each: x, y, p << 7 | t >> 16, t >> 8, t."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def frames(t_steps: int, shape: tuple[int, int], on: dict[int, list[tuple[int, int]]],
           off: dict[int, list[tuple[int, int]]]) -> np.ndarray:
    """Expected binary frames ``[T, 2, H, W]`` from ``{bin: [(y, x), ...]}`` per channel."""
    f = np.zeros((t_steps, 2, *shape), np.float32)
    for ch, cells in ((0, on), (1, off)):
        for b, yx in cells.items():
            for y, x in yx:
                f[b, ch, y, x] = 1
    return f
