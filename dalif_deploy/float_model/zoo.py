"""Model zoo and the time-stepping runner.

A network here is any ``nn.Module`` whose ``forward(x)`` computes ONE time step, built from
supported layers (Conv2d, BatchNorm2d/1d, Linear, AvgPool2d, Flatten, ``+`` for residual fan-in)
and neuron layers called statefully (``s = self.lif(x)``): DA-LIF
(:class:`~dalif_deploy.neurons.dalif.DALIF`) or any registered model (PLIF, LIF). The last layer
is a non-spiking ``nn.Linear`` readout; :func:`run_model` averages it over T.

Zoo models are built from a plain config dict (stored in checkpoints), see :func:`build_model`.
Its ``neuron`` key names the neuron model of every spiking layer (``dalif``, the default, also
for configs written before the key existed; ``plif``; ``lif``); each model takes its own keys
(its ``settings`` in :data:`dalif_deploy.neurons.SPECS`) and a key of another model is refused,
never ignored; an unknown key is refused too.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from dalif_deploy.base.encoding import ANALOG, Encoding
from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.geometry import conv_output_size
from dalif_deploy.base.resources import INPUT_ELEMENTS_MAX, WIDTH_MAX, check_memory, format_bytes
from dalif_deploy.base.schema import Check, integer, shape, text, validate
from dalif_deploy.neurons import neuron_for_key, neuron_keys, neuron_settings, spec_for_key
from dalif_deploy.neurons.dalif import DALIF
from dalif_deploy.neurons.network import network_step, neuron_layers, reset_states
from dalif_deploy.neurons.protocol import NeuronModule

from .unroll import unroll


def _neuron(cfg: dict[str, Any], channels: int) -> NeuronModule:
    """The config's neuron layer (``cfg["neuron"]``) with its own config keys."""
    key = cfg.get("neuron", "dalif")
    kw = {k: cfg[k] for k in spec_for_key(key).settings if k in cfg}
    return neuron_for_key(key).module_type(channels=channels, **kw)


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout)]


class DigitsCNN(nn.Module):
    """conv-BN-DA-LIF, conv(stride 2)-BN-DA-LIF, flatten, linear readout (8x8 input)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        cin, w = cfg["in_channels"], cfg.get("width", 16)
        h = cfg["input_shape"][1]
        self.conv1, self.bn1 = _conv_bn(cin, w)
        self.lif1 = _neuron(cfg, w)
        self.conv2, self.bn2 = _conv_bn(w, 2 * w, stride=2)
        self.lif2 = _neuron(cfg, 2 * w)
        self.flatten = nn.Flatten()
        side = (h + 1) // 2
        self.fc = nn.Linear(2 * w * side * side, cfg["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lif1(self.bn1(self.conv1(x)))
        x = self.lif2(self.bn2(self.conv2(x)))
        return self.fc(self.flatten(x))


class DigitsRNN(nn.Module):
    """The 8x8 digits read as a sequence (``digits-rows``: step t is row t, T = 8): flatten,
    linear, a RECURRENT neuron layer (``X + W_rec S[t-1]``), linear readout."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        w = cfg.get("width", 64)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(math.prod(cfg["input_shape"]), w)
        self.lif1 = _neuron(cfg, w)
        self.lif1.make_recurrent(w, std=0.5 / w ** 0.5)
        self.fc = nn.Linear(w, cfg["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lif1(self.fc1(self.flatten(x))))


class BasicBlock(nn.Module):
    """Spiking residual block: conv-BN-LIF-conv-BN (+ shortcut) -> LIF.

    The shortcut is the identity, or a strided 1x1 conv + BN when the shape changes.
    """

    def __init__(self, cfg: dict[str, Any], cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, stride=stride)
        self.lif1 = _neuron(cfg, cout)
        self.conv2, self.bn2 = _conv_bn(cout, cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, k=1, stride=stride))
        else:
            self.shortcut = nn.Identity()
        self.lif2 = _neuron(cfg, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lif1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y)) + self.shortcut(x)
        return self.lif2(y)


