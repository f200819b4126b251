"""``dalif-deploy train --model M --dataset D --epochs N --timesteps T --seed S --out P``, or
``train --model-code FACTORY --config JSON ...`` for the user's own architecture."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import counted

from . import show_progress

#: the train options that are neuron config keys, set only when given (each model takes its own)
NEURON_OPTIONS = ("granularity", "parametrization", "tau", "init_tau")


def _factory_model(args: argparse.Namespace, probe: Any) -> tuple[Any, dict[str, Any]]:
    """``--model-code``: the user's factory called with ``--config`` (seeded, so the initial
    weights are the seed's) and the model record its checkpoint keeps."""
    from dalif_deploy.float_model.factory import build, factory_config
    from dalif_deploy.float_model.training import deterministic

    if args.model or args.width is not None or args.neuron != "dalif" or any(
            getattr(args, k) is not None for k in NEURON_OPTIONS):
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
        options = {k: getattr(args, k) for k in NEURON_OPTIONS if getattr(args, k) is not None}
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
          f"train accuracy {100 * metrics['train_accuracy']:.2f} %, "
          f"test accuracy {100 * metrics['test_accuracy']:.2f} %")
    print(f"wrote {args.out}")
    return 0
