"""One Lava process per neuron population: per-neuron decays, threshold and bias, with a recorder.

:class:`DaLifPopulation` is our own Lava process (its own Vars and ports), and
:class:`PyDaLifPopulationModel` its CPU ``fixed_pt`` process model, registered with Lava's
``@implements``/``@requires``/``@tag`` decorators. The model is Lava's own fixed-point LIF
arithmetic (``AbstractPyLifModelFixed.subthr_dynamics``, the code ``PyLifResetModelBitAcc``
runs) applied elementwise to per-neuron ``du``, ``dv``, ``vth``, ``bias_mant`` and ``bias_exp``
arrays, so a population with any number of distinct (per-channel) decays is ONE process. Per
step, docs/DESIGN.md section 4 (``rtz(p) = sign(p) * (|p| >> 12)``)::

    u, v = 0, 0, a_rec = 0               at steps with t % reset_interval == reset_offset
    a = a_in + a_rec
    u = rtz(u * (4096 - (du + 1))) + (a << 6),  then one wrap by 2^24 beyond +-2^23
    v = clip(rtz(v * (4096 - dv)) + u + (bias_mant << bias_exp), -(2^23 - 1), 2^23 - 1)
    s = v > (vth << 6);   v = 0 where s

A population whose bias joins the current (``bias_into = "u"``, a CubaLIF bias that ramps
in with du) adds it to u before u's wrap and none to v (:meth:`subthr_dynamics`), the rule of
:func:`dalif_deploy.fixedpoint.arithmetic.lif_step`.

Each population also has its firing (``spike_rule``, ``reset``, ``multi_spike``: the program's,
docs/DESIGN.md section 4 "Reset modes"), which Lava's stock LIF cannot express: ``>=``, a
subtract reset, a reset applied to the next step's integral, and a spike count sent as one
graded spike. The arithmetic is :func:`dalif_deploy.fixedpoint.arithmetic.fire_and_reset`'s, written
again here in numpy int64 so that the model stays torch-free.

Results are not read through Vars (``Var.get()`` costs ~20 us per element) or sink processes
(each is another OS process): the model notes the spike vector every step and copies ``v``
(and ``u``) after selected steps, then writes everything to one ``.npz`` file on its last step,
which the parent reads once. ``progress_path``, when given, gets the step count written every
``progress_every`` steps (a streamed run's progress bar reads it).

``a_rec`` is the port of recurrent synapses (a population back to itself): Lava's Dense sends
at step t what it received at t-1, the population's spikes of its previous step, so at a reset
step it carries the previous sample's last spikes (or, before the first sample, spikes of the
pipeline's fill); they are dropped there, as the program's recurrence gets none at step 0.

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
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.lif.models import AbstractPyLifModelFixed  # noqa: E402


class DaLifPopulation(AbstractProcess):
    """A CUBA LIF population with per-neuron parameters, reset every ``reset_interval`` steps.

    ``du``, ``dv``, ``vth``, ``bias_mant``, ``bias_exp``: integer arrays shaped ``shape`` (or
    scalars, broadcast). ``record_path``: where the model writes ``spikes [num_steps, n]``
    (bool), ``v_steps``, ``v [len(v_steps), n]`` and, with ``record_u``, ``u`` likewise.
    """

    def __init__(self, *, shape: tuple[int, ...], du: Any, dv: Any, vth: Any, bias_mant: Any,
                 bias_exp: Any, reset_interval: int, reset_offset: int, record_path: str,
                 num_steps: int, v_steps: np.ndarray, record_u: bool = False,
                 progress_path: str | None = None, progress_every: int = 1,
                 spike_rule: str = ">", reset: str = "zero", multi_spike: bool = False,
                 bias_into: str = "v", name: str | None = None) -> None:
        super().__init__(shape=shape, name=name, reset_interval=int(reset_interval),
                         spike_rule=str(spike_rule), reset=str(reset),
                         multi_spike=bool(multi_spike), bias_into=str(bias_into),
                         reset_offset=int(reset_offset), record_path=str(record_path),
                         num_steps=int(num_steps),
                         v_steps=np.asarray(v_steps, dtype=np.int64), record_u=bool(record_u),
                         progress_path=progress_path, progress_every=max(1, int(progress_every)))

        def full(x: Any) -> np.ndarray:
            return np.broadcast_to(np.asarray(x, dtype=np.int32), shape).copy()

        self.a_in = InPort(shape=shape)
        self.a_rec = InPort(shape=shape)  # recurrent synapses: zeroed at reset steps
        self.s_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        self.du = Var(shape=shape, init=full(du))
        self.dv = Var(shape=shape, init=full(dv))
        self.vth = Var(shape=shape, init=full(vth))
        self.bias_mant = Var(shape=shape, init=full(bias_mant))
        self.bias_exp = Var(shape=shape, init=full(bias_exp))


@implements(proc=DaLifPopulation, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDaLifPopulationModel(AbstractPyLifModelFixed):
    """Lava's bit-accurate fixed-point LIF step on per-neuron parameter arrays, with recording.

    ``a_in``, ``u``, ``v``, ``bias_mant`` and ``bias_exp`` keep the parent's types; the decays
    and the threshold become arrays (int32: every product is formed in int64 as in the parent).
    """

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_rec: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int16, precision=16)  # as a_in
    du: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        self._interval = proc_params["reset_interval"]
        self._offset = proc_params["reset_offset"] % self._interval
        self._path = proc_params["record_path"]
        self._num_steps = proc_params["num_steps"]
        self._v_steps = proc_params["v_steps"]
        self._record_u = proc_params["record_u"]
        self._progress = proc_params["progress_path"]
        self._progress_every = proc_params["progress_every"]
        self._v_index = {int(s): i for i, s in enumerate(self._v_steps)}
        self._ge = proc_params["spike_rule"] == ">="
        self._reset = proc_params["reset"]
        self._multi = proc_params["multi_spike"]
        self._bias_into_u = proc_params["bias_into"] == "u"
        self._spikes: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._u: np.ndarray | None = None
        self.effective_vth = 0

    def scale_threshold(self) -> None:
        """``vth << 6`` (Loihi MSB-aligns the threshold), once: parameters never change."""
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self) -> np.ndarray:
        """Spike where v exceeds the threshold (strictly; ``>=`` for that spike rule)."""
        return self.v >= self.effective_vth if self._ge else self.v > self.effective_vth

    def subthr_dynamics(self, activation_in: np.ndarray) -> None:
        """Lava's ``subthr_dynamics``, or, for a population whose bias joins the current, the
        same arithmetic with the bias added to u before its wrap and none to v::

            u = wrap(rtz(u * (4096 - (du + 1))) + (a << 6) + bias)
            v = clip(rtz(v * (4096 - dv)) + u)
        """
        if not self._bias_into_u:
            super().subthr_dynamics(activation_in)
            return
        lim = np.int64(self.max_uv_val)
        u = np.int64(self.u) * (self.decay_unity - (self.du + self.ds_offset))
        u = (np.sign(u) * np.right_shift(np.abs(u), self.decay_shift)
             + np.left_shift(np.int64(activation_in), self.act_shift) + self.effective_bias)
        u = np.where(u > lim, u - 2 * lim, np.where(u <= -lim, u + 2 * lim, u))
        self.u[:] = u
        v = np.int64(self.v) * (self.decay_unity - (self.dv + self.dm_offset))
        v = np.sign(v) * np.right_shift(np.abs(v), self.decay_shift) + u
        self.v[:] = np.clip(v, 1 - lim, lim - 1)

    def fire_and_reset(self, fired_before: np.ndarray | None) -> np.ndarray:
        """The population's firing after ``subthr_dynamics``: the previous step's spike
        (``*-next`` resets), the spikes (or counts), the reset. Returns what ``s_out`` sends."""
        theta = np.int64(self.effective_vth) if np.ndim(self.effective_vth) == 0 else \
            self.effective_vth.astype(np.int64)
        v = self.v.astype(np.int64)
        if fired_before is not None:
            v = np.where(fired_before, 0, v) if self._reset == "zero-next" \
                else v - theta * fired_before
            self.v[:] = v
        s = self.spiking_activation()
        if self._multi:
            n = np.where(s, np.floor_divide(v - (0 if self._ge else 1), np.maximum(theta, 1)),
                         0)
            self.v[:] = np.where(s, 0, v) if self._reset == "zero" else v - n * theta
            return n.astype(np.int32)
        if self._reset == "zero":
            self.v[s] = 0
        elif self._reset == "subtract":
            self.v[:] = v - theta * s
        return s

    def run_spk(self) -> None:
        try:
            self._step()
        except Exception:
            # Lava would hang silently; leave the traceback where the parent looks for it.
            with open(self._path + ".error", "w", encoding="utf-8") as fh:
                fh.write(f"step {self.time_step}:\n{traceback.format_exc()}")
            raise

    def _step(self) -> None:
        a_in, a_rec = self.a_in.recv(), self.a_rec.recv()
        if self.time_step % self._interval == self._offset:
            self.u *= 0
            self.v *= 0
        else:  # a reset step: a_rec holds spikes from before the sample (see the module doc)
            a_in = a_in + a_rec
        if not self.isbiasscaled:  # parameters never change during a run: scale once
            self.scale_bias()
        if not self.isthrscaled:
            self.scale_threshold()
        fired_before = self.spiking_activation() if self._reset.endswith("-next") else None
        self.subthr_dynamics(activation_in=a_in)
        s_out = self.fire_and_reset(fired_before)
        self.s_out.send(s_out)
        self._record(s_out)

    def _record(self, s_out: np.ndarray) -> None:
        t = int(self.time_step)
        if self._spikes is None:
            self._spikes = np.zeros((self._num_steps, s_out.size), dtype=s_out.dtype)
        if t <= self._num_steps:
            self._spikes[t - 1] = s_out.reshape(-1)
        row = self._v_index.get(t)
        if row is not None:
            if self._v is None:
                self._v = np.zeros((len(self._v_steps), self.v.size), dtype=np.int32)
                self._u = np.zeros_like(self._v) if self._record_u else None
            self._v[row] = self.v.reshape(-1)
            if self._u is not None:
                self._u[row] = self.u.reshape(-1)
        if self._progress and (t % self._progress_every == 0 or t == self._num_steps):
            _write_atomic(self._progress, str(t).encode())
        if t == self._num_steps:
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


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
