"""Where a model runs: torch (float), nir (float reference), norse, emulator, lava, onnx.

Each backend module exposes ``simulate(model_path, dataset, samples, ...) -> dict`` (see
``dalif_deploy.backends``). Only ``targets.lava`` imports lava, lazily.
"""
