"""Graphs in the exact shape snnTorch 1.0.0 and Sinabs 3.1.3 wrote them in the runs of
docs/MEASURED.md ("Foreign exporters, measured"), generated here with nir alone: float32
parameters, full-shape neuron tensors, a Conv2d with an int64 ``input_shape``, Flatten from
dim 0, nodes named by position. Each runs with ``--from`` on the nir and norse backends on
digits-events and must give the predictions of an independent numpy simulation of the
framework's own equations, wherever NIR can say what the framework did; where it cannot
(snnTorch Synaptic's reset, Sinabs' multi-spike LIF), the reading says so, and the fixed-point
program quantised from the graph must stay close to the nir backend (bound stated per test).
"""

from __future__ import annotations

import numpy as np
from helpers.foreign_exported import (
    DT,
    _run,
    _write,
    assert_framework_predictions,
    sinabs_lif_mlp,
    sinabs_lif_reference,
    snntorch_conv,
    snntorch_conv_reference,
    snntorch_synaptic,
    snntorch_synaptic_reference,
)

from dalif_deploy.cli import main

# --- snnTorch: Conv2d -> Leaky -> Flatten -> Linear -> Leaky --------------------------------









def test_snntorch_conv_on_events(tmp_path, events, capsys):
    """nir and norse equal snnTorch; the emulator of its quantised program agrees with the nir
    backend on at least 90 % of the samples (measured on the trained nets: 96-99 %)."""
    ds, npz, train, train_npz = events
    nodes, p = snntorch_conv(np.random.default_rng(5), train)
    g = tmp_path / "snn_conv.nir"
    want = snntorch_conv_reference(p, ds.x)
    assert_framework_predictions(nodes, g, npz, "snntorch", want, "subtract reset")
    assert main(["quantize", str(g), "-o", str(tmp_path / "m.fxp"), "--from", "snntorch",
                 "-T", "8", "--encoding", "events", "--calibrate", str(train_npz),
                 "--calibration-samples", "64"]) == 0
    fixed = _run(tmp_path / "m.fxp", "emulator", npz)
    agree = np.mean(np.array(fixed["predictions"]) == want)
    assert agree >= 0.9, agree
    assert "subtract reset" in capsys.readouterr().err


# --- snnTorch: Synaptic (CubaLIF) ----------------------------------------------------------





def test_snntorch_synaptic_graph_as_plain_nir(tmp_path, events):
    """Read as plain NIR (``--from nir --dt 1e-4``: NIR's CubaLIF resets v in the spike's step
    and integrates the next input), nir and norse run it exactly; snnTorch's own reset (a step
    at 0 after each spike, ``--from snntorch``) differs: tests/test_foreign_firing.py."""
    ds, npz, train, _ = events
    nodes, p = snntorch_synaptic(np.random.default_rng(6), train)
    as_nir = snntorch_synaptic_reference(p, ds.x, refractory=False)
    g = _write(tmp_path / "snn_syn.nir", nodes)
    for backend in ("nir", "norse"):
        res = _run(g, backend, npz, "--from", "nir", "--dt", str(DT))
        assert res["predictions"] == as_nir.tolist(), backend
    assert snntorch_synaptic_reference(p, ds.x, refractory=True).tolist() != as_nir.tolist()


# --- Sinabs: Flatten -> Linear -> LIF -> Linear -> LIF -------------------------------------





def test_sinabs_lif_mlp_equals_sinabs_and_names_its_multi_spike(tmp_path, events, capsys):
    """Exact decay through --from sinabs: nir and norse equal Sinabs. Sinabs' default LIF fires
    several spikes per step with a subtract reset; NIR's LIF cannot say so, and the reading now
    names the LIF nodes too (it named only IF nodes before)."""
    ds, npz, train, _ = events
    nodes, p = sinabs_lif_mlp(np.random.default_rng(7), train)
    assert_framework_predictions(nodes, tmp_path / "sinabs_lif.nir", npz, "sinabs",
                                 sinabs_lif_reference(p, ds.x), "several spikes per step")
    assert "several spikes per step" in capsys.readouterr().err
