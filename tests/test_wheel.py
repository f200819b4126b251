"""The wheel works: built from the checkout, it holds every module and the shipped checkpoints,
and installed into a fresh virtual environment it runs the demo from a directory outside the
checkout, importing the installed package (not the checkout).

Offline: the wheel is built with this interpreter's setuptools (``--no-build-isolation``) and
installed without dependencies; the fresh environment sees this one's dependencies through a
``.pth`` file (appended after its own site-packages, so the installed package comes first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from helpers import REPO_ROOT

pytestmark = pytest.mark.slow

#: checkout folder -> where its files go in the wheel (setup.py's FOLDERS)
FOLDERS = {"dalif_deploy": "dalif_deploy", "converters": "dalif_deploy/converters",
           "targets": "dalif_deploy/targets"}
#: a generous bound for a hung subprocess, far above a loaded machine's minutes
HANG = 1800


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, f"{argv}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def expected_members() -> set[str]:
    """Every module of the checkout's three package folders, and the package data."""
    members = {"dalif_deploy/py.typed"}
    for folder, target in FOLDERS.items():
        for path in (REPO_ROOT / folder).rglob("*.py"):
            members.add(f"{target}/{path.relative_to(REPO_ROOT / folder).as_posix()}")
    members |= {f"dalif_deploy/checkpoints/{p.name}"
                for p in (REPO_ROOT / "dalif_deploy" / "checkpoints").iterdir() if p.is_file()}
    return members


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout (a ``build/`` folder left in the checkout
    by an earlier build could otherwise slip stale modules into it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
        "out", "tests"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    (built,) = (tmp / "dist").glob("dalif_deploy-*.whl")
    return built


def test_the_wheel_holds_every_module_and_the_checkpoints(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(expected_members() - names)
    assert not missing, f"not in the wheel: {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "dalif-deploy = dalif_deploy.cli:main" in zipfile.ZipFile(wheel).read(
        entry_points).decode()


def test_the_expected_members_cover_the_subpackages():
    """A guard against the check above passing vacuously."""
    members = expected_members()
    for m in ("dalif_deploy/neurons/dalif.py", "dalif_deploy/converters/ir/graph.py",
              "dalif_deploy/targets/lava/__init__.py", "dalif_deploy/checkpoints/digits-cnn.pt",
              "dalif_deploy/float_model/loading.py", "dalif_deploy/base/pickle_scan.py"):
        assert m in members, m


def test_the_installed_wheel_runs_the_demo_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                         "'purelib'))"], cwd=tmp_path).stdout.strip())
    # this interpreter's dependencies (torch, numpy, nir, ...), offline
    deps = [p for p in sys.path if p.endswith("site-packages")] or [sysconfig.get_path("purelib")]
    (purelib / "dalif_deploy_test_deps.pth").write_text("\n".join(deps) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--ignore-installed", "-q", str(wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = _run([str(python), "-c", "import dalif_deploy, dalif_deploy.neurons, "
                  "dalif_deploy.converters, dalif_deploy.targets; "
                  "print(dalif_deploy.__file__); print(dalif_deploy.neurons.__file__); "
                  "print(dalif_deploy.targets.__file__); print(dalif_deploy.shipped_checkpoint())"],
                 cwd=elsewhere, env=env).stdout.split()
    assert len(where) == 4
    for path in where:
        assert Path(path).is_relative_to(purelib), f"{path} is not from the installed wheel"
        assert not Path(path).is_relative_to(REPO_ROOT), f"{path} comes from the checkout"

    demo = _run([str(env_dir / "bin" / "dalif-deploy"), "demo", "--quiet", "--lava-samples",
                 "0"], cwd=elsewhere, env=env)
    assert "PASSED" in demo.stdout and "Lava     not run" in demo.stdout, demo.stdout
    assert (elsewhere / "out" / "demo-report.html").is_file()
