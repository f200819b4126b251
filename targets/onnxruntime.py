"""Run an exported ONNX DA-LIF graph with onnxruntime (CPU): the ``onnx`` backend.

The graph (see ``converters/torch_to_onnx.py``) takes the raw model input and returns the
readout logits, mean over T. Rank-4 input means analog frames, rank-5 ``[B, T, C, H, W]`` means
event frames with T fixed by the graph; dalif-deploy metadata, when present, is cross-checked.

Float agreement with torch: ORT's kernels (MLAS convolution and GEMM) sum in a different order
than torch's, and the exporter folds eval-mode batch-norm into the convolution weights, so
membrane potentials differ from torch's by a few float32 ulps (about 1e-6 relative). The logits
therefore agree to about 1e-6 (tests bound them by 1e-5) as long as no membrane potential lies
within those few ulps of the threshold; a spike that flips there changes the logits by one
readout weight / T. Tests measure both.

``onnxruntime`` and ``onnx`` are imported only when a function here runs, never when
``dalif_deploy`` is imported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dalif_deploy.converters.torch_to_onnx import META_PREFIX

from dalif_deploy.base.encoding import ANALOG, EVENTS, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import check_input_file
from dalif_deploy.base.resources import INPUT_ELEMENTS_MAX, check_memory, format_bytes
from dalif_deploy.base.schema import Check, integer, load_json, shape, text, validate
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX

from .protocol import BackendRun, ModelInput, Option


@dataclass(frozen=True)
class OnnxGraphInfo:
    """What a runnable DA-LIF ONNX graph expects: input name, encoding, T and frame shape."""

    input_name: str
    output_name: str
    encoding: str  # the stored name of an Encoding
    timesteps: int | None  # None: analog graph without dalif-deploy metadata
    input_shape: tuple[int, ...]  # (C, H, W), or (C, L) for a 1-D network
    metadata: dict[str, str]
    classes: int | None = None  # the logits' size (None: not static)

    def __post_init__(self) -> None:
        Encoding.from_name(self.encoding)
        if len(self.input_shape) not in (2, 3) or min(self.input_shape) < 1:
            raise DaLifError(f"ONNX graph input must have a static (C, H, W) or (C, L) frame "
                             "shape, "
                             f"got {self.input_shape}")
        if self.timesteps is not None and not 1 <= self.timesteps <= TIMESTEPS_MAX:
            raise DaLifError(f"ONNX graph declares timesteps={self.timesteps}; must lie in "
                             f"1..{TIMESTEPS_MAX}")
        if int(np.prod(self.input_shape, dtype=np.float64)) > INPUT_ELEMENTS_MAX:
            raise DaLifError(f"ONNX graph input frame {self.input_shape} has more than the "
                             f"{INPUT_ELEMENTS_MAX:,} elements allowed")


def _load_proto(path: str | Path):
    """Read and check an ONNX file; anything that is not a valid ONNX model is a DaLifError."""
    import onnx

    path = check_input_file(path, "an ONNX model (.onnx)")
    check_memory(3 * path.stat().st_size, f"{path}: reading the ONNX model")
    try:  # never follow external-data references: a hostile file could point anywhere
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise DaLifError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e}); "
                         "re-export it with `dalif-deploy export CKPT --onnx PATH`") from e
    external = [t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise DaLifError(f"{path}: tensors {external[:3]} live in external data files, which "
                         "dalif-deploy does not read; export the model as one self-contained "
                         "file")
    if not proto.graph.node:
        raise DaLifError(f"{path}: ONNX file holds an empty graph (truncated or not ONNX)")
    for name, tensor in _tensors(proto):
        _check_tensor(tensor, f"{path}: tensor {name!r}")
    _metadata(proto, path)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise DaLifError(f"{path}: ONNX model fails onnx.checker: {e}") from e
    return proto


def _tensors(proto) -> list[tuple[str, Any]]:
    """Every constant tensor of the graph: initializers and Constant nodes' values."""
    out = [(t.name, t) for t in proto.graph.initializer]
    for node in proto.graph.node:
        if node.op_type == "Constant":
            out += [(node.output[0] if node.output else node.name, a.t)
                    for a in node.attribute if a.name == "value"]
    return out


