"""Atomic file writing: nothing half-written on disk, ever."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DaLifError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(path: Path, e: OSError | str) -> DaLifError:
    why = e if isinstance(e, str) else (e.strerror or type(e).__name__)
    return DaLifError(f"{path}: cannot write the output here ({why}); choose a file path in a "
                      "writable directory")


def check_output_path(path: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = ()
                      ) -> None:
    """Refuse, before any work is done, an output path that cannot be written: a directory,
    a parent that is a file or not writable, or one of the command's ``inputs`` (which the
    output would silently replace)."""
    path = Path(path)
    if path.is_dir():
        raise DaLifError(f"{path}: is a directory; give a file name for the output "
                         f"(e.g. {path / 'out'}{path.suffix})")
    for src in inputs:
        if src and Path(src).exists() and path.exists() and os.path.samefile(src, path):
            raise DaLifError(f"{path}: is also an input of this command; writing it would "
                             "replace the input, choose another output path")
    parent = path.parent
    while not parent.exists():  # atomic_path creates missing directories
        parent = parent.parent
    if not parent.is_dir():
        raise _cannot_write(path, f"{parent} is not a directory")
    try:  # the only reliable test (root ignores permissions; /proc refuses anyway)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise _cannot_write(path, e) from None
    os.close(fd)
    os.unlink(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A path that cannot be written (a directory, an unwritable or missing place) is a
    DaLifError, and nothing is left behind."""
    path = Path(path)
    if path.is_dir():
        raise DaLifError(f"{path}: is a directory; give a file name for the output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e) from None
    os.close(fd)
    try:
        try:
            yield Path(tmp)
        except OSError as e:  # e.g. the disk filled up while writing
            raise _cannot_write(path, e) from None
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _cannot_write(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))
