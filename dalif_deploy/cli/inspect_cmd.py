"""``dalif-deploy inspect FILE [--json]``."""

from __future__ import annotations

import argparse

from . import emit_json, hardware_from_args


def cli_inspect(args: argparse.Namespace) -> int:
    """Describe any file the tool writes, as text or (``--json``) JSON on stdout."""
    from dalif_deploy.verification.describe import describe, render

    d = describe(args.file, hardware_from_args(args))
    if args.json:
        emit_json(d, "-")
    else:
        print(render(d))
    return 0
