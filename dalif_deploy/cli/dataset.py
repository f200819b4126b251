"""``dalif-deploy dataset NAME --split test -o data.npz``."""

from __future__ import annotations

import argparse

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import shown


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
