"""Our CPU ``fixed_pt`` process model of Lava's ``Conv``: Lava's arithmetic, one matrix product.

Lava's own model (``lava.proc.conv.models.PyConvModelFixed``) computes each step's conv with
``lava.proc.conv.utils.conv_scipy``: a Python loop of ``C_out * C_in`` ``scipy.signal
.convolve2d`` calls on float64 arrays (80-89 % of a Lava step of a width-128 ResNet-19, 25 s a
step). :class:`PyExactConvModel` is that model with the correlation computed by
:func:`conv_exact` instead: the same float64 sums of integer products (exact while every
partial sum stays below 2^53; the bound is checked every step from ``max|s_in|`` and the
kernel's largest absolute row sum, and Lava's own ``conv_scipy`` runs where it could fail), as
ONE matrix product (float32 where the bound is within 2^24, as for binary spikes: every sum
then exact in float32 too, whatever the summation order) of the step's im2col patches with
Lava's kernel flipped back (Lava's kernels are true convolutions in (W, H, C) order).
Everything else is Lava's: the process, its ports and Vars, ``run_spk``'s one-step delay
(send last step's ``a_buf``, then compute), the cast to the weight dtype and the signed 24-bit
wrap (``signed_clamp``).

:class:`PyCachedDelaySparseModel` is Lava's bit-accurate ``DelaySparse`` model with its
delay-stacked weight matrix built once instead of every step (same matrix, same sums).

``SYNAPSE_MODELS`` names the choices: ``exact`` (these two models, the default of
:func:`.run.run_lava`) and ``stock`` (Lava's own, kept as the reference the tests check ours
against).

This module imports lava (installing the compatibility hook first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .compat import install

install()  # before the first lava import (Python 3.11 hook, a no-op where not needed)

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.conv import utils  # noqa: E402
from lava.proc.conv.models import PyConvModelFixed  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.sparse.models import PyDelaySparseModelBitAcc  # noqa: E402
from lava.proc.sparse.process import DelaySparse  # noqa: E402

EXACT_FLOAT64 = 2**53  # integers below this add and multiply exactly in float64
EXACT_FLOAT32 = 2**24  # and in float32 (half the memory traffic: about twice as fast)


def kernel_matrices(weight: np.ndarray, dilation, groups: int) -> list[np.ndarray]:
    """Lava's true-conv kernel (C_out, kW, kH, C_in / groups), dilated and flipped back into a
    correlation, as one float64 matrix (C_out / groups, C_in / groups * kW' * kH') per group, in
    the order of :func:`conv_exact`'s patches."""
    c_out, kw, kh, c_grp = weight.shape
    dw, dh = int(dilation[0]), int(dilation[1])
    dilated = np.zeros((c_out, dw * (kw - 1) + 1, dh * (kh - 1) + 1, c_grp))
    dilated[:, ::dw, ::dh, :] = weight
    flipped = dilated[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)  # (C_out, C_in/g, kW', kH')
    k_grp = c_out // groups
    return [np.ascontiguousarray(flipped[g * k_grp:(g + 1) * k_grp].reshape(k_grp, -1))
            for g in range(groups)]


def conv_exact(input_: np.ndarray, weight: np.ndarray, kernel_size, stride, padding, dilation,
               groups: int, kernels: list[np.ndarray] | None = None) -> np.ndarray:
    """``lava.proc.conv.utils.conv_scipy``'s result ((W, H, C_out), in the dtype of
    ``kernels``: float64 unless given) as one matrix product per group: ``input_`` (W, H,
    C_in), ``weight`` (C_out, kW, kH, C_in / groups), the other arguments in Lava's XY order
    (``kernels``: :func:`kernel_matrices` of them, float64 or float32, when the caller keeps
    them). Exact for integer data while every partial sum stays below 2^53 (float64) or 2^24
    (float32): the caller checks."""
    if kernels is None:
        kernels = kernel_matrices(weight, dilation, groups)
    c_grp = weight.shape[-1]
    k_grp = kernels[0].shape[0]
    window = ((int(kernel_size[0]) - 1) * int(dilation[0]) + 1,
              (int(kernel_size[1]) - 1) * int(dilation[1]) + 1)
    padded = np.pad(input_.astype(kernels[0].dtype),
                    ((padding[0], padding[0]), (padding[1], padding[1]), (0, 0)))
    windows = sliding_window_view(padded, window, axis=(0, 1))
    windows = windows[::stride[0], ::stride[1]]  # (W_out, H_out, C_in, kW', kH')
    w_out, h_out = windows.shape[:2]
    if groups == 1:
        cols = windows.reshape(w_out * h_out, -1)  # one copy: the step's im2col patches
        return (cols @ kernels[0].T).reshape(w_out, h_out, k_grp)
    out = np.empty((w_out, h_out, k_grp * groups), kernels[0].dtype)
    for g, kern in enumerate(kernels):
        cols = windows[:, :, g * c_grp:(g + 1) * c_grp].reshape(w_out * h_out, -1)
        out[:, :, g * k_grp:(g + 1) * k_grp] = (cols @ kern.T).reshape(w_out, h_out, k_grp)
    return out


