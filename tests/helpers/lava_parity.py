"""Lava against the emulator, shared by the Lava tests (tests/targets/test_lava_*.py)."""

from __future__ import annotations

import numpy as np

#: the watchdog timeout of the Lava runs in these tests (a safety net: they take seconds)
TIMEOUT = 240.0


def assert_parity(program, x, result):
    """Lava equals the synchronous emulator exactly: spikes and final v, every population,
    every sample; outputs and spike counts too."""
    from dalif_deploy.targets.emulator import emulate

    emu = emulate(program, x, mode="sync", record=True)
    spikes = {k: v.astype(bool) for k, v in emu.spikes.items()}
    for p in program.populations:
        np.testing.assert_array_equal(result.spikes[p.name], spikes[p.name], err_msg=p.name)
        np.testing.assert_array_equal(result.final_v[p.name], emu.v[p.name][-1], err_msg=p.name)
    np.testing.assert_array_equal(result.outputs, emu.outputs)
    np.testing.assert_array_equal(result.spike_counts, emu.spike_counts)
    assert result.spiking == emu.spiking
    return spikes, emu.v, emu.u
