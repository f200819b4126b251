"""NeuroBench 2.3.0's cost metrics of a :class:`~dalif_deploy.fixedpoint.program.FixedProgram`,
from the same spike counts as the Loihi cost model (:mod:`dalif_deploy.fixedpoint.cost`).

NeuroBench (``neurobench.metrics``) measures a torch model through hooks; the definitions,
restated here on a program's synapses and per-neuron spike counts (docs/metrics.md):

* ``SynapticOperations`` (``metrics/workload/synaptic_operations.py`` with
  ``metrics/utils/layers/macs.py::stateless_layer_macs``): each call of a Linear/Conv layer
  counts ``binary_layer(binary_input).sum()`` with the bias zeroed - one operation per pair
  (nonzero input element, nonzero weight) that meets at an in-bounds tap. A layer whose input
  values all lie in {-1, 0, 1} (``metrics/utils/layers/input.py::binary_inputs``) adds ACs,
  else MACs; ``Dense`` counts every in-bounds pair (inputs and weights all ones). Summed over
  the steps, divided by the samples. Here: ``sum_j nonzero_inputs_j * nonzero_fan_out_j`` per
  synapse, ``nonzero_fan_out_j`` = the nonzero weights a source element meets.
* ``ActivationSparsity``: zero outputs of the activation (neuron) layers over all their
  outputs, every layer, step and sample: ``1 - spikes / (spiking neurons * T)``.
* ``ConnectionSparsity`` (``metrics/static/connection_sparsity.py``): zero weights over all
  weights of the Linear/Conv layers (kernel entries; NeuroBench rounds it to 4 decimals).
* ``Footprint`` (``metrics/static/footprint.py``): bytes of the parameters and buffers,
  ``numel * element_size`` (:func:`torch_footprint_bytes`). A program holds integers of its
  own widths: its footprint is its weights at ``weight_bits`` and its bias mantissas at 13 bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dalif_deploy.base.encoding import ANALOG

from .limits import BIAS_MANT_MAX
from .program import FixedProgram, Synapse

__all__ = ["NEUROBENCH_VERSION", "neurobench_metrics", "nonzero_fan_out",
           "torch_connection_sparsity", "torch_footprint_bytes"]

#: the NeuroBench release whose definitions these are
NEUROBENCH_VERSION = "2.3.0"
_BIAS_BITS = int(BIAS_MANT_MAX).bit_length() + 1  # the signed mantissa: 13 bits


def _tap_rows(n_in: int, n_out: int, k: int, s: int, p: int) -> np.ndarray:
    """``R[i, t]``: the outputs whose tap ``t`` reads input ``i`` (0 or 1) along one axis."""
    r = np.zeros((n_in, k), np.int64)
    for t in range(k):
        pos = np.arange(n_out) * s - p + t
        np.add.at(r[:, t], pos[(pos >= 0) & (pos < n_in)], 1)
    return r


def nonzero_fan_out(s: Synapse) -> np.ndarray:
    """Per source element (source shape): the nonzero weights it meets at in-bounds taps, i.e.
    NeuroBench's effective operations of one nonzero input element."""
    nz = (np.asarray(s.weights) != 0).astype(np.int64)
    if s.kind == "dense":
        return nz.sum(0).reshape(s.input_shape)
    c_out, c_in_g, kh, kw = nz.shape
    (c_in, h, w), (_, oh, ow) = s.input_shape, s.output_shape
    # input channel c belongs to group c // c_in_g and meets that group's output channels
    per_in = nz.reshape(s.groups, c_out // s.groups, c_in_g, kh, kw).sum(1).reshape(c_in, kh, kw)
    ry = _tap_rows(h, oh, kh, s.stride[0], s.padding[0])
    rx = _tap_rows(w, ow, kw, s.stride[1], s.padding[1])
    return np.einsum("ckl,yk,xl->cyx", per_in, ry, rx)


def _in_bounds_pairs(s: Synapse) -> int:
    """NeuroBench's ``Dense`` count of one call: every in-bounds (input, weight) pair."""
    if s.kind == "dense":
        return int(np.asarray(s.weights).size)
    ones = Synapse(s.name, s.source, s.target, s.kind, np.ones_like(s.weights), stride=s.stride,
                   padding=s.padding, groups=s.groups, input_shape=s.input_shape,
                   output_shape=s.output_shape)
    return int(nonzero_fan_out(ones).sum())


def _effective(s: Synapse, active: float | np.ndarray) -> float:
    a = np.asarray(active, dtype=np.float64)
    fan = nonzero_fan_out(s)
    if a.ndim == 0:  # a population total: the mean fan-out (as the cost model does)
        return float(a) * (float(fan.mean()) if fan.size else 0.0)
    return float(np.sum(a.reshape(fan.shape) * fan))


def program_footprint_bytes(program: FixedProgram) -> int:
    """Bytes of the program's parameters at their integer widths: each synapse's kernel
    entries at ``weight_bits`` and each population's bias mantissas at 13 bits."""
    bits = sum(int(np.asarray(s.weights).size) * int(s.weight_bits) for s in program.synapses)
    bits += sum(int(np.asarray(p.bias_mant).size) * _BIAS_BITS for p in program.populations)
    return math.ceil(bits / 8)


def neurobench_metrics(program: FixedProgram, spikes: Mapping[str, float | np.ndarray],
                       inputs: float | np.ndarray, *, spikes_from: str = "fixed-point emulator",
                       loihi_synops: float | None = None) -> dict[str, Any]:
    """NeuroBench's metrics per sample from per-neuron spikes per inference by population and
    the nonzero input elements per inference (``cost.input_spikes``), as :func:`cost.activity`
    takes them (a multi-spike population's: the steps it sent a count, its nonzero values).
    The input is ACs for binary event input, MACs for analog frames; a multi-spike population's
    synapses are MACs (its values are counts, not 0/1)."""
    binary_input = program.input.encoding is not ANALOG
    macs = acs = dense = 0.0
    for s in program.synapses:
        active = inputs if s.source == "input" else spikes.get(s.source)
        if active is None:
            continue  # a non-spiking source (the readout) sends nothing
        ops = _effective(s, active)
        graded = (not binary_input if s.source == "input"
                  else program.population(s.source).multi_spike)  # counts: non-binary values
        if graded:
            macs += ops
        else:
            acs += ops
        dense += _in_bounds_pairs(s) * program.timesteps
    spiking = [p for p in program.populations if p.name != program.readout.population]
    outputs = sum(int(np.prod(p.shape)) for p in spiking) * program.timesteps
    fired = sum(float(np.sum(spikes[p.name])) for p in spiking if p.name in spikes)
    entries = sum(int(np.asarray(s.weights).size) for s in program.synapses)
    zeros = sum(int(np.sum(np.asarray(s.weights) == 0)) for s in program.synapses)
    out: dict[str, Any] = {
        "definitions": f"NeuroBench {NEUROBENCH_VERSION}", "spikes_from": spikes_from,
        "effective_macs": macs, "effective_acs": acs, "synaptic_operations": macs + acs,
        "dense_synaptic_operations": dense,
        "activation_sparsity": 1.0 - fired / outputs if outputs else 0.0,
        "connection_sparsity": zeros / entries if entries else 0.0,
        "footprint_bytes": program_footprint_bytes(program),
    }
    if loihi_synops is not None:
        out["loihi_synops"] = loihi_synops
    return out


def torch_footprint_bytes(model: Any) -> int:
    """NeuroBench's ``Footprint`` of a torch module: parameters and buffers,
    ``numel * element_size``."""
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def torch_connection_sparsity(model: Any) -> float:
    """NeuroBench's ``ConnectionSparsity`` of a torch module (unrounded): zero weights over all
    weights of its Linear and Conv1d/2d/3d layers."""
    from torch import nn

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d,
                                                           nn.Conv3d))]
    total = sum(m.weight.numel() for m in layers)
    return float(sum(int((m.weight == 0).sum()) for m in layers) / total) if total else 0.0
