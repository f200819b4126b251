"""The Lava target's plumbing: the Python 3.11 compatibility hook, lazy lava import, watchdog."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from dalif_deploy.targets.lava import compat
from dalif_deploy.targets.lava.watchdog import run_with_watchdog
from helpers import default_signals

from dalif_deploy.base.errors import DaLifError, LavaRunError

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
                "import dalif_deploy.cli, dalif_deploy.targets.registry\n"
                "bad = sorted(m for m in sys.modules if m == 'lava' or m.startswith('lava.'))\n"
                "print(bad)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ---------------------------------------------------------------- watchdog
def _raise():
    raise ValueError("boom in the child")


# A hanging child sleeps HANG seconds. The tests below check what the watchdog reports, never
# how fast the machine is: a report that needed the child to finish would come after HANG, so
# "well before HANG" tells a kill from a wait however loaded the machine (a timing bound of a
# few seconds failed under load).
HANG = 120


def _hang():
    time.sleep(HANG)


def _die():
    os._exit(3)


def _grandchild_hangs():
    subprocess.Popen([PY, "-c", f"import time; time.sleep({HANG})"])
    time.sleep(HANG)


# The timeouts below are never reached: each call returns as soon as its child does.
def test_watchdog_returns_the_childs_result():
    assert run_with_watchdog(np.arange, 4, timeout=600).tolist() == [0, 1, 2, 3]


def test_watchdog_reports_a_failing_child_with_its_traceback():
    with pytest.raises(LavaRunError, match="ValueError: boom in the child"):
        run_with_watchdog(_raise, timeout=600)


def test_watchdog_reports_a_child_that_dies():
    with pytest.raises(LavaRunError, match="died .* without a result"):
        run_with_watchdog(_die, timeout=600)


class _Unreadable:
    """Pickles in the child but cannot be rebuilt in the parent (as a truncated payload)."""

    def __reduce__(self):
        return (_raise, ())


def _unreadable_result():
    return _Unreadable()


def test_watchdog_reports_a_result_it_cannot_read():
    with pytest.raises(LavaRunError, match="could not be read.*ValueError: boom in the child"):
        run_with_watchdog(_unreadable_result, timeout=600)


@pytest.mark.parametrize("fn", [_hang, _grandchild_hangs])
def test_watchdog_kills_a_hanging_child_and_its_processes(fn):
    start = time.monotonic()
    with pytest.raises(LavaRunError, match="no result after 1 s"):
        run_with_watchdog(fn, timeout=1.0)
    assert time.monotonic() - start < HANG / 2  # killed, not waited for


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
def test_watchdog_reports_a_real_lava_failure_in_seconds_even_without_a_timeout():
    """Measured: a float vth makes Lava's LIF process raise, after which Lava hangs silently;
    the watchdog reports the process's own error and its traceback, with no timeout at all.

    No clock: since Lava never returns on its own here, the raise is the watchdog's report."""
    with pytest.raises(LavaRunError, match=r"Lava process .* raised TypeError: ufunc "
                       r"'left_shift'.*traceback in (\S+\.log)") as info:
        run_with_watchdog(_lava_hangs_on_float_vth, timeout=float("inf"))
    log = Path(re.search(r"traceback in (\S+\.log)", str(info.value)).group(1))
    assert "left_shift" in log.read_text() and "Traceback" in log.read_text()
    log.unlink()


# ---------------------------------------------------------------- nothing outlives the caller
def _proc_table() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, parent pid, session id) of every process."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            table[int(d)] = (fields[0], int(fields[1]), int(fields[3]))
    return table


def _sessions(caller: int) -> set[int]:
    """The caller's session and those of its children (the watchdog child leads its own)."""
    table = _proc_table()
    return {caller} | {sid for _, (_, ppid, sid) in table.items() if ppid == caller}


def _live(sessions: set[int]) -> list[int]:
    """Processes still running in these sessions (a zombie has ended; init reaps it)."""
    return [pid for pid, (state, _, sid) in _proc_table().items()
            if sid in sessions and state != "Z"]


def _mapped_segments(sessions: set[int]) -> set[str]:
    names = set()
    for pid in _live(sessions):
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        names |= set(re.findall(r"/dev/shm/(psm_\w+)", maps))
    return names