class SpikingResNet(nn.Module):
    """Stem conv-BN-LIF, residual stages, global average pooling, flatten, linear readout."""

    def __init__(self, cfg: dict[str, Any], stages: list[tuple[int, int, int]]) -> None:
        super().__init__()
        cin, h = cfg["in_channels"], cfg["input_shape"][1]
        w0 = stages[0][0]
        self.conv1, self.bn1 = _conv_bn(cin, w0)
        self.lif1 = _neuron(cfg, w0)
        blocks, c = [], w0
        for width, n, stride in stages:
            for i in range(n):
                blocks.append(BasicBlock(cfg, c, width, stride if i == 0 else 1))
                c = width
                if i == 0:
                    h = conv_output_size(h, 3, stride, 3 // 2)  # the block's first 3x3 conv
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AvgPool2d(h)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, cfg["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lif1(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


class SpikingVGG(nn.Module):
    """VGG with conv-BN-DA-LIF layers and 2x2 average pooling ('A'), flatten, linear readout."""

    def __init__(self, cfg: dict[str, Any], plan: list[int | str]) -> None:
        super().__init__()
        c, h = cfg["in_channels"], cfg["input_shape"][1]
        layers: list[nn.Module] = []
        for item in plan:
            if item == "A":
                layers.append(nn.AvgPool2d(2))
                h //= 2
            else:
                layers += [*_conv_bn(c, int(item)), _neuron(cfg, int(item))]
                c = int(item)
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c * h * h, cfg["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.features(x)))


def _scaled(widths: list[int | str], width: int, base: int) -> list[int | str]:
    return [w if w == "A" else max(1, int(w) * width // base) for w in widths]


ZOO_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits-cnn": {"input_shape": [1, 8, 8], "num_classes": 10, "width": 16},
    "digits-resnet": {"input_shape": [1, 8, 8], "num_classes": 10, "width": 16},
    "digits-rnn": {"input_shape": [3, 1, 8], "num_classes": 10, "width": 128},
    "resnet19": {"input_shape": [3, 32, 32], "num_classes": 10, "width": 128},
    "vgg11": {"input_shape": [3, 32, 32], "num_classes": 10, "width": 64},
}


#: the fields of a zoo model config that are the model's, not its neuron's
MODEL_SCHEMA: dict[str, tuple[Check, bool]] = {
    "name": (lambda v, w: text(v, w, tuple(sorted(ZOO_DEFAULTS))), True),
    "neuron": (lambda v, w: text(v, w, neuron_keys()), False),
    "width": (lambda v, w: integer(v, w, 1, WIDTH_MAX), False),
    "input_shape": (lambda v, w: list(shape(v, w, 3, INPUT_ELEMENTS_MAX)), False),
    "num_classes": (lambda v, w: integer(v, w, 1, 2**16), False),
    "in_channels": (lambda v, w: integer(v, w, 1), False),
}


def config_schema() -> dict[str, tuple[Check, bool]]:
    """Every field of a zoo model config (checkpoints store it; ``train`` builds it): the
    model's and every registered neuron model's settings (as each declares it)."""
    return {**MODEL_SCHEMA, **{k: (s.check, False) for k, (s, _) in neuron_settings().items()}}


def validate_config(config: Any, where: str = "model config") -> dict[str, Any]:
    """``config`` checked against :func:`config_schema` (types, finiteness, ranges): an unknown
    field, or one of the wrong type or out of range, is a DaLifError naming ``where.field``."""
    return validate(config, config_schema(), where)


def default_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full config dict of zoo model ``name`` with ``overrides`` applied."""
    if name not in ZOO_DEFAULTS:
        raise DaLifError(f"unknown model {name!r:.80}; the zoo has {sorted(ZOO_DEFAULTS)}")
    where = f"model {name!r} config"
    key = validate_config({"name": name, "neuron": overrides.get("neuron", "dalif")},
                          where)["neuron"]
    spec = spec_for_key(key)
    cfg: dict[str, Any] = {"name": name, "neuron": key, **spec.defaults()}
    cfg.update(copy.deepcopy(ZOO_DEFAULTS[name]))
    cfg.update(overrides)
    cfg = validate_config(cfg, where)
    foreign = sorted(set(neuron_settings()) - set(spec.settings) & set(cfg))
    if foreign:
        raise DaLifError(f"{where}: {', '.join(foreign)} not a setting of neuron {key!r} (its "
                         f"settings: {', '.join(spec.settings)}); drop it or choose "
                         "another --neuron")
    cfg["input_shape"] = list(cfg["input_shape"])
    cfg["in_channels"] = cfg["input_shape"][0]
    return cfg


def _construct(cfg: dict[str, Any]) -> nn.Module:
    name, w = cfg["name"], int(cfg["width"])
    if name == "digits-cnn":
        return DigitsCNN(cfg)
    if name == "digits-rnn":
        return DigitsRNN(cfg)
    if name == "digits-resnet":
        return SpikingResNet(cfg, [(w, 1, 1), (2 * w, 1, 2)])
    if name == "resnet19":
        return SpikingResNet(cfg, [(w, 3, 1), (2 * w, 3, 2), (4 * w, 2, 2)])
    # vgg11
    plan = _scaled([64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512], w, 64)
    return SpikingVGG(cfg, plan)


def model_bytes(config: dict[str, Any]) -> int:
    """Bytes of a zoo model's parameters and buffers, counted on the meta device (nothing is
    allocated): ``sum(numel * element_size)``."""
    cfg = default_config(config["name"], **{k: v for k, v in config.items() if k != "name"})
    with torch.device("meta"):
        m = _construct(cfg)
    return sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))


def step_activation_bytes(config: dict[str, Any]) -> int:
    """Bytes every module of a zoo model outputs for ONE sample and ONE time step, counted by
    a forward pass on the meta device (nothing is allocated); 0 when the model cannot take its
    input at all (training reports that with its own message)."""
    cfg = default_config(config["name"], **{k: v for k, v in config.items() if k != "name"})
    total = 0

    def count(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    with torch.device("meta"):
        m = _construct(cfg).eval()
        hooks = [mod.register_forward_hook(count) for mod in m.modules() if mod is not m]
        try:
            with torch.no_grad():
                m(torch.zeros(1, *cfg["input_shape"]))
        except (RuntimeError, ValueError):
            return 0
        finally:
            for h in hooks:
                h.remove()
    return total


def training_bytes(config: dict[str, Any], batch_size: int, timesteps: int) -> int:
    """Estimated memory of training: parameters four times (weights, gradients, two Adam
    moments) plus every activation of a batch kept for backpropagation through T steps
    (twice: outputs and the surrogate's saved inputs)."""
    return (4 * model_bytes(config)
            + 2 * batch_size * timesteps * step_activation_bytes(config))


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a zoo model from its config dict (as stored in a checkpoint).

    Its size is counted first (:func:`model_bytes`) and refused, with the figure, when the
    machine could not hold it."""
    if not isinstance(config, dict) or "name" not in config:
        raise DaLifError("model config must be a dict with a 'name' key")
    cfg = default_config(config["name"], **{k: v for k, v in config.items() if k != "name"})
    nbytes = model_bytes(cfg)
    check_memory(nbytes, f"model {cfg['name']!r} (width {cfg['width']}, "
                 f"{format_bytes(nbytes)} of parameters)", "choose a smaller width")
    try:
        return _construct(cfg)
    except (MemoryError, RuntimeError) as e:  # the allocator gave up despite the estimate
        raise DaLifError(f"model {cfg['name']!r} (width {cfg['width']}): not enough memory to "
                         f"build it ({format_bytes(nbytes)} of parameters: "
                         f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
                         "choose a smaller width") from None


def dalif_layers(model: nn.Module) -> dict[str, DALIF]:
    """Named DA-LIF layers of ``model`` in registration order (the layers of every neuron
    model: :func:`dalif_deploy.neurons.neuron_layers`)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, DALIF)}


def run_model(
    model: nn.Module,
    x: torch.Tensor,
    timesteps: int,
    encoding: Encoding | str = ANALOG,
    record_spikes: bool = False,
    spike_dtype: torch.dtype | None = None,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run a single-step spiking network over T steps and return the readout mean over T.

    ``x`` is ``[B, C, H, W]`` for ``encoding="analog"`` (the same frame each step) or
    ``[B, T, C, H, W]`` for ``encoding="events"``. With ``record_spikes`` also returns each
    neuron layer's spikes as ``{name: [T, B, ...]}``, in ``spike_dtype`` when given (each
    step's converted as it is recorded: ``torch.uint8`` holds the 0/1 spikes exactly in a
    quarter of float32's memory), else in the model's dtype.
    """
    enc = Encoding.from_name(encoding)
    enc.check(x, timesteps)
    reset_states(model)
    spikes: dict[str, list[torch.Tensor]] = {}
    hooks = []
    if record_spikes:
        for name, m in neuron_layers(model).items():
            spikes[name] = []
            hooks.append(m.register_forward_hook(
                lambda _m, _i, out, name=name: spikes[name].append(
                    out.detach() if spike_dtype is None else out.detach().to(spike_dtype))))
    try:
        logits = unroll(network_step(model), x, timesteps, enc)
    finally:
        for h in hooks:
            h.remove()
        reset_states(model)
    if record_spikes:
        return logits, {k: torch.stack(v) for k, v in spikes.items()}
    return logits
