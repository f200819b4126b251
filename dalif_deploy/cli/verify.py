"""``dalif-deploy verify MODEL [--reference MODEL] [--save-program FXP] [--lava-samples N]
[--report HTML] [--weight-bits N] [--json PATH]``."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dalif_deploy.base.errors import VerificationFailed
from dalif_deploy.base.wording import shown

from . import emit_json, event_options, hardware_from_args, show_progress


def add_lava_limits(p: argparse.ArgumentParser) -> None:
    """The Lava run guard's limits, as the lava backend declares them, then ``--json``."""
    from dalif_deploy.targets.lava import LAVA_LIMITS

    from . import _add_json

    for opt in LAVA_LIMITS:
        p.add_argument(opt.flag, type=opt.type, default=opt.default, metavar=opt.metavar,
                       help=opt.help)
    _add_json(p)


def cli_verify(args: argparse.Namespace) -> int:
    """Verify a checkpoint, NIR graph or program; exit 1 (VerificationFailed) when a threshold
    does not hold. ``--save-program`` is written (atomically) even then: it is the program
    the report describes."""
    from dalif_deploy.base.parallel import shard_device, start, stop
    from dalif_deploy.fixedpoint.program import save_program
    from dalif_deploy.targets.registry import file_kind
    from dalif_deploy.verification.files import verify_file
    from dalif_deploy.verification.pipeline import VerifyOptions, format_summary, write_report

    from .foreign import check_foreign_graph

    if file_kind(args.model) == "nir":  # a foreign graph: all it lacks, at once
        check_foreign_graph(args, args.model, ["verify", args.model])

    options = VerifyOptions(lava_samples=args.lava_samples, min_agreement=args.min_agreement,
                            max_accuracy_drop=args.max_accuracy_drop, onnx=args.onnx,
                            timeout=args.timeout, max_lava_processes=args.max_lava_processes,
                            max_lava_memory=args.max_lava_memory,
                            weight_bits=args.weight_bits, batch_size=args.batch_size,
                            device=args.device, hardware=hardware_from_args(args))
    world = start(args.device)  # torchrun: join the group, shard the test split
    try:
        options = dataclasses.replace(options, progress=show_progress(args) and world.main,
                                      device=str(shard_device(args.device, world)))
        result, artefacts = verify_file(args.model, reference=args.reference,
                                        dataset=event_options(args.dataset, args),
                                        data_dir=args.data_dir,
                                        exporter=args.exporter, dt=args.dt,
                                        timesteps=args.timesteps, options=options)
    finally:
        stop()
    if not world.main:  # every rank has the result; rank 0 prints, writes and fails
        return 0
    out = sys.stderr if args.json == "-" else sys.stdout  # --json -: stdout is the JSON alone
    print(format_summary(result), file=out)
    if world.size > 1:
        print(f"  (sharded over {world.size} processes)", file=out)
    if args.save_program:
        save_program(artefacts["program"], args.save_program)
        print(f"program: {shown(args.save_program)}", file=out)
    if args.report:
        write_report(result, artefacts, args.report)
        print(f"report: {shown(args.report)}", file=out)
    emit_json(result, args.json)
    if args.json and args.json != "-":
        print(f"JSON: {shown(args.json)}", file=out)
    if not result["passed"]:
        failed = [c["check"] for c in result["checks"] if not c["ok"]]
        raise VerificationFailed("; ".join(failed))
    return 0
