"""The backend protocol behind ``dalif-deploy simulate`` and the result types backends share.

A backend is a class in ``targets/`` that declares what it runs and opens the model file once::

    class MyBackend:
        name = "mine"                   # --backend mine
        kind = "nir"                    # the file kind it runs (backends.FILE_KINDS key)
        options = (Option("dt", float, "time step ..."),)   # its own --options

        def __init__(self, model_path: str, **options): ...  # open the file, once
        input: ModelInput                                    # what input the model expects
        def run(self, data, *, batch_size, progress) -> BackendRun: ...

and one registration line in ``targets/registry.py``. The registry does the rest once:
file-kind check, option check, data loading (the split as the model expects it, see
:class:`ModelInput`), timing of :meth:`Backend.run`, accuracy and the JSON dict
(:meth:`SimulationResult.to_dict`).

:class:`FixedPointResult` is what a fixed-point engine (the emulator, Lava) returns for a run of
a :class:`~dalif_deploy.fixedpoint.program.FixedProgram`, so the two compare field by field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from dalif_deploy.base.errors import DaLifError

if TYPE_CHECKING:
    import numpy as np

    from dalif_deploy.datasets.loaders import Dataset


@dataclass(frozen=True)
class Option:
    """A backend's own option: ``--<name>`` on the command line (``_`` -> ``-``), a keyword
    of :func:`dalif_deploy.targets.registry.simulate`. ``default``: the value the backend uses when
    the
    option is not given (a command-line option with a default is ignored by backends that do
    not take it; one without a default is an error there)."""

    name: str
    type: type
    help: str
    default: Any = None
    metavar: str | None = None
    #: its command-line flags when not ``--<name>`` (e.g. ``("--from",)`` for ``exporter``)
    flags: tuple[str, ...] = ()
    #: given any number of times on the command line; the backend then gets a list
    repeat: bool = False
    #: a switch: given without a value, it means True (absent: None, the backend's default)
    switch: bool = False

    @property
    def flag(self) -> str:
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ModelInput:
    """What an opened model file takes: ``encoding`` ("analog", "events", or None for a model
    that does not say, e.g. a foreign NIR graph: either), the per-frame ``shape``, ``timesteps``
    (None: not recorded; event data then use the data set's default T), the data set the
    file records (``dataset``, None if none) and its number of classes (``classes``, the
    output size; None: not known), which every label must lie below."""

    encoding: str | None
    shape: tuple[int, ...]
    timesteps: int | None
    dataset: str | None = None
    classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        name = self.dataset
        if isinstance(name, bytes):  # NIR metadata may hold bytes
            name = name.decode("utf8", "replace")
        object.__setattr__(self, "dataset", name if isinstance(name, str) and name else None)


@dataclass
class BackendRun:
    """What :meth:`Backend.run` returns: one prediction per sample (data set order) and the
    backend-specific JSON keys (``extras``, JSON-able values)."""

    predictions: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A ``simulate`` backend (see the module docstring)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    options: ClassVar[tuple[Option, ...]]
    input: ModelInput

    def __init__(self, model_path: str, **options: Any) -> None: ...

    def run(self, data: Dataset, *, batch_size: int, progress: bool) -> BackendRun: ...


#: the keys every backend reports, in JSON order (the extras follow)
RESULT_KEYS = ("backend", "model", "dataset", "split", "samples", "accuracy", "predictions",
               "seconds")


@dataclass
class SimulationResult:
    """One ``simulate`` run: the keys every backend reports plus its ``extras``.

    ``accuracy = mean(predictions == labels)`` over the ``samples`` samples (0 when none);
    ``seconds`` is the wall time of :meth:`Backend.run` (file and data loading excluded).
    """

    backend: str
    model: str
    dataset: str
    split: str | None  # None: a user's file, which has no splits
    predictions: np.ndarray  # int64 [samples]
    accuracy: float
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return int(len(self.predictions))

    def to_dict(self) -> dict[str, Any]:
        """The JSON dict of ``simulate --json``: :data:`RESULT_KEYS`, then the extras."""
        common = {"backend": self.backend, "model": self.model, "dataset": self.dataset,
                  "split": self.split, "samples": self.samples, "accuracy": self.accuracy,
                  "predictions": self.predictions.tolist(), "seconds": self.seconds}
        clash = sorted(set(common) & set(self.extras))
        if clash:
            raise DaLifError(f"backend {self.backend!r} reports {clash} as extras; those keys "
                             "are the registry's")
        return {**common, **self.extras}


def in_batches(n: int, batch_size: int, *, desc: str, progress: bool,
               unit: str = "batch") -> Iterator[slice]:
    """Slices ``[i, i + batch_size)`` covering ``range(n)``, with a progress bar (stderr)."""
    from tqdm import tqdm

    step = max(1, int(batch_size))
    for i in tqdm(range(0, n, step), desc=desc, unit=unit, disable=not progress, leave=False):
        yield slice(i, min(i + step, n))


@dataclass
class FixedPointResult:
    """A run of a FixedProgram on a fixed-point engine (emulator or Lava); arrays are integer
    (spikes bool/uint8), samples in input order.

    ``outputs [N, n_out]``: the readout's final v per sample (raw integers), ``predictions
    [N]`` its argmax. ``spike_counts [N, len(spiking)]``: spikes per sample per spiking
    population, ``spiking`` their names (program order, readout excluded). ``final_v``: name ->
    ``[N, *shape]`` v after each sample's last step, every population (the emulator fills it
    when recording). ``spikes`` / ``v`` (after reset) / ``u``: name -> ``[steps, N, *shape]``,
    when recording. ``u_wraps`` / ``v_saturations``: totals per population where the engine
    counts them (the emulator; empty otherwise). ``input_clipped``: analog input values that
    fell outside the input range and were clipped. ``steps``: time steps the engine ran (the
    emulator per sample: T, or T + depth pipelined; Lava: all samples streamed back to back
    through one network), ``mode``: the timing (``sync``: step t of every population sees input
    step t; Lava's results are de-skewed to it), ``seconds``: the engine's wall time, where it
    measures it. ``spike_totals``: name -> ``[*shape]`` each neuron's spike messages summed
    over every sample and step, per spiking population (the emulator; what makes SynOps exact):
    its spikes, or for a multi-spike population the steps it sent a count in (a count of n is
    ONE graded spike, fanned out once, as on the chip; ``spike_counts`` counts the n).
    """

    outputs: np.ndarray
    predictions: np.ndarray
    spike_counts: np.ndarray
    spiking: list[str]
    final_v: dict[str, np.ndarray] = field(default_factory=dict)
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    u: dict[str, np.ndarray] = field(default_factory=dict)
    u_wraps: dict[str, int] = field(default_factory=dict)
    v_saturations: dict[str, int] = field(default_factory=dict)
    input_clipped: int = 0
    steps: int = 0
    mode: str = "sync"
    seconds: float = 0.0
    processes: int = 0  # Lava processes the network had (Lava only)
    spike_totals: dict[str, np.ndarray] = field(default_factory=dict)

    @staticmethod
    def join(parts: list[FixedPointResult]) -> FixedPointResult:
        """The run of consecutive sample ranges (``parts`` in order, at least one) as one run:
        per-sample arrays concatenated (traces along their sample axis 1), counters added."""
        if not parts:
            raise DaLifError("FixedPointResult.join needs at least one run")
        a = parts[0]
        import numpy as np  # here: the registry imports this module for the CLI's --help

        def cat(get: Any, axis: int = 0) -> dict[str, np.ndarray]:
            return {k: np.concatenate([get(p)[k] for p in parts], axis) for k in get(a)}

        def add(get: Any) -> dict[str, int]:
            return {k: sum(get(p).get(k, 0) for p in parts) for k in get(a)}

        return FixedPointResult(
            outputs=np.concatenate([p.outputs for p in parts]),
            predictions=np.concatenate([p.predictions for p in parts]),
            spike_counts=np.concatenate([p.spike_counts for p in parts]), spiking=a.spiking,
            final_v=cat(lambda p: p.final_v), spikes=cat(lambda p: p.spikes, 1),
            v=cat(lambda p: p.v, 1), u=cat(lambda p: p.u, 1),
            u_wraps=add(lambda p: p.u_wraps), v_saturations=add(lambda p: p.v_saturations),
            input_clipped=sum(p.input_clipped for p in parts), steps=a.steps, mode=a.mode,
            seconds=max(p.seconds for p in parts), processes=max(p.processes for p in parts),
            spike_totals={k: sum(p.spike_totals[k] for p in parts) for k in a.spike_totals})
