"""Your own architecture, from training to Lava: a network the zoo has never seen.

A small conv DA-LIF network is defined below (``TinyConvNet``), with a factory ``build`` that
makes it from JSON-able keyword arguments. The script trains it briefly on digits, saves a
checkpoint recording the factory, then deploys it through the command line, each command
given ``--model-code examples/custom_model.py:build`` (the checkpoint records the factory, but
a file naming code is never a reason to run it: you name it). See docs/custom-models.md.

    python examples/custom_model.py --out-dir out/custom --epochs 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

import dalif_deploy as dd

#: this file's factory, as every command takes it
FACTORY = f"{Path(__file__).resolve()}:build"
TIMESTEPS = 4


class TinyConvNet(nn.Module):
    """conv-BN-DA-LIF, dropout, strided conv-BN-DA-LIF (per-channel decays), a hidden DA-LIF
    block in a nested Sequential, linear readout (8x8 input)."""

    def __init__(self, width: int = 8, hidden: int = 32, classes: int = 10,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))
        self.lif1 = dd.DALIF(width)
        self.drop = nn.Dropout2d(dropout)  # the identity once exported (eval mode)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(2 * width))
        self.lif2 = dd.DALIF(2 * width, granularity="channel")
        self.head = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(2 * width * 16, hidden)))
        self.lif3 = dd.DALIF(hidden)
        self.readout = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif1(self.stem(x))
        s = self.lif2(self.down(self.drop(s)))
        return self.readout(self.lif3(self.head(s)))


def build(width: int = 8, hidden: int = 32, classes: int = 10, dropout: float = 0.1
          ) -> nn.Module:
    """The factory: what ``--model-code examples/custom_model.py:build`` calls with the
    checkpoint's recorded config."""
    return TinyConvNet(width, hidden, classes, dropout)


def cli(*args: str) -> None:
    """One dalif-deploy command, echoed; a failure stops the example."""
    print("$ dalif-deploy", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "dalif_deploy", *args], check=True)


def main(out_dir: Path, epochs: int, lava_samples: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"width": 8, "hidden": 32}
    torch.manual_seed(0)  # the initial weights: built seeded, so the run is reproducible
    model = build(**config)
    model, metrics = dd.train(model, "digits", epochs=epochs, timesteps=TIMESTEPS, lr=1e-2,
                              seed=0, progress=False)
    print(f"float test accuracy {100 * metrics['test_accuracy']:.1f} %")
    data = dd.load_dataset("digits", "test", samples=1)
    record = dd.factory_config("tiny-conv", FACTORY, config, data.input_shape, data.num_classes)
    ckpt = out_dir / "tiny-conv.pt"
    dd.save_checkpoint(ckpt, model, record, TIMESTEPS,
                       {"name": data.name, "encoding": data.encoding,
                        "input_shape": list(data.input_shape),
                        "normalization": data.normalization}, metrics, seed=0)
    print(f"wrote {ckpt}")
    code = ("--model-code", FACTORY)
    nir, fxp = out_dir / "tiny-conv.nir", out_dir / "tiny-conv.fxp"
    cli("export", str(ckpt), *code, "-o", str(nir))
    cli("quantize", str(nir), "--calibrate", "digits", "-o", str(fxp))
    cli("simulate", str(ckpt), *code, "--backend", "torch", "--samples", "64", "--quiet")
    cli("simulate", str(fxp), "--backend", "lava", "--samples", str(lava_samples), "--quiet")
    cli("verify", str(ckpt), *code, "--lava-samples", str(lava_samples), "--min-agreement",
        "0.9", "--max-accuracy-drop", "5", "--report", str(out_dir / "tiny-conv.html"),
        "--quiet")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("out/custom"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lava-samples", type=int, default=8)
    a = parser.parse_args()
    main(a.out_dir, a.epochs, a.lava_samples)
