"""The emulator on a torch device: the same integers bit for bit on every device there is.

The device tests are parametrized over the devices this machine has (cpu always; cuda where
``torch.cuda.is_available()``, skipped otherwise). On CPU the CUDA code path (convolutions as
im2col + GEMM instead of F.conv2d) is forced and checked against the CPU path, so the
arithmetic a GPU runs is tested even without one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dalif_deploy.targets import emulator, emulator_kernels
from dalif_deploy.targets.emulator import emulate, encode_input
from helpers.emulator_reference import assert_same_run, reference_run
from helpers.programs import program_and_input

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.parallel import resolve_device
from dalif_deploy.cli import main

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not CUDA, reason="no CUDA device here: the cuda cases run where there is one"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("encoding", ["analog", "events"])
@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_device_run_equals_the_default_cpu_run_and_the_int_reference(device, kind, encoding,
                                                                     mode):
    """emulate(device=...) gives every trace, count and counter of the default (cpu) run, on
    random programs with u wraps, per-channel decays, a residual and recurrent synapses; in
    sync mode both equal the Python-int reference."""
    prog, x = program_and_input(kind, encoding, ["dense", "conv"].index(kind) * 2
                                 + ["analog", "events"].index(encoding))
    ref = emulate(prog, x, record=True, check=False, batch_size=2, mode=mode)
    got = emulate(prog, x, record=True, check=False, batch_size=2, mode=mode, device=device)
    assert_same_run(ref, got)
    assert ref.spike_counts.sum() > 0
    if mode == "sync":
        outs, _, _ = reference_run(prog, encode_input(prog, x))
        assert got.outputs.tolist() == outs


@pytest.mark.parametrize("groups,stride,padding", [(1, (1, 1), (1, 1)), (2, (2, 2), (0, 1)),
                                                   (4, (1, 2), (2, 0))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv_gemm_equals_conv2d_exactly_up_to_the_float32_bound(groups, stride, padding,
                                                                  dtype, monkeypatch):
    """conv_gemm (the CUDA convolution) equals F.conv2d bit for bit on integer data whose
    partial sums reach 2^24 (float32's exact limit) or far beyond it (float64), also when
    the batch is split into several im2col blocks."""
    rng = np.random.default_rng(groups)
    c, co, k = 4, 8, 3
    w = rng.integers(-255, 256, (co, c // groups, k, k))
    x = rng.integers(0, 2, (6, c, 7, 6))
    if dtype == torch.float32:  # scale so the largest possible sum is exactly 2^24
        worst = int(np.abs(w).reshape(co, -1).sum(1).max())
        x = x * (2**24 // worst)
    else:
        x = x * 2**30
    wt, xt = torch.as_tensor(w, dtype=dtype), torch.as_tensor(x, dtype=dtype)
    want = F.conv2d(xt.double(), wt.double(), None, stride, padding, 1, groups)
    if dtype == torch.float32:
        assert float(want.abs().max()) <= 2**24
    got = emulator_kernels.conv_gemm(xt, wt, stride, padding, groups)
    assert got.dtype == dtype and torch.equal(got.double(), want)
    monkeypatch.setattr(emulator_kernels, "CONV_GEMM_ELEMENTS", 1)  # one sample per block
    assert torch.equal(emulator_kernels.conv_gemm(xt, wt, stride, padding, groups).double(),
                       want)


@pytest.mark.parametrize("encoding", ["analog", "events"])
def test_cuda_code_path_forced_on_cpu_gives_the_same_integers(encoding, monkeypatch):
    """The synapses as compiled for CUDA (conv_gemm, never cuDNN), run on CPU: the same run."""
    prog, x = program_and_input("conv", encoding, 7)
    ref = emulate(prog, x, record=True, check=False, batch_size=3)
    compile_synapse = emulator.compile_synapse
    seen = []

    def as_for_cuda(program, syn, device, *kernels):
        s = compile_synapse(program, syn, device, *kernels)
        s.gemm = True
        seen.append(s.syn.kind)
        return s

    monkeypatch.setattr(emulator, "compile_synapse", as_for_cuda)
    assert_same_run(ref, emulate(prog, x, record=True, check=False, batch_size=3))
    assert "conv" in seen


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_exact_kernels_sets_ieee_float32_on_cuda_for_the_run_only(device):
    """On CUDA, GEMMs and cuDNN convolutions run IEEE float32 while the context lasts (cuDNN
    convolutions default to TF32); CPU runs change nothing. Only settings change, so the cuda
    case runs on any machine."""
    backends = torch.backends

    def knobs():
        return (torch.get_float32_matmul_precision(), backends.cuda.matmul.fp32_precision,
                backends.cudnn.conv.fp32_precision)

    before = knobs()
    assert before[2] == "tf32"  # torch's default, which the context must override
    with emulator_kernels.exact_kernels(torch.device(device)):
        inside = knobs()
    assert inside == (("highest", "ieee", "ieee") if device == "cuda" else before)
    assert knobs() == before


@pytest.mark.parametrize("device", ["meta", *DEVICES[1:]])
@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet", "digits-rnn", "vgg11"])
def test_zoo_models_run_as_float_references_on_a_device(name, device, monkeypatch):
    """verify's float reference on --device: a zoo model moved there runs there end to end,
    its readout and recorded spikes there too (meta: shapes only, on any machine; the
    in-place reset's data-dependent fast-path test is turned off there, the general path
    giving the same values). On cuda every decisive sample (no potential near a threshold,
    top-2 logits apart: ``away_from_ties``) is predicted as on the CPU; a tie may round
    either way under another summation order."""
    import copy

    from helpers.nir_helpers import away_from_ties, lively_model

    from dalif_deploy.float_model.zoo import ZOO_DEFAULTS, run_model
    from dalif_deploy.neurons import protocol

    model = lively_model(name, **({"width": 8} if name == "vgg11" else {}))
    shape = ZOO_DEFAULTS[name]["input_shape"]
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(0))
    if device == "meta":
        monkeypatch.setattr(protocol, "_zero_reset_is_a_product", lambda *a: False)
    with emulator_kernels.exact_kernels(torch.device(device)):
        logits, spikes = run_model(copy.deepcopy(model).to(device), x.to(device), 4,
                                   record_spikes=True, spike_dtype=torch.uint8)
    assert logits.device.type == device and tuple(logits.shape) == (16, 10)
    assert spikes and all(s.device.type == device and s.dtype == torch.uint8
                          for s in spikes.values())
    if device == "cuda":
        decisive, _ = away_from_ties(model, x, 4)
        assert decisive.sum() >= len(x) // 8  # not vacuous (vgg11 w8: 4 of 16 here)
        want = run_model(model, x, 4).argmax(1).numpy()
        assert np.array_equal(logits.cpu().argmax(1).numpy()[decisive], want[decisive])


@pytest.mark.skipif(not CUDA, reason="no CUDA device here: the cuda cases run where there is one")
def test_verify_on_cuda_gives_the_cpu_fixed_point_and_close_float_references(tmp_path):
    """verify --device cuda --reference-device cuda runs the emulator and the float and NIR
    references on the GPU: the fixed-point side equals the CPU run's exactly; the float side
    may differ only where a float sum lands on a threshold (cuDNN's summation order), so its
    accuracy and agreement move by at most one point."""
    import json

    args = ["verify", "dalif_deploy/checkpoints/digits-resnet.pt", "--lava-samples", "0",
            "--batch-size", "128"]
    assert main([*args, "--json", str(tmp_path / "cpu.json")]) == 0
    assert main([*args, "--device", "cuda", "--reference-device", "cuda",
                 "--json", str(tmp_path / "cuda.json")]) == 0
    a, b = (json.loads((tmp_path / f"{d}.json").read_text()) for d in ("cpu", "cuda"))
    assert (a["reference_device"], b["reference_device"]) == ("cpu", "cuda")
    for key in ("fixed_accuracy", "quant_table", "input_clipped", "samples"):
        assert a[key] == b[key], key
    assert abs(a["float_accuracy"] - b["float_accuracy"]) <= 0.01
    assert abs(a["prediction_agreement"] - b["prediction_agreement"]) <= 0.01


@pytest.mark.parametrize("name,why", [("tpu", "choose cpu, cuda"), ("cpu:0", "choose cpu"),
                                      ("cuda:x", "choose cpu")])
def test_unknown_devices_are_refused(name, why):
    with pytest.raises(DaLifError, match=why):
        resolve_device(name)


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["verify", "dalif_deploy/checkpoints/digits-cnn.pt", "--device", "cuda"],
    ["verify", "dalif_deploy/checkpoints/digits-cnn.pt", "--reference-device", "cuda"],
    ["simulate", "prog.fxp", "--backend", "emulator", "--device", "cuda"],
])
def test_cuda_without_a_gpu_is_one_error_line_exit_2(argv, tmp_path, capsys, monkeypatch):
    from dalif_deploy.fixedpoint.fxp_format import save_program

    prog, _ = program_and_input("dense", "analog", 0)
    save_program(prog, tmp_path / "prog.fxp")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dalif_deploy" / "checkpoints").mkdir(parents=True)
    (tmp_path / "dalif_deploy" / "checkpoints" / "digits-cnn.pt").write_bytes(b"x")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    flag = argv[-2]
    assert len(err) == 1 and err[0].startswith(f"error: {flag} cuda: no CUDA device"), err


def test_references_too_big_for_the_gpu_are_refused_with_the_figure(monkeypatch):
    """verify's float references on a GPU without the memory for a batch: one error naming
    the figure and the fix, before any work (the free memory faked: no GPU needed)."""
    from dalif_deploy.base import resources
    from dalif_deploy.verification import stages

    prog, _ = program_and_input("conv", "analog", 0)
    neurons = sum(p.size for p in prog.populations)
    need = stages.REFERENCE_BYTES_PER_NEURON_STEP * neurons * prog.timesteps * 64
    monkeypatch.setattr(resources, "device_memory_free", lambda device: need)
    cuda = torch.device("cuda")
    stages._check_reference_memory(prog, cuda, 32, 2)  # half of it: fits
    stages._check_reference_memory(prog, torch.device("cpu"), 10**6, 2)  # host: not checked
    with pytest.raises(DaLifError, match=r"batch 64 on cuda need about .* lower --batch-size"):
        stages._check_reference_memory(prog, cuda, 64, 2)
