"""``dalif-deploy export CKPT -o model.nir [--onnx model.onnx]``."""

from __future__ import annotations

import argparse

from ..errors import DaLifError


def cli_export(args: argparse.Namespace) -> int:
    """Export a checkpoint (or a plain state_dict with ``--model``/``--timesteps``)."""
    if not args.out and not getattr(args, "onnx", None):
        raise DaLifError("nothing to write: pass -o model.nir and/or --onnx model.onnx")
    if args.timesteps is not None and args.timesteps < 1:
        raise DaLifError(f"--timesteps must be >= 1, got {args.timesteps}")
    if args.out:
        from ..converters.torch_to_nir import export_checkpoint

        s = export_checkpoint(args.checkpoint, args.out, model=args.model,
                              timesteps=args.timesteps)
        print(f"wrote {s['nir']}: {s['model']}, T={s['timesteps']}, input "
              f"{tuple(s['input_shape'])}, {s['nodes']} nodes, {s['edges']} edges, "
              f"{len(s['lif_layers'])} LIF layers (checkpoint sha256 {s['sha256'][:12]})")
    if getattr(args, "onnx", None):
        from ..converters.torch_to_onnx import export_onnx_from_checkpoint

        o = export_onnx_from_checkpoint(args.checkpoint, args.onnx, model=args.model,
                                        timesteps=args.timesteps)
        print(f"wrote {o['onnx']}: {o['model']} unrolled over T={o['timesteps']}, "
              f"{o['encoding']} input {tuple(o['input_shape'])}, opset {o['opset']}, "
              f"{o['dalif_layers']} neuron layers")
    return 0
