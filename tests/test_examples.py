"""docs/python-api.md's quickstart is examples/quickstart.py, and it runs as pasted from any
directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"
MARKER = "# --- docs/python-api.md: Quickstart"


def _snippet() -> str:
    src = QUICKSTART.read_text()
    return src[src.index(MARKER):].split("\n", 1)[1].strip("\n")


def test_the_python_api_doc_shows_the_quickstart_file_verbatim():
    doc = (ROOT / "docs" / "python-api.md").read_text()
    section = doc[doc.index("## Quickstart"):]
    block = "\n".join(line[4:] if line.startswith("    ") else line
                      for line in section.split("\n"))
    assert _snippet() in block, ("docs/python-api.md's quickstart block differs from "
                                  "examples/quickstart.py")


@pytest.mark.lava
def test_the_quickstart_runs_as_pasted_in_a_fresh_directory(tmp_path):
    """The snippet alone (no module docstring, no repository cwd) in a subprocess."""
    script = tmp_path / "pasted.py"
    script.write_text(_snippet() + "\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its mkdtemp lands in the test's folder
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Lava == emulator: True" in r.stdout and "verify: PASSED" in r.stdout, r.stdout
