"""What a command of the ``dalif-deploy`` command line declares about itself.

Each command module in ``dalif_deploy/cli/`` ends with one ``COMMAND = Command(...)``; the
parser, the ``--help`` epilog, the output checks run before any work and the I/O safety tests
are all derived from these declarations, and ``COMMANDS`` in :mod:`dalif_deploy.cli` registers
the modules. A command module imports nothing heavy at its top (numpy, torch, lava): its
functions import what they need, so ``--help`` and argument errors start fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand.

    ``add_arguments(parser)`` adds its arguments (called only when the command is parsed or its
    help shown); ``run(args)`` does the work and returns the exit code (None: 0). ``inputs``
    and ``outputs`` name the ``dest`` of every argument that holds a file (or folder) path read
    or written: each output is checked before ``run`` (writable, not a special file, not one of
    the inputs, no two outputs on one path); ``stdout_outputs`` are outputs that also take
    ``-`` for stdout; ``output_dirs``: folders written into (refused when a file), each
    receiving the files named ``dir_files`` (checked as outputs, written all or none).
    ``check(args)``: further checks made with the output checks (e.g. of the files a folder
    will receive). ``pipeline``: the command's line in the top-level help's pipeline list
    (None: not listed); ``sharded``: it splits its data under torchrun. ``reuse_freed_memory``:
    glibc keeps freed tensors for the next ones while it runs
    (:func:`dalif_deploy.base.resources.reuse_freed_memory`): faster where the same large
    tensors come every step, but the heap may then grow past what the work holds at once, so
    the quantiser's commands, whose figure is peak memory, leave glibc's defaults.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    stdout_outputs: tuple[str, ...] = ()
    output_dirs: tuple[str, ...] = ()
    dir_files: tuple[str, ...] = ()
    pipeline: str | None = None
    sharded: bool = False
    reuse_freed_memory: bool = True
    check: Callable[[argparse.Namespace], None] | None = None

    def __post_init__(self) -> None:
        stray = set(self.stdout_outputs) - set(self.outputs)
        if stray:  # a registration bug: caught by every test that builds the parser
            raise ValueError(f"command {self.name!r}: stdout_outputs {sorted(stray)} are not "
                             "among its outputs")
