"""Small hostile files for the tests: each DECLARES something huge or wrong, none holds it.

Every generator writes into a given folder and returns the path; nothing here allocates the
size a file declares.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._utils

from dalif_deploy.float_model.checkpoint import content_digest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


# --- checkpoints -------------------------------------------------------------------------------

def edited_checkpoint(path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The shipped checkpoint with ``edit(obj)`` applied and its content digest renewed (so only
    the edited value can be what is refused)."""
    obj = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    edit(obj)
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        try:
            obj["content_sha256"] = content_digest(obj)
        except Exception:  # noqa: BLE001 - the edit made the digest uncomputable: leave it out
            obj.pop("content_sha256", None)
    torch.save(obj, path)
    return path


class _Storage:
    """Pickles as torch's persistent storage record declaring ``numel`` float32 elements."""

    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, (self.storage.numel,), (1,), False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def torch_zip(path: Path, members: list[tuple[str, bytes]],
              compression: int = zipfile.ZIP_STORED) -> Path:
    """A zip archive with exactly ``members`` (names may repeat)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(path, "w", compression) as z:
            for name, data in members:
                z.writestr(name, data)
    return path


def declared_storage(path: Path, numel: int, stored_bytes: int = 16) -> Path:
    """A checkpoint whose pickle declares a ``numel``-element float storage in a record of
    ``stored_bytes`` bytes."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump({"w": _Tensor(_Storage("0", numel))})
    return torch_zip(path, [("archive/data.pkl", buf.getvalue()), ("archive/byteorder", b"little"),
                            ("archive/data/0", bytes(stored_bytes)), ("archive/version", b"3")])


def repeated_member(path: Path, times: int = 300) -> Path:
    """A torch-like zip that lists one 64 KiB member ``times`` times."""
    real = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, real)
    with zipfile.ZipFile(io.BytesIO(real.getvalue())) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    big = ("archive/data/9", bytes(1 << 16))
    return torch_zip(path, members + [big] * times)


def lying_zip_sizes(path: Path, declared: int, name: str = "archive/data.pkl") -> Path:
    """A zip whose one stored member's central directory entry declares ``declared`` bytes."""
    torch_zip(path, [(name, b"\x80\x02}q\x00.")])
    raw = bytearray(path.read_bytes())
    cd = raw.rindex(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = declared.to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(raw))
    return path


def deflated_checkpoint(path: Path) -> Path:
    """The shipped checkpoint's members, re-packed compressed (torch.save never compresses)."""
    with zipfile.ZipFile(SHIPPED) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    return torch_zip(path, members, zipfile.ZIP_DEFLATED)


# --- fixed-point programs (.fxp) ----------------------------------------------------------------

def npy_bytes(shape: tuple[int, ...], dtype: str = "<i8", data: bytes | None = None) -> bytes:
    """An .npy stream whose header declares ``shape`` and ``dtype`` followed by ``data``."""
    from numpy.lib import format as npf

    buf = io.BytesIO()
    npf.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + (data if data is not None else b"")


def edited_program(src: Path, path: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    """The members of program ``src`` (raw .npy bytes by name) after ``edit``, re-zipped."""
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    edit(members)
    return torch_zip(path, list(members.items()), zipfile.ZIP_DEFLATED)


def header_npy(header: Any) -> bytes:
    """An .npy member holding ``header`` as JSON bytes (uint8), as save_program writes it."""
    buf = io.BytesIO()
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    np.save(buf, np.frombuffer(raw, np.uint8))
    return buf.getvalue()


def program_header(src: Path) -> dict[str, Any]:
    with zipfile.ZipFile(src) as z, z.open("header.npy") as f:
        return json.loads(np.load(f).tobytes().decode())


# --- NIR graphs (.nir) --------------------------------------------------------------------------

FILL = object()  # marker: a fill-value dataset ("fill", shape, dtype) holding no data


def edited_nir(src: Path, path: Path, edits: dict[str, Any]) -> Path:
    """A copy of NIR file ``src`` with each HDF5 dataset ``edits`` names replaced by the value
    (``(FILL, shape, dtype)``: a dataset that declares ``shape`` and stores nothing)."""
    import shutil

    import h5py

    shutil.copy(src, path)
    with h5py.File(path, "r+") as f:
        for name, value in edits.items():
            if name in f:
                del f[name]
            if isinstance(value, tuple) and value and value[0] is FILL:
                f.create_dataset(name, shape=value[1], dtype=value[2], fillvalue=1)
            else:
                f.create_dataset(name, data=value)
    return path


# --- ONNX graphs (.onnx) ------------------------------------------------------------------------

def edited_onnx(src: Path, path: Path, edit: Callable[[Any], None]) -> Path:
    """A copy of ONNX file ``src`` with ``edit(model_proto)`` applied."""
    import onnx

    proto = onnx.load(str(src))
    edit(proto)
    onnx.save(proto, str(path))
    return path


def set_onnx_metadata(proto: Any, key: str, value: str) -> None:
    for p in proto.metadata_props:
        if p.key == f"dalif_deploy.{key}":
            p.value = value


def set_initializer(proto: Any, name: str, dims: list[int], raw: bytes) -> None:
    for t in proto.graph.initializer:
        if t.name == name:
            del t.dims[:]
            t.dims.extend(dims)
            t.raw_data = raw
