"""The verification report's plots, each a matplotlib figure returned as a PNG ``data:`` URI.

Percent everywhere (agreement, firing rates, weight errors), value axes from 0, legends outside
the axes, and figures that grow with the number of layers or synapses instead of crowding.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from dalif_deploy.fixedpoint.program import WeightErrors

FLOAT, FIXED, BOTH = "#4477aa", "#ee6677", "#555555"


def pyplot():
    """``matplotlib.pyplot`` for our plots (every figure dalif-deploy draws comes from here):
    the Agg backend, and text drawn literally. Names in plots come from files (layer names,
    data set names), and mathtext would parse a ``$...$`` in one, raising on what it cannot
    parse; TeX is never called either."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    matplotlib.rcParams["text.usetex"] = False
    import matplotlib.pyplot as plt

    return plt


_plt = pyplot


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _layer_axis(ax, names: list[str]) -> None:
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0,
                  ha="right" if len(names) > 6 else "center", fontsize=8)


def plot_agreement(layers: list[dict[str, Any]], reference: str = "float") -> str:
    """Per-layer spike agreement between the reference (``reference``: its name, the float
    model or the NIR interpreter) and fixed point (0-100 %, each bar
    labelled), beside the share of spikes that differ on an axis of its own (also from 0), so a
    small difference is neither hidden nor exaggerated."""
    plt = _plt()
    names = [ly["name"] for ly in layers]
    agree = np.array([100 * ly["spike_agreement"] for ly in layers])
    many = len(names) > 6  # side by side for a few layers, one above the other for many
    fig, (a, b) = plt.subplots(2 if many else 1, 1 if many else 2,
                               figsize=(max(7, 0.45 * len(names) + 2), 6 if many else 3))
    a.bar(range(len(names)), agree, color=FLOAT)
    a.set_ylim(0, 105)
    a.set_ylabel("spike agreement (%)")
    a.set_title(f"{reference} vs fixed point: spikes that agree")
    for i, v in enumerate(agree):
        a.text(i, v + 1, f"{v:.1f}", ha="center", fontsize=7)
    _layer_axis(a, names)
    b.bar(range(len(names)), 100 - agree, color=FIXED)
    b.set_ylim(0, max(1.0, float((100 - agree).max(initial=0)) * 1.2))
    b.set_ylabel("spikes that differ (%)")
    b.set_title("the difference, its own scale")
    _layer_axis(b, names)
    fig.tight_layout()
    return _png(fig)


def plot_firing_rates(layers: list[dict[str, Any]], reference: str = "float") -> str:
    """Grouped bars: the reference's (named ``reference``) and fixed-point firing rates per
    layer (% of neuron-steps with a spike)."""
    plt = _plt()
    names = [ly["name"] for ly in layers]
    fig, ax = plt.subplots(figsize=(max(7, 0.5 * len(names) + 3), 3))
    idx = np.arange(len(layers))
    ax.bar(idx - 0.2, [100 * ly["float_rate"] for ly in layers], 0.4, label=reference,
           color=FLOAT)
    ax.bar(idx + 0.2, [100 * (ly["fixed_rate"] or 0) for ly in layers], 0.4, label="fixed",
           color=FIXED)
    _layer_axis(ax, names)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("firing rate (% of neuron-steps)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("firing rates")
    return _png(fig)


def weight_error_summary(e: WeightErrors) -> tuple[float, float]:
    """``(mean |e|, max |e|)`` of one synapse's relative weight errors, from its histogram
    (the mean takes each bin at its centre)."""
    centres = np.abs((np.asarray(e.edges[:-1]) + np.asarray(e.edges[1:])) / 2)
    counts = np.asarray(e.counts, np.float64)
    mean = float((centres * counts).sum() / counts.sum()) if counts.sum() else 0.0
    return min(mean, e.max_abs), e.max_abs


def plot_weight_error(errors: dict[str, WeightErrors]) -> str:
    """One horizontal bar pair per synapse: mean and max relative weight quantisation error
    (% of the synapse's max |float weight|); the figure grows with the synapse count."""
    plt = _plt()
    names = [k for k, e in errors.items() if e.size]
    stats = np.array([weight_error_summary(errors[k]) for k in names]).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * max(len(names), 1)))
    y = np.arange(len(names))
    ax.barh(y - 0.2, 100 * stats[:, 0], 0.4, color=FLOAT, label="mean |error|")
    ax.barh(y + 0.2, 100 * stats[:, 1], 0.4, color=FIXED, label="max |error|")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("|dequantised - float| (% of the synapse's max |float weight|)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    return _png(fig)


def plot_raster(float_spikes: np.ndarray, fixed_spikes: np.ndarray, name: str,
                reference: str = "float") -> str:
    """Spike raster of one layer for one sample: where the reference (``float_spikes``, named
    ``reference``) and fixed point both spike (grey), only the reference (blue, below) and only
    fixed point (red, above): the mismatches stand out."""
    plt = _plt()
    f = float_spikes.reshape(float_spikes.shape[0], -1).astype(bool)
    q = fixed_spikes.reshape(fixed_spikes.shape[0], -1).astype(bool)
    fig, ax = plt.subplots(figsize=(7, 1.4 + 0.35 * f.shape[0]))
    for mask, colour, off, size, label in (
            (f & q, BOTH, 0.0, 4, "both"), (f & ~q, FLOAT, -0.2, 25, f"{reference} only"),
            (~f & q, FIXED, 0.2, 25, "fixed only")):
        t, n = np.nonzero(mask)
        ax.scatter(n, t + off, s=size, marker="|" if label == "both" else "x", color=colour,
                   label=f"{label} ({len(t)})", linewidths=1)
    ax.set_xlabel("neuron (flattened)")
    ax.set_ylabel("step")
    ax.set_yticks(range(f.shape[0]))
    ax.set_ylim(f.shape[0] - 0.5, -0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title(f"spike raster, layer {name}, sample 0: {int((f != q).sum())} mismatches")
    return _png(fig)
