"""PyTorch (single-step DA-LIF network) -> NIR graph.

Encoding (docs/DESIGN.md section 3), the contract every NIR consumer of this project relies on:

* each neuron layer becomes its model's NIR node (``NeuronModel.to_nir``); a
  :class:`~dalif_deploy.neurons.dalif.DALIF` layer a ``nir.LIF`` (Euler, ``dt = 1``) with
  ``tau = 1/(1-beta)``, ``r = alpha/(1-beta)``, ``v_leak = 0``, ``v_reset = 0``,
  ``v_threshold = v_th``, every array of the full neuron shape ((C,H,W) after a conv, (N,)
  after a linear); node metadata records the neuron model, dt, discretisation, spike
  condition ``>=``, reset and the effective alpha/beta; a recurrent layer
  (``NeuronModule.make_recurrent``) adds a ``nir.Linear`` ``<layer>.w_rec`` in the loop
  ``<layer> -> <layer>.w_rec -> <layer>``. With ``dt = 1`` the NIR Euler update
  ``v += dt/tau * (v_leak - v + r*I)`` is exactly ``V = beta*H + alpha*X``. PLIF and LIF
  layers are ``nir.LIF`` nodes too, with ``r = 1`` (``tau = 1/k``; ``tau``): see their modules.
* ``BatchNorm2d/1d`` is folded into the preceding ``Conv2d``/``Linear`` (which must feed only it);
* ``Conv2d`` -> ``nir.Conv2d``; ``Linear`` -> ``nir.Affine`` (zero bias when it has none);
  ``AvgPool2d`` -> ``nir.AvgPool2d``; ``Flatten`` -> ``nir.Flatten`` (dims without the batch);
  ``Conv1d``/``AvgPool1d`` -> the height-1 ``nir.Conv2d``/``nir.AvgPool2d`` (kernel ``(1, k)``)
  on 1-D maps written ``(C, 1, L)``, the graph input included (1-D data ``[N, C, L]`` fit it:
  :func:`~dalif_deploy.base.geometry.fit_frames`);
  ``Identity`` and dropout (eval mode: the identity) disappear; nested ``Sequential`` and
  ``ModuleList`` are traced through; ``torch.cat`` along channels into a ``Conv2d``
  (groups 1) or ``Linear`` becomes one node per part, holding its slice of the input
  channels and summing into the consumer (the first part carries the bias); ``a + b``
  becomes several edges into the consumer (NIR sums all
  incoming edges); the final readout ``Linear`` is an ``Affine`` into the ``Output``.
* all parameters are stored as float64, computed from the float32 model in float64, so the
  effective alpha and beta are recovered exactly (``1 - dt/tau`` and ``dt*r/tau`` round back
  to the float32 decays).

Anything else (an unsupported module or function, a BN that cannot be folded, a DA-LIF called
twice) stops the export with a :class:`~dalif_deploy.base.errors.DaLifError` naming it.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from dalif_deploy.converters.ir.graph import validate
from dalif_deploy.converters.ir.neuron_math import int_pair
from dalif_deploy.converters.ir.ops import fix_conv_types
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from dalif_deploy.base.encoding import ANALOG, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import atomic_path
from dalif_deploy.base.geometry import lift_1d
from dalif_deploy.neurons import neuron_for_key, neuron_keys
from dalif_deploy.neurons.network import reset_states
from dalif_deploy.neurons.protocol import NeuronModule

ENCODING_VERSION = 1
PRODUCER = "dalif-deploy"
#: the layers the front end maps (every registered neuron model's module among them)
SUPPORTED = ("Conv2d", "Conv1d", "AvgPool1d", "BatchNorm2d", "BatchNorm1d", "Linear",
             "AvgPool2d", "Flatten",
             "Identity", "Dropout/Dropout1d/Dropout2d/AlphaDropout (identity in eval mode)",
             "Sequential/ModuleList (traced through)",
             *(neuron_for_key(k).module_type.__name__ for k in neuron_keys()),
             "+ (residual fan-in)", "torch.flatten",
             "torch.cat along channels into a Conv2d or Linear", "grouped/depthwise Conv2d")
#: what to use instead of a module with no exact deployable form (docs/custom-models.md)
_INSTEAD: dict[type, str] = {
    nn.MaxPool2d: ": a max is no weighted sum, so no Loihi synapse computes it (over binary "
    "spikes it is an OR, which needs an extra neuron layer: one more step of latency and a "
    "population per pooled map); use AvgPool2d (exact, folded into the next layer's weights: "
    "no extra population) or a strided Conv2d (learned; k*k*C_in*C_out more weights)",
}
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _one(v: int | tuple[int, ...]) -> int:
    """A 1-D layer's size argument (torch stores them as 1-tuples)."""
    return int(v[0] if isinstance(v, (tuple, list)) else v)


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps neuron layers as leaves (their state is not traceable)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, NeuronModule) or super().is_leaf_module(m, qualname)


