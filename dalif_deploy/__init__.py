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

from dalif_deploy.base.errors import DaLifError, LavaRunError, VerificationFailed

# name -> "module:attribute", imported on first access
_LAZY = {
    "FixedProgram": "dalif_deploy.fixedpoint.program:FixedProgram",
    "InputEncoding": "dalif_deploy.fixedpoint.program:InputEncoding",
    "Population": "dalif_deploy.fixedpoint.program:Population",
    "Readout": "dalif_deploy.fixedpoint.program:Readout",
    "Synapse": "dalif_deploy.fixedpoint.program:Synapse",
    "load_program": "dalif_deploy.fixedpoint.fxp_format:load_program",
    "save_program": "dalif_deploy.fixedpoint.fxp_format:save_program",
    "Checkpoint": "dalif_deploy.float_model.checkpoint:Checkpoint",
    "load_checkpoint": "dalif_deploy.float_model.loading:load_checkpoint",
    "load_model": "dalif_deploy.float_model.loading:load_model",
    "save_checkpoint": "dalif_deploy.float_model.checkpoint:save_checkpoint",
    "shipped_checkpoint": "dalif_deploy.float_model.loading:shipped_checkpoint",
    "factory_config": "dalif_deploy.float_model.factory:factory_config",
    "use_model_code": "dalif_deploy.float_model.factory:use_model_code",
    "Dataset": "dalif_deploy.datasets.loaders:Dataset",
    "load_dataset": "dalif_deploy.datasets.loaders:load_dataset",
    "dataset_spec": "dalif_deploy.datasets.loaders:dataset_spec",
    "Events": "dalif_deploy.datasets.event_formats:Events",
    "read_aedat31": "dalif_deploy.datasets.event_formats:read_aedat31",
    "read_aedat2_dvs128": "dalif_deploy.datasets.event_formats:read_aedat2_dvs128",
    "read_nmnist_bin": "dalif_deploy.datasets.event_formats:read_nmnist_bin",
    "EventBinning": "dalif_deploy.datasets.event_sets:EventBinning",
    "bin_events": "dalif_deploy.datasets.event_sets:bin_events",
    "build_model": "dalif_deploy.float_model.zoo:build_model",
    "dalif_layers": "dalif_deploy.float_model.zoo:dalif_layers",
    "default_config": "dalif_deploy.float_model.zoo:default_config",
    "run_model": "dalif_deploy.float_model.zoo:run_model",
    "DALIF": "dalif_deploy.neurons.dalif:DALIF",
    "PLIF": "dalif_deploy.neurons.plif:PLIF",
    "LIF": "dalif_deploy.neurons.lif:LIF",
    "NEURONS": "dalif_deploy.neurons:NEURONS",
    "neuron_layers": "dalif_deploy.neurons:neuron_layers",
    "PARAMETRIZATIONS": "dalif_deploy.neurons.protocol:PARAMETRIZATIONS",
    "SURROGATES": "dalif_deploy.neurons.protocol:SURROGATES",
    "dalif_step": "dalif_deploy.neurons.dalif:dalif_step",
    "reset_states": "dalif_deploy.neurons:reset_states",
    "train": "dalif_deploy.float_model.training:train",
    "evaluate": "dalif_deploy.float_model.training:evaluate",
    "simulate": "dalif_deploy.targets.registry:simulate",
    "describe": "dalif_deploy.verification.describe:describe",
    "check_program": "dalif_deploy.fixedpoint.constraints:check_program",
    "Hardware": "dalif_deploy.fixedpoint.hardware:Hardware",
    "hardware": "dalif_deploy.fixedpoint.hardware:hardware",
    "cost_report": "dalif_deploy.fixedpoint.cost:cost_report",
    "export_nir": "dalif_deploy.converters.torch_to_nir:export_nir",
    "write_nir": "dalif_deploy.converters.torch_to_nir:write_nir",
    "read_nir": "dalif_deploy.converters.ir.graph:read_nir",
    "run_graph": "dalif_deploy.converters.nir_to_torch:run_graph",
    "quantize_graph": "dalif_deploy.converters.nir_to_fixed:quantize_graph",
    "export_onnx": "dalif_deploy.converters.torch_to_onnx:export_onnx",
    "emulate": "dalif_deploy.targets.emulator:emulate",
    "run_lava": "dalif_deploy.targets.lava:run_lava",
    "run_onnx": "dalif_deploy.targets.onnxruntime:run_onnx",
    "verify_checkpoint": "dalif_deploy.verification.pipeline:verify_checkpoint",
    "verify_model": "dalif_deploy.verification.pipeline:verify_model",
    "verify_file": "dalif_deploy.verification.files:verify_file",
    "VerifyOptions": "dalif_deploy.verification.pipeline:VerifyOptions",
    "write_report": "dalif_deploy.verification.pipeline:write_report",
    "sweep_precision": "dalif_deploy.studies.sweep:sweep_precision",
    "SweepOptions": "dalif_deploy.studies.sweep:SweepOptions",
    "finetune": "dalif_deploy.studies.finetune:finetune",
    "finetune_checkpoint": "dalif_deploy.studies.finetune:finetune_checkpoint",
    "FinetuneOptions": "dalif_deploy.studies.finetune:FinetuneOptions",
    "compare_neurons": "dalif_deploy.studies.compare:compare_neurons",
    "CompareOptions": "dalif_deploy.studies.compare:CompareOptions",
}


#: the subpackages, reachable as attributes (``dalif_deploy.neurons``), imported on first use
_SUBPACKAGES = frozenset({"base", "fixedpoint", "neurons", "datasets", "float_model",
                          "verification", "studies", "cli", "converters", "targets"})


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
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
