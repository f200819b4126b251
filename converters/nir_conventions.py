"""What a foreign NIR graph means: the conventions of the framework that exported it.

A NIR node carries no time step, and the frameworks that write NIR disagree on what its
parameters mean (docs/DESIGN.md section 9). :data:`EXPORTERS` is the one table of those conventions,
chosen once with ``--from NAME`` wherever a NIR graph is read (``simulate --backend nir|norse``,
``quantize``):

============  ========  =====  =====  ===============================================
``--from``    dt        decay  fires  reset (``--reset zero|subtract``) and what is dropped
============  ========  =====  =====  ===============================================
snntorch      1e-4      Euler  ``>``  a spike resets the NEXT step's integral: Leaky
                                      ``zero`` is NIR's reset, ``subtract`` (its default)
                                      is ``subtract-next``; Synaptic (CubaLIF) ``zero`` is
                                      ``zero-next``. Every mechanism is written as v_reset 0
sinabs        1         exact  ``>=`` in the spike's step; its default IAF/LIF are
                                      MultiSpike with MembraneSubtract, written as
                                      one-spike NIR ``IF``/``LIF``: ``--reset subtract
                                      --multi-spike`` states them
spikingjelly  1e-4      Euler  ``>=`` hard reset only (its 2.0.0 export refuses soft reset)
norse         1e-3      Euler  ``>``  NIR's
nir           ``--dt``  Euler  ``>``  NIR's (plain NIR: the time step must be given)
============  ========  =====  =====  ===============================================

Reset: without ``--reset`` a graph means what its file says, a reset to ``v_reset`` (``zero``),
unless the file records that it was written by nir 1.0.5 or older (NIR files hold the writing
nir's ``version``): up to 1.0.5 NIR's LIF, IF and CubaLIF reset by subtracting the threshold
(reset to ``v_reset`` came with nir 1.0.6; Sinabs 3.1.3 and Rockpool 3.1.0 pin ``nir<=1.0.4``),
so such a file is read with ``subtract``, and a note says so. ``--multi-spike`` (spike counts,
Sinabs' MultiSpike) is never implied: no NIR version can say it. What was read is written into
each neuron node's metadata (``spike_condition``, ``reset_mode``, ``multi_spike``), which the
interpreter, the quantiser and the Norse adapter read.

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
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
from dalif_deploy.converters.ir.ops import op_for

from dalif_deploy.base.errors import DaLifError

from .nir_to_torch import is_ours, resolve_dt

#: the reset mechanisms a user states with ``--reset`` (the program's modes are finer)
RESETS = ("zero", "subtract")
#: the last nir release whose LIF, IF and CubaLIF reset by subtracting the threshold
LAST_SUBTRACT_NIR = (1, 0, 5)


@dataclass(frozen=True)
class Exporter:
    """The conventions of one framework's NIR export."""

    name: str
    label: str  # the framework as people write it
    dt: float | None  # its time step (None: must be given with --dt)
    exact_decay: bool  # decays by exp(-dt/tau) (read through the tau rewrite), else Euler
    #: NIR node type name -> what the exporter drops when it writes such a node
    drops: dict[str, str] = field(default_factory=dict)
    spike_rule: str = ">"  # ">" or ">=" (v against v_threshold)
    #: (node type, --reset) -> the program's reset mode where it is not --reset itself
    resets: dict[tuple[str, str], str] = field(default_factory=dict)
    #: --reset values its export cannot have written -> why
    impossible: dict[str, str] = field(default_factory=dict)
    #: (node type, --reset) -> the reset mode of a neuron on its own recurrent loop, where it
    #: differs from the same node type's outside a loop
    loop_resets: dict[tuple[str, str], str] = field(default_factory=dict)

    def reset_of(self, kind: str, reset: str, in_loop: bool = False) -> str:
        """The program's reset mode (:data:`~dalif_deploy.fixedpoint.program.RESET_MODES`) of a
        ``kind`` node (NIR type name) whose framework reset by ``reset`` (``zero``/``subtract``);
        ``in_loop``: the node feeds itself through a recurrent loop."""
        if in_loop and (kind, reset) in self.loop_resets:
            return self.loop_resets[(kind, reset)]
        return self.resets.get((kind, reset), reset)


