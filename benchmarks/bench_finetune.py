"""How low can it go: the shipped digits-cnn swept over weight precisions, then fine-tuned
(quantisation-aware, ``dalif-deploy finetune``) at 4, 3 and 2 bits, with Lava checked bit for
bit against the emulator at every precision.

Prints the sweep of the shipped checkpoint (float and fixed-point accuracy on the 450 test
samples, agreement, synaptic memory, cores, Lava on the first ``--lava-samples`` test samples),
then per fine-tuned precision its settings (epochs, lr, seed), float and fixed-point accuracy
before and after, and the target: within 1 point of the float accuracy at 3 bits, within 0.5
point at 4 bits, whatever it reaches at 2 bits. Ends with one line per target and one line
``lava bit-exact at every precision: True|False``.

Usage: .venv/bin/python benchmarks/bench_finetune.py [--lava-samples 8] [--out-dir out/finetune]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dalif_deploy.studies.finetune import FinetuneOptions, finetune_checkpoint
from dalif_deploy.studies.sweep import SweepOptions, format_sweep, sweep_precision

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "dalif_deploy" / "checkpoints" / "digits-cnn.pt"
#: weight bits -> (epochs, lr, target: the largest float -> fixed gap allowed, points; None: any)
PLAN = {4: (5, 1e-4, 0.5), 3: (20, 3e-4, 1.0), 2: (20, 2e-3, None)}
SEED = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lava-samples", type=int, default=8,
                    help="test samples run on Lava at each precision (0: skip Lava)")
    ap.add_argument("--out-dir", default="out/finetune", help="where the checkpoints go")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    before = sweep_precision(SHIPPED, SweepOptions((8, 6, 4, 3, 2),
                                                   lava_samples=args.lava_samples))
    print("shipped checkpoint:")
    print(format_sweep(before))
    float_acc = before["rows"][0]["float_accuracy"]
    exact = [r["lava_bit_exact"] for r in before["rows"]]
    lines = []
    for bits, (epochs, lr, target) in PLAN.items():
        path = out / f"digits-cnn-{bits}bit.pt"
        r = finetune_checkpoint(SHIPPED, path, FinetuneOptions(bits, epochs, lr, seed=SEED,
                                                               progress=False))
        after = sweep_precision(path, SweepOptions((bits,), lava_samples=args.lava_samples),
                                )["rows"][0]
        exact.append(after["lava_bit_exact"])
        assert after["fixed_accuracy"] == r["fixed_accuracy_after"]  # one program, one figure
        gap = 100 * (float_acc - r["fixed_accuracy_after"])
        print(f"\nfinetune {bits} bits: {epochs} epochs, lr {lr:g}, batch 64, seed {SEED} "
              f"({r['seconds']:.0f} s)")
        print(f"  before  float {100 * r['float_accuracy_before']:.2f} %  fixed "
              f"{100 * r['fixed_accuracy_before']:.2f} %")
        print(f"  after   float {100 * r['float_accuracy_after']:.2f} %  fixed "
              f"{100 * r['fixed_accuracy_after']:.2f} %  agreement "
              f"{100 * after['prediction_agreement']:.2f} %  lava bit-exact "
              f"{after['lava_bit_exact']} ({after['lava_samples']} samples)")
        verdict = ("(no target)" if target is None else
                   f"target <= {target} pp: {'met' if gap <= target + 1e-9 else 'MISSED'}")
        lines.append(f"{bits} bits: fixed {100 * r['fixed_accuracy_after']:.2f} % (was "
                     f"{100 * r['fixed_accuracy_before']:.2f} %), float {100 * float_acc:.2f} "
                     f"%, gap {gap:.2f} pp {verdict}")
    print("\ntargets (float accuracy of the shipped checkpoint on the 450 test samples):")
    print("\n".join(f"  {ln}" for ln in lines))
    ran = [e for e in exact if e is not None]
    print(f"lava bit-exact at every precision: {all(ran) if ran else 'not run'} "
          f"({len(ran)} Lava runs of {args.lava_samples} samples)")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
