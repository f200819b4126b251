"""``dalif-deploy inspect FILE [--json]``."""

from __future__ import annotations

import argparse

from . import add_hardware_options, emit_json, hardware_from_args
from .command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help=".pt .nir .fxp .onnx .h5 (netx) .npz .json")
    from . import add_model_code

    add_model_code(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_hardware_options(p)


def cli_inspect(args: argparse.Namespace) -> int:
    """Describe any file the tool writes, as text or (``--json``) JSON on stdout."""
    from dalif_deploy.verification.describe import describe, render

    d = describe(args.file, hardware_from_args(args))
    if args.json:
        emit_json(d, "-")
    else:
        print(render(d))
    return 0


COMMAND = Command(
    name="inspect", help="show what a file holds",
    description="Describe any file dalif-deploy writes (the kind is read from its content).",
    add_arguments=add_arguments, run=cli_inspect, inputs=("file", "hardware"),
    pipeline="show what is inside any of these files")