_SINABS_MULTI = ("emit several spikes per step (MultiSpike) with a subtract reset "
                 "(MembraneSubtract) but are written as a one-spike NIR {kind}; the file "
                 "cannot say which, so state Sinabs' defaults with --reset subtract "
                 "--multi-spike (spike_fn=SingleSpike with reset_fn=MembraneReset() is "
                 "--reset zero; read as one spike with a hard reset, Sinabs' defaults kept "
                 "{kept}/450 predictions on digits-events, docs/MEASURED.md)")
_SNNTORCH_NEXT = {(k, "subtract"): "subtract-next" for k in ("LIF", "IF", "CubaLIF")}

EXPORTERS: dict[str, Exporter] = {e.name: e for e in (
    Exporter("snntorch", "snnTorch", 1e-4, False, {
        "LIF": "snnTorch's export writes every Leaky with v_reset = 0 whatever its "
               "reset_mechanism, so the file cannot say its subtract reset (snnTorch's "
               "default: mem = beta mem + x - threshold * spike of the previous step): state "
               "it with --reset subtract (read as a hard reset it kept 386/450 predictions on "
               "digits-events, docs/MEASURED.md)",
        "CubaLIF": "snnTorch's Synaptic neurons reset the step AFTER a spike, once that "
                   "step's syn and mem are integrated ('zero': that mem := 0; 'subtract': "
                   "mem - threshold), not as NIR's CubaLIF; read so (zero-next, or "
                   "subtract-next with --reset subtract; NIR's own reading kept 396/450 "
                   "predictions on digits-events, docs/MEASURED.md)"},
             resets={**_SNNTORCH_NEXT, ("CubaLIF", "zero"): "zero-next"},
             # RLeaky "zero" computes (1 - s_prev)(beta mem + x + V s_prev): the step after a
             # spike zeroes the new value (zero-next), where the feed-forward Leaky zeroes only
             # the old mem; both are written as a LIF with v_reset = 0 (measured with snnTorch
             # 1.0.0: read as Leaky's reset, 320/450 predictions; as zero-next, 450/450;
             # docs/MEASURED.md)
             loop_resets={("LIF", "zero"): "zero-next"}),
    Exporter("sinabs", "Sinabs", 1.0, True, {
        "IF": "Sinabs' default IAF layers " + _SINABS_MULTI.format(kind="IF", kept=423),
        "LIF": "Sinabs' default LIF layers " + _SINABS_MULTI.format(kind="LIF", kept=380)
               + "; their exact decay also assumes norm_input=True (Sinabs' default)"},
             spike_rule=">="),
    Exporter("spikingjelly", "SpikingJelly", 1e-4, False, spike_rule=">=", impossible={
        "subtract": "SpikingJelly 2.0.0's NIR export refuses soft reset (v_reset=None: "
                    "'NIR does not distinguish soft reset'), so its graphs always mean a hard "
                    "reset to v_reset; drop --reset subtract"}),
    Exporter("norse", "Norse", 1e-3, False),
    Exporter("nir", "plain NIR", None, False),
)}
EXPORTER_NAMES: tuple[str, ...] = tuple(EXPORTERS)


