"""Safe reading of an untrusted torch pickle: what storages it declares, with nothing run.

``torch.load`` sizes each storage from the element count the pickle declares, before it reads
the record that holds the bytes; a hostile file can declare terabytes in a few bytes. The
scanner here reads the pickle with every global replaced by an inert stand-in (nothing is
imported, constructed or called) and collects the declared storages, so a caller can compare
each with its record before torch allocates anything.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

#: bytes per element of the storage types torch.save records (others count 1: a lower bound)
STORAGE_ITEMSIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2,
                    "BFloat16Storage": 2, "LongStorage": 8, "IntStorage": 4,
                    "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}


class _Inert:
    """Stands in for every object of a pickle being scanned: records nothing, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class StorageScanner(pickle.Unpickler):
    """Reads a torch ``data.pkl`` without importing or calling anything, collecting the storage
    records it declares: ``(key, bytes)`` from ``('storage', type, key, location, numel)``."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: list[tuple[str, int]] = []

    def find_class(self, module: str, name: str) -> Any:
        stub = _Inert()
        stub.name = name  # type: ignore[attr-defined]
        return stub

    def persistent_load(self, pid: Any) -> Any:
        if (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[4], int)):
            itemsize = STORAGE_ITEMSIZE.get(getattr(pid[1], "name", ""), 1)
            self.storages.append((str(pid[2]), pid[4] * itemsize))
        return _Inert()


def declared_storages(data: bytes) -> list[tuple[str, int]]:
    """``(key, bytes)`` of every storage the pickle ``data`` declares, in order.

    Raises whatever the pickle machinery raises on a malformed stream (the caller turns it into
    its own one-line error: any failure to parse an untrusted file is bad input)."""
    scanner = StorageScanner(data)
    scanner.load()
    return scanner.storages
