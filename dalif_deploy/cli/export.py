"""``dalif-deploy export CKPT -o model.nir [--onnx model.onnx] [--netx model.h5]``."""

from __future__ import annotations

import argparse

from dalif_deploy.base.encoding import ANALOG, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import counted, shown

from . import add_data_options, add_quantiser_options, add_quiet_option
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint (.pt) or plain state_dict")
    from . import add_model_code

    add_model_code(p)
    p.add_argument("-o", "--out", help="NIR file to write")
    p.add_argument("--onnx", metavar="PATH", help="ONNX file to write")
    p.add_argument("--netx", metavar="H5", help="lava-dl netx HDF5 file to write (biases "
                   "quantised onto netx's fixed bias_exp 6, integer dense weights)")
    p.add_argument("--program", metavar="FXP", help="with --netx: also write the exported "
                   "program (.fxp) for simulate/verify")
    add_quantiser_options(p, "with --netx: ")
    add_data_options(p)
    p.add_argument("--model", help="zoo model name when CKPT is a plain state_dict")
    p.add_argument("--timesteps", "-T", type=int, help="timesteps when CKPT is a state_dict")
    add_quiet_option(p)


def cli_export(args: argparse.Namespace) -> int:
    """Export a checkpoint (or a plain state_dict with ``--model``/``--timesteps``)."""
    if not args.out and not args.onnx and not args.netx:
        raise DaLifError("nothing to write: pass -o model.nir, --onnx model.onnx and/or "
                         "--netx model.h5")
    if args.timesteps is not None and args.timesteps < 1:
        raise DaLifError(f"--timesteps must be >= 1, got {args.timesteps}")
    if args.program and not args.netx:
        raise DaLifError("--program writes the program of the netx export: pass --netx too "
                         "(or use `quantize` on the NIR graph)")
    if args.out:
        from dalif_deploy.converters.torch_to_nir import export_checkpoint

        s = export_checkpoint(args.checkpoint, args.out, model=args.model,
                              timesteps=args.timesteps)
        print(f"wrote {shown(s['nir'])}: {s['model']}, T={s['timesteps']}, input "
              f"{tuple(s['input_shape'])}, {s['nodes']} nodes, {s['edges']} edges, "
              f"{len(s['lif_layers'])} LIF layers (checkpoint sha256 {s['sha256'][:12]})")
    if args.onnx:
        from dalif_deploy.converters.torch_to_onnx import export_onnx_from_checkpoint

        o = export_onnx_from_checkpoint(args.checkpoint, args.onnx, model=args.model,
                                        timesteps=args.timesteps)
        print(f"wrote {shown(o['onnx'])}: {o['model']} unrolled over T={o['timesteps']}, "
              f"{o['encoding']} input {tuple(o['input_shape'])}, opset {o['opset']}, "
              f"{o['dalif_layers']} neuron layers")
    if args.netx:
        _export_netx(args)
    return 0


def _export_netx(args: argparse.Namespace) -> None:
    from dalif_deploy.converters.fxp_to_netx import export_netx
    from dalif_deploy.converters.nir_to_fixed import format_table
    from dalif_deploy.float_model.loading import load_checkpoint

    from . import note
    from .quantize import calibration_data, input_range_note

    ckpt = load_checkpoint(args.checkpoint, args.model, args.timesteps)
    spec = ckpt.model_input()
    cal, run = calibration_data(args.checkpoint, args, encoding=spec["encoding"],
                           input_shape=spec["input_shape"],
                           timesteps=args.timesteps or ckpt.timesteps, made_for=spec["dataset"],
                           classes=ckpt.num_classes)
    n = export_netx(args.checkpoint, args.netx, model=args.model, timesteps=args.timesteps,
                    weight_bits=args.weight_bits, calibration=cal, run=run,
                    program_path=args.program)
    note(args, format_table(n["quant_table"]))
    if cal is None and Encoding.find(spec["encoding"]) is ANALOG:
        input_range_note(args, n["input_scale"])
    print(f"wrote {shown(args.netx)}: netx HDF5 of {n['model']}, {counted(n['layers'], 'layer')}, "
          "biases on "
          f"netx's 64-unit grid (load with input_message_bits={n['input_message_bits']}, "
          f"reset_interval={n['reset_interval']}, reset_offset={n['reset_offset']}; run "
          f"{n['steps']} steps per sample)" + (f"; its program: {shown(args.program)}"
                                               if args.program else ""))


COMMAND = Command(
    name="export", help="checkpoint -> NIR, ONNX or lava-dl netx",
    description="Export a checkpoint (or a plain state_dict with --model) to a NIR graph (-o "
    "model.nir), ONNX (--onnx model.onnx) and/or lava-dl netx HDF5 (--netx model.h5: NIR -> the "
    "quantiser in netx mode -> the file `netx.hdf5.Network` loads, bit-exact with the emulator; "
    "chain models with per-layer decays only).",
    add_arguments=add_arguments, run=cli_export,
    inputs=("checkpoint", "calibrate", "data_dir"), outputs=("out", "onnx", "netx", "program"),
    pipeline="checkpoint -> NIR graph (.nir), ONNX (.onnx) or lava-dl netx (.h5)",
    reuse_freed_memory=False)  # peak memory is the quantiser's figure (docs/MEASURED.md)
