"""The verification report: one self-contained HTML page that answers, at a glance, whether the
network survives deployment, where it loses, and what it will cost on Loihi 2.

Nothing in the page refers to anything outside it (no scripts, fonts, style sheets or images
from the network): plots are base64 PNG ``data:`` URIs (:mod:`.report_plots`), styles are
inline. Percent everywhere; every accuracy with its sample count and Wilson 95 % interval;
per-channel values summarised (min, median, max) with the full list in a ``<details>``.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from dalif_deploy.base.wording import MISSING, counted, percent
from dalif_deploy.fixedpoint.cost import cost_rows

from . import plots as report_plots
from .verdict import flip_text, reference_name, wilson

#: readable column headers for the result's keys (others: the key with spaces)
HEADERS = {
    "name": "layer", "nodes": "NIR nodes", "scale": "scale (int v per volt)",
    "vth": "vth (int)", "v_threshold": "threshold (float)", "weight_exp": "weight exponent",
    "clipped_weights": "clipped weights",
    "weight_rel_error": "weight error \u2016\u0394w\u2016/\u2016w\u2016 (%)",
    "decay_error": "max\u00a0|\u0394beta|", "dv": "dv (int)", "bias_exp": "bias exponent",
    "bias_abs_error": "max bias error (float units)", "bias_max": "max |bias| (float units)",
    "u_wraps": "u wraps", "v_saturations": "v saturations", "float_rate": "float rate (%)",
    "fixed_rate": "fixed rate (%)", "spike_agreement": "spike agreement (%)",
    "nir_spike_mismatches": "NIR spikes \u2260 float", "alpha": "alpha (float)",
    "beta": "beta (float)", "beta_fixed": "beta of dv (1 \u2212 dv/4096)",
}
#: keys holding a fraction, shown in percent
PERCENT = {"weight_rel_error", "float_rate", "fixed_rate", "spike_agreement"}
ARROW = "\u2192"
#: a list longer than this is summarised (min, median, max) with the values in <details>
LIST_INLINE = 4


def _num(v: Any, pct: bool = False) -> str:
    if isinstance(v, (bool, np.bool_)):
        return ("<span class='pass'>pass</span>" if v
                else "<span class='fail'>fail</span>")
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return (percent(v, "") if pct else f"{v:,.0f}" if abs(v) >= 1000 else
                f"{v:.3g}" if abs(v) < 1e-3 else f"{v:.4g}")
    return MISSING if v is None else html.escape(str(v))


def _cell(v: Any, pct: bool = False) -> str:
    """A table cell's content: numbers formatted, lists joined (long ones summarised)."""
    if isinstance(v, (list, tuple)):
        if len(v) <= LIST_INLINE or not all(isinstance(x, (int, float)) for x in v):
            joined = ", ".join(_num(x, pct) for x in v) or MISSING
            return f"<span class='wrap'>{joined}</span>"
        a = np.asarray(v, np.float64)
        stat = lambda x: _num(type(v[0])(x) if isinstance(v[0], int) else float(x), pct)  # noqa: E731
        full = ", ".join(_num(x, pct) for x in v)
        return (f"min {stat(a.min())} \u00b7 median {stat(np.median(a))} \u00b7 max "
                f"{stat(a.max())}<details><summary>{len(v)} values</summary>{full}</details>")
    if isinstance(v, dict):
        return ", ".join(f"{html.escape(str(k))}: {_num(x)}" for k, x in v.items())
    return _num(v, pct)


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None,
           headers: dict[str, str] | None = None, raw: tuple[str, ...] = ()) -> str:
    """An HTML table of ``rows``; ``raw`` columns hold HTML already."""
    if not rows:
        return "<p>(none)</p>"
    cols = columns or list(rows[0])
    names = {**HEADERS, **(headers or {})}
    head = "".join(f"<th>{html.escape(names.get(c, c.replace('_', ' ')))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(
        f"<td>{r.get(c, '') if c in raw else _cell(r.get(c), c in PERCENT)}</td>"
        for c in cols) + "</tr>" for r in rows)
    return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>"


