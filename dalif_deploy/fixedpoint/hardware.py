"""The hardware figures of the Loihi 2 cost model (:mod:`dalif_deploy.fixedpoint.cost`), named
once, each
sourced in docs/HARDWARE.md, and every one overridable: from Python (:func:`hardware`), from a
JSON file (``--hardware FILE.json``) and one at a time (``--hw NAME=VALUE``, repeatable) on
``inspect``, ``simulate --backend emulator`` and ``verify``. The figures that differ from the
defaults are recorded in every cost result (``resources.hardware_overrides``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import check_input_file

#: the help texts of the two options (one wording for every command that takes them)
HARDWARE_FILE_HELP = ("cost model: a JSON object of hardware figures replacing the defaults "
                      "(names, defaults and sources: docs/HARDWARE.md)")
HARDWARE_SET_HELP = ("cost model: set one hardware figure, NAME=VALUE, e.g. "
                     "neurons_per_core=4096 (repeatable; applied after --hardware)")
FIGURES_FILE_MAX = 1 << 20  # bytes of a --hardware file (the defaults take about 600)
INTEGER_MAX = 2**53  # a count beyond this is no hardware figure (and floats stop being exact)
#: a real-valued figure (pJ, ns, mW) beyond this is no hardware figure; bounded so that the
#: figures derived from it (energies, times over billions of operations) stay finite
FIGURE_MAX = 1e15
#: figures that are per-core or per-chip capacities: at least 1
AT_LEAST_ONE = ("cores_per_chip", "neurons_per_core", "core_memory_bits", "axons_in_per_core",
                "axons_out_per_core")


@dataclass(frozen=True)
class Hardware:
    """Every hardware figure of the model, named once (sources: docs/HARDWARE.md).

    ``L1`` marks a Loihi 1 figure used for Loihi 2 for want of a published Loihi 2 one, ``L2`` a
    Loihi 2 figure, ``A`` an assumption of this model, ``H`` Horowitz (ISSCC 2014, 45 nm).
    Integer figures must be whole numbers, the others finite numbers, all ``>= 0``.
    """

    name: str = "Loihi 2"
    cores_per_chip: int = 128  # L2: 128 neuromorphic cores per chip
    neurons_per_chip: int = 1_048_576  # L2: "up to 1 million neurons" per chip
    synapses_per_chip: int = 120_000_000  # L2: up to 120 million synapses per chip
    neurons_per_core: int = 8192  # L2: up to 8192 neurons per core (1M / 128)
    core_memory_bits: int = 192 * 1024 * 8  # L2: 192 KB per core, shared synapses/neuron state
    neuron_state_bits: int = 64  # A: u and v (24 bit each) and bias, one 64-bit word per neuron
    axons_in_per_core: int = 4096  # L1: input axons (distribution lists) per core
    axons_out_per_core: int = 4096  # L1: core-to-core fan-out edges per core
    energy_synop_pj: float = 23.6  # L1: energy per synaptic spike op (min), pre-silicon
    energy_neuron_update_pj: float = 52.0  # L1: energy per neuron update, inactive
    energy_neuron_spike_pj: float = 81.0  # L1: energy per neuron update, active (A: = firing)
    energy_spike_message_pj: float = 1.7  # L1: within-tile spike energy, per destination core
    time_synop_ns: float = 3.5  # L1: time per synaptic spike op (max)
    time_neuron_update_ns: float = 5.3  # L1: time per neuron update, inactive
    time_barrier_ns: float = 465.0  # L1: mesh-wide barrier sync per step (32 tiles)
    static_power_mw_per_core: float = 0.815  # L1: static (leakage) power per core, derived
    energy_ac_pj: float = 0.9  # H: 32-bit float add, 45 nm
    energy_mac_pj: float = 4.6  # H: 32-bit float multiply (3.7) + add (0.9), 45 nm

    def __post_init__(self) -> None:
        from dalif_deploy.base.schema import (  # here: the CLI's help texts need no numpy
            integer,
            number,
            text,
        )

        for f in dataclasses.fields(self):
            where = f"hardware figure {f.name}"
            v, default = getattr(self, f.name), f.default
            if isinstance(default, str):
                v = text(v, where, max_len=200)
            elif isinstance(default, int):
                v = integer(v, where, 1 if f.name in AT_LEAST_ONE else 0, INTEGER_MAX)
            else:
                v = number(v, where, 0.0)
                if v > FIGURE_MAX:
                    raise DaLifError(f"{where}: {v:g} is beyond any hardware figure (at most "
                                     f"{FIGURE_MAX:g}; energies derived from it must stay "
                                     "finite)")
            object.__setattr__(self, f.name, v)

    @property
    def index_bits(self) -> int:
        """Bits of a target index in a sparse synapse entry: ``ceil(log2(neurons_per_core))``."""
        return max(1, math.ceil(math.log2(self.neurons_per_core)))

    def overrides(self) -> dict[str, Any]:
        """The figures that differ from the defaults, by name (what a result records)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}


