"""netx HDF5 export: lava-dl's own loader runs the written file bit for bit like the emulator.

The written file is loaded with ``lava.lib.dl.netx.hdf5.Network`` (lava-dl 0.6.0) in a child
process under a timeout (a Lava failure can hang), run on Lava's bit-accurate CPU models, and
its readout v after ``timesteps + layers`` steps (netx's latency: one step per layer) must equal
the emulator's outputs exactly. Programs: a seeded dense chain on event input with per-layer
decays and current decay, and the shipped digits-cnn (conv, graded analog input) with its
biases put on netx's 64-unit grid (its own biases are finer: refused, tested below).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from dalif_deploy.converters.fxp_to_netx import check_netx, write_netx
from helpers import REPO_ROOT

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
)

RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from dalif_deploy.targets.lava.compat import import_lava
    import_lava()
    import types
    # netx imports slayer (torch training, cv2 ...) only for resonate-and-fire neurons' params;
    # this CUBA-only use stands in an empty module rather than installing slayer's stack
    for name in ("lava.lib.dl.slayer", "lava.lib.dl.slayer.neuron", "lava.lib.dl.slayer.neuron.rf"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["lava.lib.dl.slayer.neuron.rf"].neuron_params = None
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    import h5py
    path, frames_path, out_path = sys.argv[1:4]
    with h5py.File(path, "r") as f:
        a = {k: int(f.attrs[k]) for k in ("input_message_bits", "reset_interval",
                                          "reset_offset", "steps")}
    frames = np.load(frames_path)  # [N, T, *shape] integers (C, H, W order)
    n, t = frames.shape[:2]
    steps = a.pop("steps")
    net = Network(net_config=path, **a)
    r = a["reset_interval"]
    data = np.zeros((*net.inp.shape, n * r), np.int32)
    for i in range(n):
        x = frames[i].transpose(0, 3, 2, 1) if len(net.inp.shape) == 3 else frames[i]
        data[..., i * r:i * r + t] = np.moveaxis(x.reshape(t, *net.inp.shape), 0, -1)
    source = RingBuffer(data=data)
    source.s_out.connect(net.inp)
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    outs = []
    for i in range(n):
        net.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
        outs.append(net.layers[-1].neuron.v.get().astype(np.int64).tolist())
        net.run(condition=RunSteps(num_steps=r - steps), run_cfg=cfg)
    net.stop()
    json.dump({"outputs": outs, "layers": len(net.layers)}, open(out_path, "w"))
""")


def run_netx(path: Path, frames: np.ndarray, tmp: Path, timeout: float = 240.0) -> dict:
    """Load ``path`` with netx, stream the integer ``frames`` through it in a child process."""
    (tmp / "runner.py").write_text(RUNNER)
    np.save(tmp / "frames.npy", frames)
    out = tmp / "netx_out.json"
    proc = subprocess.run([sys.executable, str(tmp / "runner.py"), str(path),
                           str(tmp / "frames.npy"), str(out)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def dense_chain(seed: int = 0, bias_step: int = 64) -> FixedProgram:
    """A seeded 3-layer dense chain on event input: per-layer dv, a current decay, biases."""
    rng = np.random.default_rng(seed)
    sizes, pops, syns, src, shape = [24, 16, 6], [], [], "input", (2, 4, 4)
    for i, n in enumerate(sizes):
        name = "readout" if i == len(sizes) - 1 else f"lif{i}"
        readout = name == "readout"
        n_in = int(np.prod(shape))
        syns.append(Synapse(f"{src}->{name}", src, name, "dense",
                            rng.integers(-128, 128, (n, n_in)), weight_exp=0 if i else 1,
                            input_shape=shape, output_shape=(n,)))
        pops.append(Population(name, (n,), dv=np.array([0 if readout else 300 + 500 * i]),
                               vth=131071 if readout else 300, du=4095 if readout or i else 3000,
                               bias_mant=rng.integers(-20, 21, n) * bias_step, bias_exp=0))
        src, shape = name, (n,)
    return FixedProgram(InputEncoding("events", (2, 4, 4)), pops, syns,
                        Readout("readout", 100.0), timesteps=6)


def event_frames(program: FixedProgram, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, program.timesteps, *program.input.shape)) < 0.4).astype(np.int64)


