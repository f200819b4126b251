"""Shared helpers of the NIR tests: random-but-lively zoo models and spike comparison."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dalif_deploy.float_model.zoo import build_model, default_config
from dalif_deploy.neurons.dalif import DALIF
from dalif_deploy.neurons.plif import PLIF


def lively_model(name: str, seed: int = 0, **over) -> nn.Module:
    """A zoo model with random weights, non-trivial BN statistics and random alpha/beta (so that
    r = alpha/(1-beta) != 1 and BN folding really changes the weights), in eval mode."""
    torch.manual_seed(seed)
    over.setdefault("v_th", 0.3)
    m = build_model(default_config(name, **over)).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.7, 1.6)
                mod.bias.uniform_(-0.1, 0.2)
            if isinstance(mod, DALIF):
                mod.alpha_raw.uniform_(0.3, 1.5)
                mod.beta_raw.uniform_(0.1, 1.2)
            if isinstance(mod, PLIF):
                mod.k_raw.uniform_(-1.5, 1.5)
    return m


def spike_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[int, int, float]:
    """(differing spikes, total spikes compared, firing rate of ``a``) over the layers of ``a``."""
    assert set(a) == set(b), (sorted(a), sorted(b))
    diff = sum(int((a[k] != b[k]).sum()) for k in a)
    total = sum(a[k].numel() for k in a)
    rate = sum(float(a[k].sum()) for k in a) / total
    return diff, total, rate


def away_from_ties(model: nn.Module, x: torch.Tensor, timesteps: int,
                   encoding: str = "analog") -> tuple[np.ndarray, int]:
    """(decisive samples, count of near-threshold samples) of a torch float32 model.

    Two float runtimes (torch, the NIR interpreter, Norse, ORT) round differently, and which
    way depends on the CPU, the BLAS and the thread count: a potential within NEAR_THRESHOLD of
    v_th may fire in one and not the other, so such a sample is a tie whose prediction may
    differ. A decisive sample has no such potential and its top-2 logits differ by more than
    2 * LOGIT_TOLERANCE: its prediction must agree. Two accuracies over the same samples may
    differ by at most the near count (each tie moves one prediction). Callers that compare
    predictions assert that decisive samples are the majority, so the check is not vacuous.
    """
    from dalif_deploy.converters.torch_to_onnx import (
        LOGIT_TOLERANCE,
        NEAR_THRESHOLD,
        threshold_margins,
    )
    from dalif_deploy.targets.onnxruntime import top2_margin

    logits, margin = threshold_margins(model, x.float(), timesteps, encoding)
    far = margin >= NEAR_THRESHOLD
    decisive = far & (top2_margin(logits) > 2 * LOGIT_TOLERANCE)
    return decisive, int((~far).sum())


def assert_accuracies_agree_up_to_ties(a: float, b: float, samples: int, near: int) -> None:
    """Accuracies over the same ``samples`` differ by at most ``near`` predictions."""
    assert abs(a - b) * samples <= near + 1e-6, (a, b, samples, near)