def kernel_row_bound(weight: np.ndarray) -> float:
    """The largest sum of absolute kernel values feeding one output (the exactness bound's
    weight side)."""
    return float(np.abs(weight.astype(np.float64)).reshape(weight.shape[0], -1).sum(axis=1)
                 .max(initial=0))


def conv_step(s_in: np.ndarray, weight: np.ndarray, kernel_size, stride, padding, dilation,
              groups: int, row_bound: float, kernels: list[np.ndarray] | None = None,
              kernels32: list[np.ndarray] | None = None) -> np.ndarray:
    """One step's Conv output as Lava's fixed-point model makes it: the correlation
    (:func:`conv_exact` in float32 where ``max|s_in| * row_bound <= 2^24``, as binary spikes
    into 8-bit kernels of up to 2^24 / 255 taps always are, in float64 where it is below 2^53,
    else Lava's ``conv_scipy``), cast to the weight dtype, wrapped to signed 24 bits
    (``signed_clamp``). ``kernels``/``kernels32``: :func:`kernel_matrices` in float64/float32,
    when the caller keeps them."""
    args = (s_in, weight, kernel_size, stride, padding, dilation, groups)
    bound = float(np.abs(s_in).max(initial=0)) * row_bound
    if bound < EXACT_FLOAT64 and kernels is None:
        kernels = kernel_matrices(weight, dilation, groups)
    if bound <= EXACT_FLOAT32:
        if kernels32 is None:
            kernels32 = [k.astype(np.float32) for k in kernels]
        a_out = conv_exact(*args, kernels32)
    elif bound < EXACT_FLOAT64:
        a_out = conv_exact(*args, kernels)
    else:
        a_out = utils.conv_scipy(*args)
    return utils.signed_clamp(a_out.astype(weight.dtype), bits=24)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyExactConvModel(PyConvModelFixed):
    """Lava's fixed-point Conv model with :func:`conv_step` as its arithmetic (its kernel
    matrices and exactness bound computed once, on the first step)."""

    _row_bound: float | None = None
    _kernels: list[np.ndarray] | None = None
    _kernels32: list[np.ndarray] | None = None

    def run_spk(self) -> None:
        # AbstractPyConvModel.run_spk with the arithmetic swapped: the same one-step delay
        if self.a_buf is None:
            self.a_buf = np.zeros_like(self.a_out.shape)
        self.a_out.send(self.a_buf)
        if self.num_message_bits.item() > 0:
            s_in = self.s_in.recv()
        else:
            s_in = self.s_in.recv().astype(bool)
        if self._kernels is None:
            self._row_bound = kernel_row_bound(self.weight)
            self._kernels = kernel_matrices(self.weight, self.dilation, int(self.groups[0]))
            self._kernels32 = [k.astype(np.float32) for k in self._kernels]
        self.a_buf = conv_step(s_in, self.weight, self.kernel_size, self.stride, self.padding,
                               self.dilation, self.groups[0], self._row_bound, self._kernels,
                               self._kernels32)


@implements(proc=DelaySparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyCachedDelaySparseModel(PyDelaySparseModelBitAcc):
    """Lava's bit-accurate DelaySparse model with its delay-stacked weight matrix built once.

    Lava's model rebuilds ``get_delay_wgts_mat(weights, delays)`` (a ``multiply`` per delay,
    ``find``, ``vstack``) on every step, though the process has no learning and its weights are
    fixed after the first step's clipping (``weights_set``): for a width-128 ResNet-19's
    residual shortcuts that was most of a step. This model keeps the matrix from its first
    ``calc_act`` (after that clipping) and multiplies by it: the same matrix, so the same sums."""

    _delay_wgts: Any = None

    def calc_act(self, s_in: np.ndarray) -> np.ndarray:
        if self._delay_wgts is None:
            self._delay_wgts = self.get_delay_wgts_mat(self.weights, self.delays,
                                                       self.a_buff.shape[-1] - 1)
        return np.reshape(self._delay_wgts.dot(s_in),
                          (self.a_buff.shape[-1], self.weights.shape[0])).T


#: the synapse process models a Lava run can use, per choice of :func:`.run.run_lava`'s
#: ``conv``: ours (default) and Lava's own (the reference)
SYNAPSE_MODELS: dict[str, dict[type, type]] = {
    "exact": {Conv: PyExactConvModel, DelaySparse: PyCachedDelaySparseModel},
    "stock": {Conv: PyConvModelFixed, DelaySparse: PyDelaySparseModelBitAcc},
}
