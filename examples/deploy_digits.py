"""The deployment pipeline through the Python API, step by step (what `dalif-deploy verify` does).

Run after `make install` (from any directory; --out-dir is relative to it):

    .venv/bin/python examples/deploy_digits.py [--checkpoint CKPT (default: the shipped
        digits-cnn)] [--out-dir out/example] [--lava-samples 8]

Each step writes its artefact to --out-dir so it can be inspected with `dalif-deploy inspect`.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import torch
from dalif_deploy.converters.ir.graph import read_nir
from dalif_deploy.converters.nir_to_fixed import format_table, quantize_graph
from dalif_deploy.converters.nir_to_torch import run_graph
from dalif_deploy.converters.torch_to_nir import export_nir, write_nir
from dalif_deploy.targets.emulator import emulate
from dalif_deploy.targets.lava import run_lava

from dalif_deploy.datasets.loaders import load_dataset
from dalif_deploy.fixedpoint.fxp_format import load_program, save_program
from dalif_deploy.float_model.loading import load_model, shipped_checkpoint
from dalif_deploy.float_model.zoo import run_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(shipped_checkpoint("digits-cnn")))
    ap.add_argument("--out-dir", default="out/example")
    ap.add_argument("--lava-samples", type=int, default=8)
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 1. The trained float model and the test split exactly as it was trained on.
    model, ckpt = load_model(args.checkpoint)
    T = ckpt.timesteps
    test = load_dataset(ckpt.dataset["name"], "test", timesteps=T)
    x = torch.from_numpy(test.x)
    with torch.no_grad():
        float_pred = run_model(model, x, T, test.encoding).argmax(1).numpy()
    print(f"1. float {ckpt.model_name}: {100 * (float_pred == test.y).mean():.2f} %")

    # 2. Export to NIR (batch-norm folded, DA-LIF as nir.LIF), write, read back, run.
    graph = export_nir(model, test.input_shape, T, encoding=test.encoding,
                       normalization=test.normalization)
    write_nir(graph, out / "model.nir")
    graph = read_nir(out / "model.nir")
    nir_pred = run_graph(graph, x, T)[0].argmax(1).numpy()
    print(f"2. NIR reference: {100 * (nir_pred == test.y).mean():.2f} %, "
          f"predictions identical to float: {np.array_equal(nir_pred, float_pred)}")

    # 3. Quantise to a Loihi 2 fixed-point program, calibrated on training samples.
    calib = load_dataset(ckpt.dataset["name"], "train", timesteps=T).head(512)
    program = quantize_graph(graph, calibration=calib.x,
                             run=functools.partial(emulate, check=False))
    save_program(program, out / "model.fxp")
    program = load_program(out / "model.fxp")
    print("3. quantised:\n" + format_table(program.quant_table))

    # 4. The bit-accurate emulator on the whole test set.
    emu = emulate(program, test.x)
    print(f"4. fixed point (emulator): {100 * (emu.predictions == test.y).mean():.2f} %, "
          f"agreement with float {100 * (emu.predictions == float_pred).mean():.2f} %")

    # 5. Lava on a few samples: must equal the emulator bit for bit.
    n = args.lava_samples
    lava = run_lava(program, test.x[:n], timeout=600)
    exact = np.array_equal(lava.outputs, emu.outputs[:n])
    print(f"5. Lava on {n} samples: {100 * (lava.predictions == test.y[:n]).mean():.2f} %, "
          f"readout integers equal to the emulator's: {exact}")


if __name__ == "__main__":
    main()
