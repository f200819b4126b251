"""``dalif-deploy inspect FILE``: what any file the tool writes holds (a checkpoint, NIR graph,
fixed-point program, ONNX file, netx network, data set, or a verify/sweep/compare result), as
text or JSON. The kind comes from the content (:mod:`.filekind`), the suffix only when the
content shows none.

Checkpoints are described here; the other kinds by the module that owns the format (imported only
when such a file is inspected)::

    nir      dalif_deploy.converters.ir.graph:describe_nir
    program  dalif_deploy.fixedpoint.constraints:describe_program
    onnx     dalif_deploy.targets.onnxruntime:describe_onnx
    netx, dataset, *-result: dalif_deploy.verification.inspect_kinds
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.filekind import KINDS, sniff
from dalif_deploy.base.wording import percent

DESCRIBERS = {
    "nir": "dalif_deploy.converters.ir.graph:describe_nir",
    "program": "dalif_deploy.fixedpoint.constraints:describe_program",
    "onnx": "dalif_deploy.targets.onnxruntime:describe_onnx",
    "netx": "dalif_deploy.verification.inspect_kinds:describe_netx",
    "dataset": "dalif_deploy.verification.inspect_kinds:describe_dataset",
    **{k: "dalif_deploy.verification.inspect_kinds:describe_result"
       for k in ("verify-result", "sweep-result", "compare-result")},
}


def _values(t) -> float | list[float]:
    """A 0-d tensor as a float, a 1-d one as a list of floats (rounded for display)."""
    v = t.detach().double()
    return round(float(v), 6) if v.dim() == 0 else [round(float(x), 6) for x in v]


#: neuron parameter fields ``inspect`` leaves out (training-only settings)
_TRAINING_ONLY = ("surrogate", "surrogate_width")


def _neuron_params(m: Any) -> dict[str, Any]:
    """A neuron layer's effective parameters (tensors rounded for display), its granularity
    and, where it has one, its parametrisation."""
    import dataclasses

    import torch

    p = m.params()
    out: dict[str, Any] = {"granularity": m.granularity}
    if hasattr(m, "parametrization"):
        out["parametrization"] = m.parametrization
    for f in dataclasses.fields(p):
        if f.name not in _TRAINING_ONLY:
            v = getattr(p, f.name)
            out[f.name] = _values(v) if isinstance(v, torch.Tensor) else v
    return out


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """Summary of a checkpoint: model config, layers, effective DA-LIF parameters, metrics."""
    from dalif_deploy.float_model.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    from dalif_deploy.float_model.loading import load_model
    from dalif_deploy.neurons import neuron_layers

    recorded = _recorded_factory(path)
    head = {"kind": "checkpoint", "file": str(path),
            "format": f"{CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION}"}
    if recorded is not None:  # described from the record alone: no code is imported
        factory = recorded.config["factory"]
        return {**head, **_record(recorded), "num_parameters": None, "layers": [],
                "note": f"built by user code {factory!r}, which is never imported because a "
                        f"file names it; pass --model-code {factory} to build it for its "
                        "layers and parameter counts"}
    model, ckpt = load_model(path)
    lifs = neuron_layers(model)
    layers = []
    for name, m in model.named_modules():
        if name and not list(m.children()):  # leaves only
            entry: dict[str, Any] = {"name": name, "type": type(m).__name__,
                                     "parameters": sum(p.numel() for p in m.parameters())}
            if name in lifs:
                entry.update(neuron=m.neuron.name, **_neuron_params(m))
                if m.w_rec is not None:  # fed back its previous spikes: X + W_rec S[t-1]
                    entry["recurrent"] = list(m.w_rec.shape)
            elif hasattr(m, "weight") and m.weight is not None:
                entry["shape"] = list(m.weight.shape)
            layers.append(entry)
    return {**head, **_record(ckpt), "num_parameters": sum(p.numel() for p in model.parameters()),
            "layers": layers}


def _record(ckpt: Any) -> dict[str, Any]:
    """What a checkpoint records, as ``inspect`` shows it."""
    return {"model": ckpt.model_name, "config": ckpt.config, "timesteps": ckpt.timesteps,
            "dataset": ckpt.dataset, "metrics": ckpt.metrics, "created": ckpt.created,
            "sha256": ckpt.sha256, **({"finetune": ckpt.finetune} if ckpt.finetune else {})}


def _recorded_factory(path: str | Path) -> Any:
    """The checkpoint at ``path`` when it records a user factory and none is named (then it
    is described from its record: the factory rule of docs/custom-models.md), else None."""
    from dalif_deploy.float_model.factory import named_model_code
    from dalif_deploy.float_model.loading import load_checkpoint

    if named_model_code() is not None:
        return None
    try:
        ckpt = load_checkpoint(path)  # the record alone (weights_only): runs no code
    except DaLifError:
        return None  # e.g. a plain state_dict: load_model says what it needs
    return ckpt if "factory" in ckpt.config else None


def describe(path: str | Path, hardware: Any = None) -> dict[str, Any]:
    """Describe any file the tool writes, dispatching on the kind its content shows
    (:func:`filekind.sniff`; else its suffix, as :func:`backends.file_kind` reads a model);
    ``hardware``: the cost model's figures for a program's ``resources`` (a
    :class:`~dalif_deploy.fixedpoint.hardware.Hardware`, a mapping or a JSON file)."""
    from dalif_deploy.base.files import check_input_file

    check_input_file(path, "a file dalif-deploy writes: "
                     + ", ".join(dict.fromkeys(s for k in KINDS.values() for s in k.suffixes)))
    kind = sniff(path)
    if kind is None:  # the suffix decides; the reader of that kind says what is wrong
        from dalif_deploy.targets.registry import file_kind

        kind = file_kind(path)
    extra: dict[str, Any] = {}
    if kind.endswith("-result"):
        extra["kind"] = kind
    if hardware is not None:
        if kind != "program":
            raise DaLifError(f"{path}: --hardware/--hw set the cost model of a fixed-point "
                             f"program (.fxp); this is a {KINDS[kind].what}")
        from dalif_deploy.fixedpoint.hardware import hardware as figures

        extra["hardware"] = figures(hardware)
    if kind == "checkpoint":
        return describe_checkpoint(path)
    module, func = DESCRIBERS[kind].split(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise DaLifError(f"{path}: cannot describe a {kind} file in this installation "
                         f"({module}.{func} is not available: {e})") from None
    return fn(path, **extra)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list) and len(v) > 8 and all(isinstance(x, int | float) for x in v):
        return f"[{len(v)} values, min {min(v):.6g}, max {max(v):.6g}]"
    if isinstance(v, dict | list):
        return json.dumps(v, default=str, allow_nan=False)
    return str(v)


def _render_checkpoint(d: dict[str, Any]) -> list[str]:
    m = d["metrics"]
    acc = ", ".join(f"{k} {percent(v)}" for k, v in m.items()
                    if k.endswith("accuracy") and isinstance(v, int | float))
    lines = [
        f"{d['file']}: {d['format']}",
        f"model       {d['model']}  ("
        + (f"{d['num_parameters']} parameters, " if d["num_parameters"] is not None else "")
        + f"T={d['timesteps']})",
        f"config      {_fmt(d['config'])}",
        f"dataset     {_fmt(d['dataset'])}",
        f"metrics     {acc or _fmt(m)}",
        f"created     {_fmt(d['created'])}",
        f"sha256      {d['sha256']}",
        *([f"finetune    {_fmt(d['finetune'])}"] if d.get("finetune") else []),
        *([f"note        {d['note']}"] if d.get("note") else ["layers:"]),
    ]
    for layer in d["layers"]:
        if "neuron" in layer:
            shown = [k for k in layer if k not in ("name", "type", "parameters", "neuron",
                                                    "granularity", "parametrization")]
            extra = " ".join(f"{k}={_fmt(layer[k])}" for k in shown) + " (" + ", ".join(
                str(layer[k]) for k in ("granularity", "parametrization") if k in layer) + ")"
        else:
            extra = f"shape={layer['shape']}" if "shape" in layer else ""
        lines.append(f"  {layer['name']:<22} {layer['type']:<12} "
                     f"{layer['parameters']:>7} params  {extra}".rstrip())
    return lines


def _render_generic(d: dict[str, Any], indent: str = "") -> list[str]:
    lines = []
    for k, v in d.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            lines.append(f"{indent}{k}:")
            for item in v:
                lines.append(f"{indent}  - " + ", ".join(f"{a}={_fmt(b)}"
                                                         for a, b in item.items()))
        elif isinstance(v, dict) and v:
            lines.append(f"{indent}{k}:")
            lines += _render_generic(v, indent + "  ")
        else:
            lines.append(f"{indent}{k}: {_fmt(v)}")
    return lines


def _param(name: str, v: Any) -> str:
    """One NIR node parameter as ``name=...``: an array by its shape and range."""
    if isinstance(v, dict) and "shape" in v:
        dims = "x".join(str(d) for d in v["shape"]) or "scalar"
        if "value" in v:
            return f"{name}[{dims}]={_fmt(v['value'])}"
        if "min" in v:
            return f"{name}[{dims}] {_fmt(v['min'])}..{_fmt(v['max'])}"
        return f"{name}[{dims}]"
    return f"{name}={_fmt(v)}"


def _topology(nodes: list[dict[str, Any]]) -> str:
    """The graph's shape in words: a chain, or where it forks and joins."""
    joins = [f"{n['name']} <- {', '.join(n['inputs'])}" for n in nodes if len(n["inputs"]) > 1]
    users: dict[str, list[str]] = {}
    for n in nodes:
        for i in n["inputs"]:
            users.setdefault(i, []).append(n["name"])
    forks = [f"{a} -> {', '.join(b)}" for a, b in users.items() if len(b) > 1]
    if not joins and not forks:
        return "a chain: " + " -> ".join(n["name"] for n in nodes)
    return "; ".join([f"{len(forks)} fork(s): " + " | ".join(forks)] * bool(forks)
                     + [f"{len(joins)} join(s): " + " | ".join(joins)] * bool(joins))


