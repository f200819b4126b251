"""The layering of docs/ARCHITECTURE.md, checked from the source with ``ast``.

Every project module belongs to one layer; a module may import (at module level or inside a
function) only modules of its own layer or below, and the import graph has no cycle. argparse
appears only in the CLI layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"dalif_deploy": "dalif_deploy", "converters": "dalif_deploy.converters",
            "targets": "dalif_deploy.targets"}

#: layer, bottom to top, by folder: a module's layer is its longest matching prefix here.
#: The folders are the layers (docs/ARCHITECTURE.md draws the tree).
LAYERS: dict[str, int] = {
    "dalif_deploy.base": 0,  # errors, safe files, schema, resources, encoding, device, sharding
    "dalif_deploy": 1,  # the package itself: re-exports the program (lazy strings for the rest)
    "dalif_deploy.fixedpoint": 1,  # the program, .fxp, limits, rules, arithmetic, timing, cost
    "dalif_deploy.neurons": 2,  # the neuron protocol and the registered neurons
    "dalif_deploy.datasets": 2,  # loaders, event file formats, event sets
    "dalif_deploy.float_model": 2,  # zoo, time loop, checkpoints, training
    "dalif_deploy.converters.ir": 3,  # the NIR IR: reading, topology, the operation table
    "dalif_deploy.converters": 4,  # front ends, passes, exporters
    "dalif_deploy.targets": 5,  # back ends, their protocol and registry
    "dalif_deploy.verification": 6,  # verify's stages, the verdict, the report, inspect
    "dalif_deploy.studies": 7,  # sweep, finetune, compare (built on verify)
    "dalif_deploy.cli": 8,  # the command line (one module per command)
    "dalif_deploy.__main__": 8,
}

#: (importer, imported) pairs that break the layering today; each re-layout step removes its own
#: and this set must end empty.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, pkg in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = f.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join((pkg, *parts))] = f
    return mods


MODULES = _modules()


def layer_of(module: str) -> int:
    best = max((k for k in LAYERS if module == k
                or (module.startswith(k + ".") and k != "dalif_deploy")), key=len, default=None)
    if best is None:
        raise AssertionError(f"module {module} has no layer in LAYERS: add it (and to "
                             "docs/ARCHITECTURE.md)")
    return LAYERS[best]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        bases = [node.module or ""]
    else:
        pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        pkg = pkg[:len(pkg) - (node.level - 1)]
        bases = [".".join(pkg + ([node.module] if node.module else []))]
    out = []
    for base in bases:
        for alias in node.names:  # `from pkg import module` imports pkg.module
            sub = f"{base}.{alias.name}"
            out.append(sub if sub in MODULES else base)
    return out


def imports_of(module: str) -> set[str]:
    """Project modules imported anywhere in ``module`` (function-level imports included)."""
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            names = _resolve(module, path, node)
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            while n and n not in MODULES:
                n = n.rpartition(".")[0]
            if n and n != module:
                found.add(n)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_no_module_imports_a_layer_above_its_own():
    bad = {(m, d) for m, deps in GRAPH.items() for d in deps if layer_of(d) > layer_of(m)}
    new = sorted(bad - KNOWN_VIOLATIONS)
    assert not new, "imports above the importer's layer: " + ", ".join(
        f"{a} (layer {layer_of(a)}) -> {b} (layer {layer_of(b)})" for a, b in new)
    fixed = sorted(KNOWN_VIOLATIONS - bad)
    assert not fixed, f"no longer violations, remove them from KNOWN_VIOLATIONS: {fixed}"


def import_cycles() -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: set[tuple[str, ...]] = set()

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if "dalif_deploy" in (m, d):
                continue  # the package __init__ imports only the core (checked by layers)
            if d not in index:
                visit(d)
                low[m] = min(low[m], low[d])
            elif d in stack:
                low[m] = min(low[m], index[d])
        if low[m] == index[m]:
            comp = []
            while True:
                x = stack.pop()
                comp.append(x)
                if x == m:
                    break
            if len(comp) > 1:
                out.add(tuple(sorted(comp)))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle():
    cycles = import_cycles()
    assert not cycles - KNOWN_CYCLES, f"import cycles: {sorted(cycles - KNOWN_CYCLES)}"
    assert not KNOWN_CYCLES - cycles, f"cycles gone, remove them from KNOWN_CYCLES: " \
        f"{sorted(KNOWN_CYCLES - cycles)}"


def test_argparse_only_in_the_cli():
    users = sorted(m for m, p in MODULES.items()
                   if "argparse" in p.read_text() and layer_of(m) != LAYERS["dalif_deploy.cli"])
    assert users == sorted(m for m in KNOWN_ARGPARSE), f"argparse outside the CLI: {users}"


#: library modules that still hold command-line handlers (each re-layout step empties its own)
KNOWN_ARGPARSE: set[str] = set()
#: import cycles that exist today (each listed by its modules, sorted); must end empty
KNOWN_CYCLES: set[tuple[str, ...]] = set()


@pytest.mark.parametrize("module", ["dalif_deploy.fixedpoint.limits",
                                    "dalif_deploy.base.geometry"])
def test_base_modules_import_nothing_of_the_project(module):
    assert GRAPH[module] == set()


def test_architecture_doc_lists_every_module():
    """docs/ARCHITECTURE.md has a line for every module (it is the map: keep it true)."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = []
    for path in MODULES.values():
        rel = path.relative_to(ROOT).as_posix()
        in_cli = path.parent.name == "cli" and f"`{path.name}`" in doc
        bare_package = path.name == "__init__.py" and len(path.read_text().splitlines()) < 40
        if rel not in doc and not in_cli and not bare_package:
            missing.append(rel)
    assert not missing, f"add to docs/ARCHITECTURE.md: {missing}"


