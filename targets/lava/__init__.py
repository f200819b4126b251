"""Lava target: run a FixedProgram on Lava's bit-accurate CPU models (lava-nc 0.10.0).

Importing this package does NOT import lava: only running this target does (in a watchdog
child process). Public entry points:

* :func:`run_lava` - ``run_lava(program, x, *, timeout, record=False) -> FixedPointResult``;
* :class:`.backend.LavaBackend` - the ``simulate --backend lava`` backend (same JSON as the
  emulator).
* :func:`lava_steps` - ``lava_steps(program, n)``: the Lava steps of a streamed run of n samples.
"""

from __future__ import annotations

from typing import Any

# the Lava run guard's limits (:func:`.run.check_lava_budget`), declared with the backends'
# options (dalif_deploy.targets.options): verify's help and argument errors import neither
# torch nor lava
from dalif_deploy.targets.options import LAVA_LIMITS


def run_lava(program, x, *, timeout: float = 600.0, record: bool = False, **opts: Any):
    """See :func:`dalif_deploy.targets.lava.run.run_lava`."""
    from .run import run_lava as _run

    return _run(program, x, timeout=timeout, record=record, **opts)


def lava_steps(program, n: int) -> int:
    """See :func:`dalif_deploy.targets.lava.run.lava_steps`."""
    from .run import lava_steps as _steps

    return _steps(program, n)


__all__ = ["LAVA_LIMITS", "lava_steps", "run_lava"]
