"""FixedProgram -> lava-dl netx HDF5 (the network format Intel's own toolchain loads).

netx (``lava.lib.dl.netx.hdf5.Network``, lava-dl 0.6.0) reads a group ``layer`` of numbered
layer groups, each with a ``type`` (``input``, ``conv``, ``flatten``, ``dense``), a ``shape``
(C, H, W or N; netx reverses it to Lava's W, H, C), the integer ``weight`` (torch layout; netx
flips conv kernels itself and re-derives Dense's ``weight_exp``/``num_weight_bits`` so that the
weights count exactly as written), conv ``stride``/``padding``/``dilation``/``groups``, the
``bias`` and a ``neuron`` group of type ``CUBA``. netx builds a Lava LIF from it with

    du = iDecay - 1,   dv = vDecay,   vth = vThMant,   bias = bias << 6   (bias_exp fixed at 6)

so the program's arithmetic (docs/DESIGN.md section 4) maps one to one, except what netx cannot
say, which :func:`check_netx` refuses:

* topology: netx is a chain (each layer feeds the next; 0.6.0's ``concat``, ``average`` and
  ``pool`` layers raise NotImplementedError); a residual join, a skip or a recurrent
  population is refused, named;
* decays: one ``du`` per layer; per-channel DA-LIF ``dv`` is written per neuron (netx passes
  a ``vDecay`` array to Lava's LIF unchanged);
* bias: netx fixes ``bias_exp = 6``, so only biases that are multiples of 64 (in v units)
  are exact; the quantiser's finer biases (digits-cnn: ``bias_exp`` 1 and 0) are refused,
  and ``quantize_graph(..., netx=True)`` (``export --netx``, ``quantize --netx``) quantises
  onto that grid in the first place;
* synapses: a Dense weight ``w * 2^weight_exp`` must be an integer in [-256, 254] (then netx
  applies it exactly); a conv must have ``weight_exp = 0`` (netx's Conv has no exponent);
* input: analog input reaches the first layer as 8-bit graded spikes only when the loader
  passes ``input_message_bits=8`` (the file cannot say so; it is recorded in the file's
  attributes); an analog input into a binary synapse is refused.

The readout (non-spiking, no decay, no reset) is the last CUBA layer with its own ``dv = 0``,
``du = 4095`` and ``vth``: exact as long as its v stays at or below ``vth << 6`` (it never
spikes), which the readout's 17-bit maximum ``vth`` gives for every v Lava can hold but
``2^23 - 64 .. 2^23 - 1``.

Timing: each netx layer adds one step of Lava latency and a bias acts from step 1, so load with
``reset_interval > timesteps + layers`` and ``reset_offset = 1`` (layer i is then reset just
before it sees the first frame), feed ``timesteps + layers`` steps, and read the last layer's
v: it equals the emulator's final readout v. :func:`netx_load_args` gives these arguments.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dalif_deploy.base.encoding import ANALOG
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import atomic_path
from dalif_deploy.fixedpoint.arithmetic import effective_bias, effective_weights
from dalif_deploy.fixedpoint.limits import BIAS_MANT_MAX, DECAY_MAX, NETX_BIAS_EXP, NETX_DENSE_RANGE
from dalif_deploy.fixedpoint.program import FixedProgram, Population, Synapse


def _chain(program: FixedProgram) -> list[tuple[Synapse, Population]]:
    """The program as a chain of (synapse, population) pairs, or a DaLifError."""
    layers, source = [], "input"
    for pop in program.populations:
        incoming = program.incoming(pop.name)
        if any(s.recurrent for s in incoming):
            raise DaLifError(f"netx export: population {pop.name} is recurrent (fed back its "
                             "own spikes); lava-dl netx 0.6.0 has no recurrent block: run this "
                             "network on the lava backend")
        if len(incoming) != 1 or incoming[0].source != source:
            srcs = [s.source for s in incoming]
            what = (f"a residual join: it adds {srcs}" if len(srcs) > 1
                    else f"fed by {srcs}, not by the layer before ({source!r})")
            raise DaLifError(f"netx export: population {pop.name} is {what}; lava-dl netx "
                             "0.6.0 builds a chain only (each block has one input; its "
                             "'concat', 'average' and 'pool' layers raise NotImplementedError), "
                             "so skips and residual joins cannot be written: export a chain "
                             "model, or run this one on the lava backend")
        layers.append((incoming[0], pop))
        source = pop.name
    for _, pop in layers:  # (after the chain: its refusal says more)
        if not pop.plain:
            raise DaLifError(f"netx export: population {pop.name} fires by spike rule "
                             f"{pop.spike_rule!r}, reset {pop.reset!r}, multi_spike="
                             f"{pop.multi_spike}, bias into {pop.bias_into}; netx's CUBA "
                             "neuron fires on '>' with a reset to 0, one spike, and adds its "
                             "bias to v: quantise with --netx, or run this program on the "
                             "lava backend (our population process)")
    if source != program.readout.population or len(program.synapses) != len(layers):
        raise DaLifError("netx export: the readout must be the chain's last layer and every "
                         "synapse part of the chain")
    return layers


def _netx_weights(syn: Synapse) -> np.ndarray:
    w = effective_weights(syn.weights, syn.weight_bits, syn.sign_mode)
    e = syn.weight_exp
    if syn.kind == "conv":
        if e != 0:
            raise DaLifError(f"netx export: conv synapse {syn.name} has weight_exp {e}; netx's "
                             "Conv has no weight exponent: quantise with weight_exp 0")
        return w
    scaled = w << e if e >= 0 else w >> -e
    if e < 0 and not np.array_equal(scaled << -e, w):
        raise DaLifError(f"netx export: dense synapse {syn.name}: weights * 2^{e} are not "
                         "integers; netx applies integer weights exactly and cannot floor the "
                         "sum like weight_exp does")
    lo, hi = NETX_DENSE_RANGE
    if scaled.size and (scaled.min() < lo or scaled.max() > hi):
        raise DaLifError(f"netx export: dense synapse {syn.name}: weights * 2^{e} span "
                         f"[{scaled.min()}, {scaled.max()}], netx keeps [{lo}, {hi}] only")
    return scaled


def _netx_bias(pop: Population) -> np.ndarray:
    b = effective_bias(pop.bias_mant, pop.bias_exp)
    if np.any(b % (1 << NETX_BIAS_EXP)):
        raise DaLifError(f"netx export: population {pop.name}: bias (mantissa << {pop.bias_exp})"
                         f" is not a multiple of 64; netx's CUBA neuron fixes bias_exp = 6 and "
                         "cannot express it exactly")
    m = b >> NETX_BIAS_EXP
    if m.size and np.abs(m).max() > BIAS_MANT_MAX:
        raise DaLifError(f"netx export: population {pop.name}: bias / 64 reaches "
                         f"{int(np.abs(m).max())}; with netx's fixed bias_exp = 6 the 13-bit "
                         f"mantissa holds |bias| <= {BIAS_MANT_MAX} * 64 only")
    return m


def _neuron(pop: Population) -> dict[str, Any]:
    """The CUBA neuron group. One decay per layer is written as a scalar; per-channel decays
    as a per-neuron ``vDecay`` array in netx's order (dense: (N,); conv: (W, H, C)), which
    netx passes to Lava's LIF as its per-neuron ``dv`` (measured exact, tests/test_netx.py)."""
    if not 0 <= pop.du <= DECAY_MAX:
        raise DaLifError(f"netx export: population {pop.name}: du {pop.du} outside 0..4095")
    if pop.dv.size == 1:
        dv: Any = int(pop.dv[0])
    else:
        full = np.broadcast_to(pop.dv.reshape(-1, *([1] * (len(pop.shape) - 1))), pop.shape)
        dv = np.ascontiguousarray(full.transpose(*range(len(pop.shape))[::-1]), np.int64)
    return {"type": "CUBA", "iDecay": int(pop.du) + 1, "vDecay": dv,
            "vThMant": int(pop.vth), "refDelay": 1, "gradedSpike": False}


