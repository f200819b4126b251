"""Reading NIR files safely, graph topology and shape inference, and ``inspect`` output.

``nir.read`` trusts its input: a truncated file, an unknown node type or inconsistent shapes
surface as raw h5py/assertion errors, and its nodes come back in alphabetical order. Here every
such problem is a :class:`~dalif_deploy.errors.DaLifError` naming the file and the place, the
execution order comes from the edges (:func:`topo_order`), and each node's shape is inferred
from the Input node and checked against what the file declares (:func:`infer_shapes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nir
import numpy as np

from dalif_deploy.errors import DaLifError
from dalif_deploy.io import check_input_file

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: NIR node types this project can execute (nir_to_torch) and describe.
SUPPORTED_NODES = ("Input", "Output", "LIF", "CubaLIF", "IF", "LI", "I", "Affine", "Linear",
                   "Scale", "Conv2d", "Flatten", "SumPool2d", "AvgPool2d", "Threshold")
NEURON_NODES = (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.I, nir.Threshold)


def _node_types(d: dict[str, Any], where: str = "") -> None:
    """Reject unknown node types before nir builds them (its errors are unhelpful)."""
    for name, node in d.get("nodes", {}).items():
        t = node.get("type") if isinstance(node, dict) else None
        if isinstance(t, bytes):
            t = t.decode("utf8", "replace")
        if t == "NIRGraph":
            raise DaLifError(f"node {where}{name!r} is a nested subgraph (typically a "
                             "recurrent layer); nested graphs are not supported")
        if t not in SUPPORTED_NODES:
            raise DaLifError(f"unknown or unsupported node type {t!r} at node {where}{name!r}; "
                             f"supported: {', '.join(SUPPORTED_NODES)}")


def read_nir(path: str | Path) -> nir.NIRGraph:
    """Read and validate a ``.nir`` file; every problem is a DaLifError naming the file."""
    path = check_input_file(path, "a NIR graph (.nir)")
    with open(path, "rb") as f:
        head = f.read(8)
    if head != HDF5_SIGNATURE:
        raise DaLifError(f"{path}: not a NIR file (no HDF5 signature)")
    import h5py
    from nir.serialization import hdf2dict

    try:
        with h5py.File(path, "r") as f:
            if "node" not in f:
                raise DaLifError(f"{path}: not a NIR file (no 'node' group)")
            data = hdf2dict(f["node"])
    except DaLifError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/RuntimeError on damaged files
        raise DaLifError(f"{path}: corrupt or truncated NIR file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if data.get("type") != "NIRGraph" or "nodes" not in data or "edges" not in data:
        raise DaLifError(f"{path}: the top-level node is not a NIR graph with nodes and edges")
    try:
        _node_types(data)
    except DaLifError as e:
        raise DaLifError(f"{path}: {e}") from None
    data["type_check"] = False  # we infer and check shapes ourselves, with better messages
    try:
        graph = nir.dict2NIRNode(data)
        for name, node in graph.nodes.items():
            if isinstance(node, nir.Conv2d):
                fix_conv_types(node, name)
    except DaLifError as e:
        raise DaLifError(f"{path}: {e}") from None
    except Exception as e:
        raise DaLifError(f"{path}: malformed NIR node ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else 'bad fields'})"
                         ) from None
    try:
        validate(graph)
    except DaLifError as e:
        raise DaLifError(f"{path}: {e}") from None
    return graph


def _arrays(node: nir.NIRNode) -> dict[str, np.ndarray]:
    skip = {"input_type", "output_type", "metadata", "nodes", "edges"}
    return {k: v for k, v in vars(node).items()
            if k not in skip and isinstance(v, np.ndarray)}


def validate(graph: nir.NIRGraph) -> None:
    """Structure, finite parameters, acyclicity and shapes of an in-memory graph."""
    names = set(graph.nodes)
    for a, b in graph.edges:
        for n in (a, b):
            if n not in names:
                raise DaLifError(f"edge ({a!r} -> {b!r}) names node {n!r} which does not exist")
    if len(set(map(tuple, graph.edges))) != len(graph.edges):
        raise DaLifError("duplicate edges")
    io_nodes(graph)
    for name, node in graph.nodes.items():
        for k, v in _arrays(node).items():
            if v.dtype.kind in "fc" and not np.isfinite(v).all():
                raise DaLifError(f"node {name!r}: parameter {k!r} contains NaN or Inf")
    topo_order(graph)
    infer_shapes(graph)


def io_nodes(graph: nir.NIRGraph) -> tuple[str, str]:
    """The names of the graph's one Input and one Output node (else a DaLifError)."""
    inputs = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    outputs = [k for k, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise DaLifError(f"the graph needs exactly one Input and one Output node, has inputs "
                         f"{inputs} and outputs {outputs}")
    return inputs[0], outputs[0]


def predecessors(graph: nir.NIRGraph) -> dict[str, list[str]]:
    """Incoming edges per node, in file order (their outputs are SUMMED at the node input)."""
    pre: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise DaLifError(f"edge {a} -> {b} names a node that does not exist")
        pre[b].append(a)
    return pre


def topo_order(graph: nir.NIRGraph) -> list[str]:
    """Execution order from the edges (Kahn); a cycle (recurrent edge) is a DaLifError."""
    pre = predecessors(graph)
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
    indeg = {k: len(v) for k, v in pre.items()}
    ready = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) < len(graph.nodes):
        rest = sorted(set(graph.nodes) - set(order))
        orphans = [k for k in rest if not pre[k]]
        if orphans:
            raise DaLifError(f"nodes {orphans} have no incoming edge and are not the Input; "
                             "every node needs a path from the Input")
        # every remaining node waits on another remaining node: they sit on or behind a cycle
        raise DaLifError(f"the graph has a cycle (recurrent edges) involving {rest}; "
                         "recurrent NIR graphs cannot be run by this reference (unroll the "
                         "recurrence or export a feed-forward network)")
    return order


