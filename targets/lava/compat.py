"""Python 3.11 compatibility hook for lava-nc 0.10.0 (docs/DESIGN.md section 7).

lava-nc 0.10.0 declares Python < 3.11. Its one known 3.11 breakage: eight dataclass fields in
``lava/magma/compiler/var_model.py`` default to ``ByteEncoder()`` instances, which Python 3.11's
dataclasses reject ("mutable default ... use default_factory"). :func:`install` puts a meta-path
finder in front that serves that one module from a transformed copy of its source, with those
defaults replaced by ``field(default_factory=ByteEncoder)``. Nothing in site-packages is edited.

The hook is guarded: it only acts on Python >= 3.11 with lava-nc exactly 0.10.0, and it refuses
(DaLifError) when the source does not contain exactly the eight expected defaults, so a changed
Lava is never patched blindly.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import sys
from types import ModuleType

from dalif_deploy.base.errors import DaLifError

TARGET_MODULE = "lava.magma.compiler.var_model"
PATCHED_LAVA_VERSION = "0.10.0"
EXPECTED_DEFAULTS = 8
_DEFAULT_RE = re.compile(r"^(\s+\w+: ByteEncoder) = ByteEncoder\(\)\s*$", re.MULTILINE)


def needs_hook(python: tuple[int, int] | None = None, lava_version: str | None = None) -> bool:
    """True when this Python/lava pair needs the transform (3.11+ and lava-nc 0.10.0)."""
    python = python or sys.version_info[:2]
    if lava_version is None:
        try:
            lava_version = importlib.metadata.version("lava-nc")
        except importlib.metadata.PackageNotFoundError:
            return False
    return python >= (3, 11) and lava_version == PATCHED_LAVA_VERSION


def transform_source(source: str) -> str:
    """Replace the ``ByteEncoder()`` instance defaults by ``field(default_factory=...)``.

    Raises DaLifError unless exactly :data:`EXPECTED_DEFAULTS` defaults are found.
    """
    new, count = _DEFAULT_RE.subn(r"\1 = _dalif_field(default_factory=ByteEncoder)", source)
    if count != EXPECTED_DEFAULTS:
        raise DaLifError(f"lava compatibility hook: expected {EXPECTED_DEFAULTS} ByteEncoder "
                         f"defaults in {TARGET_MODULE}, found {count}; this lava-nc is not "
                         f"{PATCHED_LAVA_VERSION} as installed - reinstall lava-nc=="
                         f"{PATCHED_LAVA_VERSION}")
    # Import after the `from __future__` line (which must stay first).
    marker = "from __future__ import annotations\n"
    header = "from dataclasses import field as _dalif_field\n"
    if marker in new:
        return new.replace(marker, marker + header, 1)
    return header + new


class _PatchedLoader(importlib.abc.SourceLoader):
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def get_filename(self, fullname: str) -> str:
        return self.origin

    def get_data(self, path: str) -> bytes:
        with open(path, encoding="utf-8") as fh:
            source = fh.read()
        return transform_source(source).encode("utf-8")

    def path_stats(self, path: str) -> dict:  # no bytecode caching of the transformed source
        raise OSError("not cached")

    def set_data(self, path: str, data: bytes) -> None:  # never write bytecode
        return None

    def exec_module(self, module: ModuleType) -> None:
        code = compile(self.get_data(self.origin), self.origin, "exec", dont_inherit=True)
        exec(code, module.__dict__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 - importlib protocol
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=_PatchedLoader(spec.origin))


_FINDER = _Finder()


def install() -> bool:
    """Install the hook if this environment needs it; return whether it is active.

    Idempotent. Must run before ``lava.magma.compiler.var_model`` is first imported; if that
    module already failed to import it is simply retried through the hook.
    """
    if not needs_hook():
        return False
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return True


def _allow_lava_start_method() -> None:
    """Let Lava's import-time ``multiprocessing.set_start_method('fork')`` succeed.

    Lava calls it without ``force``, which raises "context has already been set" when anything
    in this process fixed the start method earlier (torch, pytest plugins, a forked
    ``multiprocessing`` child). Only ever called in the watchdog's child process, before the
    first lava import, so the parent's multiprocessing state is untouched.
    """
    if "lava.magma.runtime.message_infrastructure.multiprocessing" in sys.modules:
        return
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) is not None:
        multiprocessing.context._default_context._actual_context = None  # noqa: SLF001


def import_lava() -> None:
    """Install the hook and import the Lava parts the target uses (raises DaLifError).

    Call this in the process that runs Lava (the watchdog child), never in the caller.
    """
    install()
    _allow_lava_start_method()
    try:
        import lava.magma.compiler.var_model  # noqa: F401
        import lava.magma.core.run_configs  # noqa: F401
    except ImportError as exc:
        raise DaLifError(f"lava-nc is not importable ({exc}); install it with "
                         f"`pip install --ignore-requires-python lava-nc=={PATCHED_LAVA_VERSION}`"
                         ) from exc
