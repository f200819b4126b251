"""``dalif-deploy demo`` (``make demo``): verify the shipped digits-cnn checkpoint end to end.

Float -> NIR -> 8-bit fixed point (emulator, whole test set) -> Lava (a subset), with the
headline figures printed and the HTML report and JSON written to ``--out-dir``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dalif_deploy.base.wording import shown

from . import add_quiet_option, emit_json, show_progress
from .command import Command

#: the files demo writes into --out-dir (the report, then its JSON)
REPORT_FILES = ("demo-report.html", "demo-report.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``demo``."""
    p.add_argument("--model", default="digits-cnn", choices=("digits-cnn", "digits-resnet",
                                                             "digits-rnn"),
                   help="the shipped checkpoint to verify (digits-rnn: the recurrent one)")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="float/fixed prediction agreement required, as verify's (digits-rnn "
                   "reaches 0.95: docs/MEASURED.md)")
    p.add_argument("--out-dir", default="out", help="where the report (demo-report.html and "
                   "demo-report.json) goes")
    p.add_argument("--lava-samples", type=int, default=16,
                   help="first N test samples run on Lava and compared bit for bit (0: skip)")
    add_quiet_option(p)


def cli_demo(args: argparse.Namespace) -> int:
    """Run ``verify`` on a shipped checkpoint (``--model``, digits-cnn by default) and say
    where the report is."""
    from dalif_deploy.float_model.loading import shipped_checkpoint
    from dalif_deploy.verification.pipeline import (
        VerifyOptions,
        format_summary,
        verify_checkpoint,
        write_report,
    )

    out = Path(args.out_dir)
    result, artefacts = verify_checkpoint(
        shipped_checkpoint(args.model), options=VerifyOptions(
            lava_samples=args.lava_samples, min_agreement=args.min_agreement,
            progress=show_progress(args)))
    out.mkdir(parents=True, exist_ok=True)
    html, json_path = (out / name for name in REPORT_FILES)
    write_report(result, artefacts, html)
    emit_json(result, str(json_path))
    print(format_summary(result))
    print(f"report: {shown(html)}  (JSON: {shown(json_path)})")
    return 0 if result["passed"] else 1


COMMAND = Command(
    name="demo", help="verify the shipped digits-cnn checkpoint end to end",
    description="Run verify on dalif_deploy/checkpoints/digits-cnn.pt (or --model's): float, "
    "NIR, fixed point on the whole test set, Lava on a subset; print the headline figures and "
    "write the HTML/JSON report.",
    add_arguments=add_arguments, run=cli_demo, output_dirs=("out_dir",),
    dir_files=REPORT_FILES)
