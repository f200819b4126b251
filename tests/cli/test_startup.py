"""CLI start-up: the light paths (help, argument errors, inspecting a program) import neither
torch nor lava (help and argument errors not even numpy), and a Ctrl-C while the CLI is still
importing is the one ``interrupted`` line.

Each case runs the CLI in a fresh interpreter, so ``sys.modules`` shows what that path imported.
No timings are asserted (docs/MEASURED.md has them)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import default_signals
from helpers.programs import small_program

from dalif_deploy.fixedpoint.fxp_format import save_program

HEAVY = ("torch", "lava", "numpy")

# the console script's wrapper (`from dalif_deploy.cli import main; sys.exit(main())`), then
# the heavy packages that ended up imported, on a line of their own
RUN_MAIN = (
    "import sys\n"
    "from dalif_deploy.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    f"print('IMPORTED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def _imported(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-c", RUN_MAIN, *argv], capture_output=True,
                         text=True, timeout=300).stdout
    return [line for line in out.splitlines() if line.startswith("IMPORTED")][-1]


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["--version"],
    ["--no-such-option"],
    ["no-such-command"],
    ["inspect"],  # FILE missing: argparse's error
    ["inspect", "--help"],
    ["quantize", "--help"],
    ["verify", "--help"],  # its Lava limits' options: declared without the lava backend
    ["verify"],  # MODEL missing
    ["train", "--help"],  # --neuron and its options: from the neuron registry's specs
    ["compare", "--help"],  # its default neurons: the same
    ["simulate", "--help"],  # the backends' options: from their registrations (issue 23)
    ["simulate", "m.fxp"],  # --backend missing
    ["simulate", "m.fxp", "--backend", "loihi"],  # not a backend
    ["train", "--model", "digits-cnn", "-o", "m.pt", "--neuron", "izhikevich"],
])
def test_help_and_argument_errors_import_neither_torch_nor_lava_nor_numpy(argv):
    assert _imported(*argv) == "IMPORTED []"


def test_inspecting_a_program_imports_neither_torch_nor_lava(tmp_path):
    path = tmp_path / "m.fxp"
    save_program(small_program(), path)
    assert _imported("inspect", str(path)) == "IMPORTED ['numpy']"  # the format's arrays
    assert _imported("inspect", str(path), "--json") == "IMPORTED ['numpy']"


# held in the import of module HOLD_AT: tell the test (write HOLD_MARK), then wait for its signal
HOLD = (
    "import os, sys, time\n"
    "class Hold:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == os.environ['HOLD_AT']:\n"
    "            with open(os.environ['HOLD_MARK'], 'w') as f:\n"
    "                f.write(name)\n"
    "            while True:\n"
    "                time.sleep(1)\n"
    "sys.meta_path.insert(0, Hold())\n"
)
CONSOLE_SCRIPT = HOLD + "from dalif_deploy.cli import main\nsys.exit(main())\n"
PYTHON_M = HOLD + "import runpy\nrunpy.run_module('dalif_deploy', run_name='__main__')\n"


@pytest.mark.parametrize("entry,hold_at,argv", [
    # simulate imports torch once it has parsed its arguments (its options are light)
    (CONSOLE_SCRIPT, "torch", ["simulate", "m.fxp", "--backend", "emulator"]),
    (PYTHON_M, "torch", ["simulate", "m.fxp", "--backend", "emulator"]),
    # verify imports torch once it has parsed its arguments
    (CONSOLE_SCRIPT, "torch", ["verify", "m.fxp"]),
    # python -m: still importing the command line itself, before main() runs
    (PYTHON_M, "dalif_deploy.cli", ["--help"]),
])
def test_ctrl_c_while_importing_is_one_line_and_exit_130(entry, hold_at, argv, tmp_path):
    mark = tmp_path / "importing"
    env = {**os.environ, "HOLD_AT": hold_at, "HOLD_MARK": str(mark)}
    child = subprocess.Popen([sys.executable, "-c", entry, *argv], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 600  # a hang guard only: the child writes the mark
        while not mark.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), child.communicate()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=600)
    finally:
        child.kill()
    assert err.splitlines() == ["interrupted (SIGINT)"], err
    assert child.returncode == 128 + signal.SIGINT == 130
    assert out == ""
