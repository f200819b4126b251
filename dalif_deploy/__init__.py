"""dalif-deploy: DA-LIF spiking networks from PyTorch to NIR, Loihi 2 fixed point and Lava.

The public API is re-exported here (the CLI mirrors it one to one); modules not listed are
private. Everything but the errors is imported on first use, so ``import dalif_deploy`` imports
nothing heavy (the CLI's ``--help`` needs not even numpy): a program file loads with numpy alone,
without torch, Lava or pickle, and lava is imported only by the Lava target.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import DaLifError, LavaRunError, VerificationFailed

# name -> "module:attribute", imported on first access
_LAZY = {
    "FixedProgram": "dalif_deploy.program:FixedProgram",
    "InputEncoding": "dalif_deploy.program:InputEncoding",
    "Population": "dalif_deploy.program:Population",
    "Readout": "dalif_deploy.program:Readout",
    "Synapse": "dalif_deploy.program:Synapse",
    "load_program": "dalif_deploy.program:load_program",
    "save_program": "dalif_deploy.program:save_program",
    "Checkpoint": "dalif_deploy.checkpoint:Checkpoint",
    "load_checkpoint": "dalif_deploy.checkpoint:load_checkpoint",
    "load_model": "dalif_deploy.checkpoint:load_model",
    "save_checkpoint": "dalif_deploy.checkpoint:save_checkpoint",
    "shipped_checkpoint": "dalif_deploy.checkpoint:shipped_checkpoint",
    "Dataset": "dalif_deploy.data:Dataset",
    "load_dataset": "dalif_deploy.data:load_dataset",
    "dataset_spec": "dalif_deploy.data:dataset_spec",
    "Events": "dalif_deploy.event_formats:Events",
    "read_aedat31": "dalif_deploy.event_formats:read_aedat31",
    "read_aedat2_dvs128": "dalif_deploy.event_formats:read_aedat2_dvs128",
    "read_nmnist_bin": "dalif_deploy.event_formats:read_nmnist_bin",
    "EventBinning": "dalif_deploy.event_data:EventBinning",
    "bin_events": "dalif_deploy.event_data:bin_events",
    "build_model": "dalif_deploy.models:build_model",
    "dalif_layers": "dalif_deploy.models:dalif_layers",
    "default_config": "dalif_deploy.models:default_config",
    "run_model": "dalif_deploy.models:run_model",
    "DALIF": "dalif_deploy.neurons.dalif:DALIF",
    "PLIF": "dalif_deploy.neurons.plif:PLIF",
    "LIF": "dalif_deploy.neurons.lif:LIF",
    "NEURONS": "dalif_deploy.neurons:NEURONS",
    "neuron_layers": "dalif_deploy.neurons:neuron_layers",
    "PARAMETRIZATIONS": "dalif_deploy.neuron:PARAMETRIZATIONS",
    "SURROGATES": "dalif_deploy.neuron:SURROGATES",
    "dalif_step": "dalif_deploy.neurons.dalif:dalif_step",
    "reset_states": "dalif_deploy.neurons:reset_states",
    "train": "dalif_deploy.training:train",
    "evaluate": "dalif_deploy.training:evaluate",
    "simulate": "dalif_deploy.backends:simulate",
    "describe": "dalif_deploy.inspect:describe",
    "check_program": "dalif_deploy.constraints:check_program",
    "Hardware": "dalif_deploy.cost:Hardware",
    "hardware": "dalif_deploy.cost:hardware",
    "cost_report": "dalif_deploy.cost:cost_report",
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
    "verify_model": "dalif_deploy.verify:verify_model",
    "verify_file": "dalif_deploy.verify_files:verify_file",
    "VerifyOptions": "dalif_deploy.verify:VerifyOptions",
    "write_report": "dalif_deploy.verify:write_report",
    "sweep_precision": "dalif_deploy.sweep:sweep_precision",
    "SweepOptions": "dalif_deploy.sweep:SweepOptions",
    "finetune": "dalif_deploy.finetune:finetune",
    "finetune_checkpoint": "dalif_deploy.finetune:finetune_checkpoint",
    "FinetuneOptions": "dalif_deploy.finetune:FinetuneOptions",
    "compare_neurons": "dalif_deploy.compare:compare_neurons",
    "CompareOptions": "dalif_deploy.compare:CompareOptions",
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
    "DaLifError",
    "LavaRunError",
    "VerificationFailed",
    *_LAZY,
]
