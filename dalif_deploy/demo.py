"""``dalif-deploy demo`` (``make demo``): the shipped digits-cnn checkpoint, end to end.

For now it evaluates the checkpoint in float PyTorch on the digits test set and checks the
result against the accuracy stored in the checkpoint; the full verify pipeline replaces the body
of :func:`run_demo` later.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import DaLifError

#: the shipped checkpoints, relative to the repository root
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "checkpoints"
DEMO_CHECKPOINT = EXAMPLES / "digits-cnn.pt"


def run_demo(checkpoint: str | Path = DEMO_CHECKPOINT) -> dict:
    """Evaluate ``checkpoint`` with the torch backend on its data set; returns its result."""
    from .backends import simulate

    if not Path(checkpoint).is_file():
        raise DaLifError(f"{checkpoint}: demo checkpoint not found; run the demo from a "
                         "source checkout (examples/checkpoints/)")
    return simulate(str(checkpoint), "torch", progress=False)


def cli_demo(args: argparse.Namespace) -> int:
    """``dalif-deploy demo``: print the float accuracy of the shipped digits-cnn checkpoint."""
    from .checkpoint import load_checkpoint

    result = run_demo()
    stored = load_checkpoint(DEMO_CHECKPOINT).metrics.get("test_accuracy")
    note = "" if stored is None else f" (stored at training: {100 * stored:.2f} %)"
    print(f"demo: {DEMO_CHECKPOINT.name} ({result['model_name']}, T={result['timesteps']}) on "
          f"{result['dataset']}/{result['split']}: {result['samples']} samples, float accuracy "
          f"{100 * result['accuracy']:.2f} % in {result['seconds']:.2f} s{note}")
    return 0
