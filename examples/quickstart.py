"""The Python API tour of docs/python-api.md, runnable as it stands from any directory
(tests/test_examples.py runs it): the shipped digits-cnn through NIR, fixed point, the
emulator, Lava and verify.

    .venv/bin/python examples/quickstart.py
"""

# --- docs/python-api.md: Quickstart (tests/test_examples.py keeps the docs' copy identical) ---
import functools
import tempfile
from pathlib import Path

import torch

import dalif_deploy as dd

model, ckpt = dd.load_model(dd.shipped_checkpoint("digits-cnn"))  # dalif_deploy/checkpoints/
T = ckpt.timesteps
test = dd.load_dataset("digits", "test").head(64)  # samples exactly as the model gets them
train = dd.load_dataset("digits", "train").head(256)

graph = dd.export_nir(model, test.input_shape, T)  # torch -> NIR (batch-norm folded)
logits, spikes = dd.run_graph(graph, torch.from_numpy(test.x), T)  # NIR float reference
program = dd.quantize_graph(graph, calibration=train.x,  # NIR -> Loihi 2 fixed point
                            run=functools.partial(dd.emulate, check=False))
fixed = dd.emulate(program, test.x)  # bit-accurate emulator
print("NIR", (logits.argmax(1).numpy() == test.y).mean(),
      "fixed", (fixed.predictions == test.y).mean())
lava = dd.run_lava(program, test.x[:2], timeout=600)  # real Lava processes
print("Lava == emulator:", (lava.outputs == fixed.outputs[:2]).all())
print(dd.cost_report(program)["resources"]["cores"], "Loihi 2 cores (estimate)")

out = Path(tempfile.mkdtemp())  # files for the file-level API
dd.write_nir(graph, out / "model.nir")
dd.save_program(program, out / "model.fxp")
quick = dd.VerifyOptions(lava_samples=0, progress=False)
result, artefacts = dd.verify_file(out / "model.fxp", reference=out / "model.nir",
                                   options=quick)  # a .pt, .nir or .fxp as deployed
result, artefacts = dd.verify_model(model, test, train.x, T, options=quick)  # any nn.Module
dd.write_report(result, artefacts, out / "report.html")
print("verify:", "PASSED" if result["passed"] else "FAILED", "report:", out / "report.html")