def _f64(t: torch.Tensor | float) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().to(torch.float64).numpy().copy()
    return np.asarray(t, dtype=np.float64)


def _fold_bn(node: nir.NIRNode, bn: nn.modules.batchnorm._BatchNorm, name: str,
             offset: bool = True) -> None:
    """Fold eval-mode batch-norm into the weights and bias of ``node`` (in place, float64);
    ``offset=False`` for the parts of a split layer but the first (which carries the shift)."""
    if bn.running_mean is None or bn.running_var is None:
        raise DaLifError(f"batch-norm {name!r} tracks no running statistics; it cannot be "
                         "folded (use track_running_stats=True)")
    mean, var = _f64(bn.running_mean), _f64(bn.running_var)
    gamma = _f64(bn.weight) if bn.weight is not None else np.ones_like(mean)
    shift = _f64(bn.bias) if bn.bias is not None else np.zeros_like(mean)
    if not (var + float(bn.eps) > 0).all():  # also catches NaN
        raise DaLifError(f"batch-norm {name!r}: running_var + eps must be positive (smallest "
                         f"{np.nanmin(var) + bn.eps:g}); its running statistics are corrupt, "
                         "retrain or repair the checkpoint")
    scale = gamma / np.sqrt(var + float(bn.eps))
    w = node.weight
    if w.shape[0] != scale.shape[0]:
        raise DaLifError(f"batch-norm {name!r} has {scale.shape[0]} features but the layer "
                         f"before it has {w.shape[0]} outputs")
    node.weight = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    node.bias = (node.bias - mean) * scale + shift if offset else node.bias * scale


