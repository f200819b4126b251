"""Helpers shared by the tests, importable as ``helpers`` (pytest puts tests/, the folder of
the root conftest.py, on sys.path): builders live here, never in a test module another test
module imports."""

from pathlib import Path

#: the repository root
REPO_ROOT = Path(__file__).resolve().parents[2]
#: the shipped checkpoints (package data)
CHECKPOINTS = REPO_ROOT / "dalif_deploy" / "checkpoints"
