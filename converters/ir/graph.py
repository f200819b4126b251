"""Reading NIR files safely, graph topology and shape inference, and ``inspect`` output.

``nir.read`` trusts its input: a truncated file, an unknown node type or inconsistent shapes
surface as raw h5py/assertion errors, and its nodes come back in alphabetical order. Here every
such problem is a :class:`~dalif_deploy.base.errors.DaLifError` naming the file and the place, the
execution order comes from the edges (:func:`topo_order`), and each node's shape is inferred
from the Input node and checked against what the file declares (:func:`infer_shapes`). What a
node type means (which types exist, their shapes) is the operation table's (:mod:`.nir_ops`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import nir
import numpy as np

from dalif_deploy.base import schema
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.filekind import HDF5_SIGNATURE, expect
from dalif_deploy.base.files import check_input_file
from dalif_deploy.base.resources import (
    INPUT_ELEMENTS_MAX,
    ZIP_RATIO_MAX,
    check_memory,
    format_bytes,
)
from dalif_deploy.base.schema import Check, integer, number, optional, real_array, text
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX

from .nested import flatten_subgraphs
from .ops import op_for, supported_names


def _type_name(node: Any) -> Any:
    t = node.get("type") if isinstance(node, dict) else None
    return t.decode("utf8", "replace") if isinstance(t, bytes) else t


def _node_types(d: dict[str, Any], where: str = "") -> None:
    """Reject unknown node types before nir builds them (its errors are unhelpful)."""
    for name, node in d.get("nodes", {}).items():
        t = _type_name(node)
        if t not in supported_names():
            raise DaLifError(f"unknown or unsupported node type {t!r} at node {where}{name!r}; "
                             f"supported: {', '.join(supported_names())}")


#: graph metadata fields this project reads (others are kept, unchecked)
METADATA_SCHEMA: dict[str, tuple[Check, bool]] = {
    "timesteps": (lambda v, w: integer(v, w, 1, TIMESTEPS_MAX), False),
    "dt": (lambda v, w: number(v, w, 0.0, lo_open=True), False),
    "input_encoding": (lambda v, w: text(v, w, ("analog", "events")), False),
    "producer": (text, False),
    "dataset": (optional(text), False),
}
_SMALL_DATASET = 1 << 20  # bytes any dataset may declare regardless of its storage


def _check_declared_sizes(f: Any, path: Path) -> None:
    """Walk the HDF5 tree before reading any data: every dataset's declared size
    (shape x itemsize) must be backed by its storage (at most ZIP_RATIO_MAX times it, for
    compressed chunks; a fill-value dataset has none), complex data is refused, and the total
    must fit in memory."""
    import h5py

    total = 0
    problems: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset) or problems:
            return
        nbytes = int(np.prod(obj.shape, dtype=np.float64)) * obj.dtype.itemsize
        storage = obj.id.get_storage_size()
        if nbytes > max(ZIP_RATIO_MAX * storage, _SMALL_DATASET):
            problems.append(f"dataset {name!r} declares shape {obj.shape} "
                            f"({format_bytes(nbytes)}) backed by {format_bytes(storage)} of "
                            "data (a fill-value or damaged dataset); refusing to read it")
        elif obj.dtype.kind == "c":
            problems.append(f"dataset {name!r} is complex ({obj.dtype}); NIR parameters must "
                            "be real (complex values are not cast silently)")
        nonlocal total
        total += nbytes

    f.visititems(visit)
    if problems:
        raise DaLifError(f"{path}: {problems[0]}")
    check_memory(total, f"{path}: reading the NIR graph")


def read_nir(path: str | Path) -> nir.NIRGraph:
    """Read and validate a ``.nir`` file; every problem is a DaLifError naming the file."""
    path = check_input_file(path, "a NIR graph (.nir)")
    expect(path, "nir", "a NIR graph (.nir)")
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
            _check_declared_sizes(f, path)
            data = hdf2dict(f["node"])
    except DaLifError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/RuntimeError on damaged files
        raise DaLifError(f"{path}: corrupt or truncated NIR file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if data.get("type") != "NIRGraph" or "nodes" not in data or "edges" not in data:
        raise DaLifError(f"{path}: the top-level node is not a NIR graph with nodes and edges")
    try:
        flatten_subgraphs(data)
        _node_types(data)
    except DaLifError as e:
        raise DaLifError(f"{path}: {e}") from None
    data["type_check"] = False  # we infer and check shapes ourselves, with better messages
    try:
        graph = nir.dict2NIRNode(data)
        for name, node in graph.nodes.items():
            op_for(node, name).repair(name, node)
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


def _positive(node: nir.NIRNode, name: str, fields: tuple[str, ...], strict: bool) -> None:
    for k in fields:
        v = getattr(node, k, None)
        if v is None:
            continue
        a = np.asarray(v)
        if a.dtype.kind in "biuf" and a.size and (np.any(a <= 0) if strict else np.any(a < 0)):
            raise DaLifError(f"node {name!r} ({type(node).__name__}): {k} must be "
                             f"{'> 0' if strict else '>= 0'}, got min {a.min():g}")


def check_values(name: str, node: nir.NIRNode) -> None:
    """The value rules every path shares (nir, norse and emulator backends, quantize, inspect):
    parameters real and finite, time constants > 0, thresholds >= 0."""
    for k, v in _arrays(node).items():
        real_array(v, f"node {name!r}: parameter {k!r}")
    _positive(node, name, ("tau", "tau_mem", "tau_syn"), strict=True)
    if isinstance(node, (nir.LIF, nir.CubaLIF, nir.IF)):
        _positive(node, name, ("v_threshold",), strict=False)


def check_metadata(graph: nir.NIRGraph) -> None:
    """The graph metadata fields we read, checked against :data:`METADATA_SCHEMA`."""
    meta = graph.metadata if graph.metadata is not None else {}
    # foreign exporters (and ours) write fields of their own: those are kept, unchecked
    schema.validate(meta, METADATA_SCHEMA, "metadata", keep_unknown=True)


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
    check_metadata(graph)
    for name, node in graph.nodes.items():
        for k, v in _arrays(node).items():
            if v.dtype.kind in "fc" and not np.isfinite(v).all():
                raise DaLifError(f"node {name!r}: parameter {k!r} contains NaN or Inf")
        check_values(name, node)
    topo_order(graph)
    infer_shapes(graph)


def _ends(graph: nir.NIRGraph) -> tuple[list[str], list[str]]:
    """Names of the Input nodes and of the Output nodes (graph structure)."""
    return ([k for k, v in graph.nodes.items() if isinstance(v, nir.Input)],
            [k for k, v in graph.nodes.items() if isinstance(v, nir.Output)])


def io_nodes(graph: nir.NIRGraph) -> tuple[str, str]:
    """The names of the graph's one Input and one Output node (else a DaLifError)."""
    inputs, outputs = _ends(graph)
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


