"""The ``dalif-deploy`` command line: one subcommand per pipeline step, mirroring the Python API.

Exit codes: 0 success, 1 verification failed, 2 bad input (one ``error:`` line on stderr),
3 internal error (a bug; one ``error: internal error (...)`` line, see :mod:`.guard`).
Handlers are imported lazily so ``--help`` and light commands start fast and never import lava.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence

from dalif_deploy import __version__
from dalif_deploy.base.encoding import ENCODING_NAMES
from dalif_deploy.base.errors import DaLifError, VerificationFailed
from dalif_deploy.base.wording import printable

EPILOG = """\
pipeline:
  train      train a zoo model on bundled data           -> checkpoint (.pt)
  export     checkpoint -> NIR graph (.nir), ONNX (.onnx) or lava-dl netx (.h5)
  quantize   NIR graph -> Loihi 2 fixed-point program (.fxp)
  simulate   run a checkpoint / graph / program on a backend, report accuracy (JSON)
  verify     float vs NIR vs fixed point vs Lava, one report
  sweep      verify a checkpoint at several weight precisions: one table, one plot
  finetune   quantisation-aware fine-tuning through the N-bit program -> checkpoint (.pt)
  inspect    show what is inside any of these files
  dataset    write the samples exactly as the model receives them (.npz)
  compare    DA-LIF vs PLIF vs LIF at several T: float and fixed-point accuracy, parameters,
             SynOps per inference (table, plot, JSON)

exit codes: 0 ok, 1 verification failed, 2 bad input, 3 internal error (a bug: report it)
"""


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default where it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        # by identity: a default of 0 (``--seed``) equals False but is a real default
        if (action.option_strings and not any(action.default is v for v in
                                               (None, False, True, argparse.SUPPRESS))
                and "%(default)" not in text):
            text += " (default: %(default)s)"
        return text


def _lazy(target: str) -> Callable[[argparse.Namespace], int | None]:
    """``"module:function"`` -> a handler that imports the module only when run."""
    module, func = target.split(":")

    def run(args: argparse.Namespace) -> int | None:
        return getattr(importlib.import_module(module), func)(args)

    return run


class _DeferredParser(argparse.ArgumentParser):
    """A command's parser whose remaining arguments are added on first use (parsing, help or
    usage), so building the whole command line imports nothing heavy."""

    deferred: str | None = None  # "module:function" adding the arguments

    def _complete(self) -> None:
        target, self.deferred = self.deferred, None
        if target:
            module, func = target.split(":")
            getattr(importlib.import_module(module), func)(self)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()


def _defer(p: argparse.ArgumentParser, target: str) -> None:
    """Add the rest of ``p``'s arguments with ``target(p)`` only when ``p`` is used."""
    p.__class__ = _DeferredParser
    p.deferred = target


