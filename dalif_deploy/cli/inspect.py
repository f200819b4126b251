"""``dalif-deploy inspect FILE [--json]``."""

from __future__ import annotations

import argparse

from . import emit_json


def cli_inspect(args: argparse.Namespace) -> int:
    """Describe any model file, as text or (``--json``) JSON on stdout."""
    from ..inspect import describe, render

    d = describe(args.file)
    if args.json:
        emit_json(d, "-")
    else:
        print(render(d))
    return 0
