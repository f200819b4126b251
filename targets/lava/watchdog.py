"""Run a function in a child process under a watchdog: a Lava run may hang or fail, we never do.

Lava hangs silently when one of its processes raises or dies (docs/DESIGN.md section 4), and it
leaves its processes and its shared-memory segments (``/dev/shm/psm_*``) behind when it is
killed. :func:`run_with_watchdog` runs ``fn`` (which builds and runs Lava) in a forked child and
guarantees that every process and segment of the run is gone when it returns, whatever happened:

* **Process ownership.** The child leads its own session, so every Lava process (all forked
  from it) is in its process group. Each of them, and the child itself, gets a parent-death
  signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, Linux): when its parent dies, it dies.
* **Sentinel.** A small process forked from the caller, in a process group of its own, holds
  the read end of a pipe whose write end only the caller holds. The pipe closes when the caller
  ends in any way, SIGKILL included; unless the caller said it cleaned up (a ``D`` written
  first), the sentinel then kills the child's group, removes the run's segments and the
  ``scratch`` paths, and exits.
* **Segments.** The child records the name and inode of every shared-memory segment created in
  its tree (a hook on ``multiprocessing.shared_memory.SharedMemory``); cleaning removes exactly
  those still present with the same inode, never another run's.
* **Failure detection.** A monitor thread in the child watches Lava's worker processes (every
  ``multiprocessing`` process the child starts): an exception a worker sends to its parent (read
  without consuming it) or a worker that dies is reported within about a second, timeout or
  not; the caller also polls the child itself. The child's stdout/stderr and every traceback go
  to a log file, which the one-line error names.
* **Signals.** While the caller waits (main thread, handlers not set by someone else), SIGTERM
  and SIGHUP kill the group, clean up and raise :class:`LavaRunStopped` (a KeyboardInterrupt:
  nothing swallows it as a Lava failure; the CLI prints one line). SIGINT does the same through
  KeyboardInterrupt.

Test hook: ``DALIF_LAVA_TEST_FAULT=raise`` (or ``kill``) makes one of Lava's worker processes
raise RuntimeError (or SIGKILL itself) as it starts, to check the detection end to end.
"""

from __future__ import annotations

import os
import pickle
import select
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from dalif_deploy.base.errors import DaLifError, LavaRunError

from .watchdog_child import (
    BLOCKED,
    HEAD,
    POLL_S,
    STOP_SIGNALS,
    Child,
    group_members,
    kill_group,
    remove_segments,
)

GRACE_S = 2.0  # how long the caller lets the child end its own processes before SIGKILL


class LavaRunStopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during a Lava run; its processes and segments are gone."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _remove(paths: Sequence[str]) -> None:
    for p in paths:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass


def _one_line(text: str) -> str:
    lines = [s.strip() for s in str(text).splitlines() if s.strip()]
    return " / ".join(lines) if lines else "(no message)"


