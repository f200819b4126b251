"""dalif-deploy: DA-LIF spiking networks from PyTorch to NIR, Loihi 2 fixed point and Lava.

The public API is re-exported here (the CLI mirrors it one to one); modules not listed are
private. Heavy or optional parts (NIR, ONNX, Lava) are imported on first use, so
``import dalif_deploy`` stays light and never imports lava.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from .data import Dataset, load_dataset
from .errors import DaLifError, LavaRunError, VerificationFailed
from .models import build_model, dalif_layers, default_config, run_model
from .neuron import DALIF, PARAMETRIZATIONS, SURROGATES, dalif_step, reset_states
from .program import (
    FixedProgram,
    InputEncoding,
    Population,
    Readout,
    Synapse,
    load_program,
    save_program,
)

# name -> "module:attribute", imported on first access
_LAZY = {
    "train": "dalif_deploy.training:train",
    "evaluate": "dalif_deploy.training:evaluate",
    "simulate": "dalif_deploy.backends:simulate",
    "describe": "dalif_deploy.inspect:describe",
    "check_program": "dalif_deploy.constraints:check_program",
    "export_nir": "dalif_deploy.converters.torch_to_nir:export_nir",
    "write_nir": "dalif_deploy.converters.torch_to_nir:write_nir",
    "read_nir": "dalif_deploy.converters.nir_graph:read_nir",
    "run_graph": "dalif_deploy.converters.nir_to_torch:run_graph",
    "quantize_graph": "dalif_deploy.converters.nir_to_fixed:quantize_graph",
    "export_onnx": "dalif_deploy.converters.torch_to_onnx:export_onnx",
    "emulate": "dalif_deploy.targets.emulator:emulate",
    "run_lava": "dalif_deploy.targets.lava:run_lava",
    "run_onnx": "dalif_deploy.targets.onnxruntime:run_onnx",
    "verify_checkpoint": "dalif_deploy.verify:verify_checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name].split(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dalif_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "__version__",
    "Checkpoint",
    "DALIF",
    "DaLifError",
    "Dataset",
    "FixedProgram",
    "InputEncoding",
    "LavaRunError",
    "PARAMETRIZATIONS",
    "Population",
    "Readout",
    "SURROGATES",
    "Synapse",
    "VerificationFailed",
    "build_model",
    "dalif_layers",
    "dalif_step",
    "default_config",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "load_program",
    "reset_states",
    "run_model",
    "save_checkpoint",
    "save_program",
    *_LAZY,
]
