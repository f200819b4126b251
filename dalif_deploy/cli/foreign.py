"""The options a foreign NIR graph needs, asked for all at once (simulate, quantize, verify)."""

from __future__ import annotations

import argparse
import shlex


def data_are_events(dataset: str | None) -> bool | None:
    """Whether ``--dataset`` gives event data: a built-in set by its name (none given: digits,
    a foreign graph's default), an .npz by its ``encoding`` member alone; None where that
    cannot be read (the loader then says why)."""
    from dalif_deploy.base.encoding import EVENTS
    from dalif_deploy.datasets.event_sets import EVENT_SETS
    from dalif_deploy.datasets.loaders import DATASETS, split_name

    if dataset is None:
        return False
    base = split_name(dataset)[0]
    if base in DATASETS:
        return base.endswith("-events") or base in EVENT_SETS
    encoding = _npz_encoding(dataset)
    return None if encoding is None else encoding == EVENTS.name


def _npz_encoding(path: str) -> str | None:
    """The ``encoding`` member of an .npz data set, read alone (sizes checked first), or
    None."""
    import zipfile
    from pathlib import Path

    from dalif_deploy.base.errors import DaLifError
    from dalif_deploy.base.resources import check_zip, read_npz_member

    try:
        with zipfile.ZipFile(path) as z:
            info = check_zip(z, Path(path).stat().st_size, path).get("encoding.npy")
            return None if info is None else str(read_npz_member(z, info, path))
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile,
            DaLifError):
        return None


def check_foreign_graph(args: argparse.Namespace, path: str, words: list[str], *,
                        needs_encoding: bool = False) -> None:
    """Raise one error naming every option the NIR graph ``path`` still needs when it is a
    foreign one; ``words`` is the command as given (``simulate f.nir --backend nir``), the
    start of the example."""
    from dalif_deploy.converters.ir.graph import read_nir
    from dalif_deploy.converters.nir_conventions import check_foreign_options

    dataset = getattr(args, "dataset", None)
    if dataset is not None:
        words = [*words, "--dataset", dataset]
    check_foreign_options(read_nir(path), "dalif-deploy " + shlex.join(words),
                          exporter=args.exporter, dt=args.dt, timesteps=args.timesteps,
                          encoding=getattr(args, "encoding", None),
                          needs_encoding=needs_encoding,
                          data_events=False if needs_encoding else data_are_events(dataset))