STAGES = (("float", "float (torch)"), ("nir", "NIR reference"), ("fixed", "fixed point "
          "(emulator)"), ("lava", "Lava"), ("onnx", "ONNX (onnxruntime)"))


def accuracy_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Stage, correct/samples, accuracy and its Wilson 95 % interval (in %)."""
    rows = []
    for key, label in STAGES:
        acc = result.get(f"{key}_accuracy")
        if acc is None:
            continue
        n = int(result["lava_samples"] if key == "lava" else result["samples"])
        k = int(round(acc * n))
        lo, hi = wilson(k, n)
        rows.append({"stage": label, "correct": f"{k:,} / {n:,}", "accuracy (%)":
                     percent(acc, ""), "95 % CI (%)": f"{percent(lo, '', 1)}\u2013"
                     f"{percent(hi, '', 1)}"})
    return rows


def _check_rows(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in checks:
        unit, v, lim = c.get("unit"), c["value"], c["limit"]
        if unit == "pp":
            value, limit = f"{v:.2f} pp", f"\u2264 {lim:.2f} pp"
        elif unit == "fraction":
            value, limit = percent(v), f"\u2265 {percent(lim)}"
        else:
            value, limit = ("yes" if v else "no") if isinstance(v, bool) else _num(v), "yes"
        rows.append({"check": c["check"], "value": value, "threshold": limit, "result": c["ok"]})
    return rows


def _verdict_html(result: dict[str, Any]) -> str:
    parts = []
    for v in result.get("verdict", []):
        cls = "fail" if v["severity"] == "fail" else "warn"
        tries = "".join(f"<li>{html.escape(t)}</li>" for t in v["try"])
        tries = f"<br>What to try:<ul>{tries}</ul>" if tries else ""
        parts.append(f"<div class='reason {cls}'><b>{'Failed' if cls == 'fail' else 'Warning'}"
                     f":</b> {html.escape(v['text'])}{tries}</div>")
    return "".join(parts)


def _glance(result: dict[str, Any]) -> str:
    """Three answers: does it survive, where does it lose, what will it cost."""
    ref = result.get("reference", "float")
    agree = result.get("prediction_agreement")
    failed = [c["check"] for c in result.get("checks", []) if not c["ok"]]
    checks = result.get("checks", [])
    survive = ("No check ran (no float reference, no Lava run). " if not checks else
               "Yes, every check passes: " if result.get("passed") else
               f"No, failed: {'; '.join(failed)}. ")
    survive += (f"{reference_name(result)} {percent(result.get(f'{ref}_accuracy'))} \u2192 "
                "fixed point "
                f"{percent(result.get('fixed_accuracy'))}; predictions agree on {percent(agree)}"
                if agree is not None else
                f"Fixed point alone: {percent(result.get('fixed_accuracy'))} (give --reference "
                "MODEL.nir|MODEL.pt to compare)")
    warn = [v for v in result.get("verdict", []) if v["severity"] == "warning"]
    if warn:
        survive = f"Warning: {warn[0]['text'].split(':')[0]}. " + survive
    if result.get("lava_samples"):
        survive += (f"; Lava bit-exact with the emulator on "
                    f"{counted(result['lava_samples'], 'sample')}: "
                    f"{'yes' if result.get('lava_bit_exact') else 'NO'}")
    layers = [ly for ly in result.get("layers", []) if ly.get("spike_agreement") is not None]
    fl = result.get("flips")
    lose = (flip_text(fl, result["samples"], ARROW) if fl
            else "no float reference")
    if layers:
        w = min(layers, key=lambda ly: ly["spike_agreement"])
        lose += f"; lowest spike agreement: layer {w['name']} ({percent(w['spike_agreement'])})"
    over = sum((ly.get("u_wraps") or 0) + (ly.get("v_saturations") or 0) for ly in layers)
    lose += f"; u wraps + v saturations: {over:,}"
    res, act, en = result.get("resources"), result.get("activity"), result.get("energy")
    cost = "not estimated"
    if res:
        cost = (f"{counted(res['cores'], 'core')} on {res['chips']} chip(s), "
                f"{res['neurons']:,} neurons, "
                f"{res['synapses']:,} synapses")
        if act and en:
            cost += (f"; per inference {act['synops']:,.0f} SynOps, about "
                     f"{en['loihi']['total'] / 1000:.3g} \u00b5J on Loihi, latency "
                     f"{act['latency_steps']} steps (estimates)")
    cards = (("Does it survive deployment?", survive), ("Where does it lose?", lose),
             ("What will it cost?", cost))
    return "<div class='glance'>" + "".join(
        f"<div><h3>{q}</h3><p>{html.escape(a)}</p></div>" for q, a in cards) + "</div>"


def _flips_html(result: dict[str, Any]) -> str:
    fl = result.get("flips")
    if not fl:
        return "<p>No float reference: nothing to compare predictions with.</p>"
    ref = reference_name(result)
    conf = np.asarray(fl["confusion"])
    classes = [c for c in range(fl["classes"])
               if fl["classes"] <= 20 or (conf[c].sum() - conf[c, c]) or
               (conf[:, c].sum() - conf[c, c])]
    head = "".join(f"<th>{c}</th>" for c in classes)
    body = ""
    for i in classes:
        cells = ""
        for j in classes:
            v = int(conf[i, j])
            cls = "diag" if i == j else "flip" if v else ""
            cells += f"<td class='{cls}'>{v:,}</td>" if v else f"<td class='{cls}'></td>"
        body += f"<tr><th>{i}</th>{cells}</tr>"
    matrix = (f"<div class='wide'><table class='conf'><tr><th>{ref} \u2193 / fixed \u2192"
              f"</th>{head}</tr>{body}</table></div>")
    rows = [{"sample": s["index"], "true label": s["label"], ref: s["reference"],
             "fixed": s["fixed"], "change": "right \u2192 wrong" if s["reference"] == s["label"]
             else "wrong \u2192 right" if s["fixed"] == s["label"] else "wrong \u2192 wrong"}
            for s in fl["samples"]]
    shown = (f" (the first {len(rows)})" if len(rows) < fl["flipped"] else "")
    return (f"<p>{flip_text(fl, result['samples'], ARROW)}. "
            "Rows: the " + ref + " prediction; columns: fixed point's; "
            "off-diagonal cells are the flips.</p>" + matrix +
            (f"<details{' open' if len(rows) <= 10 else ''}><summary>Flipped samples{shown}"
             f"</summary>{_table(rows)}</details>" if rows else ""))


def _lava_html(result: dict[str, Any]) -> str:
    n = result.get("lava_samples")
    if not n:
        return "<p>Lava not run (--lava-samples 0).</p>"
    out = (f"<p>Lava on the first {n} test samples: bit-exact with the emulator: "
           f"<b>{'yes' if result.get('lava_bit_exact') else 'no'}</b></p>")
    div = result.get("lava_first_divergence")
    if div:
        out += "<p>first divergence: " + _cell(div) + "</p>"
    if result.get("lava_error"):
        out += "<p class='fail'>Lava error: " + html.escape(result["lava_error"]) + "</p>"
    return out


def _cost_html(result: dict[str, Any]) -> str:
    rows = cost_rows(result)
    if not rows:
        return "<p>(no cost model)</p>"
    en, act = result.get("energy"), result.get("activity")
    cols = list(rows[0])
    for r in rows:
        r["binding limit"] = r["binding limit"] and r["binding limit"].replace("_", " ")
    if en and act and act.get("synops"):  # synaptic energy is linear in SynOps
        share = en["loihi"]["synaptic"] / act["synops"]
        for r in rows:
            r["synaptic energy (nJ, est.)"] = (None if r["SynOps / inference"] is None
                                               else r["SynOps / inference"] * share)
        cols.append("synaptic energy (nJ, est.)")
    out = _table(rows, cols)
    if en:
        lo, pa = en["loihi"], en["paper_45nm"]
        blank = dict.fromkeys(("accumulate (AC)", "multiply-accumulate (MAC)", "neuron",
                               "messages", "static"))
        erows = [{"estimate": "Loihi 2 (per-operation figures)", **blank,
                  "accumulate (AC)": lo["synaptic"], "neuron": lo["neuron"],
                  "messages": lo["messages"], "static": lo["static"], "total": lo["total"]},
                 {"estimate": "45 nm SNN (AC per SynOp, MAC for the analog first layer)",
                  **blank, "accumulate (AC)": pa["snn"] - pa["snn_first_layer_mac"],
                  "multiply-accumulate (MAC)": pa["snn_first_layer_mac"], "total": pa["snn"]},
                 {"estimate": f"45 nm ANN ({pa['ann_macs']:,} MACs)", **blank,
                  "multiply-accumulate (MAC)": pa["ann"], "total": pa["ann"]}]
        out += ("<h3>Energy per inference (nJ, estimates)</h3>" + _table(erows) +
                f"<p class='note'>{html.escape(lo['figures'])}. {html.escape(pa['figures'])}."
                f" SNN / ANN: {_num(pa['snn_vs_ann'])}.</p>")
    if act:
        out += (f"<p>Latency: {act['latency_steps']} steps ({_num(act['latency_us'])} \u00b5s "
                f"estimated, {_num(act['time_per_step_us'])} \u00b5s per step); "
                "assumptions: " + "; ".join(html.escape(a) for a in act.get("assumptions", []))
                + ".</p>")
    return out + ("<p class='note'>Estimates from the model of dalif_deploy.fixedpoint.cost; "
                  "figures and "
                  "their sources in docs/HARDWARE.md.</p>")


_NEUROBENCH_ROWS = (("effective_macs", "effective MACs / sample"),
                    ("effective_acs", "effective ACs / sample"),
                    ("synaptic_operations", "effective synaptic operations / sample"),
                    ("dense_synaptic_operations", "dense synaptic operations / sample"),
                    ("loihi_synops", "Loihi SynOps / inference (cost model, beside)"),
                    ("activation_sparsity", "activation sparsity"),
                    ("connection_sparsity", "connection sparsity"),
                    ("footprint_bytes", "footprint (bytes)"))


def _neurobench_html(result: dict[str, Any]) -> str:
    """NeuroBench's metrics of the fixed-point run (and the float model's) beside our SynOps."""
    nb = result.get("neurobench")
    if not nb:
        return ""
    sides = [("fixed point (emulator spikes)", nb), ("float model", nb.get("float_model"))]
    rows = [{"metric": label, **{side: (d or {}).get(key) for side, d in sides if d}}
            for key, label in _NEUROBENCH_ROWS]
    return (f"<h3>The field's metrics ({html.escape(str(nb['definitions']))} definitions)</h3>"
            + _table(rows) + "<p class='note'>Effective operations count the (nonzero input, "
            "nonzero weight) pairs, bias excluded; Loihi SynOps count every stored synapse a "
            "spike visits (docs/metrics.md).</p>")


STYLE = """
body{font-family:sans-serif;max-width:72em;margin:1.5em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:top}
td{white-space:nowrap}.wrap{white-space:normal}
th{background:#eee;font-weight:600}td:first-child,th:first-child{text-align:left}
.wide{overflow-x:auto;max-width:100%}.pass{color:#070}.fail{color:#b00}.warn{color:#a60}
img{max-width:100%}td details{font-size:.9em;max-width:24em;white-space:normal}
.glance{display:flex;gap:1em;flex-wrap:wrap}.glance div{flex:1 1 18em;border:1px solid #ccc;
padding:.3em .8em;border-radius:6px;background:#fafafa}.glance h3{margin:.3em 0}
.reason{border-left:4px solid;padding:.2em .8em;margin:.6em 0;color:#222}
.reason.fail{border-color:#b00}.reason.warn{border-color:#a60}.note{font-size:.85em;color:#555}
table.conf td{min-width:2em;text-align:center}td.diag{background:#e8e8e8}
td.flip{background:#f4b6b6;font-weight:bold}
"""


def render_html(result: dict[str, Any], images: dict[str, str]) -> str:
    """The report page for a verify ``result`` (see verify.py) with inline ``images``."""
    verdict = ("<span class='pass'>PASSED</span>" if result.get("passed")
               else "<span class='fail'>FAILED</span>")

    def img(key: str, title: str) -> str:
        return (f"<h3>{title}</h3><img alt='{key}' src='{images[key]}'>" if key in images
                else "")

    absent = "".join(f"<li>{html.escape(k)}: not run ({html.escape(v)})</li>"
                     for k, v in result.get("absent", {}).items())
    ref = reference_name(result)
    layer_cols = ["name", "population", "recurrent", "neurons", "float_rate", "fixed_rate",
                  "spike_agreement", "nir_spike_mismatches", "u_wraps", "v_saturations"]
    if result.get("nir_spike_mismatches") is None:  # not measured: no torch model beside NIR
        layer_cols.remove("nir_spike_mismatches")
    # the reference's rate column is keyed float_rate whatever the reference (JSON keys stay)
    layer_headers = {"float_rate": f"{ref} rate (%)"}
    decay_cols = ["population", "granularity", "channels", "alpha", "beta", "dv", "beta_fixed",
                  "scale", "vth"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>dalif-deploy verification</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>dalif-deploy verification: {verdict}</h1>",
        f"<p>{html.escape(str(result.get('model')))} from <code>"
        f"{html.escape(str(result.get('checkpoint')))}</code>, data set "
        f"{html.escape(str(result.get('dataset')))} ({result.get('samples'):,} test samples, "
        f"T = {result.get('timesteps')}"
        + (f", {result['weight_bits']}-bit weights" if result.get("weight_bits") else "")
        + ")</p>",
        _glance(result), _verdict_html(result),
        f"<ul>{absent}</ul>" if absent else "",
        "<h2>Accuracy</h2>", _table(accuracy_rows(result)),
        "<p class='note'>95 % CI: the Wilson score interval for the samples a stage ran on; "
        "a stage measured on few samples (Lava) has a wide one.</p>",
        "<h2>Checks</h2>", _table(_check_rows(result.get("checks", []))),
        "<h2>Where it loses</h2>",
        _table(result.get("layers", []), layer_cols, layer_headers) if result.get("layers") else
        "<p>No per-layer comparison: there is no float reference.</p>",
        img("agreement", "Spike agreement per layer"), img("rates", "Firing rates"),
        f"<h3>Predictions that flip between {html.escape(ref)} and fixed point</h3>",
        _flips_html(result),
        img("raster", "Spike raster"),
        "<h2>Lava parity</h2>", _lava_html(result),
        "<h2>DA-LIF decays per layer</h2>",
        "<p>V[t] = beta\u00b7H[t\u22121] + alpha\u00b7X[t]. Fixed point: alpha is folded into "
        "the integer weights, beta becomes dv with v \u2190 v\u00b7(4096 \u2212 dv)/4096 "
        "(PLIF and LIF layers are read in the same form).</p>",
        _table(result.get("decay", []), decay_cols),
        "<h2>Loihi 2 resources and cost (estimates)</h2>", _cost_html(result),
        _neurobench_html(result),
        "<h2>Quantisation table</h2>", _table(result.get("quant_table", [])),
        img("weight_error", "Weight quantisation error per synapse"),
        "<h2>Time per stage (s)</h2>",
        _table([{"stage": k, "seconds": v} for k, v in result.get("seconds", {}).items()]),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def render_report(result: dict[str, Any], artefacts: dict[str, Any]) -> str:
    """The page for a verify ``(result, artefacts)`` pair, plots included."""
    rows = [r for r in result.get("layers", []) if r.get("spike_agreement") is not None]
    images = {}
    ref = reference_name(result)
    if rows:
        images["agreement"] = report_plots.plot_agreement(rows, ref)
        images["rates"] = report_plots.plot_firing_rates(rows, ref)
    rasters = artefacts.get("rasters") or {}
    worst = min((r for r in rows if r["name"] in rasters), default=None,
                key=lambda r: r["spike_agreement"])
    ras = rasters[worst["name"]] if worst else artefacts.get("raster")
    if ras:
        images["raster"] = report_plots.plot_raster(
            ras["float"], ras["fixed"], ras["name"] + (" (lowest spike agreement)" if worst
                                                       and len(rows) > 1 else ""), ref)
    if artefacts.get("program") is not None:
        images["weight_error"] = report_plots.plot_weight_error(
            artefacts["program"].weight_errors)
    return render_html(result, images)