def _check_tensor(t, where: str) -> None:
    """A constant tensor's declared size backed by its data, real, and finite."""
    from onnx import helper, numpy_helper

    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    except Exception:  # noqa: BLE001 - an unknown element type
        raise DaLifError(f"{where}: unknown element type {t.data_type}") from None
    if dtype.kind == "c":
        raise DaLifError(f"{where}: is complex ({dtype}); weights must be real")
    nbytes = int(np.prod(list(t.dims), dtype=np.float64)) * dtype.itemsize
    if t.HasField("raw_data") and nbytes != len(t.raw_data):
        raise DaLifError(f"{where}: declares shape {list(t.dims)} ({format_bytes(nbytes)}) "
                         f"but holds {format_bytes(len(t.raw_data))} (damaged or hostile file)")
    if not t.HasField("raw_data") and nbytes > 64 * max(1, t.ByteSize()):
        raise DaLifError(f"{where}: declares shape {list(t.dims)} ({format_bytes(nbytes)}) "
                         f"in a {format_bytes(t.ByteSize())} record (damaged or hostile file)")
    if dtype.kind == "f":
        a = numpy_helper.to_array(t)
        if a.size and not np.isfinite(a).all():
            raise DaLifError(f"{where}: holds NaN or Inf (e.g. a threshold); re-export from "
                             "a checkpoint with finite values")


def _json(check: Check) -> Check:
    """A metadata string holding JSON, parsed, then ``check``."""
    def parse(value: Any, where: str) -> Any:
        return check(load_json(text(value, where), where), where)
    return parse


#: the ``dalif_deploy.*`` metadata fields this project reads (all strings in the file)
METADATA_SCHEMA: dict[str, tuple[Check, bool]] = {
    "timesteps": (_json(lambda v, w: integer(v, w, 1, TIMESTEPS_MAX)), False),
    "dalif_layers": (_json(lambda v, w: integer(v, w, 0)), False),
    "input_shape": (_json(lambda v, w: shape(v, w, (2, 3), INPUT_ELEMENTS_MAX)), False),
    "encoding": (lambda v, w: text(v, w, ("analog", "events")), False),
    # what torch_to_onnx writes besides: shown by inspect, not used to run
    "version": (text, False), "model": (text, False), "readout": (text, False),
    "dataset": (text, False),
}


def _metadata(proto, path: str | Path = "model.onnx") -> dict[str, str]:
    """The ``dalif_deploy.*`` metadata of an ONNX ModelProto, without the prefix, its fields
    checked against :data:`METADATA_SCHEMA`."""
    meta = {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props
            if p.key.startswith(META_PREFIX)}
    validate(meta, METADATA_SCHEMA, f"{path}: metadata")
    return meta


