"""``dalif-deploy finetune CKPT --weight-bits N [--epochs E] [--lr LR] [--seed S] -o OUT.pt``."""

from __future__ import annotations

import argparse
import sys

from dalif_deploy.base.wording import counted, shown

from . import emit_json, event_options, show_progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``finetune`` (added when the command is used, as for compare)."""
    from . import _add_json, _add_quiet, add_data_options, weight_bits_arg

    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint (.pt) to start from")
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
    _add_json(p)
    _add_quiet(p)


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
        print(f"  {when:<6}  float {100 * r[f'float_accuracy_{when}']:.2f} %   fixed "
              f"{100 * r[f'fixed_accuracy_{when}']:.2f} %", file=out)
    print(f"wrote {shown(args.out)}", file=out)
    emit_json(r, args.json)
    return 0
