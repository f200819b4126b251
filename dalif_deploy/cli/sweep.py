"""``dalif-deploy sweep CKPT [--weight-bits 8,6,4,3,2] [--lava-samples N] [--lava-bits LIST]
[--plot PNG] [--json PATH]``."""

from __future__ import annotations

import argparse
import sys

from dalif_deploy.base.wording import shown

from . import emit_json, event_options, show_progress
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    from . import add_data_options, add_json_option, add_quiet_option

    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint (.pt)")
    from . import add_model_code

    add_model_code(p)
    p.add_argument("--weight-bits", default="8,6,4,3,2", metavar="LIST",
                   help="comma-separated weight mantissa bits, each 2..8")
    p.add_argument("--dataset", help="data set name or .npz (default: the checkpoint's)")
    add_data_options(p)
    p.add_argument("--lava-samples", type=int, default=0,
                   help="also run the first N test samples on Lava at each precision and "
                   "check them bit for bit against the emulator (0: emulator only)")
    p.add_argument("--lava-bits", metavar="LIST", help="run Lava only at these precisions "
                   "(a subset of --weight-bits; needs --lava-samples)")
    p.add_argument("--timeout", type=float, default=600.0, help="lava watchdog timeout (s)")
    p.add_argument("--plot", metavar="PNG", help="write the accuracy/memory plot (.png, .pdf "
                   "or .svg)")
    add_json_option(p)
    add_quiet_option(p)


def cli_sweep(args: argparse.Namespace) -> int:
    """Verify a checkpoint at several weight precisions; print one table, write the plot and
    the JSON."""
    from dalif_deploy.studies.sweep import (
        SweepOptions,
        format_sweep,
        parse_weight_bits,
        plot_sweep,
        sweep_precision,
    )

    options = SweepOptions(
        weight_bits=parse_weight_bits(args.weight_bits), lava_samples=args.lava_samples,
        lava_bits=parse_weight_bits(args.lava_bits, "--lava-bits") if args.lava_bits else None,
        timeout=args.timeout, progress=show_progress(args))
    if args.plot:
        from pathlib import Path

        if Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg"):  # before the work
            from dalif_deploy.base.errors import DaLifError

            raise DaLifError(f"--plot {shown(args.plot)}: give a .png, .pdf or .svg file")
    result = sweep_precision(args.checkpoint, options, dataset=event_options(args.dataset, args),
                             data_dir=args.data_dir)
    out = sys.stderr if args.json == "-" else sys.stdout  # --json -: stdout is the JSON alone
    print(format_sweep(result), file=out)
    if args.plot:
        plot_sweep(result, args.plot)
        print(f"plot: {shown(args.plot)}", file=out)
    emit_json(result, args.json)
    return 0


COMMAND = Command(
    name="sweep", help="verify a checkpoint at several weight precisions",
    description="Quantise CKPT at each precision (as `verify --weight-bits` does) and report, "
    "per precision, float and fixed-point accuracy, float/fixed prediction agreement, synaptic "
    "memory and cores (resource model estimates); emulator only unless --lava-samples is given.",
    add_arguments=add_arguments, run=cli_sweep,
    inputs=("checkpoint", "dataset", "data_dir"), outputs=("plot", "json"),
    stdout_outputs=("json",),
    pipeline="verify a checkpoint at several weight precisions: one table, one plot")
