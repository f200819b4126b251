"""The watchdog's child process (see :mod:`.watchdog`): set-up, Lava-worker monitor, OS helpers.

The child leads its own session, dies with its caller (parent-death signal), sends its outcome
as one framed message, writes its stdout/stderr and every traceback to the log, records each
shared-memory segment created in its tree, and watches the ``multiprocessing`` processes it
starts (Lava's workers): one that raised (its message is read without consuming it) or died is
reported at once. The helpers at the top are shared with the caller and the sentinel.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from dalif_deploy.base.errors import DaLifError

FAULT_ENV = "DALIF_LAVA_TEST_FAULT"
POLL_S = 0.2  # how often the caller and the child's monitor look
SHM_DIR = "/dev/shm"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
HEAD = struct.Struct("!Q")  # frame header: payload length


# ---------------------------------------------------------------- OS helpers
def set_parent_death_signal(sig: int) -> None:
    """Deliver ``sig`` to this process when its parent thread ends (Linux; no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def kill_group(pgid: int) -> None:
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


def group_members(pgid: int) -> list[int]:
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



# ---------------------------------------------------------------- the child
class Child:
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
            data = memoryview(HEAD.pack(len(payload)) + payload)
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
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)
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
        for pid in group_members(me):
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
