"""Bounds on what a file or an option may make the tool allocate, checked before allocating.

Three rules (docs/safety.md, "Sizes and values"):

* Size-giving values have sane limits: T (``limits.TIMESTEPS_MAX``), zoo ``width``
  (:data:`WIDTH_MAX`), one sample's input elements (:data:`INPUT_ELEMENTS_MAX`), batch sizes
  (:data:`BATCH_MAX`).
* Sizes a file declares are checked against the file before anything is read: a zip member
  may not declare more than :data:`ZIP_RATIO_MAX` times its compressed size (deflate cannot
  exceed about 1032:1; a stored member is exactly its size), nor extend past the end of the
  file, names are unique (:func:`check_zip`); an ``.npy`` member's shape must agree with the
  member's declared size (:func:`npy_header`).
* A run's memory is estimated from the declared sizes first and refused, with the figure,
  when it exceeds what the machine has available (:func:`check_memory`: the least of
  MemAvailable, the ``RLIMIT_AS`` headroom and the memory cgroup's headroom).
"""

from __future__ import annotations

import functools
import math
import os
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from .errors import DaLifError

WIDTH_MAX = 4096  # zoo base channel width (defaults: 16 digits, 64 vgg11, 128 resnet19)
INPUT_ELEMENTS_MAX = 2**24  # elements of one sample's input frame (CIFAR: 3072)
BATCH_MAX = 2**20  # samples per batch
ZIP_RATIO_MAX = 1100  # uncompressed / compressed size of one zip member (deflate: <= ~1032)
MEMORY_FRACTION = 0.9  # of MemAvailable a run may plan to use
NPY_HEADER_MAX = 10_000  # bytes of an .npy header (numpy's own default limit)


def format_bytes(n: float) -> str:
    """``3.2 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


#: where the limits are read (tests point these at a folder of their own)
PROC = "/proc"
CGROUP_ROOT = "/sys/fs/cgroup"
#: what the figure of :func:`mem_available` is the least of, for messages
LIMITS_TEXT = ("the least of MemAvailable, the address-space limit (ulimit -v) less what is "
               "mapped, and the cgroup's memory limit less its usage")


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2): no limit


def _meminfo(field: str, path: str) -> int | None:
    """A ``NAME: value kB`` line of a /proc file, in bytes."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _address_space_left() -> int | None:
    """``RLIMIT_AS`` (``ulimit -v``) less this process's mapped address space (VmSize)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    return max(0, soft - (_meminfo("VmSize", f"{PROC}/self/status") or 0))


def _cgroup_left() -> int | None:
    """The memory cgroup's limit less its usage (cgroup v2 ``memory.max``/``memory.current``,
    v1 ``memory.limit_in_bytes``/``memory.usage_in_bytes``), None without a limit."""
    try:
        with open(f"{PROC}/self/cgroup") as f:
            lines = f.read(1 << 16).splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        _, controllers, rel = (line.split(":", 2) + ["", ""])[:3]
        rel = rel.lstrip("/")
        if controllers == "":  # v2
            files = [(os.path.join(CGROUP_ROOT, rel, "memory.max"),
                      os.path.join(CGROUP_ROOT, rel, "memory.current"))]
        elif "memory" in controllers.split(","):  # v1: the group's path, or the mount itself
            files = [(os.path.join(CGROUP_ROOT, "memory", d, "memory.limit_in_bytes"),
                      os.path.join(CGROUP_ROOT, "memory", d, "memory.usage_in_bytes"))
                     for d in (rel, "")]
        else:
            continue
        for limit_path, usage_path in files:
            limit = _read_int(limit_path)
            if limit is None or limit >= 1 << 60:  # v1 writes a huge number for "no limit"
                continue
            left = max(0, limit - (_read_int(usage_path) or 0))
            best = left if best is None else min(best, left)
            break
    return best


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """The C library (ctypes), None where it cannot be loaded (looked up once: finding it
    costs milliseconds)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, which hands the C heap's free pages back to the system, or
    None where the C library lacks it. glibc keeps freed heap pages, which ``MemAvailable``
    counts as taken (measured: 35 MB of every 58 MB a sample of a ResNet-19 w128 float pass
    left, all free)."""
    return getattr(_libc(), "malloc_trim", None)


#: glibc's mallopt parameters (malloc.h) and the values :func:`reuse_freed_memory` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused there
HEAP_MMAP_THRESHOLD_FALLBACK = 32 << 20  # the most some glibc versions accept
HEAP_TRIM_THRESHOLD = (1 << 31) - 1  # free heap top handed back only when 2 GiB sit there


@functools.lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Have glibc keep freed tensors of up to 1 GiB for the next ones instead of handing each
    back to the system; True where it took (glibc), else nothing changes.

    glibc maps every block above its mmap threshold (at most 32 MB) afresh and unmaps it when
    freed, so each such tensor of every step is faulted in again page by page. At verify's
    batch 256 on ResNet-19 w128 that was 45,000 page faults a sample and half the time:
    measured, float model 191.8 -> 88.7 ms a sample and emulator 105.6 -> 53.5 ms
    (docs/MEASURED.md). What the heap keeps is still this process's to use:
    :func:`check_memory` hands it back (``malloc_trim``) before refusing a plan. Called once
    per command by the CLI; a library user may call it too."""
    import ctypes

    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD) or \
        mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD_FALLBACK)
    return bool(mapped and mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD))


