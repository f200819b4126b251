"""``dalif-deploy simulate model.fxp --backend lava``: the Lava backend (same JSON as the emulator).

Samples stream through one compiled Lava network per chunk of ``batch_size`` samples; each
chunk runs under the watchdog with ``timeout`` seconds. The progress bar counts Lava steps done
out of all chunks' steps.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from tqdm import tqdm

from dalif_deploy.errors import DaLifError

from .lower import plan_program
from .run import (
    MAX_LAVA_MEMORY_GIB,
    MAX_LAVA_PROCESSES,
    check_lava_budget,
    lava_steps,
    run_lava,
)


def simulate(model_path: str, *, dataset: str | None, split: str = "test",
             samples: int | None = None, batch_size: int = 256,
             data_dir: str | None = None, progress: bool = True,
             timeout: float = 600.0, max_lava_processes: int = MAX_LAVA_PROCESSES,
             max_lava_memory: float = MAX_LAVA_MEMORY_GIB, **opts: Any) -> dict:
    """Run a fixed-point program on Lava; return the emulator backend's JSON keys.

    ``outputs`` is each sample's raw integer readout, ``spike_counts`` each sample's spike
    total per spiking population (``populations`` order), so two backends compare sample by
    sample; ``input_clipped`` counts analog input values the input encoding clipped (as the
    emulator's). ``timeout`` bounds each compiled run (one chunk of ``batch_size`` samples);
    ``max_lava_processes`` / ``max_lava_memory`` (GiB) refuse a chunk's network beforehand when
    it needs more Lava processes or more estimated memory (:func:`.run.check_lava_budget`).
    """
    from dalif_deploy.targets.emulator import input_clip_count

    from dalif_deploy.backends import backend_result, load_for_model
    from dalif_deploy.program import load_program

    if opts:
        raise DaLifError(f"the lava backend takes no options {sorted(opts)}")
    program = load_program(model_path)
    ds = load_for_model(model_path, dataset, split, data_dir, samples,
                        encoding=program.input.kind, input_shape=program.input.shape,
                        timesteps=program.timesteps, made_for=program.metadata.get("dataset"))
    x = ds.x
    step = max(1, int(batch_size))
    outs, counts, names, lava_seconds = [], [], [], 0.0
    t0 = time.perf_counter()
    starts = range(0, len(x), step)
    if len(x):  # refuse before any progress is shown (run_lava checks each chunk again)
        check_lava_budget(plan_program(program), min(step, len(x)),
                          max_processes=max_lava_processes, max_memory_gib=max_lava_memory)
    total = sum(lava_steps(program, len(x[i:i + step])) for i in starts)
    with tqdm(total=total, desc="lava", unit="step", disable=not progress) as bar:
        for i in starts:
            r = run_lava(program, x[i:i + step], timeout=timeout,
                         max_processes=max_lava_processes, max_memory_gib=max_lava_memory,
                         progress=bar.update)
            outs.append(r.outputs)
            counts.append(r.spike_counts)
            names, lava_seconds = r.spiking, lava_seconds + r.seconds
    seconds = time.perf_counter() - t0
    outputs = np.concatenate(outs) if outs else np.zeros((0, 0), np.int64)
    preds = outputs.argmax(1) if len(outputs) else np.zeros(0, np.int64)
    return backend_result(
        "lava", model_path, ds, preds, seconds, lava_run_seconds=lava_seconds,
        timesteps=program.timesteps, outputs=outputs.tolist(), populations=names,
        spike_counts=(np.concatenate(counts) if counts else np.zeros((0, 0))).tolist(),
        samples_per_compiled_run=step, input_clipped=input_clip_count(program, x))
