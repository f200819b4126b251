"""The Lava run guard (process count, memory estimate) and the streamed run's step progress.

The guard refuses before any Lava process starts, so only the tests that run Lava carry the
``lava`` marker.
"""

from __future__ import annotations

import numpy as np
import pytest
from dalif_deploy.targets.lava.lower import plan_program
from dalif_deploy.targets.lava.run import (
    LAVA_BASE_BYTES,
    LAVA_PROCESS_BYTES,
    _ProgressWatcher,
    check_lava_budget,
    estimate_memory_bytes,
    lava_steps,
    run_lava,
)
from helpers.programs import (
    conv_program,
    per_channel_program,
    random_conv,
    random_population,
    random_readout,
    random_samples,
)

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.fxp_format import save_program
from dalif_deploy.fixedpoint.program import FixedProgram, InputEncoding, Readout


def digits_shaped_program(seed: int = 0) -> FixedProgram:
    """input (1, 8, 8) -> conv -> (3, 8, 8) per-channel decays -> dense readout of 10: 5 Lava
    processes; runs on the digits test split."""
    rng = np.random.default_rng(seed)
    pop = random_population("c1", (3, 8, 8), rng, dv=[100, 900, 2000], vth=30)
    conv = random_conv("conv1", "input", "c1", 1, 3, (8, 8), rng, graded=True)
    ro, fc = random_readout("c1", (3, 8, 8), 10, rng, exp=-1)
    return FixedProgram(InputEncoding("analog", (1, 8, 8), scale=8.0), [pop, ro], [conv, fc],
                        Readout("out", 64.0), timesteps=2)


def test_process_count_is_populations_plus_synapses_plus_one():
    program = per_channel_program(4)  # 4 populations with 5, 6, 7 and 1 distinct decays
    plan = plan_program(program)
    assert len(program.populations) == 4 and len(program.synapses) == 5
    assert plan.process_count == 4 + 5 + 1


def test_memory_estimate_grows_with_processes_and_samples():
    plan = plan_program(conv_program(2, residual=True))
    one, many = estimate_memory_bytes(plan, 1), estimate_memory_bytes(plan, 1000)
    assert one > LAVA_BASE_BYTES + LAVA_PROCESS_BYTES * plan.process_count
    assert many > one
    assert estimate_memory_bytes(plan, 10, record=True) > estimate_memory_bytes(plan, 10)


def test_guard_refuses_too_many_processes_and_names_the_option():
    program = per_channel_program(4)
    x = random_samples(program, 2)
    with pytest.raises(DaLifError, match=r"needs 10 Lava processes .* over the limit of 9.*"
                                         r"--max-lava-processes 10"):
        run_lava(program, x, max_processes=9)
    assert check_lava_budget(plan_program(program), 2, max_processes=10)[0] == 10


def test_guard_refuses_too_much_memory_and_names_the_option():
    program = conv_program(2)
    with pytest.raises(DaLifError, match=r"estimated memory .* over the limit of 0.1 GiB.*"
                                         r"--max-lava-memory 1"):
        run_lava(program, random_samples(program, 2), max_memory_gib=0.1)


def _simulate_args(tmp_path) -> list[str]:
    save_program(digits_shaped_program(), tmp_path / "m.fxp")
    return ["simulate", str(tmp_path / "m.fxp"), "--backend", "lava", "--samples", "2"]


def test_cli_simulate_refuses_over_the_process_limit(tmp_path, capsys):
    from dalif_deploy.cli import main

    args = _simulate_args(tmp_path)
    assert main(args + ["--max-lava-processes", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Lava run: the network needs 5 Lava processes")
    assert "--max-lava-processes 5" in err and "Traceback" not in err
    assert main(args + ["--max-lava-memory", "0.01"]) == 2
    assert "over the limit of 0.01 GiB" in capsys.readouterr().err
    assert main(args[:3] + ["emulator", "--max-lava-processes", "4"]) == 2
    assert "do not apply to backend 'emulator'" in capsys.readouterr().err


@pytest.mark.lava
def test_cli_simulate_option_raises_the_limit(tmp_path, capsys):
    from dalif_deploy.cli import main

    assert main(_simulate_args(tmp_path) + ["--max-lava-processes", "5"]) == 0
    assert "lava: " in capsys.readouterr().out


def test_progress_watcher_reports_increments_and_completes(tmp_path):
    path = tmp_path / "progress"
    seen: list[int] = []
    w = _ProgressWatcher(str(path), seen.append, total=10)
    w._poll()  # no file yet: nothing
    path.write_text("4")
    w._poll()
    path.write_text("7")
    w._poll()
    w.close(finished=True)
    assert seen == [4, 3, 3]


@pytest.mark.lava
def test_streamed_run_reports_every_step():
    program = per_channel_program(4)
    x = random_samples(program, 3)
    seen: list[int] = []
    result = run_lava(program, x, progress=seen.append, timeout=240.0)
    assert sum(seen) == result.steps == lava_steps(program, 3) == 3 * program.timesteps + 4
    assert result.processes == 10
    assert np.all(np.asarray(seen) > 0)


def test_verify_fits_its_default_lava_samples_and_timeout_to_the_time_model(monkeypatch):
    """Defaults: 16 samples unless the time model says they would pass the budget (then fewer,
    said in the note); the timeout 4x the estimate, at least 600 s. Given values are kept."""
    from dalif_deploy.targets.lava import run as lava_run

    from dalif_deploy.verification import stages as verify_stages

    program = conv_program(2)
    per_sample = {"s": 1.0}
    monkeypatch.setattr(lava_run, "estimate_run_seconds",
                        lambda plan, n: 10.0 + per_sample["s"] * n)
    assert verify_stages.lava_sizing(program, None, None, 100) == (16, 600.0, None)
    assert verify_stages.lava_sizing(program, None, None, 5)[0] == 5
    per_sample["s"] = 145.0  # 16 samples: 2330 s; 4 samples fit 600 s
    n, timeout, note = verify_stages.lava_sizing(program, None, None, 100)
    assert n == 4 and timeout == 4 * (10.0 + 145.0 * 4)
    assert "Lava runs 4 of the default 16 samples" in note and "--lava-samples N" in note
    assert "timeout 2360 s" in note
    per_sample["s"] = 5000.0  # even one sample is slow: one sample, a timeout that waits
    n, timeout, note = verify_stages.lava_sizing(program, None, None, 100)
    assert n == 1 and timeout == 4 * 5010.0
    # given values stand, whatever the estimate
    assert verify_stages.lava_sizing(program, 3, 50.0, 100) == (3, 50.0, None)
    n, timeout, _ = verify_stages.lava_sizing(program, 3, None, 100)
    assert n == 3 and timeout == 4 * (10.0 + 5000.0 * 3)
    assert verify_stages.lava_sizing(program, 0, None, 100)[0] == 0


def test_memory_estimate_counts_the_channel_rings(monkeypatch):
    """Each connection's two shared-memory rings (Lava's 64 messages of int32 per neuron of its
    source and of its target) are in the estimate."""
    from dalif_deploy.targets.lava import run as lava_run

    plan = plan_program(conv_program(2, residual=True))
    sizes = {p.name: p.index.size for p in plan.pops} | {"input": plan.input_index.size}
    rings = sum(4 * 64 * (sizes[c.source] + sizes[c.target]) for c in plan.conns)
    n = 100  # 300 steps: every ring slot written
    full = estimate_memory_bytes(plan, n)
    monkeypatch.setattr(lava_run, "LAVA_CHANNEL_SLOTS", 0)
    assert full - estimate_memory_bytes(plan, n) == rings
