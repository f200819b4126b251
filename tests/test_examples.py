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


@pytest.mark.lava
def test_the_custom_model_example_runs_from_any_directory(tmp_path):
    """examples/custom_model.py (issue 25): a network of its own trained, saved, exported,
    quantised, run on Lava and verified with --model-code, through the command line."""
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_model.py"), "--out-dir",
                        str(tmp_path / "out"), "--epochs", "3", "--lava-samples", "2"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bit-exact with emulator: True" in r.stdout and "PASSED" in r.stdout, r.stdout
    assert (tmp_path / "out" / "tiny-conv.html").is_file()
