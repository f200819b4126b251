"""The ``.fxp`` file format of a :class:`~.program.FixedProgram`: a versioned ``.npz`` holding
one JSON header (uint8 bytes) and integer arrays.

Loading uses ``allow_pickle=False`` and never imports torch or lava; declared sizes are checked
before anything is read.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

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

from .program import (
    BIAS_INTO,
    RESET_MODES,
    SPIKE_RULES,
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
    WeightErrors,
)

PROGRAM_FORMAT = "dalif-deploy.fixed-program"
PROGRAM_VERSION = 1

_HEADER_KEY = "header"
_SCALAR_FIELDS = {
    "population": ("name", "shape", "vth", "bias_exp", "du", "scale", "provenance",
                   "spike_rule", "reset", "multi_spike", "bias_into"),
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
    "top": {"format": (text, True), "version": (integer, True),  # checked first (values)
            "timesteps": (integer, True),  # its range: FixedProgram's check
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
                   "scale": (number, False), "provenance": (_string_list, False),
                   # absent in files written before reset modes: Lava's LIF (">", "zero")
                   "spike_rule": (lambda v, w: text(v, w, SPIKE_RULES), False),
                   "reset": (lambda v, w: text(v, w, RESET_MODES), False),
                   "multi_spike": (_boolean, False),
                   # absent in files written before the bias ramp: into v, as Lava's LIF
                   "bias_into": (lambda v, w: text(v, w, BIAS_INTO), False)},
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
