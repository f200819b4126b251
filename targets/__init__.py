"""Where a model runs: torch (float), nir (float reference), norse, emulator, lava, onnx.

Each backend is a class implementing ``dalif_deploy.targets.protocol.Backend`` (its name, file kind,
options, the input it expects, ``run``), registered by one line in
``dalif_deploy.targets.registry``.
Only ``targets.lava`` imports lava, lazily.
"""