def assert_netx_exact(program: FixedProgram, frames: np.ndarray, tmp: Path) -> dict:
    from dalif_deploy.targets.emulator import emulate

    emu = emulate(program, frames, mode="sync")
    summary = write_netx(program, tmp / "net.h5")
    got = run_netx(tmp / "net.h5", frames, tmp)
    assert got["layers"] == len(program.populations) == summary["layers"]
    np.testing.assert_array_equal(np.array(got["outputs"]), emu.outputs)
    assert emu.spike_counts.sum(0).min() > 0, "a hidden layer never spikes: weak test"
    return got


@pytest.mark.lava
def test_dense_chain_netx_exact(tmp_path):
    """Per-layer decays and a current decay, and lif0 with one decay per neuron (netx writes
    them as a vDecay array; they change every output here, so a dropped array would show)."""
    program = dense_chain()
    frames = event_frames(program, 3)
    assert_netx_exact(program, frames, tmp_path)
    from dalif_deploy.targets.emulator import emulate

    before = emulate(program, frames, mode="sync").outputs
    program.populations[0].dv = np.arange(24) * 100 + 100
    assert np.all(emulate(program, frames, mode="sync").outputs != before)
    assert_netx_exact(program, frames, tmp_path)


@pytest.fixture(scope="module")
def digits_cnn_netx(tmp_path_factory):
    """``export --netx`` of the shipped digits-cnn (calibrated on 64 training images): the
    netx file and the program it holds."""
    from helpers import CHECKPOINTS

    from dalif_deploy.cli import main
    from dalif_deploy.fixedpoint.fxp_format import load_program

    d = tmp_path_factory.mktemp("netx")
    assert main(["export", str(CHECKPOINTS / "digits-cnn.pt"), "--netx", str(d / "cnn.h5"),
                 "--program", str(d / "cnn.fxp"), "--calibrate", "digits",
                 "--calibration-samples", "64"]) == 0
    return d / "cnn.h5", load_program(d / "cnn.fxp")


def test_export_netx_digits_cnn_on_grid(digits_cnn_netx):
    """Every bias on netx's exponent 6, every conv weight_exp 0: the program is netx's as is."""
    _, program = digits_cnn_netx
    assert {p.bias_exp for p in program.populations} == {6}
    assert program.metadata["netx"] is True
    check_netx(program)


@pytest.mark.lava
@pytest.mark.parametrize("decays", ["per-layer", "per-channel"])
def test_digits_cnn_netx_exact(decays, digits_cnn_netx, tmp_path):
    """The exported digits-cnn (conv, conv, dense; graded 8-bit input), as exported and with
    one decay per channel: netx's network, our lava backend and the emulator agree exactly."""
    from dalif_deploy.targets.emulator import emulate, encode_input
    from dalif_deploy.targets.lava import run_lava
    from helpers.programs import with_per_channel_decays

    from dalif_deploy.datasets.loaders import load_dataset

    _, program = digits_cnn_netx
    if decays == "per-channel":
        program = with_per_channel_decays(program)
        assert all(p.dv.size == p.shape[0] for p in program.populations[:-1])
    x = load_dataset("digits", split="test").x[:3]
    assert_netx_exact(program, encode_input(program, x), tmp_path)
    np.testing.assert_array_equal(run_lava(program, x, timeout=240.0).outputs,
                                  emulate(program, x).outputs)


def test_plain_quantiser_digits_cnn_is_off_netx_grid(tmp_path):
    """Without netx mode the quantiser's DA-LIF populations fire on '>=' (netx's neuron on
    '>') and its finer biases are refused, naming the population."""
    from helpers.programs import digits_program

    program = digits_program("digits-cnn", tmp_path)
    with pytest.raises(DaLifError, match="lif1 fires by spike rule '>='"):
        check_netx(program)
    for p in program.populations:
        p.spike_rule = ">"
    # as quantised, lif1's bias (bias_exp 7) overflows netx's 13-bit mantissa at bias_exp 6
    # and lif2's (bias_exp 1) and the readout's (bias_exp 0) lie off netx's 64-unit grid
    with pytest.raises(DaLifError, match=r"lif1: bias / 64 reaches \d+"):
        check_netx(program)
    program.populations[0].bias_exp = 6
    with pytest.raises(DaLifError, match="lif2: bias .* not a multiple of 64"):
        check_netx(program)


def test_refuses_fine_bias():
    with pytest.raises(DaLifError, match="lif0: bias .* not a multiple of 64"):
        check_netx(dense_chain(bias_step=1))


