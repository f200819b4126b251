"""Load-time validation of every value a file or an option brings in (one set of rules).

Each loader (checkpoint, NIR graph, fixed-point program, ONNX graph, data sets) describes its
fields with these checks instead of ad-hoc ``int(...)`` / ``float(...)`` casts, so a wrong type,
a NaN, an out-of-range or a fractional value is always one :class:`DaLifError` naming the file
and the field, never a traceback and never a silent cast (``int(1.5) == 1``, ``uint8(300) ==
44``, ``float32(1e300) == inf``, ``complex -> float`` dropping the imaginary part).

A field schema is a dict ``{name: check}`` where ``check(value, where) -> cleaned value``;
:func:`validate` applies it to a mapping. Values read back from HDF5 arrive as numpy scalars,
0-d or one-element arrays and bytes: the checks accept those forms of a scalar as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .errors import DaLifError

Check = Callable[[Any, str], Any]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _scalar(value: Any, where: str, what: str) -> Any:
    """A numpy scalar or one-element array -> its Python value; anything else unchanged."""
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "biuf":
            raise DaLifError(f"{where}: must be {what}, got an array of shape "
                             f"{tuple(value.shape)} ({value.dtype})")
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _range_text(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"<= {hi}" if hi is not None else ""


def integer(value: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (an integral float such as ``4.0`` counts; ``True``, ``"4"``, ``1.5`` do not)
    with ``lo <= value <= hi``."""
    what = f"an integer {_range_text(lo, hi)}".strip()
    v = _scalar(value, where, what)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DaLifError(f"{where}: must be {what}, got {type(v).__name__} {v!r:.60}")
    if isinstance(v, float) and not (math.isfinite(v) and v == int(v)):
        raise DaLifError(f"{where}: must be {what}, got {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise DaLifError(f"{where}: must be {what}, got {v}")
    return v


def number(value: Any, where: str, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    """A finite real number with ``lo <= value <= hi`` (``lo < value`` when ``lo_open``)."""
    what = f"a finite number {_range_text(lo, hi, lo_open)}".strip()
    v = _scalar(value, where, what)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DaLifError(f"{where}: must be {what}, got {type(v).__name__} {v!r:.60}")
    v = float(v)
    if (not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo))
            or (hi is not None and v > hi)):
        raise DaLifError(f"{where}: must be {what}, got {v!r}")
    return v


def text(value: Any, where: str, choices: tuple[str, ...] | None = None,
         max_len: int = 4096) -> str:
    """A string (bytes are decoded), optionally one of ``choices``."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "SUO":
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf8", "replace")
    if not isinstance(value, str) or len(value) > max_len:
        raise DaLifError(f"{where}: must be a string" + (f" (one of {list(choices)})"
                                                         if choices else "")
                         + f", got {type(value).__name__} {value!r:.60}")
    if choices is not None and value not in choices:
        raise DaLifError(f"{where}: must be one of {list(choices)}, got {value!r}")
    return value


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A dict with string keys."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise DaLifError(f"{where}: must be a dict with string keys, got "
                         f"{type(value).__name__}")
    return dict(value)


def shape(value: Any, where: str, ndim: int | tuple[int, ...] | None = None,
          max_elements: int | None = None) -> tuple[int, ...]:
    """A shape: a list of positive integers (``ndim`` of them, or one of the counts a tuple
    names), at most ``max_elements`` in product."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DaLifError(f"{where}: must be a list of positive integers, got "
                         f"{type(value).__name__} {value!r:.60}")
    dims = tuple(integer(d, f"{where}[{i}]", lo=1) for i, d in enumerate(value))
    counts = (ndim,) if isinstance(ndim, int) else ndim
    if counts is not None and len(dims) not in counts:
        raise DaLifError(f"{where}: must have {' or '.join(map(str, counts))} dimensions, "
                         f"got {list(dims)}")
    if max_elements is not None and math.prod(dims) > max_elements:
        raise DaLifError(f"{where}: {list(dims)} has {math.prod(dims):,} elements, more than "
                         f"the {max_elements:,} allowed")
    return dims


