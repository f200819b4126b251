"""User architectures: ``--model-code FACTORY`` and the checkpoints that record one.

A checkpoint of a network outside the zoo records where its architecture comes from::

    model  {"name": "mynet", "factory": "pkg.module:function" or "path/to/file.py:function",
            "config": {JSON keyword arguments of the factory},
            "input_shape": [C, H, W], "num_classes": N}

The factory string in a file is a record, never an instruction: it is never imported on its own
(a file that could name code to run would run code on ``inspect``). The user's code is imported
only when the user names it, on the command line (``--model-code FACTORY``, which every command
needing the torch module takes) or in Python (``load_model(..., model_code=...)`` or
``with use_model_code(...)``). The factory is called as ``function(**config)`` and its module
must load the checkpoint's state_dict strictly.

This module imports only the standard library at import time (the CLI imports it early).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dalif_deploy.base.errors import DaLifError

#: the option every command needing the torch module takes
FLAG = "--model-code"
FACTORY_HELP = ("the code building a network outside the zoo, as PACKAGE.MODULE:FUNCTION or "
                "PATH/TO/FILE.py:FUNCTION (called with the checkpoint's recorded config as "
                "keyword arguments); imported only because you name it here, never because a "
                "file names it")

_named: str | None = None  # the factory the user named (CLI --model-code or use_model_code)
_modules: dict[str, Any] = {}  # a file or module imported once per process
_built = 0  # factory calls so far: a named factory nothing called was given in vain


@contextmanager
def use_model_code(spec: str | None) -> Iterator[None]:
    """Within the block, checkpoints recording a factory are built with ``spec`` (the user named
    it: ``--model-code``); None leaves things as they are."""
    global _named
    before = _named
    if spec is not None:
        check_spec(spec, FLAG)
        _named = spec
    try:
        yield
    finally:
        _named = before


def factory_calls() -> int:
    """How many modules factories have built in this process (the CLI warns when a
    ``--model-code`` built none: the file given was no checkpoint of a user model)."""
    return _built


def named_model_code() -> str | None:
    """The factory the user named for this run, if any."""
    return _named


def check_spec(spec: Any, where: str) -> str:
    """``spec`` as ``MODULE:FUNCTION`` or ``FILE.py:FUNCTION``, else a DaLifError."""
    if not isinstance(spec, str):
        raise DaLifError(f"{where}: a factory is a string MODULE:FUNCTION or FILE.py:FUNCTION, "
                         f"got {type(spec).__name__}")
    where_, sep, func = spec.rpartition(":")
    ok_module = where_.endswith(".py") or all(p.isidentifier() for p in where_.split("."))
    if not sep or not where_ or not func.isidentifier() or not ok_module:
        raise DaLifError(f"{where}: {spec!r:.120} is not a factory; write "
                         "PACKAGE.MODULE:FUNCTION or PATH/TO/FILE.py:FUNCTION")
    return spec


def _import(where: str) -> Any:
    """The module ``where`` (a dotted name, or a .py file), imported once per process."""
    if where in _modules:
        return _modules[where]
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise DaLifError(f"{FLAG} {where}: no such file")
            name = f"dalif_user_model_{len(_modules)}_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = module  # dataclasses and pickling look modules up by name
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            added = "" not in sys.path and str(Path.cwd()) not in sys.path
            if added:  # a console script does not see the working directory's packages
                sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(where)
            finally:
                if added:
                    sys.path.remove(str(Path.cwd()))
    except DaLifError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code failing is reported in one line
        raise DaLifError(f"{FLAG}: importing {where} failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    _modules[where] = module
    return module


def resolve(spec: str) -> Callable[..., Any]:
    """The factory function ``spec`` names (its module imported now)."""
    where, _, func = check_spec(spec, FLAG).rpartition(":")
    fn = getattr(_import(where), func, None)
    if not callable(fn):
        raise DaLifError(f"{FLAG} {spec}: {where} has no function {func!r}")
    return fn


def build(spec: str, config: dict[str, Any]) -> Any:
    """``function(**config)`` of factory ``spec``: an ``nn.Module`` in eval mode."""
    from torch import nn

    global _built
    _built += 1
    try:
        model = resolve(spec)(**config)
    except DaLifError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code failing is reported in one line
        reason = str(e).splitlines()[0][:160] if str(e) else ""
        raise DaLifError(f"{FLAG} {spec}: the factory failed with config "
                         f"{repr(config)[:200]} ({type(e).__name__}: {reason})") from None
    if not isinstance(model, nn.Module):
        raise DaLifError(f"{FLAG} {spec}: the factory returned {type(model).__name__}, not a "
                         "torch.nn.Module")
    return model


def user_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """A recorded user-model config checked: name, factory, JSON config, input shape."""
    from dalif_deploy.base.resources import INPUT_ELEMENTS_MAX
    from dalif_deploy.base.schema import integer, mapping, shape, text

    out: dict[str, Any] = {"name": text(cfg.get("name"), f"{where}.name"),
                           "factory": check_spec(cfg.get("factory"), f"{where}.factory"),
                           "config": dict(mapping(cfg.get("config", {}), f"{where}.config"))}
    try:
        json.dumps(out["config"], allow_nan=False)
    except (TypeError, ValueError) as e:
        raise DaLifError(f"{where}.config: must be plain JSON (numbers, strings, lists, "
                         f"dicts): {e}") from None
    if "input_shape" not in cfg:
        raise DaLifError(f"{where}: a user model records its input_shape [C, H, W] (1-D: "
                         "[C, L]); add it to the config given to save_checkpoint "
                         "(dd.factory_config does)")
    out["input_shape"] = list(shape(cfg["input_shape"], f"{where}.input_shape", (2, 3),
                                    INPUT_ELEMENTS_MAX))
    if cfg.get("num_classes") is not None:
        out["num_classes"] = integer(cfg["num_classes"], f"{where}.num_classes", 1, 2**16)
    return out


def factory_config(name: str, factory: str, config: dict[str, Any] | None,
                   input_shape: Any, num_classes: int | None = None) -> dict[str, Any]:
    """The model record of a checkpoint of a user architecture (what ``save_checkpoint``
    takes as ``config``)."""
    cfg = {"name": name, "factory": factory, "config": dict(config or {}),
           "input_shape": list(input_shape)}
    if num_classes is not None:
        cfg["num_classes"] = int(num_classes)
    return user_config(cfg, "model config")


def build_user_model(cfg: dict[str, Any], state_dict: dict[str, Any], path: str,
                     model_code: str | None) -> Any:
    """The module of a checkpoint recording factory ``cfg["factory"]``, built with the factory
    the user named (``model_code``, else :func:`named_model_code`) and its weights loaded
    strictly; without one, a DaLifError naming the recorded factory and the flag."""
    spec = model_code or _named
    if spec is None:
        raise DaLifError(f"{path}: model {cfg['name']!r} is built by user code "
                         f"{cfg['factory']!r}, which is never imported because a file names "
                         f"it; pass {FLAG} {cfg['factory']} to run it")
    model = build(spec, cfg.get("config", {}))
    load_strict(model, state_dict, f"{path}: weights do not fit {spec}")
    return model.eval()


def load_strict(model: Any, state_dict: dict[str, Any], where: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)``; a mismatch is one DaLifError naming
    the first differing key and both shapes."""
    own = model.state_dict()
    for k, v in own.items():
        if k not in state_dict:
            raise DaLifError(f"{where}: the checkpoint has no {k!r} (the model's is "
                             f"{list(v.shape)})")
        if tuple(state_dict[k].shape) != tuple(v.shape):
            raise DaLifError(f"{where}: {k!r} is {list(state_dict[k].shape)} in the checkpoint "
                             f"but {list(v.shape)} in the model")
    extra = [k for k in state_dict if k not in own]
    if extra:
        raise DaLifError(f"{where}: the checkpoint's {extra[0]!r} "
                         f"({list(state_dict[extra[0]].shape)}) is not in the model")
    model.load_state_dict(state_dict, strict=True)
