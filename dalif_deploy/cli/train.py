"""``dalif-deploy train --model M --dataset D --epochs N --timesteps T --seed S --out P``."""

from __future__ import annotations

import argparse

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import counted, shown

from . import show_progress

#: the train options that are neuron config keys, set only when given (each model takes its own)
NEURON_OPTIONS = ("granularity", "parametrization", "tau", "init_tau")


def cli_train(args: argparse.Namespace) -> int:
    """Train a zoo model, write its checkpoint and print train and test accuracy."""
    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.float_model.checkpoint import save_checkpoint
    from dalif_deploy.float_model.training import train
    from dalif_deploy.float_model.zoo import default_config

    if args.width is not None and args.width < 1:
        raise DaLifError(f"--width must be >= 1, got {args.width}")
    from . import event_options

    dataset = event_options(args.dataset, args)
    # one sample tells the input shape and classes; train() loads the splits itself
    probe = load_dataset(dataset, "test", args.data_dir, args.timesteps, samples=1)
    options = {k: getattr(args, k) for k in NEURON_OPTIONS if getattr(args, k) is not None}
    config = default_config(args.model, input_shape=list(probe.input_shape),
                            num_classes=probe.num_classes, neuron=args.neuron, **options,
                            **({"width": args.width} if args.width is not None else {}))
    model, metrics = train(config, dataset, args.epochs, args.timesteps, args.batch_size,
                           args.lr, args.seed, args.data_dir,
                           progress=show_progress(args))
    dataset_info = {"name": probe.name, "encoding": probe.encoding,
                    "input_shape": list(probe.input_shape),
                    "normalization": probe.normalization}
    save_checkpoint(args.out, model, config, args.timesteps, dataset_info, metrics,
                    seed=args.seed)
    print(f"{args.model} ({args.neuron}) on {probe.name} (T={args.timesteps}, "
          f"{counted(args.epochs, 'epoch')}, "
          f"seed {args.seed}, {metrics['seconds']:.1f} s): "
          f"train accuracy {100 * metrics['train_accuracy']:.2f} %, "
          f"test accuracy {100 * metrics['test_accuracy']:.2f} %")
    print(f"wrote {shown(args.out)}")
    return 0