def check_netx(program: FixedProgram) -> list[dict[str, Any]]:
    """The netx layer records of ``program`` (see the module docstring), or a DaLifError
    naming what netx cannot express."""
    layers = _chain(program)
    first = layers[0][0]
    if program.input.encoding is ANALOG and not first.graded:
        raise DaLifError("netx export: analog input into a binary synapse is not expressible "
                         "in netx (it sends the input as given)")
    records: list[dict[str, Any]] = [{"type": "input", "shape": list(program.input.shape)}]
    for syn, pop in layers:
        bias = _netx_bias(pop)
        if syn.kind == "dense" and len(syn.input_shape) > 1:
            records.append({"type": "flatten"})
        rec: dict[str, Any] = {"type": syn.kind, "shape": list(pop.shape),
                               "weight": _netx_weights(syn), "neuron": _neuron(pop)}
        if syn.kind == "conv":
            flat = bias.reshape(bias.shape[0], -1)
            rec.update(stride=list(syn.stride), padding=list(syn.padding), dilation=[1, 1],
                       groups=int(syn.groups))
            # netx takes a channel-wise bias, or a full one in its (W, H, C) order
            bias = flat[:, 0] if np.all(flat == flat[:, :1]) else bias.transpose(2, 1, 0)
        if np.any(bias):
            rec["bias"] = bias
        records.append(rec)
    return records


