"""What a verification concludes, in words, and the per-sample evidence behind it.

Pure functions of a verify result (and the program verified), shared by the CLI summary and the
HTML report:

- :func:`wilson`: the Wilson 95 % interval of an accuracy measured on ``n`` samples (16 Lava
  samples all right read "16/16 (95 % CI 80.6-100 %)", not "100.00 %");
- :func:`prediction_flips`: the float-vs-fixed confusion matrix and the samples that flip;
- :func:`decay_table`: each population's DA-LIF decays (alpha, beta) beside their fixed-point
  form (dv, and the beta it encodes);
- :func:`verdict`: one entry per failed check (what failed, by how much, against which threshold,
  what to try), and a warning when the float model itself is at chance.

Everything here is computed from per-sample predictions and summed tallies, so a verification
sharded over processes gives the same conclusions once its per-sample results are gathered.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dalif_deploy.base.wording import MISSING, percent

#: two-sided 95 % normal quantile (Wilson interval)
Z95 = 1.959963984540054
#: the flipped samples listed by index (all are counted in the confusion matrix)
FLIP_LIST_MAX = 50
#: a float accuracy closer to chance than this fraction of the way to 100 % is "near chance"
NEAR_CHANCE = 0.1
#: below this float accuracy, "check the float model" is among the hints for a failed agreement
WEAK_FLOAT = 0.9


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of a proportion ``successes / n`` (both
    fractions); ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_text(acc: float | None, n: int) -> str:
    """``"442/450 (98.22 %, 95 % CI 96.5\u201399.1 %)"``, or ``MISSING`` (base.wording) when
    not measured."""
    if acc is None or not n:
        return MISSING
    k = int(round(acc * n))
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({percent(acc)}, 95 % CI {percent(lo, '', 1)}\u2013{percent(hi, digits=1)})"


def chance_level(labels: np.ndarray) -> float:
    """The accuracy of always predicting the most frequent test label."""
    y = np.asarray(labels).reshape(-1)
    if not y.size:
        return 0.0
    return float(np.bincount(y.astype(np.int64) - int(y.min())).max() / y.size)


def prediction_flips(reference: np.ndarray, fixed: np.ndarray, labels: np.ndarray,
                     classes: int, limit: int = FLIP_LIST_MAX) -> dict[str, Any]:
    """``confusion[i][j]``: samples the reference predicts ``i`` and fixed point ``j``;
    ``flipped``: how many differ, of which ``lost`` (reference right, fixed wrong) and
    ``gained`` (the reverse); ``samples``: the first ``limit`` flipped, with their predictions
    and true label."""
    ref, fix, y = (np.asarray(a, np.int64).reshape(-1) for a in (reference, fixed, labels))
    k = max(int(classes), int(max(ref.max(initial=0), fix.max(initial=0), y.max(initial=0))) + 1)
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (ref, fix), 1)
    idx = np.flatnonzero(ref != fix)
    return {"classes": k, "confusion": conf.tolist(), "flipped": int(idx.size),
            "lost": int(((ref == y) & (fix != y)).sum()),
            "gained": int(((ref != y) & (fix == y)).sum()),
            "samples": [{"index": int(i), "reference": int(ref[i]), "fixed": int(fix[i]),
                         "label": int(y[i])} for i in idx[:limit]]}


def _per_channel(values: np.ndarray, channels: int) -> list[float]:
    """One value per channel (one in all when every channel has the same)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size and v.size % channels == 0:
        v = v.reshape(channels, -1)[:, 0]
    return [float(x) for x in (v[:1] if v.size and np.all(v == v[0]) else v)]


def decay_table(program: Any, graph: Any = None) -> list[dict[str, Any]]:
    """Per spiking population: the float decays ``alpha``/``beta`` (from the NIR graph, when
    there is one: one value per layer, or per channel: ``granularity``) beside the fixed-point
    ``dv`` and the beta it encodes, ``1 - dv/4096`` (alpha is folded into the integer weights;
    ``scale`` is the float-volt to integer-v factor)."""
    from dalif_deploy.fixedpoint.limits import DECAY_UNIT

    nodes, shapes = {}, {}
    if graph is not None:
        from dalif_deploy.converters.ir.graph import infer_shapes

        nodes, shapes = graph.nodes, infer_shapes(graph)
    dt = float(program.metadata.get("dt", 1.0) or 1.0)
    rows = []
    for p in program.populations:
        if p.name == program.readout.population:
            continue
        dv = [int(d) for d in p.dv]
        row: dict[str, Any] = {"population": p.name, "channels": p.shape[0], "alpha": None,
                               "beta": None, "dv": dv,
                               "beta_fixed": [1 - d / DECAY_UNIT for d in dv],
                               "scale": p.scale, "vth": p.vth}
        node = nodes.get(p.name)
        if node is not None:
            from dalif_deploy.converters.ir.ops import op_for

            op = op_for(node, p.name)
            if op.population:
                lif = op.dalif(p.name, node, tuple(shapes[p.name]), dt)
                row["alpha"] = _per_channel(lif["alpha"], p.shape[0])
                row["beta"] = _per_channel(lif["beta_c"], p.shape[0])
        per_channel = len(dv) > 1 or len(row["alpha"] or []) > 1 or len(row["beta"] or []) > 1
        row["granularity"] = "channel" if per_channel else "layer"
        rows.append(row)
    return rows


