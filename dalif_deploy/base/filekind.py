"""What a file is, from its content: the one sniffer behind ``inspect`` and every command's
file-kind checks.

:func:`sniff` reads headers only (a zip's member names, an HDF5 file's top-level groups, a few
protobuf bytes, a bounded JSON document), never unpickles and never imports torch; it says
``None`` when the content names no kind it knows, and the reader of the kind a command wants
then gives its own, more precise, error. :func:`wrong_kind` is the one message for "this file
is something else": what it is and what to do with it.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import DaLifError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: the largest JSON file sniffed (result files are far smaller)
JSON_SNIFF_MAX = 64 << 20


@dataclass(frozen=True)
class Kind:
    suffixes: tuple[str, ...]
    what: str  # "X is a {what}"
    use: str  # what to do with such a file


#: every kind of file dalif-deploy writes (the first four are models: backends.FILE_KINDS)
KINDS: dict[str, Kind] = {
    "checkpoint": Kind((".pt", ".pth"), "PyTorch checkpoint",
                       "export it (to .nir/.onnx/.h5), or give it to simulate, verify or sweep"),
    "nir": Kind((".nir",), "NIR graph",
                "quantize it to a .fxp, or give it to simulate or verify"),
    "program": Kind((".fxp",), "fixed-point program",
                    "it is already quantised: run it with simulate --backend emulator/lava "
                    "or verify it"),
    "onnx": Kind((".onnx",), "ONNX graph", "run it with simulate --backend onnx"),
    "netx": Kind((".h5",), "lava-dl netx network (.h5 written by export/quantize --netx)",
                 "load it with lava-dl's netx; dalif-deploy runs and verifies the .fxp it was "
                 "written from"),
    "dataset": Kind((".npz",), "dalif-deploy data set (.npz written by `dataset`)",
                    "pass it as --dataset"),
    "verify-result": Kind((".json",), "verify result (JSON written by verify --json)",
                          "a result, not an input; read it with `dalif-deploy inspect`"),
    "sweep-result": Kind((".json",), "sweep result (JSON written by sweep --json)",
                         "a result, not an input; read it with `dalif-deploy inspect`"),
    "compare-result": Kind((".json",), "compare result (JSON written by compare --json)",
                           "a result, not an input; read it with `dalif-deploy inspect`"),
}

#: top-level keys that name a result JSON (each a subset of what its command writes)
_RESULT_KEYS = {"verify-result": {"checks", "passed", "fixed_accuracy"},
                "sweep-result": {"checkpoint", "rows", "samples"},
                "compare-result": {"settings", "runs", "table"}}
#: ONNX ModelProto starts with ir_version (field 1, varint), then a field in 2..8
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def _zip_kind(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())  # the central directory only: no member is read
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile):
        return None
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "checkpoint"
    if "header.npy" in names:
        return "program"
    if names & {"x.npy", "inputs.npy"} and names & {"y.npy", "labels.npy"}:
        return "dataset"
    return None


def _hdf5_kind(path: Path) -> str | None:
    try:
        import h5py

        with h5py.File(path, "r") as f:  # the root group's links only
            top = set(f.keys())
    except Exception:  # noqa: BLE001 - damaged HDF5: its reader says how
        return None
    return "nir" if "node" in top else "netx" if "layer" in top else None


def _json_kind(path: Path) -> str | None:
    from .schema import load_json  # here: sniffing a kind needs no numpy otherwise

    if path.stat().st_size > JSON_SNIFF_MAX:
        return None
    try:
        d = load_json(path.read_bytes(), str(path))
    except DaLifError:
        return None
    if isinstance(d, dict):
        for kind, keys in _RESULT_KEYS.items():
            if keys <= d.keys():
                return kind
    return None


def sniff(path: str | os.PathLike) -> str | None:
    """The :data:`KINDS` key ``path``'s content shows, or None (unknown or unreadable)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head.startswith(HDF5_SIGNATURE):
        return _hdf5_kind(path)
    if head[:2] == b"PK":
        return _zip_kind(path)
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] < 0x80 and head[2] in _ONNX_NEXT_TAGS:
        return "onnx"
    if head.lstrip()[:1] == b"{":
        return _json_kind(path)
    return None


def wrong_kind(path: str | os.PathLike, kind: str, wanted: str) -> DaLifError:
    """The error for a file of ``kind`` given where ``wanted`` (words) is expected."""
    k = KINDS[kind]
    return DaLifError(f"{path} is a {k.what}; {k.use} ({wanted} expected here)")


def expect(path: str | os.PathLike, kind: str, wanted: str) -> None:
    """Raise :func:`wrong_kind` when ``path``'s content shows another known kind than
    ``kind``; an unknown content is left to the reader, whose errors are more precise."""
    found = sniff(path)
    if found is not None and found != kind:
        raise wrong_kind(path, found, wanted)
