"""The input encoding type: how a sample is fed to a network over its T time steps.

Two encodings exist (docs/DESIGN.md sections 2 and 6):

* :data:`ANALOG` - a static frame ``[B, *frame]`` (e.g. an image), fed unchanged at every
  step; on the chip it is sent as graded 8-bit values.
* :data:`EVENTS` - a binary event tensor ``[B, T, *frame]`` (e.g. DVS), frame ``t`` fed at
  step ``t``; on the chip it is sent as binary spikes.

Files and JSON keep the encoding's :attr:`Encoding.name` (``"analog"``/``"events"``); code
compares encodings only as objects (``enc is EVENTS``, ``enc.time_axis``), never as strings.
Adding an encoding is one more instance here (and its name in :data:`ENCODINGS`).

This module is layer 0: it imports nothing of the project but its errors, and works on numpy
arrays and torch tensors alike (it only indexes them and reads ``.shape``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import DaLifError


@dataclass(frozen=True, eq=False)
class Encoding:
    """One input encoding. Instances are singletons: compare with ``is``.

    Attributes:
        name: the stored form in files, metadata and JSON.
        time_axis: the data carry one frame per step (``[B, T, *frame]``), else one frame
            for all steps (``[B, *frame]``).
        binary: the values must be 0 or 1 (spikes).
    """

    name: str
    time_axis: bool
    binary: bool

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Encoding.{self.name.upper()}"

    @staticmethod
    def from_name(name: str | Encoding, what: str = "encoding") -> Encoding:
        """The encoding called ``name`` (an :class:`Encoding` is returned as is).

        ``what`` names the value in the error, e.g. ``"input encoding"``.
        """
        found = name if isinstance(name, Encoding) else Encoding.find(name)
        if found is not None:
            return found
        choices = " or ".join(repr(e.name) for e in ENCODINGS)
        raise DaLifError(f"{what} must be {choices}, not {name!r}")

    @staticmethod
    def find(name: object) -> Encoding | None:
        """The encoding called ``name``, or None if there is none."""
        return next((e for e in ENCODINGS if e.name == name), None)

    def lead(self, batch: int, timesteps: int) -> tuple[int, ...]:
        """The dimensions before the frame: ``(B,)`` or ``(B, T)``."""
        return (batch, timesteps) if self.time_axis else (batch,)

    def batch_shape(self, batch: int, timesteps: int, frame: Sequence[int]) -> tuple[int, ...]:
        """The shape of a batch of ``batch`` samples with frames of shape ``frame``."""
        return (*self.lead(batch, timesteps), *(int(d) for d in frame))

    def frame(self, x: Any, t: int) -> Any:
        """The input of step ``t``: ``x`` itself (analog) or ``x[:, t]`` (events)."""
        return x[:, t] if self.time_axis else x

    def timesteps_of(self, x: Any) -> int | None:
        """T as stored in the data (events: dimension 1), or None when the data carry none."""
        return int(x.shape[1]) if self.time_axis and len(x.shape) > 1 else None

    def check(self, x: Any, timesteps: int, frame: Sequence[int] | None = None,
              where: str = "input") -> None:
        """Raise unless ``x`` is a batch of this encoding for ``timesteps`` steps.

        Events need ``[B, T, ...]`` with T = ``timesteps``; with ``frame`` the whole shape must
        be ``[B, (T,) *frame]``.
        """
        shape = tuple(int(d) for d in x.shape)
        if frame is not None:
            want = self.batch_shape(shape[0] if shape else 0, timesteps, frame)
            if shape != want:
                raise DaLifError(f"{where} has shape {shape}; {self.name} input for "
                                 f"T={timesteps} expects {want}")
        elif self.time_axis and (len(shape) < 2 or shape[1] != timesteps):
            raise DaLifError(f"event {where} must be [B, T={timesteps}, ...], got {shape}")

    def check_values(self, x: Any, where: str = "input") -> None:
        """Raise if this encoding is binary and ``x`` holds a value other than 0 or 1."""
        if self.binary and not bool(((x == 0) | (x == 1)).all()):
            raise DaLifError(f"{where}: {self.name} input must be binary (0 or 1 only); "
                             "scale or threshold the data first")


ANALOG = Encoding("analog", time_axis=False, binary=False)
EVENTS = Encoding("events", time_axis=True, binary=True)
#: every encoding, in the order choices are listed
ENCODINGS: tuple[Encoding, ...] = (ANALOG, EVENTS)
#: their stored names (e.g. for command-line choices)
ENCODING_NAMES: tuple[str, ...] = tuple(e.name for e in ENCODINGS)
