"""Fixed-point programs the tests build: a small valid one with every field set, seeded random
ones (dense or conv, analog or events, with or without a residual synapse), and the shipped
digits checkpoints quantised the way the CLI does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dalif_deploy.fixedpoint.limits import VTH_MAX
from dalif_deploy.fixedpoint.program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
)

from . import CHECKPOINTS


def small_program() -> FixedProgram:
    """A valid program with a conv, a residual dense synapse, per-channel decays, a readout."""
    rng = np.random.default_rng(0)
    shape = (2, 4, 4)
    pops = [
        Population("a", shape, dv=[100, 200], vth=50, bias_mant=rng.integers(-9, 9, shape),
                   bias_exp=2, scale=1234.5, provenance=["lif1"]),
        Population("b", (6,), dv=[300], vth=20, bias_mant=np.zeros(6, int), du=4095),
        Population("out", (3,), dv=[0], vth=VTH_MAX, bias_mant=[1, 2, 3]),
    ]
    syns = [
        Synapse("in->a", "input", "a", "conv", rng.integers(-128, 128, (2, 1, 3, 3)),
                graded=True, padding=(1, 1), input_shape=(1, 4, 4), output_shape=shape),
        Synapse("a->b", "a", "b", "dense", rng.integers(-128, 128, (6, 32)), weight_exp=-2,
                input_shape=shape, output_shape=(6,), provenance=["fc"]),
        Synapse("in->b", "input", "b", "dense", rng.integers(-32, 32, (6, 16)) // 16 * 16,
                weight_bits=4, graded=True, input_shape=(1, 4, 4), output_shape=(6,)),
        Synapse("b->out", "b", "out", "dense", rng.integers(-128, 128, (3, 6)),
                input_shape=(6,), output_shape=(3,)),
    ]
    return FixedProgram(InputEncoding("analog", (1, 4, 4), scale=112.0), pops, syns,
                        Readout("out", 77.0), timesteps=4,
                        quant_table=[{"population": "a", "scale": 1234.5, "weight_exp": [0]}],
                        metadata={"weight_bits": 8, "note": "test"})


# ---------------------------------------------------------------- generated programs
def random_population(name, shape, rng, *, dv=None, vth=None, bias=0, bias_exp=0, channel_dv=False):
    c = shape[0]
    if dv is None:
        dv = rng.integers(0, 4096, c if channel_dv else 1)
        if channel_dv:  # a few distinct decays shared by several channels
            dv = rng.choice(np.unique(dv)[:3], c)
    bias_mant = rng.integers(-bias, bias + 1, shape) if bias else np.zeros(shape, np.int64)
    return Population(name=name, shape=shape, dv=np.atleast_1d(dv),
                      vth=int(vth if vth is not None else rng.integers(50, 400)),
                      bias_mant=bias_mant, bias_exp=bias_exp)


def random_dense(name, src, tgt, n_in, n_out, rng, *, exp=0, graded=False, lo=-128, hi=127):
    """Dense synapse; ``n_in`` is the source size or its shape (flattened, C order)."""
    in_shape = tuple(np.atleast_1d(n_in))
    return Synapse(name=name, source=src, target=tgt, kind="dense",
                   weights=rng.integers(lo, hi + 1, (n_out, int(np.prod(in_shape)))),
                   weight_exp=exp, graded=graded, input_shape=in_shape, output_shape=(n_out,))


def random_conv(name, src, tgt, cin, cout, hw, rng, *, exp=0, graded=False, stride=1, pad=1, k=3):
    h, w = hw
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    return Synapse(name=name, source=src, target=tgt, kind="conv",
                   weights=rng.integers(-128, 128, (cout, cin, k, k)), weight_exp=exp,
                   graded=graded, stride=(stride, stride), padding=(pad, pad),
                   input_shape=(cin, h, w), output_shape=(cout, ho, wo))


def random_readout(src, n_in, n_out, rng, exp=0):
    pop = Population(name="out", shape=(n_out,), dv=[0], vth=2**17 - 1,
                     bias_mant=rng.integers(-50, 51, (n_out,)))
    return pop, random_dense("fc_out", src, "out", n_in, n_out, rng, exp=exp)


def dense_program(seed=0, *, graded=True, residual=False, t=4, channel_dv=False, bias=0,
                  exp=-2, recurrent=False):
    rng = np.random.default_rng(seed)
    pops = [random_population("l1", (12,), rng, bias=bias, channel_dv=channel_dv),
            random_population("l2", (10,), rng, channel_dv=channel_dv, bias=bias, bias_exp=1)]
    syns = [random_dense("fc1", "input", "l1", 8, 12, rng, exp=exp, graded=graded),
            random_dense("fc2", "l1", "l2", 12, 10, rng, exp=-1)]
    if residual:
        syns.append(random_dense("skip", "input", "l2", 8, 10, rng, exp=exp, graded=graded))
    if recurrent:  # both populations feed back to themselves (one step of delay)
        syns += [random_dense("rec1", "l1", "l1", 12, 12, rng, exp=-1),
                 random_dense("rec2", "l2", "l2", 10, 10, rng, exp=0, lo=-60, hi=60)]
    ro, fc = random_readout("l2", 10, 3, rng)
    enc = InputEncoding("analog" if graded else "events", (8,), scale=20.0)
    return FixedProgram(enc, pops + [ro], syns + [fc], Readout("out", 64.0), timesteps=t)


def conv_program(seed=0, *, graded=True, residual=False, t=3, channel_dv=False, bias=0,
                 vth2=None, recurrent=False):
    rng = np.random.default_rng(seed)
    pops = [random_population("c1", (3, 6, 5), rng, bias=bias, channel_dv=channel_dv),
            random_population("c2", (4, 3, 3), rng, channel_dv=channel_dv, vth=vth2)]
    syns = [random_conv("conv1", "input", "c1", 2, 3, (6, 5), rng, graded=graded),
            random_conv("conv2", "c1", "c2", 3, 4, (6, 5), rng, stride=2, exp=-1)]
    if residual:
        syns.append(random_conv("skip", "input", "c2", 2, 4, (6, 5), rng, stride=2, graded=graded))
    if recurrent:  # a recurrent conv (lowered as Sparse: Lava's Conv is kept feed-forward)
        syns.append(random_conv("rec", "c2", "c2", 4, 4, (3, 3), rng))
    ro, fc = random_readout("c2", (4, 3, 3), 4, rng)
    enc = InputEncoding("analog" if graded else "events", (2, 6, 5), scale=30.0)
    return FixedProgram(enc, pops + [ro], syns + [fc], Readout("out", 64.0), timesteps=t)


def per_channel_program(seed=0, *, graded=True, t=4):
    """Every channel its own decay (5 and 6 distinct per population), a residual fan-in into c2
    (conv2 from c1, ``weight_exp`` -2, plus a skip from the input, -1) and negative exponents
    out of multi-decay populations (conv2, fc3, the readout's -1)."""
    rng = np.random.default_rng(seed)

    def pop(name, shape, vth):
        return random_population(name, shape, rng,
                                 dv=rng.choice(np.arange(1, 4096), shape[0], replace=False),
                                 vth=vth, bias=150, bias_exp=1)

    pops = [pop("c1", (5, 6, 5), 40), pop("c2", (6, 3, 3), 20), pop("l3", (7,), 30)]
    syns = [random_conv("conv1", "input", "c1", 2, 5, (6, 5), rng, graded=graded),
            random_conv("conv2", "c1", "c2", 5, 6, (6, 5), rng, stride=2, exp=-2),
            random_conv("skip", "input", "c2", 2, 6, (6, 5), rng, stride=2, exp=-1, graded=graded),
            random_dense("fc3", "c2", "l3", (6, 3, 3), 7, rng, exp=-1)]
    ro, fc = random_readout("l3", 7, 4, rng, exp=-1)
    enc = InputEncoding("analog" if graded else "events", (2, 6, 5), scale=30.0)
    return FixedProgram(enc, pops + [ro], syns + [fc], Readout("out", 64.0), timesteps=t)


def random_samples(program, n, seed=1, rate=0.4):
    """``n`` inputs for ``program``: analog frames in [-1, 4), or events at ``rate``."""
    rng = np.random.default_rng(seed)
    shape = program.input.shape
    if program.input.kind == "analog":
        return rng.uniform(-1, 4, (n, *shape)).astype(np.float32)
    return (rng.random((n, program.timesteps, *shape)) < rate).astype(np.float32)


def random_program(rng: np.random.Generator, kind: str, encoding: str, residual: bool,
                    recurrent: bool = False) -> FixedProgram:
    shape = (2, 5, 5)
    t = 3

    def pop(name, shp, readout=False):
        n = int(np.prod(shp))
        if readout:
            return Population(name, shp, dv=[0], vth=VTH_MAX,
                              bias_mant=rng.integers(-50, 50, shp), bias_exp=1)
        dv = rng.integers(0, 4096, shp[0]) if len(shp) == 3 else rng.integers(0, 4096, 1)
        return Population(name, shp, dv=dv, vth=int(rng.integers(1, 40)),
                          bias_mant=rng.integers(-300, 300, shp),
                          bias_exp=int(rng.integers(-2, 3)), du=int(rng.choice([4095, 100])),
                          provenance=[name, str(n)])

    def syn(name, src, tgt, sin, sout, graded=False):
        if kind == "conv":
            w = rng.integers(-128, 128, (sout[0], sin[0], 3, 3))
            return Synapse(name, src, tgt, "conv", w, graded=graded, padding=(1, 1),
                           input_shape=sin, output_shape=sout)
        w = rng.integers(-128, 128, (int(np.prod(sout)), int(np.prod(sin))))
        return Synapse(name, src, tgt, "dense", w, weight_exp=int(rng.integers(-3, 2)),
                       graded=graded, input_shape=sin, output_shape=sout)

    graded = encoding == "analog"
    pops = [pop("a", shape), pop("b", shape), pop("out", (3,), readout=True)]
    syns = [syn("in->a", "input", "a", shape, shape, graded), syn("a->b", "a", "b", shape, shape)]
    if residual:
        syns.append(syn("in->b", "input", "b", shape, shape, graded))
    if recurrent:  # both a and b feed back to themselves
        syns += [syn("a->a", "a", "a", shape, shape), syn("b->b", "b", "b", shape, shape)]
    syns.append(Synapse("b->out", "b", "out", "dense", rng.integers(-128, 128, (3, 50)),
                        input_shape=shape, output_shape=(3,)))
    return FixedProgram(InputEncoding(encoding, shape, scale=100.0), pops, syns,
                        Readout("out", 64.0), t)


def program_and_input(kind: str, encoding: str, seed: int):
    rng = np.random.default_rng(2000 + seed)
    prog = random_program(rng, kind, encoding, residual=True, recurrent=True)
    if encoding == "analog":
        x = rng.uniform(-1.3, 1.3, (5, *prog.input.shape)).astype(np.float32)
    else:
        x = (rng.random((5, prog.timesteps, *prog.input.shape)) < 0.4).astype(np.float32)
    return prog, x


# ---------------------------------------------------------------- the shipped digits models
def digits_program(name: str, tmp_dir: Path):
    """Build the 8-bit program of a shipped digits checkpoint the way the CLI does."""
    import functools

    import nir
    from dalif_deploy.converters.nir_to_fixed import quantize_graph
    from dalif_deploy.converters.torch_to_nir import export_checkpoint
    from dalif_deploy.targets.emulator import emulate

    from dalif_deploy.datasets.loaders import load_dataset

    ckpt = CHECKPOINTS / f"{name}.pt"
    path = tmp_dir / f"{name}.nir"
    export_checkpoint(ckpt, path)
    calibration = load_dataset("digits", split="train").x[:256]
    return quantize_graph(nir.read(str(path)), weight_bits=8, calibration=calibration,
                          run=functools.partial(emulate, check=False))


def with_per_channel_decays(program, seed: int = 0):
    """The program with every channel of every spiking population given its own decay (as
    `train --granularity channel` learns them; 16 and 32 distinct values on digits-cnn)."""
    rng = np.random.default_rng(seed)
    for p in program.populations:
        if p.name != program.readout.population:
            base = int(p.dv[0])
            p.dv = np.clip(base + rng.choice(np.arange(-400, 401), p.shape[0], replace=False),
                           0, 4095)
    return program


def tie_program(rule: str, reset: str = "zero") -> FixedProgram:
    """An IF neuron (dv = 0) whose one input weight puts v exactly on its threshold: v =
    64 * 3 = vth << 6 at the first step, the spike rule alone decides."""
    pops = [Population("a", (1,), dv=[0], vth=3, bias_mant=[0], spike_rule=rule, reset=reset),
            Population("out", (1,), dv=[0], vth=VTH_MAX, bias_mant=[0])]
    syns = [Synapse("in->a", "input", "a", "dense", [[3]], input_shape=(1,), output_shape=(1,)),
            Synapse("a->out", "a", "out", "dense", [[1]], input_shape=(1,), output_shape=(1,))]
    return FixedProgram(InputEncoding("events", (1,)), pops, syns, Readout("out", 64.0), 2)
