"""``dalif-deploy quantize``: a NIR graph to a Loihi 2 fixed-point program (.fxp).

Calibration (``--calibrate DATASET``) runs each candidate program on the bit-accurate emulator;
the quantiser itself (:func:`~dalif_deploy.converters.nir_to_fixed.quantize_graph`) only gets
that run as a function.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dalif_deploy.base.encoding import ANALOG, ENCODING_NAMES
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import counted, shown

from . import (
    add_data_options,
    add_firing_options,
    add_json_option,
    add_quantiser_options,
    add_quiet_option,
    emit_json,
    event_options,
    note,
    warn,
)
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", metavar="MODEL.nir", help="NIR graph to quantise")
    p.add_argument("-o", "--out", required=True, help="program file to write (.fxp)")
    add_quantiser_options(p)
    add_data_options(p)
    p.add_argument("--from", dest="exporter", metavar="EXPORTER",
                   help="framework that exported a foreign NIR graph: snntorch (dt 1e-4, "
                   "Euler), sinabs (dt 1, exact decay), spikingjelly (dt 1e-4, Euler, fires "
                   "on >=), norse (dt 1e-3, Euler) or nir (give --dt)")
    p.add_argument("--dt", type=float, help="time step of a foreign NIR graph (overrides "
                   "--from's; required with plain NIR)")
    p.add_argument("--timesteps", "-T", type=int, help="T for a graph without metadata")
    add_firing_options(p)
    p.add_argument("--encoding", choices=ENCODING_NAMES,
                   help="input encoding for a graph without metadata")
    p.add_argument("--netx", metavar="H5", help="also write the program as lava-dl netx HDF5; "
                   "quantises onto netx's grid (biases in multiples of 64, integer dense "
                   "weights; chain graphs with per-layer decays only)")
    add_json_option(p)
    add_quiet_option(p)


def calibration_data(model_path: str, args: argparse.Namespace, *, encoding: str,
                input_shape: Any, timesteps: int | None, made_for: str | None = None,
                classes: int | None = None) -> tuple[Any, Any]:
    """``(samples, run)`` for ``quantize_graph`` from ``--calibrate`` and
    ``--calibration-samples`` (the training split, checked against the model's input and
    ``classes``; ``(None, None)`` without ``--calibrate``)."""
    if args.calibration_samples < 1:
        raise DaLifError(f"--calibration-samples must be >= 1, got {args.calibration_samples}")
    calibrate = event_options(args.calibrate, args, "--calibrate")
    if not calibrate:
        return None, None
    from dalif_deploy.targets.emulator import calibration_run
    from dalif_deploy.targets.registry import load_for_model

    ds = load_for_model(model_path, calibrate, "train", args.data_dir,
                        int(args.calibration_samples), encoding=encoding,
                        input_shape=input_shape, timesteps=timesteps, made_for=made_for,
                        at_most=True, classes=classes)
    return (ds.x if ds.encoding == ANALOG.name else _as_frames(ds.x)), calibration_run


def _as_frames(x: Any) -> Any:
    """Binary event samples as the emulator's uint8 input frames (the same integers, a quarter
    of float32's memory: 134 MB, not 537 MB, for 256 DVS128 samples at T=16); anything else
    (counts past 255 included) as it is."""
    import numpy as np

    frames = x.astype(np.uint8)
    return frames if np.array_equal(frames, x) else x


def input_range_note(args: argparse.Namespace, scale: float) -> None:
    """Say on stderr what an uncalibrated analog input scale assumes (unless ``--quiet``)."""
    note(args, f"note: without --calibrate the analog input is assumed to lie in [-1, 1] "
         f"(scale {scale:g}); larger inputs are clipped to 8 bits, so pass --calibrate "
         "DATASET for data outside that range")


def cli_quantize(args: argparse.Namespace) -> int:
    """``dalif-deploy quantize MODEL.nir -o model.fxp [--calibrate DATASET] [--weight-bits]``."""
    from dalif_deploy.converters.ir.graph import infer_shapes, io_nodes, output_classes
    from dalif_deploy.converters.nir_conventions import read_graph
    from dalif_deploy.converters.nir_to_fixed import (
        calibration_effect,
        format_table,
        quantize_graph,
    )
    from dalif_deploy.fixedpoint.fxp_format import save_program

    from .foreign import check_foreign_graph

    check_foreign_graph(args, args.graph, ["quantize", args.graph, "-o", args.out],
                        needs_encoding=True)
    # validated (NaN parameters, shapes, unknown nodes), then read with its exporter's
    # conventions (--from: dt, exact decay as Euler taus, the dt/tau range)
    reading = read_graph(Path(args.graph), args.exporter, args.dt, args.reset,
                         bool(args.multi_spike))
    graph = reading.graph
    for line in reading.notes:
        note(args, line)
    md = graph.metadata or {}
    cal, run = calibration_data(args.graph, args,
                                encoding=args.encoding or md.get("input_encoding", ANALOG.name),
                                input_shape=infer_shapes(graph)[io_nodes(graph)[0]],
                                timesteps=args.timesteps or md.get("timesteps"),
                                made_for=md.get("dataset"), classes=output_classes(graph))
    if args.netx:  # netx fixes bias_exp = 6 and takes integer dense weights: quantise for it
        note(args, "note: --netx quantises onto netx's grid (biases in multiples of 64, "
             "integer dense weights), so the .fxp written is the program netx loads")
    program = quantize_graph(graph, weight_bits=args.weight_bits, calibration=cal, run=run,
                             timesteps=args.timesteps, encoding=args.encoding, dt=reading.dt,
                             netx=bool(args.netx))
    if args.netx:
        from dalif_deploy.converters.fxp_to_netx import check_netx

        check_netx(program)  # refuse before writing anything
    save_program(program, args.out)
    if args.netx:
        from dalif_deploy.converters.fxp_to_netx import write_netx

        n = write_netx(program, args.netx)
        note(args, f"wrote {shown(args.netx)}: netx HDF5, {counted(n['layers'], 'layer')} "
             "(load with "
             f"input_message_bits={n['input_message_bits']}, reset_interval="
             f"{n['reset_interval']}, reset_offset={n['reset_offset']}; run {n['steps']} "
             "steps per sample)")
    calibration = None
    if cal is None and program.input.encoding is ANALOG:
        input_range_note(args, program.input.scale)
    elif cal is not None:
        changed, text = calibration_effect(program, len(cal))
        calibration = {"samples": len(cal), "rounds": program.metadata["calibration_rounds"],
                       "changed": changed, "effect": text}
        if changed:
            note(args, f"note: {text}")
        else:
            warn(text)
    # with --json - stdout carries the JSON alone
    print(format_table(program.quant_table), file=sys.stderr if args.json == "-" else sys.stdout)
    note(args, f"wrote {shown(args.out)}: {counted(len(program.populations), 'population')}, "
         f"{counted(len(program.synapses), 'synapse')}, T={program.timesteps}")
    emit_json({"program": str(args.out), "quant_table": program.quant_table,
               "timesteps": program.timesteps, "input_scale": program.input.scale,
               "calibration": calibration,
               **({"exporter": reading.exporter, "conventions": reading.notes}
                  if reading.exporter else {})}, args.json)
    return 0


COMMAND = Command(
    name="quantize", help="NIR graph -> fixed-point program",
    description="Quantise a NIR graph to a Loihi 2 fixed-point program (.fxp) and print the "
    "per-layer quantisation table.",
    add_arguments=add_arguments, run=cli_quantize,
    inputs=("graph", "calibrate", "data_dir"), outputs=("out", "json", "netx"),
    stdout_outputs=("json",),
    pipeline="NIR graph -> Loihi 2 fixed-point program (.fxp)",
    reuse_freed_memory=False)  # peak memory is the quantiser's figure (docs/MEASURED.md)
