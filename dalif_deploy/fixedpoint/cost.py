"""Resource and cost model of a :class:`~dalif_deploy.fixedpoint.program.FixedProgram` on Loihi 2.

Three questions, each answered as a JSON-able dict (every number an ESTIMATE; the figures are
:class:`~dalif_deploy.fixedpoint.hardware.Hardware`'s, sourced in docs/HARDWARE.md and overridable):

* :func:`resources` - the mapping: neurons, synapses (kernel entries and hardware synapses,
  named apart), fan-in/fan-out, synaptic memory in the weight format used, the cores each
  population needs under each per-core limit, which limit binds, total cores and chips.
* :func:`activity` - synaptic operations and neuron updates per inference from measured spike
  counts, and the latency in steps (``T + D``: Lava's one step per synapse, :mod:`timing`).
* :func:`energy` - energy per inference from per-operation Loihi figures, and beside it the
  45 nm accumulate / multiply-accumulate estimate SNN papers use, for the SNN and an ANN.

Weight formats (memory per synapse, ``b`` = weight bits): dense ``N_in * N_out * b``; sparse
(a dense synapse with few nonzeros) ``nnz * (b + index_bits)``, ``index_bits =
ceil(log2(neurons_per_core))``, whichever of the two is smaller; conv: the kernel entries
``C_out * C_in/g * kH * kW * b``, shared by every output position and held once on every core
of the target. A synaptic operation is one synapse visited by one spike: ``SynOps = sum over
source neurons j of spikes_j * fan_out_j`` (all stored synapses, zeros included, for dense and
conv; the nonzeros for sparse).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dalif_deploy.base.encoding import ANALOG
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import counted

from .hardware import Hardware, hardware
from .program import FixedProgram, Synapse
from .timing import synaptic_depths

__all__ = ["Hardware", "activity", "cost_line", "cost_report", "cost_rows", "energy", "hardware",
           "input_spikes", "resources"]


# ---------------------------------------------------------------------------------------------
# Synapse geometry: structural connections, hardware synapses, fan-in and fan-out.


def _taps(n_in: int, n_out: int, k: int, s: int, p: int) -> np.ndarray:
    """``M[o, t] = 1`` where output ``o`` reads input ``o*s - p + t`` inside ``[0, n_in)``."""
    pos = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :]
    return ((pos >= 0) & (pos < n_in)).astype(np.int64)


def _fan_out_axis(n_in: int, taps: np.ndarray, s: int, p: int) -> np.ndarray:
    """How many (output, tap) pairs read each input index along one axis."""
    out = np.zeros(n_in, np.int64)
    o, t = np.nonzero(taps)
    np.add.at(out, o * s - p + t, 1)
    return out


@dataclass
class _SynGeom:
    syn: Synapse
    fmt: str  # dense | sparse | conv
    connections: int  # structural synapses (every in-bounds tap; MACs of the ANN layer)
    nonzero: int  # hardware synapses with a nonzero weight
    fan_in_max: int  # structural synapses into one target neuron
    fan_in_nonzero_max: int
    fan_out: np.ndarray  # synapses visited per spike of each source neuron (source shape)
    memory_bits: int
    shared: bool  # conv: the kernel is held on every core of the target

    def to_dict(self) -> dict[str, Any]:
        s = self.syn
        return {"name": s.name, "source": s.source, "target": s.target, "kind": s.kind,
                "format": self.fmt, "weight_bits": s.weight_bits,
                "kernel_entries": int(s.weights.size),
                "kernel_entries_nonzero": int(np.count_nonzero(s.weights)),
                "synapses": self.connections, "synapses_nonzero": self.nonzero,
                "fan_in_max": self.fan_in_max, "fan_in_nonzero_max": self.fan_in_nonzero_max,
                "fan_out_max": int(self.fan_out.max(initial=0)),
                "fan_out_mean": float(self.fan_out.mean()) if self.fan_out.size else 0.0,
                "memory_bits": self.memory_bits,
                "memory_per_core": "every core of the target" if self.shared else "split"}


def _geometry(s: Synapse, hw: Hardware) -> _SynGeom:
    nz = s.weights != 0
    b = s.weight_bits
    if s.kind == "dense":
        n_out, n_in = s.weights.shape
        dense_bits, sparse_bits = n_in * n_out * b, int(nz.sum()) * (b + hw.index_bits)
        fmt = "dense" if dense_bits <= sparse_bits else "sparse"
        fan_out = (np.full(n_in, n_out, np.int64) if fmt == "dense"
                   else nz.sum(0).astype(np.int64)).reshape(s.input_shape)
        return _SynGeom(s, fmt, n_in * n_out, int(nz.sum()), n_in,
                        int(nz.sum(1).max(initial=0)), fan_out, min(dense_bits, sparse_bits),
                        False)
    c_out, c_in_g, kh, kw = s.weights.shape
    (c_in, h, w), (_, oh, ow) = s.input_shape, s.output_shape
    my = _taps(h, oh, kh, s.stride[0], s.padding[0])
    mx = _taps(w, ow, kw, s.stride[1], s.padding[1])
    cy, cx = my.sum(0), mx.sum(0)  # outputs reached per tap
    nonzero = int(np.einsum("oikl,k,l->", nz.astype(np.int64), cy, cx))
    fan_in = int(c_in_g * my.sum(1).max(initial=0) * mx.sum(1).max(initial=0))
    nz_in = np.einsum("okl,yk,xl->oyx", nz.sum(1).astype(np.int64), my, mx)
    fy = _fan_out_axis(h, my, s.stride[0], s.padding[0])
    fx = _fan_out_axis(w, mx, s.stride[1], s.padding[1])
    per_channel = c_out // s.groups  # output channels each input channel feeds
    fan_out = np.broadcast_to(per_channel * np.outer(fy, fx), (c_in, h, w)).astype(np.int64)
    return _SynGeom(s, "conv", int(c_out * c_in_g * (cy.sum() * cx.sum())), nonzero, fan_in,
                    int(nz_in.max(initial=0)), fan_out, int(s.weights.size) * b, True)


# ---------------------------------------------------------------------------------------------
# Mapping.


def _place(program: FixedProgram, hw: Hardware) -> tuple[dict[str, _SynGeom], list[dict]]:
    """Synapse geometry and, per population, the cores each per-core limit needs.

    ``load_by_limit``: cores' worth of each resource (a fraction below one core); the limit of
    the largest load binds, ``cores = ceil(max load)``. The loads:

    ``memory``: ``ceil((n * state_bits + split synapse bits) / (core_bits - shared bits))``;
    ``neurons``: ``ceil(n / neurons_per_core)``; ``axons_in``: a core receives every source
    neuron of a dense/sparse synapse and (spatial tiling, halo ignored) ``1/k`` of a conv
    source, so ``k >= conv_sources / (axons_in_per_core - dense_sources)``; ``axons_out``: a
    neuron sends one axon to each core of a dense/sparse target and one to a conv target, so
    ``k >= n * edges / axons_out_per_core``. Populations are placed targets first.
    """
    geo = {s.name: _geometry(s, hw) for s in program.synapses}
    cores: dict[str, int] = {}
    rows: dict[str, dict] = {}
    for p in reversed(program.populations):
        inc = [geo[s.name] for s in program.incoming(p.name)]
        shared = sum(g.memory_bits for g in inc if g.shared)
        split = sum(g.memory_bits for g in inc if not g.shared)
        # load[limit]: how many cores' worth of that resource the population needs
        load: dict[str, float | None] = {"neurons": p.size / hw.neurons_per_core}
        room = hw.core_memory_bits - shared
        load["memory"] = (p.size * hw.neuron_state_bits + split) / room if room > 0 else None
        whole = sum(int(np.count_nonzero(g.fan_out)) for g in inc if not g.shared)
        tiled = sum(int(np.prod(g.syn.input_shape)) for g in inc if g.shared)
        free = hw.axons_in_per_core - whole
        load["axons_in"] = (max(whole / hw.axons_in_per_core, tiled / free) if free > 0
                            else None)
        edges = sum(cores[s.target] if not geo[s.name].shared else 1
                    for s in program.synapses if s.source == p.name and not s.recurrent)
        # a recurrent synapse sends one axon to each of the population's own k cores: the
        # smallest k that holds with them (k only grows, and stops at p.size)
        own = sum(1 for s in program.incoming(p.name) if s.recurrent)
        k = 1
        while True:
            load["axons_out"] = p.size * (edges + own * k) / hw.axons_out_per_core
            need = {n: None if v is None else max(1, math.ceil(v)) for n, v in load.items()}
            fit = min(max(v for v in need.values() if v is not None), p.size)
            if fit <= k or k == p.size:
                break
            k = fit
        feasible = all(v is not None for v in need.values())
        cores[p.name] = k
        binding = max((n for n, v in load.items() if v is not None), key=lambda n: load[n] or 0)
        rows[p.name] = {
            "population": p.name, "neurons": p.size, "shape": list(p.shape),
            "synapses_in": sum(g.connections for g in inc),
            "synapses_in_nonzero": sum(g.nonzero for g in inc),
            "kernel_entries_in": sum(int(g.syn.weights.size) for g in inc),
            "fan_in_max": sum(g.fan_in_max for g in inc),
            "fan_out_max": int(sum((geo[s.name].fan_out.reshape(-1) for s in program.synapses
                                    if s.source == p.name), np.zeros(p.size, np.int64)).max(
                                        initial=0)),
            "memory_bits": p.size * hw.neuron_state_bits + split + shared * k,
            # on each of its k cores: its share of the neurons and split synapses, every
            # shared (conv) kernel whole; the memory limit bounds this by core_memory_bits
            "synaptic_memory_bits_per_core": math.ceil(split / k) + shared,
            "memory_bits_per_core": math.ceil((p.size * hw.neuron_state_bits + split) / k)
            + shared,
            "load_by_limit": {n: None if v is None else round(v, 4) for n, v in load.items()},
            "cores_by_limit": need, "cores": k, "binding_limit": binding,
            "feasible": feasible}
        if not feasible:
            bad = [n for n, v in need.items() if v is None]
            rows[p.name]["problem"] = (f"no core can hold it: the {', '.join(bad)} limit "
                                       "cannot be met by splitting the population")
    return geo, [rows[p.name] for p in program.populations]


def resources(program: FixedProgram, hw: Hardware | None = None) -> dict[str, Any]:
    """The mapping of ``program`` onto cores and chips (module docstring, :func:`_place`)."""
    hw = hw or Hardware()
    geo, pops = _place(program, hw)
    n_cores = sum(r["cores"] for r in pops)
    neurons = sum(r["neurons"] for r in pops)
    syn_nz = sum(g.nonzero for g in geo.values())
    cores = {r["population"]: r["cores"] for r in pops}
    chips = max(math.ceil(n_cores / hw.cores_per_chip),
                math.ceil(neurons / max(hw.neurons_per_chip, 1)),
                math.ceil(syn_nz / max(hw.synapses_per_chip, 1)), 1)
    return {
        "estimate": True, "hardware": hw.name, "hardware_overrides": hw.overrides(),
        "neurons": neurons,
        "synapses": sum(g.connections for g in geo.values()),
        "synapses_nonzero": syn_nz,
        "kernel_entries_nonzero": int(sum(np.count_nonzero(s.weights) for s in program.synapses)),
        "memory_bits": sum(r["memory_bits"] for r in pops),
        "cores": n_cores, "chips": chips,
        "feasible": all(r["feasible"] for r in pops),
        "populations": pops,
        "per_synapse": [{**g.to_dict(), "memory_bits_per_core": g.memory_bits if g.shared
                         else math.ceil(g.memory_bits / cores[g.syn.target])}
                        for g in geo.values()],
        "assumptions": [
            "one population per core group (no two populations share a core)",
            "conv kernels stored once on every core of their target; dense synapses as dense "
            "or sparse, whichever is smaller",
            f"neuron state {hw.neuron_state_bits} bits per neuron; axon limits and per-op "
            "figures of Loihi 1 (docs/HARDWARE.md)"],
    }


# ---------------------------------------------------------------------------------------------
# Activity and energy.


def input_spikes(program: FixedProgram, frames: np.ndarray) -> np.ndarray:
    """Mean input events per element per inference from integer frames ``[N, T, *shape]``:
    a nonzero graded (analog) value or a binary event is one message into the first layer."""
    return input_events(program, frames) / np.asarray(frames).shape[0]


def input_events(program: FixedProgram, frames: np.ndarray) -> np.ndarray:
    """Input events per element summed over the samples and steps of integer frames ``[N, T,
    *shape]`` (int64: totals of several batches add up exactly, in any order)."""
    f = np.asarray(frames)
    if f.ndim != 2 + len(program.input.shape) or f.shape[0] == 0:
        raise DaLifError(f"input frames must be [N, T, {program.input.shape}] with N >= 1")
    if f.strides[1] == 0:  # the same frame every step (a broadcast view)
        return np.count_nonzero(f[:, 0], axis=0).astype(np.int64) * f.shape[1]
    return np.count_nonzero(f, axis=(0, 1)).astype(np.int64)


def _synops(g: _SynGeom, spikes: float | np.ndarray) -> float:
    """``sum_j spikes_j * fan_out_j``; a scalar total uses the mean fan-out."""
    a = np.asarray(spikes, dtype=np.float64)
    if a.ndim == 0:
        return float(a) * (float(g.fan_out.mean()) if g.fan_out.size else 0.0)
    return float((a.reshape(-1) * g.fan_out.reshape(-1)).sum())


def activity(program: FixedProgram, spikes: Mapping[str, float | np.ndarray],
             inputs: float | np.ndarray, hw: Hardware | None = None) -> dict[str, Any]:
    """Operations per inference from spike counts per inference (mean over samples).

    ``spikes[population]``: its spike messages per inference, a total or an array of its shape
    (per-neuron counts make SynOps exact; a total uses the mean fan-out, exact for dense); a
    multi-spike population's count of n is ONE graded message (the emulator's
    ``spike_totals`` count it so);
    ``inputs``: input events per inference (:func:`input_spikes`). ``neuron_updates = n * T``
    per population; latency ``T + D`` steps, ``D`` the readout's synaptic depth (one step per
    synapse in Lava); time per step ``max over populations (SynOps per step per core * t_syn +
    neurons per core * t_neuron) + t_barrier``.
    """
    hw = hw or Hardware()
    geo, pops = _place(program, hw)
    T = program.timesteps
    src = {"input": inputs, **{k: v for k, v in spikes.items()}}
    missing = sorted({s.source for s in program.synapses} - set(src))
    if missing:
        raise DaLifError(f"activity: no spike counts for source population(s) {missing}")
    rows, step_ns = [], 0.0
    for r in pops:
        name = r["population"]
        syn = sum(_synops(geo[s.name], src[s.source]) for s in program.incoming(name))
        n_spk = None if name not in spikes else float(np.sum(spikes[name]))
        rows.append({"population": name, "spikes": n_spk, "synops_in": syn,
                     "neuron_updates": r["neurons"] * T, "cores": r["cores"]})
        step_ns = max(step_ns, syn / T / r["cores"] * hw.time_synop_ns
                      + math.ceil(r["neurons"] / r["cores"]) * hw.time_neuron_update_ns)
    depth = synaptic_depths(program)
    steps = T + depth[program.readout.population]
    step_ns += hw.time_barrier_ns
    first = sum(_synops(geo[s.name], inputs) for s in program.synapses if s.source == "input")
    messages = 0.0
    for s in program.synapses:  # one message per spike per destination core
        dest = 1 if geo[s.name].shared else next(r["cores"] for r in pops
                                                 if r["population"] == s.target)
        messages += float(np.sum(src[s.source])) * dest
    return {
        "estimate": True, "timesteps": T,
        "input_events": float(np.sum(inputs)),
        "spikes": sum(r["spikes"] or 0.0 for r in rows),
        "synops": sum(r["synops_in"] for r in rows),
        "synops_from_input": first,
        "neuron_updates": sum(r["neuron_updates"] for r in rows),
        "spike_messages": messages,
        "latency_steps": steps, "depth": depth[program.readout.population],
        "time_per_step_us": step_ns / 1000, "latency_us": steps * step_ns / 1000,
        "layers": rows,
        "assumptions": ["spike counts are the fixed-point emulator's, per inference (mean "
                        "over the samples run)",
                        "neuron updates: every neuron every step of the T steps of a sample "
                        "(streamed samples; one isolated inference runs T + D steps)",
                        "time per step: the busiest core's synaptic and neuron work plus a "
                        "barrier; per-op times of Loihi 1"],
    }


def _macs(program: FixedProgram, hw: Hardware) -> tuple[int, int]:
    """(MACs of the synapses from the input, MACs of all synapses): one ANN pass."""
    geo = {s.name: _geometry(s, hw) for s in program.synapses}
    first = sum(g.connections for g in geo.values() if g.syn.source == "input")
    return first, sum(g.connections for g in geo.values())


def _paper_snn(program: FixedProgram, act: Mapping[str, Any], hw: Hardware,
               mac_first: int) -> tuple[float, float]:
    """``(E_SNN, its first-layer MAC part)`` in nJ, 45 nm, from one activity's SynOps."""
    graded = program.input.encoding is ANALOG
    rest = act["synops"] - (act["synops_from_input"] if graded else 0.0)
    first_nj = mac_first * program.timesteps * hw.energy_mac_pj * 1e-3 if graded else 0.0
    return first_nj + rest * hw.energy_ac_pj * 1e-3, first_nj


