"""The modules SNN papers use (issue 25), each with the exactness tests of the existing ones:
NIR round trip exact (spikes equal in float64), emulator == Lava bit for bit, and float vs
fixed agreement reported; and the refusals that name what to use instead."""

from __future__ import annotations

import pytest
import torch
from dalif_deploy.converters.ir.graph import read_nir
from dalif_deploy.converters.nir_to_torch import run_graph
from dalif_deploy.converters.torch_to_nir import export_nir, write_nir
from helpers.nir_helpers import spike_diff
from torch import nn

import dalif_deploy as dd
from dalif_deploy.float_model.zoo import run_model


class DropoutNested(nn.Module):
    """Dropout/Dropout2d, nested Sequential and a ModuleList iterated in forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)),
            nn.Dropout2d(0.2), dd.DALIF(6, v_th=0.5))
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1),
                                                   dd.DALIF(8, v_th=0.5)),
                                     nn.Sequential(nn.Dropout(0.3), nn.Flatten())])
        self.out = nn.Linear(8 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        for block in self.blocks:
            x = block(x)
        return self.out(x)


class GroupedDepthwise(nn.Module):
    """A grouped conv (groups 2) and a depthwise one (groups = channels) with a BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.lif1 = dd.DALIF(8, v_th=0.5)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.lif2 = dd.DALIF(8, v_th=0.5)
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.lif3 = dd.DALIF(8, v_th=0.5)
        self.flat = nn.Flatten()
        self.out = nn.Linear(8 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif2(self.grouped(self.lif1(self.conv(x))))
        return self.out(self.flat(self.lif3(self.bn(self.depthwise(s)))))


class CatSkip(nn.Module):
    """DenseNet-style skips: torch.cat of two spike maps into a conv (+BN), and of two spike
    vectors into a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = dd.DALIF(4, v_th=0.5)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.lif2 = dd.DALIF(6, v_th=0.5)
        self.mix = nn.Conv2d(10, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.lif3 = dd.DALIF(8, v_th=0.5)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8 * 16, 12)
        self.lif4 = dd.DALIF(12, v_th=0.5)
        self.out = nn.Linear(12 + 8 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lif1(self.conv1(x))
        b = self.lif2(self.conv2(a))
        c = self.flat(self.lif3(self.bn(self.mix(torch.cat([a, b], dim=1)))))
        return self.out(torch.cat((self.lif4(self.fc(c)), c), 1))


class Temporal1d(nn.Module):
    """An audio/time-series net on 1-D data [N, C, L]: Conv1d (+BN1d), AvgPool1d, a strided
    grouped Conv1d, Flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 5, padding=2)
        self.bn = nn.BatchNorm1d(6)
        self.lif1 = dd.DALIF(6, v_th=0.5)
        self.pool = nn.AvgPool1d(2)
        self.grouped = nn.Conv1d(6, 8, 3, stride=2, padding=1, groups=2)
        self.lif2 = dd.DALIF(8, v_th=0.5)
        self.flat = nn.Flatten()
        self.out = nn.Linear(8 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif1(self.bn(self.conv(x)))
        return self.out(self.flat(self.lif2(self.grouped(self.pool(s)))))


NETWORKS = {"dropout-nested": DropoutNested, "grouped-depthwise": GroupedDepthwise,
            "cat-skip": CatSkip}


def _lively(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.8, 1.6)
            if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
                m.weight.mul_(3.0)  # drive the deeper layers
            if isinstance(m, dd.DALIF):
                m.beta_raw.uniform_(0.2, 1.2)
    return model.eval()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_nir_round_trip_is_exact(name, tmp_path):
    model = _lively(NETWORKS[name])
    write_nir(export_nir(model, (1, 8, 8), 3), tmp_path / "m.nir")
    g = read_nir(tmp_path / "m.nir")
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        ref, ref_s = run_model(model.double(), x.double(), 3, record_spikes=True)
    out, s = run_graph(g, x, 3, dtype=torch.float64)
    diff, total, rate = spike_diff(ref_s, s)
    assert diff == 0 and rate > 0.02 and torch.allclose(ref, out, atol=1e-9), (diff, rate)


def _series(n: int, seed: int) -> dd.Dataset:
    """Generated 1-D data: ``[N, 2, 16]`` analog values in [0, 1], labels 0..9."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, 16, generator=g).numpy()
    y = torch.randint(0, 10, (n,), generator=g).numpy()
    return dd.Dataset("series", None, x, y, "analog", (2, 16), "as generated")


def test_conv1d_nir_round_trip_is_exact(tmp_path):
    model = _lively(Temporal1d)
    write_nir(export_nir(model, (2, 16), 3), tmp_path / "m.nir")
    g = read_nir(tmp_path / "m.nir")
    # written as height-1 Conv2d/AvgPool2d on (C, 1, L), the graph input included
    assert tuple(g.nodes["input"].input_type["input"]) == (2, 1, 16)
    assert g.nodes["conv"].weight.shape == (6, 2, 1, 5) and g.nodes["grouped"].groups == 2
    assert list(g.nodes["pool"].kernel_size) == [1, 2]
    x = torch.from_numpy(_series(6, 1).x)
    with torch.no_grad():
        ref, ref_s = run_model(model.double(), x.double(), 3, record_spikes=True)
    out, s = run_graph(g, x, 3, dtype=torch.float64)  # [N, C, L] data fit (C, 1, L)
    s = {k: v.reshape(ref_s[k].shape) for k, v in s.items()}
    diff, total, rate = spike_diff(ref_s, s)
    assert diff == 0 and rate > 0.02 and torch.allclose(ref, out, atol=1e-9), (diff, rate)


@pytest.mark.lava
def test_conv1d_emulator_equals_lava_and_agreement_is_reported(tmp_path):
    result, _ = dd.verify_model(
        _lively(Temporal1d), _series(24, 2), _series(64, 3).x, 3, name="temporal-1d",
        options=dd.VerifyOptions(lava_samples=2, min_agreement=0.0, max_accuracy_drop=100.0,
                                 progress=False, workdir=tmp_path))
    assert result["lava_bit_exact"] is True, result["lava_first_divergence"]
    assert 0.0 <= result["prediction_agreement"] <= 1.0
    print(f"temporal-1d: float/fixed agreement {result['prediction_agreement']:.3f}")


def test_conv1d_float_vs_fixed_agreement_and_onnx_are_reported(tmp_path):
    result, _ = dd.verify_model(
        _lively(Temporal1d), _series(24, 2), _series(64, 3).x, 3, name="temporal-1d",
        options=dd.VerifyOptions(lava_samples=0, onnx=True, min_agreement=0.0,
                                 max_accuracy_drop=100.0, progress=False, workdir=tmp_path))
    assert result["onnx_accuracy"] is not None  # the ONNX stage takes [B, C, L] too
    assert result["nir_spike_mismatches"] == 0 and result["nir_accuracy"] == \
        result["float_accuracy"]
    assert [r["name"] for r in result["layers"]] == ["lif1", "lif2"]
    assert all(r["neurons"] and 0.0 <= r["spike_agreement"] <= 1.0 for r in result["layers"])
    assert 0.0 <= result["prediction_agreement"] <= 1.0


def test_cat_becomes_one_synapse_per_part():
    g = export_nir(_lively(CatSkip), (1, 8, 8), 2)
    assert sorted(a for a, b in g.edges if b.startswith("mix.")) == ["lif1", "lif2"]
    assert [k for k in g.nodes if k.startswith("mix")] == ["mix.cat0", "mix.cat1"]
    assert g.nodes["mix.cat0"].weight.shape[1] == 4 and g.nodes["mix.cat1"].weight.shape[1] == 6
    assert not g.nodes["mix.cat1"].bias.any()  # the first part alone carries the (BN) bias
    assert sorted(a for a, b in g.edges if b == "output") == ["out.cat0", "out.cat1"]


@pytest.mark.lava
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_emulator_equals_lava_and_agreement_is_reported(name, tmp_path):
    model = _lively(NETWORKS[name])
    test = dd.load_dataset("digits", "test").head(24)
    calib = dd.load_dataset("digits", "train").head(64).x
    result, _ = dd.verify_model(model, test, calib, 3, name=name, options=dd.VerifyOptions(
        lava_samples=2, min_agreement=0.0, max_accuracy_drop=100.0, progress=False,
        workdir=tmp_path))
    assert result["lava_bit_exact"] is True, result["lava_first_divergence"]
    assert 0.0 <= result["prediction_agreement"] <= 1.0
    print(f"{name}: float/fixed agreement {result['prediction_agreement']:.3f}")


@pytest.mark.parametrize("module, says, shape", [
    (nn.MaxPool2d(2), "use AvgPool2d", (1, 8, 8)),
    (nn.MaxPool1d(2), "torch.nn.modules.pooling.MaxPool1d", (1, 8)),
    (nn.Upsample(scale_factor=2), "torch.nn.modules.upsampling.Upsample", (1, 8, 8)),
])
def test_unsupported_modules_are_named_with_their_class_and_the_supported_list(module, says,
                                                                               shape):
    model = nn.Sequential(nn.Identity(), dd.DALIF(1), module, nn.Flatten())
    with pytest.raises(dd.DaLifError) as e:
        export_nir(model, shape, 2)
    text = str(e.value)
    assert "unsupported module '2'" in text and says in text and "supported: Conv2d" in text


def test_cat_refusals():
    class CatIntoLif(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 1)
            self.lif = dd.DALIF(4)

        def forward(self, x):
            return self.lif(torch.cat([self.a(x), self.b(x)], 1))

    with pytest.raises(dd.DaLifError, match="must feed a Conv2d"):
        export_nir(CatIntoLif(), (1, 8, 8), 2)


def test_1d_event_data_fit_the_height_1_graph_and_program():
    from dalif_deploy.converters.nir_to_fixed import quantize_graph
    from dalif_deploy.targets.emulator import emulate

    model = _lively(Temporal1d)
    g = export_nir(model, (2, 16), 3, encoding="events")
    x = (torch.rand(5, 3, 2, 16, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    with torch.no_grad():
        ref, _ = run_model(model.double(), x.double(), 3, "events", record_spikes=True)
    out, _ = run_graph(g, x, 3, dtype=torch.float64)  # [N, T, C, L] events
    assert torch.allclose(ref, out, atol=1e-9)
    program = quantize_graph(g, 8)
    a, b = emulate(program, x.numpy()), emulate(program, x.numpy().reshape(5, 3, 2, 1, 16))
    assert (a.outputs == b.outputs).all() and (a.predictions == b.predictions).all()
