"""``dalif-deploy simulate MODEL --backend B [--dataset D] [--samples N] [--json P]``."""

from __future__ import annotations

import argparse
import sys

from dalif_deploy.base.wording import counted, percent, shown

from . import add_quiet_option, emit_json, note, show_progress
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Everything after MODEL: ``--backend`` (help from the file kinds the backends run), the
    shared options, then each backend option once, as the backends' registrations declare it
    (``--dt`` for nir and norse, ``--timeout`` for lava); no backend is imported."""
    from dalif_deploy.targets.registry import BACKENDS, FILE_KINDS, backend_options

    from . import DATASET_NAMES, add_data_options, add_json_option

    p.add_argument("model", metavar="MODEL", help="model file: .pt, .nir, .fxp or .onnx")
    from . import add_model_code

    add_model_code(p)
    add_quiet_option(p)
    by_kind: dict[str, list[str]] = {}
    for name, entry in BACKENDS.items():  # the registrations: no backend imported
        by_kind.setdefault(entry.kind, []).append(name)
    p.add_argument("--backend", choices=tuple(BACKENDS), required=True,
                   help=", ".join(f"{'/'.join(names)} ({FILE_KINDS[kind][0][0]})"
                                  for kind, names in by_kind.items()))
    p.add_argument("--dataset", help=f"{DATASET_NAMES}, or the path of an .npz as `dataset` "
                   "writes it (default: the one a checkpoint records; digits for other files)")
    add_data_options(p)
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="data set split to run")
    p.add_argument("--samples", type=int, help="first N samples of the split (default: all)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="samples per batch (lava: per compiled network)")
    for opt, _ in backend_options().values():
        if opt.switch:
            p.add_argument(*(opt.flags or (opt.flag,)), dest=opt.name, default=opt.default,
                           help=opt.help, action="store_const", const=True)
            continue
        p.add_argument(*(opt.flags or (opt.flag,)), dest=opt.name, type=opt.type,
                       default=opt.default, help=opt.help,
                       action="append" if opt.repeat else "store",
                       **({"metavar": opt.metavar} if opt.metavar else {}))
    add_json_option(p)


def cli_simulate(args: argparse.Namespace) -> int:
    """Run the model on the backend, print one line and (``--json``) the result's JSON dict.

    An option with a default (``--timeout``) that the chosen backend does not take is left out;
    one without a default that is given is an error (``--dt`` on a checkpoint)."""
    from dalif_deploy.base.parallel import shard_device, start, stop
    from dalif_deploy.targets.registry import (
        BACKENDS,
        backend_options,
        check_fits,
        get_backend,
        run_backend,
    )

    from .foreign import check_foreign_graph

    if check_fits(get_backend(args.backend), args.model) == "nir":  # all it lacks, at once
        check_foreign_graph(args, args.model, ["simulate", args.model, "--backend", args.backend])
    own = {o.name for o in BACKENDS[args.backend].options}
    opts = {name: getattr(args, name) for name, (opt, _) in backend_options().items()
            if name in own or opt.default is None}
    from . import event_options

    world = start(opts.get("device"))  # torchrun: join the group, shard the data
    if opts.get("device") is not None:
        opts["device"] = str(shard_device(opts["device"], world))
    try:
        result = run_backend(args.model, args.backend, dataset=event_options(args.dataset, args),
                             split=args.split, samples=args.samples, batch_size=args.batch_size,
                             data_dir=args.data_dir, progress=show_progress(args) and world.main,
                             **opts)
    finally:
        stop()
    if not world.main:  # rank 0 prints and writes
        return 0
    for text in result.extras.get("conventions") or ():  # what the exporter is known to drop
        note(args, f"[{result.backend}] {text}")
    data = result.dataset if result.split is None else f"{result.dataset}/{result.split}"
    line = (f"{result.backend}: {shown(args.model)} on {data}, "
            f"{counted(result.samples, 'sample')}, accuracy {percent(result.accuracy)} "
            f"({result.seconds:.2f} s{f', {world.size} processes' if world.size > 1 else ''})")
    from dalif_deploy.fixedpoint.cost import cost_line

    for text in (line, cost_line(result.extras)):  # the cost model's: emulator runs only
        if text:
            print(text, file=sys.stderr if args.json == "-" else sys.stdout)
    emit_json(result.to_dict(), args.json)
    return 0


COMMAND = Command(
    name="simulate", help="run a model file on a backend",
    description="Run MODEL (checkpoint .pt, NIR graph .nir, fixed-point program .fxp or ONNX "
    ".onnx) on a backend over a data set split and report accuracy and per-sample predictions.",
    add_arguments=add_arguments, run=cli_simulate,
    inputs=("model", "dataset", "data_dir", "hardware"), outputs=("json",),
    stdout_outputs=("json",), sharded=True,
    pipeline="run a checkpoint / graph / program on a backend, report accuracy (JSON)")
