"""Both shipped digits programs on Lava equal the synchronous emulator exactly.

The programs are built here from dalif_deploy/checkpoints (export -> NIR -> 8-bit quantiser,
calibrated on training images), then a handful of test images stream through one compiled Lava
network. Every population's spikes at every step and its final v, every sample, must equal the
emulator's (exact integers), and so must the readout outputs and spike counts.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.programs import digits_program, with_per_channel_decays

pytestmark = pytest.mark.lava

N_SAMPLES = 6


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet", "digits-cnn-channel"])
def test_digits_program_parity(name, tmp_path):
    from dalif_deploy.targets.emulator import emulate
    from dalif_deploy.targets.lava import run_lava
    from dalif_deploy.targets.lava.lower import plan_program

    from dalif_deploy.datasets.loaders import load_dataset

    if name.endswith("-channel"):
        program = with_per_channel_decays(digits_program(name.removesuffix("-channel"), tmp_path))
        assert [np.unique(p.dv).size for p in program.populations] == [16, 32, 1]
    else:
        program = digits_program(name, tmp_path)
    plan = plan_program(program)
    assert plan.process_count == len(program.populations) + len(program.synapses) + 1
    x = load_dataset("digits", split="test").x[:N_SAMPLES]
    result = run_lava(program, x, timeout=240.0)
    emu = emulate(program, x, mode="sync", record=True)
    for p in program.populations:
        np.testing.assert_array_equal(result.spikes[p.name], emu.spikes[p.name].astype(bool),
                                      err_msg=f"{name}: spikes of {p.name}")
        np.testing.assert_array_equal(result.final_v[p.name], emu.v[p.name][-1],
                                      err_msg=f"{name}: final v of {p.name}")
    np.testing.assert_array_equal(result.outputs, emu.outputs)
    np.testing.assert_array_equal(result.spike_counts, emu.spike_counts)
    assert result.spike_counts.sum(0).min() > 0, "some layer never spikes: weak test"


def test_cli_simulate_lava_matches_emulator_sample_by_sample(tmp_path):
    """`simulate --backend lava` and `--backend emulator` on the same program: the JSON's
    raw readout integers and per-layer spike counts are equal for every sample."""
    import json

    from dalif_deploy.cli import main
    from dalif_deploy.fixedpoint.fxp_format import save_program

    save_program(digits_program("digits-cnn", tmp_path), tmp_path / "m.fxp")
    out = {}
    for backend in ("emulator", "lava"):
        assert main(["simulate", str(tmp_path / "m.fxp"), "--backend", backend, "--samples",
                     "5", "--json", str(tmp_path / f"{backend}.json")]) == 0
        out[backend] = json.loads((tmp_path / f"{backend}.json").read_text())
    emu, lava = out["emulator"], out["lava"]
    assert lava["samples"] == emu["samples"] == 5
    assert lava["outputs"] == emu["outputs"] and lava["spike_counts"] == emu["spike_counts"]
    assert lava["predictions"] == emu["predictions"]
    assert lava["populations"] == emu["populations"]
    assert lava["input_clipped"] == emu["input_clipped"]  # clipping reported by both
    assert min(map(min, emu["spike_counts"])) > 0
