"""``dalif-deploy train --model M --dataset D --epochs N --timesteps T --seed S --out P``, or
``train --model-code FACTORY --config JSON ...`` for the user's own architecture."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import counted, percent, shown

from . import DATASET_NAMES, add_data_options, add_quiet_option, show_progress
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``train``; each neuron model's own options come from the registry."""
    from dalif_deploy.neurons import SPECS, neuron_settings

    from . import add_model_code

    p.add_argument("--model", help="zoo model: digits-cnn, digits-resnet, digits-rnn "
                   "(recurrent; digits-rows, -T 8), resnet19, vgg11 (or --model-code)")
    add_model_code(p)
    p.add_argument("--config", metavar="JSON", help="with --model-code: the factory's keyword "
                   "arguments as a JSON object (recorded in the checkpoint)")
    p.add_argument("--name", help="with --model-code: the model's name in the checkpoint "
                   "(default: the factory function's)")
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
    add_quiet_option(p)


def _factory_model(args: argparse.Namespace, probe: Any) -> tuple[Any, dict[str, Any]]:
    """``--model-code``: the user's factory called with ``--config`` (seeded, so the initial
    weights are the seed's) and the model record its checkpoint keeps."""
    from dalif_deploy.float_model.factory import build, factory_config
    from dalif_deploy.float_model.training import deterministic
    from dalif_deploy.neurons import SPECS, neuron_settings

    if args.model or args.width is not None or args.neuron != SPECS[0].key or any(
            getattr(args, k, None) is not None for k, (st, _) in neuron_settings().items()
            if st.help is not None):
        raise DaLifError("--model-code builds the whole network: --model, --width, --neuron "
                         "and the neuron options are for zoo models (put your settings in "
                         "--config)")
    try:
        config = json.loads(args.config) if args.config else {}
    except json.JSONDecodeError as e:
        raise DaLifError(f"--config: not JSON ({e})") from None
    if not isinstance(config, dict):
        raise DaLifError(f"--config: a JSON object of the factory's keyword arguments, got "
                         f"{type(config).__name__}")
    name = args.name or args.model_code.rpartition(":")[2]
    record = factory_config(name, args.model_code, config, probe.input_shape,
                            probe.num_classes)
    with deterministic(args.seed):
        model = build(args.model_code, record["config"])
    return model, record


def cli_train(args: argparse.Namespace) -> int:
    """Train a zoo model or the user's own, write its checkpoint, print train and test
    accuracy."""
    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.float_model.checkpoint import save_checkpoint
    from dalif_deploy.float_model.training import train
    from dalif_deploy.float_model.zoo import default_config
    from dalif_deploy.neurons import neuron_settings

    if not args.model and not args.model_code:
        raise DaLifError("train: give --model NAME (a zoo model) or --model-code FACTORY "
                         "(your own architecture)")
    if (args.config or args.name) and not args.model_code:
        raise DaLifError("--config and --name are for --model-code (a zoo model's settings "
                         "are options of their own)")
    if args.width is not None and args.width < 1:
        raise DaLifError(f"--width must be >= 1, got {args.width}")
    from . import event_options

    dataset = event_options(args.dataset, args)
    # one sample tells the input shape and classes; train() loads the splits itself
    probe = load_dataset(dataset, "test", args.data_dir, args.timesteps, samples=1)
    if args.model_code:
        target, config = _factory_model(args, probe)
        what = f"{config['name']} ({args.model_code})"
    else:
        options = {k: getattr(args, k) for k, (st, _) in neuron_settings().items()
                   if st.help is not None and getattr(args, k) is not None}  # each model its own
        config = default_config(args.model, input_shape=list(probe.input_shape),
                                num_classes=probe.num_classes, neuron=args.neuron, **options,
                                **({"width": args.width} if args.width is not None else {}))
        target, what = config, f"{args.model} ({args.neuron})"
    model, metrics = train(target, dataset, args.epochs, args.timesteps, args.batch_size,
                           args.lr, args.seed, args.data_dir,
                           progress=show_progress(args))
    dataset_info = {"name": probe.name, "encoding": probe.encoding,
                    "input_shape": list(probe.input_shape),
                    "normalization": probe.normalization}
    save_checkpoint(args.out, model, config, args.timesteps, dataset_info, metrics,
                    seed=args.seed)
    print(f"{what} on {probe.name} (T={args.timesteps}, "
          f"{counted(args.epochs, 'epoch')}, "
          f"seed {args.seed}, {metrics['seconds']:.1f} s): "
          f"train accuracy {percent(metrics['train_accuracy'])}, "
          f"test accuracy {percent(metrics['test_accuracy'])}")
    print(f"wrote {shown(args.out)}")
    return 0


COMMAND = Command(
    name="train", help="train a zoo model or your own on a data set",
    description="Train a zoo model (DA-LIF neurons, or the PLIF/LIF baselines with --neuron), "
    "or your own architecture (--model-code FACTORY --config JSON; docs/custom-models.md); "
    "deterministic for a given seed.",
    add_arguments=add_arguments, run=cli_train,
    inputs=("dataset", "data_dir"), outputs=("out",),
    pipeline="train a zoo model, or your own (--model-code) -> checkpoint (.pt)")
