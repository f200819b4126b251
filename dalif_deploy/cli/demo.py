"""``dalif-deploy demo`` (``make demo``): verify the shipped digits-cnn checkpoint end to end.

Float -> NIR -> 8-bit fixed point (emulator, whole test set) -> Lava (a subset), with the
headline figures printed and the HTML report and JSON written to ``--out-dir``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dalif_deploy.base.wording import shown

from . import emit_json, show_progress


def cli_demo(args: argparse.Namespace) -> int:
    """Run ``verify`` on the shipped digits-cnn checkpoint and say where the report is."""
    from dalif_deploy.float_model.checkpoint import shipped_checkpoint
    from dalif_deploy.verification.pipeline import (
        VerifyOptions,
        format_summary,
        verify_checkpoint,
        write_report,
    )

    out = Path(args.out_dir)
    result, artefacts = verify_checkpoint(
        shipped_checkpoint("digits-cnn"), options=VerifyOptions(lava_samples=args.lava_samples,
                                              progress=show_progress(args)))
    out.mkdir(parents=True, exist_ok=True)
    write_report(result, artefacts, out / "demo-report.html")
    emit_json(result, str(out / "demo-report.json"))
    print(format_summary(result))
    print(f"report: {shown(out / 'demo-report.html')}  (JSON: {shown(out / 'demo-report.json')})")
    return 0 if result["passed"] else 1
