"""``dalif-deploy dataset NAME --split test -o data.npz``."""

from __future__ import annotations

import argparse

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import shown

from . import DATASET_NAMES, add_data_options
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help=f"{DATASET_NAMES}")
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="which split to write")
    add_data_options(p)
    p.add_argument("--timesteps", "-T", type=int, help="timesteps for event data (default: "
                   "8 for digits-events; refused for static data)")
    p.add_argument("-o", "--out", required=True, help=".npz file to write")


def cli_dataset(args: argparse.Namespace) -> int:
    """Write a data set split exactly as the model receives it (x float32, y int64)."""
    import numpy as np

    from dalif_deploy.base.encoding import EVENTS, Encoding
    from dalif_deploy.base.files import atomic_open
    from dalif_deploy.datasets.loaders import load_dataset

    from . import event_options

    ds = load_dataset(event_options(args.name, args), args.split, args.data_dir, args.timesteps)
    if args.timesteps is not None and Encoding.from_name(ds.encoding) is not EVENTS:
        raise DaLifError(f"--timesteps applies to event data only; {ds.name} is static (the "
                         "model sees the same frame every step)")
    with atomic_open(args.out) as f:
        np.savez(f, x=ds.x.astype(np.float32), y=ds.y.astype(np.int64),
                 encoding=np.array(ds.encoding), normalization=np.array(ds.normalization))
    print(f"wrote {shown(args.out)}: {ds.label}, x {tuple(ds.x.shape)} float32 "
          f"({ds.encoding}), y {tuple(ds.y.shape)}")
    return 0


COMMAND = Command(
    name="dataset", help="write samples as the model receives them",
    description="Write a data set split to .npz: x (float32, [N, ...] static or [N, T, ...] "
    "events) and y (labels), in simulate's order.",
    add_arguments=add_arguments, run=cli_dataset, inputs=("name", "data_dir"), outputs=("out",),
    pipeline="write the samples exactly as the model receives them (.npz)")
