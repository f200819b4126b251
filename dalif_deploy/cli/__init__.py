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
from dalif_deploy.base.errors import DaLifError, VerificationFailed
from dalif_deploy.base.wording import printable

from .command import Command


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


class _DeferredParser(argparse.ArgumentParser):
    """A command's parser whose arguments are added on first use (parsing, help or usage), so
    building the whole command line runs no command's ``add_arguments`` (simulate's imports the
    backend registry)."""

    deferred: Callable[[argparse.ArgumentParser], None] | None = None

    def _complete(self) -> None:
        add, self.deferred = self.deferred, None
        if add is not None:
            add(self)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()


def _defer(p: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``p``'s arguments with ``add(p)`` only when ``p`` is used."""
    p.__class__ = _DeferredParser
    p.deferred = add


#: the built-in data sets, for help texts
DATASET_NAMES = ("digits, digits-events, digits-rows, cifar10 (--data-dir), or the event "
                 "data sets "
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


def add_quiet_option(p: argparse.ArgumentParser) -> None:
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


def add_hardware_options(p: argparse.ArgumentParser) -> None:
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


def add_quantiser_options(p: argparse.ArgumentParser, when: str = "") -> None:
    """The quantiser's options (quantize, and export --netx which quantises too)."""
    p.add_argument("--calibrate", metavar="DATASET", help=f"{when}refine scales on this data "
                   "set (a name or an .npz as `dataset` writes it)")
    p.add_argument("--calibration-samples", type=int, default=256,
                   help=f"{when}training samples used for calibration (at most)")
    p.add_argument("--weight-bits", type=int, default=8,
                   help=f"{when}weight mantissa bits, 2..8 (Loihi 2: 8)")


def add_firing_options(p: argparse.ArgumentParser) -> None:
    """``--reset`` and ``--multi-spike``: a foreign graph's firing, which the file cannot say
    (quantize and verify; simulate's come from the NIR backends' own options)."""
    p.add_argument("--reset", choices=("zero", "subtract"), help="how a foreign graph's "
                   "neurons reset (as `simulate --reset`)")
    p.add_argument("--multi-spike", action="store_true", default=None, help="a foreign "
                   "graph's neurons send spike counts (as `simulate --multi-spike`)")


def add_model_code(p: argparse.ArgumentParser) -> None:
    """``--model-code FACTORY``: the user's own architecture, for every command that builds
    the torch module of a checkpoint (see dalif_deploy/float_model/factory.py; the code is
    imported only because the user names it here)."""
    p.add_argument("--model-code", metavar="FACTORY", help="the code building a network "
                   "outside the zoo: PACKAGE.MODULE:FUNCTION or PATH/TO/FILE.py:FUNCTION, "
                   "called with the checkpoint's recorded config as keyword arguments; "
                   "imported only because you name it here, never because a file names it")


def add_json_option(p: argparse.ArgumentParser) -> None:
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


#: the commands, as modules of this package (or absolute module paths), in the order the help
#: lists them; each ends with ``COMMAND = Command(...)`` (.command). Registering a command is
#: one line here.
COMMANDS: list[str] = ["train", "export", "quantize", "simulate", "verify", "sweep",
                       "finetune", "inspect_cmd", "dataset", "compare", "demo"]


def commands() -> dict[str, Command]:
    """The registered commands by name, in :data:`COMMANDS` order (their modules are light)."""
    found: dict[str, Command] = {}
    for module in COMMANDS:
        mod = importlib.import_module(module if "." in module else f"{__name__}.{module}")
        command = getattr(mod, "COMMAND", None)
        if not isinstance(command, Command):
            raise DaLifError(f"{mod.__name__} is registered as a command but declares no "
                             "COMMAND = Command(...) (a bug in the registration)")
        if command.name in found:
            raise DaLifError(f"command {command.name!r} is registered twice")
        found[command.name] = command
    return found


def epilog(registered: dict[str, Command]) -> str:
    """The top-level help's closing text: the pipeline, one line per command that declares
    one, then the exit codes."""
    import textwrap

    lines = ["pipeline:"]
    for c in registered.values():
        if c.pipeline:
            lines += textwrap.wrap(c.pipeline, 92, initial_indent=f"  {c.name:<10} ",
                                   subsequent_indent=" " * 13)
    return "\n".join([*lines, "", "exit codes: 0 ok, 1 verification failed, 2 bad input, "
                      "3 internal error (a bug: report it)", ""])


def build_parser() -> argparse.ArgumentParser:
    registered = commands()
    parser = argparse.ArgumentParser(
        prog="dalif-deploy",
        description="Deploy DA-LIF spiking networks: PyTorch -> NIR -> Loihi 2 fixed point -> "
        "Lava, with a bit-accurate emulator checking every stage.",
        epilog=epilog(registered),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dalif-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in registered.values():
        p = sub.add_parser(c.name, help=c.help, description=c.description,
                           formatter_class=_HelpFormatter)
        _defer(p, c.add_arguments)
        p.set_defaults(handler=c.run)
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


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_outputs(args: argparse.Namespace, command: Command | None = None) -> None:
    """Refuse unwritable outputs, outputs that are inputs and two outputs on one path before
    any work is done (training or verifying can take minutes): the outputs and inputs the
    command declares."""
    from dalif_deploy.base.files import check_output_path

    command = command or commands()[args.command]
    for k in command.outputs:
        if getattr(args, k, None) == "-" and k not in command.stdout_outputs:
            raise DaLifError(f"{_flag(k)} -: this output cannot go to stdout; "
                             "give a file path (./- for a file named '-')")
    paths = [(k, getattr(args, k)) for k in command.outputs
             if getattr(args, k, None) not in (None, "-")]
    inputs = tuple(str(getattr(args, k)) for k in command.inputs if getattr(args, k, None))
    for _, p in paths:
        check_output_path(p, inputs)
    seen: dict[str, str] = {}
    for k, p in paths:
        key = os.path.abspath(p)
        if key in seen:
            raise DaLifError(f"{_flag(seen[key])} and {_flag(k)} both write {p}; give them "
                             "different paths")
        seen[key] = k
    for k in command.output_dirs:
        folder = getattr(args, k, None)
        if folder is not None and os.path.exists(folder) and not os.path.isdir(folder):
            raise DaLifError(f"{_flag(k)} {folder} is a file; give a directory")
        if folder is not None and os.path.isdir(folder):
            for name in command.dir_files:
                check_output_path(os.path.join(folder, name))
    if command.check is not None:
        command.check(args)


def check_launch(command: Command) -> None:
    """Refuse a command torchrun started several times that does not shard (each process would
    do all the work and write the same files)."""
    if not command.sharded and os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        sharded = [c.name for c in commands().values() if c.sharded]
        raise DaLifError(f"{command.name} runs in one process; under torchrun only "
                         f"{' and '.join(sharded)} shard their data: run it without torchrun")

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
        command = commands()[args.command]
        check_option_values(args)
        check_launch(command)
        check_inputs(args, command)
        check_outputs(args, command)
        from dalif_deploy.base.files import output_transaction
        from dalif_deploy.base.resources import reuse_freed_memory

        if command.reuse_freed_memory:  # tensors reused, not faulted in afresh every step
            reuse_freed_memory()

        # all outputs at the end, or none after a failure (a verdict keeps its report)
        with output_transaction(output_paths(args, command), commit_on=(VerificationFailed,)):
            code = getattr(args, "model_code", None)
            if code is None:
                rc = args.handler(args)
            else:  # the user named this code: checkpoints recording a factory may use it
                from dalif_deploy.float_model.factory import factory_calls, use_model_code

                before = factory_calls()
                with use_model_code(code):
                    rc = args.handler(args)
                if factory_calls() == before:  # never silently ignore an option
                    warn(f"--model-code {code} was not used: nothing here is a checkpoint of "
                         "a user architecture")
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
