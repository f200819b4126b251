"""Signals during a command: unwind cleanly, leave no temporary file, exit ``128 + signum``.

While :func:`signals_raise` is active, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
SIGALRM and SIGXCPU raise :class:`Interrupted` in the main thread (a KeyboardInterrupt, so
``finally`` blocks and context managers run: the atomic writers of :mod:`dalif_deploy.base.files`
remove
their temporary files). A second signal while unwinding removes the temporary files at once and
exits with ``os._exit``. SIGKILL cannot be caught: the next write to the same destination removes
the temporary file the killed process left (see :func:`dalif_deploy.base.files.remove_stale_temps`).

A process forked from the CLI (a Lava child) inherits the handler; there it acts as the
handler it replaced (Python's KeyboardInterrupt for SIGINT, the default action otherwise).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from dalif_deploy.base.files import remove_temp_files

CAUGHT = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1",
                                           "SIGUSR2", "SIGALRM", "SIGXCPU") if hasattr(signal, n))


class Interrupted(KeyboardInterrupt):
    """The command was stopped by signal ``signum``; the CLI exits with ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


def exit_code(e: KeyboardInterrupt) -> int:
    """128 + the signal number (130 for a plain KeyboardInterrupt, i.e. SIGINT)."""
    return 128 + getattr(e, "signum", signal.SIGINT)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn the catchable terminating signals into :class:`Interrupted` (see the module
    docstring) for the duration of the block; the previous handlers come back after it.

    A handler someone else installed (a test harness, an embedding program) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    previous: dict[int, object] = {}
    state = {"unwinding": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked child: behave as the handler we replaced did
            old = previous[signum]
            signal.signal(signum, old)  # type: ignore[arg-type]
            if callable(old):
                old(signum, frame)
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
            return
        if state["unwinding"]:  # second signal: no more unwinding, go now
            remove_temp_files()
            print(f"interrupted ({signal.Signals(signum).name})", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        state["unwinding"] = True
        raise Interrupted(signum)

    for sig in CAUGHT:
        old = signal.getsignal(sig)
        if old in (signal.SIG_DFL, signal.default_int_handler):
            previous[sig] = old
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