def flip_text(flips: dict[str, Any], samples: int, arrow: str = "->") -> str:
    """``"7 of 450 predictions change (4 right -> wrong, 2 wrong -> right, 1 wrong -> other
    wrong)"``."""
    other = flips["flipped"] - flips["lost"] - flips["gained"]
    return (f"{flips['flipped']:,} of {samples:,} predictions change ({flips['lost']:,} right "
            f"{arrow} wrong, {flips['gained']:,} wrong {arrow} right, {other:,} wrong {arrow} "
            "other wrong)")


def reference_name(result: dict[str, Any]) -> str:
    """What the fixed point was compared with, in words: the torch model of a checkpoint
    ("float") or, for a NIR graph (verified, or a program's ``--reference``), our NIR
    interpreter."""
    return "NIR reference (interpreter)" if result.get("reference") == "nir" else "float"


def _reference_model(result: dict[str, Any]) -> str:
    """The reference model in a sentence ("the float model is at chance")."""
    return "NIR graph" if result.get("reference") == "nir" else "float model"


def _retrain_hint(result: dict[str, Any]) -> str:
    """How to get a better reference model, for the file the user gave: a checkpoint is ours
    to train; a NIR graph was trained elsewhere (or exported by us from a checkpoint)."""
    if result.get("reference") == "nir":
        return ("train the model longer in the framework that made the graph (a graph exported "
                "by dalif-deploy: `dalif-deploy train --epochs` on its checkpoint, then export "
                "again); check that --from/--dt/-T read it as it was exported and that the data "
                "set is the one it was trained on (shape, normalisation), then verify again")
    return ("train longer or wider (`dalif-deploy train --epochs`), check the data set and its "
            "normalisation, then verify again")


def _amount(check: dict[str, Any]) -> str:
    """How far a failed check is from its threshold, in its own unit."""
    v, lim, unit = check["value"], check["limit"], check.get("unit")
    if unit == "pp":
        return (f"{v:.2f} pp, above the allowed {lim:.2f} pp (--max-accuracy-drop) by "
                f"{v - lim:.2f} pp")
    if unit == "fraction":
        return f"{percent(v)}, below the required {percent(lim)} by {percent(lim - v, ' pp')}"
    return f"{v}, required {lim}"


def _quantisation_hints(result: dict[str, Any], program: Any) -> list[str]:
    """What to try when fixed point loses against its float reference, from the evidence."""
    hints = []
    layers = [ly for ly in result.get("layers", []) if ly.get("spike_agreement") is not None]
    if layers:
        worst = min(layers, key=lambda ly: ly["spike_agreement"])
        hints.append(f"it loses most in layer {worst['name']} (spike agreement "
                     f"{percent(worst['spike_agreement'])}): start there")
        rec = [ly["name"] for ly in layers if ly.get("recurrent")]
        if rec:
            hints.append(f"recurrent layer(s) {', '.join(rec)} feed every spike that rounding "
                         "flips back into later steps, so differences spread further than in "
                         "a feed-forward layer; a smaller W_rec (weight decay) or fewer "
                         "neurons near threshold narrows this (docs/MEASURED.md, digits-rnn)")
    bits = result.get("weight_bits") or (int(program.metadata.get("weight_bits", 8))
                                         if program is not None else 8)
    if bits < 8 and result.get("reference") == "nir":  # finetune takes a checkpoint only
        hints.append(f"use more weight bits (now {bits}; Loihi 2 takes up to 8: verify "
                     f"--weight-bits), or, to keep {bits} bits, train for them "
                     "(quantisation-aware) in the framework that made the graph")
    elif bits < 8:
        hints.append(f"use more weight bits (now {bits}; Loihi 2 takes up to 8: verify "
                     "--weight-bits), see accuracy per precision with `dalif-deploy sweep`, or, "
                     f"to keep {bits} bits, fine-tune for them (`dalif-deploy finetune "
                     f"--weight-bits {bits}`)")
    rows = result.get("quant_table", [])
    if rows:
        w = max(rows, key=lambda r: r.get("weight_rel_error") or 0)
        hints.append(f"largest weight error: {w['population']} "
                     f"({percent(w.get('weight_rel_error') or 0)} of its max |w|); a "
                     "synapse's weights share one exponent (per layer, not per channel), so "
                     "a few large weights cost the others resolution: weight decay or "
                     "clipping outliers in training narrows the range")
    for r in rows:
        bad = [f"{r[k]} {what}" for k, what in (("u_wraps", "u wraps"), ("v_saturations",
               "v saturations"), ("clipped_weights", "clipped weights")) if r.get(k)]
        if bad:
            hints.append(f"{r['population']}: {', '.join(bad)}: recalibrate on "
                         "representative training data (quantize --calibrate)")
    if program is not None and not program.metadata.get("calibrated", True):
        hints.append("the program was quantised without calibration: quantize --calibrate")
    ref = result.get("reference", "float")
    if (result.get(f"{ref}_accuracy") or 1.0) < WEAK_FLOAT:
        hints.append(f"check the {_reference_model(result)}'s accuracy "
                     f"({percent(result[f'{ref}_accuracy'])}) first: "
                     "a weak model has many samples near a decision boundary, where any "
                     "rounding flips the prediction")
    return hints