#: the built-in data sets, for help texts
DATASET_NAMES = ("digits, digits-events, cifar10 (--data-dir), or the event data sets "
                 "dvs128-gesture, cifar10-dvs, nmnist (--data-dir; options NAME:bin=count,"
                 "downsample=2)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data-dir`` and the event data sets' binning options, for every command that loads
    a data set (see :func:`event_options`)."""
    p.add_argument("--data-dir", help="folder of a local data set: cifar10's "
                   "cifar-10-batches-py, the DvsGesture folder, CIFAR10-DVS's class folders, "
                   "N-MNIST's Train/Test folder")
    g = p.add_argument_group("event data sets (dvs128-gesture, cifar10-dvs, nmnist)")
    g.add_argument("--event-bins", choices=("time", "count"),
                   help="split each sample's events into T bins of equal duration (time, the "
                   "default) or of equal event count (count)")
    g.add_argument("--downsample", type=int, metavar="K",
                   help="merge KxK pixel blocks (frames stay binary: 1 where any event of "
                   "that polarity fell in the block and bin; default 1)")


def event_options(name: str | None, args: argparse.Namespace, flag: str = "--dataset"
                  ) -> str | None:
    """The data set ``name`` with ``--event-bins`` / ``--downsample`` written into it
    (``nmnist`` -> ``nmnist:bin=count``), the form loaders and checkpoints use."""
    bins, k = getattr(args, "event_bins", None), getattr(args, "downsample", None)
    if bins is None and k is None:
        return name
    if name is None:
        raise DaLifError(f"--event-bins and --downsample modify the data set: give {flag} too "
                         f"(e.g. {flag} nmnist --event-bins count)")
    from dalif_deploy.datasets.loaders import dataset_spec

    return dataset_spec(name, bins, k)


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bars and no notes on stderr (warnings and errors are "
                   "still printed; results still go to stdout). Progress bars are also off "
                   "when stderr is not a terminal")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on stderr: on when stderr is a terminal, off with ``--quiet`` or when it
    is redirected (a log file then holds no carriage-return-redrawn bars)."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def note(args: argparse.Namespace, text: str) -> None:
    """An informational line on stderr, dropped by ``--quiet`` (warnings use :func:`warn`)."""
    if not getattr(args, "quiet", False):
        print(printable(text), file=sys.stderr)


def warn(text: str) -> None:
    """A ``warning:`` line on stderr, printed even with ``--quiet``."""
    print(f"warning: {printable(text)}", file=sys.stderr)


def _add_hardware(p: argparse.ArgumentParser) -> None:
    """``--hardware FILE.json`` and ``--hw NAME=VALUE`` (the cost model's figures), worded as
    ``simulate --backend emulator`` words them (the emulator backend declares the same)."""
    from dalif_deploy.fixedpoint.hardware import HARDWARE_FILE_HELP, HARDWARE_SET_HELP

    p.add_argument("--hardware", metavar="FILE.json", help=HARDWARE_FILE_HELP)
    p.add_argument("--hw", metavar="NAME=VALUE", action="append", help=HARDWARE_SET_HELP)


def hardware_from_args(args: argparse.Namespace):  # -> Hardware | None
    """The :class:`~dalif_deploy.fixedpoint.hardware.Hardware` that ``--hardware``/``--hw`` ask
    for, or
    None when neither is given (the defaults)."""
    if args.hardware is None and not args.hw:
        return None
    from dalif_deploy.fixedpoint.hardware import hardware

    return hardware(args.hardware, assignments=args.hw or ())


def _add_quantiser_options(p: argparse.ArgumentParser, when: str = "") -> None:
    """The quantiser's options (quantize, and export --netx which quantises too)."""
    p.add_argument("--calibrate", metavar="DATASET", help=f"{when}refine scales on this data "
                   "set (a name or an .npz as `dataset` writes it)")
    p.add_argument("--calibration-samples", type=int, default=256,
                   help=f"{when}training samples used for calibration (at most)")
    p.add_argument("--weight-bits", type=int, default=8,
                   help=f"{when}weight mantissa bits, 2..8 (Loihi 2: 8)")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH "
                   "('-' for stdout)")


def weight_bits_arg(text: str) -> int:
    """``--weight-bits N``: an integer 2..8, else one ``error:`` line (DaLifError, exit 2)."""
    from dalif_deploy.converters.nir_to_fixed import check_weight_bits

    try:
        value: object = int(text)
    except ValueError:
        value = text
    return check_weight_bits(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dalif-deploy",
        description="Deploy DA-LIF spiking networks: PyTorch -> NIR -> Loihi 2 fixed point -> "
        "Lava, with a bit-accurate emulator checking every stage.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dalif-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a zoo model on bundled data",
                       description="Train a zoo model (DA-LIF neurons, or the PLIF/LIF "
                       "baselines with --neuron); deterministic for a given seed.")
    p.add_argument("--model", required=True, help="zoo model: digits-cnn, digits-resnet, "
                   "resnet19, vgg11")
    p.add_argument("--dataset", default="digits", help=f"{DATASET_NAMES}, or an .npz as "
                   "`dataset` writes it")
    add_data_options(p)
    p.add_argument("--epochs", type=int, default=30, help="passes over the training split")
    p.add_argument("--timesteps", "-T", type=int, default=4,
                   help="time steps per sample (the static image is fed every step)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine "
                   "schedule)")
    p.add_argument("--seed", type=int, default=0, help="training is deterministic for a seed")
    p.add_argument("--neuron", choices=("dalif", "plif", "lif"), default="dalif",
                   help="neuron model of every spiking layer: dalif (learnable spatial alpha "
                   "and temporal beta), plif (one learnable decay k = 1/tau for both terms, "
                   "Fang et al. 2021) or lif (a fixed decay 1 - 1/tau, --tau)")
    p.add_argument("--granularity", choices=("layer", "channel"),
                   help="dalif/plif: one learnable decay set per layer (the papers', the "
                   "default) or per channel")
    p.add_argument("--parametrization", choices=("tanh", "sigmoid"),
                   help="dalif: raw parameter -> decay map for alpha and beta (default tanh)")
    p.add_argument("--tau", type=float, help="lif: the fixed time constant, >= 1 (default 2: "
                   "decay 0.5, input gain 0.5)")
    p.add_argument("--init-tau", type=float, help="plif: the initial time constant, > 1 "
                   "(default 2)")
    p.add_argument("--width", type=int, help="base channel width (zoo default: 16 for digits "
                   "models, 128 resnet19, 64 vgg11); smaller trains faster")
    p.add_argument("--out", "-o", required=True, help="checkpoint path to write (.pt)")
    _add_quiet(p)
    p.set_defaults(handler=_lazy("dalif_deploy.cli.train:cli_train"))

    p = sub.add_parser("simulate", help="run a model file on a backend",
                       description="Run MODEL (checkpoint .pt, NIR graph .nir, fixed-point "
                       "program .fxp or ONNX .onnx) on a backend over a data set split and "
                       "report accuracy and per-sample predictions.")
    p.add_argument("model", metavar="MODEL", help="model file: .pt, .nir, .fxp or .onnx")
    _defer(p, "dalif_deploy.cli.simulate:add_arguments")  # imports the backends: only if used
    _add_quiet(p)
    p.set_defaults(handler=_lazy("dalif_deploy.cli.simulate:cli_simulate"))

    p = sub.add_parser("inspect", help="show what a file holds",
                       description="Describe any file dalif-deploy writes (the kind is "
                       "read from its content).")
    p.add_argument("file", metavar="FILE", help=".pt .nir .fxp .onnx .h5 (netx) .npz .json")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_hardware(p)
    p.set_defaults(handler=_lazy("dalif_deploy.cli.inspect_cmd:cli_inspect"))

    p = sub.add_parser("export", help="checkpoint -> NIR, ONNX or lava-dl netx",
                       description="Export a checkpoint (or a plain state_dict with --model) "
                       "to a NIR graph (-o model.nir), ONNX (--onnx model.onnx) and/or lava-dl "
                       "netx HDF5 (--netx model.h5: NIR -> the quantiser in netx mode -> the "
                       "file `netx.hdf5.Network` loads, bit-exact with the emulator; chain "
                       "models with per-layer decays only).")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint (.pt) or plain state_dict")
    p.add_argument("-o", "--out", help="NIR file to write")
    p.add_argument("--onnx", metavar="PATH", help="ONNX file to write")
    p.add_argument("--netx", metavar="H5", help="lava-dl netx HDF5 file to write (biases "
                   "quantised onto netx's fixed bias_exp 6, integer dense weights)")
    p.add_argument("--program", metavar="FXP", help="with --netx: also write the exported "
                   "program (.fxp) for simulate/verify")
    _add_quantiser_options(p, "with --netx: ")
    add_data_options(p)
    p.add_argument("--model", help="zoo model name when CKPT is a plain state_dict")
    p.add_argument("--timesteps", "-T", type=int, help="timesteps when CKPT is a state_dict")
    _add_quiet(p)
    p.set_defaults(handler=_lazy("dalif_deploy.cli.export:cli_export"))

    p = sub.add_parser("quantize", help="NIR graph -> fixed-point program",
                       description="Quantise a NIR graph to a Loihi 2 fixed-point program "
                       "(.fxp) and print the per-layer quantisation table.")
    p.add_argument("graph", metavar="MODEL.nir", help="NIR graph to quantise")
    p.add_argument("-o", "--out", required=True, help="program file to write (.fxp)")
    _add_quantiser_options(p)
    add_data_options(p)
    p.add_argument("--from", dest="exporter", metavar="EXPORTER",
                   help="framework that exported a foreign NIR graph: snntorch (dt 1e-4, "
                   "Euler), sinabs (dt 1, exact decay), norse (dt 1e-3, Euler) or nir (give "
                   "--dt)")
    p.add_argument("--dt", type=float, help="time step of a foreign NIR graph (overrides "
                   "--from's; required with plain NIR)")
    p.add_argument("--timesteps", "-T", type=int, help="T for a graph without metadata")
    p.add_argument("--encoding", choices=ENCODING_NAMES,
                   help="input encoding for a graph without metadata")
    p.add_argument("--netx", metavar="H5", help="also write the program as lava-dl netx HDF5; "
                   "quantises onto netx's grid (biases in multiples of 64, integer dense "
                   "weights; chain graphs with per-layer decays only)")
    _add_json(p)
    _add_quiet(p)
    p.set_defaults(handler=_lazy("dalif_deploy.cli.quantize:cli_quantize"))

    p = sub.add_parser("dataset", help="write samples as the model receives them",
                       description="Write a data set split to .npz: x (float32, [N, ...] "
                       "static or [N, T, ...] events) and y (labels), in simulate's order.")
    p.add_argument("name", metavar="NAME", help=f"{DATASET_NAMES}")
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="which split to write")
    add_data_options(p)
    p.add_argument("--timesteps", "-T", type=int, help="timesteps for event data (default: "
                   "8 for digits-events; refused for static data)")
    p.add_argument("-o", "--out", required=True, help=".npz file to write")
    p.set_defaults(handler=_lazy("dalif_deploy.cli.dataset:cli_dataset"))

    p = sub.add_parser("verify", help="float vs NIR vs fixed point vs Lava, one report",
                       description="Export, re-import, quantise, emulate the whole test set "
                       "and run Lava on a subset; report where accuracy is lost. Exit 1 if "
                       "the thresholds do not hold.")
    p.add_argument("model", metavar="MODEL", help="the file to verify: a checkpoint (.pt), a "
                   "NIR graph (.nir; quantised as `quantize --calibrate` does) or a program "
                   "(.fxp; run as given)")
    p.add_argument("--reference", metavar="MODEL", help="float reference (.nir or .pt) for a "
                   "program (.fxp); without it only the emulator and Lava are compared")
    p.add_argument("--save-program", metavar="FXP", help="write the program verified (.fxp)")
    p.add_argument("--from", dest="exporter", metavar="EXPORTER",
                   help="framework that exported a foreign NIR graph (as `simulate --from`)")
    p.add_argument("--dt", type=float, help="time step of a foreign NIR graph (overrides "
                   "--from's)")
    p.add_argument("--timesteps", "-T", type=int, help="T for a NIR graph that records none")
    p.add_argument("--dataset", help="data set: a name or an .npz as `dataset` writes it "
                   "(default: the one the model file records)")
    add_data_options(p)
    p.add_argument("--lava-samples", type=int, default=16,
                   help="first N test samples run on Lava and compared bit for bit (0: skip)")
    p.add_argument("--report", metavar="HTML", help="write a self-contained HTML report")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="minimum float/fixed prediction agreement (0..1)")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0,
                   help="maximum float -> fixed accuracy drop, percentage points")
    p.add_argument("--onnx", action="store_true", help="include the ONNX stage")
    _add_hardware(p)
    p.add_argument("--timeout", type=float, default=600.0, help="lava watchdog timeout (s)")
    p.add_argument("--weight-bits", type=weight_bits_arg, default=8, metavar="N",
                   help="weight mantissa bits of the program quantised from a .pt/.nir, 2..8 "
                   "(Loihi 2: 8); every stage and the report are at that precision")
    p.add_argument("--batch-size", type=int, default=256, help="test samples per batch (the "
                   "unit a run under torchrun shards by)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device of the "
                   "emulator (the fixed-point stage and calibration): cpu, cuda or cuda:N; the "
                   "same integers on every device. Under `torchrun --nproc-per-node N -m "
                   "dalif_deploy verify ...` the test split is sharded over the N processes "
                   "and the results equal a single process's")
    _defer(p, "dalif_deploy.cli.verify:add_lava_limits")  # the lava backend's, when used
    _add_quiet(p)
    p.set_defaults(handler=_lazy("dalif_deploy.cli.verify:cli_verify"))

    p = sub.add_parser("sweep", help="verify a checkpoint at several weight precisions",
                       description="Quantise CKPT at each precision (as `verify --weight-bits` "
                       "does) and report, per precision, float and fixed-point accuracy, "
                       "float/fixed prediction agreement, synaptic memory and cores (resource "
                       "model estimates); emulator only unless --lava-samples is given.")
    _defer(p, "dalif_deploy.cli.sweep:add_arguments")
    p.set_defaults(handler=_lazy("dalif_deploy.cli.sweep:cli_sweep"))

    p = sub.add_parser("finetune", help="quantisation-aware fine-tuning for N-bit weights",
                       description="Fine-tune CKPT so that its N-bit program wins back the "
                       "accuracy quantisation loses: every step quantises the current weights "
                       "exactly as `verify --weight-bits N` does and runs the batch on the "
                       "bit-accurate emulator (the forward values are the program's integers), "
                       "with straight-through gradients into the float weights. Writes an "
                       "ordinary checkpoint recording how it was fine-tuned.")
    _defer(p, "dalif_deploy.cli.finetune:add_arguments")
    p.set_defaults(handler=_lazy("dalif_deploy.cli.finetune:cli_finetune"))

    p = sub.add_parser("compare", help="neuron models compared after deployment",
                       description="Train the same zoo model with each neuron (DA-LIF, PLIF, "
                       "LIF) at each number of time steps T for each seed, deploy every model "
                       "(NIR -> 8-bit program calibrated on training samples -> bit-accurate "
                       "emulator) and print, per neuron and T (mean and std over the seeds): "
                       "float and fixed-point test accuracy, parameters (the neurons' own "
                       "among them) and synaptic operations per inference from the cost "
                       "model on the emulator's spikes.")
    _defer(p, "dalif_deploy.cli.compare:add_arguments")
    p.set_defaults(handler=_lazy("dalif_deploy.cli.compare:cli_compare"))

    p = sub.add_parser("demo", help="verify the shipped digits-cnn checkpoint end to end",
                       description="Run verify on dalif_deploy/checkpoints/digits-cnn.pt: float, "
                       "NIR, fixed point on the whole test set, Lava on a subset; print the "
                       "headline figures and write the HTML/JSON report.")
    p.add_argument("--out-dir", default="out", help="where the report (demo-report.html and "
                   "demo-report.json) goes")
    p.add_argument("--lava-samples", type=int, default=16,
                   help="first N test samples run on Lava and compared bit for bit (0: skip)")
    _add_quiet(p)
    p.set_defaults(handler=_lazy("dalif_deploy.cli.demo:cli_demo"))
    for command in sub.choices.values():
        command.formatter_class = _HelpFormatter
    return parser