def energy(program: FixedProgram, act: Mapping[str, Any], res: Mapping[str, Any],
           hw: Hardware | None = None, float_act: Mapping[str, Any] | None = None
           ) -> dict[str, Any]:
    """Energy per inference (ESTIMATES), in nJ.

    Loihi: ``E = SynOps * E_syn + updates * E_update + spikes * (E_active - E_update) +
    messages * E_msg + P_static * cores * latency``. Paper-style (45 nm, Horowitz 2014):
    ``E_SNN = E_MAC * MAC_first * T + E_AC * SynOps_rest`` for analog input (the first layer
    multiplies the analog frame every step; event input is accumulated: ``E_AC * SynOps``) and
    ``E_ANN = E_MAC * MACs`` (the same architecture run once). Papers quote the float SNN:
    with ``float_act`` (the float model's spikes on the program's synapses) ``snn`` is its
    figure and ``snn_fixed_point`` the emulator's beside it; without, ``snn`` is the emulator's.
    """
    hw = hw or Hardware()
    pj = 1e-3  # pJ -> nJ
    syn = act["synops"] * hw.energy_synop_pj * pj
    neu = (act["neuron_updates"] * hw.energy_neuron_update_pj
           + act["spikes"] * (hw.energy_neuron_spike_pj - hw.energy_neuron_update_pj)) * pj
    msg = act["spike_messages"] * hw.energy_spike_message_pj * pj
    static = hw.static_power_mw_per_core * res["cores"] * act["latency_us"]  # mW * us = nJ
    mac_first, macs = _macs(program, hw)
    snn_fixed, first_nj = _paper_snn(program, act, hw, mac_first)
    snn = _paper_snn(program, float_act, hw, mac_first)[0] if float_act else snn_fixed
    ann = macs * hw.energy_mac_pj * pj
    out = {
        "estimate": True, "unit": "nJ per inference",
        "loihi": {"synaptic": syn, "neuron": neu, "messages": msg, "static": static,
                  "total": syn + neu + msg + static,
                  "figures": f"{hw.name}: per-op energies of Loihi 1 (Davies et al. 2018, "
                             "pre-silicon), static power of Loihi 1 (docs/HARDWARE.md)"},
        "paper_45nm": {"snn": snn, "snn_first_layer_mac": first_nj, "ann": ann,
                       "ann_macs": macs, "first_layer_macs": mac_first,
                       "snn_vs_ann": snn / ann if ann else None,
                       "snn_fixed_point": snn_fixed,
                       "snn_synops": (float_act or act)["synops"],
                       "spikes_from": "float model" if float_act else "fixed-point emulator",
                       "figures": f"E_AC = {hw.energy_ac_pj} pJ, E_MAC = {hw.energy_mac_pj} pJ "
                                  "(Horowitz 2014, 45 nm)"},
    }
    from dalif_deploy.base.schema import non_finite

    bad = non_finite(out)  # a derived figure is checked as well as the figures it comes from
    if bad is not None:
        raise DaLifError(f"the energy estimate's {bad} is not a finite number with these "
                         f"hardware figures ({hw.overrides() or 'the defaults'}); give smaller "
                         "figures (--hw, --hardware)")
    return out