# ---------------------------------------------------------------- the sentinel
def _sentinel(read_fd: int, child: int, record: str, paths: Sequence[str]) -> None:
    """Body of the sentinel process: wait for the caller's pipe to close, then clean up."""
    code = 0
    try:
        os.setpgid(0, 0)  # out of the caller's group: a signal to that group spares us
        for s in BLOCKED:
            signal.signal(s, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        keep = sorted({0, 1, 2, read_fd})
        for lo, hi in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
            os.closerange(lo + 1, hi)
        said = b""
        while True:
            chunk = os.read(read_fd, 64)
            if not chunk:
                break
            said += chunk
        if not said.endswith(b"D"):  # the caller died without cleaning up
            kill_group(child)
            deadline = time.monotonic() + GRACE_S
            while group_members(child) and time.monotonic() < deadline:
                time.sleep(0.02)
            remove_segments(record)
            _remove(paths)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


# ---------------------------------------------------------------- the caller
def _raise_stopped(signum: int, frame: Any) -> None:
    raise LavaRunStopped(signum)


def _install_stop_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for s in STOP_SIGNALS:
        if signal.getsignal(s) == signal.SIG_DFL:
            old[s] = signal.signal(s, _raise_stopped)
    return old


def _wait_for_result(fd: int, pid: int, deadline: float) -> tuple[str, Any]:
    """("message", obj) | ("died", wait status) | ("timeout", None) | ("unreadable", text)."""
    buf = bytearray()
    exited: int | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0 and exited is None:
            return "timeout", None
        ready, _, _ = select.select([fd], [], [], 0 if exited is not None else min(left, POLL_S))
        chunk = os.read(fd, 1 << 20) if ready else b""
        if ready and not chunk and exited is None:
            time.sleep(POLL_S)  # every writer closed the pipe: the child is ending
        buf += chunk
        if len(buf) >= HEAD.size and len(buf) >= HEAD.size + HEAD.unpack_from(buf)[0]:
            try:
                return "message", pickle.loads(buf[HEAD.size:])
            except Exception as exc:  # noqa: BLE001 - e.g. a class that cannot be rebuilt
                return "unreadable", f"{type(exc).__name__}: {exc}"
        if exited is not None and not chunk:
            return "died", exited
        if exited is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exited = status


def run_with_watchdog(fn: Callable[..., Any], *args: Any, timeout: float, what: str = "lava run",
                      scratch: Sequence[str] = (), **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` in a forked child; return its result or raise LavaRunError.

    ``timeout`` (seconds, ``inf`` for none) bounds the whole child, including Lava compilation
    and shutdown; a failed Lava process is reported within about a second regardless.
    ``scratch``: paths the sentinel deletes if this process dies before the run ends (the
    caller deletes them itself otherwise). The child is a plain ``os.fork`` (not
    ``multiprocessing``, whose bootstrap fixes the start method and makes Lava's own
    ``set_start_method('fork')`` fail). Raises :class:`LavaRunStopped` on SIGTERM/SIGHUP.
    """
    if not (timeout > 0):
        raise DaLifError(f"{what}: timeout must be positive, got {timeout}")
    fd_log, log = tempfile.mkstemp(prefix="dalif-lava-", suffix=".log")
    os.close(fd_log)
    rundir = tempfile.mkdtemp(prefix="dalif-run-")
    record = os.path.join(rundir, "segments")
    old_handlers = _install_stop_handlers()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        child = Child(write_fd, log, rundir, parent)
        try:
            child.setup()
            child.run(fn, args, kwargs)
        finally:
            os._exit(0)
    os.close(write_fd)
    guard_r, guard_w = os.pipe()
    sentinel = os.fork()
    if sentinel == 0:  # pragma: no cover - the sentinel
        os.close(guard_w)
        _sentinel(guard_r, pid, record, [log, rundir, *scratch])
    os.close(guard_r)
    kind, value = "stopped", None
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        kind, value = _wait_for_result(read_fd, pid, start + timeout)
        return _outcome(kind, value, what, log, time.monotonic() - start, timeout)
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        _finish(pid, read_fd, GRACE_S if kind == "message" else 0.0)
        remove_segments(record)
        shutil.rmtree(rundir, ignore_errors=True)
        if not _keeps_log(kind, value) or os.path.getsize(log) == 0:
            _remove([log])
        os.write(guard_w, b"D")
        os.close(guard_w)
        _reap(sentinel)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _keeps_log(kind: str, value: Any) -> bool:
    """The log is kept (and named) for failures; not after success, a DaLifError raised while
    lowering (its message says it all) or an interruption."""
    if kind == "message":
        return value[0] == "worker" or (value[0] == "error" and not value[2])
    return kind in ("timeout", "died")


def _finish(pid: int, read_fd: int, grace: float) -> None:
    """Let the child end its own processes (``grace`` s), then SIGKILL its group; reap it."""
    os.close(read_fd)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    kill_group(pid)
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _outcome(kind: str, value: Any, what: str, log: str, elapsed: float, timeout: float) -> Any:
    """The child's result, or the LavaRunError that says what happened."""
    output = f"; its output is in {log}" if os.path.getsize(log) else ""
    if kind == "timeout":
        raise LavaRunError(f"{what}: no result after {timeout:g} s (timeout); the Lava "
                           f"processes were killed. A Lava child may have failed silently; "
                           f"rerun with a larger --timeout if it is just slow{output}")
    if kind == "died":
        raise LavaRunError(f"{what}: the child process died after {elapsed:.1f} s without a "
                           f"result ({_describe_status(value)}){output}")
    if kind == "unreadable":
        raise LavaRunError(f"{what}: the child's result could not be read ({value})")
    if value[0] == "ok":
        return value[1]
    if value[0] == "worker":
        where = "traceback" if " raised " in value[1] else "log"
        raise LavaRunError(f"{what}: {_one_line(value[1])} after {elapsed:.1f} s; the run was "
                           f"stopped; {where} in {log}")
    _, message, is_user_error = value
    if is_user_error:  # a DaLifError raised while lowering: keep its message as is
        raise LavaRunError(f"{what}: {message}")
    raise LavaRunError(f"{what} failed in the child process: {_one_line(message)}; traceback "
                       f"in {log}")


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