def private_crossings(module: str) -> list[str]:
    """Leading-underscore names that ``module`` takes from another project module: imported
    (``from .stages import _loop``) or read off an imported module (``stages._loop``)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    modules_bound: dict[str, str] = {}  # local name -> project module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias, target in zip(node.names, _resolve(module, path, node), strict=True):
                if target in MODULES and target.endswith(f".{alias.name}"):
                    modules_bound[alias.asname or alias.name] = target
                elif (alias.name.startswith("_") and not alias.name.startswith("__")
                      and target in MODULES and target != module):
                    found.append(f"{module}:{node.lineno} imports {alias.name} from {target}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in MODULES:
                    modules_bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules_bound and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append(f"{module}:{node.lineno} reads {modules_bound[node.value.id]}."
                         f"{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    """A name another module needs is part of its interface: no leading underscore."""
    found = [line for m in MODULES for line in private_crossings(m)]
    assert not found, "private names used across modules (make them public): " + "; ".join(found)


@pytest.mark.parametrize("source", [
    "from .stages import _hidden\n",
    "from dalif_deploy.verification.stages import _hidden\n",
    "from dalif_deploy.verification import stages\nx = stages._hidden\n",
    "from . import stages as st\nx = st._hidden\n",
])
def test_private_crossings_are_detected(source, tmp_path, monkeypatch):
    """The check above sees every form (a guard against it passing vacuously)."""
    fake = tmp_path / "pipeline.py"
    fake.write_text(source)
    monkeypatch.setitem(MODULES, "dalif_deploy.verification.pipeline", fake)
    assert private_crossings("dalif_deploy.verification.pipeline")


def test_no_module_shadows_the_standard_library():
    """No module or folder is named like a standard-library module (``import x`` would be
    ambiguous to a reader, and to Python on a sys.path that lists the folder)."""
    import sys

    clashes = sorted(f"{m} ({part})" for m in MODULES for part in m.split(".")
                     if part in sys.stdlib_module_names)
    assert not clashes, f"named like a standard-library module: {clashes}"


def test_test_modules_never_import_each_other():
    """Shared builders live in tests/helpers/ and shared fixtures in tests/conftest.py: a test
    module imported by another would need every test folder on sys.path (and be collected
    twice under two names when the folders differ)."""
    tests = ROOT / "tests"
    names = {p.stem for p in tests.rglob("test_*.py")}
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {m}"
                      for m in mods if m.split(".")[0] in names]
    assert not found, f"move the shared code to tests/helpers/: {found}"
    assert "sys.path" not in (tests / "conftest.py").read_text()
