"""``inspect`` of the files dalif-deploy writes that are not models: a netx network (.h5), a data
set (.npz from ``dataset``) and the JSON results of verify, sweep and compare. Each describer
reads what it shows and nothing heavier (no torch: these run in a light ``inspect``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dalif_deploy.base.errors import DaLifError

#: the largest HDF5 dataset whose values ``inspect`` shows (others: shape and dtype only)
_SMALL = 64


def _h5_value(ds: Any) -> Any:
    """A small dataset's value as plain JSON types; a large one as its shape and dtype."""
    import numpy as np

    if ds.size > _SMALL:
        return {"shape": list(ds.shape), "dtype": str(ds.dtype)}
    v = ds[()]
    if isinstance(v, bytes):
        return v.decode("utf8", "replace")
    return np.asarray(v).tolist()


def describe_netx(path: str | Path) -> dict[str, Any]:
    """A netx HDF5 file: its load arguments (root attributes) and each layer's type, shape,
    weight shape and neuron."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain_attr(v) for k, v in f.attrs.items()}
            group = f["layer"]
            layers = []
            for key in sorted(group.keys(), key=lambda k: (len(k), k)):
                g = group[key]
                entry: dict[str, Any] = {"layer": key}
                for name in sorted(g.keys()):
                    item = g[name]
                    if isinstance(item, h5py.Group):  # the neuron: its small fields
                        entry[name] = {k: _h5_value(item[k]) for k in sorted(item.keys())
                                       if isinstance(item[k], h5py.Dataset)}
                    elif item.size > _SMALL:
                        entry[f"{name}_shape"] = list(item.shape)
                    else:
                        entry[name] = _h5_value(item)
                layers.append(entry)
    except DaLifError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py's errors on damaged files vary
        raise DaLifError(f"{path}: corrupt or truncated netx file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    return {"kind": "netx", "file": str(path), "attributes": attrs, "layers": layers}


def _plain_attr(v: Any) -> Any:
    import numpy as np

    if isinstance(v, bytes):
        return v.decode("utf8", "replace")
    return np.asarray(v).tolist() if isinstance(v, np.ndarray | np.generic) else v


def describe_dataset(path: str | Path) -> dict[str, Any]:
    """A data set .npz (validated as a data set is when used): samples, shapes, encoding,
    labels per class."""
    import numpy as np

    from dalif_deploy.datasets.loaders import load_npz_dataset

    ds = load_npz_dataset(path)
    counts = np.bincount(ds.y, minlength=ds.num_classes)
    return {"kind": "dataset", "file": str(path), "samples": len(ds),
            "x": {"shape": list(ds.x.shape), "dtype": str(ds.x.dtype),
                  "min": float(ds.x.min()), "max": float(ds.x.max())},
            "encoding": ds.encoding, "input_shape": list(ds.input_shape),
            **({"timesteps": int(ds.x.shape[1])} if ds.x.ndim > len(ds.input_shape) + 1
               else {}),
            "num_classes": ds.num_classes, "labels_per_class": counts.tolist(),
            "normalization": ds.normalization}


#: per result kind, the top-level keys ``inspect`` shows (lists of rows shown as tables)
_RESULT_FIELDS = {
    "verify-result": ("passed", "checkpoint", "model", "reference", "dataset", "samples",
                      "timesteps", "weight_bits", "float_accuracy", "fixed_accuracy",
                      "lava_accuracy",
                      "prediction_agreement", "checks", "seconds"),
    "sweep-result": ("checkpoint", "model", "dataset", "samples", "timesteps", "rows",
                     "seconds"),
    "compare-result": ("settings", "table"),
}


def describe_result(path: str | Path, kind: str) -> dict[str, Any]:
    """The headline fields of a verify, sweep or compare JSON (``--json`` of inspect: the
    whole file is the file itself)."""
    from dalif_deploy.base.files import check_input_file

    path = check_input_file(path, "a result JSON")
    d = json.loads(Path(path).read_bytes())  # sniffed already: a bounded, parsable object
    return {"kind": kind, "file": str(path),
            **{k: d[k] for k in _RESULT_FIELDS[kind] if k in d}}