def _dims(value_info) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def graph_info(proto, path: str | Path = "model.onnx") -> OnnxGraphInfo:
    """Input/output contract of a DA-LIF ONNX graph (one float input, one logits output)."""
    if len(proto.graph.input) != 1 or len(proto.graph.output) != 1:
        raise DaLifError(f"{path}: expected one input and one output, got "
                         f"{len(proto.graph.input)} inputs and {len(proto.graph.output)} "
                         "outputs; this is not a dalif-deploy classifier graph")
    inp, out = proto.graph.input[0], proto.graph.output[0]
    dims = _dims(inp)
    meta = _metadata(proto, path)
    # a frame is (C, H, W), or (C, L) where the metadata records a 1-D input shape
    rank = (len(load_json(meta["input_shape"], f"{path}: metadata input_shape"))
            if "input_shape" in meta else 3)
    if len(dims) == rank + 1:
        enc, t, frame = ANALOG, None, dims[1:]
    elif len(dims) == rank + 2:
        enc, t, frame = EVENTS, dims[1], dims[2:]
        if not isinstance(t, int):
            raise DaLifError(f"{path}: event input {dims} has no static T axis")
    else:
        raise DaLifError(f"{path}: input {inp.name!r} has shape {dims}; expected "
                         "[B, C, H, W] (analog) or [B, T, C, H, W] (events), [B, (T,) C, L] "
                         "for a 1-D network")
    if not all(isinstance(d, int) for d in frame):
        raise DaLifError(f"{path}: input frame shape {frame} is not static")
    if "input_shape" in meta and load_json(meta["input_shape"], "input_shape") != list(frame):
        raise DaLifError(f"{path}: metadata says input_shape {meta['input_shape']} but the "
                         f"input frame is {list(frame)}")
    if "timesteps" in meta:
        mt = int(meta["timesteps"])
        if t is not None and t != mt:
            raise DaLifError(f"{path}: metadata says T={mt} but the input has T={t}")
        t = mt
    if Encoding.find(meta.get("encoding", enc.name)) is not enc:
        raise DaLifError(f"{path}: metadata says {meta['encoding']} input but the input shape "
                         f"{dims} is {enc.name}")
    logits = _dims(out)
    classes = logits[-1] if len(logits) == 2 and isinstance(logits[-1], int) else None
    return OnnxGraphInfo(inp.name, out.name, enc.name, t, tuple(frame), meta, classes or None)


class OnnxRunner:
    """An onnxruntime CPU session over a checked DA-LIF ONNX graph."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        proto = _load_proto(self.path)
        self.info = graph_info(proto, self.path)
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only
        if threads is not None:
            if threads < 1:
                raise DaLifError(f"threads must be >= 1, got {threads}")
            so.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), so,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise DaLifError(f"{self.path}: onnxruntime cannot load the graph ({e})") from e

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        want = self.info.input_shape
        if Encoding.from_name(self.info.encoding).time_axis:
            want = (self.info.timesteps, *want)
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != tuple(want):
            raise DaLifError(f"{self.path}: input of shape {tuple(x.shape)} does not fit the "
                             f"graph's [B, {', '.join(map(str, want))}] "
                             f"({self.info.encoding})")
        if not np.isfinite(x).all():
            raise DaLifError(f"{self.path}: input holds NaN or Inf values")
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self, x: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Logits ``[N, classes]`` (float32) for inputs ``x`` ``[N, ...]``, in batches."""
        if batch_size < 1:
            raise DaLifError(f"batch_size must be >= 1, got {batch_size}")
        x = self._check_input(x)
        starts = range(0, len(x), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="onnxruntime", unit="batch")
        out = [self.session.run([self.info.output_name],
                                {self.info.input_name: x[i:i + batch_size]})[0]
               for i in starts]
        if not out:
            raise DaLifError("no samples to run")
        return np.concatenate(out)


def run_onnx(path: str | Path, x: np.ndarray, batch_size: int = 256,
             progress: bool = False) -> np.ndarray:
    """Run the ONNX graph at ``path`` on ``x`` (the raw model input); returns logits."""
    return OnnxRunner(path).run(x, batch_size, progress)


class OnnxBackend:
    """The ``onnx`` backend: accuracy and per-sample predictions of an ONNX graph on a data set.

    The graph's input shape must fit the data set (event graphs fix T; the data set is
    generated with that T).
    """

    name = "onnx"
    kind = "onnx"
    options: tuple[Option, ...] = ()

    def __init__(self, model_path: str, **options: Any) -> None:
        self.runner = OnnxRunner(model_path)
        info = self.runner.info
        self.input = ModelInput(info.encoding, info.input_shape, info.timesteps,
                                info.metadata.get("dataset"), info.classes)

    def run(self, data: Any, *, batch_size: int, progress: bool) -> BackendRun:
        logits = self.runner.run(data.x, batch_size, progress)
        info = self.runner.info
        return BackendRun(logits.argmax(axis=1), {"timesteps": info.timesteps,
                                                  "encoding": info.encoding})


