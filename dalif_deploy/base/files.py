"""Files in and out: inputs only from regular files, outputs atomic and never over a special file.

Inputs (:func:`check_input_file`): every loader reads only a regular file (or a symbolic link to
one). A FIFO, a socket, a device (``/dev/zero``) or a directory is refused before it is opened:
it could block forever or never end.

Outputs (:func:`check_output_path`, :func:`atomic_path`, :func:`atomic_open`):

- written to a temporary file beside the destination, renamed over it only on success;
- an existing destination must be a regular file. A character or block device, a FIFO or a
  socket is refused (a write would replace ``/dev/null`` with a file); so is a symbolic link
  to anything but a regular file, and any link that passes through ``/proc`` (``/dev/stdout``,
  ``/proc/self/fd/1``): the command line takes ``-`` for stdout where an option supports it;
- a symbolic link to a regular file is written through: the target is replaced atomically and
  the link stays a link (what ``> link`` does in a shell);
- temporary files are named ``.NAME.dalif-tmp-PID-XXXXXXXX`` (NAME the destination's file name,
  PID the writing process). They are removed on any error or catchable signal (the CLI turns
  signals into an exception, see ``dalif_deploy.cli.signals``); one left by a process that no
  longer runs (SIGKILL, power loss) is removed by the next write to the same destination.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .errors import DaLifError

#: the marker between a destination's name and the writer's PID in a temporary file's name
TEMP_MARK = ".dalif-tmp-"
#: test hook: seconds to sleep at the first write of every :func:`atomic_open` output, so a test
#: can deliver a signal in the middle of a write
WRITE_DELAY_ENV = "DALIF_DEPLOY_TEST_WRITE_DELAY"
_NAME_CHARS = 200  # of the destination's name kept in a temporary name (NAME_MAX is 255)

#: temporary files this process is writing now (removed by remove_temp_files on a forced exit)
_LIVE_TEMPS: set[str] = set()


@dataclass
class _Transaction:
    """The outputs of one command (:func:`output_transaction`): ``targets`` the files it
    writes, ``done`` those written so far as ``(target, backup of what it replaced or
    None)``."""

    targets: set[str]
    done: list[tuple[Path, str | None]] = field(default_factory=list)


_TRANSACTION: _Transaction | None = None
#: what outputs replaced, kept until the command ends (never removed as stale meanwhile)
_KEPT: set[str] = set()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(path: Path, e: OSError | str) -> DaLifError:
    why = e if isinstance(e, str) else (e.strerror or type(e).__name__)
    return DaLifError(f"{path}: cannot write the output here ({why}); choose a file path in a "
                      "writable directory")


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def check_input_file(path: str | os.PathLike, what: str = "an input file") -> Path:
    """``path`` as a Path if it is a regular file (or a symbolic link to one), else a DaLifError.

    Called by every loader before it opens anything: a FIFO would block the read forever and
    ``/dev/zero`` never ends. ``what`` says what was expected, e.g. ``"a checkpoint (.pt)"``."""
    path = Path(path)
    try:
        st = os.stat(path)  # follows symbolic links: a link to a regular file is fine
    except FileNotFoundError:
        raise DaLifError(f"{path}: no such file (expected {what})") from None
    except OSError as e:
        raise DaLifError(f"{path}: cannot read it ({e.strerror or type(e).__name__}); expected "
                         f"{what}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DaLifError(f"{path}: is a directory, not a file (expected {what})")
    if not stat.S_ISREG(st.st_mode):
        raise DaLifError(f"{path}: is a {_kind(st.st_mode)}, not a regular file; inputs are "
                         f"read only from regular files (expected {what}; copy the data into a "
                         "file)")
    return path


def check_data_file(path: str | os.PathLike, root: str | os.PathLike,
                    what: str = "an input file") -> Path:
    """:func:`check_input_file` for a file of a data folder (``--data-dir``), which may come
    from someone else: the file, followed through every symbolic link (of the file or of a
    folder on the way), must lie inside ``root`` followed the same way. A link that leads
    outside is refused before the file is opened, naming neither its target nor its content
    (a label file linking to ``/etc/passwd`` is never read). Links inside the folder are
    fine."""
    path = check_input_file(path, what)
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base:
        from .wording import shown

        raise DaLifError(f"{shown(path)}: is a symbolic link (or lies in a linked folder) that "
                         f"leads outside the data folder {shown(root)}; data-folder readers "
                         "read only files inside it: copy the file into the folder")
    return path


def _in_proc(p: str) -> bool:
    return p == "/proc" or p.startswith("/proc/")


def output_target(path: str | os.PathLike) -> Path:
    """The file an output to ``path`` replaces: ``path`` itself (new or a regular file), or the
    regular file a symbolic link at ``path`` points to. Anything else is a DaLifError."""
    path = Path(path)
    where = Path(os.path.abspath(path))
    for hops in range(40):  # the kernel's own limit on links in a row
        parent = os.path.realpath(where.parent)
        if _in_proc(parent):
            raise DaLifError(f"{path}: leads into {parent} (a process's file descriptors); "
                             "outputs are written only to regular files; use '-' for stdout "
                             "where the option takes it")
        where = Path(parent) / where.name
        try:
            st = os.lstat(where)
        except FileNotFoundError:
            if hops:  # a dangling link: do not create its target
                raise DaLifError(f"{path}: is a symbolic link to {where}, which does not "
                                 "exist; give the target's path or remove the link") from None
            return path
        except OSError as e:
            raise _cannot_write(path, e) from None
        if stat.S_ISLNK(st.st_mode):
            where = Path(parent) / os.readlink(where)
            continue
        if stat.S_ISDIR(st.st_mode):
            raise DaLifError(f"{path}: is a directory; give a file name for the output "
                             f"(e.g. {path / 'out'}{path.suffix})")
        if not stat.S_ISREG(st.st_mode):
            via = f" (through a symbolic link to {where})" if hops else ""
            raise DaLifError(f"{path}: is a {_kind(st.st_mode)}{via}; dalif-deploy never "
                             "replaces a special file: give a regular file path, or '-' for "
                             "stdout where the option takes it")
        return where if hops else path
    raise DaLifError(f"{path}: too many levels of symbolic links")


def check_output_path(path: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = ()
                      ) -> None:
    """Refuse, before any work is done, an output path that cannot be written: a directory, a
    special file (see :func:`output_target`), a parent that is a file or not writable, or one
    of the command's ``inputs`` (which the output would silently replace)."""
    path = Path(path)
    target = output_target(path)
    for src in inputs:
        if src and Path(src).exists() and target.exists() and os.path.samefile(src, target):
            raise DaLifError(f"{path}: is also an input of this command; writing it would "
                             "replace the input, choose another output path")
    parent = target.parent
    while not parent.exists():  # atomic_path creates missing directories
        parent = parent.parent
    if not parent.is_dir():
        raise _cannot_write(path, f"{parent} is not a directory")
    try:  # the only reliable test (root ignores permissions; /proc refuses anyway)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), dir=parent)
    except OSError as e:
        raise _cannot_write(path, e) from None
    try:  # a signal right here must not leave the probe behind
        os.close(fd)
    finally:
        os.unlink(tmp)


