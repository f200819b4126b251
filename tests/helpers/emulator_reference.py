"""An independent reference for the emulator, in Python ints (sync semantics, docs/DESIGN.md
section 4), and the exact comparison of two emulator runs."""

from __future__ import annotations

import numpy as np

from dalif_deploy.fixedpoint.arithmetic import effective_bias, effective_weights
from dalif_deploy.fixedpoint.program import FixedProgram, Population, Synapse


def _rtz(p: int) -> int:
    return (abs(p) >> 12) * (1 if p >= 0 else -1)


def _synapse_sums(prog: FixedProgram, s: Synapse, x: np.ndarray) -> list[int]:
    src = [int(v) for v in x.reshape(-1)]
    if s.source == "input" and not s.graded:
        src = [1 if v else 0 for v in src]
    w = effective_weights(s.weights, s.weight_bits, s.sign_mode)
    out = []
    if s.kind == "dense":
        for row in w:
            out.append(sum(int(a) * b for a, b in zip(row, src, strict=True)))
    else:
        c, h, wd = s.input_shape
        co, ho, wo = s.output_shape
        img = np.array(src, dtype=object).reshape(c, h, wd)
        kh, kw = w.shape[2:]
        for o in range(co):
            for i in range(ho):
                for j in range(wo):
                    acc = 0
                    for ci in range(c):
                        for dy in range(kh):
                            for dx in range(kw):
                                y = i * s.stride[0] - s.padding[0] + dy
                                xx = j * s.stride[1] - s.padding[1] + dx
                                if 0 <= y < h and 0 <= xx < wd:
                                    acc += int(w[o, ci, dy, dx]) * img[ci, y, xx]
                    out.append(acc)
    e = s.weight_exp
    if s.kind == "conv" and e == 0:
        return [((a + 2**23) % 2**24) - 2**23 for a in out]
    return [a << e if e >= 0 else a >> -e for a in out]


def reference_run(prog: FixedProgram, frames: np.ndarray) -> tuple[list, dict, dict]:
    """Final readout v per sample; spikes and v (after reset) per population, [n, T, size]."""
    outs, spikes_all = [], {p.name: [] for p in prog.populations}
    v_all: dict[str, list] = {p.name: [] for p in prog.populations}
    for sample in frames:
        u = {p.name: [0] * p.size for p in prog.populations}
        v = {p.name: [0] * p.size for p in prog.populations}
        prev = {p.name: np.zeros(p.shape, np.int64) for p in prog.populations}
        for t in range(prog.timesteps):
            cur = {"input": sample[t]}
            for p in prog.populations:
                a = [0] * p.size
                for s in prog.incoming(p.name):  # a recurrent synapse: spikes of step t-1
                    src = prev[s.source] if s.source == s.target else cur[s.source]
                    a = [x + y for x, y in zip(a, _synapse_sums(prog, s, src), strict=True)]
                bias = effective_bias(p.bias_mant, p.bias_exp).reshape(-1)
                per = p.size // p.dv.size
                spk = []
                for n in range(p.size):
                    into_u = int(bias[n]) if p.bias_into == "u" else 0
                    uu = _rtz(u[p.name][n] * (4096 - (p.du + 1))) + (a[n] << 6) + into_u
                    uu = uu - 2**24 if uu > 2**23 else uu + 2**24 if uu <= -(2**23) else uu
                    dv = int(p.dv[n // per if p.dv.size > 1 else 0])
                    vv = _rtz(v[p.name][n] * (4096 - dv)) + uu + int(bias[n]) - into_u
                    vv = max(-(2**23 - 1), min(2**23 - 1, vv))
                    vv, k = _ref_fire(p, v[p.name][n], vv)
                    u[p.name][n], v[p.name][n] = uu, vv
                    spk.append(k)
                cur[p.name] = np.array(spk).reshape(p.shape)
                spikes_all[p.name].append(spk)
                v_all[p.name].append(list(v[p.name]))
            prev = {k: cur[k] for k in prev}
        outs.append(v[prog.readout.population])
    return outs, spikes_all, v_all


def assert_same_run(a, b) -> None:
    """Every field of two emulator runs, exactly."""
    for f in ("outputs", "predictions", "spike_counts"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
        assert getattr(a, f).dtype == getattr(b, f).dtype, f
    for f in ("spikes", "v", "u", "final_v"):
        da, db = getattr(a, f), getattr(b, f)
        assert da.keys() == db.keys(), f
        for k in da:
            assert np.array_equal(da[k], db[k]) and da[k].dtype == db[k].dtype, (f, k)
    assert a.u_wraps == b.u_wraps and a.v_saturations == b.v_saturations
    assert (a.spiking, a.steps, a.mode, a.input_clipped) == (b.spiking, b.steps, b.mode,
                                                             b.input_clipped)


def _ref_fire(p: Population, before: int, vv: int) -> tuple[int, int]:
    """(v after reset, spikes sent) for the integral ``vv`` of a neuron whose v was
    ``before``: the firing rules of docs/DESIGN.md section 4, one Python int at a time."""
    theta = p.vth << 6

    def fires(x: int) -> bool:
        return x >= theta if p.spike_rule == ">=" else x > theta

    if p.reset == "zero-next" and fires(before):
        vv = 0
    elif p.reset == "subtract-next" and fires(before):
        vv -= theta
    if not fires(vv):
        return vv, 0
    k = 1
    if p.multi_spike:  # take theta while the rule still holds
        k, rest = 0, vv
        while fires(rest):
            k, rest = k + 1, rest - theta
    if p.reset == "zero":
        return 0, k
    return (vv - k * theta, k) if p.reset == "subtract" else (vv, k)
