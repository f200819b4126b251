"""Files in and out (issue 11): outputs never replace a special file, signals leave no temporary
file, inputs are read only from regular files (a FIFO or /dev/zero never hangs a loader)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, default_signals

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.files import (
    TEMP_MARK,
    WRITE_DELAY_ENV,
    atomic_path,
    atomic_write_text,
    check_input_file,
    check_output_path,
    output_target,
    remove_stale_temps,
)
from dalif_deploy.cli import build_parser, commands, main

ROOT = REPO_ROOT
SHIPPED = ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _special(kind: str, d: Path) -> Path:
    """A destination of the given kind inside ``d`` (what a careless ``-o`` might name)."""
    p = d / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(d)  # AF_UNIX paths are limited to 108 bytes; bind a relative name
        try:
            s.bind(p.name)
        finally:
            os.chdir(cwd)
        s.close()  # the socket file stays
    elif kind == "chardev":  # a /dev/null of our own, so nothing of the system's is at stake
        try:
            os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("cannot create a character device here (not root / no CAP_MKNOD)")
    elif kind == "link-to-fifo":
        os.mkfifo(d / "fifo-target")
        p.symlink_to(d / "fifo-target")
    elif kind == "link-to-stdout":
        p.symlink_to("/proc/self/fd/1")
    elif kind == "dev-stdout":
        p.symlink_to("/dev/stdout")
    elif kind == "dangling-link":
        p.symlink_to(d / "nowhere" / "x")
    else:
        raise AssertionError(kind)
    return p


def _state(d: Path) -> dict[str, tuple[int, str | None]]:
    """Every entry of ``d``: its file type, and where it links to."""
    return {p.name: (stat.S_IFMT(os.lstat(p).st_mode),
                     os.readlink(p) if p.is_symlink() else None) for p in d.iterdir()}


REFUSED = r"FIFO|socket|character device|process's file descriptors|does not exist"
KINDS = ("fifo", "socket", "chardev", "link-to-fifo", "link-to-stdout", "dev-stdout",
         "dangling-link")
def _output_argvs() -> dict[str, list[str]]:
    """Every output option of every registered command (their declarations), each in an argv
    that parses: the required arguments filled in ({pt} for paths, a valid value otherwise),
    the other required outputs in {tmp}, the option itself on {out}."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    found = {}
    for name, command in commands().items():
        p = sub.choices[name]
        p.format_usage()  # its deferred arguments
        acts = {a.dest: a for a in p._actions}
        for out in command.outputs:
            argv = [name]
            for a in p._actions:
                if a.dest == out or not (a.required or not a.option_strings):
                    continue
                value = ("{pt}" if a.dest in command.inputs else f"{{tmp}}/other-{a.dest}"
                         if a.dest in command.outputs else a.choices[0] if a.choices else "8")
                argv += [a.option_strings[0], value] if a.option_strings else [value]
            found[f"{name} {acts[out].option_strings[-1]}"] = [
                *argv, acts[out].option_strings[0], "{out}"]
    return found


COMMANDS = _output_argvs()


class WorkStarted(BaseException):
    """A network was evaluated (a BaseException, so the CLI cannot turn it into exit 2)."""


def _argv(template: list[str], out: Path, tmp: Path) -> list[str]:
    return [a.replace("{out}", str(out)).replace("{pt}", str(SHIPPED)).replace("{tmp}", str(tmp))
            for a in template]


@pytest.mark.parametrize("kind", ["fifo", "link-to-stdout"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_output_option_refuses_special_files_before_any_work(command, kind, tmp_path,
                                                                   capsys, monkeypatch):
    out = _special(kind, tmp_path)
    before = _state(tmp_path)
    # Refused up front, not after training or verifying: any network evaluation fails the test
    # (a clock bound here failed on a loaded machine).
    def work_started(*_a, **_k):
        raise WorkStarted(command)

    monkeypatch.setattr(torch.nn.Module, "__call__", work_started)
    for name in ("conv2d", "linear"):
        monkeypatch.setattr(torch.nn.functional, name, work_started)
    assert main(_argv(COMMANDS[command], out, tmp_path)) == 2
    line = _one_error(capsys)
    assert any(w in line for w in REFUSED.split("|")), line
    assert _state(tmp_path) == before  # nothing replaced, nothing left beside it


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["dataset --out", "simulate --json"])
def test_every_kind_of_special_destination_is_refused(command, kind, tmp_path, capsys):
    out = _special(kind, tmp_path)
    before = _state(tmp_path)
    assert main(_argv(COMMANDS[command], out, tmp_path)) == 2
    line = _one_error(capsys)
    assert any(w in line for w in REFUSED.split("|")), line
    assert _state(tmp_path) == before


def test_demo_refuses_a_special_report_file(tmp_path, capsys):
    os.mkfifo(tmp_path / "demo-report.json")
    assert main(["demo", "--out-dir", str(tmp_path), "--lava-samples", "0"]) == 2
    assert "FIFO" in _one_error(capsys)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "demo-report.json").st_mode)
    assert _state(tmp_path).keys() == {"demo-report.json"}


