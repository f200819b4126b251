"""``dalif-deploy train --model M --dataset D --epochs N --timesteps T --seed S --out P``."""

from __future__ import annotations

import argparse

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import counted

from . import DATASET_NAMES, _add_quiet, add_data_options, show_progress
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``train``; each neuron model's own options come from the registry."""
    from dalif_deploy.neurons import SPECS, neuron_settings

    p.add_argument("--model", required=True, help="zoo model: digits-cnn, digits-resnet, "
                   "resnet19, vgg11")
    p.add_argument("--dataset", default="digits", help=f"{DATASET_NAMES}, or an .npz as "
                   "`dataset` writes it")
    add_data_options(p)
    p.add_argument("--epochs", type=int, default=30, help="passes over the training split")
    p.add_argument("--timesteps", "-T", type=int, default=4,
                   help="time steps per sample (the static image is fed every step)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine "
                   "schedule)")
    p.add_argument("--seed", type=int, default=0, help="training is deterministic for a seed")
    keys = [f"{s.key} ({s.summary})" for s in SPECS]
    p.add_argument("--neuron", choices=tuple(s.key for s in SPECS), default=SPECS[0].key,
                   help="neuron model of every spiking layer: " + ", ".join(keys[:-1])
                   + " or " * (len(keys) > 1) + keys[-1])
    for key, (setting, users) in neuron_settings().items():
        if setting.help is not None:
            p.add_argument("--" + key.replace("_", "-"), type=setting.type,
                           choices=setting.choices, help=f"{'/'.join(users)}: {setting.help}")
    p.add_argument("--width", type=int, help="base channel width (zoo default: 16 for digits "
                   "models, 128 resnet19, 64 vgg11); smaller trains faster")
    p.add_argument("--out", "-o", required=True, help="checkpoint path to write (.pt)")
    _add_quiet(p)


def cli_train(args: argparse.Namespace) -> int:
    """Train a zoo model, write its checkpoint and print train and test accuracy."""
    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.float_model.checkpoint import save_checkpoint
    from dalif_deploy.float_model.training import train
    from dalif_deploy.float_model.zoo import default_config
    from dalif_deploy.neurons import neuron_settings

    if args.width is not None and args.width < 1:
        raise DaLifError(f"--width must be >= 1, got {args.width}")
    from . import event_options

    dataset = event_options(args.dataset, args)
    # one sample tells the input shape and classes; train() loads the splits itself
    probe = load_dataset(dataset, "test", args.data_dir, args.timesteps, samples=1)
    options = {k: getattr(args, k) for k, (s, _) in neuron_settings().items()
               if s.help is not None and getattr(args, k) is not None}  # each model its own
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
    print(f"wrote {args.out}")
    return 0


COMMAND = Command(
    name="train", help="train a zoo model on bundled data",
    description="Train a zoo model (DA-LIF neurons, or the PLIF/LIF baselines with --neuron); "
    "deterministic for a given seed.",
    add_arguments=add_arguments, run=cli_train,
    inputs=("dataset", "data_dir"), outputs=("out",),
    pipeline="train a zoo model on bundled data           -> checkpoint (.pt)")
