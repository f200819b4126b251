"""The operation table: what every supported NIR node type means, written once.

:data:`OPS` maps each supported ``nir`` node class to one :class:`NodeOp`. Every part of the
project that handles NIR nodes asks the table instead of testing node types itself: shape
inference and file validation (``nir_graph``), the float interpreter (``nir_to_torch``), fusion
of the linear nodes between neuron layers (``nir_fuse``), the quantiser (``nir_to_fixed``) and
the Norse adapter (``targets/norse``). Look an op up with :func:`op_for` (``op_for(node,
name)``, a DaLifError naming the node when its type is unsupported); :func:`supported_names`
is the one list of supported types (``read_nir`` accepts exactly these).

An op says: the output shape for an input shape (with its parameter checks), its parameter
fields (:meth:`NodeOp.param_shapes`), whether it is a linear map fusion may compose
(``linear``), a stateful ``neuron`` (its ``state`` variables) and/or ``spiking``, its float
function for the interpreter (:meth:`NodeOp.compile`: a pure step ``(state, x) -> (out,
state)``), its conv window (:meth:`NodeOp.window`), what Norse's importer needs
(:meth:`NodeOp.to_norse`, ``norse_fold_r``) and, for ``population`` nodes, the DA-LIF reading
the quantiser maps onto a Loihi population (:meth:`NodeOp.dalif`).

Neuron equations (forward Euler of the NIR ODEs with time step ``dt``; coefficients computed
in float64, cast once to the run dtype; state starts at 0)::

    LIF      v = v + dt/tau (v_leak - v + r x)                  spike, then v := v_reset
    CubaLIF  i = i + dt/tau_syn (w_in x - i)
             v = v + dt/tau_mem (v_leak - v + r i)              (the NEW current), spike, reset
    IF       v = v + dt r x                                      spike, then v := v_reset
    LI       v = v + dt/tau (v_leak - v + r x)                  output v
    I        v = v + dt r x                                      output v
    Threshold  out = [x > threshold]

computed as ``v' = decay v + gain x + leak`` (see :mod:`.nir_math`). A spike is ``v >
v_threshold`` (NIR) unless the node's metadata says ``spike_condition ">="`` (our export).

Adding a node type: write one subclass of :class:`NodeOp` here (of :class:`LinearOp` for a
linear map, :class:`NeuronOp` for a neuron), set ``nir_type`` and its flags, implement
``output_shape`` and either ``function`` (stateless) or ``parameters`` + ``step`` (neuron), and
put ``@register`` above it. Nothing else changes: reading, shapes, the interpreter, fusion and
the adapters pick it up from :data:`OPS` (tests/test_nir_ops.py then asks for its test case).
Shared float building blocks (neuron steps, size pairs, the channel-diagonal conv) are in
:mod:`.nir_math`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import nir
import numpy as np
import torch
import torch.nn.functional as F

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.geometry import conv_output_size

from .neuron_math import (
    CubaParams,
    Pair,
    SpikingParams,
    channelwise_conv,
    cuba_as_dalif,
    cuba_lif_step,
    firing,
    if_as_dalif,
    int_pair,
    integrator,
    leaky,
    li_step,
    lif_as_dalif,
    lif_step,
    tensor,
)

State = Any
#: the interpreter's function of one node: ``(state, x) -> (out, state)``; state None = fresh
Step = Callable[[State, torch.Tensor], tuple[torch.Tensor, State]]
#: a conv or pooling window: (effective kernel, stride, padding), each (y, x)
Window = tuple[Pair, Pair, Pair]


class NodeOp:
    """What one NIR node type means; subclasses set the flags and override what applies."""

    nir_type: ClassVar[type[nir.NIRNode]]
    #: parameter array fields; the first present one is checked against the neuron shape
    params: ClassVar[tuple[str, ...]] = ()
    linear: ClassVar[bool] = False  # a linear map nir_fuse may compose between neuron layers
    neuron: ClassVar[bool] = False  # keeps state over time steps (named in ``state``)
    state: ClassVar[tuple[str, ...]] = ()
    spiking: ClassVar[bool] = False  # its output is spikes
    resets: ClassVar[bool] = False  # has ``v_reset``: v := v_reset after a spike
    population: ClassVar[bool] = False  # the quantiser maps it to a Loihi population (dalif)
    norse_native: ClassVar[bool] = False  # Norse's importer runs it as written
    norse_fold_r: ClassVar[bool] = False  # Norse ignores its ``r``: fold r into the input

    @property
    def name(self) -> str:
        return self.nir_type.__name__

    def param_shapes(self, node: nir.NIRNode) -> dict[str, tuple[int, ...]]:
        """Shapes of the node's parameter arrays (fields it does not set are left out)."""
        return {k: tuple(np.shape(v)) for k in self.params
                if (v := getattr(node, k, None)) is not None}

    def mismatch(self, name: str, node: nir.NIRNode, shape: tuple[int, ...], why: str
                 ) -> DaLifError:
        return DaLifError(f"shape mismatch at node {name!r} ({type(node).__name__}): input "
                          f"{shape}, {why}")

    def output_shape(self, name: str, node: nir.NIRNode, shape: tuple[int, ...]
                     ) -> tuple[int, ...]:
        """Output shape (without batch) for input ``shape``; DaLifError if they do not fit."""
        raise NotImplementedError

    def repair(self, name: str, node: nir.NIRNode) -> None:
        """Fix what nir's constructor gets wrong for this type (called on every read)."""

    def function(self, name: str, node: nir.NIRNode, dtype: torch.dtype, bias: bool = True
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The stateless map ``[B, *in] -> [B, *out]`` in ``dtype`` (``bias=False``: without its
        constant offset, as fusion needs)."""
        raise DaLifError(f"node {name}: {self.name} has no stateless function")

    def compile(self, name: str, node: nir.NIRNode, dt: float, dtype: torch.dtype) -> Step:
        """The interpreter's step ``(state, x) -> (out, state)`` with parameters in ``dtype``."""
        f = self.function(name, node, dtype)
        return lambda state, x: (f(x), state)

    def window(self, name: str, node: nir.NIRNode) -> Window | None:
        """The conv window of a spatial linear map (None: not a single window)."""
        return None

    def to_norse(self, name: str, node: nir.NIRNode, in_shape: tuple[int, ...]
                 ) -> tuple[nir.NIRNode, str] | None:
        """An equivalent node Norse's importer runs correctly and a note saying why, or None
        when it runs the node as written."""
        if self.norse_native:
            return None
        raise DaLifError(f"node {name!r}: Norse's NIR importer has no mapping for "
                         f"{type(node).__name__}; run this graph with --backend nir")

    def scale_rows(self, node: nir.NIRNode, factor: np.ndarray) -> bool:
        """Multiply the node's output by ``factor`` (one value per output channel) in place, in
        its weight rows and bias; False when it has none (Norse's r folding)."""
        return False

    def dalif(self, name: str, node: nir.NIRNode, shape: tuple[int, ...], dt: float
              ) -> dict[str, Any]:
        """The node read as a discrete DA-LIF layer ``V = beta H + alpha X`` (``population``
        ops only): ``{"beta_c": beta per channel, "alpha": alpha of the layer shape, "v_th":
        float, "cond": ">=" or ">", "du": Loihi's current decay (4095 = none), "bias_gain":
        the per-step gain of a constant input into v}``, checked for what a Loihi population
        can hold (LIF, IF, CubaLIF; see :mod:`.nir_math`)."""
        raise DaLifError(f"node {name}: {type(node).__name__} has no DA-LIF reading (not a "
                         "population)")


#: the table: nir node class -> its op, in registration order
OPS: dict[type[nir.NIRNode], NodeOp] = {}


def register(cls: type[NodeOp]) -> type[NodeOp]:
    """Class decorator: put one instance of ``cls`` into :data:`OPS` under its ``nir_type``."""
    if cls.nir_type in OPS:
        raise DaLifError(f"NIR node type {cls.nir_type.__name__} is registered twice")
    OPS[cls.nir_type] = cls()
    return cls


def supported_names() -> tuple[str, ...]:
    """Names of the supported NIR node types, as files spell them."""
    return tuple(c.__name__ for c in OPS)


def op_for(node: nir.NIRNode, name: str = "") -> NodeOp:
    """The op of ``node`` (its class or a base class); DaLifError naming it if unsupported."""
    for cls in type(node).__mro__:
        if cls in OPS:
            return OPS[cls]
    raise DaLifError(f"node {name!r}: unsupported node type {type(node).__name__}; supported: "
                     f"{', '.join(supported_names())}")


def _elementwise_shape(op: NodeOp, name: str, node: nir.NIRNode, shape: tuple[int, ...]
                       ) -> tuple[int, ...]:
    """Shape of an elementwise node: its parameters are scalars or of the input shape."""
    p = next(iter(op.param_shapes(node).values()), None)
    if p is not None and p not in ((), (1,)) and p != shape:
        raise op.mismatch(name, node, shape, f"its parameters have shape {p}")
    return shape


# --- graph ends ---------------------------------------------------------------------------


class _PassThrough(NodeOp):
    norse_native = True

    def output_shape(self, name, node, shape):
        return shape

    def function(self, name, node, dtype, bias=True):
        return lambda x: x


@register
class InputOp(_PassThrough):
    """The graph input (its declared shape is the source of shape inference)."""

    nir_type = nir.Input


@register
class OutputOp(_PassThrough):
    """The graph output (the readout is its mean over T)."""

    nir_type = nir.Output


# --- linear maps --------------------------------------------------------------------------


class LinearOp(NodeOp):
    """A linear map (plus a constant offset for Affine/Conv2d) that fusion may compose."""

    linear = True


class _WeightedOp(LinearOp):
    """A linear map with a weight whose first axis is the output channel (and maybe a bias)."""

    def scale_rows(self, node, factor):
        node.weight = node.weight * factor.reshape((-1,) + (1,) * (node.weight.ndim - 1))
        if "bias" in self.params:
            node.bias = node.bias * factor
        return True


@register
class AffineOp(_WeightedOp):
    """``y = W x + b`` on flat inputs ``(N,)``."""

    nir_type = nir.Affine
    params = ("weight", "bias")
    norse_native = True

    def output_shape(self, name, node, shape):
        w = node.weight
        if w.ndim != 2 or shape != (w.shape[1],):
            raise self.mismatch(name, node, shape, f"weight {w.shape} expects "
                                f"({w.shape[1] if w.ndim == 2 else '?'},)")
        b = getattr(node, "bias", None)
        if b is not None and np.shape(b) not in ((w.shape[0],), ()):
            raise self.mismatch(name, node, shape, f"bias {np.shape(b)} does not match "
                                f"weight {w.shape}")
        return (w.shape[0],)

    def function(self, name, node, dtype, bias=True):
        w = tensor(node.weight, dtype)
        b = tensor(node.bias, dtype).reshape(-1) if bias and "bias" in self.params else None

        def f(x: torch.Tensor) -> torch.Tensor:
            if w.dim() != 2 or math.prod(x.shape[1:]) != w.shape[1]:
                raise DaLifError(f"node {name}: weight {list(w.shape)} cannot take input of "
                                 f"shape {list(x.shape[1:])}")
            return F.linear(x.flatten(1), w, b)
        return f


@register
class LinearNodeOp(AffineOp):
    """``y = W x`` (nir.Linear: Affine without bias)."""

    nir_type = nir.Linear
    params = ("weight",)
    norse_native = False

    def to_norse(self, name, node, in_shape):
        w = np.asarray(node.weight)
        return (nir.Affine(weight=w, bias=np.zeros(w.shape[0], w.dtype)),
                "Linear -> Affine with a zero bias (Norse has no Linear map)")


@register
class ScaleOp(LinearOp):
    """``y = scale * x`` elementwise."""

    nir_type = nir.Scale
    params = ("scale",)

    def output_shape(self, name, node, shape):
        return _elementwise_shape(self, name, node, shape)

    def function(self, name, node, dtype, bias=True):
        k = tensor(node.scale, dtype)
        return lambda x: x * k


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
    node.output_type = {"output": np.array(OPS[nir.Conv2d].output_shape(name, node, shape))}


@register
class Conv2dOp(_WeightedOp):
    """Cross-correlation ``[C_in, H, W] -> [C_out, H', W']`` (torch's conv2d), with bias."""

    nir_type = nir.Conv2d
    params = ("weight", "bias")
    norse_native = True

    def _geometry(self, name: str, node: nir.Conv2d) -> tuple[Pair, Pair, Pair]:
        return tuple(int_pair(getattr(node, k), k, name)  # type: ignore[return-value]
                     for k in ("stride", "padding", "dilation"))

    def output_shape(self, name, node, shape):
        w = node.weight
        if w.ndim != 4 or len(shape) != 3 or shape[0] != w.shape[1] * int(node.groups):
            raise self.mismatch(name, node, shape, f"weight {w.shape} with groups={node.groups}"
                                f" expects {w.shape[1] * int(node.groups) if w.ndim == 4 else '?'}"
                                " channels as (C, H, W)")
        if isinstance(node.padding, str):
            raise self.mismatch(name, node, shape, "string padding ('same'/'valid') is not "
                                "supported; use numbers")
        (sy, sx), (py, px), (dy, dx) = self._geometry(name, node)
        return (w.shape[0], conv_output_size(shape[1], w.shape[2], sy, py, dy),
                conv_output_size(shape[2], w.shape[3], sx, px, dx))

    def repair(self, name, node):
        fix_conv_types(node, name)

    def function(self, name, node, dtype, bias=True):
        w = tensor(node.weight, dtype)
        b = (tensor(node.bias, dtype).reshape(-1)
             if bias and node.bias is not None and np.size(node.bias) else None)
        st, pad, dil = self._geometry(name, node)
        g = int(node.groups)

        def f(x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 4 or w.dim() != 4:
                raise DaLifError(f"node {name}: Conv2d needs [C, H, W] input, got "
                                 f"{list(x.shape[1:])}")
            return F.conv2d(x, w, b, st, pad, dil, g)
        return f

    def window(self, name, node):
        w = np.asarray(node.weight)
        st, pad, (dy, dx) = self._geometry(name, node)
        return ((w.shape[2] - 1) * dy + 1, (w.shape[3] - 1) * dx + 1), st, pad


class _PoolOp(LinearOp):
    """Window sum over ``kernel_size`` (zero padding counted), divided by ``divisor``."""

    divisor: ClassVar[int | None]  # torch's divisor_override: None = kernel area (average)

    def window(self, name, node):
        return tuple(int_pair(getattr(node, a), a, name)  # type: ignore[return-value]
                     for a in ("kernel_size", "stride", "padding"))

    def output_shape(self, name, node, shape):
        if len(shape) != 3:
            raise self.mismatch(name, node, shape, "pooling expects (C, H, W)")
        (ky, kx), (sy, sx), (py, px) = self.window(name, node)
        return (shape[0], conv_output_size(shape[1], ky, sy, py),
                conv_output_size(shape[2], kx, sx, px))

    def function(self, name, node, dtype, bias=True):
        k, s, p = self.window(name, node)

        def f(x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 4:
                raise DaLifError(f"node {name}: pooling needs [C, H, W] input")
            return F.avg_pool2d(x, k, s, p, count_include_pad=True,
                                divisor_override=self.divisor)
        return f

    def to_norse(self, name, node, in_shape):
        k = np.atleast_1d(np.asarray(node.kernel_size)).astype(int)
        value = np.full(in_shape[0], 1.0 / int(k[0] * k[-1]) if self.divisor is None else 1.0)
        return (channelwise_conv(in_shape[0], node.kernel_size, node.stride, node.padding,
                                 value, in_shape[1:]),
                f"{type(node).__name__} -> channel-diagonal Conv2d (Norse has no AvgPool2d "
                "map; SumPool2d would become LPPool2d(|x|) without padding)")


@register
class SumPool2dOp(_PoolOp):
    """``y = sum over the window``."""

    nir_type = nir.SumPool2d
    divisor = 1


@register
class AvgPool2dOp(_PoolOp):
    """``y = sum over the window / kernel area`` (padding counted, as torch's default)."""

    nir_type = nir.AvgPool2d
    divisor = None


@register
class FlattenOp(LinearOp):
    """Merge dims ``start_dim..end_dim`` (NIR dims exclude the batch)."""

    nir_type = nir.Flatten

    def output_shape(self, name, node, shape):
        r = len(shape)
        s, e = int(node.start_dim), int(node.end_dim)
        if not (-r <= s < r and -r <= e < r) or s % r > e % r:
            raise self.mismatch(name, node, shape, f"start_dim={s}, end_dim={e} are not valid "
                                "NIR dims (NIR dims exclude the batch; a foreign start_dim=1 "
                                "meant for torch is start_dim=0 here)")
        s, e = s % r, e % r
        return shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]

    def function(self, name, node, dtype, bias=True):
        a, e = int(node.start_dim), int(node.end_dim)
        return lambda x: x.flatten(a % (x.dim() - 1) + 1, e % (x.dim() - 1) + 1)

    def to_norse(self, name, node, in_shape):
        e = int(node.end_dim)
        flat = nir.Flatten(input_type={"input": None})  # torch dims: not a NIR-valid node
        flat.start_dim = int(node.start_dim) % len(in_shape) + 1
        flat.end_dim = e + 1 if e >= 0 else e
        return flat, "Flatten dims shifted by one (Norse's torch.nn.Flatten counts the batch)"


@register
class ThresholdOp(NodeOp):
    """``out = [x > threshold]`` (stateless spikes)."""

    nir_type = nir.Threshold
    params = ("threshold",)
    spiking = True

    def output_shape(self, name, node, shape):
        return _elementwise_shape(self, name, node, shape)

    def function(self, name, node, dtype, bias=True):
        th = tensor(node.threshold, dtype)
        return lambda x: (x > th).to(x.dtype)


class NeuronOp(NodeOp):
    """A stateful neuron: ``parameters`` once, then the pure ``step(state, x, params)``."""

    neuron = True

    def output_shape(self, name, node, shape):
        return _elementwise_shape(self, name, node, shape)

    def parameters(self, node: nir.NIRNode, dt: float, dtype: torch.dtype) -> Any:
        raise NotImplementedError

    @staticmethod
    def step(state: State, x: torch.Tensor, p: Any) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def compile(self, name, node, dt, dtype):
        p, step = self.parameters(node, dt, dtype), self.step
        return lambda state, x: step(state, x, p)


@register
class LIFOp(NeuronOp):
    nir_type = nir.LIF
    params = ("v_threshold", "tau", "r", "v_leak", "v_reset")
    state = ("v",)
    spiking = resets = population = norse_native = norse_fold_r = True
    step = staticmethod(lif_step)

    def parameters(self, node, dt, dtype):
        return SpikingParams(leaky(node.tau, node.r, node.v_leak, dt, dtype), firing(node, dtype))

    def dalif(self, name, node, shape, dt):
        return lif_as_dalif(name, node, shape, dt)


@register
class CubaLIFOp(NeuronOp):
    nir_type = nir.CubaLIF
    params = ("v_threshold", "tau_mem", "tau_syn", "r", "v_leak", "w_in", "v_reset")
    state = ("i", "v")
    spiking = resets = population = norse_native = True
    step = staticmethod(cuba_lif_step)

    def dalif(self, name, node, shape, dt):
        return cuba_as_dalif(name, node, shape, dt)

    def parameters(self, node, dt, dtype):
        return CubaParams(leaky(node.tau_syn, node.w_in, 0.0, dt, dtype),
                          leaky(node.tau_mem, node.r, node.v_leak, dt, dtype),
                          firing(node, dtype))


@register
class IFOp(NeuronOp):
    nir_type = nir.IF
    params = ("v_threshold", "r", "v_reset")
    state = ("v",)
    spiking = resets = population = norse_native = True
    step = staticmethod(lif_step)

    def parameters(self, node, dt, dtype):
        return SpikingParams(integrator(node.r, dt, dtype), firing(node, dtype))

    def dalif(self, name, node, shape, dt):
        return if_as_dalif(name, node, shape, dt)


@register
class LIOp(NeuronOp):
    nir_type = nir.LI
    params = ("tau", "r", "v_leak")
    state = ("v",)
    step = staticmethod(li_step)

    def parameters(self, node, dt, dtype):
        return leaky(node.tau, node.r, node.v_leak, dt, dtype)


@register
class IOp(NeuronOp):
    nir_type = nir.I
    params = ("r",)
    state = ("v",)
    step = staticmethod(li_step)

    def parameters(self, node, dt, dtype):
        return integrator(node.r, dt, dtype)