def cost_report(program: FixedProgram, spikes: Mapping[str, float | np.ndarray] | None = None,
                inputs: float | np.ndarray | None = None, hw: Hardware | None = None,
                float_spikes: Mapping[str, float | np.ndarray] | None = None
                ) -> dict[str, Any]:
    """``{"resources": ..., "activity": ..., "energy": ...}``; without spike counts only the
    resources. ``float_spikes``: the float model's spikes per inference for every spiking
    population (as ``spikes``), for the 45 nm estimate papers quote (:func:`energy`)."""
    hw = hw or Hardware()
    res = resources(program, hw)
    if spikes is None or inputs is None:
        return {"resources": res}
    act = activity(program, spikes, inputs, hw)
    float_act = activity(program, float_spikes, inputs, hw) if float_spikes else None
    return {"resources": res, "activity": act,
            "energy": energy(program, act, res, hw, float_act)}


def cost_line(report: Mapping[str, Any]) -> str | None:
    """A :func:`cost_report`'s headline as one line of text (None without activity)."""
    res, act, en = report.get("resources"), report.get("activity"), report.get("energy")
    if not (res and act and en):
        return None
    paper = en["paper_45nm"]
    return (f"{res['hardware']} (estimates): {counted(res['cores'], 'core')}, "
            f"{res['chips']} chip(s); per "
            f"inference {act['synops']:,.0f} SynOps, {act['latency_steps']} steps, "
            f"{en['loihi']['total'] / 1000:.3g} uJ (45 nm: SNN {paper['snn'] / 1000:.3g} uJ, "
            f"ANN {paper['ann'] / 1000:.3g} uJ)")