def real_array(a: Any, where: str, *, finite: bool = True, float32: bool = False
               ) -> np.ndarray:
    """A real numeric array (bool, integer or float; never complex, object or string), all
    finite, and with ``float32`` representable as float32 (``|x| <= 3.4e38``)."""
    arr = np.asarray(a) if not hasattr(a, "numpy") else a.detach().cpu().numpy()
    if arr.dtype.kind not in "biuf":
        raise DaLifError(f"{where}: must hold real numbers, got dtype {arr.dtype}"
                         + (" (complex values are not cast silently)"
                            if arr.dtype.kind == "c" else ""))
    if arr.dtype.kind == "f" and arr.size:
        if finite and not np.isfinite(arr).all():
            raise DaLifError(f"{where}: contains NaN or Inf")
        if float32 and arr.dtype.itemsize > 4 and np.abs(arr).max() > FLOAT32_MAX:
            raise DaLifError(f"{where}: holds {np.abs(arr).max():.3g}, beyond float32's "
                             f"{FLOAT32_MAX:.3g} (it would become Inf)")
    return arr


def optional(check: Check) -> Check:
    """``check``, letting None through."""
    return lambda v, where: None if v is None else check(v, where)


def validate(obj: Any, schema: Mapping[str, tuple[Check, bool]], where: str, *,
             keep_unknown: bool = False) -> dict[str, Any]:
    """Apply ``schema`` (``{field: (check, required)}``) to the mapping ``obj``.

    Returns a copy of ``obj`` with every schema field present replaced by its cleaned value.
    A field outside the schema (never passed through unchecked, unless ``keep_unknown``: a
    mapping others write into too, e.g. a foreign NIR graph's metadata), a missing required
    field, or a field that fails its check, is a DaLifError naming ``where.field``.
    """
    d = mapping(obj, where)
    unknown = [k for k in d if k not in schema]
    if unknown and not keep_unknown:
        raise DaLifError(f"{where}: unknown field(s) {', '.join(repr(k)[:60] for k in unknown)}"
                         f"; the accepted fields: {', '.join(schema)}")
    missing = [k for k, (_, required) in schema.items() if required and k not in d]
    if missing:
        raise DaLifError(f"{where}: missing field(s) {missing}")
    cleaned = dict(d) if keep_unknown else {}
    cleaned.update({k: check(d[k], f"{where}.{k}") for k, (check, _) in schema.items() if k in d})
    return cleaned


#: nesting a JSON document or a checkpoint's plain fields may have (ours: under 8)
NESTING_MAX = 64


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise DaLifError(f"the key {k!r:.60} appears twice in one object (a damaged or "
                             "hostile file: which value is meant cannot be told); keep one")
        d[k] = v
    return d


def _refuse_constant(name: str) -> Any:
    raise DaLifError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def load_json(raw: bytes | str, where: str) -> Any:
    """Every JSON document dalif-deploy reads, one rule: strict JSON (no ``NaN``,
    ``Infinity``), no key twice in one object (as a zip member listed twice is refused), at
    most :data:`NESTING_MAX` levels deep. Anything else is one DaLifError naming ``where``."""
    import json

    try:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        value = json.loads(raw, object_pairs_hook=_refuse_duplicates,
                           parse_constant=_refuse_constant)
    except DaLifError as e:
        raise DaLifError(f"{where}: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise DaLifError(f"{where}: not readable JSON ({str(e)[:120]})") from None
    except RecursionError:
        raise DaLifError(f"{where}: nested too deeply") from None
    check_plain(value, where)
    return value


def check_plain(value: Any, where: str, depth_max: int = NESTING_MAX,
                items_max: int = 1 << 20) -> None:
    """Refuse a plain structure (dicts, lists, tuples) nested more than ``depth_max`` levels
    or holding more than ``items_max`` items, without recursion: the JSON encoder, ``repr``
    and the content digest recurse, and a record nested 5000 deep would crash them."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        v, depth = stack.pop()
        if isinstance(v, Mapping):
            children: Any = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        if depth >= depth_max:
            raise DaLifError(f"{where}: nested more than {depth_max} levels deep (a damaged or "
                             "hostile file)")
        seen += len(v)
        if seen > items_max:
            raise DaLifError(f"{where}: more than {items_max:,} items in its plain fields (a "
                             "damaged or hostile file)")
        stack.extend((c, depth + 1) for c in children)


def non_finite(value: Any, path: str = "") -> str | None:
    """The path (``energy.loihi.total``) of the first NaN or infinite float in a plain
    structure, or None; iterative, like :func:`check_plain`."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, (float, np.floating)):
            if not math.isfinite(float(v)):
                return p or "the value"
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
            if v.size and not np.isfinite(v).all():
                return p or "the array"
        elif isinstance(v, Mapping):
            stack.extend((c, f"{p}.{k}" if p else str(k)) for k, c in v.items())
        elif isinstance(v, (list, tuple)):
            stack.extend((c, f"{p}[{i}]") for i, c in enumerate(v))
    return None
