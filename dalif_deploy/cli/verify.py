"""``dalif-deploy verify MODEL [--reference MODEL] [--save-program FXP] [--lava-samples N]
[--report HTML] [--weight-bits N] [--json PATH]``."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dalif_deploy.base.errors import VerificationFailed
from dalif_deploy.base.wording import shown

from . import (
    add_data_options,
    add_firing_options,
    add_hardware_options,
    add_quiet_option,
    emit_json,
    event_options,
    hardware_from_args,
    show_progress,
    weight_bits_arg,
)
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="the file to verify: a checkpoint (.pt), a "
                   "NIR graph (.nir; quantised as `quantize --calibrate` does) or a program "
                   "(.fxp; run as given)")
    from . import add_model_code

    add_model_code(p)
    p.add_argument("--reference", metavar="MODEL", help="float reference (.nir or .pt) for a "
                   "program (.fxp); without it only the emulator and Lava are compared")
    p.add_argument("--save-program", metavar="FXP", help="write the program verified (.fxp)")
    p.add_argument("--from", dest="exporter", metavar="EXPORTER",
                   help="framework that exported a foreign NIR graph (as `simulate --from`)")
    p.add_argument("--dt", type=float, help="time step of a foreign NIR graph (overrides "
                   "--from's)")
    p.add_argument("--timesteps", "-T", type=int, help="T for a NIR graph that records none")
    add_firing_options(p)
    p.add_argument("--dataset", help="data set: a name or an .npz as `dataset` writes it "
                   "(default: the one the model file records)")
    add_data_options(p)
    p.add_argument("--lava-samples", type=int, default=None,
                   help="first N test samples run on Lava and compared bit for bit (0: skip; "
                   "default 16, fewer where Lava's estimated time says 16 would take over 10 "
                   "min: verify says so)")
    p.add_argument("--report", metavar="HTML", help="write a self-contained HTML report")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="minimum float/fixed prediction agreement (0..1)")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0,
                   help="maximum float -> fixed accuracy drop, percentage points")
    p.add_argument("--onnx", action="store_true", help="include the ONNX stage")
    add_hardware_options(p)
    p.add_argument("--timeout", type=float, default=None, help="lava watchdog timeout (s; "
                   "default: 4x the run's estimated time, at least 600)")
    p.add_argument("--kernels", default="auto", choices=("auto", "float32", "int8", "check"),
                   help="the emulator's conv kernels: auto (int8 where self-tested exact, else "
                   "float32), float32, int8, or check (both, every integer compared)")
    p.add_argument("--weight-bits", type=weight_bits_arg, default=8, metavar="N",
                   help="weight mantissa bits of the program quantised from a .pt/.nir, 2..8 "
                   "(Loihi 2: 8); every stage and the report are at that precision")
    p.add_argument("--batch-size", type=int, default=None, help="test samples per batch (the "
                   "unit a run under torchrun shards by; default: up to 256, as many as this "
                   "machine's memory holds, said in a note when fewer)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device of the "
                   "emulator (the fixed-point stage and calibration): cpu, cuda or cuda:N; the "
                   "same integers on every device. Under `torchrun --nproc-per-node N -m "
                   "dalif_deploy verify ...` the test split is sharded over the N processes "
                   "and the results equal a single process's")
    p.add_argument("--reference-device", default="cpu", metavar="DEV", help="torch device of "
                   "the float and NIR references: cpu keeps their figures independent of "
                   "--device; cuda or cuda:N runs them on the GPU in IEEE float32 (on a CPU "
                   "they are most of a paper-scale verify), where a float sum on a threshold "
                   "may round otherwise than on the CPU")
    add_quiet_option(p)
    add_lava_limits(p)


def add_lava_limits(p: argparse.ArgumentParser) -> None:
    """The Lava run guard's limits, as the lava backend declares them, then ``--json``."""
    from dalif_deploy.targets.lava import LAVA_LIMITS

    from . import add_json_option

    for opt in LAVA_LIMITS:
        p.add_argument(opt.flag, type=opt.type, default=opt.default, metavar=opt.metavar,
                       help=opt.help)
    add_json_option(p)


def cli_verify(args: argparse.Namespace) -> int:
    """Verify a checkpoint, NIR graph or program; exit 1 (VerificationFailed) when a threshold
    does not hold. ``--save-program`` is written (atomically) even then: it is the program
    the report describes."""
    from dalif_deploy.base.parallel import shard_device, start, stop
    from dalif_deploy.fixedpoint.fxp_format import save_program
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
                            device=args.device, kernels=args.kernels,
                            reference_device=args.reference_device,
                            hardware=hardware_from_args(args))
    world = start(args.device)  # torchrun: join the group, shard the test split
    try:
        options = dataclasses.replace(
            options, progress=show_progress(args) and world.main,
            device=str(shard_device(args.device, world)),
            reference_device=str(shard_device(args.reference_device, world)))
        result, artefacts = verify_file(args.model, reference=args.reference,
                                        dataset=event_options(args.dataset, args),
                                        data_dir=args.data_dir,
                                        exporter=args.exporter, dt=args.dt,
                                        timesteps=args.timesteps, options=options,
                                        reset=args.reset, multi_spike=args.multi_spike)
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


COMMAND = Command(
    name="verify", help="float vs NIR vs fixed point vs Lava, one report",
    description="Export, re-import, quantise, emulate the whole test set and run Lava on a "
    "subset; report where accuracy is lost. Exit 1 if the thresholds do not hold.",
    add_arguments=add_arguments, run=cli_verify,
    inputs=("model", "reference", "dataset", "data_dir", "hardware"),
    outputs=("report", "json", "save_program"), stdout_outputs=("json",), sharded=True,
    pipeline="float vs NIR vs fixed point vs Lava, one report")
