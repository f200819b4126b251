"""A model from a checkpoint: build the zoo model a checkpoint names and load its weights.

The checkpoint format and its safe reading are :mod:`.checkpoint`'s; this module fits the
weights to the model they claim to be, and finds the shipped checkpoints (package data).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dalif_deploy.base.errors import DaLifError

from . import factory
from .checkpoint import Checkpoint, read_checkpoint
from .zoo import build_model


def build_checked(ckpt: Checkpoint, model_code: str | None = None) -> nn.Module:
    """Build the model of ``ckpt`` and load its weights; mismatches are a DaLifError.

    A model too large for the machine is refused by :func:`.zoo.build_model` (with the
    figure); only a state_dict that does not match the built model says "weights do not fit".
    A user architecture is built by the factory the user names (:mod:`.factory`).
    """
    if "factory" in ckpt.config:
        return factory.build_user_model(ckpt.config, ckpt.state_dict, ckpt.path, model_code)
    model = build_model(ckpt.config)
    try:
        result = model.load_state_dict(ckpt.state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches
        detail = " ".join(ln.strip() for ln in str(e).splitlines()[:2])  # line 2 says which
        raise DaLifError(f"{ckpt.path}: weights do not fit the model: {detail[:300]}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {result.missing_keys[:5]}")
    if result.unexpected_keys:
        problems.append(f"unexpected {result.unexpected_keys[:5]}")
    if problems:
        raise DaLifError(f"{ckpt.path}: weights do not fit model {ckpt.model_name!r}: "
                         + "; ".join(problems))
    return model.eval()


def load_checkpoint(path: str | Path, model: str | None = None,
                    timesteps: int | None = None, model_code: str | None = None) -> Checkpoint:
    """Read and validate a checkpoint (:func:`.checkpoint.read_checkpoint`).

    A plain ``state_dict`` file is accepted when ``model`` (a zoo name) and ``timesteps`` are
    given (or ``model_code``, a factory: :mod:`.factory`); its data set defaults to the zoo
    model's (digits for digits models and factories). Its weights, which no format record
    vouches for, are checked to fit that model.
    """
    ckpt = read_checkpoint(path, model, timesteps, model_code)
    if ckpt.plain_state_dict:
        build_checked(ckpt, model_code)
    return ckpt


def load_model(path: str | Path, model: str | None = None, timesteps: int | None = None,
               model_code: str | None = None) -> tuple[nn.Module, Checkpoint]:
    """Load a checkpoint and return ``(model in eval mode, checkpoint)``; ``model_code`` (or
    :func:`.factory.use_model_code`) names the factory of a user architecture."""
    ckpt = read_checkpoint(path, model, timesteps, model_code)  # the model is built once, here
    return build_checked(ckpt, model_code), ckpt


#: the shipped checkpoints (dalif_deploy/checkpoints/, package data; README "Shipped")
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


def shipped_checkpoint(name: str = "digits-cnn") -> Path:
    """The path of a shipped checkpoint (``digits-cnn`` or ``digits-resnet``), wherever the
    caller's working directory is; an error when this installation has none (they are package
    data, installed by the wheel and by ``make install``'s editable install alike)."""
    path = SHIPPED_DIR / f"{name}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in SHIPPED_DIR.glob("*.pt")) if SHIPPED_DIR.is_dir() else []
        raise DaLifError(f"{path}: no shipped checkpoint {name!r} here"
                         + (f"; shipped: {have}" if have else
                            "; run from a source checkout (dalif_deploy/checkpoints/)"))
    return path
