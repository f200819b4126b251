"""The fixed-point program: what runs on Loihi 2 arithmetic (docs/DESIGN.md sections 4 to 6).

One small dataclass per concept, with shape and range checks in ``__post_init__``:

* :class:`InputEncoding` - how samples become integer input (8-bit graded analog, or events).
* :class:`Population` - a CUBA-LIF population (du, dv, vth, bias mantissa/exponent).
* :class:`Synapse` - a dense or conv connection between populations (integer weights).
* :class:`Readout` - the non-spiking integrator read at the end, with its dequantisation scale.
* :class:`WeightErrors` - the quantiser's record of one synapse's weight rounding errors.
* :class:`FixedProgram` - all of the above plus the quantisation table and metadata.

Populations and synapses are listed in topological order. Sources of a synapse are ``"input"``
or a population name; every population's state is updated by the sum of its incoming synapses
(residual fan-in = several synapses into one target). Synchronous semantics: at step t every
population sees its inputs of step t (see the emulator; Lava's latency is handled in lowering).

Arrays use numpy layouts matching torch (NCHW without the batch): conv weights are
``[C_out, C_in/groups, kH, kW]`` (cross-correlation, as torch), dense weights ``[N_out, N_in]``
over the C-order flattened source. The file format (:func:`save_program` / :func:`load_program`)
is a versioned ``.npz`` holding a JSON header and integer arrays, loadable without torch, lava
or pickle.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dalif_deploy.base.encoding import Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.filekind import expect
from dalif_deploy.base.files import atomic_open, check_input_file
from dalif_deploy.base.resources import INPUT_ELEMENTS_MAX, check_zip, read_npz_member
from dalif_deploy.base.schema import (
    Check,
    integer,
    load_json,
    mapping,
    number,
    shape,
    text,
    validate,
)

from .limits import DECAY_MAX, TIMESTEPS_MAX

PROGRAM_FORMAT = "dalif-deploy.fixed-program"
PROGRAM_VERSION = 1


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

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        _check_shape(self.shape, self.name)
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


@dataclass
class Synapse:
    """A connection ``source -> target`` with integer weights.

    ``kind="dense"``: ``weights [N_out, N_in]``. ``kind="conv"``: ``weights [C_out, C_in/groups,
    kH, kW]`` with ``stride``, ``padding``, ``groups``. The accumulated input is floor-shifted
    by ``weight_exp``. ``graded`` inputs multiply (8-bit analog input); binary ones select.
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


# ---------------------------------------------------------------------------------------------
# File format: a versioned .npz holding one JSON header (uint8 bytes) and integer arrays.
# Loading uses allow_pickle=False and never imports torch or lava.

_HEADER_KEY = "header"
_SCALAR_FIELDS = {
    "population": ("name", "shape", "vth", "bias_exp", "du", "scale", "provenance"),
    "synapse": ("name", "source", "target", "kind", "weight_exp", "weight_bits", "sign_mode",
                "graded", "stride", "padding", "groups", "input_shape", "output_shape",
                "provenance"),
}