def _eventually(check, seconds: float = 60.0):
    """Poll ``check`` until it is falsy (returned at once) or ``seconds`` pass (then returned
    truthy). Clean-up after a signal is asynchronous (the sentinel reaps), so the deadline is
    generous: it costs nothing when things work and a loaded machine stays well within it."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

_WORKERS_SCRIPT = """
import multiprocessing as mp, os, sys, time
from multiprocessing import shared_memory
from dalif_deploy.targets.lava.watchdog import run_with_watchdog

def body(ready):
    segs = [shared_memory.SharedMemory(create=True, size=4096) for _ in range(5)]
    procs = [mp.get_context("fork").Process(target=time.sleep, args=(120,)) for _ in range(3)]
    for p in procs:
        p.start()
    with open(ready + ".tmp", "w") as fh:
        fh.write("\\n".join(s.name for s in segs))
    os.replace(ready + ".tmp", ready)
    time.sleep(120)

try:
    run_with_watchdog(body, sys.argv[1], timeout=600)
except KeyboardInterrupt as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(130)
"""


@needs_proc
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_signalled_caller_leaves_no_process_segment_or_file(sig, tmp_path):
    """The caller (with three worker processes and five shared-memory segments in its watchdog
    child) is signalled: within seconds nothing of its run is left, SIGKILL included."""
    ready, scratch = tmp_path / "ready", tmp_path / "tmp"
    scratch.mkdir()
    p = subprocess.Popen([PY, "-c", _WORKERS_SCRIPT, str(ready)], start_new_session=True,
                         preexec_fn=default_signals,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "TMPDIR": str(scratch)})
    try:
        _until(ready.exists, 60, "the workers")
        segments = ready.read_text().split()
        sessions = _sessions(p.pid)
        assert len(_live(sessions)) >= 6  # caller, sentinel, child, 3 workers (+ tracker)
        assert all(Path("/dev/shm", s).exists() for s in segments)
        os.kill(p.pid, sig)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert _eventually(lambda: _live(sessions)) == []
    assert [s for s in segments if Path("/dev/shm", s).exists()] == []
    assert _eventually(lambda: list(scratch.iterdir())) == []  # no log, no run folder
    if sig == signal.SIGKILL:
        assert p.returncode == -signal.SIGKILL
    else:
        assert p.returncode == 130
        assert err.strip() == f"stopped: stopped by {signal.Signals(sig).name}"


def _worker_raises():
    import multiprocessing as mp

    mp.get_context("fork").Process(target=_raise).start()
    time.sleep(HANG)


@needs_proc
def test_a_worker_that_fails_is_reported_in_seconds_without_a_timeout():
    """A process the child starts fails while the child waits for it: reported while the child
    still waits (with no timeout), its traceback in the named log."""
    start = time.monotonic()
    with pytest.raises(LavaRunError, match=r"Process-1 \(pid \d+\) exited with code 1 .*"
                       r"log in (\S+)") as info:
        run_with_watchdog(_worker_raises, timeout=float("inf"))
    assert time.monotonic() - start < HANG / 2  # not the child's own return
    log = Path(str(info.value).rsplit(" ", 1)[1])
    assert "ValueError: boom in the child" in log.read_text()
    log.unlink()


# ---------------------------------------------------------------- the CLI running Lava
def _tiny_program(path: Path, t: int) -> Path:
    from dalif_deploy.fixedpoint.fxp_format import save_program
    from dalif_deploy.fixedpoint.program import (
        FixedProgram,
        InputEncoding,
        Population,
        Readout,
        Synapse,
    )

    rng = np.random.default_rng(0)
    zeros = np.zeros((10,), np.int64)
    pops = [Population(name="l1", shape=(10,), dv=np.array([100]), vth=200, bias_mant=zeros),
            Population(name="out", shape=(10,), dv=np.array([0]), vth=2**17 - 1,
                       bias_mant=zeros)]
    syns = [Synapse(name="fc1", source="input", target="l1", kind="dense",
                    weights=rng.integers(-128, 128, (10, 64)), graded=True,
                    input_shape=(1, 8, 8), output_shape=(10,)),
            Synapse(name="fc2", source="l1", target="out", kind="dense",
                    weights=rng.integers(-128, 128, (10, 10)), input_shape=(10,),
                    output_shape=(10,))]
    save_program(FixedProgram(InputEncoding("analog", (1, 8, 8), scale=20.0), pops, syns,
                              Readout("out", 64.0), timesteps=t), path)
    return path


def _simulate(program: Path, scratch: Path, *extra: str, env: dict | None = None):
    """Start ``simulate --backend lava`` in a session of its own, temp files in ``scratch``."""
    scratch.mkdir(exist_ok=True)
    return subprocess.Popen(
        [PY, "-m", "dalif_deploy", "simulate", str(program), "--backend", "lava", *extra],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(scratch), **(env or {})}, preexec_fn=default_signals)


@pytest.mark.lava
@needs_proc
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_cli_signalled_mid_lava_run_leaves_no_process_segment_or_file(sig, tmp_path):
    """Measured before: the watchdog child's session (about 11 processes) ran on to the end of
    the run, its segments with it, and a killed run left its segments for good."""
    program = _tiny_program(tmp_path / "long.fxp", t=64)  # ~10 s of Lava steps
    p = _simulate(program, tmp_path / "tmp", "--samples", "100", "--batch-size", "100")
    try:
        def running():
            sessions = _sessions(p.pid)
            segments = _mapped_segments(sessions - {p.pid})
            return (sessions, segments) if len(_live(sessions)) >= 8 and segments else None

        sessions, segments = _until(running, 90, "Lava to run")
        os.kill(p.pid, sig)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert _eventually(lambda: _live(sessions)) == []
    assert [s for s in segments if Path("/dev/shm", s).exists()] == []
    assert _eventually(lambda: list((tmp_path / "tmp").iterdir())) == []
    if sig == signal.SIGKILL:
        assert p.returncode == -signal.SIGKILL
    else:
        assert p.returncode == 128 + sig
        last = err.replace("\r", "\n").strip().splitlines()[-1]
        assert last == f"interrupted ({signal.Signals(sig).name})", err
        assert "Traceback" not in err


@pytest.mark.lava
@needs_proc
@pytest.mark.parametrize(("fault", "timeout", "words"), [
    ("raise", "600", r"raised RuntimeError: fault injected .*; traceback in (\S+)"),
    ("kill", "inf", r"was killed by signal 9 .*; log in (\S+)"),
])
def test_cli_reports_a_failed_lava_process_in_seconds(fault, timeout, words, tmp_path):
    """A Lava worker that raises (or dies) as it starts: one error line within seconds of the
    failure, naming the log, whatever the timeout (inf included); nothing else left."""
    program = _tiny_program(tmp_path / "tiny.fxp", t=8)
    p = _simulate(program, tmp_path / "tmp", "--samples", "20", "--timeout", timeout,
                  env={"DALIF_LAVA_TEST_FAULT": fault})
    said: list[tuple[float, str]] = []  # (time, character) as the CLI writes them
    reader = threading.Thread(target=lambda: said.extend(
        (time.time(), c) for c in iter(lambda: p.stderr.read(1), "")))
    reader.start()
    sessions: set[int] = set()
    while p.poll() is None:  # its processes, while they run
        sessions |= _sessions(p.pid)
        time.sleep(0.1)
    reader.join(timeout=10)
    err = "".join(c for _, c in said)
    assert len(sessions) == 2  # the CLI's and the watchdog child's
    assert p.returncode == 2
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    log = Path(re.search(words, errors[0]).group(1))
    text = log.read_text()
    injected = float(re.search(r"DALIF_LAVA_TEST_FAULT=\w+ at ([\d.]+)", text).group(1))
    reported = said[err.index("error:")][0]
    # Measured 0.8 s idle; the bound only tells the failure's report from the timeout's (600 s
    # or none), so it is a tenth of that, not seconds that a loaded machine would exceed.
    assert reported - injected < 60
    if fault == "raise":
        assert "Traceback" in text and "RuntimeError: fault injected" in text
    assert list((tmp_path / "tmp").iterdir()) == [log]  # the log only
    assert _eventually(lambda: _live(sessions)) == []
