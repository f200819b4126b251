"""Fuse the linear NIR nodes between two neuron layers into one conv or dense map.

A NIR graph alternates neuron nodes (``LIF``) with chains of linear nodes (``Conv2d``,
``Affine``, ``Linear``, ``AvgPool2d``, ``SumPool2d``, ``Flatten``, ``Scale``, ``Identity``).
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

from dalif_deploy.errors import DaLifError

from .nir_graph import int_pair, predecessors

_IDENTITY = tuple(c for c in (getattr(nir, "Identity", None),) if c is not None)
LINEAR_NODES = (nir.Conv2d, nir.Affine, nir.Linear, nir.AvgPool2d, nir.SumPool2d, nir.Flatten,
                nir.Scale, *_IDENTITY)
DENSE_MAX_ELEMENTS = 2**26  # largest dense fallback matrix we build


def apply_node(node: nir.NIRNode, name: str, x: torch.Tensor, bias: bool = True
               ) -> torch.Tensor:
    """Apply one linear NIR node to a float64 batch ``[B, *shape]``."""
    if isinstance(node, nir.Conv2d):
        w = torch.as_tensor(np.asarray(node.weight, np.float64))
        if x.dim() != 4 or w.dim() != 4:
            raise DaLifError(f"node {name}: Conv2d needs [C, H, W] input, got {list(x.shape[1:])}")
        b = (torch.as_tensor(np.asarray(node.bias, np.float64)).reshape(-1)
             if bias and node.bias is not None and np.size(node.bias) else None)
        return F.conv2d(x, w, b, *(int_pair(getattr(node, k), k, name)
                                   for k in ("stride", "padding", "dilation")), int(node.groups))
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.as_tensor(np.asarray(node.weight, np.float64))
        if w.dim() != 2 or x[0].numel() != w.shape[1]:
            raise DaLifError(f"node {name}: weight {list(w.shape)} cannot take input of shape "
                             f"{list(x.shape[1:])}")
        y = x.reshape(x.shape[0], -1) @ w.T
        if bias and isinstance(node, nir.Affine):
            y = y + torch.as_tensor(np.asarray(node.bias, np.float64)).reshape(-1)
        return y
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        if x.dim() != 4:
            raise DaLifError(f"node {name}: pooling needs [C, H, W] input")
        k, s, p = (int_pair(getattr(node, a), a, name) for a in ("kernel_size", "stride",
                                                                  "padding"))
        div = 1 if isinstance(node, nir.SumPool2d) else None
        return F.avg_pool2d(x, k, s, p, count_include_pad=True, divisor_override=div)
    if isinstance(node, nir.Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(node, nir.Scale):
        return x * torch.as_tensor(np.asarray(node.scale, np.float64))
    if isinstance(node, _IDENTITY):
        return x
    raise DaLifError(f"node {name}: {type(node).__name__} is not supported between neuron "
                     "layers (supported: Conv2d, Affine, Linear, AvgPool2d, SumPool2d, "
                     "Flatten, Scale, Identity)")


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
            elif isinstance(graph.nodes[p], LINEAR_NODES):
                walk(p, [p, *suffix], seen | {p})
            else:
                raise DaLifError(f"node {p} ({type(graph.nodes[p]).__name__}) is not "
                                 "supported; supported layers: LIF and linear nodes "
                                 f"{[c.__name__ for c in LINEAR_NODES]}")

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
        node = graph.nodes[n]
        if isinstance(node, nir.Conv2d):
            w = np.asarray(node.weight)
            d = int_pair(node.dilation, "dilation", n)
            kk = [(w.shape[2] - 1) * d[0] + 1, (w.shape[3] - 1) * d[1] + 1]
            ss, pp = int_pair(node.stride, "stride", n), int_pair(node.padding, "padding", n)
        elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            kk, ss, pp = (int_pair(getattr(node, a), a, n) for a in ("kernel_size", "stride",
                                                                      "padding"))
        elif isinstance(node, _IDENTITY):
            continue
        else:
            return None
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


def _dense(f, in_shape, out_shape, where: str) -> np.ndarray:
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    if n_in * n_out > DENSE_MAX_ELEMENTS:
        raise DaLifError(f"{where}: the linear map {in_shape} -> {out_shape} cannot be fused "
                         f"into one conv and is too large for a dense matrix ({n_out}x{n_in}); "
                         "restructure the layers between these neuron layers")
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
    return f(eye).reshape(n_in, n_out).T.contiguous().numpy()


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
    return Fused("dense", _dense(f, in_shape, out_shape, where), in_shape, out_shape)
