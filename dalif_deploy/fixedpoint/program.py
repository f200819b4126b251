"""The fixed-point program: what runs on Loihi 2 arithmetic (docs/DESIGN.md sections 4 to 6).

One small dataclass per concept, with shape and range checks in ``__post_init__``:

* :class:`InputEncoding` - how samples become integer input (8-bit graded analog, or events).
* :class:`Population` - a CUBA-LIF population (du, dv, vth, bias mantissa/exponent, its spike
  rule, reset mode and whether it sends spike counts).
* :class:`Synapse` - a dense or conv connection between populations (integer weights).
* :class:`Readout` - the non-spiking integrator read at the end, with its dequantisation scale.
* :class:`WeightErrors` - the quantiser's record of one synapse's weight rounding errors.
* :class:`FixedProgram` - all of the above plus the quantisation table and metadata.

Populations and synapses are listed in topological order. Sources of a synapse are ``"input"``
or a population name; every population's state is updated by the sum of its incoming synapses
(residual fan-in = several synapses into one target). Synchronous semantics: at step t every
population sees its inputs of step t (see the emulator; Lava's latency is handled in lowering),
except through a *recurrent* synapse (``source == target``, :attr:`Synapse.recurrent`), which
carries the population's own spikes of step t-1 (none at step 0): docs/DESIGN.md section 5.

Arrays use numpy layouts matching torch (NCHW without the batch): conv weights are
``[C_out, C_in/groups, kH, kW]`` (cross-correlation, as torch), dense weights ``[N_out, N_in]``
over the C-order flattened source. The file format (``.fxp``: :func:`~.fxp_format.save_program`
/ :func:`~.fxp_format.load_program`) is in :mod:`.fxp_format`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dalif_deploy.base.encoding import Encoding
from dalif_deploy.base.errors import DaLifError

from .limits import DECAY_MAX, TIMESTEPS_MAX

#: how a population resets after a spike (docs/DESIGN.md section 4, "Reset modes"): in the
#: spike's step (``zero``: v = 0; ``subtract``: v -= n * (vth << 6)) or in the next step, after
#: its integration (``zero-next``, ``subtract-next``: snnTorch's delayed reset)
RESET_MODES = ("zero", "subtract", "zero-next", "subtract-next")
#: when a population fires: ``v > vth << 6`` (Lava's LIF, NIR) or ``v >= vth << 6``
SPIKE_RULES = (">", ">=")
#: where a population's bias enters: v each step (Lava's LIF), or the current u, where it ramps
#: in with du as NIR's CubaLIF and snnTorch's Synaptic integrate a constant input
BIAS_INTO = ("v", "u")


def _check_shape(shape: tuple[int, ...], name: str) -> None:
    if any(d < 1 for d in shape):
        raise DaLifError(f"{name}: shape {shape} has a dimension below 1")


def _check_scale(scale: Any, name: str) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise DaLifError(f"{name}: scale must be a positive finite number, got {scale!r}")
    return value


def _int_array(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > 2**63 - 1:
        raise DaLifError(f"{name}: holds {int(arr.max())}, beyond int64 (it would wrap to a "
                         "negative number)")
    if arr.dtype.kind not in "iu":
        if arr.size and not np.all(np.isfinite(arr)):
            raise DaLifError(f"{name}: non-finite values")
        if arr.size and not np.array_equal(arr, np.round(arr)):
            raise DaLifError(f"{name}: must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclass
class InputEncoding:
    """How a sample enters the program.

    ``kind="analog"``: the float input frame x is sent every step as graded 8-bit values
    ``clip(round(x * scale), -128, 127)``. ``kind="events"``: binary spikes, one frame per step.
    """

    kind: str  # the stored name; compare through :attr:`encoding`
    shape: tuple[int, ...]
    scale: float = 1.0
    bits: int = 8

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        Encoding.from_name(self.kind, "input encoding")
        _check_shape(self.shape, "input")
        self.scale = _check_scale(self.scale, "input")
        self.bits = int(self.bits)

    @property
    def encoding(self) -> Encoding:
        """The encoding type of :attr:`kind` (:data:`~dalif_deploy.base.encoding.ANALOG` or
        :data:`~dalif_deploy.base.encoding.EVENTS`)."""
        return Encoding.from_name(self.kind, "input encoding")


@dataclass
class Population:
    """A CUBA-LIF population in Lava's bit-accurate arithmetic.

    ``dv`` is an int array of shape ``(C,)`` (per channel) or ``(1,)`` (per population);
    ``bias_mant`` has the full neuron ``shape``; ``scale`` maps float volts to integer v units
    (v = scale * V, v including the << 6); ``provenance`` names the NIR nodes it came from.
    ``spike_rule`` (:data:`SPIKE_RULES`), ``reset`` (:data:`RESET_MODES`) and ``multi_spike``
    (send ``n`` spikes as one graded spike with payload n, e.g. Sinabs' MultiSpike) are the
    neuron's firing; ``bias_into`` (:data:`BIAS_INTO`) says whether the bias is added to v each
    step (Lava's LIF) or to the current u, before u's wrap, so that it ramps in with du the way
    a constant synaptic input does (a CubaLIF bias). The defaults are Lava's LIF.
    """

    name: str
    shape: tuple[int, ...]
    dv: np.ndarray
    vth: int
    bias_mant: np.ndarray
    bias_exp: int = 0
    du: int = DECAY_MAX
    scale: float = 1.0
    provenance: list[str] = field(default_factory=list)
    spike_rule: str = ">"
    reset: str = "zero"
    multi_spike: bool = False
    bias_into: str = "v"

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        _check_shape(self.shape, self.name)
        if self.spike_rule not in SPIKE_RULES or self.reset not in RESET_MODES:
            raise DaLifError(f"{self.name}: spike rule {self.spike_rule!r} / reset "
                             f"{self.reset!r}: choose from {list(SPIKE_RULES)} / "
                             f"{list(RESET_MODES)}")
        self.multi_spike = bool(self.multi_spike)
        if self.bias_into not in BIAS_INTO:
            raise DaLifError(f"{self.name}: bias_into {self.bias_into!r}: choose from "
                             f"{list(BIAS_INTO)}")
        if self.multi_spike and self.reset.endswith("-next"):
            raise DaLifError(f"{self.name}: a multi-spike population resets in its spike's "
                             f"step (zero or subtract), not {self.reset!r}")
        self.scale = _check_scale(self.scale, self.name)
        self.dv = _int_array(self.dv, f"{self.name}.dv").reshape(-1)
        self.bias_mant = _int_array(self.bias_mant, f"{self.name}.bias_mant")
        if self.bias_mant.shape != self.shape:
            raise DaLifError(f"{self.name}.bias_mant has shape {self.bias_mant.shape}, "
                             f"population shape is {self.shape}")
        if self.dv.size not in (1, self.shape[0]):
            raise DaLifError(f"{self.name}.dv must have 1 or {self.shape[0]} (channel) entries, "
                             f"got {self.dv.size}")
        self.vth, self.bias_exp, self.du = int(self.vth), int(self.bias_exp), int(self.du)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def plain(self) -> bool:
        """Lava's stock LIF: fires on ``>``, one spike, resets to 0 in the spike's step, and adds
        the bias to v."""
        return (self.spike_rule == ">" and self.reset == "zero" and not self.multi_spike
                and self.bias_into == "v")


@dataclass
class Synapse:
    """A connection ``source -> target`` with integer weights.

    ``kind="dense"``: ``weights [N_out, N_in]``. ``kind="conv"``: ``weights [C_out, C_in/groups,
    kH, kW]`` with ``stride``, ``padding``, ``groups``. The accumulated input is floor-shifted
    by ``weight_exp``. ``graded`` inputs multiply (8-bit analog input); binary ones select.
    A synapse from a population to itself is recurrent (:attr:`recurrent`).
    """

    name: str
    source: str
    target: str
    kind: str
    weights: np.ndarray
    weight_exp: int = 0
    weight_bits: int = 8
    sign_mode: str = "mixed"
    graded: bool = False
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    provenance: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.weights = _int_array(self.weights, f"{self.name}.weights")
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.output_shape = tuple(int(s) for s in self.output_shape)
        self.stride = tuple(int(s) for s in np.broadcast_to(self.stride, 2))  # type: ignore
        self.padding = tuple(int(s) for s in np.broadcast_to(self.padding, 2))  # type: ignore
        self.weight_exp, self.weight_bits, self.groups = (
            int(self.weight_exp), int(self.weight_bits), int(self.groups))
        if self.kind not in ("dense", "conv"):
            raise DaLifError(f"{self.name}: synapse kind must be 'dense' or 'conv'")
        if min(self.stride) < 1 or min(self.padding) < 0 or self.groups < 1:
            raise DaLifError(f"{self.name}: needs stride >= 1, padding >= 0 and groups >= 1 "
                             f"(got stride {self.stride}, padding {self.padding}, groups "
                             f"{self.groups})")
        _check_shape(self.input_shape, f"{self.name} input")
        _check_shape(self.output_shape, f"{self.name} output")
        if self.sign_mode not in ("mixed", "excitatory", "inhibitory"):
            raise DaLifError(f"{self.name}: unknown sign mode {self.sign_mode!r}")
        n_in, n_out = int(np.prod(self.input_shape)), int(np.prod(self.output_shape))
        if self.kind == "dense" and self.weights.shape != (n_out, n_in):
            raise DaLifError(f"{self.name}: dense weights {self.weights.shape} do not map "
                             f"{self.input_shape} -> {self.output_shape}")
        if self.kind == "conv":
            if self.weights.ndim != 4 or len(self.input_shape) != 3 or len(self.output_shape) != 3:
                raise DaLifError(f"{self.name}: conv needs 4-D weights and (C, H, W) shapes")
            if (self.weights.shape[0] != self.output_shape[0]
                    or self.weights.shape[1] * self.groups != self.input_shape[0]):
                raise DaLifError(f"{self.name}: conv weights {self.weights.shape} (groups="
                                 f"{self.groups}) do not map {self.input_shape} -> "
                                 f"{self.output_shape}")

    @property
    def recurrent(self) -> bool:
        """Whether this synapse feeds its population back to itself: it delivers the
        population's spikes of the previous step (none at step 0), one step of delay."""
        return self.source == self.target


@dataclass
class Readout:
    """Non-spiking integrator fed by synapses whose target is ``population``.

    Its v accumulates ``a << 6`` and the bias each step without decay or reset; the final v,
    divided by ``scale * timesteps``, is the float readout mean over T.
    """

    population: str
    scale: float

    def __post_init__(self) -> None:
        self.scale = _check_scale(self.scale, "readout")


@dataclass
class WeightErrors:
    """How far one synapse's integer weights are from the float weights they approximate.

    ``e = (dequantised - float) / max|float|`` per weight, the float weight being the fused,
    alpha-folded one in input units (``dequantised = weights * 2^weight_exp``): ``counts[i]``
    weights have ``edges[i] <= e < edges[i+1]`` (the last bin also holds ``e = edges[-1]``), as
    ``numpy.histogram`` bins them; ``max_abs = max |e|``. Recorded by the quantiser, so a report
    needs neither the graph nor a second fusion.
    """

    counts: tuple[int, ...]
    edges: tuple[float, ...]
    max_abs: float

    def __post_init__(self) -> None:
        self.counts = tuple(int(c) for c in self.counts)
        self.edges = tuple(float(e) for e in self.edges)
        self.max_abs = float(self.max_abs)
        if len(self.edges) != len(self.counts) + 1 or min(self.counts, default=0) < 0:
            raise DaLifError(f"weight errors: {len(self.counts)} non-negative counts need "
                             f"{len(self.counts) + 1} bin edges, got {len(self.edges)}")
        if not (np.all(np.isfinite(self.edges)) and np.all(np.diff(self.edges) >= 0)
                and np.isfinite(self.max_abs) and self.max_abs >= 0):
            raise DaLifError("weight errors: bin edges must be finite and ascending, max_abs a "
                             "finite number >= 0")

    @property
    def size(self) -> int:
        """How many weights the histogram covers."""
        return sum(self.counts)


@dataclass
class FixedProgram:
    """A whole fixed-point network. See the module docstring for conventions."""

    input: InputEncoding
    populations: list[Population]
    synapses: list[Synapse]
    readout: Readout
    timesteps: int
    quant_table: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    weight_errors: dict[str, WeightErrors] = field(default_factory=dict)  # by synapse name

    def __post_init__(self) -> None:
        names = [p.name for p in self.populations]
        if len(set(names)) != len(names) or "input" in names:
            raise DaLifError("population names must be unique and not 'input'")
        if self.readout.population not in names:
            raise DaLifError(f"readout population {self.readout.population!r} does not exist")
        known = {"input": self.input.shape, **{p.name: p.shape for p in self.populations}}
        for s in self.synapses:
            if s.source not in known or s.target not in known or s.target == "input":
                raise DaLifError(f"synapse {s.name}: unknown source/target "
                                 f"{s.source!r} -> {s.target!r}")
        unknown = sorted(set(self.weight_errors) - {s.name for s in self.synapses})
        if unknown:
            raise DaLifError(f"weight errors recorded for unknown synapses {unknown}")
        if not 1 <= self.timesteps <= TIMESTEPS_MAX:
            raise DaLifError(f"timesteps must lie in 1..{TIMESTEPS_MAX}, got {self.timesteps} "
                             "(a larger value is a corrupt or hostile program: running it "
                             "would not end in reasonable time)")

    @property
    def classes(self) -> int:
        """The number of classes: the size of the population the readout integrates."""
        return math.prod(self.population(self.readout.population).shape)

    def population(self, name: str) -> Population:
        for p in self.populations:
            if p.name == name:
                return p
        raise DaLifError(f"no population named {name!r}")

    def incoming(self, name: str) -> list[Synapse]:
        return [s for s in self.synapses if s.target == name]