def _temp_prefix(target: Path, pid: int | None = None) -> str:
    return f".{target.name[:_NAME_CHARS]}{TEMP_MARK}{os.getpid() if pid is None else pid}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of earlier writes to ``target`` whose process is gone (killed
    with SIGKILL, or the machine went down); returns what was removed. A file of a running
    process is left alone, and so is one of this process that is still being written."""
    target = Path(target)
    head = f".{target.name[:_NAME_CHARS]}{TEMP_MARK}"
    removed = []
    try:
        names = os.listdir(target.parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(head):
            continue
        pid_text = name[len(head):].partition("-")[0]
        if not pid_text.isdigit():
            continue
        p = target.parent / name
        pid = int(pid_text)
        if (pid == os.getpid() and str(p) in _LIVE_TEMPS | _KEPT) or (pid != os.getpid()
                                                              and _alive(pid)):
            continue
        try:
            if stat.S_ISREG(os.lstat(p).st_mode):
                os.unlink(p)
                removed.append(p)
        except OSError:
            pass
    return removed


def remove_temp_files() -> None:
    """Remove every temporary file this process is writing now (a forced exit's last act)."""
    for tmp in list(_LIVE_TEMPS):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        _LIVE_TEMPS.discard(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``'s target; rename it over the target on success.

    The target is ``path``, or the regular file a symbolic link at ``path`` points to (the link
    stays). A path that cannot be written (a directory, a special file, an unwritable or missing
    place) is a DaLifError, and nothing is left behind; stale temporary files of earlier,
    killed writes to the same target are removed first."""
    path = Path(path)
    target = output_target(path)
    tmp: str | None = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(target)
            # A signal between creating the file and registering it would leave it behind
            # (the CLI turns signals into exceptions): both happen with signals held back,
            # and they arrive inside this try, whose finally removes the file.
            with _signals_held():
                fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), dir=target.parent)
                _LIVE_TEMPS.add(tmp)
            os.close(fd)
        except OSError as e:
            raise _cannot_write(path, e) from None
        try:
            yield Path(tmp)
        except OSError as e:  # e.g. the disk filled up while writing
            raise _cannot_write(path, e) from None
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        _commit(tmp, path, target)
    finally:
        if tmp is not None:
            if os.path.exists(tmp):
                os.unlink(tmp)
            _LIVE_TEMPS.discard(tmp)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back every catchable signal for the block (delivered when it ends); a no-op where
    the platform cannot block signals."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _commit(tmp: str, path: Path, target: Path) -> None:
    """Rename a finished temporary file over ``target`` (``path``'s), refusing a destination
    replaced by a special file or link meanwhile; inside :func:`output_transaction`, what it
    replaces is kept (a hard link) until the command ends."""
    if output_target(path) != target:
        raise DaLifError(f"{path}: changed while the output was being written; nothing "
                         "was written, run the command again")
    tx = _TRANSACTION
    held = tx is not None and os.path.abspath(target) in tx.targets
    backup = None
    try:
        if held and os.path.exists(target):
            backup = f"{target.parent}/{_temp_prefix(target)}kept-{len(tx.done)}"  # type: ignore
            if os.path.lexists(backup):
                os.unlink(backup)
            try:
                os.link(target, backup)  # the old content stays in place meanwhile
            except OSError:  # a file system without hard links
                shutil.copyfile(target, backup)
            _KEPT.add(backup)
        os.replace(tmp, target)
    except OSError as e:
        if backup and os.path.exists(backup):
            os.unlink(backup)
        raise _cannot_write(path, e) from None
    if held:
        tx.done.append((target, backup))  # type: ignore[union-attr]


@contextmanager
def output_transaction(paths: Iterable[str | os.PathLike],
                       commit_on: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """All or none of a command's outputs. Writes to ``paths`` inside the block happen as
    usual (the command may read them back), but what each replaced is kept; when the block
    raises, every one is undone: a new file is removed, a replaced one gets its old content
    back. An exception of a ``commit_on`` type is a result, not a failure (verify's
    "verification failed" comes with its report): the outputs stay. Writes to other paths are
    not tracked."""
    global _TRANSACTION
    outer = _TRANSACTION
    tx = _Transaction({os.path.abspath(output_target(p)) for p in paths})
    _TRANSACTION = tx
    ok = False
    try:
        yield
        ok = True
    except commit_on:
        ok = True
        raise
    finally:
        _TRANSACTION = outer
        for target, backup in reversed(tx.done):
            try:
                if ok and backup:
                    os.unlink(backup)
                elif not ok and backup:
                    os.replace(backup, target)
                elif not ok:
                    os.unlink(target)
            except OSError:  # best effort: the error being reported matters more
                pass
            _KEPT.discard(backup or "")


class _SlowFirstWrite:
    """A file whose first write sleeps (the :data:`WRITE_DELAY_ENV` test hook)."""

    def __init__(self, f: BinaryIO, delay: float) -> None:
        self._f, self._delay = f, delay

    def write(self, data: bytes) -> int:
        if self._delay:
            delay, self._delay = self._delay, 0.0
            time.sleep(delay)
        return self._f.write(data)

    def __getattr__(self, name: str):
        return getattr(self._f, name)


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file open for writing, atomically renamed to ``path`` on success (see
    :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        delay = float(os.environ.get(WRITE_DELAY_ENV) or 0)
        try:
            yield _SlowFirstWrite(f, delay) if delay > 0 else f  # type: ignore[misc]
        except BaseException as e:
            # A writer interrupted half-way (np.savez has no try/finally) leaves its ZipFile in
            # the traceback's frames; collected after ``f`` is closed, it would try to finish
            # the archive and print "Exception ignored ... seek of closed file". Release those
            # frames now, while ``f`` is still open.
            traceback.clear_frames(e.__traceback__)
            raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))