def test_the_systems_dev_null_stays_a_device():
    """Refused by the checks before anything is created or opened (we run as root)."""
    for p in ("/dev/null", "/dev/stdout", "/proc/self/fd/1"):
        with pytest.raises(DaLifError, match=REFUSED):
            check_output_path(p)
        with pytest.raises(DaLifError, match=REFUSED):  # noqa: PT012 - the body must not run
            with atomic_path(p):
                raise AssertionError("atomic_path accepted a special file")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert not [n for n in os.listdir("/dev") if TEMP_MARK in n]


@pytest.mark.parametrize("argv", [
    ["dataset", "digits", "-o", "-"],
    ["export", str(SHIPPED), "-o", "-"],
    ["export", str(SHIPPED), "--onnx", "-"],
    ["verify", str(SHIPPED), "--report", "-"],
])
def test_dash_is_stdout_only_for_json(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a file named '-' would land here
    assert main(argv) == 2
    assert "cannot go to stdout" in _one_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_link_to_a_regular_file_is_written_through(tmp_path, capsys):
    """The target is replaced atomically and the link stays a link (like `> link` in a shell);
    the temporary file is made beside the target, so the rename stays on one file system."""
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "d.npz"
    target.write_bytes(b"old")
    link = tmp_path / "latest.npz"
    link.symlink_to(Path("real") / "d.npz")
    assert main(["dataset", "digits", "-o", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(Path("real") / "d.npz")
    with np.load(target) as z:
        assert z["x"].shape == (450, 1, 8, 8)
    assert _state(tmp_path).keys() == {"real", "latest.npz"}
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["d.npz"]
    assert output_target(link) == target
    capsys.readouterr()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dest = tmp_path / "r.json"
    dead = tmp_path / f".r.json{TEMP_MARK}{_dead_pid()}-abcd1234"
    live = tmp_path / f".r.json{TEMP_MARK}{os.getppid()}-abcd1234"  # a running process's
    other = tmp_path / f".s.json{TEMP_MARK}{_dead_pid()}-abcd1234"  # another destination's
    for p in (dead, live, other):
        p.write_text("partial")
    atomic_write_text(dest, "{}")
    assert dest.read_text() == "{}"
    assert _state(tmp_path).keys() == {"r.json", live.name, other.name}
    assert remove_stale_temps(tmp_path / "s.json") == [other]


def test_temporary_names_follow_the_pattern(tmp_path):
    with atomic_path(tmp_path / "out.fxp") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(f".out.fxp{TEMP_MARK}{os.getpid()}-")
        assert remove_stale_temps(tmp_path / "out.fxp") == []  # ours, still being written
    assert [p.name for p in tmp_path.iterdir()] == ["out.fxp"]  # renamed; nothing else left


# --- signals during a write -----------------------------------------------------------------

def _cli(args: list[str], env_extra: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, **env_extra}
    return subprocess.Popen([sys.executable, "-m", "dalif_deploy", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def _wait_for_temp(d: Path, proc: subprocess.Popen, limit: float = 90) -> Path:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        temps = [p for p in d.iterdir() if TEMP_MARK in p.name]
        if temps:
            return temps[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the write never started")


SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGKILL")


def test_signals_during_a_write_leave_no_temporary_file(tmp_path, capsys):
    """Each signal arrives in the middle of `dataset -o`'s np.savez (the test hook delays the
    first write by a minute); all commands run side by side."""
    runs = {}
    for name in SIGNALS:
        d = tmp_path / name
        d.mkdir()
        runs[name] = (d, _cli(["dataset", "digits", "-o", str(d / "d.npz")],
                              {WRITE_DELAY_ENV: "60"}))
    left = {}
    for name, (d, proc) in runs.items():
        left[name] = _wait_for_temp(d, proc)
        proc.send_signal(getattr(signal, name))
    for name, (d, proc) in runs.items():
        _, err = proc.communicate(timeout=60)
        signum = getattr(signal, name)
        if name == "SIGKILL":
            assert proc.returncode == -signum
            assert [p.name for p in d.iterdir()] == [left[name].name]  # cannot be caught...
            assert main(["dataset", "digits", "-o", str(d / "d.npz")]) == 0
            assert [p.name for p in d.iterdir()] == ["d.npz"]  # ...the next run removes it
            continue
        assert proc.returncode == 128 + signum, (name, err)
        assert err.strip().splitlines() == [f"interrupted ({name})"], (name, err)
        assert list(d.iterdir()) == [], name  # no temporary file, no partial output
    capsys.readouterr()


# --- inputs: regular files only ---------------------------------------------------------------

def test_check_input_file_accepts_regular_files_and_links_to_them(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "link").symlink_to("f")
    assert check_input_file(tmp_path / "link", "a file") == tmp_path / "link"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    for p, word in ((tmp_path / "fifo", "FIFO"), (tmp_path / "zero", "character device"),
                    (Path("/dev/zero"), "character device"), (tmp_path, "is a directory"),
                    (tmp_path / "nope", "no such file")):
        with pytest.raises(DaLifError, match=f"{word}.*expected a checkpoint"):
            check_input_file(p, "a checkpoint")


_LOADERS = textwrap.dedent("""
    import json, os, resource, signal, sys
    from pathlib import Path
    from dalif_deploy.targets.registry import file_kind
    from dalif_deploy.float_model.loading import load_checkpoint
    from dalif_deploy.cli import build_parser, commands, main
    from dalif_deploy.converters.ir.graph import read_nir
    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.base.errors import DaLifError
    from dalif_deploy.verification.describe import describe
    from dalif_deploy.fixedpoint.fxp_format import load_program
    from dalif_deploy.targets.onnxruntime import OnnxRunner, describe_onnx

    signal.alarm(60)  # a loader blocked on a FIFO dies instead of hanging the test
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))  # /dev/zero
    d = Path(sys.argv[1])
    loaders = {"load_checkpoint": (load_checkpoint, ".pt"), "read_nir": (read_nir, ".nir"),
               "load_program": (load_program, ".fxp"), "describe_onnx": (describe_onnx, ".onnx"),
               "OnnxRunner": (OnnxRunner, ".onnx"), "file_kind": (file_kind, ".fxp"),
               "describe": (describe, ".nir"),
               "cifar10": (lambda p: load_dataset("cifar10", "test", str(p.parent)), "")}
    out = {}
    for src in ("fifo", "zero"):
        for name, (load, suffix) in loaders.items():
            p = d / src / ("test_batch" if name == "cifar10" else "m" + suffix)
            print(name, src, file=sys.stderr, flush=True)
            try:
                load(p)
                out[f"{name} {src}"] = "accepted"
            except DaLifError as e:
                out[f"{name} {src}"] = str(e)
            except BaseException as e:
                out[f"{name} {src}"] = f"{type(e).__name__}: {e}"
        for cmd in (["inspect"], ["simulate", "--backend", "emulator"]):
            out[f"{cmd[0]} {src}"] = main([cmd[0], str(d / src / "m.fxp"), *cmd[1:]])
    print(json.dumps(out))
""")


def test_every_loader_refuses_fifos_and_dev_zero(tmp_path):
    """In a child with a timeout and a memory limit: a loader that opened the FIFO would block
    forever, one that read /dev/zero would fill the memory."""
    (tmp_path / "fifo").mkdir()
    (tmp_path / "zero").mkdir()
    for name in ("m.pt", "m.nir", "m.fxp", "m.onnx", "test_batch"):
        os.mkfifo(tmp_path / "fifo" / name)
        (tmp_path / "zero" / name).symlink_to("/dev/zero")
    r = subprocess.run([sys.executable, "-c", _LOADERS, str(tmp_path)], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out) == 20
    for case, result in out.items():
        if case.startswith(("inspect", "simulate")):
            assert result == 2, case
            continue
        word = "FIFO" if case.endswith("fifo") else "character device"
        assert f"is a {word}" in result and "not a regular file" in result, (case, result)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 4 and all("not a regular file" in ln for ln in errors), r.stderr
