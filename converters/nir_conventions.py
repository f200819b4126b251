"""What a foreign NIR graph means: the conventions of the framework that exported it.

A NIR node carries no time step, and the frameworks that write NIR disagree on what its
parameters mean (docs/DESIGN.md section 9). :data:`EXPORTERS` is the one table of those conventions,
chosen once with ``--from NAME`` wherever a NIR graph is read (``simulate --backend nir|norse``,
``quantize``):

=========  ==========  ============  =====================================================
``--from``  dt          decay         known to be dropped by the exporter
=========  ==========  ============  =====================================================
snntorch   1e-4        Euler         the subtract reset (its default) is written as NIR's
                                     hard reset; Synaptic (CubaLIF) resets differ from NIR's
sinabs     1           exact         the multi-spike IAF and LIF (several spikes per step,
                                     subtract reset: its defaults) are written as one-spike
                                     NIR ``IF``/``LIF`` with a hard reset
norse      1e-3        Euler         -
nir        ``--dt``    Euler         - (plain NIR: the time step must be given)
=========  ==========  ============  =====================================================

Recurrence needs no column: snnTorch (RLeaky/RSynaptic, a nested subgraph with ``lif ->
w_rec -> lif``), Norse (its recurrent cells) and plain NIR all delay a loop by one step on the
neuron's output (docs/DESIGN.md section 3.1); the reset notes above apply to recurrent layers
as to any other.

``--dt`` overrides the exporter's time step. Our float reader integrates every neuron by
forward Euler, ``v' = (1 - dt/tau) v + (dt/tau) (v_leak + r x)``. An exporter that decays
exactly (Sinabs: ``v' = e^(-dt/tau) v + (1 - e^(-dt/tau)) r x``) is read by rewriting every
time constant of the graph::

    tau  ->  dt / (1 - exp(-dt/tau))

so the Euler reader's ``decay = 1 - dt/tau' = e^(-dt/tau)`` and ``gain = r dt/tau' = r (1 -
e^(-dt/tau))`` are the exporter's exactly; the rewritten graph then runs unchanged on every
backend and the quantiser. For an Euler exporter ``dt/tau`` must lie in (0, 1] for every time
constant of every neuron node (else the decay ``1 - dt/tau`` is negative or above 1: a wrong dt,
e.g. ``--dt 1`` on an snnTorch graph gives decay -999): such a graph is refused with the node
named. Graphs written by dalif-deploy carry their conventions in their metadata and take no
``--from``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import nir
import numpy as np
from dalif_deploy.converters.ir.ops import op_for

from dalif_deploy.base.errors import DaLifError

from .nir_to_torch import is_ours, resolve_dt


@dataclass(frozen=True)
class Exporter:
    """The conventions of one framework's NIR export."""

    name: str
    label: str  # the framework as people write it
    dt: float | None  # its time step (None: must be given with --dt)
    exact_decay: bool  # decays by exp(-dt/tau) (read through the tau rewrite), else Euler
    #: NIR node type name -> what the exporter drops when it writes such a node
    drops: dict[str, str] = field(default_factory=dict)


_SINABS_MULTI = ("emit several spikes per step (MultiSpike) with a subtract reset "
                 "(MembraneSubtract) but are written as a one-spike NIR {kind} with a hard "
                 "reset; they run as written, which is exact only for spike_fn=SingleSpike "
                 "with reset_fn=MembraneReset() (measured with Sinabs' defaults on "
                 "digits-events: {kept}/450 predictions kept, docs/MEASURED.md)")

EXPORTERS: dict[str, Exporter] = {e.name: e for e in (
    Exporter("snntorch", "snnTorch", 1e-4, False, {
        "LIF": "snnTorch's export writes every Leaky as NIR's hard reset (v := v_reset), so a "
               "subtract reset (snnTorch's default reset_mechanism) is run as a hard reset; "
               "reset_mechanism='zero' is exact (measured with the subtract reset on "
               "digits-events: 386/450 predictions kept, docs/MEASURED.md)",
        "CubaLIF": "snnTorch's Synaptic neurons reset differently from NIR's CubaLIF "
                   "('zero' holds mem at 0 for the step after a spike, 'subtract' subtracts "
                   "the threshold); they run with NIR's reset (measured with 'zero' on "
                   "digits-events: 396/450 predictions kept, docs/MEASURED.md)"}),
    Exporter("sinabs", "Sinabs", 1.0, True, {
        "IF": "Sinabs' default IAF layers " + _SINABS_MULTI.format(kind="IF", kept=423),
        "LIF": "Sinabs' default LIF layers " + _SINABS_MULTI.format(kind="LIF", kept=380)
               + "; their exact decay also assumes norm_input=True (Sinabs' default)"}),
    Exporter("norse", "Norse", 1e-3, False),
    Exporter("nir", "plain NIR", None, False),
)}
EXPORTER_NAMES: tuple[str, ...] = tuple(EXPORTERS)


@dataclass
class Reading:
    """A graph as our Euler reader must run it, its time step and what was assumed."""

    graph: nir.NIRGraph
    dt: float
    exporter: str | None  # None: a dalif-deploy graph
    notes: list[str]


def time_constants(graph: nir.NIRGraph) -> list[tuple[str, str, np.ndarray]]:
    """``(node, field, values)`` for every time constant (``tau*`` field) of a neuron node."""
    out = []
    for name, node in graph.nodes.items():
        op = op_for(node, name)
        if op.neuron:
            out += [(name, f, np.asarray(getattr(node, f), dtype=np.float64))
                    for f in op.params if f.startswith("tau") and getattr(node, f, None)
                    is not None]
    return out


