"""Quantisation-aware fine-tuning: its forward pass is the emulator on the quantised program
(identical spikes per layer, identical predictions), it wins fixed-point accuracy back, and it
writes an ordinary checkpoint that records how it was made."""

import functools

import numpy as np
import pytest
import torch
from dalif_deploy.converters.nir_to_fixed import quantize_graph
from dalif_deploy.targets.emulator import emulate
from helpers import REPO_ROOT

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.cli import main
from dalif_deploy.datasets.loaders import load_dataset
from dalif_deploy.float_model.checkpoint import save_checkpoint
from dalif_deploy.float_model.loading import load_checkpoint, load_model
from dalif_deploy.float_model.zoo import build_model, default_config
from dalif_deploy.studies.finetune import (
    FinetuneOptions,
    finetune,
    fixed_accuracy,
    qat_forward,
    quantize_model,
)
from dalif_deploy.verification.describe import describe
from dalif_deploy.verification.pipeline import VerifyOptions, export_round_trip

ROOT = REPO_ROOT
SHIPPED = ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


@pytest.fixture(scope="module")
def digits():
    return (load_dataset("digits", "train", timesteps=4),
            load_dataset("digits", "test", timesteps=4))


def _tiny(seed: int = 3, **cfg):
    """A random digits-resnet of width 4 (residual fan-in, a 1x1 shortcut) with non-trivial
    batch-norm statistics, a low threshold and decays that differ per channel (with
    ``granularity="channel"``), so that every layer spikes."""
    torch.manual_seed(seed)
    model = build_model(default_config("digits-resnet", width=4, v_th=0.1, **cfg))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.05, 0.3)
                m.weight.uniform_(0.5, 1.5)
            for raw in ("alpha_raw", "beta_raw", "k_raw"):  # DA-LIF's and PLIF's decays
                if isinstance(getattr(m, raw, None), torch.nn.Parameter):
                    getattr(m, raw).add_(torch.empty_like(getattr(m, raw)).uniform_(-0.3, 0.3))
    return model.eval()


def _program_via_file(model, data, calibration, bits, tmp_path):
    """The program as verify builds it: the model through a NIR file, quantised."""
    graph = export_round_trip(model, data, 4, "m", None, VerifyOptions(workdir=tmp_path))
    return quantize_graph(graph, bits, calibration=calibration,
                          run=functools.partial(emulate, check=False))


def _assert_forward_is_emulator(model, program, x, encoding):
    run = qat_forward(model, program, x, encoding)
    emu = emulate(program, x, record=True)
    for name in emu.spiking:
        assert torch.equal(run.spikes[name], torch.from_numpy(emu.spikes[name]).double()), name
    assert np.array_equal(run.predictions, emu.predictions)
    assert np.array_equal(run.logits.detach().argmax(1).numpy(), emu.predictions)
    want = torch.from_numpy(emu.outputs).double() / (program.timesteps * program.readout.scale)
    assert torch.equal(run.logits.detach(), want)  # the integer readout, scaled, bit for bit
    return run


@pytest.mark.parametrize("neuron", [{"neuron": "dalif", "granularity": "channel"},
                                    {"neuron": "plif", "granularity": "channel"},
                                    {"neuron": "lif"}], ids=lambda c: c["neuron"])
def test_forward_equals_emulator_on_a_tiny_residual_model(digits, tmp_path, neuron):
    """Per-channel decays, residual fan-in, a 1x1 shortcut, a pooled readout, each neuron
    model (the shipped digits-cnn below has per-layer DA-LIF decays)."""
    train, test = digits
    model = _tiny(**neuron)
    cal = train.x[:128]
    program = quantize_model(model, test, cal, 4, 3)
    twin = _program_via_file(model, test, cal, 3, tmp_path)
    for a, b in zip(program.synapses, twin.synapses, strict=True):  # the program verify makes
        assert np.array_equal(a.weights, b.weights) and a.weight_exp == b.weight_exp
    for a, b in zip(program.populations, twin.populations, strict=True):
        assert (a.vth, a.scale, a.bias_exp) == (b.vth, b.scale, b.bias_exp)
        assert np.array_equal(a.dv, b.dv) and np.array_equal(a.bias_mant, b.bias_mant)
    run = _assert_forward_is_emulator(model, program, test.x[:48], test.encoding)
    rates = {k: float(v.detach().mean()) for k, v in run.spikes.items()}
    assert all(0 < r < 1 for r in rates.values()), rates  # a case where spikes matter
    torch.nn.functional.cross_entropy(run.logits, torch.from_numpy(test.y[:48])).backward()
    for name, p in model.named_parameters():  # straight-through: every parameter learns
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_forward_equals_emulator_on_events(tmp_path):
    ev = load_dataset("digits-events", "test", timesteps=4)
    model = _tiny(in_channels=2, input_shape=[2, 8, 8])
    program = quantize_model(model, ev, ev.x[:64], 4, 4)
    _assert_forward_is_emulator(model, program, ev.x[:32], ev.encoding)


