"""Export a float DA-LIF network to ONNX, unrolled over T time steps.

The exported graph is the whole float inference of :func:`dalif_deploy.float_model.zoo.run_model`
as one
standard ONNX graph (opset >= 17, default domain only, checked with ``full_check=True``):

* input ``input``: ``[B, C, H, W]`` (analog: the same frame every step) or ``[B, T, C, H, W]``
  (events), batch axis dynamic;
* output ``logits``: ``[B, classes]``, the readout summed over the T steps and divided by T
  (the same order of additions as ``run_model``).

Every neuron layer appears T times as plain ONNX arithmetic with its state threaded from step to
step (docs/DESIGN.md section 2; PLIF and LIF alike with ``alpha = k``/``1/tau`` and ``beta = 1 -
alpha``)::

    V = beta * H + alpha * X      (step 0: V = alpha * X)
    S = Cast(GreaterOrEqual(V - v_th, 0))          the hard threshold, no surrogate
    H = V * (1 - S)

The surrogate-gradient ``autograd.Function`` is inlined by the TorchScript exporter into that
comparison and cast; the export checks that exactly ``layers * T`` ``GreaterOrEqual`` nodes are
present, so a threshold can never be dropped silently. Batch-norm (eval mode) is folded into the
preceding convolution by the exporter; this changes float rounding only (see ``targets/
onnxruntime.py`` for the measured agreement).

We use the legacy TorchScript exporter (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which is not a dependency.

Graph metadata (``metadata_props``): ``dalif_deploy.timesteps``, ``dalif_deploy.encoding``,
``dalif_deploy.version``, ``dalif_deploy.model``, ``dalif_deploy.input_shape`` (JSON),
``dalif_deploy.readout`` (``mean over T``), ``dalif_deploy.dalif_layers`` (the number of neuron
layers, of any model) and, when known,
``dalif_deploy.dataset``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dalif_deploy import __version__
from dalif_deploy.base.encoding import ANALOG, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import atomic_path
from dalif_deploy.base.resources import check_memory
from dalif_deploy.float_model.unroll import unroll
from dalif_deploy.neurons import fixed_params, network_step, neuron_layers

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET = 17
META_PREFIX = "dalif_deploy."  # key prefix of the graph's metadata_props
ONNX_BYTES_PER_MODULE_STEP = 64 * 1024  # tracer memory per module and unrolled step


class UnrolledDALIF(nn.Module):
    """``net`` (one time step per call) unrolled over ``timesteps`` steps, state passed explicitly.

    ``forward(x)`` computes ``run_model(net, x, timesteps, encoding)`` operation for operation
    through the same :func:`~dalif_deploy.float_model.unroll.unroll` and the explicit-state network
    call
    :func:`~dalif_deploy.neurons.network_step`, so tracing sees a pure function of the input (no
    tensors left in module attributes). Each neuron layer's effective parameters (DA-LIF's
    ``alpha``/``beta``, PLIF's ``k``; LIF's are fixed numbers already) are computed once here by
    torch and given to the layers as their ``fixed_params``; their tensors (buffers named
    ``<field>_<layer index>``, e.g. ``alpha_0``) become graph constants: the graph then holds
    only effective values (docs/DESIGN.md section 2), and no ``Tanh``/``Sigmoid`` of the raw
    parameters is left for onnxruntime, whose tanh differs from torch's in the last bit for
    about half of all inputs.
    """

    def __init__(self, net: nn.Module, timesteps: int, encoding: Encoding | str) -> None:
        super().__init__()
        self.net = net
        self.timesteps = timesteps
        self.encoding = Encoding.from_name(encoding)
        self.templates: dict[str, Any] = {}  # layer -> its params (tensors replaced on call)
        self.tensors: dict[str, dict[str, str]] = {}  # layer -> {field: buffer name}
        with torch.no_grad():
            for i, (name, lif) in enumerate(neuron_layers(net).items()):
                p = lif.params()
                self.templates[name], self.tensors[name] = p, {}
                for f in dataclasses.fields(p):
                    if isinstance(getattr(p, f.name), torch.Tensor):
                        self.register_buffer(f"{f.name}_{i}", getattr(p, f.name).detach().clone())
                        self.tensors[name][f.name] = f"{f.name}_{i}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = {name: dataclasses.replace(p, **{f: getattr(self, b)
                                                  for f, b in self.tensors[name].items()})
                  for name, p in self.templates.items()}
        with fixed_params(self.net, params):
            return unroll(network_step(self.net), x, self.timesteps, self.encoding)


def _check_args(model: nn.Module, timesteps: int, input_shape: Sequence[int],
                encoding: Encoding | str, opset: int) -> tuple[tuple[int, ...], Encoding]:
    if not isinstance(model, nn.Module):
        raise DaLifError(f"export_onnx needs a torch nn.Module, got {type(model).__name__}")
    if not neuron_layers(model):
        raise DaLifError(f"{type(model).__name__} has no neuron layer: export_onnx exports "
                         "spiking networks (DALIF, PLIF or LIF layers of dalif_deploy.neurons)")
    if not isinstance(timesteps, int) or timesteps < 1:
        raise DaLifError(f"timesteps must be an integer >= 1, got {timesteps!r}")
    enc = Encoding.from_name(encoding)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise DaLifError(f"input_shape must be (C, H, W), or (C, L) for a 1-D network, with "
                         f"positive sizes, got {input_shape}")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise DaLifError(f"opset must lie in [{MIN_OPSET}, {newest}], got {opset}")
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DaLifError(f"{name} holds NaN or Inf values; fix the model before export")
    return shape, enc


def _trace_to_onnx(wrapper: UnrolledDALIF, example: torch.Tensor, opset: int) -> bytes:
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
            torch.onnx.export(
                wrapper, (example,), buf, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except DaLifError:
        raise
    except MemoryError:
        raise DaLifError("ONNX export ran out of memory while unrolling the network over T "
                         "steps; export with a smaller T, or use the NIR export") from None
    except Exception as e:  # the exporter's own errors name the unsupported operator
        raise DaLifError(f"ONNX export failed ({type(e).__name__}: {e}); the network must be "
                         "built from layers torch.onnx can export") from e
    return buf.getvalue()


def export_onnx(
    model: nn.Module,
    path: str | Path,
    timesteps: int,
    input_shape: Sequence[int],
    encoding: Encoding | str = ANALOG,
    opset: int = MIN_OPSET,
    model_name: str | None = None,
    dataset: str | None = None,
) -> Path:
    """Export a single-step DA-LIF network, unrolled over ``timesteps``, to ONNX at ``path``.

    ``input_shape`` is ``(C, H, W)``; the graph input is ``[B, C, H, W]`` for
    ``encoding="analog"`` and ``[B, T, C, H, W]`` for ``"events"``, with a dynamic batch axis.
    The output is the readout mean over T. The file is checked (``onnx.checker`` full check)
    before it is written atomically. The graph always has inference semantics (batch-norm with
    running statistics); the model's own train/eval modes are left as they were.
    ``model_name`` and ``dataset`` (the data set it was trained on) go into the metadata.
    """
    import onnx

    shape, enc = _check_args(model, timesteps, input_shape, encoding, opset)
    n_layers = len(neuron_layers(model))
    n_modules = sum(1 for _ in model.modules())
    # measured: tracing digits-cnn (9 modules) costs about 0.6 MiB per unrolled step
    check_memory(timesteps * n_modules * ONNX_BYTES_PER_MODULE_STEP,
                 f"exporting to ONNX unrolled over T={timesteps} ({n_modules} modules per step)",
                 "export with a smaller T, or use the NIR export, which does not unroll")
    wrapper = UnrolledDALIF(model, timesteps, enc)
    lead = enc.lead(2, timesteps)
    gen = torch.Generator().manual_seed(0)
    dtype = next(iter(model.parameters())).dtype
    example = torch.rand(*lead, *shape, generator=gen).to(dtype)
    modes = {m: m.training for m in model.modules()}
    wrapper.eval()
    try:
        data = _trace_to_onnx(wrapper, example, opset)
    finally:  # the exporter switches modes; give every submodule its own back
        for m, training in modes.items():
            m.training = training

    proto = onnx.load_from_string(data)
    n_threshold = sum(n.op_type == "GreaterOrEqual" for n in proto.graph.node)
    if n_threshold != n_layers * timesteps:
        raise DaLifError(f"exported graph has {n_threshold} threshold comparisons, expected "
                         f"{n_layers} neuron layers x {timesteps} steps; the model calls its "
                         "neuron layers in a way the exporter cannot unroll")
    meta = {
        "timesteps": str(timesteps),
        "encoding": enc.name,
        "version": __version__,
        "model": model_name or type(model).__name__,
        "input_shape": json.dumps(list(shape), allow_nan=False),
        "readout": "mean over T",
        "dalif_layers": str(n_layers),
    }
    if dataset:
        meta["dataset"] = dataset
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    proto.producer_name = "dalif-deploy"
    proto.producer_version = __version__
    proto.doc_string = (f"DA-LIF network {meta['model']} unrolled over T={timesteps} steps "
                        f"({enc.name} input); output: readout logits, mean over T")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise DaLifError(f"exported ONNX graph fails onnx.checker: {e}") from e
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def export_onnx_from_checkpoint(ckpt_path: str | Path, out_path: str | Path,
                                model: str | None = None, timesteps: int | None = None,
                                opset: int = MIN_OPSET) -> dict[str, Any]:
    """Load a checkpoint (or a plain state_dict with ``model``/``timesteps``), export it to ONNX.

    T comes from the checkpoint, the input encoding from its data set. Returns a summary dict.
    """
    from dalif_deploy.float_model.loading import load_model

    net, ckpt = load_model(str(ckpt_path), model, timesteps)
    spec = ckpt.model_input()
    shape, encoding = tuple(spec["input_shape"]), spec["encoding"]
    path = export_onnx(net, out_path, ckpt.timesteps, shape, encoding, opset,
                       model_name=ckpt.model_name, dataset=spec["dataset"] or None)
    return {"onnx": str(path), "model": ckpt.model_name, "timesteps": ckpt.timesteps,
            "dataset": ckpt.dataset.get("name"), "encoding": encoding,
            "input_shape": list(shape), "opset": opset,
            "dalif_layers": len(neuron_layers(net)), "bytes": path.stat().st_size}


# ---------------------------------------------------------------------------------------------
# Agreement with torch: ORT's kernels round differently, so a membrane potential within a few
# ulps of the threshold may fire in one and not the other. Measure how close each sample came.

NEAR_THRESHOLD = 1e-5  # |V - v_th| below this counts as "near": rounding may flip the spike
LOGIT_TOLERANCE = 1e-5  # identical spikes: logits differ by Gemm/Conv summation order (~1e-7)


def threshold_margins(model: nn.Module, x: torch.Tensor, timesteps: int,
                      encoding: Encoding | str = ANALOG) -> tuple[np.ndarray, np.ndarray]:
    """Torch logits and, per sample, ``min |V - v_th|`` over every DA-LIF layer, neuron, step.

    ``V`` is the potential each layer's step leaves in its state (``DaLifState.v``), i.e.
    exactly the potential ``run_model`` thresholds.
    """
    from dalif_deploy.float_model.zoo import run_model

    best = torch.full((x.shape[0],), float("inf"))

    def post(m, _args, _out):
        nonlocal best
        v, v_th = m.state.v, m.params().v_th
        best = torch.minimum(best, (v - v_th).abs().flatten(1).amin(1))

    hooks = [m.register_forward_hook(post) for m in neuron_layers(model).values()]
    try:
        with torch.no_grad():
            logits = run_model(model, x, timesteps, encoding)
    finally:
        for h in hooks:
            h.remove()
    return logits.numpy(), best.numpy()
