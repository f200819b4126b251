"""Fuse the linear NIR nodes between two neuron layers into one conv or dense map.

A NIR graph alternates neuron nodes (``LIF``) with chains of linear nodes (the ``linear`` ops
of :mod:`.nir_ops`: ``Conv2d``, ``Affine``, ``Linear``, ``AvgPool2d``, ``SumPool2d``,
``Flatten``, ``Scale``).
Every input of a neuron layer is a sum over *paths* from a source (the graph input or another
neuron layer) through such a chain. :func:`graph_paths` lists those paths; :func:`fuse_path`
turns one into a single convolution (pooling-then-conv composes exactly into a larger strided
kernel) or, when no single conv reproduces it, a dense matrix. Every fusion is verified on a
random probe in float64 before it is accepted. Biases are not split over paths:
:func:`zero_input_response` gives the total offset a layer receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np
import torch
import torch.nn.functional as F
from dalif_deploy.converters.ir.graph import predecessors
from dalif_deploy.converters.ir.ops import OPS, op_for

from dalif_deploy.base.errors import DaLifError

DENSE_MAX_ELEMENTS = 2**26  # largest dense fallback matrix we build
DENSE_PROBE_BYTES = 2**27  # float64 probes one chunk of the dense construction may hold
DENSE_FORWARD_WORK = 2**34  # element operations of n_in forward passes before rows go backward


def linear_names() -> list[str]:
    """The node types fusion composes (the table's ``linear`` ops)."""
    return [op.name for op in OPS.values() if op.linear]


def is_linear(node: nir.NIRNode) -> bool:
    """Whether fusion may compose ``node`` into a path (its op is ``linear``)."""
    return op_for(node).linear


def apply_node(node: nir.NIRNode, name: str, x: torch.Tensor, bias: bool = True
               ) -> torch.Tensor:
    """Apply one linear NIR node to a float64 batch ``[B, *shape]`` (its op's function)."""
    op = op_for(node, name)
    if not op.linear:
        raise DaLifError(f"node {name}: {type(node).__name__} is not supported between neuron "
                         f"layers (supported: {', '.join(linear_names())})")
    return op.function(name, node, torch.float64, bias)(x)


@dataclass
class Path:
    """A chain ``source -> nodes[0] -> ... -> nodes[-1] -> target`` of linear nodes."""

    source: str
    nodes: list[str] = field(default_factory=list)


def graph_paths(graph: nir.NIRGraph, target: str, is_source) -> list[Path]:
    """All linear paths into ``target`` (sources are nodes where ``is_source(name)``)."""
    pred = predecessors(graph)
    out: list[Path] = []

    def walk(node: str, suffix: list[str], seen: frozenset) -> None:
        if not pred[node]:
            raise DaLifError(f"node {node} has no input; the graph is disconnected")
        for p in pred[node]:
            if is_source(p):
                out.append(Path(p, list(suffix)))
            elif p in seen:
                raise DaLifError(f"linear nodes form a cycle through {p}; recurrence needs a "
                                 "neuron layer in the loop")
            elif is_linear(graph.nodes[p]):
                walk(p, [p, *suffix], seen | {p})
            else:
                raise DaLifError(f"node {p} ({type(graph.nodes[p]).__name__}) is not "
                                 "supported; supported layers: LIF and linear nodes "
                                 f"{linear_names()}")

    walk(target, [], frozenset({target}))
    return out


def zero_input_response(graph: nir.NIRGraph, target: str, shapes: dict[str, tuple[int, ...]],
                        is_source) -> np.ndarray:
    """The input ``target`` receives when every source is silent: the summed biases."""
    pred = predecessors(graph)

    def summed_input(node: str) -> torch.Tensor:  # NIR sums a node's incoming edges
        total, *rest = (value(p) for p in pred[node])
        for y in rest:
            total = total + y
        return total

    def value(node: str) -> torch.Tensor:
        if is_source(node):
            return torch.zeros((1, *shapes[node]), dtype=torch.float64)
        return apply_node(graph.nodes[node], node, summed_input(node))

    return summed_input(target)[0].numpy()


def path_function(graph: nir.NIRGraph, path: Path):
    """The bias-free linear map of ``path`` on float64 batches."""
    def f(x: torch.Tensor) -> torch.Tensor:
        for n in path.nodes:
            x = apply_node(graph.nodes[n], n, x, bias=False)
        return x
    return f


@dataclass
class Fused:
    """One path as a single linear map: ``kind`` conv (torch layout) or dense [n_out, n_in]."""

    kind: str
    weight: np.ndarray
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


def _conv_geometry(graph: nir.NIRGraph, path: Path) -> tuple[int, int, int, int, int, int] | None:
    """(kh, kw, sh, sw, ph, pw) of the composed conv, or None if the chain is not spatial."""
    k, s, p = [1, 1], [1, 1], [0, 0]
    for n in path.nodes:
        window = op_for(graph.nodes[n], n).window(n, graph.nodes[n])
        if window is None:
            return None
        kk, ss, pp = window
        for i in range(2):
            k[i] += (kk[i] - 1) * s[i]
            p[i] += pp[i] * s[i]
            s[i] *= ss[i]
    return k[0], k[1], s[0], s[1], p[0], p[1]


def _try_conv(f, in_shape, out_shape, geom) -> np.ndarray | None:
    kh, kw, sh, sw, ph, pw = geom
    c_in, c_out = in_shape[0], out_shape[0]
    i0, j0 = -(-ph // sh), -(-pw // sw)
    hc, wc = i0 * sh - ph + kh + 2 * sh, j0 * sw - pw + kw + 2 * sw
    x = torch.zeros((c_out, c_in, hc, wc), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        y = f(x)
        if y.dim() != 4 or y.shape[2] <= i0 or y.shape[3] <= j0:
            return None
        y[torch.arange(c_out), torch.arange(c_out), i0, j0].sum().backward()
    r0, c0 = i0 * sh - ph, j0 * sw - pw
    kernel = x.grad[:, :, r0:r0 + kh, c0:c0 + kw].clone()
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn((2, *in_shape), dtype=torch.float64, generator=gen)
    ref = f(probe)
    got = F.conv2d(probe, kernel, None, (sh, sw), (ph, pw))
    if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-9, atol=1e-9):
        return None
    return kernel.numpy()


def _widest(graph: nir.NIRGraph, path: Path, in_shape: tuple[int, ...]) -> int:
    """Elements one sample occupies along ``path``: its input and every node's output (on the
    meta device: nothing is computed or allocated)."""
    x = torch.zeros((1, *in_shape), dtype=torch.float64, device="meta")
    total = x.numel()
    for n in path.nodes:
        x = apply_node(graph.nodes[n], n, x, bias=False)
        total += x.numel()
    return total


def _dense(f, in_shape, out_shape, where: str, widest: int) -> np.ndarray:
    """The matrix ``[n_out, n_in]`` of the linear map ``f``, built in chunks of probes whose
    memory is bounded by :data:`DENSE_PROBE_BYTES` (``widest``: elements one probe occupies
    along the path), so that memory grows with n_in, not n_in^2.

    Columns come from forward passes of unit vectors: per column the very arithmetic of one
    ``f(eye)`` batch, so the matrix (and every integer quantised from it) is the same float64
    as before chunking. Only when n_in forward passes would cost more than
    :data:`DENSE_FORWARD_WORK` element operations and there are fewer outputs, rows come from
    n_out backward passes instead; these can differ from the forward columns by one ulp where a
    pool divides by a non-power of two (``W / 9`` against ``W * (1 / 9)``)."""
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    if n_in * n_out > DENSE_MAX_ELEMENTS:
        raise DaLifError(f"{where}: the linear map {in_shape} -> {out_shape} cannot be fused "
                         f"into one conv and is too large for a dense matrix ({n_out}x{n_in}); "
                         "restructure the layers between these neuron layers")
    # autograd keeps each node's input for the backward pass: twice the path per probe
    chunk = max(1, DENSE_PROBE_BYTES // (2 * 8 * widest))
    matrix = torch.empty((n_out, n_in), dtype=torch.float64)
    if n_out < n_in and n_in * widest > DENSE_FORWARD_WORK:
        for j0 in range(0, n_out, chunk):
            k = min(chunk, n_out - j0)
            x = torch.zeros((k, *in_shape), dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                y = f(x).reshape(k, n_out)
            pick = torch.zeros((k, n_out), dtype=torch.float64)
            pick[torch.arange(k), torch.arange(j0, j0 + k)] = 1.0
            (rows,) = torch.autograd.grad(y, x, pick)
            matrix[j0:j0 + k] = rows.reshape(k, n_in)
    else:
        with torch.no_grad():
            for i0 in range(0, n_in, chunk):
                k = min(chunk, n_in - i0)
                unit = torch.zeros((k, n_in), dtype=torch.float64)
                unit[torch.arange(k), torch.arange(i0, i0 + k)] = 1.0
                matrix[:, i0:i0 + k] = f(unit.reshape(k, *in_shape)).reshape(k, n_out).T
    return matrix.numpy()


def fusion_bytes(graph: nir.NIRGraph, path: Path, in_shape: tuple[int, ...],
                 out_shape: tuple[int, ...]) -> int:
    """Bytes :func:`fuse_path` will hold at most for ``path`` (float64 throughout): for a
    spatial chain the conv probe (``c_out`` probes of the composed window through the path,
    kept for the backward pass, and their gradient), else the dense matrix twice (torch and
    numpy) and one chunk of probes (0 past DENSE_MAX_ELEMENTS: refused, not built). Counted on
    the meta device: nothing is allocated."""
    if not path.nodes:
        return 0
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    geom = _conv_geometry(graph, path) if len(in_shape) == len(out_shape) == 3 else None
    if geom is None:
        if n_in * n_out > DENSE_MAX_ELEMENTS:
            return 0
        return 2 * 8 * n_in * n_out + min(DENSE_PROBE_BYTES, 2 * 8 * max(n_in, n_out)
                                          * _widest(graph, path, in_shape))
    kh, kw, sh, sw, ph, pw = geom
    window = (in_shape[0], -(-ph // sh) * sh - ph + kh + 2 * sh,
              -(-pw // sw) * sw - pw + kw + 2 * sw)
    try:
        return 2 * 8 * out_shape[0] * _widest(graph, path, window)
    except (RuntimeError, ValueError, DaLifError):  # the window does not fit the path's ops
        return 0


def fuse_path(graph: nir.NIRGraph, path: Path, in_shape: tuple[int, ...],
              out_shape: tuple[int, ...], where: str) -> Fused:
    """Fuse ``path`` (bias-free) into one conv if exact, else a dense matrix."""
    f = path_function(graph, path)
    if len(in_shape) == 3 and len(out_shape) == 3:
        if not path.nodes:
            c = in_shape[0]
            return Fused("conv", np.eye(c).reshape(c, c, 1, 1), in_shape, out_shape)
        geom = _conv_geometry(graph, path)
        if geom is not None:
            kernel = _try_conv(f, in_shape, out_shape, geom)
            if kernel is not None:
                return Fused("conv", kernel, in_shape, out_shape, geom[2:4], geom[4:6])
    return Fused("dense", _dense(f, in_shape, out_shape, where, _widest(graph, path, in_shape)),
                 in_shape, out_shape)