def test_recurrent_layer_forward_is_the_emulator_and_w_rec_learns(tmp_path):
    """The shipped digits-rnn: forward values are its program's integers (the recurrent
    synapse included) and the recurrent weight gets a straight-through gradient."""
    from dalif_deploy.float_model.loading import load_model, shipped_checkpoint

    rows = load_dataset("digits-rows", "test")
    model, _ = load_model(shipped_checkpoint("digits-rnn"))
    program = quantize_model(model, rows, load_dataset("digits-rows", "train").x[:64], 8, 8)
    assert any(s.recurrent for s in program.synapses)
    run = _assert_forward_is_emulator(model, program, rows.x[:32], rows.encoding)
    torch.nn.functional.cross_entropy(run.logits, torch.from_numpy(rows.y[:32])).backward()
    assert model.lif1.w_rec.grad is not None and model.lif1.w_rec.grad.abs().sum() > 0


def test_forward_equals_emulator_on_shipped_digits_cnn_at_3_bits(digits, tmp_path):
    train, test = digits
    model, _ = load_model(SHIPPED)
    program = _program_via_file(model, test, train.x[:512], 3, tmp_path)
    _assert_forward_is_emulator(model, program, test.x[:24], test.encoding)


def test_finetuning_wins_fixed_point_accuracy_back(digits, tmp_path):
    """The shipped digits-cnn at 2 bits (about 20 % on 150 test samples) fine-tuned for three
    epochs on 256 training samples: the fixed-point accuracy rises far beyond noise (to about
    47 %), and the program of the saved checkpoint is the one trained."""
    train, test = digits
    model, ckpt = load_model(SHIPPED)
    cal, sub, held = train.x[:64], train.head(256), test.head(150)
    before = fixed_accuracy(model, held, cal, 4, 2)
    model, history = finetune(model, sub, cal, 4,
                              FinetuneOptions(2, epochs=3, lr=3e-3, progress=False))
    after = fixed_accuracy(model, held, cal, 4, 2)
    assert after > before + 0.15, (before, after, history)
    assert history[-1]["loss"] < history[0]["loss"]
    out = tmp_path / "ft.pt"
    save_checkpoint(out, model, ckpt.config, 4, ckpt.dataset, {})
    again, _ = load_model(out)
    assert fixed_accuracy(again, held, cal, 4, 2) == after


def test_finetune_is_deterministic_for_a_seed(digits):
    train, _ = digits
    sub = train.head(64)
    weights = []
    for _ in range(2):
        model, _ = load_model(SHIPPED)
        finetune(model, sub, train.x[:64], 4, FinetuneOptions(3, epochs=1, progress=False))
        weights.append(model.fc.weight.detach().clone())
    assert torch.equal(*weights)


@pytest.mark.parametrize("kw", [{"weight_bits": 1}, {"weight_bits": 9}, {"weight_bits": "4"},
                                {"weight_bits": 3, "epochs": 0}, {"weight_bits": 3, "lr": 0.0},
                                {"weight_bits": 3, "batch_size": 0}])
def test_finetune_options_refuse_bad_values(kw):
    with pytest.raises(DaLifError):
        FinetuneOptions(**kw)


def test_finetune_cli_writes_an_ordinary_checkpoint_that_records_how(tmp_path, capsys):
    out = tmp_path / "ft3.pt"
    assert main(["finetune", str(SHIPPED), "--weight-bits", "3", "--epochs", "1", "--lr",
                 "1e-4", "--seed", "5", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "before" in text and "after" in text and "fixed" in text
    assert ", 1 epoch, " in text and "epochs" not in text  # a count of one is singular
    ckpt = load_checkpoint(out)
    rec = ckpt.finetune
    assert rec["weight_bits"] == 3 and rec["epochs"] == 1 and rec["lr"] == 1e-4
    assert rec["seed"] == 5 and rec["source_sha256"] == load_checkpoint(SHIPPED).sha256
    assert rec["source_checkpoint"] == "digits-cnn.pt" and rec["calibration_samples"] == 512
    assert ckpt.metrics["fixed_weight_bits"] == 3
    assert describe(out)["finetune"]["weight_bits"] == 3
    assert main(["inspect", str(out)]) == 0
    assert "finetune" in capsys.readouterr().out
    assert load_checkpoint(SHIPPED).finetune is None  # files without the record still load


@pytest.mark.parametrize("bits", ["0", "9", "4,x", "x"])
def test_finetune_cli_bad_weight_bits_is_one_error_line(bits, tmp_path, capsys):
    assert main(["finetune", str(SHIPPED), "--weight-bits", bits, "-o",
                 str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--weight-bits" in err, err


@pytest.mark.parametrize("record,field", [({"method": "x", "weight_bits": 99, "epochs": 1,
                                            "lr": 0.1}, "weight_bits"),
                                           ({"method": "x", "weight_bits": 3, "epochs": 1,
                                             "lr": float("nan")}, "lr"),
                                           ("3 bits", "finetune")])
def test_a_bad_finetune_record_is_refused_naming_the_field(tmp_path, record, field):
    from dalif_deploy.float_model.checkpoint import content_digest

    obj = torch.load(SHIPPED, weights_only=True)
    obj["finetune"] = record
    try:
        obj["content_sha256"] = content_digest(obj)
    except ValueError:  # a NaN: no digest (strict JSON), the record itself is what is refused
        obj.pop("content_sha256", None)
    bad = tmp_path / "bad.pt"
    torch.save(obj, bad)
    with pytest.raises(DaLifError, match=f"checkpoint.*{field}"):
        load_checkpoint(bad)