def exact_to_euler(tau: np.ndarray, dt: float) -> np.ndarray:
    """``dt / (1 - exp(-dt/tau))``: the Euler time constant of an exact decay ``e^(-dt/tau)``."""
    return dt / -np.expm1(-dt / tau)


def _check_decays(graph: nir.NIRGraph, dt: float, ex: Exporter) -> None:
    fix = ("the graph was exported with another time step: pass the exporter with --from "
           + "|".join(f"{e.name} (dt {e.dt:g})" for e in EXPORTERS.values() if e.dt)
           + ", or the --dt it was trained with")
    for name, f, tau in time_constants(graph):
        if not np.all(tau > 0):
            raise DaLifError(f"node {name!r} ({type(graph.nodes[name]).__name__}): {f} must be "
                             f"positive, got {tau.min():g}; the graph is damaged")
        if ex.exact_decay:
            continue
        k = dt / tau
        bad = (k <= 0) | (k > 1)
        if np.any(bad):
            worst = float(k[bad].flat[0])
            raise DaLifError(f"node {name!r} ({type(graph.nodes[name]).__name__}): dt/{f} = "
                             f"{worst:g} at dt = {dt:g} leaves (0, 1] (decay 1 - dt/{f} = "
                             f"{1 - worst:g}); {fix}")


def read_conventions(graph: nir.NIRGraph, source: str | None = None, dt: float | None = None
                     ) -> Reading:
    """Apply exporter ``source``'s conventions (``--from``) to ``graph``; see the module doc.

    ``source=None`` on a foreign graph is plain NIR (``--dt`` required). Refused: ``--from`` on
    a dalif-deploy graph, an unknown exporter, a missing or non-positive dt, and a dt/tau
    outside (0, 1] (named by node).
    """
    if source is not None and source not in EXPORTERS:
        raise DaLifError(f"--from {source!r}: unknown exporter; choose one of "
                         f"{list(EXPORTER_NAMES)}")
    if is_ours(graph):
        if source is not None:
            raise DaLifError(f"--from {source}: this graph was written by dalif-deploy and "
                             "carries its conventions in its metadata; drop --from")
        return Reading(graph, resolve_dt(graph, dt), None, [])
    ex = EXPORTERS[source or "nir"]
    if dt is None and ex.dt is None:
        raise DaLifError("this NIR graph has no dalif-deploy metadata, so its time step is "
                         "unknown (NIR nodes carry no dt): pass the exporter with --from "
                         + "|".join(n for n in EXPORTER_NAMES if EXPORTERS[n].dt)
                         + ", or --dt explicitly (snnTorch exports assume dt=1e-4, Norse "
                         "dt=1e-3)")
    run_dt = float(ex.dt if dt is None else dt)
    if not (run_dt > 0 and math.isfinite(run_dt)):
        raise DaLifError(f"dt must be a positive number, got {dt}")
    _check_decays(graph, run_dt, ex)
    given = "given with --dt" if dt is not None else f"{ex.label}'s time step"
    notes = [f"conventions of {ex.label} (--from {ex.name}): dt = {run_dt:g} ({given}), "
             + ("exact decay e^(-dt/tau), read as Euler with tau := dt / (1 - e^(-dt/tau))"
                if ex.exact_decay else "forward-Euler decay 1 - dt/tau")]
    if ex.exact_decay:
        graph = copy.deepcopy(graph)
        for name, f, tau in time_constants(graph):
            setattr(graph.nodes[name], f, exact_to_euler(tau, run_dt))
    kinds: dict[str, list[str]] = {}
    for name, node in graph.nodes.items():
        kinds.setdefault(type(node).__name__, []).append(name)
    for kind, text in ex.drops.items():
        if kind in kinds:
            notes.append(f"note: {text} (node(s) {', '.join(kinds[kind])})")
    return Reading(graph, run_dt, ex.name, notes)


def check_foreign_options(graph: nir.NIRGraph, command_line: str, *, exporter: str | None,
                          dt: float | None, timesteps: int | None, encoding: str | None = None,
                          needs_encoding: bool = False, data_events: bool | None = False
                          ) -> None:
    """Refuse a foreign graph (no dalif-deploy metadata) with one error that names every option
    it still needs, with ``command_line`` (the command as given) completed as an example:
    its time step (``--from`` or ``--dt``), its T (``-T``; only for static data: event data
    give theirs, ``data_events=None`` (not known) leaves it to the data's loader) and, where
    ``needs_encoding`` (``quantize``), its input encoding. An unknown ``--from`` is left to
    :func:`read_conventions`."""
    md = graph.metadata if isinstance(graph.metadata, dict) else {}
    if is_ours(graph) or (exporter is not None and exporter not in EXPORTERS):
        return
    missing: list[str] = []
    example = [command_line] + [f"{flag} {v}" for flag, v in (
        ("--from", exporter), ("--dt", dt), ("-T", timesteps), ("--encoding", encoding))
        if v is not None]
    if dt is None and EXPORTERS[exporter or "nir"].dt is None:
        missing.append("its exporter or time step (--from "
                       + "|".join(n for n in EXPORTER_NAMES if EXPORTERS[n].dt)
                       + ", or --dt)")
        example.append("--from snntorch")
    if timesteps is None and "timesteps" not in md and data_events is False:
        missing.append("its number of timesteps (-T)")
        example.append("-T 8")
    if needs_encoding and encoding is None and "input_encoding" not in md:
        missing.append("its input encoding (--encoding analog|events)")
        example.append("--encoding analog")
    if missing:
        raise DaLifError("this NIR graph has no dalif-deploy metadata (a foreign graph): give "
                         + "; ".join(missing) + f"; e.g. `{' '.join(example)}`")
