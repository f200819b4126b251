"""The shipped digits-cnn as a model file of every kind a backend reads, and the registered
backends as test parameters (the tests that use them: tests/targets/test_backends.py,
tests/datasets/test_user_data.py; the ``model_files`` fixture is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dalif_deploy.targets.registry import BACKENDS

from . import CHECKPOINTS

#: the shipped checkpoint every model file is made from
DIGITS_CNN = CHECKPOINTS / "digits-cnn.pt"
#: file kind -> the key of its file in :func:`write_model_files`'s dict
KIND_FILE = {"checkpoint": "pt", "nir": "nir", "program": "fxp", "onnx": "onnx"}
#: every registered backend as a test parameter, Lava's marked ``lava``
BACKEND_PARAMS = [pytest.param(n, marks=pytest.mark.lava) if n == "lava" else n
                  for n in BACKENDS]


def write_model_files(directory: Path) -> dict[str, Path]:
    """digits-cnn as a checkpoint, NIR graph, fixed-point program and ONNX graph (the last
    three written into ``directory``)."""
    from dalif_deploy.converters.ir.graph import read_nir
    from dalif_deploy.converters.nir_to_fixed import quantize_graph
    from dalif_deploy.converters.torch_to_nir import export_checkpoint
    from dalif_deploy.converters.torch_to_onnx import export_onnx_from_checkpoint
    from dalif_deploy.targets.emulator import emulate

    from dalif_deploy.datasets.loaders import load_dataset
    from dalif_deploy.fixedpoint.fxp_format import save_program

    d = directory
    export_checkpoint(DIGITS_CNN, d / "m.nir")
    calib = load_dataset("digits", "train").head(64).x
    save_program(quantize_graph(read_nir(d / "m.nir"), calibration=calib, run=emulate),
                 d / "m.fxp")
    export_onnx_from_checkpoint(DIGITS_CNN, d / "m.onnx")
    return {"pt": DIGITS_CNN, "nir": d / "m.nir", "fxp": d / "m.fxp", "onnx": d / "m.onnx"}
