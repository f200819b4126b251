"""Layer 2, the float model: zoo, time loop, the checkpoint format, loading a model from a
checkpoint, training."""
