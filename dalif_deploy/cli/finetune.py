"""``dalif-deploy finetune CKPT --weight-bits N [--epochs E] [--lr LR] [--seed S] -o OUT.pt``."""

from __future__ import annotations

import argparse
import sys

from dalif_deploy.base.wording import counted, percent, shown

from . import emit_json, event_options, show_progress
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    from . import add_data_options, add_json_option, add_quiet_option, weight_bits_arg

    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint (.pt) to start from")
    from . import add_model_code

    add_model_code(p)
    p.add_argument("--weight-bits", type=weight_bits_arg, required=True, metavar="N",
                   help="weight mantissa bits of the target program, 2..8")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training split")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (cosine "
                   "schedule)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning is deterministic for a "
                   "seed")
    p.add_argument("--dataset", help="data set name (default: the checkpoint's)")
    add_data_options(p)
    p.add_argument("-o", "--out", required=True, help="checkpoint path to write (.pt)")
    add_json_option(p)
    add_quiet_option(p)


def cli_finetune(args: argparse.Namespace) -> int:
    """Quantisation-aware fine-tuning through the N-bit program; write the checkpoint and
    print float and fixed-point test accuracy before and after."""
    from dalif_deploy.studies.finetune import FinetuneOptions, finetune_checkpoint

    options = FinetuneOptions(weight_bits=args.weight_bits, epochs=args.epochs, lr=args.lr,
                              batch_size=args.batch_size, seed=args.seed,
                              progress=show_progress(args))
    r = finetune_checkpoint(args.checkpoint, args.out, options,
                            dataset=event_options(args.dataset, args), data_dir=args.data_dir)
    out = sys.stderr if args.json == "-" else sys.stdout  # --json -: stdout is the JSON alone
    print(f"{r['model']} on {r['dataset']} ({counted(r['samples'], 'test sample')}), "
          f"{r['weight_bits']}-bit weights, {counted(r['epochs'], 'epoch')}, lr {r['lr']:g}, seed "
          f"{r['seed']} ({r['seconds']:.1f} s)", file=out)
    for when in ("before", "after"):
        print(f"  {when:<6}  float {percent(r[f'float_accuracy_{when}'])}   fixed "
              f"{percent(r[f'fixed_accuracy_{when}'])}", file=out)
    print(f"wrote {shown(args.out)}", file=out)
    emit_json(r, args.json)
    return 0


COMMAND = Command(
    name="finetune", help="quantisation-aware fine-tuning for N-bit weights",
    description="Fine-tune CKPT so that its N-bit program wins back the accuracy quantisation "
    "loses: every step quantises the current weights exactly as `verify --weight-bits N` does "
    "and runs the batch on the bit-accurate emulator (the forward values are the program's "
    "integers), with straight-through gradients into the float weights. Writes an ordinary "
    "checkpoint recording how it was fine-tuned.",
    add_arguments=add_arguments, run=cli_finetune,
    inputs=("checkpoint", "dataset", "data_dir"), outputs=("out", "json"),
    stdout_outputs=("json",),
    pipeline="quantisation-aware fine-tuning through the N-bit program -> checkpoint (.pt)")
