"""The Lava target's plumbing: the Python 3.11 compatibility hook, lazy lava import, watchdog."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dalif_deploy.targets.lava import compat
from dalif_deploy.targets.lava.watchdog import run_with_watchdog

from dalif_deploy.errors import DaLifError, LavaRunError

PY = sys.executable


def _run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- compatibility hook
def _var_model_source() -> str:
    import importlib.machinery

    spec = importlib.machinery.PathFinder.find_spec("lava.magma.compiler.var_model",
                                                    _lava_paths())
    return Path(spec.origin).read_text()


def _lava_paths() -> list[str]:
    import importlib.util

    spec = importlib.util.find_spec("lava")
    return [str(Path(p) / "magma" / "compiler") for p in spec.submodule_search_locations]


def test_hook_guard_depends_on_python_and_lava_versions():
    assert compat.needs_hook((3, 11), "0.10.0")
    assert compat.needs_hook((3, 12), "0.10.0")
    assert not compat.needs_hook((3, 10), "0.10.0")  # lava's own supported Pythons
    assert not compat.needs_hook((3, 11), "0.9.0")  # never patch another release blindly


def test_transform_replaces_exactly_the_eight_defaults_and_refuses_otherwise():
    source = _var_model_source()
    assert source.count("ByteEncoder = ByteEncoder()") == 8
    new = compat.transform_source(source)
    assert "ByteEncoder = ByteEncoder()" not in new
    assert new.count("_dalif_field(default_factory=ByteEncoder)") == 8
    compile(new, "var_model.py", "exec")  # still valid Python
    broken = source.replace("ByteEncoder = ByteEncoder()", "ByteEncoder = None", 1)
    with pytest.raises(DaLifError, match="expected 8 ByteEncoder defaults .* found 7"):
        compat.transform_source(broken)


def test_lava_fails_without_the_hook_and_imports_with_it():
    """Measured: lava-nc 0.10.0's var_model does not import on 3.11; the hook fixes it, and
    each dataclass instance gets its own ByteEncoder (default_factory, not a shared one)."""
    bare = _run_py("import lava.magma.compiler.var_model")
    assert bare.returncode != 0 and "mutable default" in bare.stderr
    hooked = _run_py(
        "from dalif_deploy.targets.lava.compat import import_lava; import_lava()\n"
        "import lava.magma.compiler.var_model as vm\n"
        "a, b = vm.CoreEncoder(), vm.CoreEncoder()\n"
        "assert a.x == b.x and a.x is not b.x\n"
        "import site, os; assert 'ByteEncoder()' in open(vm.__file__).read()  # unedited\n"
        "print('ok')")
    assert hooked.returncode == 0, hooked.stderr
    assert hooked.stdout.strip() == "ok"


def test_importing_dalif_deploy_and_the_lava_target_does_not_import_lava():
    r = _run_py("import sys, dalif_deploy, dalif_deploy.targets.lava\n"
                "import dalif_deploy.targets.lava.run, dalif_deploy.targets.lava.backend\n"
                "import dalif_deploy.cli, dalif_deploy.backends\n"
                "bad = sorted(m for m in sys.modules if m == 'lava' or m.startswith('lava.'))\n"
                "print(bad)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ---------------------------------------------------------------- watchdog
def _raise():
    raise ValueError("boom in the child")


def _hang():
    time.sleep(120)


def _die():
    os._exit(3)


def _grandchild_hangs():
    subprocess.Popen([PY, "-c", "import time; time.sleep(120)"])
    time.sleep(120)


def test_watchdog_returns_the_childs_result():
    assert run_with_watchdog(np.arange, 4, timeout=30).tolist() == [0, 1, 2, 3]


def test_watchdog_reports_a_failing_child_with_its_traceback():
    with pytest.raises(LavaRunError, match="ValueError: boom in the child"):
        run_with_watchdog(_raise, timeout=30)


def test_watchdog_reports_a_child_that_dies():
    with pytest.raises(LavaRunError, match="died .* without a result"):
        run_with_watchdog(_die, timeout=30)


class _Unreadable:
    """Pickles in the child but cannot be rebuilt in the parent (as a truncated payload)."""

    def __reduce__(self):
        return (_raise, ())


def _unreadable_result():
    return _Unreadable()


def test_watchdog_reports_a_result_it_cannot_read():
    with pytest.raises(LavaRunError, match="could not be read.*ValueError: boom in the child"):
        run_with_watchdog(_unreadable_result, timeout=30)


@pytest.mark.parametrize("fn", [_hang, _grandchild_hangs])
def test_watchdog_kills_a_hanging_child_and_its_processes(fn):
    start = time.monotonic()
    with pytest.raises(LavaRunError, match="no result after 1 s"):
        run_with_watchdog(fn, timeout=1.0)
    assert time.monotonic() - start < 5


def _lava_hangs_on_float_vth():
    from dalif_deploy.targets.lava.compat import import_lava

    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF

    src = RingBuffer(data=np.ones((2, 4), np.int32))
    dense = Dense(weights=np.eye(2, dtype=np.int32) * 2)
    lif = LIF(shape=(2,), vth=1.5, du=4095, dv=0)  # float vth: the fixed_pt model fails
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    src.run(condition=RunSteps(num_steps=4), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    src.stop()


@pytest.mark.lava
def test_watchdog_turns_a_real_lava_hang_into_an_error():
    """Measured: a float vth makes Lava hang with no traceback; the watchdog ends it."""
    start = time.monotonic()
    with pytest.raises(LavaRunError, match="timeout"):
        run_with_watchdog(_lava_hangs_on_float_vth, timeout=6.0)
    assert time.monotonic() - start < 10
