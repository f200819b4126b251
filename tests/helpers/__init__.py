"""Helpers shared by the tests, importable as ``helpers`` (pytest puts tests/, the folder of
the root conftest.py, on sys.path): builders live here, never in a test module another test
module imports."""

import signal
from pathlib import Path

#: the repository root
REPO_ROOT = Path(__file__).resolve().parents[2]
#: the shipped checkpoints (package data)
CHECKPOINTS = REPO_ROOT / "dalif_deploy" / "checkpoints"


def default_signals() -> None:
    """``preexec_fn`` for a child a test signals: SIGINT, SIGQUIT and SIGHUP at their defaults.
    A shell starting a background job without job control (``cmd &`` in a script, as a CI
    runner may) makes SIGINT and SIGQUIT ignored, ``nohup`` SIGHUP; children inherit that, and
    the CLI rightly leaves an ignored signal ignored (the nohup convention). The tests are
    about signals at their defaults."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