def mem_available(trim: bool = False) -> int | None:
    """Bytes of memory new allocations may take, None if unknown: the least of
    ``MemAvailable``, the address-space limit less what is mapped (an allocation beyond it
    fails however much memory the machine has) and the memory cgroup's limit less its usage
    (a container's). ``trim``: hand this process's free heap back first (it is available to
    us, but the system counts it as taken); only where a plan would not fit otherwise, since
    the pages must then be faulted in again."""
    if trim and _malloc_trim() is not None:
        _malloc_trim()(0)
    figures = [v for v in (_meminfo("MemAvailable", f"{PROC}/meminfo"), _address_space_left(),
                           _cgroup_left()) if v is not None]
    return min(figures) if figures else None


def device_memory_free(device: Any) -> int:
    """Bytes a CUDA ``device`` can still give: free there plus the blocks torch's caching
    allocator holds unused (a run before this one on that device leaves them reserved)."""
    import torch

    return int(torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
               - torch.cuda.memory_allocated(device))


def check_memory(nbytes: float, what: str, fix: str = "") -> None:
    """Refuse a plan that needs ``nbytes`` when the machine has less available.

    The message names ``what``, both figures and the ``fix``."""
    avail = mem_available()
    if avail is not None and nbytes > MEMORY_FRACTION * avail:
        avail = mem_available(trim=True)  # what this process freed is ours to use
    if avail is not None and nbytes > MEMORY_FRACTION * avail:
        raise DaLifError(f"{what} needs about {format_bytes(nbytes)} of memory, more than the "
                         f"{format_bytes(avail)} this machine has available ({LIMITS_TEXT})"
                         + (f"; {fix}" if fix else ""))