def _cycles(graph: nir.NIRGraph) -> list[list[str]]:
    """The graph's strongly connected components that hold a cycle (Tarjan, iterative), each
    in file order of its nodes."""
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    for root in graph.nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on.add(v)
            if i < len(succ[v]):
                work.append((v, i + 1))
                w = succ[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in succ[v]:
                    members = set(comp)
                    comps.append([k for k in graph.nodes if k in members])
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return comps


def recurrent_edges(graph: nir.NIRGraph) -> list[tuple[str, str]]:
    """The edges that carry a value from the previous time step (docs/DESIGN.md section 3.1).

    Every cycle must pass through exactly one neuron (a stateful node, e.g. ``lif1.lif`` in
    snnTorch's ``lif1.lif -> lif1.w_rec -> lif1.lif``): the edges from that neuron into its own
    cycle carry its output of step t-1 (zero at step 0), the one-step delay of snnTorch's
    RLeaky/RSynaptic and Norse's recurrent cells. Anything else is a DaLifError saying why: a
    cycle of stateless nodes has no step to take its value from (an algebraic loop), and a
    cycle through several neurons leaves open which edge is delayed (exporters disagree)."""
    return [(a, b) for n, members in _loops(graph) for a, b in graph.edges
            if a == n and b in members]


def _loops(graph: nir.NIRGraph) -> list[tuple[str, set[str]]]:
    """Each cycle's neuron and the nodes of its strongly connected component (the rules:
    :func:`recurrent_edges`)."""
    out: list[tuple[str, set[str]]] = []
    for comp in _cycles(graph):
        members = set(comp)
        neurons = [k for k in comp if op_for(graph.nodes[k], k).neuron]
        if len(neurons) != 1:
            why = ("no neuron in it: a loop of stateless nodes has no previous step to read, "
                   "so its value is undefined (an algebraic loop); put the neuron layer it "
                   "belongs to in the loop" if not neurons else
                   f"{len(neurons)} neurons {neurons} in it: which of its edges carries the "
                   "one-step delay is not defined for such loops (simulators differ); only "
                   "recurrence through a single neuron layer is supported (a layer feeding "
                   "itself, as snnTorch's RLeaky/RSynaptic and Norse's recurrent cells)")
            raise DaLifError(f"the graph has a cycle through {comp} with {why}")
        out.append((neurons[0], members))
    return out


def _kahn(graph: nir.NIRGraph, cut: set[tuple[str, str]]) -> list[str]:
    """Topological order of the graph without the edges ``cut``: the Input first, then any node
    whose remaining inputs are all placed."""
    pre: dict[str, list[str]] = {k: [] for k in graph.nodes}
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        if (a, b) not in cut:
            pre[b].append(a)
            succ[a].append(b)
    indeg = {k: len(v) for k, v in pre.items()}
    inputs = _ends(graph)[0]
    cut_only = [k for k in graph.nodes if not pre[k] and k not in inputs
                and any(b == k for _, b in cut)]  # fed by the previous step only
    ready = inputs + cut_only
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
        raise DaLifError(f"nodes {rest} are not reachable from the Input")  # (cycles: above)
    return order


def loop_nodes(graph: nir.NIRGraph) -> list[str]:
    """The nodes of recurrent loops other than their neurons, in file order."""
    inside = {k for n, members in _loops(graph) for k in members if k != n}
    return [k for k in graph.nodes if k in inside]


def _closing_edges(graph: nir.NIRGraph) -> set[tuple[str, str]]:
    """The edges that close each loop back into its neuron (the other end of the loop from
    :func:`recurrent_edges`)."""
    return {(a, b) for n, members in _loops(graph) for a, b in graph.edges
            if b == n and a in members}


def reading_order(graph: nir.NIRGraph) -> list[str]:
    """The nodes in the order a reader follows them (each loop after its neuron): the
    topological order without the edges that close loops; shapes are inferred in it."""
    return _kahn(graph, _closing_edges(graph))


def topo_order(graph: nir.NIRGraph) -> list[str]:
    """Execution order from the edges (Kahn), the recurrent edges (:func:`recurrent_edges`,
    read from the previous step) left out; a cycle they do not break is a DaLifError."""
    return _kahn(graph, set(recurrent_edges(graph)))


def node_output_shape(name: str, node: nir.NIRNode, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Output shape of ``node`` for input ``shape`` (without batch), from its op in the table;
    DaLifError if they do not fit or the type is unsupported."""
    return op_for(node, name).output_shape(name, node, shape)


def _declared(t: dict | None, where: str = "declared shape") -> tuple[int, ...] | None:
    """A declared input/output type as a shape: positive whole numbers (``8.5`` or ``"a"`` is
    a DaLifError, never truncated)."""
    if not t:
        return None
    v = next(iter(t.values()))
    return None if v is None else schema.shape(np.atleast_1d(v), where)


def output_classes(graph: nir.NIRGraph) -> int:
    """The number of classes a graph tells apart: the size of its Output node."""
    return math.prod(infer_shapes(graph)[io_nodes(graph)[1]])


def infer_shapes(graph: nir.NIRGraph) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every node, propagated from the Input node; checks that
    summed inputs agree and that declared ``input_type``/``output_type`` match."""
    pre = predecessors(graph)
    inputs = _ends(graph)[0]
    shapes: dict[str, tuple[int, ...]] = {}
    # a loop's neuron takes its shape from its inputs from outside the loop; the edges closing
    # the loop back into it are checked against that once the loop's nodes have theirs
    closing = _closing_edges(graph)
    for name in _kahn(graph, closing):
        node = graph.nodes[name]
        if name in inputs:
            shape = _declared(node.input_type, f"input node {name!r}: shape")
            if shape is None:
                raise DaLifError(f"input node {name!r} declares no shape")
        else:
            ins = {p: shapes[p] for p in pre[name] if (p, name) not in closing}
            if not ins:
                raise DaLifError(f"node {name!r} receives input only from its own loop "
                                 f"({pre[name]}); it needs a path from the Input")
            if len(set(ins.values())) != 1:
                raise DaLifError(f"shape mismatch at node {name!r}: its summed inputs have "
                                 f"different shapes {ins}")
            shape = next(iter(ins.values()))
            declared_in = _declared(getattr(node, "input_type", None))
            if declared_in is not None and declared_in != shape:
                raise DaLifError(f"shape mismatch at node {name!r}: it declares input "
                                 f"{declared_in} but receives {shape}")
        out = node_output_shape(name, node, shape)
        if int(np.prod(out, dtype=np.float64)) > INPUT_ELEMENTS_MAX:
            raise DaLifError(f"node {name!r}: its output {out} has "
                             f"{int(np.prod(out, dtype=np.float64)):,} elements per sample, "
                             f"more than the {INPUT_ELEMENTS_MAX:,} allowed")
        declared_out = _declared(getattr(node, "output_type", None))
        if declared_out is not None and declared_out != out and name not in inputs:
            raise DaLifError(f"shape mismatch at node {name!r}: it declares output "
                             f"{declared_out} but computes {out}")
        shapes[name] = out
    for a, b in closing:
        want = shapes[next(p for p in pre[b] if (p, b) not in closing)]
        if shapes[a] != want:
            raise DaLifError(f"shape mismatch at node {b!r}: the recurrent input from {a!r} "
                             f"has shape {shapes[a]}, its other inputs {want}")
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
    """What a ``.nir`` file holds: graph metadata, nodes in reading order with type, shapes,
    parameters (shape and range) and metadata, edges, parameter count, and whether the graph
    is recurrent (then its recurrent edges, :func:`recurrent_edges`)."""
    graph = read_nir(path)
    shapes = infer_shapes(graph)
    pre = predecessors(graph)
    nodes = []
    params = 0
    for name in reading_order(graph):
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
    rec = recurrent_edges(graph)
    return {"kind": "nir", "path": str(path), "nir_version": _file_version(path),
            "metadata": _plain(graph.metadata or {}), "nodes": nodes,
            "edges": [list(e) for e in graph.edges], "num_parameters": params,
            "recurrent": bool(rec),
            **({"recurrent_edges": [list(e) for e in rec],
                "recurrence": "each recurrent edge carries its neuron's output of the previous "
                              "step (zero at step 0)"} if rec else {})}


def _file_version(path: str | Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f["version"][()] if "version" in f else None
        return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))
    except Exception:  # already validated by read_nir; the version is informative only
        return None