def emit_json(data: dict, dest: str | None) -> None:
    """Write ``data`` as JSON to ``dest`` atomically ('-' means stdout). Our JSON is always
    strict: a NaN or infinite figure is refused (one ``error:`` line naming it), never written
    as the bare ``NaN`` no JSON reader takes."""
    if not dest:
        return
    from dalif_deploy.base.schema import non_finite

    bad = non_finite(data)
    if bad is not None:
        raise DaLifError(f"the result's {bad} is not a finite number (NaN or infinite), which "
                         "JSON cannot hold; check the figures that produced it (--hw, "
                         "--hardware)")
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n"
    if dest == "-":
        sys.stdout.write(text)
    else:
        from dalif_deploy.base.files import atomic_write_text

        atomic_write_text(dest, text)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


#: output arguments that take '-' for stdout (every other output must be a file path)
STDOUT_ARGS = ("json",)
#: per command: (argument names holding output files, argument names holding input files)
FILE_ARGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (("out",), ()),
    "export": (("out", "onnx", "netx", "program"), ("checkpoint", "calibrate")),
    "quantize": (("out", "json", "netx"), ("graph", "calibrate")),
    "dataset": (("out",), ()),
    "compare": (("json", "plot"), ("dataset", "test_dataset")),
    "simulate": (("json",), ("model", "dataset", "hardware")),
    "verify": (("report", "json", "save_program"),
               ("model", "reference", "dataset", "hardware")),
    "sweep": (("plot", "json"), ("checkpoint", "dataset")),
    "finetune": (("out", "json"), ("checkpoint",)),
}


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse unwritable outputs, outputs that are inputs and two outputs on one path before
    any work is done (training or verifying can take minutes)."""
    from dalif_deploy.base.files import check_output_path

    outs, ins = FILE_ARGS.get(args.command, ((), ()))
    for k in outs:
        if getattr(args, k, None) == "-" and k not in STDOUT_ARGS:
            raise DaLifError(f"--{k.replace('_', '-')} -: this output cannot go to stdout; "
                             "give a file path (./- for a file named '-')")
    paths = [(k, getattr(args, k)) for k in outs if getattr(args, k, None) not in (None, "-")]
    inputs = tuple(str(getattr(args, k)) for k in ins if getattr(args, k, None))
    for _, p in paths:
        check_output_path(p, inputs)
    seen: dict[str, str] = {}
    for k, p in paths:
        key = os.path.abspath(p)
        if key in seen:
            raise DaLifError(f"--{seen[key].replace('_', '-')} and --{k.replace('_', '-')} both "
                             f"write {p}; give them different "
                             "paths")
        seen[key] = k
    if args.command == "demo" and os.path.exists(args.out_dir) and not os.path.isdir(
            args.out_dir):
        raise DaLifError(f"--out-dir {args.out_dir} is a file; give a directory")
    if args.command == "demo" and os.path.isdir(args.out_dir):
        for name in ("demo-report.html", "demo-report.json"):
            check_output_path(os.path.join(args.out_dir, name))


#: the commands that shard their data when torchrun starts several processes
SHARDED = ("simulate", "verify")


def check_launch(command: str) -> None:
    """Refuse a command torchrun started several times that does not shard (each process would
    do all the work and write the same files)."""
    if command not in SHARDED and os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        raise DaLifError(f"{command} runs in one process; under torchrun only "
                         f"{' and '.join(SHARDED)} shard their data: run it without torchrun")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Signals are handled from the first line on (see :mod:`.signals`): a
    Ctrl-C while the parser is built or torch/lava are imported is one ``interrupted`` line
    and exit 130, as it is during the work."""
    try:
        from .signals import signals_raise

        with signals_raise():  # SIGTERM, SIGHUP, ... unwind like Ctrl-C: no temporary file left
            return _run(argv)
    except KeyboardInterrupt as e:  # also one raised before signals_raise took over
        from .signals import exit_code

        print(f"interrupted ({printable(str(e) or 'SIGINT')})", file=sys.stderr)
        return exit_code(e)