def check_zip(zf: zipfile.ZipFile, file_size: int, where: str) -> dict[str, zipfile.ZipInfo]:
    """Check every member's declared sizes against the archive before anything is read.

    Refused: a name listed twice, a member whose compressed data would extend past the end of
    the file, members whose data add up to more than the file (overlapping members), one that
    declares more than :data:`ZIP_RATIO_MAX` times its compressed size (a stored member must
    declare exactly its size), and a total declared size the machine cannot hold.
    Returns ``{name: ZipInfo}``.
    """
    members: dict[str, zipfile.ZipInfo] = {}
    total = packed = 0
    for info in zf.infolist():
        if info.filename in members:
            raise DaLifError(f"{where}: the archive lists member {info.filename!r} more than "
                             "once (a damaged or hostile file); re-create it")
        members[info.filename] = info
        if info.header_offset + info.compress_size > file_size:
            raise DaLifError(f"{where}: member {info.filename!r} declares "
                             f"{format_bytes(info.compress_size)} of data, past the end of the "
                             f"{format_bytes(file_size)} file (truncated or damaged)")
        stored = info.compress_type == zipfile.ZIP_STORED
        limit = info.compress_size if stored else ZIP_RATIO_MAX * info.compress_size + 1024
        if info.file_size > limit:
            raise DaLifError(f"{where}: member {info.filename!r} declares "
                             f"{format_bytes(info.file_size)} from "
                             f"{format_bytes(info.compress_size)} of "
                             f"{'stored' if stored else 'compressed'} data, which no real "
                             "member can (damaged or hostile file); re-create it")
        total += info.file_size
        packed += info.compress_size
    if packed > file_size:  # members that share their data: each would be read again
        raise DaLifError(f"{where}: the archive's members declare {format_bytes(packed)} of "
                         f"data in a {format_bytes(file_size)} file (overlapping members: a "
                         "damaged or hostile file); re-create it")
    check_memory(total, f"{where}: reading the archive")
    return members


def npy_header(fp: IO[bytes], declared: int, where: str
               ) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Parse the header of an ``.npy`` stream and check its shape against ``declared`` bytes.

    Returns ``(shape, dtype, fortran_order)``; the stream is left at the start of the data.
    Object dtypes, and a shape whose data would not fit the member's declared size, are
    refused.
    """
    from numpy.lib import format as npf

    try:
        version = npf.read_magic(fp)
        read = {(1, 0): npf.read_array_header_1_0, (2, 0): npf.read_array_header_2_0}.get(
            version)
        if read is None:
            raise ValueError(f"npy format version {version} is not supported")
        shape, fortran, dtype = read(fp, max_header_size=NPY_HEADER_MAX)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise DaLifError(f"{where}: not a readable array ({str(e)[:120]})") from None
    if dtype.hasobject:
        raise DaLifError(f"{where}: holds Python objects ({dtype}); only plain numeric arrays "
                         "are accepted")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > declared:
        raise DaLifError(f"{where}: declares shape {shape} ({format_bytes(nbytes)} of "
                         f"{dtype}) in a member of {format_bytes(declared)} (damaged or "
                         "hostile file)")
    return tuple(int(d) for d in shape), dtype, bool(fortran)


#: bytes read at a time into an array (so that reading never holds the data twice)
NPZ_READ_CHUNK = 2**24


def read_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One ``.npy`` member of an npz archive, its header checked before its data is read."""
    return read_npz_rows(zf, info, where)[0]


def read_npz_rows(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str,
                  rows: int | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(array, declared shape)`` of an ``.npy`` member of an npz archive, its header checked
    before its data is read; with ``rows``, only the first ``rows`` entries of its first axis
    are read (a C-order array's leading bytes; a Fortran-order one is read whole). The data go
    straight into the array, a chunk at a time."""
    with zf.open(info) as fp:
        shape, dtype, fortran = npy_header(fp, info.file_size, where)
        keep = shape
        if rows is not None and shape and not fortran and rows < shape[0]:
            keep = (max(0, int(rows)), *shape[1:])
        nbytes = math.prod(keep) * dtype.itemsize
        check_memory(nbytes, f"{where}: reading the array")
        out = np.empty(keep, dtype=dtype, order="F" if fortran else "C")
        view = memoryview(out.reshape(-1, order="A").view(np.uint8))
        done = 0
        while done < nbytes:
            chunk = fp.read(min(NPZ_READ_CHUNK, nbytes - done))
            if not chunk:
                raise DaLifError(f"{where}: truncated array data")
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
    return out, shape

