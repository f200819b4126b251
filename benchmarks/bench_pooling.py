"""MaxPool2d vs AvgPool2d vs a strided conv in a small DA-LIF network on digits (issue 25):
what refusing MaxPool2d costs. Float test accuracy per seed (4 epochs, T=4, lr 0.01); the
three variants have the same parameters (conv-BN-DA-LIF, 2x2 pooling or a stride-2 second
conv, conv-BN-DA-LIF, linear DA-LIF, readout).

Usage: .venv/bin/python benchmarks/bench_pooling.py [--seeds 0,1,2] [--epochs 4]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import dalif_deploy as dd


class PoolNet(nn.Module):
    def __init__(self, pool: str) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.lif1 = dd.DALIF(8)
        self.pool = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2)}.get(pool, nn.Identity())
        stride = 2 if pool == "strided-conv" else 1
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=stride, padding=1),
                                   nn.BatchNorm2d(16))
        self.lif2 = dd.DALIF(16)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16 * 16, 32)
        self.lif3 = dd.DALIF(32)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif2(self.conv2(self.pool(self.lif1(self.conv1(x)))))
        return self.out(self.lif3(self.fc(self.flat(s))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=4)
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    for pool in ("max", "avg", "strided-conv"):
        accs = []
        for seed in seeds:
            torch.manual_seed(seed)
            _, metrics = dd.train(PoolNet(pool), "digits", epochs=a.epochs, timesteps=4,
                                  lr=1e-2, seed=seed, progress=False)
            accs.append(metrics["test_accuracy"])
        print(f"{pool:13s} " + " ".join(f"{100 * x:.2f}" for x in accs)
              + f"  mean {100 * sum(accs) / len(accs):.2f} %")


if __name__ == "__main__":
    main()
