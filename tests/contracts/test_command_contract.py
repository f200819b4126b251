"""The command registry's contract: a command is one module in dalif_deploy/cli/ declaring
``COMMAND = Command(...)`` plus one line in ``COMMANDS``; the parser, the epilog, the output
checks and the I/O safety tests are derived from the declarations, and an option that holds a
path is declared as an input or an output (else the output checks would silently skip it)."""

from __future__ import annotations

import argparse
import pkgutil
import re
import sys
import types

import pytest

import dalif_deploy.cli as cli
from dalif_deploy.cli import build_parser, commands, main
from dalif_deploy.cli.command import Command

#: metavars that name a file or folder, and dests of arguments without a metavar that do
PATH_METAVARS = re.compile(r"PATH|FILE|PNG|HTML|H5|FXP|CKPT|MODEL|NPZ|DIR|DATASET|\.")
PATH_DESTS = re.compile(r"out|.*_dir|.*dataset|json|plot|report|file|checkpoint|graph|program")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for p in sub.choices.values():
        p.format_usage()  # adds the deferred arguments
    return dict(sub.choices)


def path_dests(p: argparse.ArgumentParser) -> set[str]:
    """The dests of ``p``'s arguments that hold a path, by their metavar (or dest)."""
    found = set()
    for a in p._actions:
        if a.nargs == 0 or a.dest in ("help", argparse.SUPPRESS):
            continue
        if (PATH_METAVARS.search(a.metavar) if isinstance(a.metavar, str)
                else PATH_DESTS.fullmatch(a.dest)):
            found.add(a.dest)
    return found


def test_every_command_module_is_registered():
    """A module of dalif_deploy/cli declaring a COMMAND is in COMMANDS (else it has no parser
    entry, no output checks)."""
    declared = set()
    for info in pkgutil.iter_modules(cli.__path__):
        mod = __import__(f"dalif_deploy.cli.{info.name}", fromlist=["_"])
        if isinstance(getattr(mod, "COMMAND", None), Command):
            declared.add(info.name)
    assert declared == set(cli.COMMANDS)


def test_the_parser_and_epilog_are_the_registered_commands():
    registered = commands()
    parser = build_parser()
    assert list(_subparsers(parser)) == list(registered)
    epilog = parser.epilog
    for c in registered.values():
        assert (f"  {c.name:<10} " in epilog) == bool(c.pipeline), c.name


@pytest.mark.parametrize("name", list(commands()))
def test_every_path_option_is_a_declared_input_or_output(name):
    """An option naming a file it writes but missing from ``outputs`` would bypass the output
    checks (a special file, an input overwritten): each path option is declared."""
    command = commands()[name]
    p = _subparsers(build_parser())[name]
    declared = {*command.inputs, *command.outputs, *command.output_dirs}
    assert path_dests(p) <= declared, sorted(path_dests(p) - declared)
    dests = {a.dest for a in p._actions}
    assert declared <= dests, sorted(declared - dests)  # no stale declaration


def _fake_module(monkeypatch, command: Command) -> None:
    mod = types.ModuleType("fake_cli.stats")
    mod.COMMAND = command
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, mod.__name__])


def _stats(ran: list) -> Command:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", metavar="FILE")
        p.add_argument("--json", metavar="PATH")
        p.add_argument("-o", "--out")

    return Command(name="stats", help="numbers of a file", description="Count things.",
                   add_arguments=add, run=lambda args: ran.append(args) or 0,
                   inputs=("file",), outputs=("json", "out"), stdout_outputs=("json",),
                   pipeline="numbers of any file")


def test_a_registered_command_gets_its_parser_epilog_help_and_output_checks(
        monkeypatch, tmp_path, capsys):
    ran: list = []
    _fake_module(monkeypatch, _stats(ran))
    parser = build_parser()
    assert "stats" in _subparsers(parser)
    assert "  stats      numbers of any file" in parser.epilog
    with pytest.raises(SystemExit):
        main(["stats", "--help"])
    assert "Count things." in capsys.readouterr().out
    m = tmp_path / "m.fxp"
    m.write_text("input")
    # `stats m.fxp --json m.fxp` would overwrite its own input: refused before it runs
    assert main(["stats", str(m), "--json", str(m)]) == 2
    assert "is also an input of this command" in capsys.readouterr().err
    assert m.read_text() == "input" and ran == []
    assert main(["stats", str(m), "-o", "-"]) == 2  # -o is no stdout output
    assert "cannot go to stdout" in capsys.readouterr().err
    assert main(["stats", str(m), "--json", str(tmp_path / "a"), "-o", str(tmp_path / "a")]) == 2
    assert "both write" in capsys.readouterr().err
    assert main(["stats", str(m), "--json", "-"]) == 0 and len(ran) == 1


def test_a_module_registered_without_a_command_is_refused(monkeypatch, capsys):
    mod = types.ModuleType("fake_cli.empty")
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, mod.__name__])
    with pytest.raises(Exception, match="declares no COMMAND"):
        build_parser()


def test_an_undeclared_output_option_is_caught():
    """The check above finds an output option missing from ``outputs``."""
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", metavar="FILE")
        p.add_argument("--report", metavar="HTML")

    p = argparse.ArgumentParser()
    add(p)
    assert path_dests(p) == {"file", "report"}


@pytest.mark.parametrize("argv", [
    ["train", "--model", "digits-cnn", "--dataset", "{f}", "-o", "{f}"],
    ["finetune", "ckpt.pt", "--weight-bits", "4", "--dataset", "{f}", "-o", "{f}"],
    ["compare", "--test-dataset", "{f}", "--json", "{f}"],
])
def test_a_data_set_input_is_never_overwritten(argv, tmp_path, capsys):
    """Data set paths are declared inputs (train had none before): an output on the same file
    is refused before any work, the file untouched."""
    f = tmp_path / "d.npz"
    f.write_bytes(b"data")
    assert main([a.replace("{f}", str(f)) for a in argv]) == 2
    assert "is also an input of this command" in capsys.readouterr().err
    assert f.read_bytes() == b"data"
