"""verify and simulate sharded over 2 processes (gloo on CPU) equal a single-process run.

Identity is exact: the JSON of both runs is the same dict once the wall times are left out
(``seconds`` in both, ``lava_run_seconds`` of the lava backend), and the HTML report of the
sharded run is byte for byte the report the single-process result renders with those times.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.parallel import World, local_threads
from dalif_deploy.cli import main

ROOT = REPO_ROOT
CKPT = ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


@pytest.mark.parametrize("n,batch,size", [(450, 128, 2), (50, 16, 2), (50, 20, 2), (5, 16, 2),
                                          (0, 8, 3), (100, 7, 3), (9, 1, 4)])
def test_shards_are_contiguous_whole_batches_covering_every_sample(n, batch, size):
    shards = [World(r, size, r, size).shard(n, batch) for r in range(size)]
    assert shards[0].start == 0 and shards[-1].stop == n
    for a, b in zip(shards, shards[1:], strict=False):
        assert a.stop == b.start  # contiguous, in rank order: gathering keeps data set order
    for s in shards:
        assert s.start % batch == 0 or s.start == n  # (an empty shard past the last batch)
        assert s.stop % batch == 0 or s.stop == n
    counts = [-(-(s.stop - s.start) // batch) for s in shards]
    assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True)
    if n:
        assert shards[0].stop > 0  # rank 0 holds batch 0 (the report's raster)


def test_each_local_process_gets_its_share_of_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert local_threads(1) == cores and local_threads(2) == max(1, cores // 2)
    assert local_threads(4 * cores) == 1


def _program(tmp: Path) -> Path:
    nir, fxp = tmp / "digits-cnn.nir", tmp / "digits-cnn.fxp"
    assert main(["export", str(CKPT), "-o", str(nir)]) == 0
    assert main(["quantize", str(nir), "-o", str(fxp)]) == 0
    return fxp


#: (backend, model file key, samples, batch size): shards of unequal sizes
SIMULATIONS = [("emulator", "fxp", 50, 16), ("torch", "pt", 50, 20), ("emulator", "fxp", 5, 16)]


def _simulations(files: dict[str, str]) -> list[dict]:
    from dalif_deploy.targets.registry import simulate

    return [simulate(files[key], backend, samples=n, batch_size=bs, progress=False)
            for backend, key, n, bs in SIMULATIONS]


def _worker(files: dict[str, str], out: str) -> None:
    """One rank of a torchrun launch (this file run as a script): simulate, then an error on
    rank 1 only; each rank pickles what it got."""
    from dalif_deploy.base.parallel import current, start, stop

    world = start("cpu")  # WORLD_SIZE, RANK, ... from torchrun
    try:
        assert current() == world and world.size == 2
        results = _simulations(files)

        def fails_on_rank_1() -> int:
            if world.rank == 1:
                raise DaLifError("bad batch on rank 1")
            return world.rank

        try:  # an error on one rank reaches every rank (none waits for the failed one)
            world.gather_call(fails_on_rank_1)
        except DaLifError as e:
            results.append(str(e))
    finally:
        stop()
    with open(f"{out}.{world.rank}", "wb") as f:
        pickle.dump(results, f)


def _without_times(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("seconds", "lava_run_seconds")}


def test_simulate_on_2_processes_equals_one_process(tmp_path):
    files = {"fxp": str(_program(tmp_path)), "pt": str(CKPT)}
    single = _simulations(files)
    out = str(tmp_path / "result")
    # a launch of its own (not multiprocessing in this process: later tests count on
    # multiprocessing's process numbering)
    run = _torchrun(__file__, json.dumps(files), out, cwd=tmp_path, module=False)
    assert run.returncode == 0, run.stderr[-3000:]
    for rank in (0, 1):  # every rank returns the whole result
        with open(f"{out}.{rank}", "rb") as f:
            sharded = pickle.load(f)
        assert sharded.pop() == "bad batch on rank 1"
        for a, b in zip(single, sharded, strict=True):
            assert _without_times(a) == _without_times(b)
    assert len(single[0]["predictions"]) == 50 and "activity" in single[0]


def _torchrun(*argv: str, cwd: Path, module: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m dalif_deploy ARGV`` (``module=False``: a script)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    if not module:  # the script imports test helpers beside it
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]),
                                             *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", *(["-m", "dalif_deploy"] if module else []),
                           *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_verify_under_torchrun_writes_the_single_process_json_and_report(tmp_path):
    """torchrun --nproc-per-node 2 -m dalif_deploy verify: rank 0 alone prints and writes; the
    JSON and the report are those of one process (times aside)."""
    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.verification.files import verify_file
    from dalif_deploy.verification.pipeline import VerifyOptions, write_report

    data = tmp_path / "data"
    data.mkdir()
    digits = load_dataset("digits", "test").head(96)  # 3 batches of 32: shards of 2 and 1
    np.savez(data / "digits96.npz", x=digits.x, y=digits.y, encoding="analog")
    args = ["--dataset", str(data / "digits96.npz"), "--lava-samples", "0", "--batch-size", "32"]
    run = _torchrun("verify", str(CKPT), *args, "--json", "sharded.json", "--report",
                    "sharded.html", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("PASSED") == 1 and "sharded over 2 processes" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sharded.html", "sharded.json"]
    sharded = json.loads((tmp_path / "sharded.json").read_text())
    result, artefacts = verify_file(CKPT, dataset=str(data / "digits96.npz"), options=(
        VerifyOptions(lava_samples=0, batch_size=32, progress=False)))
    assert sharded["samples"] == 96 and sharded["seconds"].keys() == result["seconds"].keys()
    single = json.loads(json.dumps(result, default=lambda o: np.asarray(o).tolist()))
    assert _without_times(sharded) == _without_times(single)
    result["seconds"] = sharded["seconds"]
    write_report(result, artefacts, tmp_path / "single.html")
    assert (tmp_path / "single.html").read_text() == (tmp_path / "sharded.html").read_text()


def test_commands_that_do_not_shard_refuse_to_run_under_torchrun(monkeypatch, capsys, tmp_path):
    """train/export/... started N times by torchrun would each do all the work: exit 2."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["export", str(CKPT), "-o", str(tmp_path / "m.nir")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: export runs in one process; under torchrun only simulate and verify "
                   "shard their data: run it without torchrun"]
    assert not (tmp_path / "m.nir").exists()


def test_joined_runs_of_consecutive_shards_equal_one_run():
    """FixedPointResult.join (the calibration's sharded emulator runs): traces, counts, final
    v and counters of two shards joined equal one run over all the samples."""
    from dalif_deploy.targets.emulator import emulate
    from dalif_deploy.targets.protocol import FixedPointResult
    from helpers.emulator_reference import assert_same_run
    from helpers.programs import program_and_input

    prog, x = program_and_input("conv", "events", 3)
    whole = emulate(prog, x, record=True, check=False)
    parts = [emulate(prog, x[:2], record=True, check=False),
             emulate(prog, x[2:], record=True, check=False)]
    joined = FixedPointResult.join(parts)
    assert_same_run(whole, joined)
    assert whole.spike_totals.keys() == joined.spike_totals.keys()
    for k, tot in whole.spike_totals.items():
        assert np.array_equal(tot, joined.spike_totals[k]), k
    assert whole.u_wraps and sum(whole.u_wraps.values()) == sum(
        sum(p.u_wraps.values()) for p in parts)


if __name__ == "__main__":  # a rank of test_simulate_on_2_processes_equals_one_process
    _worker(json.loads(sys.argv[1]), sys.argv[2])