FIGURES = tuple(f.name for f in dataclasses.fields(Hardware))


def _known() -> str:
    return ", ".join(FIGURES)


def _read_figures(path: str | os.PathLike) -> dict[str, Any]:
    """A ``--hardware`` file: a JSON object of figure names, at most :data:`FIGURES_FILE_MAX`
    bytes."""
    from dalif_deploy.base.schema import load_json

    p = check_input_file(path, "a hardware figures file (.json)")
    try:
        with open(p, "rb") as f:
            raw = f.read(FIGURES_FILE_MAX + 1)
        if len(raw) > FIGURES_FILE_MAX:
            raise DaLifError(f"{p}: a hardware figures file holds at most {FIGURES_FILE_MAX} "
                             "bytes")
    except OSError as e:
        raise DaLifError(f"{p}: unreadable hardware figures ({e.strerror or e})") from None
    loaded = load_json(raw, f"{p}: unreadable hardware figures")
    if not isinstance(loaded, dict):
        raise DaLifError(f"{p}: hardware figures must be a JSON object of names ({_known()})")
    unknown = sorted(set(loaded) - set(FIGURES))
    if unknown:
        raise DaLifError(f"{p}: unknown hardware figure(s) {', '.join(unknown)}; known: "
                         f"{_known()}")
    return loaded


def parse_assignment(item: str) -> tuple[str, Any]:
    """``"NAME=VALUE"`` (a ``--hw`` argument) -> ``(NAME, value)``: a number for the numeric
    figures (``4096``, ``1e3``, ``23.6``), the text itself for ``name``. Checked by
    :class:`Hardware` afterwards (whole numbers where a count is meant)."""
    name, sep, value = str(item).partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise DaLifError(f"--hw {item}: give NAME=VALUE, NAME one of: {_known()}")
    if name not in FIGURES:
        raise DaLifError(f"--hw {item}: unknown hardware figure {name!r}; known: {_known()}")
    if name == "name":
        return name, value
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        parsed = value
    if isinstance(parsed, bool) or not isinstance(parsed, int | float):
        raise DaLifError(f"--hw {item}: {name} takes a number, got {value!r}")
    return name, parsed


def hardware(overrides: Hardware | Mapping[str, Any] | str | os.PathLike | None = None, *,
             assignments: Iterable[str] = (), **kw: Any) -> Hardware:
    """:class:`Hardware` with figures replaced, in order, from ``overrides`` (a
    :class:`Hardware`, a mapping of names, or the path of a JSON file holding one), then from
    ``assignments`` (``"NAME=VALUE"`` strings, as ``--hw`` takes them), then from keyword
    arguments. An unknown name or a bad value is one :class:`DaLifError` naming the valid
    names."""
    values: dict[str, Any] = {}
    if isinstance(overrides, Hardware):
        values.update(dataclasses.asdict(overrides))
    elif isinstance(overrides, str | os.PathLike):
        values.update(_read_figures(overrides))
    elif overrides is not None:
        if not isinstance(overrides, Mapping):
            raise DaLifError(f"hardware overrides must be a mapping, a Hardware or a JSON "
                             f"file, got {type(overrides).__name__}")
        values.update(overrides)
    if isinstance(assignments, str):
        assignments = (assignments,)
    values.update(parse_assignment(a) for a in assignments)
    values.update(kw)
    unknown = sorted(set(values) - set(FIGURES))
    if unknown:
        raise DaLifError(f"unknown hardware figure(s) {', '.join(unknown)}; known: {_known()}")
    return Hardware(**values)
