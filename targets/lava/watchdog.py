"""Run a function in a child process under a timeout: a Lava run may hang, we never do.

Lava hangs silently when one of its process models raises (DESIGN.md section 4), so every Lava
run happens in a forked child that leads its own process group. The parent waits on a pipe:

* the child returns normally -> its (picklable) return value;
* the child raises -> :class:`LavaRunError` with the child's traceback;
* the child dies without answering, or the timeout passes -> the whole process group (the child
  and every Lava process it started) is killed and :class:`LavaRunError` says what is known.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from dalif_deploy.errors import DaLifError, LavaRunError


def _child(write_fd: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Body of the forked child: run ``fn``, pickle the outcome into the pipe, exit hard."""
    code = 0
    try:
        os.setsid()  # own process group: the parent can kill Lava's processes with us
        try:
            result = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            result = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                      isinstance(exc, DaLifError))
        try:
            payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001
            payload = pickle.dumps(("error", f"result not picklable: {exc}", "", False))
        with os.fdopen(write_fd, "wb") as fh:
            fh.write(payload)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)  # skip atexit handlers inherited from the parent (pytest, Lava)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_all(fd: int, deadline: float) -> bytes | None:
    """Read the pipe until EOF; None if the deadline passes first."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def run_with_watchdog(fn: Callable[..., Any], *args: Any, timeout: float, what: str = "lava run",
                      **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` in a forked child; return its result or raise LavaRunError.

    ``timeout`` (seconds) bounds the whole child, including Lava compilation and shutdown. The
    child is a plain ``os.fork`` (not ``multiprocessing``, whose bootstrap fixes the start
    method and makes Lava's own ``set_start_method('fork')`` fail).
    """
    if not (timeout > 0):
        raise DaLifError(f"{what}: timeout must be positive, got {timeout}")
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _child(write_fd, fn, args, kwargs)
    os.close(write_fd)
    try:
        payload = _read_all(read_fd, start + timeout)
        if payload is None:
            raise LavaRunError(f"{what}: no result after {timeout:g} s (timeout); the Lava "
                               f"processes were killed. A Lava child may have failed silently; "
                               f"rerun with a larger --timeout if it is just slow")
        if not payload:
            _kill_group(pid)
            _, status = os.waitpid(pid, 0)
            raise LavaRunError(f"{what}: the child process died after "
                               f"{time.monotonic() - start:.1f} s without a result "
                               f"({_describe_status(status)})")
        try:
            result = pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001 - e.g. cut short by a child killed mid-write
            raise LavaRunError(f"{what}: the child's result could not be read "
                               f"({type(exc).__name__}: {exc})") from None
        if result[0] == "error":
            _, message, tb, is_user_error = result
            if is_user_error:  # a DaLifError raised while lowering: keep its message as is
                raise LavaRunError(f"{what}: {message}")
            raise LavaRunError(f"{what} failed in the child process: {message}\n{tb}")
        return result[1]
    finally:
        os.close(read_fd)
        _kill_group(pid)  # leftover Lava processes, if any
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