def int_pair(v: Any, what: str, node: str) -> tuple[int, int]:
    """A NIR size parameter (an int or a pair, e.g. a stride) as ``(y, x)``; anything else (None,
    three entries, fractions) is a DaLifError naming ``node``, never cut or rounded silently."""
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2 or not np.all(np.isfinite(a)) or np.any(a != np.rint(a)):
        raise DaLifError(f"node {node}: {what} must be an int or a pair of ints, got {v!r}")
    return int(a[0]), int(a[1])


def _conv_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _param_shape(node: nir.NIRNode) -> tuple[int, ...] | None:
    for k in ("v_threshold", "tau", "tau_mem", "r", "scale", "threshold"):
        v = getattr(node, k, None)
        if isinstance(v, np.ndarray):
            return tuple(v.shape)
    return None


def node_output_shape(name: str, node: nir.NIRNode, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Output shape of ``node`` for input ``shape`` (without batch); DaLifError if they do not
    fit."""
    def bad(why: str) -> DaLifError:
        return DaLifError(f"shape mismatch at node {name!r} ({type(node).__name__}): input "
                          f"{shape}, {why}")

    if isinstance(node, (nir.Input, nir.Output)):
        return shape
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = node.weight
        if w.ndim != 2 or shape != (w.shape[1],):
            raise bad(f"weight {w.shape} expects ({w.shape[1] if w.ndim == 2 else '?'},)")
        b = getattr(node, "bias", None)
        if b is not None and np.shape(b) not in ((w.shape[0],), ()):
            raise bad(f"bias {np.shape(b)} does not match weight {w.shape}")
        return (w.shape[0],)
    if isinstance(node, nir.Conv2d):
        w = node.weight
        if w.ndim != 4 or len(shape) != 3 or shape[0] != w.shape[1] * int(node.groups):
            raise bad(f"weight {w.shape} with groups={node.groups} expects "
                      f"{w.shape[1] * int(node.groups) if w.ndim == 4 else '?'} channels "
                      "as (C, H, W)")
        if isinstance(node.padding, str):
            raise bad("string padding ('same'/'valid') is not supported; use numbers")
        (sy, sx), (py, px), (dy, dx) = (int_pair(getattr(node, k), k, name)
                                        for k in ("stride", "padding", "dilation"))
        return (w.shape[0], _conv_out(shape[1], w.shape[2], sy, py, dy),
                _conv_out(shape[2], w.shape[3], sx, px, dx))
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        if len(shape) != 3:
            raise bad("pooling expects (C, H, W)")
        (ky, kx), (sy, sx), (py, px) = (int_pair(getattr(node, k), k, name)
                                        for k in ("kernel_size", "stride", "padding"))
        return (shape[0], _conv_out(shape[1], ky, sy, py), _conv_out(shape[2], kx, sx, px))
    if isinstance(node, nir.Flatten):
        r = len(shape)
        s, e = int(node.start_dim), int(node.end_dim)
        if not (-r <= s < r and -r <= e < r) or s % r > e % r:
            raise bad(f"start_dim={s}, end_dim={e} are not valid NIR dims (NIR dims exclude "
                      "the batch; a foreign start_dim=1 meant for torch is start_dim=0 here)")
        s, e = s % r, e % r
        return shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]
    if isinstance(node, (*NEURON_NODES, nir.Scale)):
        p = _param_shape(node)
        if p is not None and p not in ((), (1,)) and p != shape:
            raise bad(f"its parameters have shape {p}")
        return shape
    raise DaLifError(f"node {name!r}: unsupported node type {type(node).__name__}; supported: "
                     f"{', '.join(SUPPORTED_NODES)}")


def fix_conv_types(node: nir.Conv2d, name: str = "") -> None:
    """Set a ``nir.Conv2d``'s input/output types from its parameters.

    nir (1.0.8) infers C_in as ``weight.shape[1]`` (wrong for groups > 1) and uses the kernel
    height for both spatial dims (wrong for non-square kernels), then refuses the edges of a
    correct graph; files store no types, so they are recomputed here on every read."""
    if node.input_shape is None:
        return
    w = np.asarray(node.weight)
    hw = tuple(int(d) for d in np.atleast_1d(node.input_shape))
    if w.ndim != 4 or len(hw) != 2:
        raise DaLifError(f"node {name!r}: Conv2d needs a 4-D weight and a 2-D input_shape")
    shape = (w.shape[1] * int(node.groups), *hw)
    node.input_type = {"input": np.array(shape)}
    node.output_type = {"output": np.array(node_output_shape(name, node, shape))}


def _declared(t: dict | None) -> tuple[int, ...] | None:
    if not t:
        return None
    v = next(iter(t.values()))
    return None if v is None else tuple(int(d) for d in np.atleast_1d(v))


def infer_shapes(graph: nir.NIRGraph) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every node, propagated from the Input node; checks that
    summed inputs agree and that declared ``input_type``/``output_type`` match."""
    pre = predecessors(graph)
    shapes: dict[str, tuple[int, ...]] = {}
    for name in topo_order(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            shape = _declared(node.input_type)
            if shape is None:
                raise DaLifError(f"input node {name!r} declares no shape")
        else:
            ins = {p: shapes[p] for p in pre[name]}
            if len(set(ins.values())) != 1:
                raise DaLifError(f"shape mismatch at node {name!r}: its summed inputs have "
                                 f"different shapes {ins}")
            shape = next(iter(ins.values()))
            declared_in = _declared(getattr(node, "input_type", None))
            if declared_in is not None and declared_in != shape:
                raise DaLifError(f"shape mismatch at node {name!r}: it declares input "
                                 f"{declared_in} but receives {shape}")
        out = node_output_shape(name, node, shape)
        declared_out = _declared(getattr(node, "output_type", None))
        if declared_out is not None and declared_out != out and not isinstance(node, nir.Input):
            raise DaLifError(f"shape mismatch at node {name!r}: it declares output "
                             f"{declared_out} but computes {out}")
        shapes[name] = out
    return shapes


def _plain(v: Any) -> Any:
    """Metadata value -> JSON-friendly Python."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 16 else f"array{tuple(v.shape)}"
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf8", "replace")
    return v


def _summary(a: np.ndarray) -> Any:
    a = np.asarray(a)
    if a.size == 0:
        return {"shape": list(a.shape)}
    if a.dtype.kind not in "biuf" or (a.dtype.kind in "biu" and a.size <= 4):
        return _plain(a)
    if np.all(a == a.flat[0]):
        return {"shape": list(a.shape), "value": float(a.flat[0])}
    return {"shape": list(a.shape), "min": float(a.min()), "max": float(a.max()),
            "mean": float(a.mean())}


def describe_nir(path: str | Path) -> dict[str, Any]:
    """What a ``.nir`` file holds: graph metadata, nodes in execution order with type, shapes,
    parameters (shape and range) and metadata, edges, and parameter count."""
    graph = read_nir(path)
    shapes = infer_shapes(graph)
    pre = predecessors(graph)
    nodes = []
    params = 0
    for name in topo_order(graph):
        node = graph.nodes[name]
        arrays = _arrays(node)
        params += sum(int(np.asarray(v).size) for k, v in arrays.items()
                      if k in ("weight", "bias"))
        extra = {k: _plain(getattr(node, k)) for k in ("stride", "padding", "dilation",
                                                       "groups", "start_dim", "end_dim")
                 if hasattr(node, k) and k not in arrays}
        nodes.append({
            "name": name,
            "type": type(node).__name__,
            "inputs": pre[name],
            "input_shape": list(shapes[pre[name][0]]) if pre[name] else list(shapes[name]),
            "output_shape": list(shapes[name]),
            "parameters": {k: _summary(v) for k, v in arrays.items()} | extra,
            "metadata": _plain(node.metadata or {}),
        })
    return {"kind": "nir", "path": str(path), "nir_version": _file_version(path),
            "metadata": _plain(graph.metadata or {}), "nodes": nodes,
            "edges": [list(e) for e in graph.edges], "num_parameters": params}


def _file_version(path: str | Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f["version"][()] if "version" in f else None
        return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))
    except Exception:  # already validated by read_nir; the version is informative only
        return None
