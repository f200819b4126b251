"""One rule per option, on every command, checked right after parsing and before any work.

Every number an option brings in is checked here by its name, whichever command takes it
(``--batch-size`` is 1..2^20 on verify as on simulate and finetune), and every float option,
named below or not, must be finite and within float32 (``nan``, ``inf``, ``1e300`` are one
``error:`` line, never a silently disabled guard or a crash deep inside torch). Lists of
numbers (``compare -T 1,2,4 --seeds 0,1``) follow the rule of their elements.

Input files and ``--data-dir`` are checked here too (:func:`check_inputs`, before any work and
before a sharded run joins its process group), and :func:`output_paths` names the files a
command writes (all of them, or none after a failure: ``files.output_transaction``).

It also holds the command line's last line of defence (:func:`internal_error`): an exception
that is not a :class:`~dalif_deploy.base.errors.DaLifError` is a bug of ours, reported as one
``error: internal error (...)`` line and exit code 3, never as exit 1 ("verification failed").
"""

from __future__ import annotations

import argparse
import math
import os
import traceback

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX

from .command import Command

# numpy-free on purpose (help and argument errors import no numpy): these equal
# base.resources.BATCH_MAX / WIDTH_MAX and base.schema.FLOAT32_MAX (a test holds them equal)
BATCH_MAX = 2**20
WIDTH_MAX = 4096
FLOAT32_MAX = 3.4028234663852886e38

#: exit code of an internal error (a bug: please report it); 1 is "verification failed"
EXIT_INTERNAL = 3
#: set to 1 to print the traceback of an internal error (for a bug report)
TRACEBACK_ENV = "DALIF_DEPLOY_TRACEBACK"

COUNT_MAX = 2**31 - 1  # samples, Lava processes: beyond any data set or machine
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds agree on 0..2^32-1
EPOCHS_MAX = 100_000

#: integer options by destination name: ``(lowest, highest)`` on every command
INT_RANGES: dict[str, tuple[int, int]] = {
    "batch_size": (1, BATCH_MAX),
    "samples": (1, COUNT_MAX),
    "calibration_samples": (0, COUNT_MAX),
    "lava_samples": (0, COUNT_MAX),
    "timesteps": (1, TIMESTEPS_MAX),
    "seed": (0, SEED_MAX),
    "seeds": (0, SEED_MAX),
    "epochs": (1, EPOCHS_MAX),
    "width": (1, WIDTH_MAX),
    "downsample": (1, 128),
    "weight_bits": (2, 8),
    "max_lava_processes": (1, COUNT_MAX),
}
#: float options by destination name: ``(lowest, highest, lowest excluded)``; every other
#: float option is only held to finite and within float32
FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (0.0, 10.0, True),  # Adam's step is about lr per step: beyond 10 nothing is learnt
    "min_agreement": (0.0, 1.0, False),
    "max_accuracy_drop": (0.0, 100.0, False),  # percentage points
    "timeout": (0.0, 1e7, True),  # seconds (115 days)
    "max_lava_memory": (0.0, 2.0**20, True),  # GiB
    "dt": (0.0, FLOAT32_MAX, True),
    "tau": (1.0, 1e6, False),
    "init_tau": (1.0, 1e6, True),
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_int(dest: str, v: int, where: str) -> None:
    from dalif_deploy.base.schema import integer

    lo, hi = INT_RANGES[dest]
    integer(v, where, lo, hi)  # the schema's wording, as a file's field gets


#: float options where ``inf`` means "no limit" (documented: ``--timeout inf`` lifts the
#: watchdog's time limit only; a failed child is still reported in seconds); NaN never passes
UNLIMITED = ("timeout",)


def _check_float(dest: str, v: float, where: str) -> None:
    if dest in UNLIMITED and v == math.inf:
        return
    if dest in FLOAT_RANGES:
        lo, hi, lo_open = FLOAT_RANGES[dest]
        if not math.isfinite(v) or (v <= lo if lo_open else v < lo) or v > hi:
            kind = "positive finite" if lo == 0 and lo_open else "finite"
            raise DaLifError(f"{where} must be a {kind} number in {'(' if lo_open else '['}"
                             f"{lo:g}, {hi:g}], got {v!r}")
    elif not math.isfinite(v) or abs(v) > FLOAT32_MAX:
        raise DaLifError(f"{where} must be a finite number within float32 "
                         f"(|x| <= {FLOAT32_MAX:.3g}), got {v!r}")


def check_option_values(args: argparse.Namespace) -> None:
    """Apply the rules above to every option of ``args`` (module docstring)."""
    for dest, value in vars(args).items():
        items = value if isinstance(value, (list, tuple)) else [value]
        where = _flag(dest)
        for v in items:
            if isinstance(v, bool):
                continue
            if isinstance(v, float):
                _check_float(dest, v, where)
            elif isinstance(v, int) and dest in INT_RANGES:
                _check_int(dest, v, where)


#: input arguments that name either a built-in data set or a file
DATASET_ARGS = ("dataset", "test_dataset", "calibrate", "name")  # a name or an .npz


def check_inputs(args: argparse.Namespace, command: Command) -> None:
    """Refuse a missing or unreadable input file, or a ``--data-dir`` that is no folder, before
    any work is done (and before a sharded run joins its process group, where a missing file
    would otherwise leave the other ranks waiting)."""
    from dalif_deploy.base.files import check_input_file

    for k in command.inputs:
        value = getattr(args, k, None)
        if not value or k in ("model", "checkpoint", "graph", "file", "data_dir"):
            continue  # the command's own file: its reader checks it first, saying what it is
            # (--data-dir, a folder, is checked below)
        if k in DATASET_ARGS:
            from dalif_deploy.datasets.loaders import is_dataset_file

            if not is_dataset_file(str(value)):
                continue  # a built-in name: its loader checks it
        check_input_file(value, f"the --{k.replace('_', '-')} file")
    data_dir = getattr(args, "data_dir", None)
    if data_dir and not os.path.isdir(data_dir):
        from dalif_deploy.base.wording import shown

        raise DaLifError(f"--data-dir {shown(data_dir)}: no such folder")


def output_paths(args: argparse.Namespace, command: Command) -> list[str]:
    """The files the command writes (its output options, the files its output folders
    receive): written all at the end of a successful command, none after a failed one
    (``files.output_transaction``)."""
    paths = [str(getattr(args, k)) for k in command.outputs
             if getattr(args, k, None) not in (None, "-")]
    for k in command.output_dirs:
        if getattr(args, k, None) is not None:
            paths += [os.path.join(getattr(args, k), n) for n in command.dir_files]
    return paths


def internal_error(e: BaseException) -> str:
    """The one line an unexpected exception (a bug) prints, with its traceback before it when
    :data:`TRACEBACK_ENV` is set."""
    text = str(e).strip().splitlines()
    brief = f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__
    if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
        traceback.print_exception(e)
    return (f"internal error ({brief}); this is a bug in dalif-deploy, please report it with "
            f"the command line (set {TRACEBACK_ENV}=1 for the traceback)")


def memory_error(e: BaseException) -> str:
    """The one line of an allocation that failed although the plan was checked (another
    process took the memory meanwhile, or a limit we could not read)."""
    what = str(e).strip().splitlines()
    detail = f" ({what[0][:160]})" if what else ""
    return (f"out of memory{detail}; free memory, raise the limit (ulimit -v, the container's) "
            "or ask for less (smaller --batch-size, -T or data)")

