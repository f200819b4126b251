"""``dalif-deploy sweep``: one checkpoint at several weight precisions, side by side.

Per precision the checkpoint goes through :func:`~dalif_deploy.verification.pipeline.verify_model`
with
``VerifyOptions(weight_bits=N)`` (export, quantisation calibrated as verify does, float and
fixed point over the whole test split; Lava on the first samples only where asked), and one row
keeps what the trade-off needs: float and fixed-point accuracy, float/fixed prediction
agreement, synaptic memory (kernel entries times weight bits, dense or sparse whichever is
smaller, each kernel counted once) and the cores and total memory of the resource model
(:func:`dalif_deploy.fixedpoint.cost.resources`, estimates), u wraps and v saturations, and Lava's
bit-exactness with the emulator where Lava ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.base.wording import MISSING, counted, percent

DEFAULT_WEIGHT_BITS = (8, 6, 4, 3, 2)


def parse_weight_bits(text: str, where: str = "--weight-bits") -> tuple[int, ...]:
    """``"8,6,4"`` -> ``(8, 6, 4)``: comma-separated integers 2..8, each once."""
    from dalif_deploy.converters.nir_to_fixed import check_weight_bits

    items = [t.strip() for t in str(text).split(",")]
    values = []
    for item in items:
        try:
            value: object = int(item)
        except ValueError:
            value = item
        try:
            values.append(check_weight_bits(value, where))
        except DaLifError:
            raise DaLifError(f"{where} {text!r}: each entry must be an integer 2..8 (weight "
                             f"mantissa bits), comma-separated, e.g. 8,6,4,3,2; got "
                             f"{item!r:.20}") from None
    if len(set(values)) != len(values):
        raise DaLifError(f"{where} {text!r}: a precision is listed twice")
    return tuple(values)


@dataclass(frozen=True)
class SweepOptions:
    """Settings of a precision sweep (the CLI flags of ``sweep``)."""

    weight_bits: tuple[int, ...] = DEFAULT_WEIGHT_BITS
    lava_samples: int = 0  # first N test samples on Lava, bit-exact check (0: emulator only)
    lava_bits: tuple[int, ...] | None = None  # precisions run on Lava (None: all of them)
    timeout: float = 600.0  # Lava watchdog, seconds
    batch_size: int | None = None  # verify's (None: as many as memory holds, up to 256)
    progress: bool = True

    def __post_init__(self) -> None:
        from dalif_deploy.converters.nir_to_fixed import check_weight_bits

        if not self.weight_bits:
            raise DaLifError("--weight-bits: give at least one precision")
        bits = tuple(check_weight_bits(b) for b in self.weight_bits)
        object.__setattr__(self, "weight_bits", bits)
        if self.lava_samples < 0:
            raise DaLifError(f"--lava-samples must be >= 0, got {self.lava_samples}")
        if self.lava_bits is not None:
            extra = sorted(set(self.lava_bits) - set(bits))
            if extra:
                raise DaLifError(f"--lava-bits {list(self.lava_bits)}: {extra} are not in "
                                 f"--weight-bits {list(bits)}")
            if not self.lava_samples:
                raise DaLifError("--lava-bits needs --lava-samples N (N > 0)")

    def lava_for(self, bits: int) -> int:
        """Lava samples at precision ``bits``."""
        return self.lava_samples if self.lava_bits is None or bits in self.lava_bits else 0


def _row(bits: int, r: dict[str, Any]) -> dict[str, Any]:
    res = r["resources"]
    return {
        "weight_bits": bits,
        "float_accuracy": r["float_accuracy"],
        "fixed_accuracy": r["fixed_accuracy"],
        "accuracy_drop_pp": (None if r["float_accuracy"] is None
                             else 100 * (r["float_accuracy"] - r["fixed_accuracy"])),
        "prediction_agreement": r["prediction_agreement"],
        "synaptic_memory_bits": sum(int(s["memory_bits"]) for s in res["per_synapse"]),
        "memory_bits": int(res["memory_bits"]),
        "cores": int(res["cores"]),
        "chips": int(res["chips"]),
        "u_wraps": sum(int(ly["u_wraps"] or 0) for ly in r["layers"])
        + int(r["readout"]["u_wraps"]),
        "v_saturations": sum(int(ly["v_saturations"] or 0) for ly in r["layers"])
        + int(r["readout"]["v_saturations"]),
        "lava_samples": r["lava_samples"],
        "lava_bit_exact": r["lava_bit_exact"],
        "lava_first_divergence": r["lava_first_divergence"],
        "lava_error": r["lava_error"],
    }


def sweep_precision(checkpoint: str | Path, options: SweepOptions | None = None, *,
                    dataset: str | None = None, data_dir: str | None = None
                    ) -> dict[str, Any]:
    """Verify ``checkpoint`` at every precision of ``options.weight_bits`` (module docstring).

    Returns ``{"checkpoint", "model", "dataset", "samples", "timesteps", "rows": [...],
    "seconds"}``, one row per precision in the order given (keys: see :func:`_row`).
    """
    from dalif_deploy.verification.pipeline import VerifyOptions, load_checkpoint_data, verify_model

    opt = options or SweepOptions()
    t0 = time.perf_counter()
    model, ckpt, test, calib = load_checkpoint_data(checkpoint, dataset, data_dir)
    rows = []
    for bits in tqdm(opt.weight_bits, desc="precision sweep", unit="precision",
                     disable=not opt.progress):
        vopt = VerifyOptions(weight_bits=bits, lava_samples=opt.lava_for(bits),
                             timeout=opt.timeout, batch_size=opt.batch_size, progress=False)
        result, _ = verify_model(model, test, calib.x, ckpt.timesteps, name=ckpt.model_name,
                                 source=str(checkpoint),
                                 metadata={"source_checkpoint_sha256": ckpt.sha256},
                                 options=vopt)
        rows.append(_row(bits, result))
    return {"checkpoint": str(checkpoint), "model": ckpt.model_name, "dataset": test.name,
            "samples": len(test), "timesteps": ckpt.timesteps, "rows": rows,
            "seconds": round(time.perf_counter() - t0, 2)}


def format_sweep(result: dict[str, Any]) -> str:
    """The sweep as an aligned text table."""
    head = ("bits", "float %", "fixed %", "drop pp", "agree %", "syn KiB", "mem KiB", "cores",
            "wraps", "sats", "lava")
    rows = [head]
    for r in result["rows"]:
        lava = (MISSING if not r["lava_samples"] else
                f"{'exact' if r['lava_bit_exact'] else 'DIFFERS'} ({r['lava_samples']})")
        rows.append((str(r["weight_bits"]), percent(r["float_accuracy"], ""),
                     percent(r["fixed_accuracy"], ""),
                     MISSING if r["accuracy_drop_pp"] is None else f"{r['accuracy_drop_pp']:.2f}",
                     percent(r["prediction_agreement"], ""),
                     f"{r['synaptic_memory_bits'] / 8192:.2f}",
                     f"{r['memory_bits'] / 8192:.1f}", str(r["cores"]), str(r["u_wraps"]),
                     str(r["v_saturations"]), lava))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"{result['model']} on {result['dataset']} "
             f"({counted(result['samples'], 'test sample')}, "
             f"T={result['timesteps']}); memory and cores are resource-model estimates"]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def plot_sweep(result: dict[str, Any], path: str | Path) -> None:
    """Accuracy and agreement (left axis) and synaptic memory (right axis) against weight
    bits, written atomically to ``path`` (the format from its suffix: .png, .pdf, .svg)."""
    from dalif_deploy.verification.plots import pyplot

    plt = pyplot()

    from dalif_deploy.base.files import atomic_write

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in ("png", "pdf", "svg"):
        raise DaLifError(f"--plot {path}: give a .png, .pdf or .svg file")
    rows = sorted(result["rows"], key=lambda r: r["weight_bits"])
    bits = [r["weight_bits"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(bits, [100 * r["fixed_accuracy"] for r in rows], "o-", color="#ee6677",
            label="fixed-point accuracy")
    if rows and rows[0]["float_accuracy"] is not None:
        ax.axhline(100 * rows[0]["float_accuracy"], color="#4477aa", ls="--",
                   label="float accuracy")
        ax.plot(bits, [100 * r["prediction_agreement"] for r in rows], "s:",
                color="#228833", label="float/fixed agreement")
    ax.set_xlabel("weight bits")
    ax.set_ylabel("%")
    ax.set_xticks(bits)
    ax2 = ax.twinx()
    ax2.bar(bits, [r["synaptic_memory_bits"] / 8192 for r in rows], 0.4, color="#bbbbbb",
            alpha=0.5, label="synaptic memory")
    ax2.set_ylabel("synaptic memory (KiB, estimate)")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    ax.set_title(f"{result['model']} on {result['dataset']}: precision sweep")
    try:
        atomic_write(path, lambda p: fig.savefig(p, format=fmt, dpi=100, bbox_inches="tight"))
    finally:
        plt.close(fig)
