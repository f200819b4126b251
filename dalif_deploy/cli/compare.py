"""``dalif-deploy compare --neurons dalif,plif,lif -T 1,2,4 --seeds 0,1 --epochs E``."""

from __future__ import annotations

import argparse

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import shown
from dalif_deploy.neurons import neuron_keys, neuron_names

from .command import Command


def int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (argparse type of -T and --seeds)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None


def name_list(text: str) -> list[str]:
    """``"dalif,plif"`` -> ``["dalif", "plif"]`` (argparse type of --neurons)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``compare`` (the fields of
    :class:`~dalif_deploy.studies.compare.CompareOptions`)."""
    from . import add_data_options, add_json_option, add_quiet_option

    p.add_argument("--model", default="digits-cnn", help="zoo model trained with every neuron")
    from . import add_model_code

    add_model_code(p)
    p.add_argument("--neurons", type=name_list, default=",".join(neuron_keys()),
                   help=f"comma-separated neuron models: {', '.join(neuron_keys())}")
    p.add_argument("--timesteps", "-T", type=int_list, default="1,2,4",
                   help="comma-separated numbers of time steps")
    p.add_argument("--seeds", type=int_list, default="0", help="comma-separated training "
                   "seeds (mean and std over them)")
    p.add_argument("--dataset", default="digits-events", help="data set name (digits, "
                   "digits-events, cifar10, dvs128-gesture, cifar10-dvs, nmnist) or a training "
                   ".npz as `dataset` writes it")
    p.add_argument("--test-dataset", metavar="NPZ", help="test samples (.npz or name; "
                   "default: the data set's test split; required for a training .npz)")
    add_data_options(p)
    p.add_argument("--epochs", type=int, default=30, help="training epochs of every run")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--width", type=int, help="base channel width (zoo default when absent)")
    p.add_argument("--samples", type=int, help="evaluate the first N test samples only")
    p.add_argument("--plot", metavar="PNG", help="write accuracy and SynOps against T (PNG)")
    add_json_option(p)
    add_quiet_option(p)


def cli_compare(args: argparse.Namespace) -> int:
    """Train and deploy every neuron at every T, print the table, write plot and JSON."""
    from dalif_deploy.studies.compare import (
        CompareOptions,
        compare_neurons,
        format_table,
        plot_comparison,
    )

    from . import emit_json, event_options, note, show_progress

    if args.width is not None and args.width < 1:
        raise DaLifError(f"--width must be >= 1, got {args.width}")
    opt = CompareOptions(model=args.model, neurons=tuple(args.neurons),
                         timesteps=tuple(args.timesteps), seeds=tuple(args.seeds),
                         dataset=event_options(args.dataset, args),
                         test_dataset=(None if args.test_dataset is None else
                                       event_options(args.test_dataset, args)),
                         data_dir=args.data_dir, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, width=args.width,
                         samples=args.samples, progress=show_progress(args))
    # the size of the work is said before any of it starts (the grid is bounded: RUNS_MAX)
    result = compare_neurons(opt, announce=lambda text: note(args, text))
    print(format_table(result))
    if args.plot:
        plot_comparison(result, args.plot)
        print(f"wrote {shown(args.plot)}")
    emit_json(result, args.json)
    return 0


COMMAND = Command(
    name="compare", help="neuron models compared after deployment",
    description=f"Train the same zoo model with each neuron ({', '.join(neuron_names())}) at "
    "each number of time steps T for each seed, deploy every model (NIR -> 8-bit program "
    "calibrated on training samples -> bit-accurate emulator) and print, per neuron and T (mean "
    "and std over the seeds): float and fixed-point test accuracy, parameters (the neurons' own "
    "among them) and synaptic operations per inference from the cost model on the emulator's "
    "spikes.",
    add_arguments=add_arguments, run=cli_compare,
    inputs=("dataset", "test_dataset", "data_dir"), outputs=("json", "plot"),
    stdout_outputs=("json",),
    pipeline=f"{' vs '.join(neuron_names())} at several T: float and fixed-point accuracy, "
    "parameters, SynOps per inference (table, plot, JSON)")
