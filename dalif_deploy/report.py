"""The verification report: a self-contained HTML page with inline PNG plots.

Nothing in the page refers to anything outside it (no scripts, fonts, style sheets or images
from the network): plots are base64 PNG ``data:`` URIs, styles are inline.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from .cost import cost_rows
from .program import WeightErrors


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_agreement(layers: list[dict[str, Any]]) -> str:
    """Bar chart: per-layer spike agreement between the float model and fixed point."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    names = [ly["name"] for ly in layers]
    vals = [100 * ly["spike_agreement"] for ly in layers]
    ax.bar(range(len(vals)), vals, color="#4477aa")
    ax.set_xticks(range(len(vals)), names, rotation=45, ha="right", fontsize=8)
    lo = min(vals, default=100)
    ax.set_ylim(max(0, lo - 2), 100.2)
    ax.set_ylabel("spike agreement (%)")
    ax.set_title("float vs fixed point, per layer")
    return _png(fig)


def plot_firing_rates(layers: list[dict[str, Any]]) -> str:
    """Grouped bars: float and fixed-point firing rates per layer."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    idx = np.arange(len(layers))
    ax.bar(idx - 0.2, [ly["float_rate"] for ly in layers], 0.4, label="float", color="#4477aa")
    ax.bar(idx + 0.2, [ly["fixed_rate"] for ly in layers], 0.4, label="fixed", color="#ee6677")
    ax.set_xticks(idx, [ly["name"] for ly in layers], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("spikes / neuron / step")
    ax.legend()
    ax.set_title("firing rates")
    return _png(fig)


def plot_weight_error(errors: dict[str, WeightErrors]) -> str:
    """Histogram of relative weight quantisation error, one series per synapse (the quantiser's
    records in ``program.weight_errors``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    for name, e in errors.items():
        if e.size:
            ax.hist(e.edges[:-1], bins=e.edges, weights=e.counts, histtype="step", label=name)
    ax.set_xlabel("(dequantised - float) / max|float|")
    ax.set_ylabel("weights")
    ax.set_yscale("log")
    if errors:
        ax.legend(fontsize=7)
    ax.set_title("weight quantisation error")
    return _png(fig)


def plot_raster(float_spikes: np.ndarray, fixed_spikes: np.ndarray, name: str) -> str:
    """Spike raster of one layer for one sample: float (blue) vs fixed point (red)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    f = float_spikes.reshape(float_spikes.shape[0], -1)
    q = fixed_spikes.reshape(fixed_spikes.shape[0], -1)
    tf, nf = np.nonzero(f)
    tq, nq = np.nonzero(q)
    ax.scatter(nf, tf - 0.15, s=4, marker="|", color="#4477aa", label="float")
    ax.scatter(nq, tq + 0.15, s=4, marker="|", color="#ee6677", label="fixed")
    ax.set_xlabel("neuron")
    ax.set_ylabel("step")
    ax.set_yticks(range(f.shape[0]))
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(f"spike raster, layer {name}, sample 0")
    return _png(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>"


STYLE = """
body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee}.wide{overflow-x:auto}.pass{color:#070}.fail{color:#b00}img{max-width:100%}
"""


def render_html(result: dict[str, Any], images: dict[str, str]) -> str:
    """The report page for a verify ``result`` (see verify.py) with inline ``images``."""
    ok = result.get("passed")
    verdict = ("<span class='pass'>PASSED</span>" if ok
               else "<span class='fail'>FAILED</span>")
    head_rows = [{"stage": k.replace("_accuracy", ""), "accuracy (%)":
                  None if result.get(k) is None else f"{100 * result[k]:.2f}"}
                 for k in ("float_accuracy", "nir_accuracy", "fixed_accuracy",
                           "lava_accuracy", "onnx_accuracy") if k in result]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>dalif-deploy verification</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>dalif-deploy verification: {verdict}</h1>",
        f"<p>checkpoint <code>{html.escape(str(result.get('checkpoint')))}</code>, "
        f"data set {html.escape(str(result.get('dataset')))} "
        f"({result.get('samples')} test samples, T={result.get('timesteps')})</p>",
        "<h2>Accuracy</h2>", _table(head_rows),
        "<h2>Checks</h2>", _table(result.get("checks", [])),
        "<h2>Lava parity</h2>",
        f"<p>Lava on {result.get('lava_samples')} samples: bit-exact with the emulator: "
        f"<b>{_fmt(result.get('lava_bit_exact'))}</b></p>",
    ]
    div = result.get("lava_first_divergence")
    if div:
        parts.append("<p>first divergence: " + html.escape(str(div)) + "</p>")
    if result.get("lava_error"):
        parts.append("<p class='fail'>Lava error: " + html.escape(result["lava_error"]) + "</p>")
    parts += ["<h2>Per layer</h2>", _table(result.get("layers", []))]
    for key, title in (("agreement", "Spike agreement"), ("rates", "Firing rates"),
                       ("weight_error", "Quantisation error"), ("raster", "Spike raster")):
        if key in images:
            parts.append(f"<h3>{title}</h3><img alt='{key}' src='{images[key]}'>")
    rows = cost_rows(result)
    if rows:
        parts += ["<h2>Loihi 2 resources and cost (estimates)</h2>",
                  _table(rows, list(rows[-1])),
                  "<p>Estimates from the model of dalif_deploy.cost; figures and their "
                  "sources in docs/HARDWARE.md.</p>"]
    parts += ["<h2>Quantisation table</h2>", _table(result.get("quant_table", [])),
              "<h2>Time per stage (s)</h2>",
              _table([{"stage": k, "seconds": v} for k, v in result.get("seconds", {}).items()]),
              "</body></html>"]
    return "\n".join(parts)
