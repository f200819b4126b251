"""Neuron models compared after deployment: the DA-LIF paper's question, asked with the tool.

:func:`compare_neurons` trains the same zoo architecture with each neuron model (DA-LIF, PLIF,
LIF, any registered one) at each number of time steps T, for each seed, and takes every trained
model through the deployment path :func:`~dalif_deploy.verification.pipeline.verify_model` checks
(export to
NIR, 8-bit quantisation calibrated on training samples, the bit-accurate emulator). Per run it
records:

* ``float_accuracy``: the float torch model on the test samples;
* ``fixed_accuracy``: the fixed-point program in the emulator (what Loihi 2 would compute);
* ``parameters``: every learnable parameter of the model, and ``neuron_parameters``, those of
  its neuron layers (DA-LIF: alpha and beta per layer or channel; PLIF: k; LIF: none);
* ``synops``: synaptic operations per inference, from :mod:`dalif_deploy.fixedpoint.cost`'s activity
  model on the emulator's spike counts (``sum_j spikes_j * fan_out_j``, the input events
  included), and ``spikes`` per inference.

:func:`summarise` averages the runs of one (neuron, T) over the seeds (mean and sample
standard deviation); :func:`format_table` prints that table, :func:`plot_comparison` draws it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import counted, percent
from dalif_deploy.fixedpoint.limits import TIMESTEPS_MAX
from dalif_deploy.neurons import neuron_keys
from dalif_deploy.verification.pipeline import CALIBRATION_SAMPLES, VerifyOptions

#: the figures of a run that :func:`summarise` averages over seeds
FIGURES = ("float_accuracy", "fixed_accuracy", "synops", "spikes")
#: training runs one compare may start (neurons x T values x seeds; the default grid is 9):
#: a longer list is refused before anything is trained, as a typo's 20,000 runs would be
RUNS_MAX = 100


def _ints(values: Sequence[int], what: str, lo: int, hi: int) -> tuple[int, ...]:
    out = tuple(values)
    if not out:
        raise DaLifError(f"compare: give at least one {what}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise DaLifError(f"compare: each {what} must be an integer in [{lo}, {hi}], got "
                             f"{v!r:.40}")
    if len(set(out)) != len(out):
        raise DaLifError(f"compare: {what} {list(out)} repeats a value")
    return out


@dataclass(frozen=True)
class CompareOptions:
    """What :func:`compare_neurons` trains and measures (the flags of ``compare``).

    ``test_dataset``: the data set the models are evaluated on (default: ``dataset``'s test
    split; required when ``dataset`` is a user ``.npz``, which is one split). ``samples``: the
    first N test samples evaluated (None: all). ``width``: the zoo model's base width (None:
    its default)."""

    model: str = "digits-cnn"
    neurons: tuple[str, ...] = field(default_factory=neuron_keys)  # every registered model
    timesteps: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0,)
    dataset: str = "digits-events"
    test_dataset: str | None = None
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    width: int | None = None
    samples: int | None = None
    progress: bool = True
    workdir: str | Path | None = None  # where temporary NIR files go
    config: dict[str, Any] = field(default_factory=dict)  # further zoo config keys
    #: a user architecture's factory (float_model/factory.py), called with ``neuron=KEY`` and
    #: ``config``; default: the one the CLI's ``--model-code`` named
    model_code: str | None = None

    def __post_init__(self) -> None:
        keys = neuron_keys()
        if not self.neurons:
            raise DaLifError("compare: give at least one neuron")
        for n in self.neurons:
            if n not in keys:
                raise DaLifError(f"compare: unknown neuron {n!r:.40}; choose from {list(keys)}")
        if len(set(self.neurons)) != len(self.neurons):
            raise DaLifError(f"compare: neurons {list(self.neurons)} repeat a model")
        object.__setattr__(self, "timesteps", _ints(self.timesteps, "T", 1, TIMESTEPS_MAX))
        object.__setattr__(self, "seeds", _ints(self.seeds, "seed", 0, 2**32 - 1))
        if self.runs > RUNS_MAX:
            raise DaLifError(f"compare: {self.grid()} is more than the {RUNS_MAX} runs one "
                             "compare starts; split the grid over several commands (fewer "
                             "seeds or values of -T)")
        if self.samples is not None and (isinstance(self.samples, bool)
                                         or not isinstance(self.samples, int)
                                         or self.samples < 1):
            raise DaLifError(f"compare: --samples must be a positive integer, got "
                             f"{self.samples!r}")
        if "neuron" in self.config or "name" in self.config:
            raise DaLifError("compare: the model and neuron come from --model and --neurons, "
                             "not from the extra config")

    @property
    def runs(self) -> int:
        """Training runs of the grid: neurons x T values x seeds."""
        return len(self.neurons) * len(self.timesteps) * len(self.seeds)

    def grid(self) -> str:
        """``"3 neurons x 3 values of T x 1 seed = 9 training runs"``."""
        return (f"{counted(len(self.neurons), 'neuron')} x "
                f"{counted(len(self.timesteps), 'value')} of T x "
                f"{counted(len(self.seeds), 'seed')} = {counted(self.runs, 'training run')}")


def _model_code(opt: CompareOptions) -> str | None:
    from dalif_deploy.float_model.factory import named_model_code

    return opt.model_code or named_model_code()


def _test_set(opt: CompareOptions, timesteps: int) -> Any:
    from dalif_deploy.datasets.loaders import is_dataset_file, load_dataset

    name = opt.test_dataset
    if name is None:
        if is_dataset_file(opt.dataset):
            raise DaLifError(f"compare: {opt.dataset} is a user .npz, which holds one split; "
                             "give the test samples with --test-dataset")
        name = opt.dataset
    return load_dataset(name, "test", opt.data_dir, timesteps).head(opt.samples)


def _run(opt: CompareOptions, neuron: str, timesteps: int, seed: int, test: Any,
         calibration: Any) -> dict[str, Any]:
    """One neuron at one T and seed: train, then float and fixed point on ``test``."""
    from dalif_deploy.float_model.training import train
    from dalif_deploy.float_model.zoo import default_config
    from dalif_deploy.neurons import neuron_layers
    from dalif_deploy.verification.pipeline import verify_model

    over = dict(opt.config)
    if opt.width is not None:
        over["width"] = opt.width
    t0 = time.perf_counter()
    code = _model_code(opt)
    if code:  # the user's architecture, built seeded with this neuron
        from dalif_deploy.float_model.factory import build
        from dalif_deploy.float_model.training import deterministic

        with deterministic(seed):
            config: Any = build(code, {**over, "neuron": neuron})
    else:
        config = default_config(opt.model, neuron=neuron, input_shape=list(test.input_shape),
                                num_classes=test.num_classes, **over)
    model, metrics = train(config, opt.dataset, opt.epochs, timesteps, opt.batch_size, opt.lr,
                           seed, opt.data_dir, progress=False)
    vopt = VerifyOptions(lava_samples=0, progress=False, workdir=opt.workdir)
    name = code.rpartition(":")[2] if code else opt.model
    result, _ = verify_model(model, test, calibration, timesteps, name=name,
                             options=vopt)
    layers = neuron_layers(model)
    return {
        "neuron": neuron, "timesteps": timesteps, "seed": seed,
        "float_accuracy": result["float_accuracy"],
        "fixed_accuracy": result["fixed_accuracy"],
        "prediction_agreement": result["prediction_agreement"],
        "train_accuracy": metrics["train_accuracy"],
        "parameters": sum(p.numel() for p in model.parameters()),
        # the neurons' own (decays); a recurrent layer's W_rec is a synapse, counted above
        "neuron_parameters": sum(p.numel() for m in layers.values()
                                 for k, p in m.named_parameters() if k != "w_rec"),
        "neuron_layers": len(layers),
        "synops": result["activity"]["synops"],
        "spikes": result["activity"]["spikes"],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def compare_neurons(options: CompareOptions | None = None,
                    announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``options.model`` with every neuron at every T for every seed and measure each
    after deployment (module docstring). Returns ``{"settings", "runs", "table"}``: the
    options, one row per run, and :func:`summarise`'s rows. ``announce`` gets one line saying
    the size of the work, once the inputs are checked and before any training."""
    from dalif_deploy.datasets.loaders import load_dataset

    opt = options or CompareOptions()
    runs: list[dict[str, Any]] = []
    total = len(opt.neurons) * len(opt.timesteps) * len(opt.seeds)
    from dalif_deploy.float_model.zoo import default_config

    for neuron in opt.neurons:  # a config no neuron can take fails before any training
        if not _model_code(opt):
            default_config(opt.model, neuron=neuron, **opt.config)
    first = _test_set(opt, opt.timesteps[0])  # bad data set names fail before the bar
    if announce is not None:
        announce(f"compare: {opt.grid()} of {counted(opt.epochs, 'epoch')} each")
    with tqdm(total=total, desc="compare", unit="run", disable=not opt.progress) as bar:
        for t in opt.timesteps:
            test = first if t == opt.timesteps[0] else _test_set(opt, t)
            calibration = load_dataset(opt.dataset, "train", opt.data_dir, t).head(
                CALIBRATION_SAMPLES).x
            for neuron in opt.neurons:
                for seed in opt.seeds:
                    bar.set_postfix(neuron=neuron, T=t, seed=seed)
                    runs.append(_run(opt, neuron, t, seed, test, calibration))
                    bar.update(1)
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opt).items()
                if k not in ("progress", "workdir")}
    settings["test_samples"] = len(test)
    return {"settings": settings, "runs": runs, "table": summarise(runs)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (neuron, T), in run order: the mean and the sample standard deviation
    (``*_std``; None for one seed, where it is undefined) of :data:`FIGURES` over the seeds,
    the accuracy drop float -> fixed in percentage points, and the parameter counts (equal for
    every seed)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["neuron"], r["timesteps"]), []).append(r)
    rows = []
    for (neuron, t), rs in groups.items():
        row: dict[str, Any] = {"neuron": neuron, "timesteps": t, "seeds": [r["seed"] for r in rs]}
        for k in FIGURES:
            vals = [float(r[k]) for r in rs]
            row[k] = statistics.fmean(vals)
            row[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        row["accuracy_drop_pp"] = 100 * (row["float_accuracy"] - row["fixed_accuracy"])
        for k in ("parameters", "neuron_parameters", "neuron_layers"):
            row[k] = rs[0][k]
        rows.append(row)
    return rows


def _accuracy_cell(row: dict[str, Any], key: str) -> str:
    """Mean accuracy in % and its std over the seeds, or ``n=1`` where one seed leaves the std
    undefined."""
    std = row[f"{key}_std"]
    spread = f"±{percent(std, '', 1):>4}" if std is not None else "  n=1"
    return f"{percent(row[key], ''):>8} {spread}"


def format_table(result: dict[str, Any]) -> str:
    """The summary table as text: accuracies in % (mean +- std over seeds), drop in pp,
    parameters, SynOps and spikes per inference."""
    s = result["settings"]
    head = (f"{s['model']} on {s['dataset']}: {counted(s['epochs'], 'epoch')}, seeds "
            f"{s['seeds']}, {counted(s['test_samples'], 'test sample')}; fixed point = 8-bit "
            "program in the emulator")
    cols = ("neuron", "T", "float acc %", "fixed acc %", "drop pp", "params", "neuron params",
            "SynOps/inf", "spikes/inf")
    lines = [head, "  ".join(f"{c:>14}" if i else f"{c:<6}" for i, c in enumerate(cols))]
    for r in result["table"]:
        cells = [f"{r['neuron']:<6}", f"{r['timesteps']:>14}",
                 _accuracy_cell(r, "float_accuracy"), _accuracy_cell(r, "fixed_accuracy"),
                 f"{r['accuracy_drop_pp']:>14.2f}", f"{r['parameters']:>14,}",
                 f"{r['neuron_parameters']:>14,}", f"{r['synops']:>14,.0f}",
                 f"{r['spikes']:>14,.1f}"]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def plot_comparison(result: dict[str, Any], path: str | Path) -> None:
    """Accuracy (float solid, fixed point dashed; error bars: std over seeds) and SynOps per
    inference against T, one colour per neuron, as a PNG written atomically."""
    from dalif_deploy.verification.plots import pyplot

    plt = pyplot()

    from dalif_deploy.base.files import atomic_write

    rows = result["table"]
    fig, (acc, ops) = plt.subplots(1, 2, figsize=(10, 4))
    for i, neuron in enumerate(dict.fromkeys(r["neuron"] for r in rows)):
        rs = [r for r in rows if r["neuron"] == neuron]
        ts = [r["timesteps"] for r in rs]
        colour = f"C{i}"
        for k, style in (("float_accuracy", "-"), ("fixed_accuracy", "--")):
            acc.errorbar(ts, [100 * r[k] for r in rs], [100 * (r[f"{k}_std"] or 0) for r in rs],
                         fmt=style + "o", color=colour, capsize=3,
                         label=f"{neuron} {'float' if k.startswith('float') else 'fixed'}")
        ops.errorbar(ts, [r["synops"] for r in rs], [r["synops_std"] or 0 for r in rs], fmt="-o",
                     color=colour, capsize=3, label=neuron)
    s = result["settings"]
    for ax, label in ((acc, "test accuracy (%)"), (ops, "SynOps per inference")):
        ax.set_xlabel("time steps T")
        ax.set_ylabel(label)
        ax.set_xticks(sorted({r["timesteps"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{s['model']} on {s['dataset']} ({counted(s['epochs'], 'epoch')}, seeds "
                 f"{s['seeds']})")
    fig.tight_layout()
    try:
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100,
                                                 bbox_inches="tight"))
    finally:
        plt.close(fig)