def _run(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run its command; the exit code (a KeyboardInterrupt propagates).

    Whatever goes wrong ends in one line on stderr: ``error:`` (exit 2) for bad input and for
    memory that ran out, ``verification failed:`` (exit 1), and ``error: internal error
    (...)`` (exit 3) for any other exception, a bug of ours (:func:`.guard.internal_error`)."""
    from .guard import (
        EXIT_INTERNAL,
        check_inputs,
        check_option_values,
        internal_error,
        memory_error,
        output_paths,
    )

    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except DaLifError as e:  # e.g. a backend registered wrongly (simulate's options)
            print(f"error: {printable(e)}", file=sys.stderr)
            return 2
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        check_option_values(args)
        check_launch(args.command)
        check_inputs(args, FILE_ARGS)
        check_outputs(args)
        from dalif_deploy.base.files import output_transaction

        # all outputs at the end, or none after a failure (a verdict keeps its report)
        with output_transaction(output_paths(args, FILE_ARGS), commit_on=(VerificationFailed,)):
            rc = args.handler(args)
    except VerificationFailed as e:
        print(f"verification failed: {printable(e)}", file=sys.stderr)
        return 1
    except DaLifError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: not an error of ours
        sys.stderr.close()
        return 0
    except MemoryError as e:  # numpy's _ArrayMemoryError too: a limit the plan could not see
        print(f"error: {printable(memory_error(e))}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: never a traceback read as a verdict (exit 1)
        print(f"error: {printable(internal_error(e))}", file=sys.stderr)
        return EXIT_INTERNAL
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