def cost_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per population (and a total row) joining a :func:`cost_report`'s resources and
    activity, for a report table; energy in the total row (nJ per inference, estimates)."""
    res, act, en = report.get("resources"), report.get("activity"), report.get("energy")
    if not res:
        return []
    layers = {r["population"]: r for r in (act or {}).get("layers", [])}
    rows = [{"population": r["population"], "neurons": r["neurons"],
             "synapses": r["synapses_in"], "memory (KiB)": r["memory_bits"] / 8192,
             "cores": r["cores"], "binding limit": r["binding_limit"],
             "spikes / inference": layers.get(r["population"], {}).get("spikes"),
             "SynOps / inference": layers.get(r["population"], {}).get("synops_in")}
            for r in res["populations"]]
    total = {"population": f"total ({res['chips']} chip(s))", "neurons": res["neurons"],
             "synapses": res["synapses"], "memory (KiB)": res["memory_bits"] / 8192,
             "cores": res["cores"], "binding limit": None,
             "spikes / inference": act["spikes"] if act else None,
             "SynOps / inference": act["synops"] if act else None}
    if en:
        total.update({"Loihi energy (nJ, est.)": en["loihi"]["total"],
                      "45 nm SNN (nJ, est.)": en["paper_45nm"]["snn"],
                      "45 nm ANN (nJ, est.)": en["paper_45nm"]["ann"]})
        if act:
            total["latency (steps)"] = act["latency_steps"]
    return rows + [total]