class _Builder:
    """Walks the traced fx graph and emits NIR nodes and edges."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        # fx node -> list of NIR node names whose outputs SUM to that value
        self.value: dict[fx.Node, list[str]] = {}
        self.owner: dict[str, fx.Node] = {}  # NIR node -> the fx node that created it
        # torch.cat along channels: fx node -> its parts (sources summing to the part, size)
        self.cat: dict[fx.Node, list[tuple[list[str], int]]] = {}
        self.parts: dict[str, list[str]] = {}  # a layer split over a cat -> its part nodes

    def _add(self, name: str, node: nir.NIRNode, sources: list[str], fx_node: fx.Node) -> None:
        if name in self.nodes:
            raise DaLifError(f"module {name!r} is called more than once in forward(); "
                             "NIR needs one node per call (use separate modules)")
        if len(set(sources)) != len(sources):
            raise DaLifError(f"{name!r} receives the same tensor twice (e.g. x + x); NIR "
                             "edges cannot express that, use an explicit scale")
        self.nodes[name] = node
        self.edges += [(s, name) for s in sources]
        self.value[fx_node] = [name]
        self.owner[name] = fx_node

    @staticmethod
    def _shape(n: fx.Node) -> tuple[int, ...]:
        """The NIR shape of a value: torch's without the batch, a 1-D map ``(C, L)`` written
        as the height-1 image ``(C, 1, L)`` (how Conv1d/AvgPool1d are exported)."""
        return lift_1d(tuple(int(d) for d in n.meta["tensor_meta"].shape[1:]))

    def _src(self, n: fx.Node, arg: Any) -> list[str]:
        if isinstance(arg, fx.Node) and arg in self.cat:
            raise DaLifError(f"{n.name!r}: the torch.cat {arg.name!r} must feed a Conv2d "
                             "(groups=1) or Linear directly (it becomes one synapse per part "
                             "summing into that layer)")
        if not isinstance(arg, fx.Node) or arg not in self.value:
            raise DaLifError(f"{n.name!r}: input {arg!r} is not a tensor computed from the "
                             "network input; constants in forward() are not supported")
        return self.value[arg]

    def build(self, input_shape: tuple[int, ...]) -> None:
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if self.value:
                    raise DaLifError(f"forward() takes more than one input ({n.name!r}); "
                                     "export needs a single-step forward(x)")
                self.nodes["input"] = nir.Input(np.array(lift_1d(input_shape)))
                self.value[n] = ["input"]
            elif n.op == "call_module":
                self._module(n)
            elif n.op == "call_function":
                self._function(n)
            elif n.op == "call_method" and n.target == "flatten":
                self._flatten(n, n.name, *self._flatten_dims(n))
            elif n.op == "output":
                out = n.args[0]
                if not isinstance(out, fx.Node):
                    raise DaLifError("forward() must return one tensor (the readout)")
                self.nodes["output"] = nir.Output(np.array(self._shape(out)))
                self.edges += [(s, "output") for s in self._src(n, out)]
            else:
                what = n.target if n.op != "get_attr" else f"attribute {n.target}"
                raise DaLifError(f"unsupported operation {n.op} {what!r} at {n.name!r}; "
                                 f"supported: {', '.join(SUPPORTED)}")

    def _module(self, n: fx.Node) -> None:
        name, m = str(n.target), self.modules[str(n.target)]
        if len(n.args) != 1 or n.kwargs:
            raise DaLifError(f"module {name!r} ({type(m).__name__}) is called with "
                             f"{len(n.args)} arguments; export supports single-input calls "
                             "(DA-LIF must be called statefully: s = lif(x))")
        if n.args[0] in self.cat and isinstance(m, (nn.Conv2d, nn.Linear)):
            self._split(n, name, m)
            return
        src = self._src(n, n.args[0])
        shape = self._shape(n)
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise DaLifError(f"Conv2d {name!r}: only numeric zero padding is supported")
            in_hw = self._shape(n.args[0])[1:]
            bias = _f64(m.bias) if m.bias is not None else np.zeros(m.out_channels)
            conv = nir.Conv2d(input_shape=tuple(in_hw), weight=_f64(m.weight),
                              stride=tuple(m.stride), padding=tuple(m.padding),
                              dilation=tuple(m.dilation), groups=m.groups, bias=bias)
            fix_conv_types(conv, name)  # nir's own types are wrong for groups/non-square
            self._add(name, conv, src, n)
        elif isinstance(m, nn.Conv1d):
            self._add(name, self._conv1d(name, m, self._shape(n.args[0])), src, n)
        elif isinstance(m, nn.Linear):
            bias = _f64(m.bias) if m.bias is not None else np.zeros(m.out_features)
            self._add(name, nir.Affine(weight=_f64(m.weight), bias=bias), src, n)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if src and src[0] in self.parts and src == self.parts[src[0]]:  # split over a cat
                for i, part in enumerate(src):
                    _fold_bn(self.nodes[part], m, name, offset=i == 0)
                self.value[n] = src
                return
            prev = self.nodes.get(src[0]) if len(src) == 1 else None
            prev_fx = self.owner.get(src[0]) if prev is not None else None
            if not isinstance(prev, (nir.Conv2d, nir.Affine)) or len(prev_fx.users) != 1:
                raise DaLifError(f"batch-norm {name!r} must directly follow a Conv2d or "
                                 "Linear that feeds only it (NIR has no batch-norm node to "
                                 "fold it into otherwise)")
            _fold_bn(prev, m, name)
            self.value[n] = src
        elif isinstance(m, NeuronModule):  # its model's NIR mapping (DA-LIF: nir.LIF)
            self._add(name, m.neuron.to_nir(m.params(), shape, name), src, n)
            if m.w_rec is not None:  # a recurrent layer: the loop name -> name.w_rec -> name
                self.nodes[f"{name}.w_rec"] = nir.Linear(weight=_f64(m.w_rec))
                self.edges += [(name, f"{name}.w_rec"), (f"{name}.w_rec", name)]
        elif isinstance(m, nn.AvgPool2d):
            if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
                raise DaLifError(f"AvgPool2d {name!r}: ceil_mode, count_include_pad=False "
                                 "and divisor_override have no NIR encoding")
            stride = m.stride if m.stride is not None else m.kernel_size
            k, s, p = (np.array(int_pair(v, what, name), dtype=np.int64) for v, what in (
                (m.kernel_size, "kernel_size"), (stride, "stride"), (m.padding, "padding")))
            self._add(name, nir.AvgPool2d(kernel_size=k, stride=s, padding=p), src, n)
        elif isinstance(m, nn.AvgPool1d):  # the height-1 AvgPool2d((1, k)): exact
            if m.ceil_mode or not m.count_include_pad:
                raise DaLifError(f"AvgPool1d {name!r}: ceil_mode and count_include_pad=False "
                                 "have no NIR encoding")
            k, s, p = (int(_one(v)) for v in (m.kernel_size, m.stride or m.kernel_size,
                                              m.padding))
            self._add(name, nir.AvgPool2d(kernel_size=np.array([1, k]), stride=np.array([1, s]),
                                          padding=np.array([0, p])), src, n)
        elif isinstance(m, nn.Flatten):
            self._flatten(n, name, m.start_dim, m.end_dim)
        elif isinstance(m, (nn.Identity, *_DROPOUT)):  # export is eval mode: dropout is identity
            self.value[n] = src
        else:
            hint = next((h for t, h in _INSTEAD.items() if isinstance(m, t)), "")
            raise DaLifError(f"unsupported module {name!r} ({type(m).__module__}."
                             f"{type(m).__name__}){hint}; supported: {', '.join(SUPPORTED)}")

    @staticmethod
    def _conv1d(name: str, m: nn.Conv1d, in_shape: tuple[int, ...]) -> nir.Conv2d:
        """A Conv1d as the height-1 Conv2d (kernel ``(1, k)``) on ``(C, 1, L)``: the same sums
        in the same order, so exact; every stage below runs it as any conv."""
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise DaLifError(f"Conv1d {name!r}: only numeric zero padding is supported")
        bias = _f64(m.bias) if m.bias is not None else np.zeros(m.out_channels)
        conv = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_f64(m.weight)[:, :, None, :],
                          stride=(1, _one(m.stride)), padding=(0, _one(m.padding)),
                          dilation=(1, _one(m.dilation)), groups=m.groups, bias=bias)
        fix_conv_types(conv, name)
        return conv

    def _split(self, n: fx.Node, name: str, m: nn.Conv2d | nn.Linear) -> None:
        """A Conv2d/Linear fed by ``torch.cat`` along channels: one node per part, its slice of
        the input channels (the first part carries the bias), all summing into the consumer
        (NIR sums incoming edges): exactly the layer applied to the concatenation."""
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            raise DaLifError(f"Conv2d {name!r} (groups={m.groups}) is fed by torch.cat; a "
                             "concatenation splits only into an ungrouped conv or a Linear")
        parts, offset = [], 0
        for i, (sources, size) in enumerate(self.cat[n.args[0]]):
            w = _f64(m.weight)[:, offset:offset + size]
            offset += size
            bias = (_f64(m.bias) if m.bias is not None and i == 0
                    else np.zeros(w.shape[0]))
            part = f"{name}.cat{i}"
            if isinstance(m, nn.Conv2d):
                if m.padding_mode != "zeros" or isinstance(m.padding, str):
                    raise DaLifError(f"Conv2d {name!r}: only numeric zero padding is supported")
                node = nir.Conv2d(input_shape=tuple(self._shape(n.args[0])[1:]), weight=w,
                                  stride=tuple(m.stride), padding=tuple(m.padding),
                                  dilation=tuple(m.dilation), groups=1, bias=bias)
                fix_conv_types(node, part)
            else:
                node = nir.Affine(weight=w, bias=bias)
            self._add(part, node, sources, n)
            parts.append(part)
        self.value[n] = parts
        self.parts[parts[0]] = parts

    def _cat(self, n: fx.Node) -> None:
        """``torch.cat([a, b, ...], dim=1)``: recorded, to be split by its consumer."""
        tensors = n.args[0] if n.args else n.kwargs.get("tensors")
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        rank = len(self._shape(n)) + 1
        if not isinstance(tensors, (list, tuple)) or int(dim) % rank != 1:
            raise DaLifError(f"{n.name!r}: torch.cat is supported along the channel dimension "
                             f"(dim=1) only, got dim={dim}")
        self.cat[n] = [(self._src(n, t), self._shape(t)[0]) for t in tensors]

    @staticmethod
    def _flatten_dims(n: fx.Node) -> tuple[int, int]:
        args = list(n.args[1:])
        start = args[0] if args else n.kwargs.get("start_dim", 0)
        end = args[1] if len(args) > 1 else n.kwargs.get("end_dim", -1)
        return int(start), int(end)

    def _flatten(self, n: fx.Node, name: str, start: int, end: int) -> None:
        rank = len(n.args[0].meta["tensor_meta"].shape)  # torch's, with the batch
        in_shape = self._shape(n.args[0])
        start, end = start % rank, end % rank
        if start < 1:
            raise DaLifError(f"flatten {name!r} would merge the batch dimension "
                             "(use start_dim=1)")
        # NIR dims exclude the batch; a lifted 1-D map's L is NIR dim 2
        lifted = len(in_shape) != rank - 1
        start, end = ((d - 1) + (lifted and d == 2) for d in (start, end))
        self._add(name, nir.Flatten(input_type={"input": np.array(in_shape)},
                                    start_dim=start, end_dim=end),
                  self._src(n, n.args[0]), n)

    def _function(self, n: fx.Node) -> None:
        if n.target in (operator.add, torch.add) and len(n.args) == 2 and not n.kwargs:
            a, b = (self._src(n, x) for x in n.args)
            if set(a) & set(b):
                raise DaLifError(f"{n.name!r} adds a tensor to itself; NIR edges cannot "
                                 "express that")
            self.value[n] = a + b
        elif n.target is torch.flatten:
            self._flatten(n, n.name, *self._flatten_dims(n))
        elif n.target in (torch.cat, torch.concat):
            self._cat(n)
        else:
            name = getattr(n.target, "__name__", str(n.target))
            raise DaLifError(f"unsupported function {name!r} at {n.name!r}; supported: "
                             f"{', '.join(SUPPORTED)}")


def export_nir(model: nn.Module, input_shape: tuple[int, ...] | list[int], timesteps: int,
               encoding: Encoding | str = ANALOG, normalization: str = "",
               metadata: dict[str, Any] | None = None) -> nir.NIRGraph:
    """Export a single-step DA-LIF network to a NIR graph (see the module docstring).

    ``input_shape`` is one sample without batch, e.g. ``(1, 8, 8)``; ``timesteps``, ``encoding``
    (``"analog"``: the same frame every step, or ``"events"``) and ``normalization`` are recorded
    in the graph metadata with any extra ``metadata``.
    """
    enc = Encoding.from_name(encoding)
    if not isinstance(timesteps, int) or timesteps < 1:
        raise DaLifError(f"timesteps must be a positive integer, got {timesteps!r}")
    input_shape = tuple(int(d) for d in input_shape)
    was_training = model.training
    model.eval()
    try:
        try:
            graph = _Tracer().trace(model)
        except DaLifError:
            raise
        except Exception as e:  # data-dependent control flow etc.
            raise DaLifError(f"cannot trace {type(model).__name__}.forward with torch.fx "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); export "
                             "needs a static single-step forward(x)") from None
        gm = fx.GraphModule(model, graph)
        reset_states(model)
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
        except Exception as e:
            raise DaLifError(f"model does not run on input shape {input_shape}: "
                             f"{str(e).splitlines()[0][:200]}") from None
        finally:
            reset_states(model)
        builder = _Builder(gm)
        with torch.no_grad():
            builder.build(input_shape)
    finally:
        model.train(was_training)
    import dalif_deploy

    meta: dict[str, Any] = {
        "producer": PRODUCER,
        "encoding_version": ENCODING_VERSION,
        "dalif_deploy_version": dalif_deploy.__version__,
        "dt": 1.0,
        "timesteps": int(timesteps),
        "input_shape": np.array(lift_1d(input_shape), dtype=np.int64),
        "input_encoding": enc.name,
        "input_normalization": normalization,
        "readout": "mean over T",
        "spike_condition": ">=",
    }
    meta.update(metadata or {})
    nodes = builder.nodes
    try:
        graph = nir.NIRGraph(nodes=nodes, edges=builder.edges, metadata=meta)
        validate(graph)  # what readers check (finite parameters, shapes): never write less
    except (ValueError, AssertionError, DaLifError) as e:
        raise DaLifError(f"exported graph is inconsistent: {e}") from None
    return graph


def write_nir(graph: nir.NIRGraph, out_path: str | Path) -> None:
    """Write ``graph`` to ``out_path`` atomically (temporary file, then rename)."""
    with atomic_path(out_path) as tmp:
        nir.write(tmp, graph)


def checkpoint_graph(ckpt_path: str | Path, model: str | None = None,
                     timesteps: int | None = None) -> tuple[nir.NIRGraph, dict[str, Any]]:
    """The NIR graph of checkpoint ``ckpt_path`` (or a plain state_dict with zoo ``model``
    name) and a summary dict (what :func:`export_checkpoint` reports, less the file)."""
    from dalif_deploy.float_model.loading import load_model

    net, ckpt = load_model(ckpt_path, model, timesteps)
    spec = ckpt.model_input()
    shape = tuple(spec["input_shape"])
    extra = {"source_checkpoint": Path(ckpt_path).name,
             "source_checkpoint_sha256": ckpt.sha256,
             "model_name": ckpt.model_name,
             "dataset": spec["dataset"]}
    graph = export_nir(net, shape, ckpt.timesteps, encoding=spec["encoding"],
                       normalization=spec["normalization"], metadata=extra)
    lifs = [k for k, v in graph.nodes.items() if isinstance(v, nir.LIF)]
    return graph, {"checkpoint": str(ckpt_path), "model": ckpt.model_name,
                   "timesteps": ckpt.timesteps, "input_shape": list(shape),
                   "nodes": len(graph.nodes), "edges": len(graph.edges), "lif_layers": lifs,
                   "sha256": ckpt.sha256, "dataset": spec["dataset"],
                   "encoding": spec["encoding"]}


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path, model: str | None = None,
                      timesteps: int | None = None) -> dict[str, Any]:
    """Export checkpoint ``ckpt_path`` (or a plain state_dict with zoo ``model`` name) to a
    ``.nir`` file written atomically; returns a summary dict."""
    graph, summary = checkpoint_graph(ckpt_path, model, timesteps)
    write_nir(graph, out_path)
    return {"nir": str(out_path), **summary}