def _jsonable(o: Any) -> Any:
    """numpy scalars/arrays/tuples -> plain JSON types; non-finite floats are refused."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        if not np.isfinite(o):
            raise DaLifError(f"cannot store the non-finite number {o} in a program header")
        return float(o)
    if o is None or isinstance(o, str):
        return o
    raise DaLifError(f"cannot store a {type(o).__name__} in a program header")


def program_to_arrays(program: FixedProgram) -> dict[str, np.ndarray]:
    """The program as ``{name: array}``: a JSON header (uint8) plus one int64 array per field."""
    header: dict[str, Any] = {
        "format": PROGRAM_FORMAT,
        "version": PROGRAM_VERSION,
        "timesteps": int(program.timesteps),
        "input": {"kind": program.input.kind, "shape": list(program.input.shape),
                  "scale": float(program.input.scale), "bits": int(program.input.bits)},
        "readout": {"population": program.readout.population,
                    "scale": float(program.readout.scale)},
        "populations": [{f: getattr(p, f) for f in _SCALAR_FIELDS["population"]}
                        for p in program.populations],
        "synapses": [{f: getattr(s, f) for f in _SCALAR_FIELDS["synapse"]}
                     for s in program.synapses],
        "quant_table": program.quant_table,
        "metadata": program.metadata,
        "weight_errors": {k: {"counts": w.counts, "edges": w.edges, "max_abs": w.max_abs}
                          for k, w in program.weight_errors.items()},
    }
    arrays = {_HEADER_KEY: np.frombuffer(
        json.dumps(_jsonable(header), allow_nan=False).encode(), np.uint8)}
    for i, p in enumerate(program.populations):
        arrays[f"pop{i}.dv"] = p.dv.astype(np.int64)
        arrays[f"pop{i}.bias_mant"] = p.bias_mant.astype(np.int64)
    for i, s in enumerate(program.synapses):
        arrays[f"syn{i}.weights"] = s.weights.astype(np.int64)
    return arrays


def save_program(program: FixedProgram, path: str | os.PathLike) -> None:
    """Write ``program`` to ``path`` (.fxp, an npz archive) atomically."""
    arrays = program_to_arrays(program)

    with atomic_open(path) as f:  # a file object: np.savez would append '.npz' to a name
        np.savez_compressed(f, **arrays)


class _Members(Mapping[str, np.ndarray]):
    """The arrays of an open program archive, each read (header checked first) when asked for:
    members the header does not name are never read."""

    def __init__(self, z: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> None:
        self.z = z
        self.members = {n[:-4]: i for n, i in members.items() if n.endswith(".npy")}

    def __getitem__(self, key: str) -> np.ndarray:
        return read_npz_member(self.z, self.members[key], f"array {key!r}")

    def __contains__(self, key: object) -> bool:
        return key in self.members

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


def _string_list(v: Any, where: str) -> list[str]:
    if not isinstance(v, list):
        raise DaLifError(f"{where}: must be a list of strings, got {type(v).__name__}")
    return [text(x, f"{where}[{i}]") for i, x in enumerate(v)]


def _pair(v: Any, where: str) -> list[int]:
    items = v if isinstance(v, list) else [v]
    return [integer(x, where) for x in items]


def _shape_field(v: Any, where: str) -> list[int]:
    return list(shape(v, where, max_elements=INPUT_ELEMENTS_MAX))


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise DaLifError(f"{where}: must be a list, got {type(v).__name__}")
    return v


def _list_of(v: Any, where: str, kind: str) -> list[dict[str, Any]]:
    return [validate(x, HEADER_SCHEMA[kind], f"{where}[{i}]")
            for i, x in enumerate(_list(v, where))]


def _boolean(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise DaLifError(f"{where}: must be true or false, got {v!r:.40}")
    return v


_NAME = (text, True)
#: every field of a program header (types and integrality; ranges are constraints.check_program's)
HEADER_SCHEMA: dict[str, dict[str, tuple[Check, bool]]] = {
    "top": {"timesteps": (integer, True),  # its range: FixedProgram's check
            "input": (mapping, True), "readout": (mapping, True),
            "populations": (lambda v, w: _list_of(v, w, "population"), True),
            "synapses": (lambda v, w: _list_of(v, w, "synapse"), True),
            "quant_table": (lambda v, w: [mapping(x, f"{w}[{i}]") for i, x in
                                          enumerate(_list(v, w))], False),
            "metadata": (mapping, False),
            "weight_errors": (lambda v, w: {k: validate(x, HEADER_SCHEMA["weight_errors"],
                                                        f"{w}[{k!r}]")
                                            for k, x in mapping(v, w).items()}, False)},
    "weight_errors": {"counts": (lambda v, w: [integer(x, w) for x in _list(v, w)], True),
                      "edges": (lambda v, w: [number(x, w) for x in _list(v, w)], True),
                      "max_abs": (number, True)},
    "input": {"kind": (lambda v, w: text(v, w, ("analog", "events")), True),
              "shape": (_shape_field, True), "scale": (number, False),
              "bits": (integer, False)},
    "readout": {"population": _NAME, "scale": (number, True)},
    "population": {"name": _NAME, "shape": (_shape_field, True), "vth": (integer, True),
                   "bias_exp": (integer, False), "du": (integer, False),
                   "scale": (number, False), "provenance": (_string_list, False)},
    "synapse": {"name": _NAME, "source": _NAME, "target": _NAME,
                "kind": (lambda v, w: text(v, w, ("dense", "conv")), True),
                "weight_exp": (integer, False), "weight_bits": (integer, False),
                "sign_mode": (text, False), "graded": (_boolean, False),
                "stride": (_pair, False), "padding": (_pair, False), "groups": (integer, False),
                "input_shape": (_shape_field, False), "output_shape": (_shape_field, False),
                "provenance": (_string_list, False)},
}


def _parse_header(raw: np.ndarray) -> dict[str, Any]:
    """The JSON header, checked against :data:`HEADER_SCHEMA`."""
    h = load_json(raw.tobytes(), "program header")
    if not isinstance(h, dict) or h.get("format") != PROGRAM_FORMAT:
        raise DaLifError("not a dalif-deploy fixed-point program")
    if h.get("version") != PROGRAM_VERSION:
        raise DaLifError(f"program format version {h.get('version')!r:.40} is not "
                         f"supported (this dalif-deploy reads version {PROGRAM_VERSION}); "
                         "re-quantise")
    h = validate(h, HEADER_SCHEMA["top"], "header")
    h["input"] = validate(h["input"], HEADER_SCHEMA["input"], "header.input")
    h["readout"] = validate(h["readout"], HEADER_SCHEMA["readout"], "header.readout")
    return h


def program_from_arrays(arrays: dict[str, np.ndarray], where: str = "program") -> FixedProgram:
    """Inverse of :func:`program_to_arrays`, validating everything it reads."""
    if _HEADER_KEY not in arrays:
        raise DaLifError(f"{where}: no program header; is this a dalif-deploy .fxp file?")
    try:
        raw = arrays[_HEADER_KEY]
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise DaLifError("no program header; is this a dalif-deploy .fxp file?")
        h = _parse_header(raw)
    except DaLifError as e:
        raise DaLifError(f"{where}: {e}") from None

    def arr(key: str) -> np.ndarray:
        if key not in arrays:
            raise DaLifError(f"array {key!r} is missing (truncated file?)")
        a = arrays[key]
        if a.dtype.kind not in "iu":
            raise DaLifError(f"array {key!r} has dtype {a.dtype}, integers expected")
        return a

    try:
        pops = [Population(dv=arr(f"pop{i}.dv"), bias_mant=arr(f"pop{i}.bias_mant"), **d)
                for i, d in enumerate(h["populations"])]
        syns = [Synapse(weights=arr(f"syn{i}.weights"), **d) for i, d in enumerate(h["synapses"])]
        return FixedProgram(input=InputEncoding(**h["input"]), populations=pops, synapses=syns,
                            readout=Readout(**h["readout"]), timesteps=int(h["timesteps"]),
                            quant_table=list(h.get("quant_table", [])),
                            metadata=dict(h.get("metadata", {})),
                            weight_errors={k: WeightErrors(**d) for k, d in
                                           dict(h.get("weight_errors", {})).items()})
    except (KeyError, TypeError, ValueError) as e:
        raise DaLifError(f"{where}: malformed program header ({type(e).__name__}: {e})") from None
    except DaLifError as e:  # a dataclass check: say which file
        raise DaLifError(f"{where}: {e}") from None


def load_program(path: str | os.PathLike) -> FixedProgram:
    """Read a program written by :func:`save_program` (no pickle, no torch, no lava).

    Declared sizes are checked before anything is read (zip members and each array's .npy
    header, :mod:`resources`), every header field against :data:`HEADER_SCHEMA`, and only the
    arrays the header names are read."""
    where = str(path)
    check_input_file(path, "a fixed-point program (.fxp)")
    expect(path, "program", "a fixed-point program (.fxp)")
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise DaLifError(f"{path}: a plain .npy array, not a program (an .fxp file is an npz "
                         "archive); re-create it with `dalif-deploy quantize`")
    try:
        with zipfile.ZipFile(path) as z:
            members = check_zip(z, os.path.getsize(path), where)
            return program_from_arrays(_Members(z, members), where=where)
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as e:
        raise DaLifError(f"{path}: corrupt or truncated program file ({type(e).__name__}: "
                         f"{e}); re-create it with `dalif-deploy quantize`") from None