def test_per_channel_conv_decay_layout(tmp_path):
    """A conv population's per-channel decays are written per neuron in netx's (W, H, C)."""
    import h5py
    from dalif_deploy.converters.fxp_to_netx import _neuron

    pop = Population("c", (3, 2, 4), dv=np.array([10, 20, 30]), vth=5, du=4095,
                     bias_mant=np.zeros((3, 2, 4), np.int64), bias_exp=0)
    dv = _neuron(pop)["vDecay"]
    assert dv.shape == (4, 2, 3)
    np.testing.assert_array_equal(dv[1, 0], [10, 20, 30])
    program = dense_chain()
    program.populations[0].dv = np.arange(24) + 100
    write_netx(program, tmp_path / "n.h5")
    with h5py.File(tmp_path / "n.h5", "r") as f:
        np.testing.assert_array_equal(f["layer/2/neuron/vDecay"][()], np.arange(24) + 100)


def test_refuses_residual_fan_in():
    program = dense_chain()
    w = np.zeros((6, 24), np.int64)
    program.synapses.append(Synapse("lif0->readout", "lif0", "readout", "dense", w,
                                    input_shape=(24,), output_shape=(6,)))
    with pytest.raises(DaLifError, match=r"readout is a residual join: it adds \[.lif1"):
        check_netx(program)


def test_refuses_a_recurrent_population_naming_it():
    program = dense_chain()
    program.synapses.append(Synapse("lif0->lif0", "lif0", "lif0", "dense",
                                    np.zeros((24, 24), np.int64), input_shape=(24,),
                                    output_shape=(24,)))
    with pytest.raises(DaLifError, match="population lif0 is recurrent .* no recurrent block"):
        check_netx(program)


def test_refuses_inexact_dense_exponent():
    program = dense_chain()
    program.synapses[1].weight_exp = -1
    program.synapses[1].weights[0, 0] = 3
    with pytest.raises(DaLifError, match="lif0->lif1: weights \\* 2\\^-1 are not integers"):
        check_netx(program)


def test_refuses_digits_resnet(tmp_path):
    from helpers.programs import digits_program

    with pytest.raises(DaLifError, match="layers.0.lif2 is a residual join: it adds"):
        check_netx(digits_program("digits-resnet", tmp_path))


def test_cli_export_netx_refuses_digits_resnet(tmp_path, capsys):
    """The shipped digits-resnet has residual joins netx cannot build: one error line naming
    the join, exit 2, no file written."""
    from helpers import CHECKPOINTS

    from dalif_deploy.cli import main

    rc = main(["export", str(CHECKPOINTS / "digits-resnet.pt"), "--netx", str(tmp_path / "r.h5"),
               "--program", str(tmp_path / "r.fxp")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: netx export: population layers.0.lif2 is a residual "
                              "join: it adds ['layers.0.lif1', 'lif1']"), err
    assert not (tmp_path / "r.h5").exists() and not (tmp_path / "r.fxp").exists()


def test_quantize_netx_mode_puts_biases_on_grid():
    """netx=True on a graph whose plain program netx refuses (fine biases): every bias on
    exponent 6, dense weights integers (weight_exp >= 0), and check_netx passes."""
    from dalif_deploy.converters.nir_to_fixed import quantize_graph
    from dalif_deploy.converters.torch_to_nir import export_nir
    from helpers.nir_helpers import lively_model

    graph = export_nir(lively_model("digits-cnn", width=4), (1, 8, 8), 4, encoding="analog")
    with pytest.raises(DaLifError, match="netx export"):
        check_netx(quantize_graph(graph))
    program = quantize_graph(graph, netx=True)
    assert {p.bias_exp for p in program.populations} == {6}
    check_netx(program)
    assert all(s.weight_exp >= 0 for s in program.synapses if s.kind == "dense")


def test_written_file_layout(tmp_path):
    """The layer groups netx reads, with CUBA neurons whose iDecay is du + 1."""
    import h5py

    program = dense_chain()
    write_netx(program, tmp_path / "net.h5")
    with h5py.File(tmp_path / "net.h5", "r") as f:
        layers = f["layer"]
        assert [layers[str(i)]["type"][()].decode() for i in range(len(layers))] == [
            "input", "flatten", "dense", "dense", "dense"]  # the input is (2, 4, 4)
        n = layers["2"]["neuron"]
        assert (n["type"][()].decode(), int(n["iDecay"][()]), int(n["vDecay"][()])) == (
            "CUBA", 3001, 300)
        np.testing.assert_array_equal(layers["2"]["weight"][()], program.synapses[0].weights * 2)
        assert int(f.attrs["steps"]) == program.timesteps + 3
