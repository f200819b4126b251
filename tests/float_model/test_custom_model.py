"""A user's own nn.Module (not a zoo model) through the whole toolchain via the Python API:
export to NIR, quantise, emulate, Lava and ONNX, in one verify_model call."""

from __future__ import annotations

import pytest
import torch
from helpers.nir_helpers import assert_accuracies_agree_up_to_ties, away_from_ties
from torch import nn

import dalif_deploy as dd

pytestmark = pytest.mark.lava


class TwoPathNet(nn.Module):
    """Not in the zoo: per-channel DA-LIF, a pooled branch added to a strided conv branch, a
    hidden linear DA-LIF layer, a linear readout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.lif1 = dd.DALIF(6, granularity="channel", v_th=0.5)
        self.down = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.mix = nn.Conv2d(6, 8, 1)
        self.lif2 = dd.DALIF(v_th=0.5)
        self.flat = nn.Flatten()
        self.hidden = nn.Linear(8 * 4 * 4, 24)
        self.lif3 = dd.DALIF(v_th=0.5)
        self.out = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif1(self.bn(self.conv(x)))
        s = self.lif2(self.down(s) + self.mix(self.pool(s)))
        return self.out(self.lif3(self.hidden(self.flat(s))))


def test_custom_module_verifies_end_to_end(tmp_path):
    torch.manual_seed(0)
    model = TwoPathNet()
    with torch.no_grad():  # non-trivial batch-norm statistics and decays
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.8, 2.0)
        model.lif1.beta_raw.uniform_(0.2, 1.2)
        for layer in (model.down, model.mix, model.hidden):  # drive the deeper layers
            layer.weight.mul_(4.0)
    model.eval()
    test = dd.load_dataset("digits", "test").head(40)
    train = dd.load_dataset("digits", "train").head(128)
    result, artefacts = dd.verify_model(
        model, test, train.x, 3, name="two-path",
        options=dd.VerifyOptions(lava_samples=3, onnx=True, min_agreement=0.0,
                                 max_accuracy_drop=100.0, progress=False, workdir=tmp_path))
    assert result["model"] == "two-path" and result["samples"] == 40
    assert result["lava_bit_exact"] is True, result["lava_first_divergence"]
    assert [ly["name"] for ly in result["layers"]] == ["lif1", "lif2", "lif3"]
    for ly in result["layers"]:
        assert ly["float_rate"] > 0.01 and ly["population"] is not None, ly
    # three float runtimes (torch, NIR interpreter, ORT) round differently on each CPU: their
    # accuracies agree up to the samples with a potential at a threshold tie
    near = away_from_ties(model, torch.from_numpy(test.x), 3)[1]
    assert_accuracies_agree_up_to_ties(result["nir_accuracy"], result["float_accuracy"], 40, near)
    assert_accuracies_agree_up_to_ties(result["onnx_accuracy"], result["float_accuracy"], 40,
                                       near)
    # per-channel decays survive into the program: one dv per channel of lif1
    assert artefacts["program"].population("lif1").dv.size == 6
    dd.write_report(result, artefacts, tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text().count("data:image/png;base64,") == 4