def _render_nir(d: dict[str, Any]) -> list[str]:
    nodes = d["nodes"]
    types: dict[str, int] = {}
    for n in nodes:
        types[n["type"]] = types.get(n["type"], 0) + 1
    md = dict(d["metadata"])
    head = [f"{k}={md.pop(k)}" for k in ("timesteps", "input_encoding", "dt", "producer",
                                          "dataset") if k in md]
    lines = [
        f"{d['path']}: NIR graph" + (f" (NIR {d['nir_version']})" if d.get("nir_version")
                                     else ""),
        f"size        {len(nodes)} nodes, {len(d['edges'])} edges, "
        f"{d['num_parameters']} parameters",
        f"metadata    {' '.join(head) or '-'}",
        *(f"  {k:<24} {_fmt(v)}" for k, v in md.items()),
        f"node types  {', '.join(f'{t} {c}' for t, c in sorted(types.items()))}",
        f"topology    {_topology(nodes)}",
        "nodes (execution order):",
    ]
    for n in nodes:
        shapes = f"{n['input_shape']} -> {n['output_shape']}"
        params = " ".join(_param(k, v) for k, v in n["parameters"].items())
        lines.append(f"  {n['name']:<16} {n['type']:<10} {shapes:<28} {params}".rstrip())
    return lines


def render(d: dict[str, Any]) -> str:
    """Human-readable text for a :func:`describe` dict."""
    kind = d.get("kind")
    lines = (_render_checkpoint(d) if kind == "checkpoint" else _render_nir(d) if kind == "nir"
             else _render_generic(d))
    return "\n".join(lines)