def nir_file_version(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The nir version that wrote a ``.nir`` file (its top-level ``version``), or None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f["version"][()] if "version" in f else None
    except (OSError, KeyError, TypeError, ValueError):
        return None
    text = raw.decode("utf8", "replace") if isinstance(raw, bytes) else str(raw or "")
    parts = re.findall(r"\d+", text)[:3]
    return tuple(int(x) for x in parts) if parts else None


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


def read_graph(path: str | os.PathLike, source: str | None = None, dt: float | None = None,
               reset: str | None = None, multi_spike: bool = False) -> Reading:
    """Read and validate the ``.nir`` file at ``path`` and apply :func:`read_conventions`,
    with the nir version the file records."""
    from dalif_deploy.converters.ir.graph import read_nir

    graph = read_nir(Path(path))
    return read_conventions(graph, source, dt, reset=reset, multi_spike=multi_spike,
                            version=nir_file_version(path))


def read_conventions(graph: nir.NIRGraph, source: str | None = None, dt: float | None = None,
                     *, reset: str | None = None, multi_spike: bool = False,
                     version: tuple[int, ...] | None = None) -> Reading:
    """Apply exporter ``source``'s conventions (``--from``) to ``graph``; see the module doc.

    ``source=None`` on a foreign graph is plain NIR (``--dt`` required). ``reset``
    (``--reset zero|subtract``) and ``multi_spike`` (``--multi-spike``) state the neurons'
    firing where the file cannot; ``version``: the nir version that wrote the file (see the
    module doc). Refused: ``--from``/``--reset``/``--multi-spike`` on a dalif-deploy graph, an
    unknown exporter or reset, a reset the exporter cannot have written, a missing or
    non-positive dt, and a dt/tau outside (0, 1] (named by node).
    """
    if source is not None and source not in EXPORTERS:
        raise DaLifError(f"--from {source!r}: unknown exporter; choose one of "
                         f"{list(EXPORTER_NAMES)}")
    if reset is not None and reset not in RESETS:
        raise DaLifError(f"--reset {reset!r}: choose one of {list(RESETS)}")
    if is_ours(graph):
        given = [f for f, v in (("--from", source), ("--reset", reset),
                                ("--multi-spike", multi_spike or None)) if v is not None]
        if given:
            raise DaLifError(f"{' '.join(given)}: this graph was written by dalif-deploy and "
                             f"carries its conventions in its metadata; drop {given[0]}")
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
    graph = copy.deepcopy(graph)
    if ex.exact_decay:
        for name, f, tau in time_constants(graph):
            setattr(graph.nodes[name], f, exact_to_euler(tau, run_dt))
    kinds: dict[str, list[str]] = {}
    for name, node in graph.nodes.items():
        kinds.setdefault(type(node).__name__, []).append(name)
    notes += _state_firing(graph, ex, reset, multi_spike, version)
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


def _state_firing(graph: nir.NIRGraph, ex: Exporter, reset: str | None, multi_spike: bool,
                  version: tuple[int, ...] | None) -> list[str]:
    """Write each spiking neuron node's firing into its metadata (``spike_condition``,
    ``reset_mode``, ``multi_spike``) and return the notes saying what was read and why."""
    if reset in ex.impossible:
        raise DaLifError(f"--reset {reset} with --from {ex.name}: {ex.impossible[reset]}")
    old = version is not None and version <= LAST_SUBTRACT_NIR and "subtract" not in ex.impossible
    why = "given with --reset"
    if reset is None:
        reset = "subtract" if old else "zero"
        why = (f"the file was written by nir {'.'.join(map(str, version or ()))}, whose "
               "LIF/IF/CubaLIF reset by subtracting the threshold (reset to v_reset came "
               "with nir 1.0.6)" if old else "as the file says: v := v_reset")
    from dalif_deploy.converters.ir.graph import recurrent_edges

    in_loop = {a for a, _ in recurrent_edges(graph)}  # neurons that feed themselves
    modes: dict[str, list[str]] = {}
    for name, node in graph.nodes.items():
        if not op_for(node, name).resets:
            continue
        mode = ex.reset_of(type(node).__name__, reset, name in in_loop)
        if multi_spike and mode.endswith("-next"):
            raise DaLifError(f"--multi-spike with --from {ex.name}: node {name!r} resets in "
                             f"the next step ({mode}); spike counts reset in their own step "
                             "(Sinabs' MultiSpike): drop --multi-spike")
        node.metadata = {**(node.metadata or {}), "spike_condition": ex.spike_rule,
                         "reset_mode": mode, "multi_spike": bool(multi_spike)}
        modes.setdefault(mode, []).append(name)
    if not modes:
        return []
    read = "; ".join(f"{m} (node(s) {', '.join(n)})" for m, n in modes.items())
    return [f"note: firing read as {ex.label} fires: spike when v {ex.spike_rule} v_threshold, "
            + ("spike counts (--multi-spike: floor of v over the threshold, sent as one "
               "graded spike), " if multi_spike else "one spike per step, ")
            + f"reset {read} ({why})"]
