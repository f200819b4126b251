"""Helpers shared by the tests (importable as ``helpers``: tests/ is on sys.path through
conftest.py)."""

from pathlib import Path

#: the repository root
REPO_ROOT = Path(__file__).resolve().parents[2]
