"""Run a function in a child process under a watchdog: a Lava run may hang or fail, we never do.

Lava hangs silently when one of its processes raises or dies (DESIGN.md section 4), and it
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

import ctypes
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from dalif_deploy.errors import DaLifError, LavaRunError

FAULT_ENV = "DALIF_LAVA_TEST_FAULT"
POLL_S = 0.2  # how often the caller and the child's monitor look
GRACE_S = 2.0  # how long the caller lets the child end its own processes before SIGKILL
SHM_DIR = "/dev/shm"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_HEAD = struct.Struct("!Q")


class LavaRunStopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during a Lava run; its processes and segments are gone."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


# ---------------------------------------------------------------- small OS helpers
def set_parent_death_signal(sig: int) -> None:
    """Deliver ``sig`` to this process when its parent thread ends (Linux; no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def remove_segments(record: str) -> int:
    """Unlink the segments listed in ``record`` (``name inode`` lines) that still exist with
    that inode; return how many were removed. Another run's segment is never touched."""
    try:
        with open(record, encoding="ascii") as fh:
            lines = fh.read().split("\n")
    except OSError:
        return 0
    removed = 0
    for line in lines:
        name, _, ino = line.partition(" ")
        if not name.startswith("psm_") or "/" in name:
            continue
        path = os.path.join(SHM_DIR, name)
        try:
            if os.stat(path).st_ino == int(ino or -1):
                os.unlink(path)
                removed += 1
        except (OSError, ValueError):
            pass
    return removed


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


# ---------------------------------------------------------------- the child
class _Child:
    """State of the forked child: result pipe, log, segment record, Lava's worker processes."""

    def __init__(self, result_fd: int, log: str, rundir: str, parent: int) -> None:
        self.result_fd, self.log, self.rundir, self.parent = result_fd, log, rundir, parent
        self.lock = threading.Lock()
        self.sent = False
        self.workers: list[Any] = []  # every multiprocessing process started in this child

    def send(self, message: tuple) -> None:
        """Send one framed message to the caller (the first one wins)."""
        try:
            payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001
            payload = pickle.dumps(("error", f"result not picklable: {exc}", False))
        with self.lock:
            if self.sent:
                return
            self.sent = True
            data = memoryview(_HEAD.pack(len(payload)) + payload)
            while data:
                data = data[os.write(self.result_fd, data):]

    def write_log(self, text: str) -> None:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")

    def setup(self) -> None:
        os.setsid()  # own session and process group: every Lava process is in it
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != self.parent:  # the caller died before the line above
            os._exit(1)
        for s in _STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
        devnull = os.open(os.devnull, os.O_RDONLY)
        logfd = os.open(self.log, os.O_WRONLY | os.O_APPEND)
        os.dup2(devnull, 0)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os.close(devnull)
        os.close(logfd)
        for name, fd in (("stdout", 1), ("stderr", 2)):  # also when the caller replaced them
            setattr(sys, name, open(fd, "w", encoding="utf-8", errors="backslashreplace",
                                    buffering=1, closefd=False))
        import multiprocessing.process as mpp

        mpp.current_process()._config["tempdir"] = self.rundir  # its sockets: cleaned with it
        self._record_segments()
        self._track_workers()
        os.register_at_fork(before=self._before_fork, after_in_child=self._after_fork_in_worker)
        threading.Thread(target=self._monitor, name="dalif-lava-monitor", daemon=True).start()

    def _record_segments(self) -> None:
        from multiprocessing import shared_memory

        fd = os.open(os.path.join(self.rundir, "segments"),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        original = shared_memory.SharedMemory.__init__

        def __init__(shm: Any, *args: Any, **kwargs: Any) -> None:
            original(shm, *args, **kwargs)
            if kwargs.get("create", args[1] if len(args) > 1 else False):
                ino = os.fstat(shm._fd).st_ino if getattr(shm, "_fd", -1) >= 0 else 0
                os.write(fd, f"{shm.name} {ino}\n".encode("ascii"))

        shared_memory.SharedMemory.__init__ = __init__

    def _track_workers(self) -> None:
        import multiprocessing.process as mpp

        original = mpp.BaseProcess.start
        workers = self.workers

        def start(proc: Any) -> None:
            original(proc)
            if os.getpid() == self.pid:
                proc._dalif_pid = proc.pid  # Lava's join() closes the object, pid included
                workers.append(proc)

        self.pid = os.getpid()
        mpp.BaseProcess.start = start

    def _before_fork(self) -> None:
        self.forker = os.getpid()  # the child, or a process Lava forked from it

    def _after_fork_in_worker(self) -> None:
        """In each process forked in the child's tree: die with the parent; the child's own
        workers also drop the result pipe (and one fails if the test hook asks)."""
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != self.forker:  # the parent died before the line above
            os._exit(1)
        if self.forker != self.pid:
            return
        try:
            os.close(self.result_fd)
        except OSError:
            pass
        fault = os.environ.get(FAULT_ENV)
        if fault in ("raise", "kill"):
            _inject_fault(fault, os.path.join(self.rundir, "fault"))

    def _monitor(self) -> None:
        while not self.sent:
            time.sleep(POLL_S)
            failure = self.worker_failure()
            if failure and not self.sent:
                time.sleep(POLL_S)  # let the main thread's own report, if any, go first
                self.report_worker_failure(failure)
                return

    def worker_failure(self) -> tuple[str, str] | None:
        """(summary, details) of the first Lava worker that raised or died, else None."""
        for proc in list(self.workers):
            try:
                failure = _failure_of(proc)
            except Exception:  # noqa: BLE001 - a process object Lava is closing right now
                continue
            if failure:
                return failure
        return None

    def report_worker_failure(self, failure: tuple[str, str]) -> None:
        summary, details = failure
        self.write_log(details)
        self.send(("worker", summary))
        self.end_workers()
        os._exit(1)

    def end_workers(self) -> None:
        """SIGKILL every other process of the group and reap this process's children, so that
        none is left behind as an orphan."""
        me = os.getpid()
        for pid in _group_members(me):
            if pid != me:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
            except InterruptedError:
                continue

    def run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        try:
            result: tuple = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller
            self.write_log(traceback.format_exc())
            if isinstance(exc, DaLifError):
                result = ("error", str(exc), True)
            else:
                time.sleep(POLL_S)  # a worker's exception arrives just after Lava's own error
                failure = self.worker_failure()
                if failure:
                    self.report_worker_failure(failure)
                result = ("error", f"{type(exc).__name__}: {exc}", False)
        self.send(result)
        self.end_workers()


def _inject_fault(fault: str, flag: str) -> None:
    """Make the first Lava worker (``SystemProcess``) that claims ``flag`` fail as it starts."""
    import multiprocessing.process as mpp

    original = mpp.BaseProcess.run

    def run(proc: Any) -> None:
        if hasattr(proc, "_cconn"):
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                print(f"{FAULT_ENV}={fault} at {time.time():.3f}", file=sys.stderr, flush=True)
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"fault injected by {FAULT_ENV}=raise")
        original(proc)

    mpp.BaseProcess.run = run


def _group_members(pgid: int) -> list[int]:
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for d in entries:
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b") ", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                out.append(int(d))
    return out


def _exit_status(pid: int) -> int | None:
    """Exit code of an exited, not yet reaped process (negative: signal), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b") ", 1)[1].split()
    except OSError:
        return None
    if fields[0] != b"Z" or len(fields) < 50:
        return None
    return os.waitstatus_to_exitcode(int(fields[-1]))


def _peek(conn: Any) -> Any:
    """The message waiting on a multiprocessing Connection, read without consuming it; None if
    there is none (yet) or it cannot be read."""
    if socket.getdefaulttimeout() is not None:  # a socket object would then change the flags
        return None
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except (OSError, ValueError):
        return None
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
    try:
        head = sock.recv(4, flags)
        if len(head) < 4:
            return None
        (size,) = struct.unpack("!i", head)
        start = 4
        if size == -1:
            head = sock.recv(12, flags)
            (size,) = struct.unpack("!Q", head[4:12])
            start = 12
        data = sock.recv(start + size, flags)
        if len(data) < start + size:
            return None
        return pickle.loads(data[start:])
    except Exception:  # noqa: BLE001 - no message, or one we cannot rebuild
        return None
    finally:
        sock.close()


def _failure_of(proc: Any) -> tuple[str, str] | None:
    popen = getattr(proc, "_popen", None)
    name = f"{proc.name} (pid {getattr(proc, '_dalif_pid', '?')})"
    caught = getattr(proc, "_exception", None)  # Lava's SystemProcess, once joined
    conn = getattr(proc, "_pconn", None)
    if caught is None and conn is not None and not getattr(proc, "_is_done", True):
        caught = _peek(conn)
    if isinstance(caught, tuple) and len(caught) == 2:
        exc, tb = caught
        return (f"Lava process {name} raised {type(exc).__name__}: {exc}",
                f"Lava process {name} raised:\n{tb}")
    if popen is None:
        return None
    code = popen.returncode if popen.returncode is not None else _exit_status(popen.pid)
    if code is None or code == 0 or (conn is None and code == -signal.SIGTERM):
        return None  # running, ended normally, or a manager stopped by multiprocessing itself
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"Lava process {name} {how}", f"Lava process {name} {how}"


# ---------------------------------------------------------------- the sentinel
def _sentinel(read_fd: int, child: int, record: str, paths: Sequence[str]) -> None:
    """Body of the sentinel process: wait for the caller's pipe to close, then clean up."""
    code = 0
    try:
        os.setpgid(0, 0)  # out of the caller's group: a signal to that group spares us
        for s in _BLOCKED:
            signal.signal(s, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
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
            _kill_group(child)
            deadline = time.monotonic() + GRACE_S
            while _group_members(child) and time.monotonic() < deadline:
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
    for s in _STOP_SIGNALS:
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
        if len(buf) >= _HEAD.size and len(buf) >= _HEAD.size + _HEAD.unpack_from(buf)[0]:
            try:
                return "message", pickle.loads(buf[_HEAD.size:])
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
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        child = _Child(write_fd, log, rundir, parent)
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
        signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
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
    _kill_group(pid)
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