def describe_onnx(path: str | Path) -> dict[str, Any]:
    """Summary of an ONNX file for ``dalif-deploy inspect``: I/O, metadata, ops, parameters."""
    proto = _load_proto(path)
    meta = _metadata(proto, path)
    params = sum(int(np.prod(list(t.dims), dtype=np.int64)) for t in proto.graph.initializer)
    ops = Counter(n.op_type for n in proto.graph.node)
    desc: dict[str, Any] = {
        "kind": "onnx",
        "file": str(path),
        "model": meta.get("model"),
        "timesteps": int(meta["timesteps"]) if "timesteps" in meta else None,
        "encoding": meta.get("encoding"),
        "dataset": meta.get("dataset"),
        "dalif_deploy_version": meta.get("version"),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ir_version": int(proto.ir_version),
        "opsets": {imp.domain or "ai.onnx": int(imp.version) for imp in proto.opset_import},
        "inputs": [{"name": v.name, "shape": _dims(v)} for v in proto.graph.input],
        "outputs": [{"name": v.name, "shape": _dims(v)} for v in proto.graph.output],
        "nodes": len(proto.graph.node),
        "ops": dict(sorted(ops.items())),
        "parameters": params,
        "metadata": meta,
    }
    if "dalif_layers" in meta:
        desc["dalif_layers"] = int(meta["dalif_layers"])
    if "input_shape" in meta:
        desc["input_shape"] = load_json(meta["input_shape"], "metadata input_shape")
    return desc


def compare_with_torch(model: Any, onnx_path: str | Path, x: Any, timesteps: int,
                       encoding: Encoding | str = ANALOG, batch_size: int = 256
                       ) -> dict[str, Any]:
    """Run ``model`` (torch) and the ONNX graph on ``x``; report logit and prediction agreement.

    ``far`` samples are those whose potentials all stay at least ``NEAR_THRESHOLD`` from the
    threshold: their spikes cannot flip under float reordering, so their logits must agree
    within ``LOGIT_TOLERANCE``. ``near`` samples are threshold ties: a spike may fire in one
    runtime and not the other (which one depends on the CPU's kernels), so their logits and
    predictions may differ. ``decisive`` samples are far ones whose top-2 torch logits also
    differ by more than ``2 * LOGIT_TOLERANCE``: no rounding within the bounds can change
    their prediction, so only they are counted in ``prediction_agreement_decisive``.
    """
    from dalif_deploy.converters.torch_to_onnx import (
        LOGIT_TOLERANCE,
        NEAR_THRESHOLD,
        threshold_margins,
    )

    ref, margin = threshold_margins(model, x, timesteps, encoding)
    got = run_onnx(onnx_path, x.numpy(), batch_size)
    diff = np.abs(ref - got).max(axis=1)
    far = margin >= NEAR_THRESHOLD
    decisive = far & (top2_margin(ref) > 2 * LOGIT_TOLERANCE)
    mismatch = diff > LOGIT_TOLERANCE
    same = ref.argmax(1) == got.argmax(1)
    return {
        "samples": int(len(ref)),
        "max_abs_diff": float(diff.max()),
        "max_abs_diff_far": float(diff[far].max()) if far.any() else None,
        "prediction_agreement": float(same.mean()),
        "prediction_agreement_far": float(same[far].mean()) if far.any() else None,
        "prediction_agreement_decisive": float(same[decisive].mean()) if decisive.any() else None,
        "near_threshold_samples": int((~far).sum()),
        "decisive_samples": int(decisive.sum()),
        "mismatched_samples": int(mismatch.sum()),
        "mismatched_far_samples": int((mismatch & far).sum()),
        "max_margin_of_mismatched": float(margin[mismatch].max()) if mismatch.any() else None,
        "tolerance": LOGIT_TOLERANCE,
        "near_threshold": NEAR_THRESHOLD,
    }


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """Per sample, the largest logit minus the second largest (0 for a tie)."""
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2]