def netx_load_args(program: FixedProgram) -> dict[str, int]:
    """Keyword arguments for ``netx.hdf5.Network`` that make it step-exact with the emulator,
    plus ``steps``: how many Lava steps one sample needs (timesteps + layers)."""
    n = len(program.populations)
    graded = program.input.encoding is ANALOG
    return {"input_message_bits": 8 if graded else 0, "reset_interval": program.timesteps + n + 1,
            "reset_offset": 1, "steps": program.timesteps + n}


def write_netx(program: FixedProgram, path: str | os.PathLike) -> dict[str, Any]:
    """Write ``program`` as a netx HDF5 file (atomically); returns a summary."""
    import h5py

    records = check_netx(program)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["producer"] = "dalif-deploy"
        for k, v in netx_load_args(program).items():
            f.attrs[k] = v
        f.attrs["timesteps"] = int(program.timesteps)
        group = f.create_group("layer")
        for i, rec in enumerate(records):
            g = group.create_group(str(i))
            for key, value in rec.items():
                if key == "neuron":
                    n = g.create_group("neuron")
                    for nk, nv in value.items():
                        n.create_dataset(nk, data=np.bytes_(nv) if isinstance(nv, str) else nv)
                elif key == "type":
                    g.create_dataset("type", data=np.bytes_(value))
                else:
                    g.create_dataset(key, data=np.asarray(value))
    return {"path": str(path), "layers": len(records) - 1 - sum(r["type"] == "flatten"
                                                                for r in records),
            **netx_load_args(program)}


def export_netx(ckpt_path: str | os.PathLike, out_path: str | os.PathLike, *,
                model: str | None = None, timesteps: int | None = None, weight_bits: int = 8,
                calibration: Any = None, run: Any = None,
                program_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``export --netx``: checkpoint -> NIR -> a netx-exact program -> netx HDF5 at
    ``out_path`` (and the same program as ``.fxp`` at ``program_path``).

    The program is quantised with ``quantize_graph(..., netx=True)`` (biases on netx's fixed
    64-unit grid, integer dense weights), so what netx loads is exactly the program the
    emulator and the lava backend run; ``calibration``/``run``/``weight_bits`` are
    :func:`~dalif_deploy.converters.nir_to_fixed.quantize_graph`'s. Refused (nothing
    written): what :func:`check_netx` refuses.
    """
    from dalif_deploy.fixedpoint.fxp_format import save_program

    from .nir_to_fixed import quantize_graph
    from .torch_to_nir import checkpoint_graph

    graph, summary = checkpoint_graph(ckpt_path, model, timesteps)
    program = quantize_graph(graph, weight_bits=weight_bits, calibration=calibration, run=run,
                             netx=True)
    check_netx(program)
    if program_path is not None:
        save_program(program, program_path)
    written = write_netx(program, out_path)
    return {**summary, **written, "netx": str(out_path),
            "program": None if program_path is None else str(program_path),
            "quant_table": program.quant_table, "input_scale": program.input.scale}
