"""Quantisation-aware fine-tuning (``dalif-deploy finetune``): train through the program itself.

The forward pass is the program the quantiser makes of the current weights, run by the
bit-accurate emulator. At every optimiser step:

1. the model (eval mode: batch-norm runs on its running statistics, which the export folds and
   which are not updated) is exported to NIR and quantised by
   :func:`~dalif_deploy.converters.nir_to_fixed.quantize_graph` exactly as ``verify
   --weight-bits N`` quantises it: same ``weight_bits``, same calibration set (the first
   :data:`~dalif_deploy.verification.pipeline.CALIBRATION_SAMPLES` training samples), hence the
   same input
   scale, per-population scales, thresholds, decays, rounded weight mantissas and exponents,
   bias mantissas, and Lava's effective weights (``weight_bits``/sign-mode flooring, ``<< 6``);
2. the batch runs on :func:`~dalif_deploy.targets.emulator.emulate` with every population's
   spikes, v and u recorded: those integers are the forward values;
3. straight-through gradients come from the float neuron expression ``V = beta H + alpha X``
   (DA-LIF's; PLIF and LIF are its special cases, through their parameters' ``gains``)
   evaluated in the program's integer units on the program's own spikes (docs/DESIGN.md
   sections 2 and 4). For
   population k with scale ``lam`` (float volts -> integer v), at step t::

       g[t]   = beta * h[t-1] + lam * alpha * X[t]      X: the model's own conv/BN/pool/+ on the
                                                         fixed-point spikes of its sources
                                                         (+ W_rec s[t-1] in a recurrent layer)
       pre[t] = pre_int[t] + (g[t] - detach(g[t]))      forward: Lava's v before the threshold,
                                                         clip(rtz(v (4096-dv)/4096) + u + bias)
       s[t]   = s_int[t] + (sg[t] - detach(sg[t]))      sg = the layer's surrogate spike of
                                                         pre[t]/lam - v_th; forward: v > vth<<6
       h[t]   = pre[t] * (1 - s[t])                     forward: v after the reset

   and the readout ``logits = (out_int + lam_out sum_t y[t] - detach(...)) / (T lam_out)``
   with ``y[t]`` the model's readout on the fixed spikes; ``out_int`` is the integer readout.
   Rounding is straight-through (``d round(x)/dx = 1``); the scale choice is a constant of the
   step (no gradient flows through ``lam``, exponents or the input scale).

So the values the loss sees are the emulator's integers, bit for bit, and the program quantised
from the saved checkpoint is the program of the last weights. What is held fixed: nothing
between steps (each step re-quantises from the current weights and the fixed calibration set;
the input scale depends only on that data, the calibration rounds' scale halving on the weights
and that data); within a step the quantiser's choices are constants. Deterministic for a seed
(:func:`~dalif_deploy.float_model.training.deterministic`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.fixedpoint.program import FixedProgram

METHOD = "qat-ste-emulator"  # the finetune record's method: forward = emulator integers, STE


@dataclass(frozen=True)
class FinetuneOptions:
    """Settings of a fine-tuning run (the CLI flags of ``finetune``)."""

    weight_bits: int
    epochs: int = 10
    lr: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        from dalif_deploy.base.resources import BATCH_MAX
        from dalif_deploy.base.schema import integer, number
        from dalif_deploy.converters.nir_to_fixed import check_weight_bits

        object.__setattr__(self, "weight_bits", check_weight_bits(self.weight_bits))
        integer(self.epochs, "--epochs", 1, 10**6)
        integer(self.batch_size, "--batch-size", 1, BATCH_MAX)
        integer(self.seed, "--seed", 0, 2**32 - 1)
        number(self.lr, "--lr", 0.0, lo_open=True)


def quantize_model(model: nn.Module, data: Any, calibration: np.ndarray, timesteps: int,
                   weight_bits: int) -> FixedProgram:
    """The program ``verify --weight-bits`` builds from ``model``: exported to NIR (in memory;
    the file round trip verify makes is lossless) for ``data``'s input, quantised with
    ``calibration`` through the emulator."""
    from dalif_deploy.converters.nir_to_fixed import quantize_graph
    from dalif_deploy.converters.torch_to_nir import export_nir
    from dalif_deploy.targets.emulator import emulate

    graph = export_nir(model, data.input_shape, int(timesteps), encoding=data.encoding,
                       normalization=data.normalization)
    return quantize_graph(graph, weight_bits, calibration=calibration,
                          run=functools.partial(emulate, check=False))


@dataclass
class QatRun:
    """One fine-tuning forward pass: ``logits`` (differentiable, forward value = the integer
    readout / (T * scale)), the integer ``outputs`` and ``predictions`` of the emulator, and
    per population the differentiable spikes ``[T, N, *shape]`` (forward value = the
    emulator's spikes)."""

    logits: torch.Tensor
    outputs: np.ndarray
    predictions: np.ndarray
    spikes: dict[str, torch.Tensor]


def _gains(params: Any) -> tuple[Any, Any]:
    """``(alpha, beta)`` of ``V = beta * H + alpha * X`` for a neuron layer's effective
    parameters, as each neuron's parameters state them (``gains``; the quantiser reads the
    same from their NIR LIF nodes); differentiable where the neuron learns them."""
    gains = getattr(params, "gains", None)
    if gains is None:
        raise DaLifError(f"finetune: neuron parameters {type(params).__name__} are not a LIF "
                         "form (V = beta*H + alpha*X): give them a `gains` property returning "
                         "(alpha, beta)")
    return gains


def _layer_populations(model: nn.Module, program: FixedProgram) -> dict[str, Any]:
    """Neuron layer name -> its population; every spiking population must have one."""
    from dalif_deploy.neurons import neuron_layers

    found = {}
    for name in neuron_layers(model):
        pops = [p for p in program.populations if p.name == name or name in p.provenance]
        if len(pops) != 1:
            raise DaLifError(f"finetune: neuron layer {name!r} maps to {len(pops)} populations "
                             "of the program; fine-tuning needs one population per layer")
        found[name] = pops[0]
    spiking = {p.name for p in program.populations} - {program.readout.population}
    missing = spiking - {p.name for p in found.values()}
    if missing:
        raise DaLifError(f"finetune: populations {sorted(missing)} come from no neuron layer")
    return found


def _integer_trace(rec: Any, pop: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pre, spikes)`` of one population, float64 ``[T, N, *shape]``: Lava's v before the
    threshold, ``clip(rtz(v[t-1] (4096 - dv) / 4096) + u[t] + bias)``, rebuilt from the
    emulator's recorded v (after reset) and u, and its spikes. Checked against the recording:
    ``spikes == pre > vth << 6`` (``>=`` for that spike rule) and ``v == pre * (1 - spikes)``."""
    from dalif_deploy.fixedpoint.arithmetic import decay_rtz, effective_bias
    from dalif_deploy.fixedpoint.limits import DECAY_MAX, V_MAX

    if pop.du < DECAY_MAX or pop.bias_into == "u":
        raise DaLifError(f"finetune: population {pop.name} keeps current memory (du={pop.du}"
                         f", bias into {pop.bias_into}); LIF layers have du = 4095 and their "
                         "bias in v")
    if pop.reset != "zero" or pop.multi_spike:
        raise DaLifError(f"finetune: population {pop.name} resets by {pop.reset!r}"
                         + (" with spike counts" if pop.multi_spike else "")
                         + "; fine-tuning follows the reset to 0 only: train with --reset zero")
    v = torch.from_numpy(rec.v[pop.name]).double()
    u = torch.from_numpy(rec.u[pop.name]).double()
    s = torch.from_numpy(rec.spikes[pop.name]).double()
    dv = torch.as_tensor(pop.dv, dtype=torch.float64)
    dv = dv.view(-1, *([1] * (len(pop.shape) - 1))) if dv.numel() > 1 else dv.reshape(())
    bias = torch.as_tensor(effective_bias(pop.bias_mant, pop.bias_exp), dtype=torch.float64)
    prev = torch.cat([torch.zeros_like(v[:1]), v[:-1]])
    pre = (decay_rtz(prev, dv) + u + bias).clamp(-V_MAX, V_MAX)
    theta = pop.vth << 6
    fired = (pre >= theta if pop.spike_rule == ">=" else pre > theta).double()
    if not (torch.equal(fired, s) and torch.equal(pre * (1 - fired), v)):
        raise DaLifError(f"finetune: population {pop.name}: the recorded emulator trace does "
                         "not follow Lava's LIF step (internal error; please report it)")
    return pre, s


@contextmanager
def _neuron_forwards(model: nn.Module, forwards: dict[str, Callable]) -> Iterator[None]:
    """Within the block, each named neuron layer's single-step call runs ``forwards[name]``."""
    from dalif_deploy.neurons import neuron_layers

    layers = neuron_layers(model)
    try:
        for name, fn in forwards.items():
            layers[name].forward = fn  # an instance attribute shadows the class's forward
        yield
    finally:
        for name in forwards:
            layers[name].__dict__.pop("forward", None)


def ste_step(h: torch.Tensor | None, x: torch.Tensor, pre_int: torch.Tensor,
             s_int: torch.Tensor, lam: float, params: Any
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One straight-through neuron step in integer v units: ``(h, x) -> (s, h')``::

        g   = beta * h + lam * alpha * x          (h = None: g = lam * alpha * x)
        pre = pre_int + (g - detach(g))           forward value: pre_int, gradient: g's
        s   = s_int + (sg - detach(sg))           sg = surrogate spike of pre / lam - v_th
        h'  = pre * (1 - s)                       forward value: Lava's v after the reset

    ``pre_int``/``s_int``: Lava's v before the threshold and its spikes at this step (float64);
    ``alpha``, ``beta``, ``v_th`` and the surrogate come from the layer's ``params``."""
    from dalif_deploy.neurons.protocol import per_channel, spike

    def gain(d: Any) -> torch.Tensor:
        return per_channel(torch.as_tensor(d, dtype=torch.float64), x, "neuron").double()

    alpha, beta = _gains(params)
    g = lam * gain(alpha) * x.double()
    if h is not None:
        g = g + gain(beta) * h
    pre = pre_int + (g - g.detach())
    sg = spike(pre / lam - float(params.v_th), params.surrogate, params.surrogate_width)
    s = s_int + (sg - sg.detach())
    return s, pre * (1 - s)


def qat_forward(model: nn.Module, program: FixedProgram, x: np.ndarray, encoding: str
                ) -> QatRun:
    """The fine-tuning forward pass of ``model`` on samples ``x`` (module docstring): forward
    values are ``program``'s integers as the emulator computes them; gradients reach the
    model's parameters straight through. ``program`` is :func:`quantize_model` of ``model``."""
    from dalif_deploy.base.encoding import ANALOG, Encoding
    from dalif_deploy.targets.emulator import emulate, encode_input

    enc = Encoding.from_name(encoding)
    T = int(program.timesteps)
    layers = _layer_populations(model, program)
    rec = emulate(program, x, record=True, batch_size=max(len(x), 1), check=False)
    traces = {name: _integer_trace(rec, pop) for name, pop in layers.items()}
    frames = encode_input(program, x)
    if enc is ANALOG:  # the float path sees the input the program sees: round(x * s) / s
        frames = frames[:, :1] / program.input.scale
    inputs = torch.from_numpy(np.ascontiguousarray(frames, np.float32))
    state: dict[str, torch.Tensor | None] = dict.fromkeys(layers)
    spikes: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    step = [0]

    def neuron(name: str, m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        lam = float(layers[name].scale)
        pre_int, s_int = traces[name]

        def forward(xf: torch.Tensor) -> torch.Tensor:
            t = step[0]
            if m.w_rec is not None and spikes[name]:  # a recurrent layer: X + W_rec S[t-1]
                xf = xf + spikes[name][-1].to(xf.dtype) @ m.w_rec.T
            s, state[name] = ste_step(state[name], xf, pre_int[t], s_int[t], lam, m.params())
            spikes[name].append(s)
            return s.to(xf.dtype)

        return forward

    from dalif_deploy.neurons import neuron_layers

    mods = neuron_layers(model)
    total = None
    with _neuron_forwards(model, {n: neuron(n, mods[n]) for n in layers}):
        for t in range(T):
            step[0] = t
            y = model(inputs[:, 0 if enc is ANALOG else t]).double()
            total = y if total is None else total + y
    lam_out = float(program.readout.scale)
    out_int = torch.from_numpy(rec.outputs).double()
    g = lam_out * total
    logits = (out_int + (g - g.detach())) / (T * lam_out)
    return QatRun(logits, rec.outputs, rec.predictions,
                  {layers[n].name: torch.stack(v) for n, v in spikes.items()})


def finetune(model: nn.Module, train: Any, calibration: np.ndarray, timesteps: int,
             options: FinetuneOptions) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Fine-tune ``model`` in place on ``train`` (a Dataset) through its ``weight_bits``-bit
    program (module docstring); returns ``(model in eval mode, history)`` with one row per
    epoch: mean loss and the fixed-point training accuracy of the batches as trained."""
    from dalif_deploy.float_model.training import batch_indices, deterministic

    opt = options
    rng = np.random.default_rng(opt.seed)
    n_batches = len(batch_indices(len(train), opt.batch_size))
    history = []
    model.eval()  # batch-norm on its running statistics, as the export folds them
    with deterministic(opt.seed):
        params = [p for p in model.parameters() if p.requires_grad]
        optim = torch.optim.Adam(params, lr=opt.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=opt.epochs * n_batches)
        loss_fn = nn.CrossEntropyLoss()
        bar = tqdm(total=opt.epochs * n_batches, desc=f"finetune {opt.weight_bits}-bit",
                   unit="batch", disable=not opt.progress)
        for epoch in range(opt.epochs):
            losses, correct = [], 0
            for b in batch_indices(len(train), opt.batch_size, rng.permutation(len(train))):
                program = quantize_model(model, train, calibration, timesteps, opt.weight_bits)
                run = qat_forward(model, program, train.x[b], train.encoding)
                loss = loss_fn(run.logits, torch.from_numpy(train.y[b]))
                optim.zero_grad()
                loss.backward()
                optim.step()
                sched.step()
                if not np.isfinite(loss.item()):
                    bar.close()
                    raise DaLifError(f"fine-tuning diverged (loss {loss.item()} in epoch "
                                     f"{epoch + 1}); lower --lr")
                losses.append(loss.item())
                correct += int((run.predictions == train.y[b]).sum())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                            "fixed_train_accuracy": correct / len(train)})
        bar.close()
    return model.eval(), history


def fixed_accuracy(model: nn.Module, data: Any, calibration: np.ndarray, timesteps: int,
                   weight_bits: int) -> float:
    """Accuracy of ``model``'s ``weight_bits``-bit program on ``data`` (emulator)."""
    from dalif_deploy.targets.emulator import emulate

    program = quantize_model(model, data, calibration, timesteps, weight_bits)
    return float((emulate(program, data.x).predictions == data.y).mean())


def finetune_checkpoint(checkpoint: str | Path, out: str | Path, options: FinetuneOptions, *,
                        dataset: str | None = None, data_dir: str | None = None
                        ) -> dict[str, Any]:
    """Fine-tune ``checkpoint`` for ``options.weight_bits``-bit weights and write the result to
    ``out``: an ordinary checkpoint whose ``finetune`` record says how it was made (weight
    bits, epochs, lr, batch size, seed, calibration samples, the source file and its sha256).
    Returns a summary: float and fixed-point test accuracy before and after, the history."""
    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.float_model.checkpoint import save_checkpoint
    from dalif_deploy.float_model.training import evaluate
    from dalif_deploy.verification.pipeline import load_checkpoint_data

    t0 = time.perf_counter()
    model, ckpt, test, calib = load_checkpoint_data(checkpoint, dataset, data_dir)
    T = ckpt.timesteps
    train = load_dataset(dataset or ckpt.dataset.get("name", "digits"), "train", data_dir,
                         timesteps=T, classes=ckpt.num_classes)
    cal = calib.x  # verify's calibration set: the program trained is the program verified
    bits = options.weight_bits
    before = {"float": evaluate(model, test, T),
              "fixed": fixed_accuracy(model, test, cal, T, bits)}
    model, history = finetune(model, train, cal, T, options)
    after = {"float": evaluate(model, test, T),
             "fixed": fixed_accuracy(model, test, cal, T, bits)}
    record = {"method": METHOD, "weight_bits": bits, "epochs": options.epochs,
              "lr": options.lr, "batch_size": options.batch_size, "seed": options.seed,
              "source_checkpoint": Path(checkpoint).name, "source_sha256": ckpt.sha256,
              "calibration_samples": len(cal), "dataset": test.name,
              "float_test_accuracy_before": before["float"],
              "fixed_test_accuracy_before": before["fixed"],
              "fixed_test_accuracy_after": after["fixed"]}
    metrics = {"train_accuracy": evaluate(model, train, T), "test_accuracy": after["float"],
               "fixed_test_accuracy": after["fixed"], "fixed_weight_bits": bits,
               "final_loss": history[-1]["loss"], "epochs": options.epochs,
               "batch_size": options.batch_size, "lr": options.lr}
    save_checkpoint(out, model, ckpt.config, T, ckpt.dataset, metrics, seed=options.seed,
                    finetune=record)
    return {"checkpoint": str(checkpoint), "out": str(out), "model": ckpt.model_name,
            "dataset": test.name, "samples": len(test), "weight_bits": bits,
            "epochs": options.epochs, "lr": options.lr, "batch_size": options.batch_size,
            "seed": options.seed, "float_accuracy_before": before["float"],
            "fixed_accuracy_before": before["fixed"], "float_accuracy_after": after["float"],
            "fixed_accuracy_after": after["fixed"], "history": history,
            "seconds": round(time.perf_counter() - t0, 2)}
