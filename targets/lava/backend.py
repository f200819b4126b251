"""``dalif-deploy simulate model.fxp --backend lava``: the Lava backend (same JSON as the emulator).

Samples stream through one compiled Lava network per chunk of ``batch_size`` samples; each
chunk runs under the watchdog with ``timeout`` seconds. The progress bar counts Lava steps done
out of all chunks' steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dalif_deploy.targets.options import LAVA_OPTIONS
from dalif_deploy.targets.protocol import BackendRun, ModelInput
from tqdm import tqdm

from .lower import plan_program
from .run import (
    MAX_LAVA_MEMORY_GIB,
    MAX_LAVA_PROCESSES,
    check_lava_budget,
    lava_steps,
    run_lava,
)


class LavaBackend:
    """Run a fixed-point program on Lava; reports the emulator backend's keys.

    ``outputs`` is each sample's raw integer readout, ``spike_counts`` each sample's spike
    total per spiking population (``populations`` order), so two backends compare sample by
    sample; ``input_clipped`` counts analog input values the input encoding clipped (as the
    emulator's). ``timeout`` bounds each compiled run (one chunk of ``batch_size`` samples);
    ``max_lava_processes`` / ``max_lava_memory`` (GiB) refuse a chunk's network beforehand when
    it needs more Lava processes or more estimated memory (:func:`.run.check_lava_budget`).
    """

    name = "lava"
    kind = "program"
    options = LAVA_OPTIONS

    def __init__(self, model_path: str, *, timeout: float = 600.0,
                 max_lava_processes: int = MAX_LAVA_PROCESSES,
                 max_lava_memory: float = MAX_LAVA_MEMORY_GIB) -> None:
        from dalif_deploy.fixedpoint.fxp_format import load_program

        self.program = load_program(model_path)
        self.timeout = timeout
        self.limits = {"max_processes": max_lava_processes, "max_memory_gib": max_lava_memory}
        p = self.program
        self.input = ModelInput(p.input.kind, p.input.shape, p.timesteps,
                                p.metadata.get("dataset"), p.classes)

    def run(self, data: Any, *, batch_size: int, progress: bool) -> BackendRun:
        program, x = self.program, data.x
        step = max(1, int(batch_size))
        outs, counts, names, lava_seconds, clipped = [], [], [], 0.0, 0
        starts = range(0, len(x), step)
        if len(x):  # refuse before any progress is shown (run_lava checks each chunk again)
            check_lava_budget(plan_program(program), min(step, len(x)), **self.limits)
        total = sum(lava_steps(program, len(x[i:i + step])) for i in starts)
        with tqdm(total=total, desc="lava", unit="step", disable=not progress) as bar:
            for i in starts:
                r = run_lava(program, x[i:i + step], timeout=self.timeout, **self.limits,
                             progress=bar.update)
                outs.append(r.outputs)
                counts.append(r.spike_counts)
                names, lava_seconds = r.spiking, lava_seconds + r.seconds
                clipped += r.input_clipped
        outputs = np.concatenate(outs) if outs else np.zeros((0, 0), np.int64)
        preds = outputs.argmax(1) if len(outputs) else np.zeros(0, np.int64)
        return BackendRun(preds, {
            "lava_run_seconds": lava_seconds, "timesteps": program.timesteps,
            "outputs": outputs.tolist(), "populations": names,
            "spike_counts": (np.concatenate(counts) if counts else np.zeros((0, 0))).tolist(),
            "samples_per_compiled_run": step, "input_clipped": clipped})

    def merge(self, data: Any, runs: list[BackendRun]) -> BackendRun:
        """Consecutive shards' runs (``torchrun``) joined in order: per-sample lists
        concatenated, clipped values and Lava run seconds (of all shards) added. Each shard
        runs its own Lava networks: the run guard's limits apply per process."""
        ex = [r.extras for r in runs]
        return BackendRun(np.concatenate([np.asarray(r.predictions) for r in runs]), {
            **ex[0], "lava_run_seconds": sum(e["lava_run_seconds"] for e in ex),
            "outputs": [o for e in ex for o in e["outputs"]],
            "spike_counts": [c for e in ex for c in e["spike_counts"]],
            "input_clipped": sum(e["input_clipped"] for e in ex)})
