"""A recording LIF population: Lava's own bit-accurate LIFReset dynamics plus a recorder.

``Var.get()`` costs ~20 us per element and every extra process is an OS process, so results
are not read through Vars or sink processes: :class:`RecordingLIF` is Lava's ``LIFReset``
process, and its model :class:`PyRecordingLifModel` runs Lava's ``PyLifResetModelBitAcc``
unchanged (``super().run_spk()``), only noting the spike vector handed to ``reset_voltage`` and
copying ``v``/``u`` after selected steps. On the last step it writes everything to one ``.npz``
file which the parent reads once.

This module imports lava (installing the compatibility hook first).
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import numpy as np

from .compat import install

install()  # before the first lava import (Python 3.11 hook, a no-op where not needed)

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.lif.models import PyLifResetModelBitAcc  # noqa: E402
from lava.proc.lif.process import LIFReset  # noqa: E402


class RecordingLIF(LIFReset):
    """``LIFReset`` that records spikes every step and v (and u) after chosen steps.

    ``record_path``: where the model writes ``spikes [num_steps, n]`` (bool), ``v_steps``,
    ``v [len(v_steps), n]`` and, with ``record_u``, ``u`` likewise, after step ``num_steps``.
    """

    def __init__(self, *, record_path: str, num_steps: int, v_steps: np.ndarray,
                 record_u: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.proc_params["record_path"] = str(record_path)
        self.proc_params["num_steps"] = int(num_steps)
        self.proc_params["v_steps"] = np.asarray(v_steps, dtype=np.int64)
        self.proc_params["record_u"] = bool(record_u)


@implements(proc=RecordingLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRecordingLifModel(PyLifResetModelBitAcc):
    """Lava's bit-accurate LIFReset model with recording; the dynamics are inherited unchanged."""

    # The parent model is registered for LIFReset; clear the inherited registration so the
    # decorator can register this subclass for RecordingLIF (Lava refuses to overwrite it).
    implements_process = None

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        self._path = proc_params["record_path"]
        self._num_steps = proc_params["num_steps"]
        self._v_steps = proc_params["v_steps"]
        self._record_u = proc_params["record_u"]
        self._v_index = {int(s): i for i, s in enumerate(self._v_steps)}
        self._spikes: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._u: np.ndarray | None = None

    def reset_voltage(self, spike_vector: np.ndarray) -> None:
        if self._spikes is None:
            self._spikes = np.zeros((self._num_steps, spike_vector.size), dtype=bool)
        if self.time_step <= self._num_steps:
            self._spikes[self.time_step - 1] = spike_vector.reshape(-1)
        super().reset_voltage(spike_vector)

    def run_spk(self) -> None:
        try:
            self._step()
        except Exception:
            # Lava would hang silently; leave the traceback where the parent looks for it.
            with open(self._path + ".error", "w", encoding="utf-8") as fh:
                fh.write(f"step {self.time_step}:\n{traceback.format_exc()}")
            raise

    def _step(self) -> None:
        super().run_spk()
        row = self._v_index.get(int(self.time_step))
        if row is not None:
            if self._v is None:
                self._v = np.zeros((len(self._v_steps), self.v.size), dtype=np.int32)
                self._u = np.zeros_like(self._v) if self._record_u else None
            self._v[row] = self.v.reshape(-1)
            if self._u is not None:
                self._u[row] = self.u.reshape(-1)
        if self.time_step == self._num_steps:
            self._save()

    def _save(self) -> None:
        n = int(np.prod(self.v.shape))
        empty = np.zeros((len(self._v_steps), n), dtype=np.int32)
        data = {
            "spikes": self._spikes if self._spikes is not None
            else np.zeros((self._num_steps, n), dtype=bool),
            "v_steps": self._v_steps,
            "v": self._v if self._v is not None else empty,
        }
        if self._record_u:
            data["u"] = self._u if self._u is not None else empty
        tmp = self._path + ".tmp.npz"
        np.savez(tmp, **data)
        os.replace(tmp, self._path)