def _check_reason(c: dict[str, Any], result: dict[str, Any], program: Any) -> dict[str, Any]:
    kind = c.get("id")
    text = f"{c['check']} failed: {_amount(c)}"
    hints: list[str] = []
    if kind in ("accuracy_drop", "agreement"):
        fl = result.get("flips") or {}
        if fl:
            text += f"; {flip_text(fl, result['samples'])}"
        hints = _quantisation_hints(result, program)
        hints.append("or accept the loss: relax --min-agreement / --max-accuracy-drop")
    elif kind == "nir":
        text += (f"; spikes differing from float: {result.get('nir_spike_mismatches')}: the "
                 "exported graph does not compute what the torch model does")
        hints = ["run `dalif-deploy inspect` on the .nir and compare its layers with the model",
                 "a spike exactly at threshold may flip when batch norm is folded (float32): a "
                 "handful is harmless, many means an export bug: report it with the checkpoint"]
    elif kind == "lava":
        if result.get("lava_error"):
            text = f"Lava did not complete: {result['lava_error']}"
            hints = ["raise --timeout or the Lava run-guard limits, or lower --lava-samples"]
        else:
            d = result.get("lava_first_divergence") or {}
            text = ("Lava is not bit-exact with the emulator: first at layer "
                    f"{d.get('layer')} ({d.get('what')}, step {d.get('step')}, sample "
                    f"{d.get('sample')}, neuron {d.get('neuron')}: emulator "
                    f"{d.get('emulator')}, Lava {d.get('lava')})")
            hints = ["the emulator is meant to be Lava's arithmetic bit for bit: this is a "
                     "toolchain bug; save the program (--save-program) and report it"]
    elif kind == "onnx":
        text = f"{c['check']} failed: onnxruntime agrees with torch on {percent(c['value'])}"
        hints = ["compare `simulate --backend onnx` with `--backend torch` on the same samples"]
    return {"severity": "fail", "check": c["check"], "text": text, "try": hints}


def verdict(result: dict[str, Any], program: Any = None) -> list[dict[str, Any]]:
    """The verdict in words: one entry ``{"severity": "fail"|"warning", "check", "text",
    "try": [...]}`` per failed check, and a warning when the float reference is at or near
    chance (then the float model itself is the problem, not the deployment)."""
    out = []
    ref = result.get("reference", "float")
    acc = result.get(f"{ref}_accuracy")
    chance, n = result.get("chance_accuracy"), int(result.get("samples") or 0)
    if acc is not None and chance is not None and n:
        lo, _ = wilson(int(round(acc * n)), n)
        if lo <= chance or acc < chance + NEAR_CHANCE * (1 - chance):
            name = _reference_model(result)
            out.append({"severity": "warning", "check": f"{ref} accuracy above chance",
                        "text": f"the {name} itself is at chance: accuracy "
                                f"{accuracy_text(acc, n)} against {percent(chance)} for always "
                                "predicting the most frequent class; fixed-point agreement "
                                f"means little until the {name} learns",
                        "try": [_retrain_hint(result)]})
    failed = [_check_reason(c, result, program) for c in result.get("checks", []) if not c["ok"]]
    seen: set[str] = set()
    for f in failed:  # the drop and the agreement share their hints: say them once
        f["try"] = [t for t in f["try"] if t not in seen]
        seen.update(f["try"])
    return out + failed
